//! `/stats`, `/stats/prometheus`, `/reset_counters`.

use std::rc::Rc;

use hyper::StatusCode;
use legate_stats::{Filter, StatTypes};

use super::{json, text, AdminResponse, Query};
use crate::server::Server;

/// The `filter` parameter; the error is the 400 body.
fn filter(query: &Query) -> Result<Option<Filter>, String> {
    match query.get("filter") {
        None | Some("") => Ok(None),
        Some(f) => Filter::new(f).map(Some).map_err(|_| "Invalid re2 regex".to_string()),
    }
}

/// The `type` parameter (all types when absent or empty); the error is the 400 body.
fn types(query: &Query) -> Result<StatTypes, String> {
    match query.get("type") {
        None | Some("") => Ok(StatTypes::All),
        Some(t) => StatTypes::parse(t).ok_or_else(|| "invalid &type= param".to_string()),
    }
}

/// Reads the process gauges (`server.*`) afresh when the render may show them: the
/// allocator's totals come from a walk of its free lists, milliseconds on a large heap, and a
/// scraper polling one other stat should not pay for it.
fn refresh_gauges(server: &Server, filter: Option<&Filter>) {
    if filter.is_none_or(|f| f.may_match_under("server")) {
        server.refresh_gauges();
    }
}

/// `/stats`: `format` (`text`, `json`, `prometheus`), `filter`, `type`, `usedonly`, with
/// Envoy's 400 bodies for a bad value.
pub fn handle(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let (filter, types) = match filter(query).and_then(|f| Ok((f, types(query)?))) {
        Ok(params) => params,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let format = match query.get("format") {
        None | Some("text") => Format::Text,
        Some("json") => Format::Json,
        Some("prometheus") => Format::Prometheus,
        Some(_) => {
            let usage = "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n";
            return text(StatusCode::BAD_REQUEST, usage.to_string());
        }
    };
    refresh_gauges(server, filter.as_ref());
    let used_only = query.has("usedonly");
    // A render of a large config builds megabytes that are freed once it is sent: the
    // allocator gives those pages back soon after, as after an xDS update.
    crate::memory::release_free_memory_soon();
    let store = &server.store;
    match format {
        Format::Json => json(StatusCode::OK, &store.render_json(filter.as_ref(), used_only, types)),
        Format::Prometheus => text(StatusCode::OK, store.render_prometheus(filter.as_ref(), used_only, types)),
        Format::Text => text(StatusCode::OK, store.render_text(filter.as_ref(), used_only, types)),
    }
}

enum Format {
    Text,
    Json,
    Prometheus,
}

pub fn prometheus(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let (filter, types) = match filter(query).and_then(|f| Ok((f, types(query)?))) {
        Ok(params) => params,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    refresh_gauges(server, filter.as_ref());
    crate::memory::release_free_memory_soon();
    text(StatusCode::OK, server.store.render_prometheus(filter.as_ref(), query.has("usedonly"), types))
}

pub fn reset_counters(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    server.store.reset_counters();
    text(StatusCode::OK, "OK\n".into())
}

//! `/stats`, `/stats/prometheus`, `/reset_counters`.

use std::rc::Rc;

use hyper::StatusCode;
use legate_stats::Filter;

use super::{json, text, AdminResponse, Query};
use crate::server::Server;

/// The `filter` parameter; the error is the 400 body.
fn filter(query: &Query) -> Result<Option<Filter>, String> {
    match query.get("filter") {
        None | Some("") => Ok(None),
        Some(f) => Filter::new(f).map(Some).map_err(|e| format!("Invalid re2 regex: {e}\n")),
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

pub fn handle(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let filter = match filter(query) {
        Ok(f) => f,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    refresh_gauges(server, filter.as_ref());
    let used_only = query.has("usedonly");
    // A render of a large config builds megabytes that are freed once it is sent: the
    // allocator gives those pages back soon after, as after an xDS update.
    crate::memory::release_free_memory_soon();
    match query.get("format") {
        Some("json") => json(StatusCode::OK, &server.store.render_json(filter.as_ref(), used_only)),
        Some("prometheus") => text(StatusCode::OK, server.store.render_prometheus(filter.as_ref(), used_only)),
        None | Some("text") => text(StatusCode::OK, server.store.render_text(filter.as_ref(), used_only)),
        Some(other) => text(
            StatusCode::NOT_FOUND,
            format!("usage: /stats?format=(json|prometheus|text): unknown format '{other}'\n"),
        ),
    }
}

pub fn prometheus(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let filter = match filter(query) {
        Ok(f) => f,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    refresh_gauges(server, filter.as_ref());
    crate::memory::release_free_memory_soon();
    text(StatusCode::OK, server.store.render_prometheus(filter.as_ref(), query.has("usedonly")))
}

pub fn reset_counters(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    server.store.reset_counters();
    text(StatusCode::OK, "OK\n".into())
}

//! `/listeners`: each listener's name and the address it is bound to.

use std::rc::Rc;

use hyper::StatusCode;
use serde_json::json;

use super::{json, text, AdminResponse, Query};
use crate::server::Server;

pub fn handle(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let manager = server.listener_manager.borrow();
    if query.get("format") == Some("json") {
        let statuses: Vec<_> = manager
            .listeners()
            .map(|(l, bound)| {
                json!({
                    "name": l.name,
                    "local_address": {"socket_address": {"address": bound.ip().to_string(), "port_value": bound.port()}},
                })
            })
            .collect();
        return json(StatusCode::OK, &json!({ "listener_statuses": statuses }));
    }
    let mut out = String::new();
    for (l, bound) in manager.listeners() {
        out.push_str(&format!("{}::{}\n", l.name, bound));
    }
    text(StatusCode::OK, out)
}

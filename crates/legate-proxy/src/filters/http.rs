//! HTTP filters (`envoy.filters.http.*`). The router ends every chain; the others run before
//! it in configuration order. Each factory is built once per connection manager config and
//! creates a fresh filter per stream.

pub mod router;

use legate_config::filters::network::http_connection_manager::{HttpFilter as HttpFilterConfigEntry, HttpFilterConfig};
use legate_stats::Scope;

use crate::http::filter::HttpFilter;

pub enum HttpFilterFactory {}

impl HttpFilterFactory {
    /// `None` for the router, which the connection manager runs itself.
    /// `stat_prefix` is the connection manager's: filter stats go under `http.<stat_prefix>.`.
    pub fn new(entry: &HttpFilterConfigEntry, _root: &Scope, _stat_prefix: &str) -> Result<Option<Self>, String> {
        match &entry.config {
            HttpFilterConfig::Router(_) => Ok(None),
            _ => Err(format!("http filter '{}' is not implemented yet", entry.name)),
        }
    }

    pub fn create(&self) -> Box<dyn HttpFilter> {
        match *self {}
    }

    pub fn name(&self) -> &str {
        match *self {}
    }
}

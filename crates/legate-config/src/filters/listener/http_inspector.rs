//! `envoy.extensions.filters.listener.http_inspector.v3.HttpInspector`: no fields.

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpInspector {}

//! `envoy.extensions.filters.network.direct_response.v3.Config`.

use serde::Deserialize;

use crate::core::DataSource;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// Written to every new connection, which is then closed. Empty: close at once.
    pub response: Option<DataSource>,
}

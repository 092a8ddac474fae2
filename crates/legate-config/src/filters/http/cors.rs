//! `envoy.extensions.filters.http.cors.v3.Cors` (`envoy.filters.http.cors`): the filter has
//! no settings; the policy lives on virtual hosts and routes, as the deprecated `cors` field or
//! a `typed_per_filter_config` entry of type `envoy.extensions.filters.http.cors.v3.CorsPolicy`.

/// The filter config: no fields.
pub type Cors = crate::extensions::Empty;

/// The per-route policy, the same message as `envoy.config.route.v3.CorsPolicy`.
pub use crate::route::CorsPolicy;

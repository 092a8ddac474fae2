//! `envoy.extensions.filters.network.echo.v3.Echo`: no fields.

pub type Echo = crate::extensions::Empty;

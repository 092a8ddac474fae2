//! `envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`.

use serde::Deserialize;

use crate::unsupported::Unsupported;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsInspector {
    pub enable_ja3_fingerprinting: Option<Unsupported>,
    pub enable_ja4_fingerprinting: Option<Unsupported>,
    /// Bytes read at first; a ClientHello may grow up to 64 KiB regardless.
    pub initial_read_buffer_size: Option<u32>,
}

//! TLS transport sockets (`envoy.transport_sockets.tls`) with rustls and its aws-lc-rs backend:
//! Envoy's "TLS" architecture page, `DownstreamTlsContext` on filter chains and
//! `UpstreamTlsContext` on clusters.
//!
//! - [`certificate`] — PEM chains and keys from `DataSource`s, with what `/certs` and the access
//!   log show of them.
//! - [`cert_validator`] — the peer checks of `validation_context` (trust chain, SANs, hash, SPKI),
//!   each failure counted under its Envoy stat.
//! - [`server`] — the downstream context: SNI and key-type certificate choice, ALPN, client
//!   certificates, resumption; the handshake run after filter chain selection (DESIGN.md §3
//!   step 3).
//! - [`client`] — the upstream context used by tcp_proxy and the HTTP pools.
//! - [`secret`] — a context's certificates, static or from SDS files reloaded on change.
//! - [`stats`] — `ssl.*`.
//!
//! Where legate differs on purpose: rustls implements TLS 1.2 and 1.3 and AEAD ciphers only, so
//! older versions and CBC ciphers are refused at load; renegotiation is refused; session ticket
//! keys come from rustls' rotating ticketer rather than `session_ticket_keys`.

pub mod cert_validator;
pub mod certificate;
pub mod client;
pub mod secret;
pub mod server;
pub mod stats;

pub use client::ClientContext;
pub use server::{ServerContext, SslConnectionInfo};
pub use stats::SslStats;

use std::sync::Arc;

use legate_config::tls::{TlsParameters, TlsProtocol, CIPHER_SUITES, ECDH_CURVES};
use rustls::crypto::CryptoProvider;
use rustls::SupportedProtocolVersion;

/// Envoy's default ECDH curves (`X25519:P-256`); rustls would add P-384.
const DEFAULT_CURVES: &[&str] = &["X25519", "P-256"];

/// The aws-lc-rs provider narrowed to `tls_params`' cipher suites and curves. TLS 1.3 suites are
/// always on (BoringSSL does not let Envoy configure them either).
fn crypto_provider(params: &TlsParameters) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !params.cipher_suites.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        let mut chosen: Vec<_> = all.iter().filter(|s| s.tls13().is_some()).copied().collect();
        for name in &params.cipher_suites {
            let Some((_, iana)) = CIPHER_SUITES.iter().find(|(envoy, _)| envoy == name) else { continue };
            if let Some(suite) = all.iter().find(|s| s.suite().as_str() == Some(iana)) {
                if !chosen.iter().any(|c| c.suite() == suite.suite()) {
                    chosen.push(*suite);
                }
            }
        }
        provider.cipher_suites = chosen;
    }
    let curves: Vec<&str> = if params.ecdh_curves.is_empty() {
        DEFAULT_CURVES.to_vec()
    } else {
        params.ecdh_curves.iter().map(String::as_str).collect()
    };
    let all = std::mem::take(&mut provider.kx_groups);
    provider.kx_groups = curves
        .iter()
        .filter_map(|envoy| ECDH_CURVES.iter().find(|(e, _)| e == envoy))
        .filter_map(|(_, rustls_name)| all.iter().find(|g| g.name().as_str() == Some(rustls_name)).copied())
        .collect();
    Arc::new(provider)
}

/// `tls_minimum_protocol_version`/`tls_maximum_protocol_version`. Envoy's defaults: TLS 1.2
/// minimum; maximum TLS 1.3 for servers, TLS 1.2 for clients (upstream contexts).
fn protocol_versions(params: &TlsParameters, client: bool) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let min = match params.tls_minimum_protocol_version {
        TlsProtocol::Auto => TlsProtocol::Tls12,
        v => v,
    };
    let max = match params.tls_maximum_protocol_version {
        TlsProtocol::Auto if client => TlsProtocol::Tls12,
        TlsProtocol::Auto => TlsProtocol::Tls13,
        v => v,
    };
    if min > max {
        return Err("tls_params: tls_minimum_protocol_version is above tls_maximum_protocol_version".into());
    }
    let mut versions = Vec::new();
    if min <= TlsProtocol::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= TlsProtocol::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    Ok(versions)
}

/// Envoy's names for what a handshake negotiated, as its `ssl.versions.*`, `ssl.ciphers.*`
/// and `ssl.curves.*` stats and access log operators spell them.
pub(crate) mod names {
    use legate_config::tls::{CIPHER_SUITES, ECDH_CURVES};

    pub fn version(v: rustls::ProtocolVersion) -> &'static str {
        match v {
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            _ => "unknown",
        }
    }

    /// OpenSSL names for TLS 1.2 suites, the RFC 8446 names for TLS 1.3 ones.
    pub fn cipher(suite: rustls::SupportedCipherSuite) -> String {
        let iana = suite.suite().as_str().unwrap_or("unknown");
        if let Some(tls13) = iana.strip_prefix("TLS13_") {
            return format!("TLS_{tls13}");
        }
        CIPHER_SUITES.iter().find(|(_, i)| *i == iana).map_or(iana, |(envoy, _)| envoy).to_string()
    }

    pub fn curve(group: rustls::NamedGroup) -> &'static str {
        let name = group.as_str().unwrap_or("unknown");
        ECDH_CURVES.iter().find(|(_, r)| *r == name).map_or("unknown", |(envoy, _)| envoy)
    }
}

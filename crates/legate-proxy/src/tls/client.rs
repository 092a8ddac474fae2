//! The upstream TLS context (`UpstreamTlsContext` on a cluster's `transport_socket`), used by
//! tcp_proxy and the HTTP connection pools: SNI (`sni`), client certificates, the server
//! certificate checks of `validation_context`, ALPN and session resumption.
//!
//! ALPN: `alpn_protocols` when given; otherwise, as Envoy's codec-aware fallback, an HTTP pool
//! offers its own protocol (`h2` or `http/1.1`), so an HTTP/2 cluster gets HTTP/2 over TLS
//! from servers that require ALPN. tcp_proxy offers `alpn_protocols` only.
//!
//! The handshake is part of connecting: the cluster's `connect_timeout` spans TCP and TLS, as
//! Envoy raises its Connected event only once the handshake is done.

use std::net::SocketAddr;
use std::sync::Arc;

use legate_config::tls::UpstreamTlsContext;
use legate_stats::Scope;
use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::cert_validator::{CertValidator, PeerSignatureScheme, RecordPeerSignature, ServerCertValidator};
use super::certificate::{key_matches, load_chain, load_key, source_name, CertificateDetails};
use super::server::{connection_info, handshake_error, log_handshake, HandshakeError};
use super::stats::SslStats;
use crate::network::{PrefixedTcpStream, TransportSocket};
use crate::upstream::Cluster;

/// Which ALPN list to offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `alpn_protocols` as configured (tcp_proxy).
    Configured,
    /// `alpn_protocols`, or `http/1.1`.
    Http1,
    /// `alpn_protocols`, or `h2`.
    Http2,
}

/// One cluster's `UpstreamTlsContext`, shared by all workers.
pub struct ClientContext {
    configured: Arc<rustls::ClientConfig>,
    http1: Arc<rustls::ClientConfig>,
    http2: Arc<rustls::ClientConfig>,
    /// `sni`; `None` sends no SNI.
    sni: Option<ServerName<'static>>,
    pub stats: SslStats,
    /// The client certificate, for `/certs`.
    pub certificates: Vec<CertificateDetails>,
    pub ca_certificates: Vec<CertificateDetails>,
}

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Tcp(#[source] std::io::Error),
    #[error("{0}")]
    Tls(#[source] HandshakeError),
}

impl ConnectError {
    /// Envoy's transport failure reason, as local replies and `%UPSTREAM_TRANSPORT_FAILURE_REASON%`
    /// print it.
    pub fn transport_failure_reason(&self) -> String {
        match self {
            ConnectError::Tcp(e) => match e.raw_os_error() {
                Some(code) => format!("delayed connect error: {code}"),
                None => e.to_string(),
            },
            ConnectError::Tls(HandshakeError::Tls(e)) => format!("TLS_error:{e}"),
            ConnectError::Tls(e) => format!("TLS_error:{e}"),
        }
    }
}

impl ClientContext {
    /// The cluster's TLS context, if its `transport_socket` is TLS. Errors name the field from
    /// the cluster down (`transport_socket.typed_config.common_tls_context...`).
    pub fn for_cluster(
        config: &legate_config::cluster::Cluster,
        scope: &Scope,
    ) -> Result<Option<Arc<ClientContext>>, String> {
        use legate_config::extensions::TransportSocketConfig;
        match config.transport_socket.as_ref().map(|t| &t.config) {
            None | Some(TransportSocketConfig::RawBuffer) => Ok(None),
            Some(TransportSocketConfig::UpstreamTls(tls)) => {
                ClientContext::new(tls, SslStats::new(scope), config.upstream_sni_options().auto_san_validation)
                    .map(|c| Some(Arc::new(c)))
                    .map_err(|e| format!("transport_socket.typed_config.{e}"))
            }
            Some(TransportSocketConfig::DownstreamTls(_)) => {
                Err("transport_socket.typed_config: a cluster's TLS transport socket is an UpstreamTlsContext".into())
            }
        }
    }

    pub fn new(config: &UpstreamTlsContext, stats: SslStats, auto_san_validation: bool) -> Result<Self, String> {
        let common = &config.common_tls_context;
        if common.validation_context_sds_secret_config.is_some() || common.combined_validation_context.is_some() {
            return Err("common_tls_context: a validation context from SDS is supported by legate on downstream \
                 contexts only (use validation_context)"
                .into());
        }
        if !common.tls_certificate_sds_secret_configs.is_empty() {
            return Err("common_tls_context.tls_certificate_sds_secret_configs: SDS for upstream contexts is not \
                 supported by legate yet"
                .into());
        }
        let provider = super::crypto_provider(&common.tls_params);
        let versions =
            super::protocol_versions(&common.tls_params, true).map_err(|e| format!("common_tls_context.{e}"))?;
        let mut ca_certificates = Vec::new();
        let validator = match &common.validation_context {
            Some(validation) => {
                if let Some(ca) = &validation.trusted_ca {
                    for der in load_chain(ca, "common_tls_context.validation_context.trusted_ca")? {
                        ca_certificates.extend(CertificateDetails::parse(&der, source_name(ca)));
                    }
                }
                Some(
                    CertValidator::new(validation, provider.clone(), stats.clone())
                        .map_err(|e| format!("common_tls_context.{e}"))?,
                )
            }
            None => None,
        };
        let auto_san = auto_san_validation.then(|| stats.clone());
        let verifier = Arc::new(ServerCertValidator { validator, provider: provider.clone(), auto_san });
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("common_tls_context.tls_params: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut certificates = Vec::new();
        let mut client = match common.tls_certificates.as_slice() {
            [] => builder.with_no_client_auth(),
            [cert] => {
                let at = "common_tls_context.tls_certificates[0]";
                let (Some(chain_source), Some(key_source)) = (&cert.certificate_chain, &cert.private_key) else {
                    return Err(format!("{at}: certificate_chain and private_key are both required"));
                };
                let chain = load_chain(chain_source, &format!("{at}.certificate_chain"))?;
                let key = load_key(key_source, &format!("{at}.private_key"))?;
                certificates
                    .extend(chain.first().and_then(|c| CertificateDetails::parse(c, source_name(chain_source))));
                let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
                    format!("{at}.private_key: unsupported private key in {}: {e}", source_name(key_source))
                })?;
                let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
                let leaf = certified.end_entity_cert().map_err(|e| format!("{at}.certificate_chain: {e}"))?;
                if key_matches(leaf, certified.key.as_ref()) == Some(false) {
                    return Err(format!(
                        "{at}.private_key: the private key in {} does not match the certificate in {}",
                        source_name(key_source),
                        source_name(chain_source)
                    ));
                }
                builder.with_client_cert_resolver(Arc::new(ClientCertificate(Arc::new(certified))))
            }
            _ => return Err("common_tls_context.tls_certificates: an upstream context takes one certificate".into()),
        };
        client.resumption = match config.max_session_keys {
            Some(0) => Resumption::disabled(),
            _ => Resumption::store(Arc::new(ClientSessionMemoryCache::new(256))),
        };
        let sni = if config.sni.is_empty() {
            None
        } else {
            Some(
                ServerName::try_from(config.sni.clone())
                    .map_err(|e| format!("sni: invalid \"{}\": {e}", config.sni))?,
            )
        };
        let with_alpn = |fallback: &[u8]| {
            let mut c = client.clone();
            c.alpn_protocols = if common.alpn_protocols.is_empty() {
                vec![fallback.to_vec()]
            } else {
                common.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect()
            };
            Arc::new(c)
        };
        let http1 = with_alpn(b"http/1.1");
        let http2 = with_alpn(b"h2");
        client.alpn_protocols = common.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(ClientContext { configured: Arc::new(client), http1, http2, sni, stats, certificates, ca_certificates })
    }

    /// Runs the client handshake over a connected socket.
    ///
    /// # Cancel safety
    /// Dropping the future drops the socket.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        address: SocketAddr,
        alpn: Alpn,
        sni: Option<&str>,
    ) -> Result<TransportSocket, HandshakeError> {
        let config = match alpn {
            Alpn::Configured => &self.configured,
            Alpn::Http1 => &self.http1,
            Alpn::Http2 => &self.http2,
        };
        // `auto_sni`'s name for this connection, else `sni`. An IP address as server name
        // sends no SNI (RFC 6066 §3).
        let server_name = sni
            .and_then(|name| ServerName::try_from(name.to_string()).ok())
            .or_else(|| self.sni.clone())
            .unwrap_or(ServerName::IpAddress(address.ip().into()));
        let seen = Arc::new(PeerSignatureScheme::default());
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let connect = connector.connect(server_name, PrefixedTcpStream::new(stream, bytes::BytesMut::new()));
        match RecordPeerSignature::new(seen.clone(), connect).await {
            Ok(tls) => {
                let conn = tls.get_ref().1;
                let info = connection_info(conn, None);
                log_handshake(&self.stats, &info, conn, &seen);
                Ok(TransportSocket::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
            }
            Err(e) => {
                let error = handshake_error(e);
                self.stats.connection_error.inc();
                tracing::debug!(%address, error = %error, "upstream TLS handshake failed");
                Err(error)
            }
        }
    }
}

/// The one client certificate of an upstream context, offered whatever the server asks.
#[derive(Debug)]
struct ClientCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Connects to an upstream host with the cluster's transport socket: TCP, socket options, then
/// TLS when the cluster has it.
///
/// # Cancel safety
/// Dropping the future abandons the attempt and its socket.
pub async fn connect(
    cluster: &Cluster,
    address: SocketAddr,
    alpn: Alpn,
    sni: Option<&str>,
) -> Result<TransportSocket, ConnectError> {
    // Source address, socket options, no Nagle and keepalive: the cluster's TCP connect.
    let stream = cluster.connect(address).await.map_err(ConnectError::Tcp)?;
    match cluster.transport_socket() {
        None => Ok(TransportSocket::RawBuffer(stream)),
        Some(tls) => tls.handshake(stream, address, alpn, sni).await.map_err(ConnectError::Tls),
    }
}

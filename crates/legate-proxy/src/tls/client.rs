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

use arc_swap::ArcSwap;
use legate_config::tls::UpstreamTlsContext;
use legate_stats::{Counter, Scope};
use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::cert_validator::{CertValidator, PeerSignatureScheme, RecordPeerSignature, ServerCertValidator};
use super::certificate::CertificateDetails;
use super::secret::{ca_details, load_certified_key, TlsCertificates, ValidationSecret, ValidatorTarget, Watched};
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
    /// The client certificate, static or from SDS.
    certificate: ClientCertificate,
    verifier: Arc<ServerCertValidator>,
    /// A validation context from SDS, swapped into `verifier` when it changes.
    validation_secret: Option<Arc<ValidationSecret>>,
    /// The `trusted_ca` certificates, for `/certs`.
    ca_certificates: Arc<ArcSwap<Vec<CertificateDetails>>>,
    /// `client_ssl_socket_factory.upstream_context_secrets_not_ready`: connections attempted
    /// before the SDS secrets arrived.
    secrets_not_ready: Counter,
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
            // Envoy's reason as it is, not in its `TLS_error:` form.
            ConnectError::Tls(e @ HandshakeError::SecretsNotReady) => e.to_string(),
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
            Some(TransportSocketConfig::UpstreamTls(tls)) => ClientContext::new(
                tls,
                scope,
                &scope.store().scope(""),
                config.upstream_sni_options().auto_san_validation,
            )
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| format!("transport_socket.typed_config.{e}")),
            Some(TransportSocketConfig::DownstreamTls(_)) => {
                Err("transport_socket.typed_config: a cluster's TLS transport socket is an UpstreamTlsContext".into())
            }
        }
    }

    /// Reads the certificates and builds the rustls configs. Secrets a control plane has not
    /// sent yet are no error: the context is not [`Self::ready`] until they arrive, and its
    /// cluster warms meanwhile. `scope` is the cluster's (`ssl.*`,
    /// `client_ssl_socket_factory.*`), `root` the stats root (`sds.<name>.*`).
    pub fn new(
        config: &UpstreamTlsContext,
        scope: &Scope,
        root: &Scope,
        auto_san_validation: bool,
    ) -> Result<Self, String> {
        let common = &config.common_tls_context;
        let stats = SslStats::new(scope);
        let update_by_sds = scope.counter("client_ssl_socket_factory.ssl_context_update_by_sds");
        let secrets_not_ready = scope.counter("client_ssl_socket_factory.upstream_context_secrets_not_ready");
        let provider = super::crypto_provider(&common.tls_params);
        let versions =
            super::protocol_versions(&common.tls_params, true).map_err(|e| format!("common_tls_context.{e}"))?;
        let (validation, source, at) = super::server::validation_source(common, true)?;
        let ca_certificates = Arc::new(ArcSwap::from_pointee(match &validation {
            Some(v) => ca_details(v).map_err(|e| format!("{at}{e}"))?,
            None => Vec::new(),
        }));
        let validator = match &validation {
            Some(v) => Some(CertValidator::new(v, provider.clone(), stats.clone()).map_err(|e| format!("{at}{e}"))?),
            None => None,
        };
        let auto_san = auto_san_validation.then(|| stats.clone());
        let verifier = Arc::new(ServerCertValidator::new(validator, source.is_some(), provider.clone(), auto_san));
        let validation_secret = source.map(|source| {
            Arc::new(ValidationSecret::new(
                source,
                provider.clone(),
                stats.clone(),
                ValidatorTarget::Server(verifier.clone()),
                ca_certificates.clone(),
                update_by_sds.clone(),
                root,
            ))
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("common_tls_context.tls_params: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let certificate = match (common.tls_certificates.as_slice(), common.tls_certificate_sds_secret_configs.len()) {
            ([], 0) => ClientCertificate::None,
            ([cert], 0) => {
                let (key, details) = load_certified_key(cert, "common_tls_context.tls_certificates[0]", &provider)?;
                ClientCertificate::Static(key, Box::new(details))
            }
            ([], 1) => ClientCertificate::Sds(Arc::new(TlsCertificates::new(
                common,
                provider.clone(),
                update_by_sds,
                root,
                true,
            )?)),
            _ => {
                return Err("common_tls_context.tls_certificates: an upstream context takes one certificate \
                     (tls_certificates and tls_certificate_sds_secret_configs together)"
                    .into())
            }
        };
        let mut client = match &certificate {
            ClientCertificate::None => builder.with_no_client_auth(),
            _ => builder.with_client_cert_resolver(Arc::new(certificate.clone())),
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
        Ok(ClientContext {
            configured: Arc::new(client),
            http1,
            http2,
            sni,
            stats,
            certificate,
            verifier,
            validation_secret,
            ca_certificates,
            secrets_not_ready,
        })
    }

    /// Whether its SDS secrets (if any) arrived: a cluster warms until they do, as Envoy.
    pub fn ready(&self) -> bool {
        self.verifier.ready() && !matches!(&self.certificate, ClientCertificate::Sds(c) if !c.ready())
    }

    /// The names of the secrets it takes from SDS.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        if let ClientCertificate::Sds(certificates) = &self.certificate {
            names.extend(certificates.secret_names());
        }
        if let Some(validation) = &self.validation_secret {
            names.push(validation.name());
        }
        names
    }

    /// The parts of this context that read SDS files, which the main thread polls for
    /// changes (a control plane's deliveries call [`Self::reload_delivered_secrets`] instead).
    pub fn watched_files(&self) -> Vec<Watched> {
        self.watched().into_iter().filter(Watched::reads_files).collect()
    }

    /// Whether some of its secrets come from SDS.
    pub fn has_sds(&self) -> bool {
        matches!(self.certificate, ClientCertificate::Sds(_)) || self.validation_secret.is_some()
    }

    fn watched(&self) -> Vec<Watched> {
        let mut watched = Vec::new();
        if let ClientCertificate::Sds(certificates) = &self.certificate {
            watched.push(Watched::Certificates(certificates.clone()));
        }
        if let Some(validation) = &self.validation_secret {
            watched.push(Watched::Validation(validation.clone()));
        }
        watched
    }

    /// Reads the secrets a control plane delivers again now if they changed (a delivery the
    /// cluster waits for); those from files are polled (see [`Self::watched_files`]).
    pub fn reload_delivered_secrets(&self) {
        for watched in self.watched().into_iter().filter(|w| !w.reads_files()) {
            if let Some(Err(e)) = watched.reload_if_changed() {
                tracing::warn!(error = %e, "TLS secret update rejected; keeping the current one");
            }
        }
    }

    /// The client certificate, for `/certs`.
    pub fn certificates(&self) -> Vec<CertificateDetails> {
        match &self.certificate {
            ClientCertificate::None => Vec::new(),
            ClientCertificate::Static(_, details) => vec![(**details).clone()],
            ClientCertificate::Sds(certificates) => {
                certificates.current().details.iter().map(|d| (**d).clone()).collect()
            }
        }
    }

    /// The `trusted_ca` certificates, for `/certs`.
    pub fn ca_certificates(&self) -> Arc<Vec<CertificateDetails>> {
        self.ca_certificates.load_full()
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
        if !self.ready() {
            // Envoy's "not ready" transport socket: the secrets did not come in time.
            self.secrets_not_ready.inc();
            return Err(HandshakeError::SecretsNotReady);
        }
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

/// The client certificate of an upstream context (one at most), offered whatever the server
/// asks: none, a static one, or the one an SDS secret holds now.
#[derive(Clone)]
enum ClientCertificate {
    None,
    Static(Arc<rustls::sign::CertifiedKey>, Box<CertificateDetails>),
    Sds(Arc<TlsCertificates>),
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientCertificate::None => "None",
            ClientCertificate::Static(..) => "Static",
            ClientCertificate::Sds(_) => "Sds",
        })
    }
}

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        match self {
            ClientCertificate::None => None,
            ClientCertificate::Static(key, _) => Some(key.clone()),
            ClientCertificate::Sds(certificates) => certificates.current().keys.first().map(|(_, key)| key.clone()),
        }
    }

    fn has_certs(&self) -> bool {
        !matches!(self, ClientCertificate::None)
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

//! The downstream TLS context (`DownstreamTlsContext`) and its handshake.
//!
//! Lifecycle of a TLS connection: the listener picks the filter chain (SNI and ALPN come from
//! `tls_inspector`, whose bytes are fed to rustls first), [`ServerContext::handshake`] runs
//! under `transport_socket_connect_timeout`, then the network filters run over the decrypted
//! stream ([`TransportSocket::Tls`]). A failed handshake closes the connection and counts
//! `ssl.connection_error` (and the `fail_verify_*` stat that decided it).
//!
//! Certificates: several `tls_certificates` are chosen per handshake by SNI (exact name, then
//! wildcard, against DNS SANs or the CN) and by what key types the client can verify, as Envoy
//! does; without a match, the first usable certificate.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use legate_config::tls::DownstreamTlsContext;
use legate_stats::{Counter, Scope};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;

use super::cert_validator::{CertValidator, ClientCertValidator, PeerSignatureScheme, RecordPeerSignature};
use super::certificate::CertificateDetails;
use super::secret::{ca_details, TlsCertificates, ValidationSecret, ValidationSource, ValidatorTarget, Watched};
use super::stats::SslStats;
use crate::network::{PrefixedTcpStream, TransportSocket};

/// What the handshake settled, kept with the connection (access log, XFCC, HCM codec choice).
#[derive(Clone, Debug, Default)]
pub struct SslConnectionInfo {
    /// The SNI the client sent.
    pub server_name: Option<String>,
    /// The ALPN protocol agreed (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: &'static str,
    /// Envoy's cipher name (`TLS_AES_128_GCM_SHA256`, `ECDHE-RSA-AES128-GCM-SHA256`).
    pub cipher: String,
    /// The peer's leaf certificate, when it sent one.
    pub peer_certificate: Option<CertificateDetails>,
    /// Our certificate in this handshake (downstream).
    pub local_certificate: Option<Arc<CertificateDetails>>,
    /// SHA-256 of the peer's leaf certificate, lowercase hex (XFCC `Hash`).
    pub peer_certificate_hash: Option<String>,
    pub session_reused: bool,
}

/// A handshake that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer broke the TLS protocol or failed verification: `ssl.connection_error`.
    #[error("TLS error: {0}")]
    Tls(#[source] rustls::Error),
    /// The peer went away mid-handshake.
    #[error("connection closed during the TLS handshake")]
    Io(#[source] std::io::Error),
    /// An upstream context's SDS secrets never came (Envoy's `NotReadySslSocket`): no
    /// handshake is tried.
    #[error("TLS error: Secret is not supplied by SDS")]
    SecretsNotReady,
}

/// One filter chain's `DownstreamTlsContext`, ready for handshakes; shared by all workers.
pub struct ServerContext {
    config: Arc<rustls::ServerConfig>,
    /// The same, for a client whose ALPN offer shares nothing with `alpn_protocols`.
    config_without_alpn: Arc<rustls::ServerConfig>,
    pub stats: SslStats,
    /// The certificates served (static and SDS), also for `/certs`.
    pub certificates: Arc<TlsCertificates>,
    /// The `trusted_ca` certificates, for `/certs`.
    pub ca_certificates: Arc<ArcSwap<Vec<CertificateDetails>>>,
    /// A validation context read from SDS files, reloaded on change.
    pub validation_secret: Option<Arc<ValidationSecret>>,
}

impl ServerContext {
    /// Reads the certificates and builds the rustls config. Errors name the field under the
    /// context (`common_tls_context.tls_certificates[0].private_key.filename: ...`).
    /// `update_by_sds` counts certificate reloads
    /// (`<prefix>.server_ssl_socket_factory.ssl_context_update_by_sds`).
    pub fn new(
        config: &DownstreamTlsContext,
        stats: SslStats,
        update_by_sds: Counter,
        root: &Scope,
    ) -> Result<Self, String> {
        let common = &config.common_tls_context;
        let provider = super::crypto_provider(&common.tls_params);
        let versions =
            super::protocol_versions(&common.tls_params, false).map_err(|e| format!("common_tls_context.{e}"))?;
        let certificates =
            Arc::new(TlsCertificates::new(common, provider.clone(), update_by_sds.clone(), root, false)?);
        // The validation context: inline, from an SDS file, or both combined.
        let (validation, source, at) = validation_source(common, false)?;
        let validation = validation.as_ref();
        let ca_certificates = Arc::new(ArcSwap::from_pointee(match validation {
            Some(v) => ca_details(v).map_err(|e| format!("{at}{e}"))?,
            None => Vec::new(),
        }));
        let client_verifier = match validation {
            Some(validation) => {
                let validator =
                    CertValidator::new(validation, provider.clone(), stats.clone()).map_err(|e| format!("{at}{e}"))?;
                Some(Arc::new(ClientCertValidator::new(validator, config.require_client_certificate)))
            }
            None if config.require_client_certificate => {
                // Envoy asks for a certificate and, without a validation context, checks nothing.
                let validator = CertValidator::new(&Default::default(), provider.clone(), stats.clone())?;
                Some(Arc::new(ClientCertValidator::new(validator, true)))
            }
            None => None,
        };
        let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match &client_verifier {
            Some(v) => v.clone(),
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let validation_secret = match (source, &client_verifier) {
            (Some(source), Some(target)) => Some(Arc::new(ValidationSecret::new(
                source,
                provider.clone(),
                stats.clone(),
                ValidatorTarget::Client(target.clone()),
                ca_certificates.clone(),
                update_by_sds.clone(),
                root,
            ))),
            _ => None,
        };
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| format!("common_tls_context.tls_params: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(CertificateResolver {
                certificates: certificates.clone(),
                require_sni: config.require_sni,
            }));
        server.alpn_protocols = common.alpn_protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        // BoringSSL in Envoy prefers the server's cipher order unless told otherwise.
        server.ignore_client_order = !config.prefer_client_ciphers;
        if config.disable_stateful_session_resumption {
            server.session_storage = Arc::new(NoServerSessionStorage {});
        }
        if !config.disable_stateless_session_resumption {
            server.ticketer =
                rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
        }
        let mut without_alpn = server.clone();
        without_alpn.alpn_protocols.clear();
        Ok(ServerContext {
            config: Arc::new(server),
            config_without_alpn: Arc::new(without_alpn),
            stats,
            certificates,
            ca_certificates,
            validation_secret,
        })
    }

    /// Runs the server handshake on `stream`. `initial` is what listener filters already read
    /// (the ClientHello, for `tls_inspector`): rustls sees it first.
    ///
    /// # Cancel safety
    /// Dropping the future drops the socket (the connection is abandoned).
    pub async fn handshake(
        &self,
        stream: TcpStream,
        initial: BytesMut,
    ) -> Result<(TransportSocket, SslConnectionInfo), HandshakeError> {
        let io = PrefixedTcpStream::new(stream, initial);
        let start = match tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await {
            Ok(start) => start,
            Err(e) => return Err(self.on_handshake_error(handshake_error(e))),
        };
        // ALPN with nothing in common: go on without ALPN, as BoringSSL does (rustls would
        // refuse the handshake with `no_application_protocol`).
        // The certificate the resolver will pick, for `%DOWNSTREAM_LOCAL_*%` and XFCC's `By`
        // (rustls does not say which one it used).
        let local_certificate = {
            let hello = start.client_hello();
            let current = self.certificates.current();
            current.select(hello.server_name(), hello.signature_schemes()).and_then(|i| current.details.get(i).cloned())
        };
        let ours = &self.config.alpn_protocols;
        let no_common_alpn = start
            .client_hello()
            .alpn()
            .is_some_and(|mut theirs| !ours.is_empty() && !theirs.any(|p| ours.iter().any(|o| o.as_slice() == p)));
        let seen = Arc::new(PeerSignatureScheme::default());
        let config = if no_common_alpn { self.config_without_alpn.clone() } else { self.config.clone() };
        match RecordPeerSignature::new(seen.clone(), start.into_stream(config)).await {
            Ok(tls) => {
                let mut info = self.on_handshake(tls.get_ref().1, &seen);
                info.local_certificate = local_certificate;
                Ok((TransportSocket::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))), info))
            }
            Err(e) => Err(self.on_handshake_error(handshake_error(e))),
        }
    }

    fn on_handshake_error(&self, error: HandshakeError) -> HandshakeError {
        if let HandshakeError::Tls(e) = &error {
            self.stats.connection_error.inc();
            if matches!(e, rustls::Error::NoCertificatesPresented) {
                self.stats.fail_verify_no_cert.inc();
            }
        }
        tracing::debug!(error = %error, "TLS handshake failed");
        error
    }

    /// Envoy's `logHandshake`: `ssl.handshake` and the per-property counters.
    fn on_handshake(&self, conn: &rustls::ServerConnection, seen: &PeerSignatureScheme) -> SslConnectionInfo {
        let info = connection_info(conn, conn.server_name().map(str::to_string));
        log_handshake(&self.stats, &info, conn, seen);
        if info.peer_certificate.is_none() {
            self.stats.no_certificate.inc();
        }
        info
    }
}

impl ServerContext {
    /// What of this context the main thread must watch on disk.
    pub fn watched(&self) -> Vec<Watched> {
        let mut watched = Vec::new();
        if self.certificates.has_sds() {
            watched.push(Watched::Certificates(self.certificates.clone()));
        }
        if let Some(validation) = &self.validation_secret {
            watched.push(Watched::Validation(validation.clone()));
        }
        watched
    }
}

/// The context's validation context (read now when it comes from SDS), where it came from
/// when that is SDS, and the field path prefix for its errors. With `pending_ok`, a secret
/// that has not arrived from a control plane yet is no error: the context is `None` until it
/// does (an upstream context; its cluster warms meanwhile).
pub(super) fn validation_source(
    common: &legate_config::tls::CommonTlsContext,
    pending_ok: bool,
) -> Result<(Option<legate_config::tls::CertificateValidationContext>, Option<ValidationSource>, String), String> {
    let sds_source = |sds: &legate_config::tls::SdsSecretConfig, at: &str, default| {
        let source = super::secret::SecretSource::of(sds).map_err(|e| format!("{at}.sds_config: {e}"))?;
        Ok::<_, String>(ValidationSource { name: sds.name.clone(), source, default })
    };
    match (
        &common.validation_context,
        &common.validation_context_sds_secret_config,
        &common.combined_validation_context,
    ) {
        (None, None, None) => Ok((None, None, String::new())),
        (Some(v), None, None) => Ok((Some(v.clone()), None, "common_tls_context.".into())),
        (None, Some(sds), None) => {
            let at = "common_tls_context.validation_context_sds_secret_config";
            let source = sds_source(sds, at, None)?;
            if pending_ok && !source.source.arrived() {
                return Ok((None, Some(source), format!("{at} (secret '{}'): ", sds.name)));
            }
            let config = source.read().map_err(|e| format!("{at}: {e}"))?;
            Ok((Some(config), Some(source), format!("{at} (secret '{}'): ", sds.name)))
        }
        (None, None, Some(combined)) => {
            let at = "common_tls_context.combined_validation_context.validation_context_sds_secret_config";
            let source = sds_source(
                &combined.validation_context_sds_secret_config,
                at,
                Some(combined.default_validation_context.clone()),
            )?;
            let name = &combined.validation_context_sds_secret_config.name;
            if pending_ok && !source.source.arrived() {
                return Ok((None, Some(source), format!("{at} (secret '{name}'): ")));
            }
            let config = source.read().map_err(|e| format!("{at}: {e}"))?;
            Ok((Some(config), Some(source), format!("{at} (secret '{name}'): ")))
        }
        _ => Err("common_tls_context: only one of validation_context, validation_context_sds_secret_config and \
             combined_validation_context may be set"
            .into()),
    }
}

/// A failed handshake's error: rustls' verdict, or the socket's.
pub(crate) fn handshake_error(e: std::io::Error) -> HandshakeError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => HandshakeError::Tls(tls.clone()),
        None => HandshakeError::Io(e),
    }
}

/// What the handshake settled, for either side.
pub(crate) fn connection_info<D>(conn: &rustls::ConnectionCommon<D>, server_name: Option<String>) -> SslConnectionInfo {
    let peer = conn.peer_certificates().and_then(|c| c.first());
    SslConnectionInfo {
        server_name,
        alpn: conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
        version: conn.protocol_version().map_or("", super::names::version),
        cipher: conn.negotiated_cipher_suite().map(super::names::cipher).unwrap_or_default(),
        peer_certificate: peer.and_then(|der| CertificateDetails::parse(der, String::new())),
        local_certificate: None,
        peer_certificate_hash: peer.map(|der| {
            ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|b| format!("{b:02x}")).collect()
        }),
        session_reused: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    }
}

pub(crate) fn log_handshake<D>(
    stats: &SslStats,
    info: &SslConnectionInfo,
    conn: &rustls::ConnectionCommon<D>,
    seen: &PeerSignatureScheme,
) {
    stats.handshake.inc();
    if info.session_reused {
        stats.session_reused.inc();
    }
    stats.inc_named("versions", info.version);
    stats.inc_named("ciphers", &info.cipher);
    if let Some(group) = conn.negotiated_key_exchange_group() {
        stats.inc_named("curves", super::names::curve(group.name()));
    }
    if let Some(sigalg) = seen.name() {
        stats.inc_named("sigalgs", sigalg);
    }
}

/// Picks the certificate for a ClientHello: SNI, then key type, among the current set.
struct CertificateResolver {
    certificates: Arc<TlsCertificates>,
    require_sni: bool,
}

impl std::fmt::Debug for CertificateResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateResolver").field("require_sni", &self.require_sni).finish()
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        if self.require_sni && sni.is_none() {
            return None;
        }
        let current = self.certificates.current();
        let index = current.select(sni, hello.signature_schemes())?;
        current.keys.get(index).map(|(_, key)| key.clone())
    }
}

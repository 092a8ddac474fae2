//! `CertificateValidationContext`: how a peer's certificate is checked, in Envoy's order: the
//! trust chain (`trusted_ca`, `ssl.fail_verify_error`), then `match_typed_subject_alt_names`
//! (`ssl.fail_verify_san`), then `verify_certificate_hash`/`verify_certificate_spki`
//! (`ssl.fail_verify_cert_hash`). The same checks serve client certificates (downstream) and
//! server certificates (upstream).
//!
//! As Envoy, an upstream certificate is *not* checked against the SNI: only the configured
//! SAN matchers constrain names. Without `trusted_ca` the chain is not verified at all
//! (Envoy's default), only the matchers apply.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine;
use legate_config::matcher::StringMatcher;
use legate_config::tls::{CertificateValidationContext, SanType, TrustChainVerification};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};

use super::certificate::{load_chain, CertificateDetails, SubjectAltName};
use super::stats::SslStats;

/// The checks of one `validation_context`, compiled.
#[derive(Debug)]
pub struct CertValidator {
    /// `None`: no `trusted_ca`, or `ACCEPT_UNTRUSTED`.
    roots: Option<Arc<RootCertStore>>,
    /// rustls' WebPKI client verifier over `roots` (client-auth EKU, no name check).
    client_chain: Option<Arc<dyn ClientCertVerifier>>,
    san_matchers: Vec<(Option<SanType>, StringMatcher)>,
    /// SHA-256 of the whole certificate.
    hashes: Vec<[u8; 32]>,
    /// SHA-256 of the SubjectPublicKeyInfo.
    spkis: Vec<[u8; 32]>,
    allow_expired: bool,
    provider: Arc<CryptoProvider>,
    stats: SslStats,
}

impl CertValidator {
    /// Errors name the field under `validation_context`.
    pub fn new(
        config: &CertificateValidationContext,
        provider: Arc<CryptoProvider>,
        stats: SslStats,
    ) -> Result<Self, String> {
        let roots = match (&config.trusted_ca, config.trust_chain_verification) {
            (Some(ca), TrustChainVerification::VerifyTrustChain) => {
                let mut store = RootCertStore::empty();
                for cert in load_chain(ca, "validation_context.trusted_ca")? {
                    store
                        .add(cert)
                        .map_err(|e| format!("validation_context.trusted_ca: invalid CA certificate: {e}"))?;
                }
                Some(Arc::new(store))
            }
            _ => None,
        };
        let mut hashes = Vec::new();
        for (i, hash) in config.verify_certificate_hash.iter().enumerate() {
            let hex: String = hash.chars().filter(|c| *c != ':').collect();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    format!("validation_context.verify_certificate_hash[{i}]: invalid hex-encoded SHA-256 \"{hash}\"")
                })?;
            hashes.push(bytes);
        }
        let mut spkis = Vec::new();
        for (i, spki) in config.verify_certificate_spki.iter().enumerate() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(spki.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    format!(
                        "validation_context.verify_certificate_spki[{i}]: invalid base64-encoded SHA-256 \"{spki}\""
                    )
                })?;
            spkis.push(bytes);
        }
        let mut san_matchers: Vec<(Option<SanType>, StringMatcher)> =
            config.match_typed_subject_alt_names.iter().map(|m| (Some(m.san_type), m.matcher.clone())).collect();
        san_matchers.extend(config.match_subject_alt_names.iter().map(|m| (None, m.clone())));
        let client_chain = roots
            .as_ref()
            .map(|roots| {
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| format!("validation_context.trusted_ca: {e}"))
            })
            .transpose()?;
        Ok(CertValidator {
            roots,
            client_chain,
            san_matchers,
            hashes,
            spkis,
            allow_expired: config.allow_expired_certificate,
            provider,
            stats,
        })
    }

    /// The root subjects sent in a CertificateRequest.
    fn root_hints(&self) -> Vec<DistinguishedName> {
        self.roots.as_ref().map(|r| r.subjects()).unwrap_or_default()
    }

    /// Runs every check on a presented chain, counting the failure that decides.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        client: bool,
    ) -> Result<(), Error> {
        if let Some(roots) = &self.roots {
            let result = match (&self.client_chain, client) {
                (Some(chain), true) => chain.verify_client_cert(end_entity, intermediates, now).map(|_| ()),
                _ => rustls::server::ParsedCertificate::try_from(end_entity).and_then(|parsed| {
                    rustls::client::verify_server_cert_signed_by_trust_anchor(
                        &parsed,
                        roots,
                        intermediates,
                        now,
                        self.provider.signature_verification_algorithms.all,
                    )
                }),
            };
            match result {
                Ok(()) => {}
                Err(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }))
                    if self.allow_expired => {}
                Err(e) => {
                    self.stats.fail_verify_error.inc();
                    return Err(e);
                }
            }
        }
        if !self.san_matchers.is_empty() {
            let details = CertificateDetails::parse(end_entity, String::new());
            let sans = details.map(|d| d.subject_alt_names).unwrap_or_default();
            let matched = sans.iter().any(|san| {
                self.san_matchers.iter().any(|(san_type, matcher)| {
                    let type_matches = matches!(
                        (san_type, san),
                        (None, _)
                            | (Some(SanType::Dns), SubjectAltName::Dns(_))
                            | (Some(SanType::Email), SubjectAltName::Email(_))
                            | (Some(SanType::Uri), SubjectAltName::Uri(_))
                            | (Some(SanType::IpAddress), SubjectAltName::IpAddress(_))
                    );
                    type_matches && san_matches(matcher, san)
                })
            });
            if !matched {
                self.stats.fail_verify_san.inc();
                return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
            }
        }
        if !self.hashes.is_empty() || !self.spkis.is_empty() {
            let hash = sha256(end_entity);
            let spki =
                x509_parser::parse_x509_certificate(end_entity).ok().map(|(_, cert)| sha256(cert.public_key().raw));
            let matched = self.hashes.contains(&hash) || spki.is_some_and(|s| self.spkis.contains(&s));
            if !matched {
                self.stats.fail_verify_cert_hash.inc();
                return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
            }
        }
        Ok(())
    }
}

/// A DNS SAN matcher written as an exact name also accepts a wildcard SAN covering it (Envoy's
/// `dnsNameMatch`).
fn san_matches(matcher: &StringMatcher, san: &SubjectAltName) -> bool {
    if matcher.matches(san.value()) {
        return true;
    }
    match (san, &matcher.exact) {
        (SubjectAltName::Dns(pattern), Some(exact)) if pattern.starts_with("*.") => {
            super::certificate::dns_name_matches(pattern, exact)
        }
        _ => false,
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The downstream side: asks for a client certificate when a `validation_context` is given or
/// `require_client_certificate` is set.
///
/// The checks can be replaced while connections run (a validation context from SDS files);
/// each verification uses the current ones. The CA names sent in the CertificateRequest are
/// those of the first checks (they are a hint to the client, not a rule).
#[derive(Debug)]
pub struct ClientCertValidator {
    validator: ArcSwap<CertValidator>,
    pub mandatory: bool,
    root_hints: Vec<DistinguishedName>,
}

impl ClientCertValidator {
    pub fn new(validator: CertValidator, mandatory: bool) -> Self {
        let root_hints = validator.root_hints();
        ClientCertValidator { validator: ArcSwap::from_pointee(validator), mandatory, root_hints }
    }

    /// Swaps the checks in (an SDS update); handshakes under way finish with the old ones.
    pub fn replace(&self, validator: CertValidator) {
        self.validator.store(Arc::new(validator));
    }
}

impl ClientCertVerifier for ClientCertValidator {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.validator.load().verify(end_entity, intermediates, now, true).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        record_peer_signature(dss.scheme);
        verify_tls12_signature(message, cert, dss, &self.validator.load().provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        record_peer_signature(dss.scheme);
        verify_tls13_signature(message, cert, dss, &self.validator.load().provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.validator.load().provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The upstream side: always installed, so an upstream without `validation_context` is
/// accepted as Envoy accepts it (no checks), and one with it gets Envoy's checks.
#[derive(Debug)]
pub struct ServerCertValidator {
    /// The checks; `None` checks nothing, unless they come from SDS (`from_sds`): then no
    /// server is trusted until the secret arrived.
    validator: ArcSwapOption<CertValidator>,
    from_sds: bool,
    pub provider: Arc<CryptoProvider>,
    /// `auto_san_validation`: the certificate must also be valid for the name the connection
    /// was made for (the request's host, sent as SNI by `auto_sni`).
    pub auto_san: Option<SslStats>,
}

impl ServerCertValidator {
    pub fn new(
        validator: Option<CertValidator>,
        from_sds: bool,
        provider: Arc<CryptoProvider>,
        auto_san: Option<SslStats>,
    ) -> Self {
        ServerCertValidator { validator: ArcSwapOption::from(validator.map(Arc::new)), from_sds, provider, auto_san }
    }

    /// Swaps the checks in (an SDS update); handshakes under way finish with the old ones.
    pub fn replace(&self, validator: CertValidator) {
        self.validator.store(Some(Arc::new(validator)));
    }

    /// Whether the checks it needs are there: always, unless they come from SDS.
    pub fn ready(&self) -> bool {
        !self.from_sds || self.validator.load().is_some()
    }
}

impl ServerCertVerifier for ServerCertValidator {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self.validator.load().as_deref() {
            Some(v) => v.verify(end_entity, intermediates, now, false)?,
            None if self.from_sds => {
                return Err(Error::General("the validation context is not supplied by SDS yet".into()));
            }
            None => {}
        }
        if let Some(stats) = &self.auto_san {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            if let Err(e) = rustls::client::verify_server_name(&parsed, server_name) {
                stats.fail_verify_san.inc();
                return Err(e);
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        record_peer_signature(dss.scheme);
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        record_peer_signature(dss.scheme);
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The signature scheme the peer signed its handshake with, recorded for one handshake (Envoy's
/// `ssl.sigalgs.<name>` counts the peer's signature algorithm: the client's with mTLS, the
/// server's upstream).
#[derive(Debug, Default)]
pub struct PeerSignatureScheme(AtomicU16);

impl PeerSignatureScheme {
    fn record(&self, scheme: SignatureScheme) {
        self.0.store(u16::from(scheme), Ordering::Relaxed);
    }

    /// Envoy's (BoringSSL's) name of the scheme, if the peer signed.
    pub fn name(&self) -> Option<&'static str> {
        let scheme = SignatureScheme::from(self.0.load(Ordering::Relaxed));
        Some(match scheme {
            SignatureScheme::ECDSA_NISTP256_SHA256 => "ecdsa_secp256r1_sha256",
            SignatureScheme::ECDSA_NISTP384_SHA384 => "ecdsa_secp384r1_sha384",
            SignatureScheme::ECDSA_NISTP521_SHA512 => "ecdsa_secp521r1_sha512",
            SignatureScheme::RSA_PSS_SHA256 => "rsa_pss_rsae_sha256",
            SignatureScheme::RSA_PSS_SHA384 => "rsa_pss_rsae_sha384",
            SignatureScheme::RSA_PSS_SHA512 => "rsa_pss_rsae_sha512",
            SignatureScheme::RSA_PKCS1_SHA256 => "rsa_pkcs1_sha256",
            SignatureScheme::RSA_PKCS1_SHA384 => "rsa_pkcs1_sha384",
            SignatureScheme::RSA_PKCS1_SHA512 => "rsa_pkcs1_sha512",
            SignatureScheme::RSA_PKCS1_SHA1 => "rsa_pkcs1_sha1",
            SignatureScheme::ECDSA_SHA1_Legacy => "ecdsa_sha1",
            SignatureScheme::ED25519 => "ed25519",
            _ => return None,
        })
    }
}

thread_local! {
    /// The handshake being polled on this thread, while [`RecordPeerSignature`] polls it: the
    /// verifiers are shared by every connection of a context (rustls resumes a session only
    /// with the verifier that made it), so they find the handshake they serve here.
    static CURRENT_HANDSHAKE: RefCell<Option<Arc<PeerSignatureScheme>>> = const { RefCell::new(None) };
}

fn record_peer_signature(scheme: SignatureScheme) {
    CURRENT_HANDSHAKE.with(|current| {
        if let Some(seen) = current.borrow().as_ref() {
            seen.record(scheme);
        }
    });
}

/// Polls a handshake future with `seen` as this thread's current handshake, so the signature
/// the peer's handshake is verified with lands in `seen`. Verification runs synchronously
/// inside the poll, so the attribution is exact whatever else the worker runs between polls.
pub struct RecordPeerSignature<F> {
    seen: Arc<PeerSignatureScheme>,
    inner: F,
}

impl<F> RecordPeerSignature<F> {
    pub fn new(seen: Arc<PeerSignatureScheme>, inner: F) -> Self {
        RecordPeerSignature { seen, inner }
    }
}

impl<F: Future + Unpin> Future for RecordPeerSignature<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let seen = self.seen.clone();
        let previous = CURRENT_HANDSHAKE.with(|current| current.replace(Some(seen)));
        let polled = Pin::new(&mut self.inner).poll(cx);
        CURRENT_HANDSHAKE.with(|current| *current.borrow_mut() = previous);
        polled
    }
}

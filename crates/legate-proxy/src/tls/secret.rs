//! A context's certificates and where they come from (Envoy's secret manager and
//! `TlsCertificateConfigProvider`): static `tls_certificates`, read once at load, and
//! `tls_certificate_sds_secret_configs` from SDS files or a control plane, read again when
//! they change; the same for a validation context from SDS
//! (`validation_context_sds_secret_config`, `combined_validation_context`), downstream (client
//! certificate checks) and upstream (server certificate checks).
//!
//! Rotation: the main thread calls [`TlsCertificates::reload_if_changed`] every second (see
//! [`watch`]); it compares a hash of the SDS file and of every file its secrets name (or the
//! version of a control plane's delivery) with the last one, and on a change loads them all,
//! then swaps the new set in. Upstream contexts poll only their files: a control plane's
//! delivery reloads them at once (`ClusterManager::secrets_changed`). Handshakes read the
//! current set when they pick a certificate, so connections in flight keep theirs and new ones
//! get the new certificate; nothing is dropped. An update that fails to load (a half-written
//! key, a key that does not match) is logged and the previous certificates stay, as Envoy
//! rejects a bad SDS update. legate polls instead of Envoy's inotify directory watch, so
//! `watched_directory` changes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use legate_config::core::DataSource;
use legate_config::tls::{CertificateValidationContext, CommonTlsContext, SdsFile, TlsCertificate};
use legate_stats::{Counter, Scope};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use super::cert_validator::{CertValidator, ClientCertValidator, ServerCertValidator};
use super::certificate::{key_matches, load_chain, load_key, source_name, CertificateDetails};
use super::stats::SslStats;

/// The certificates in use, with the names each serves.
pub struct LoadedCertificates {
    /// Each certificate with the DNS names it serves (for SNI).
    pub keys: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    /// For `/certs`.
    pub details: Vec<Arc<CertificateDetails>>,
}

legate_stats::stats! {
    /// `sds.<secret name>.*`, the update counters of Envoy's SDS subscriptions.
    pub struct SdsStats {
        counter update_attempt,
        counter update_success,
        counter update_rejected,
    }
}

/// One `tls_certificate_sds_secret_configs` entry: a secret name in a file.
struct SdsCertificate {
    name: String,
    source: SecretSource,
    stats: SdsStats,
}

/// A context's certificates; shared by all workers, reloaded by the main thread.
pub struct TlsCertificates {
    provider: Arc<CryptoProvider>,
    statics: Vec<TlsCertificate>,
    sds: Vec<SdsCertificate>,
    current: ArcSwap<LoadedCertificates>,
    /// Hash of the SDS files' bytes (and the files they name) last loaded.
    fingerprint: Mutex<u64>,
    /// `<prefix>.server_ssl_socket_factory.ssl_context_update_by_sds`.
    update_by_sds: Counter,
}

impl LoadedCertificates {
    /// The certificate for a ClientHello (its SNI and the signature schemes it accepts): an
    /// exact name, then a wildcard, among those whose key the client can verify; else the
    /// first usable one, else the first. An index into `keys` and `details`.
    pub fn select(&self, sni: Option<&str>, schemes: &[rustls::SignatureScheme]) -> Option<usize> {
        let usable = |key: &CertifiedKey| key.key.choose_scheme(schemes).is_some();
        let position = |matches: &dyn Fn(&str) -> bool| {
            self.keys.iter().position(|(names, key)| names.iter().any(|n| matches(n)) && usable(key))
        };
        sni.and_then(|sni| {
            position(&|n: &str| n.eq_ignore_ascii_case(sni))
                .or_else(|| position(&|n: &str| super::certificate::dns_name_matches(n, sni)))
        })
        .or_else(|| self.keys.iter().position(|(_, key)| usable(key)))
        .or_else(|| (!self.keys.is_empty()).then_some(0))
    }
}

impl TlsCertificates {
    /// Loads every certificate now; errors name the field under `common_tls_context`.
    /// `root` is the stats root (`sds.<name>.*`).
    ///
    /// With `pending_ok`, certificates a control plane has not sent yet are no error: the set
    /// stays empty until they arrive (an upstream context, whose cluster warms meanwhile).
    pub fn new(
        common: &CommonTlsContext,
        provider: Arc<CryptoProvider>,
        update_by_sds: Counter,
        root: &Scope,
        pending_ok: bool,
    ) -> Result<Self, String> {
        let mut sds = Vec::new();
        for (i, config) in common.tls_certificate_sds_secret_configs.iter().enumerate() {
            let at = format!("common_tls_context.tls_certificate_sds_secret_configs[{i}]");
            let source = SecretSource::of(config).map_err(|e| format!("{at}.sds_config: {e}"))?;
            let stats = SdsStats::new(&root.scope(&format!("sds.{}", config.name)));
            sds.push(SdsCertificate { name: config.name.clone(), source, stats });
        }
        let certificates = TlsCertificates {
            provider,
            statics: common.tls_certificates.clone(),
            sds,
            current: ArcSwap::from_pointee(LoadedCertificates { keys: Vec::new(), details: Vec::new() }),
            fingerprint: Mutex::new(0),
            update_by_sds,
        };
        if pending_ok && !certificates.sds.iter().all(|s| s.source.arrived()) {
            // Loaded by the reload that follows the delivery (the fingerprint changes then).
            *certificates.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) = certificates.sds_fingerprint();
            return Ok(certificates);
        }
        let (loaded, fingerprint) = certificates.load()?;
        if loaded.keys.is_empty() {
            return Err("common_tls_context.tls_certificates: a TLS server needs at least one certificate".into());
        }
        certificates.current.store(Arc::new(loaded));
        *certificates.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint;
        Ok(certificates)
    }

    /// The certificates in use now.
    pub fn current(&self) -> Arc<LoadedCertificates> {
        self.current.load_full()
    }

    /// Whether some certificates come from SDS files (and may change).
    pub fn has_sds(&self) -> bool {
        !self.sds.is_empty()
    }

    /// The names of the SDS secrets it reads.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.sds.iter().map(|s| s.name.as_str())
    }

    /// Whether the certificates are loaded (a control plane's may not have arrived yet).
    pub fn ready(&self) -> bool {
        !self.current.load().keys.is_empty()
    }

    /// Loads again when the SDS files changed: `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let fingerprint = self.sds_fingerprint();
        {
            let mut last = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
            if *last == fingerprint {
                return None;
            }
            // Remember it even if loading fails: a broken update is reported once, not
            // every second, and the next change is tried again.
            *last = fingerprint;
        }
        // A control plane's secrets are counted by their subscription (`sds.<name>.*`).
        let files = || self.sds.iter().filter(|s| matches!(s.source, SecretSource::File(_)));
        files().for_each(|s| s.stats.update_attempt.inc());
        let result = match self.load() {
            Ok((loaded, _)) if loaded.keys.is_empty() => Err("the update holds no certificate".into()),
            Ok((loaded, _)) => {
                self.current.store(Arc::new(loaded));
                self.update_by_sds.inc();
                Ok(())
            }
            Err(e) => Err(e),
        };
        for sds in files() {
            match &result {
                Ok(()) => sds.stats.update_success.inc(),
                Err(_) => sds.stats.update_rejected.inc(),
            }
        }
        Some(result)
    }

    /// Reads every certificate: static ones, then each SDS secret.
    fn load(&self) -> Result<(LoadedCertificates, u64), String> {
        let fingerprint = self.sds_fingerprint();
        let mut loaded = LoadedCertificates { keys: Vec::new(), details: Vec::new() };
        for (i, cert) in self.statics.iter().enumerate() {
            let at = format!("common_tls_context.tls_certificates[{i}]");
            let (key, details) = load_certified_key(cert, &at, &self.provider)?;
            loaded.keys.push((details.dns_names(), key));
            loaded.details.push(Arc::new(details));
        }
        for (i, sds) in self.sds.iter().enumerate() {
            let at = format!("common_tls_context.tls_certificate_sds_secret_configs[{i}]");
            let cert = read_sds_certificate(sds).map_err(|e| format!("{at}: {e}"))?;
            let (key, details) = load_certified_key(
                &cert,
                &format!("{at} (secret '{}' {})", sds.name, sds.source.describe()),
                &self.provider,
            )?;
            loaded.keys.push((details.dns_names(), key));
            loaded.details.push(Arc::new(details));
        }
        Ok((loaded, fingerprint))
    }

    /// A hash of the SDS files and of the files their secrets name (unreadable files hash as
    /// empty: the load that follows reports them).
    fn sds_fingerprint(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
        for sds in &self.sds {
            hasher.update(&sds.source.fingerprint(&sds.name).to_le_bytes());
        }
        hasher.digest()
    }
}

fn read_sds_certificate(sds: &SdsCertificate) -> Result<TlsCertificate, String> {
    sds.source
        .secret(&sds.name)?
        .tls_certificate
        .ok_or_else(|| format!("secret '{}' {} has no tls_certificate", sds.name, sds.source.describe()))
}

/// Where an SDS secret comes from: a file (`path_config_source`), read when it changes, or a
/// control plane, whose latest delivery is kept in [`DynamicSecret`].
pub enum SecretSource {
    File(String),
    Dynamic(Arc<DynamicSecret>),
}

impl SecretSource {
    pub fn of(config: &legate_config::tls::SdsSecretConfig) -> Result<SecretSource, String> {
        let source = config.sds_config.as_ref().ok_or("an SDS secret needs its sds_config")?;
        if let Some(file) = source.file() {
            return Ok(SecretSource::File(file.to_string()));
        }
        if source.kind().is_none() {
            return Err("one of path_config_source, api_config_source or ads is required".into());
        }
        Ok(SecretSource::Dynamic(dynamic_secret(&config.name)))
    }

    /// The secret named `name`.
    pub fn secret(&self, name: &str) -> Result<legate_config::tls::Secret, String> {
        match self {
            SecretSource::File(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("unable to read file: {file}: {e}"))?;
                let parsed = SdsFile::parse(&text).map_err(|e| format!("invalid SDS file {file}: {e}"))?;
                parsed
                    .resources
                    .into_iter()
                    .find(|s| s.name == name)
                    .ok_or_else(|| format!("no secret '{name}' in {file}"))
            }
            SecretSource::Dynamic(secret) => {
                secret.get().map(|s| (*s).clone()).ok_or_else(|| format!("secret '{name}' has not arrived from SDS"))
            }
        }
    }

    /// Whether the secret can be read now: a file is there to read (or to fail on), a control
    /// plane's secret must have arrived.
    pub fn arrived(&self) -> bool {
        match self {
            SecretSource::File(_) => true,
            SecretSource::Dynamic(secret) => secret.get().is_some(),
        }
    }

    /// Changes whenever the secret (or a file it names) changes.
    fn fingerprint(&self, name: &str) -> u64 {
        match self {
            SecretSource::File(file) => {
                let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
                let text = std::fs::read(file).unwrap_or_default();
                hasher.update(&text);
                let secret = std::str::from_utf8(&text)
                    .ok()
                    .and_then(|t| SdsFile::parse(t).ok())
                    .and_then(|f| f.resources.into_iter().find(|s| s.name == name));
                let cert = secret.as_ref().and_then(|s| s.tls_certificate.as_ref());
                let ca =
                    secret.as_ref().and_then(|s| s.validation_context.as_ref()).and_then(|v| v.trusted_ca.as_ref());
                let named = cert.iter().flat_map(|c| [&c.certificate_chain, &c.private_key]).flatten().chain(ca);
                for source in named {
                    if let DataSource::Filename(path) = source {
                        hasher.update(&std::fs::read(path).unwrap_or_default());
                    }
                }
                hasher.digest()
            }
            SecretSource::Dynamic(secret) => secret.version(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            SecretSource::File(file) => format!("in {file}"),
            SecretSource::Dynamic(_) => "from SDS".to_string(),
        }
    }
}

/// A secret by name as the control plane last sent it (SDS over xDS). Shared by every TLS
/// context naming it; contexts pick an update up on their next reload check.
pub struct DynamicSecret {
    pub name: String,
    secret: arc_swap::ArcSwapOption<legate_config::tls::Secret>,
    version: std::sync::atomic::AtomicU64,
}

impl DynamicSecret {
    pub fn get(&self) -> Option<Arc<legate_config::tls::Secret>> {
        self.secret.load_full()
    }

    pub fn set(&self, secret: legate_config::tls::Secret) {
        self.secret.store(Some(Arc::new(secret)));
        self.version.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }
}

static DYNAMIC_SECRETS: Mutex<Option<rustc_hash::FxHashMap<String, Arc<DynamicSecret>>>> = Mutex::new(None);

/// The dynamic secret named `name` (created empty on first use).
pub fn dynamic_secret(name: &str) -> Arc<DynamicSecret> {
    let mut secrets = DYNAMIC_SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    secrets
        .get_or_insert_with(Default::default)
        .entry(name.to_string())
        .or_insert_with(|| {
            Arc::new(DynamicSecret {
                name: name.to_string(),
                secret: arc_swap::ArcSwapOption::empty(),
                version: std::sync::atomic::AtomicU64::new(0),
            })
        })
        .clone()
}

pub fn load_certified_key(
    cert: &TlsCertificate,
    at: &str,
    provider: &CryptoProvider,
) -> Result<(Arc<CertifiedKey>, CertificateDetails), String> {
    let (Some(chain_source), Some(key_source)) = (&cert.certificate_chain, &cert.private_key) else {
        return Err(format!("{at}: certificate_chain and private_key are both required"));
    };
    let chain = load_chain(chain_source, &format!("{at}.certificate_chain"))?;
    let key = load_key(key_source, &format!("{at}.private_key"))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{at}.private_key: unsupported private key in {}: {e}", source_name(key_source)))?;
    let certified = CertifiedKey::new(chain, signing_key);
    let leaf = certified.end_entity_cert().map_err(|e| format!("{at}.certificate_chain: {e}"))?;
    if key_matches(leaf, certified.key.as_ref()) == Some(false) {
        return Err(format!(
            "{at}.private_key: the private key in {} does not match the certificate in {}",
            source_name(key_source),
            source_name(chain_source)
        ));
    }
    let details = CertificateDetails::parse(leaf, source_name(chain_source))
        .ok_or_else(|| format!("{at}.certificate_chain: unparsable certificate"))?;
    Ok((Arc::new(certified), details))
}

/// [`watch`] for as long as `owner` (an LDS listener) is alive.
pub async fn watch_while<T>(contexts: Vec<Watched>, owner: std::sync::Weak<T>) {
    tokio::select! {
        () = watch(contexts) => {}
        () = async {
            while owner.strong_count() > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        } => {}
    }
}

/// Polls the SDS-backed certificates and validation contexts every second, on the main
/// thread, for as long as the server runs.
pub async fn watch(contexts: Vec<Watched>) {
    if contexts.is_empty() {
        return;
    }
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for watched in &contexts {
            match watched.reload_if_changed() {
                None => {}
                Some(Ok(())) => tracing::info!("TLS secrets reloaded from SDS files"),
                Some(Err(e)) => tracing::warn!(error = %e, "TLS secret update rejected; keeping the current one"),
            }
        }
    }
}

/// Where an SDS validation context comes from.
pub struct ValidationSource {
    /// The secret's name and source.
    pub name: String,
    pub source: SecretSource,
    /// `combined_validation_context.default_validation_context`, merged under the secret.
    pub default: Option<CertificateValidationContext>,
}

impl ValidationSource {
    /// Reads the secret and merges it over the default; errors name the source.
    pub fn read(&self) -> Result<CertificateValidationContext, String> {
        let secret = self.source.secret(&self.name)?;
        let dynamic = secret
            .validation_context
            .as_ref()
            .ok_or_else(|| format!("secret '{}' {} has no validation_context", self.name, self.source.describe()))?;
        Ok(match &self.default {
            Some(default) => default.merged_with(dynamic),
            None => dynamic.clone(),
        })
    }

    fn fingerprint(&self) -> u64 {
        self.source.fingerprint(&self.name)
    }
}

/// Whose certificate checks an SDS validation context replaces.
pub enum ValidatorTarget {
    /// A downstream context's client certificate checks.
    Client(Arc<ClientCertValidator>),
    /// An upstream context's server certificate checks.
    Server(Arc<ServerCertValidator>),
}

impl ValidatorTarget {
    fn replace(&self, validator: CertValidator) {
        match self {
            ValidatorTarget::Client(target) => target.replace(validator),
            ValidatorTarget::Server(target) => target.replace(validator),
        }
    }
}

/// A validation context from SDS (a file or a control plane), swapped into the context's
/// certificate checks when it (or the CA file it names) changes.
pub struct ValidationSecret {
    source: ValidationSource,
    provider: Arc<CryptoProvider>,
    ssl_stats: SslStats,
    target: ValidatorTarget,
    /// The CA certificates, for `/certs`.
    pub ca_details: Arc<ArcSwap<Vec<CertificateDetails>>>,
    fingerprint: Mutex<u64>,
    stats: SdsStats,
    update_by_sds: Counter,
}

impl ValidationSecret {
    pub fn new(
        source: ValidationSource,
        provider: Arc<CryptoProvider>,
        ssl_stats: SslStats,
        target: ValidatorTarget,
        ca_details: Arc<ArcSwap<Vec<CertificateDetails>>>,
        update_by_sds: Counter,
        root: &Scope,
    ) -> Self {
        let fingerprint = Mutex::new(source.fingerprint());
        let stats = SdsStats::new(&root.scope(&format!("sds.{}", source.name)));
        ValidationSecret { source, provider, ssl_stats, target, ca_details, fingerprint, stats, update_by_sds }
    }

    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.source.name
    }

    /// Loads again when the files changed: `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let fingerprint = self.source.fingerprint();
        {
            let mut last = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
            if *last == fingerprint {
                return None;
            }
            *last = fingerprint;
        }
        // A control plane's secrets are counted by their subscription (`sds.<name>.*`).
        let file = matches!(self.source.source, SecretSource::File(_));
        if file {
            self.stats.update_attempt.inc();
        }
        let result = self.source.read().and_then(|config| {
            let ca = ca_details(&config)?;
            let validator = CertValidator::new(&config, self.provider.clone(), self.ssl_stats.clone())?;
            self.target.replace(validator);
            self.ca_details.store(Arc::new(ca));
            Ok(())
        });
        match &result {
            Ok(()) => {
                if file {
                    self.stats.update_success.inc();
                }
                self.update_by_sds.inc();
            }
            Err(_) if file => self.stats.update_rejected.inc(),
            Err(_) => {}
        }
        Some(result)
    }
}

/// The `trusted_ca` certificates of a validation context, for `/certs`.
pub fn ca_details(config: &CertificateValidationContext) -> Result<Vec<CertificateDetails>, String> {
    let Some(ca) = &config.trusted_ca else { return Ok(Vec::new()) };
    Ok(load_chain(ca, "validation_context.trusted_ca")?
        .iter()
        .filter_map(|der| CertificateDetails::parse(der, source_name(ca)))
        .collect())
}

/// What the main thread polls for changes (files on disk, a control plane's deliveries).
pub enum Watched {
    Certificates(Arc<TlsCertificates>),
    Validation(Arc<ValidationSecret>),
}

impl Watched {
    pub(crate) fn reload_if_changed(&self) -> Option<Result<(), String>> {
        match self {
            Watched::Certificates(c) => c.reload_if_changed(),
            Watched::Validation(v) => v.reload_if_changed(),
        }
    }

    /// Whether it reads files (which only a poll notices changing); a control plane's
    /// deliveries can be told instead.
    pub(crate) fn reads_files(&self) -> bool {
        match self {
            Watched::Certificates(c) => c.sds.iter().any(|s| matches!(s.source, SecretSource::File(_))),
            Watched::Validation(v) => matches!(v.source.source, SecretSource::File(_)),
        }
    }
}

//! `envoy.extensions.transport_sockets.tls.v3`: the TLS transport socket's config,
//! `DownstreamTlsContext` on filter chains and `UpstreamTlsContext` on clusters.
//!
//! legate terminates TLS with rustls, which implements TLS 1.2 and 1.3 and a smaller set of
//! cipher suites and curves than BoringSSL. A value rustls cannot honour (`TLSv1_0`, a CBC
//! cipher, `P-521`) is a load error naming it, never silently dropped. Certificate files are
//! read by the data plane when the config is applied (this crate does no I/O).

use serde::{Deserialize, Deserializer};

use crate::core::DataSource;
use crate::matcher::StringMatcher;
use crate::unsupported::Unsupported;

/// `envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DownstreamTlsContext {
    #[serde(default)]
    pub common_tls_context: CommonTlsContext,
    /// Refuse a client that presents no certificate (default false).
    #[serde(default)]
    pub require_client_certificate: bool,
    /// Refuse a ClientHello without SNI (default false).
    #[serde(default)]
    pub require_sni: bool,
    pub session_ticket_keys: Option<Unsupported>,
    pub session_ticket_keys_sds_secret_config: Option<Unsupported>,
    /// Default false: session tickets (stateless resumption) are issued.
    #[serde(default)]
    pub disable_stateless_session_resumption: bool,
    /// Default false: a server-side session cache (stateful resumption) is kept.
    #[serde(default)]
    pub disable_stateful_session_resumption: bool,
    pub session_timeout: Option<Unsupported>,
    pub ocsp_staple_policy: Option<Unsupported>,
    pub full_scan_certs_on_sni_mismatch: Option<Unsupported>,
    /// Default false: the server's cipher order wins, as BoringSSL in Envoy.
    #[serde(default)]
    pub prefer_client_ciphers: bool,
}

/// `envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsContext {
    #[serde(default)]
    pub common_tls_context: CommonTlsContext,
    /// SNI sent to every upstream host (empty: none, unless `auto_sni`).
    #[serde(default)]
    pub sni: String,
    /// Renegotiation is a TLS 1.2 feature rustls does not implement.
    #[serde(default, deserialize_with = "refuse_true")]
    pub allow_renegotiation: bool,
    /// Default 1; legate keeps rustls' resumption cache per cluster.
    pub max_session_keys: Option<u32>,
    pub enforce_rsa_key_usage: Option<Unsupported>,
}

/// `envoy.extensions.transport_sockets.tls.v3.CommonTlsContext`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommonTlsContext {
    #[serde(default)]
    pub tls_params: TlsParameters,
    #[serde(default)]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Certificates delivered by SDS, from a file (`path_config_source`, reloaded when it
    /// changes) or a control plane (`ads`, `api_config_source`); downstream contexts only.
    #[serde(default)]
    pub tls_certificate_sds_secret_configs: Vec<SdsSecretConfig>,
    pub tls_certificate_provider_instance: Option<Unsupported>,
    pub tls_certificate_certificate_provider: Option<Unsupported>,
    pub tls_certificate_certificate_provider_instance: Option<Unsupported>,
    pub validation_context: Option<CertificateValidationContext>,
    /// The validation context from SDS, a file or a control plane (downstream contexts; reloaded
    /// on change).
    pub validation_context_sds_secret_config: Option<SdsSecretConfig>,
    /// A default validation context merged with one from SDS.
    pub combined_validation_context: Option<CombinedValidationContext>,
    pub validation_context_certificate_provider: Option<Unsupported>,
    pub validation_context_certificate_provider_instance: Option<Unsupported>,
    /// ALPN protocols offered (upstream) or accepted in order of preference (downstream).
    #[serde(default)]
    pub alpn_protocols: Vec<String>,
    pub custom_handshaker: Option<Unsupported>,
    pub key_log: Option<Unsupported>,
    pub custom_tls_certificate_selector: Option<Unsupported>,
}

/// `CommonTlsContext.CombinedCertificateValidationContext`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CombinedValidationContext {
    #[serde(default)]
    pub default_validation_context: CertificateValidationContext,
    pub validation_context_sds_secret_config: SdsSecretConfig,
    pub validation_context_certificate_provider: Option<Unsupported>,
    pub validation_context_certificate_provider_instance: Option<Unsupported>,
}

impl CertificateValidationContext {
    /// `dynamic` merged over `self` as protobuf's `MergeFrom` does (Envoy's combined
    /// validation context): set fields replace, lists are appended.
    pub fn merged_with(&self, dynamic: &CertificateValidationContext) -> CertificateValidationContext {
        let mut merged = self.clone();
        if dynamic.trusted_ca.is_some() {
            merged.trusted_ca = dynamic.trusted_ca.clone();
        }
        merged.verify_certificate_spki.extend(dynamic.verify_certificate_spki.iter().cloned());
        merged.verify_certificate_hash.extend(dynamic.verify_certificate_hash.iter().cloned());
        merged.match_typed_subject_alt_names.extend(dynamic.match_typed_subject_alt_names.iter().cloned());
        merged.match_subject_alt_names.extend(dynamic.match_subject_alt_names.iter().cloned());
        merged.allow_expired_certificate |= dynamic.allow_expired_certificate;
        if dynamic.trust_chain_verification != TrustChainVerification::default() {
            merged.trust_chain_verification = dynamic.trust_chain_verification;
        }
        merged
    }
}

/// `envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig`: a secret by name from a config
/// source: a file (`path_config_source`) or a control plane (`ads`, `api_config_source`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SdsSecretConfig {
    pub name: String,
    pub sds_config: Option<crate::config_source::ConfigSource>,
}

/// A file-based SDS response: `resources` of `Secret`s.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SdsFile {
    #[serde(default)]
    pub resources: Vec<Secret>,
    pub version_info: Option<serde_json::Value>,
}

/// `envoy.extensions.transport_sockets.tls.v3.Secret` (with its `@type`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub name: String,
    pub tls_certificate: Option<TlsCertificate>,
    pub session_ticket_keys: Option<Unsupported>,
    pub validation_context: Option<CertificateValidationContext>,
    pub generic_secret: Option<Unsupported>,
}

impl SdsFile {
    /// Parses an SDS file's text (YAML or JSON); errors carry the field path.
    pub fn parse(text: &str) -> Result<SdsFile, crate::path::PathError> {
        let value: serde_json::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| crate::path::PathError { path: String::new(), message: e.to_string() })?;
        crate::path::from_value(value)
    }

    /// The secret named `name` with a `validation_context`.
    pub fn validation_context(&self, name: &str) -> Option<&CertificateValidationContext> {
        self.resources.iter().find(|s| s.name == name).and_then(|s| s.validation_context.as_ref())
    }

    /// The secret named `name` with a `tls_certificate`.
    pub fn tls_certificate(&self, name: &str) -> Option<&TlsCertificate> {
        self.resources.iter().find(|s| s.name == name).and_then(|s| s.tls_certificate.as_ref())
    }
}

/// `envoy.extensions.transport_sockets.tls.v3.TlsCertificate`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM: the leaf first, then intermediates.
    pub certificate_chain: Option<DataSource>,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub private_key: Option<DataSource>,
    pub pkcs12: Option<Unsupported>,
    pub watched_directory: Option<Unsupported>,
    pub private_key_provider: Option<Unsupported>,
    pub password: Option<Unsupported>,
    pub ocsp_staple: Option<Unsupported>,
    pub signed_certificate_timestamp: Option<Unsupported>,
}

/// `envoy.extensions.transport_sockets.tls.v3.TlsParameters`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsParameters {
    #[serde(default)]
    pub tls_minimum_protocol_version: TlsProtocol,
    #[serde(default)]
    pub tls_maximum_protocol_version: TlsProtocol,
    /// OpenSSL names; `[A|B]` equal-preference groups as Envoy's defaults write them. Applies
    /// to TLS 1.2 (TLS 1.3 suites are not configurable, as in BoringSSL).
    #[serde(default, deserialize_with = "deserialize_cipher_suites")]
    pub cipher_suites: Vec<String>,
    #[serde(default, deserialize_with = "deserialize_ecdh_curves")]
    pub ecdh_curves: Vec<String>,
    pub signature_algorithms: Option<Unsupported>,
    pub compliance_policies: Option<Unsupported>,
}

/// `TlsParameters.TlsProtocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsProtocol {
    /// Envoy's default for the context: TLS 1.2 minimum; TLS 1.3 maximum for servers, TLS 1.2
    /// for clients.
    #[default]
    Auto,
    Tls12,
    Tls13,
}

impl<'de> Deserialize<'de> for TlsProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "TLS_AUTO" => Ok(TlsProtocol::Auto),
            "TLSv1_2" => Ok(TlsProtocol::Tls12),
            "TLSv1_3" => Ok(TlsProtocol::Tls13),
            "TLSv1_0" | "TLSv1_1" => Err(serde::de::Error::custom(format!(
                "{name} is not supported by legate (rustls implements TLSv1_2 and TLSv1_3 only)"
            ))),
            other => Err(serde::de::Error::custom(format!(
                "unknown variant \"{other}\", expected one of TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3"
            ))),
        }
    }
}

/// TLS 1.2 cipher suites rustls implements: Envoy's (OpenSSL) name and the IANA name rustls
/// uses. Envoy's other defaults (`AES128-SHA`, `ECDHE-RSA-AES128-SHA`, …) are CBC or non-ECDHE
/// suites that rustls leaves out on purpose.
pub const CIPHER_SUITES: &[(&str, &str)] = &[
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ("ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];

/// ECDH groups rustls (ring) implements: Envoy's name and the rustls name.
pub const ECDH_CURVES: &[(&str, &str)] = &[("X25519", "X25519"), ("P-256", "secp256r1"), ("P-384", "secp384r1")];

fn deserialize_cipher_suites<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    let mut out = Vec::new();
    for entry in names {
        // `[A|B]`: an equal-preference group; rustls has no such notion, so the group keeps its
        // place in the order with its members in the order written.
        let inner = entry.trim().trim_start_matches('[').trim_end_matches(']');
        for name in inner.split('|').map(str::trim) {
            if !CIPHER_SUITES.iter().any(|(envoy, _)| *envoy == name) {
                return Err(serde::de::Error::custom(format!(
                    "cipher suite \"{name}\" is not supported by legate (rustls implements {})",
                    CIPHER_SUITES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )));
            }
            out.push(name.to_string());
        }
    }
    Ok(out)
}

fn deserialize_ecdh_curves<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    for name in &names {
        if !ECDH_CURVES.iter().any(|(envoy, _)| envoy == name) {
            return Err(serde::de::Error::custom(format!(
                "ECDH curve \"{name}\" is not supported by legate (rustls implements X25519, P-256, P-384)"
            )));
        }
    }
    Ok(names)
}

fn refuse_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    if bool::deserialize(d)? {
        return Err(serde::de::Error::custom(
            "allow_renegotiation: true is not supported by legate (rustls does not implement TLS renegotiation)",
        ));
    }
    Ok(false)
}

/// `envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateValidationContext {
    /// PEM CA bundle the peer's chain must lead to.
    pub trusted_ca: Option<DataSource>,
    pub ca_certificate_provider_instance: Option<Unsupported>,
    pub watched_directory: Option<Unsupported>,
    /// Base64 SHA-256 of the peer's SubjectPublicKeyInfo; any one must match.
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    /// Hex SHA-256 of the peer's certificate (colons allowed); any one must match.
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default)]
    pub match_typed_subject_alt_names: Vec<SubjectAltNameMatcher>,
    /// Deprecated in Envoy: matches any SAN type.
    #[serde(default)]
    pub match_subject_alt_names: Vec<StringMatcher>,
    pub require_signed_certificate_timestamp: Option<Unsupported>,
    pub crl: Option<Unsupported>,
    /// Default false.
    #[serde(default)]
    pub allow_expired_certificate: bool,
    #[serde(default)]
    pub trust_chain_verification: TrustChainVerification,
    pub custom_validator_config: Option<Unsupported>,
    #[serde(default)]
    pub only_verify_leaf_cert_crl: bool,
    pub max_verify_depth: Option<Unsupported>,
    pub system_root_certs: Option<Unsupported>,
}

/// `CertificateValidationContext.TrustChainVerification`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TrustChainVerification {
    #[default]
    #[serde(rename = "VERIFY_TRUST_CHAIN")]
    VerifyTrustChain,
    /// Accept any chain; only the SAN/hash/SPKI checks apply.
    #[serde(rename = "ACCEPT_UNTRUSTED")]
    AcceptUntrusted,
}

/// `envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubjectAltNameMatcher {
    pub san_type: SanType,
    pub matcher: StringMatcher,
    pub oid: Option<Unsupported>,
}

/// `SubjectAltNameMatcher.SanType`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum SanType {
    #[serde(rename = "EMAIL")]
    Email,
    #[serde(rename = "DNS")]
    Dns,
    #[serde(rename = "URI")]
    Uri,
    #[serde(rename = "IP_ADDRESS")]
    IpAddress,
    #[serde(rename = "OTHER_NAME")]
    OtherName,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;
    use serde_json::json;

    #[test]
    fn cipher_groups_are_flattened_and_unknown_names_refused() {
        let p: TlsParameters = path::from_value(json!({
            "cipher_suites": ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "ECDHE-RSA-AES128-GCM-SHA256"]
        }))
        .unwrap();
        assert_eq!(p.cipher_suites.len(), 3);
        let err = path::from_value::<TlsParameters>(json!({"cipher_suites": ["AES128-SHA"]})).unwrap_err();
        assert_eq!(err.path, "cipher_suites");
        assert!(err.message.contains("\"AES128-SHA\""), "{}", err.message);
    }

    #[test]
    fn old_protocol_versions_are_refused() {
        let err = path::from_value::<TlsParameters>(json!({"tls_minimum_protocol_version": "TLSv1_0"})).unwrap_err();
        assert_eq!(err.path, "tls_minimum_protocol_version");
        assert!(err.message.contains("TLSv1_0"));
    }

    #[test]
    fn renegotiation_is_refused() {
        let err = path::from_value::<UpstreamTlsContext>(json!({"allow_renegotiation": true})).unwrap_err();
        assert_eq!(err.path, "allow_renegotiation");
        assert!(path::from_value::<UpstreamTlsContext>(json!({"allow_renegotiation": false})).is_ok());
    }
}

//! Certificates and keys from `DataSource`s (`filename`, `inline_string`, `inline_bytes`), and
//! the facts about a certificate that `/certs`, SNI selection and the access log need.
//!
//! Errors name the field (`certificate_chain`, `private_key`, `trusted_ca`) and, for a file,
//! its path: what an operator needs to fix a broken deployment.

use std::time::{SystemTime, UNIX_EPOCH};

use legate_config::core::DataSource;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Where the bytes came from, as `/certs` shows it (`path`), or `<inline>`.
pub fn source_name(source: &DataSource) -> String {
    match source {
        DataSource::Filename(path) => path.clone(),
        DataSource::EnvironmentVariable(name) => format!("<environment variable {name}>"),
        _ => "<inline>".into(),
    }
}

fn field_of(source: &DataSource) -> &'static str {
    match source {
        DataSource::Filename(_) => "filename",
        DataSource::InlineBytes(_) => "inline_bytes",
        DataSource::InlineString(_) => "inline_string",
        DataSource::EnvironmentVariable(_) => "environment_variable",
    }
}

/// A PEM certificate chain (leaf first). `field` is the config field, for errors.
pub fn load_chain(source: &DataSource, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let at = format!("{field}.{}", field_of(source));
    let pem = source.read().map_err(|e| format!("{at}: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{at}: failed to load certificate chain from {}: {e}", source_name(source)))?;
    if chain.is_empty() {
        return Err(format!("{at}: failed to load certificate chain from {}: no PEM certificate", source_name(source)));
    }
    for cert in &chain {
        X509Certificate::from_der(cert)
            .map_err(|e| format!("{at}: failed to load certificate chain from {}: {e}", source_name(source)))?;
    }
    Ok(chain)
}

/// A PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(source: &DataSource, field: &str) -> Result<PrivateKeyDer<'static>, String> {
    let at = format!("{field}.{}", field_of(source));
    let pem = source.read().map_err(|e| format!("{at}: {e}"))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{at}: failed to load private key from {}: {e}", source_name(source)))
}

/// Whether `key` is the private key of `cert` (their SubjectPublicKeyInfo are the same). Read
/// with x509-parser rather than rustls' `keys_match`, whose WebPKI parser refuses v1
/// certificates that Envoy (and rustls as a server) serve fine. `None`: the key cannot tell.
pub fn key_matches(cert: &CertificateDer<'_>, key: &dyn rustls::sign::SigningKey) -> Option<bool> {
    let spki = key.public_key()?;
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    Some(parsed.public_key().raw == spki.as_ref())
}

/// One subject alternative name, typed as Envoy's `SanType`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectAltName {
    Dns(String),
    Email(String),
    Uri(String),
    IpAddress(String),
}

impl SubjectAltName {
    pub fn value(&self) -> &str {
        match self {
            SubjectAltName::Dns(v)
            | SubjectAltName::Email(v)
            | SubjectAltName::Uri(v)
            | SubjectAltName::IpAddress(v) => v,
        }
    }
}

/// A certificate's serial number as Envoy prints it (BoringSSL's `BN_bn2hex`, lowercase):
/// whole bytes from the first that is not zero, so without DER's sign byte; `0` for zero.
fn serial_hex(der_serial: &[u8]) -> String {
    let first = der_serial.iter().position(|b| *b != 0).unwrap_or(der_serial.len());
    match der_serial.get(first..) {
        Some(digits) if !digits.is_empty() => digits.iter().map(|b| format!("{b:02x}")).collect(),
        _ => "0".to_string(),
    }
}

/// What `/certs`, SNI matching and the access log know about one certificate.
#[derive(Clone, Debug)]
pub struct CertificateDetails {
    /// File path or `<inline>`.
    pub path: String,
    /// Lowercase hex, as Envoy prints it.
    pub serial_number: String,
    pub subject_alt_names: Vec<SubjectAltName>,
    /// RFC 2253 form (`CN=client,O=Acme`), Envoy's `%DOWNSTREAM_PEER_SUBJECT%`.
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl CertificateDetails {
    pub fn parse(der: &[u8], path: String) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut subject_alt_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                subject_alt_names.push(match name {
                    GeneralName::DNSName(v) => SubjectAltName::Dns(v.to_string()),
                    GeneralName::RFC822Name(v) => SubjectAltName::Email(v.to_string()),
                    GeneralName::URI(v) => SubjectAltName::Uri(v.to_string()),
                    GeneralName::IPAddress(bytes) => match bytes.len() {
                        4 => {
                            let octets: [u8; 4] = (*bytes).try_into().ok()?;
                            SubjectAltName::IpAddress(std::net::Ipv4Addr::from(octets).to_string())
                        }
                        16 => {
                            let octets: [u8; 16] = (*bytes).try_into().ok()?;
                            SubjectAltName::IpAddress(std::net::Ipv6Addr::from(octets).to_string())
                        }
                        _ => continue,
                    },
                    _ => continue,
                });
            }
        }
        Some(CertificateDetails {
            path,
            serial_number: serial_hex(cert.tbs_certificate.raw_serial()),
            subject_alt_names,
            subject: rfc2253(cert.subject()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// The DNS names a client may ask for with SNI: DNS SANs, else the subject's CN.
    pub fn dns_names(&self) -> Vec<String> {
        let sans: Vec<String> = self
            .subject_alt_names
            .iter()
            .filter_map(|n| match n {
                SubjectAltName::Dns(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        if !sans.is_empty() {
            return sans;
        }
        self.subject.split(',').filter_map(|part| part.strip_prefix("CN=")).map(|cn| cn.to_ascii_lowercase()).collect()
    }

    /// Whole days until `not_after`, as `/certs`' `days_until_expiration` (0 once expired).
    pub fn days_until_expiration(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        u64::try_from((self.not_after - now) / 86_400).unwrap_or(0)
    }
}

/// Whether `name` (from SNI) is covered by `pattern` (a certificate name, maybe `*.x.com`).
pub fn dns_name_matches(pattern: &str, name: &str) -> bool {
    if pattern.eq_ignore_ascii_case(name) {
        return true;
    }
    // A wildcard covers exactly one label (RFC 6125 §6.4.3).
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        _ => false,
    }
}

/// RFC 2253: the most specific RDN first, `,` between them, as Envoy's
/// `X509_NAME_print_ex(XN_FLAG_RFC2253)`.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in name.iter_rdn().collect::<Vec<_>>().into_iter().rev() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                    .map(str::to_string)
                    .unwrap_or_else(|_| attr.attr_type().to_id_string());
                let value = attr.as_str().map(escape_rfc2253).unwrap_or_default();
                format!("{key}={value}")
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.join(",")
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_number_is_printed_as_envoy_prints_it() {
        // DER keeps a zero byte before a serial whose top bit is set; Envoy does not print it.
        assert_eq!(serial_hex(&[0x00, 0x9f, 0x0a]), "9f0a");
        assert_eq!(serial_hex(&[0x0a, 0xbc]), "0abc");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(serial_hex(&[]), "0");
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(dns_name_matches("*.example.com", "api.example.com"));
        assert!(dns_name_matches("API.example.com", "api.EXAMPLE.com"));
        assert!(!dns_name_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_name_matches("*.example.com", "example.com"));
    }

    #[test]
    fn load_errors_name_field_and_file() {
        let missing = DataSource::Filename("/nonexistent/cert.pem".into());
        let err = load_chain(&missing, "certificate_chain").unwrap_err();
        assert!(err.starts_with("certificate_chain.filename: "), "{err}");
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        let garbage =
            DataSource::InlineString("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into());
        let err = load_chain(&garbage, "certificate_chain").unwrap_err();
        assert!(err.starts_with("certificate_chain.inline_string: failed to load certificate chain"), "{err}");
        let err = load_key(&DataSource::InlineString("nothing".into()), "private_key").unwrap_err();
        assert!(err.starts_with("private_key.inline_string: failed to load private key"), "{err}");
    }
}

//! `x-forwarded-client-cert` (XFCC), as the HCM's `forward_client_cert_details` and
//! `set_current_client_cert_details` say (Envoy's "HTTP header manipulation" page).
//!
//! Only an mTLS connection (the client presented a certificate) may forward or set the header;
//! otherwise it is removed, except with `ALWAYS_FORWARD_ONLY`. The element legate adds is
//! `Hash=<sha256 hex>` then, as configured, `Subject="<RFC 2253>"`, `URI=<san>` and
//! `DNS=<san>` entries, after `By=<this proxy's URI SAN>` when its certificate has one, in
//! Envoy's order.

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use legate_config::filters::network::http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails};

use crate::tls::certificate::SubjectAltName;
use crate::tls::SslConnectionInfo;

pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Applies the policy to a request's headers.
pub fn apply(
    headers: &mut HeaderMap,
    policy: ForwardClientCertDetails,
    details: Option<&SetCurrentClientCertDetails>,
    ssl: Option<&SslConnectionInfo>,
) {
    let peer = ssl.filter(|s| s.peer_certificate.is_some());
    let Some(ssl) = peer else {
        if policy != ForwardClientCertDetails::AlwaysForwardOnly {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
        }
        return;
    };
    match policy {
        ForwardClientCertDetails::Sanitize => {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
        }
        ForwardClientCertDetails::ForwardOnly | ForwardClientCertDetails::AlwaysForwardOnly => {}
        ForwardClientCertDetails::SanitizeSet | ForwardClientCertDetails::AppendForward => {
            let element = element(ssl, details);
            let value = match (policy, headers.get(&X_FORWARDED_CLIENT_CERT).and_then(|v| v.to_str().ok())) {
                (ForwardClientCertDetails::AppendForward, Some(existing)) if !existing.is_empty() => {
                    format!("{existing},{element}")
                }
                _ => element,
            };
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v);
                }
                Err(_) => {
                    headers.remove(&X_FORWARDED_CLIENT_CERT);
                }
            }
        }
    }
}

fn element(ssl: &SslConnectionInfo, details: Option<&SetCurrentClientCertDetails>) -> String {
    let mut parts = Vec::new();
    // By: this proxy's own URI SAN, when its certificate has one.
    let by = ssl.local_certificate.as_ref().and_then(|c| {
        c.subject_alt_names.iter().find_map(|s| match s {
            SubjectAltName::Uri(uri) => Some(uri.clone()),
            _ => None,
        })
    });
    if let Some(by) = by {
        parts.push(format!("By={by}"));
    }
    if let Some(hash) = &ssl.peer_certificate_hash {
        parts.push(format!("Hash={hash}"));
    }
    let (Some(details), Some(peer)) = (details, ssl.peer_certificate.as_ref()) else { return parts.join(";") };
    if details.subject {
        // Quoted: a subject holds `,` and `=` (Envoy escapes `"` inside it).
        parts.push(format!("Subject=\"{}\"", peer.subject.replace('"', "\\\"")));
    }
    if details.uri {
        for san in &peer.subject_alt_names {
            if let SubjectAltName::Uri(uri) = san {
                parts.push(format!("URI={uri}"));
            }
        }
    }
    if details.dns {
        for san in &peer.subject_alt_names {
            if let SubjectAltName::Dns(dns) = san {
                parts.push(format!("DNS={dns}"));
            }
        }
    }
    parts.join(";")
}

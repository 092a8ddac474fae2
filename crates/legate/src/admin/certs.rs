//! `/certs`: the certificates of every TLS context, in Envoy's JSON (`admin.v3.Certificates`):
//! one entry per context, listeners' filter chains first, then clusters, each with its
//! `cert_chain` and `ca_cert`.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use hyper::StatusCode;
use legate_proxy::tls::certificate::{CertificateDetails, SubjectAltName};
use serde_json::{json, Value};

use super::{json, AdminResponse, Query};
use crate::server::Server;

pub fn handle(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    let mut certificates = Vec::new();
    for (listener, _) in server.listener_manager.borrow().listeners() {
        for chain in listener.filter_chains.iter().chain(&listener.default_filter_chain) {
            if let Some(tls) = &chain.transport_socket {
                let chain: Vec<CertificateDetails> =
                    tls.certificates.current().details.iter().map(|c| (**c).clone()).collect();
                certificates.push(certificate(&chain, &tls.ca_certificates.load()));
            }
        }
    }
    for cluster in server.cluster_manager.clusters() {
        if let Some(tls) = cluster.transport_socket() {
            certificates.push(certificate(&tls.certificates(), &tls.ca_certificates()));
        }
    }
    json(StatusCode::OK, &json!({ "certificates": certificates }))
}

fn certificate(chain: &[CertificateDetails], ca: &[CertificateDetails]) -> Value {
    json!({
        "ca_cert": ca.iter().map(details).collect::<Vec<_>>(),
        "cert_chain": chain.iter().map(details).collect::<Vec<_>>(),
    })
}

/// `admin.v3.CertificateDetails`; uint64 as a JSON string and timestamps in RFC 3339, as
/// proto3 JSON writes them.
fn details(cert: &CertificateDetails) -> Value {
    let sans: Vec<Value> = cert
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            SubjectAltName::Dns(v) => Some(json!({ "dns": v })),
            SubjectAltName::Uri(v) => Some(json!({ "uri": v })),
            SubjectAltName::IpAddress(v) => Some(json!({ "ip_address": v })),
            SubjectAltName::Email(_) => None,
        })
        .collect();
    json!({
        "path": cert.path,
        "serial_number": cert.serial_number,
        "subject_alt_names": sans,
        "days_until_expiration": cert.days_until_expiration().to_string(),
        "valid_from": timestamp(cert.not_before),
        "expiration_time": timestamp(cert.not_after),
    })
}

fn timestamp(secs: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    super::rfc3339(time).replace(".000Z", "Z")
}

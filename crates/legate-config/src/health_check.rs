//! `envoy.config.core.v3.HealthCheck`: active health checking of a cluster's hosts, with
//! Envoy's defaults ("Health checking" architecture page).
//!
//! legate runs HTTP (HTTP/1.1 or HTTP/2), TCP and gRPC (grpc.health.v1) checkers; custom
//! checkers, TLS options and event loggers other than `event_log_path` are refused as
//! unsupported rather than ignored.

use serde::Deserialize;

use crate::core::HeaderValueOption;
use crate::duration::Duration;
use crate::matcher::Int64Range;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `envoy.config.core.v3.HealthCheck`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Time to wait for one check's answer (required, > 0); reaching it fails the check.
    pub timeout: Option<Duration>,
    /// Time between checks (required, > 0).
    pub interval: Option<Duration>,
    /// The first check waits a random time up to this (default 0).
    pub initial_jitter: Option<Duration>,
    /// Each wait gets a random extra time up to this (default 0).
    pub interval_jitter: Option<Duration>,
    /// Each wait gets a random extra time up to this percentage of the interval (default 0).
    pub interval_jitter_percent: Option<u32>,
    /// Consecutive failures that mark a healthy host unhealthy (required, ≥ 1 in legate).
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive successes that mark an unhealthy host healthy (required, ≥ 1 in legate).
    pub healthy_threshold: Option<u32>,
    /// Checks go to this port instead of the host's.
    pub alt_port: Option<u32>,
    /// Keep the connection between checks (default true).
    pub reuse_connection: Option<bool>,
    pub http_health_check: Option<HttpHealthCheck>,
    pub tcp_health_check: Option<TcpHealthCheck>,
    pub grpc_health_check: Option<GrpcHealthCheck>,
    pub custom_health_check: Option<Unsupported>,
    /// Interval while the cluster has seen no traffic (default 60 s).
    pub no_traffic_interval: Option<Duration>,
    /// Interval for a healthy host while the cluster sees no traffic (default
    /// `no_traffic_interval`).
    pub no_traffic_healthy_interval: Option<Duration>,
    /// Interval while a host is unhealthy (default `interval`).
    pub unhealthy_interval: Option<Duration>,
    /// Interval right after a host turned unhealthy (default `unhealthy_interval`).
    pub unhealthy_edge_interval: Option<Duration>,
    /// Interval right after a host turned healthy (default `interval`).
    pub healthy_edge_interval: Option<Duration>,
    /// Appends health check events (JSON lines) to this file.
    #[serde(default)]
    pub event_log_path: String,
    pub event_logger: Option<Unsupported>,
    #[serde(default)]
    pub always_log_health_check_failures: bool,
    #[serde(default)]
    pub always_log_health_check_success: bool,
    pub tls_options: Option<Unsupported>,
    pub transport_socket_match_criteria: Option<Unsupported>,
}

/// `envoy.config.core.v3.HealthCheck.HttpHealthCheck`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// The `host` header; empty means the cluster's name.
    #[serde(default)]
    pub host: String,
    /// The request path (required).
    #[serde(default)]
    pub path: String,
    /// The request body.
    pub send: Option<Payload>,
    /// Payloads the first 1 KiB of the response body must hold, in order (Envoy's
    /// `response_buffer_size` default); a body without them fails the check.
    #[serde(default)]
    pub receive: Vec<Payload>,
    /// Static values only: legate does not format `%VARIABLE%` here.
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    /// Statuses that pass (default `[200, 201)`).
    #[serde(default)]
    pub expected_statuses: Vec<Int64Range>,
    /// Statuses that fail but count toward `unhealthy_threshold` instead of failing at once.
    #[serde(default)]
    pub retriable_statuses: Vec<Int64Range>,
    #[serde(default)]
    pub codec_client_type: CodecClientType,
    pub service_name_matcher: Option<Unsupported>,
    /// Default `GET`.
    pub method: Option<String>,
}

/// `envoy.config.core.v3.HealthCheck.GrpcHealthCheck`: `grpc.health.v1.Health/Check` over
/// HTTP/2; the host passes when it answers `SERVING`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The `service` of the request; empty asks about the server as a whole.
    #[serde(default)]
    pub service_name: String,
    /// The `:authority`; empty means the cluster's name.
    #[serde(default)]
    pub authority: String,
    /// Static values only, as for HTTP checks.
    #[serde(default)]
    pub initial_metadata: Vec<HeaderValueOption>,
}

/// `envoy.type.v3.CodecClientType`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum CodecClientType {
    #[default]
    #[serde(rename = "HTTP1")]
    Http1,
    #[serde(rename = "HTTP2")]
    Http2,
    #[serde(rename = "HTTP3")]
    Http3,
}

/// `envoy.config.core.v3.HealthCheck.TcpHealthCheck`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {
    /// Written once connected; without it the check passes on connect.
    pub send: Option<Payload>,
    /// Each must be seen, in order, in what the host sends back.
    #[serde(default)]
    pub receive: Vec<Payload>,
    pub proxy_protocol_config: Option<Unsupported>,
}

/// `envoy.config.core.v3.HealthCheck.Payload`: one of `text` (hex) or `binary` (base64).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub text: Option<String>,
    pub binary: Option<String>,
}

impl HealthCheck {
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout.map_or(std::time::Duration::ZERO, |d| d.0)
    }
    pub fn interval(&self) -> std::time::Duration {
        self.interval.map_or(std::time::Duration::ZERO, |d| d.0)
    }
    pub fn initial_jitter(&self) -> std::time::Duration {
        self.initial_jitter.map_or(std::time::Duration::ZERO, |d| d.0)
    }
    pub fn interval_jitter(&self) -> std::time::Duration {
        self.interval_jitter.map_or(std::time::Duration::ZERO, |d| d.0)
    }
    pub fn interval_jitter_percent(&self) -> u32 {
        self.interval_jitter_percent.unwrap_or(0)
    }
    pub fn unhealthy_threshold(&self) -> u32 {
        self.unhealthy_threshold.unwrap_or(1).max(1)
    }
    pub fn healthy_threshold(&self) -> u32 {
        self.healthy_threshold.unwrap_or(1).max(1)
    }
    pub fn reuse_connection(&self) -> bool {
        self.reuse_connection.unwrap_or(true)
    }
    pub fn no_traffic_interval(&self) -> std::time::Duration {
        self.no_traffic_interval.map_or(std::time::Duration::from_secs(60), |d| d.0)
    }
    pub fn no_traffic_healthy_interval(&self) -> std::time::Duration {
        self.no_traffic_healthy_interval.map_or(self.no_traffic_interval(), |d| d.0)
    }
    pub fn unhealthy_interval(&self) -> std::time::Duration {
        self.unhealthy_interval.map_or(self.interval(), |d| d.0)
    }
    pub fn unhealthy_edge_interval(&self) -> std::time::Duration {
        self.unhealthy_edge_interval.map_or(self.unhealthy_interval(), |d| d.0)
    }
    pub fn healthy_edge_interval(&self) -> std::time::Duration {
        self.healthy_edge_interval.map_or(self.interval(), |d| d.0)
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        for (field, value) in [("timeout", self.timeout), ("interval", self.interval)] {
            match value {
                None => v.error(&format!("{at}.{field}"), "value is required"),
                Some(d) if d.is_zero() => v.error(&format!("{at}.{field}"), "value must be greater than 0s"),
                Some(_) => {}
            }
        }
        for (field, value) in [
            ("no_traffic_interval", self.no_traffic_interval),
            ("no_traffic_healthy_interval", self.no_traffic_healthy_interval),
            ("unhealthy_interval", self.unhealthy_interval),
            ("unhealthy_edge_interval", self.unhealthy_edge_interval),
            ("healthy_edge_interval", self.healthy_edge_interval),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                v.error(&format!("{at}.{field}"), "value must be greater than 0s");
            }
        }
        // Envoy requires both thresholds; a threshold of 0 would flip on no evidence at all.
        for (field, value) in
            [("unhealthy_threshold", self.unhealthy_threshold), ("healthy_threshold", self.healthy_threshold)]
        {
            match value {
                None => v.error(&format!("{at}.{field}"), "value is required"),
                Some(0) => v.error(&format!("{at}.{field}"), "value must be at least 1"),
                Some(_) => {}
            }
        }
        if self.alt_port.is_some_and(|p| p == 0 || p > 65535) {
            v.error(&format!("{at}.alt_port"), "value must be inside range [1, 65535]");
        }
        v.oneof(
            &format!("{at}.health_checker"),
            &[
                ("http_health_check", self.http_health_check.is_some()),
                ("tcp_health_check", self.tcp_health_check.is_some()),
                ("grpc_health_check", self.grpc_health_check.is_some()),
                ("custom_health_check", self.custom_health_check.is_some()),
            ],
            true,
        );
        if let Some(http) = &self.http_health_check {
            http.validate(&format!("{at}.http_health_check"), v);
        }
        if let Some(tcp) = &self.tcp_health_check {
            tcp.validate(&format!("{at}.tcp_health_check"), v);
        }
        if let Some(grpc) = &self.grpc_health_check {
            for (i, option) in grpc.initial_metadata.iter().enumerate() {
                if option.header.value.contains('%') {
                    v.error(
                        &format!("{at}.grpc_health_check.initial_metadata[{i}].header.value"),
                        "%VARIABLE% substitution in health check headers is not supported by legate yet",
                    );
                }
            }
        }
    }
}

impl HttpHealthCheck {
    /// Envoy's default when `expected_statuses` is empty: 200 only.
    pub fn expected_statuses(&self) -> Vec<Int64Range> {
        if self.expected_statuses.is_empty() {
            vec![Int64Range { start: 200, end: 201 }]
        } else {
            self.expected_statuses.clone()
        }
    }

    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("GET")
    }

    fn validate(&self, at: &str, v: &mut Validator) {
        v.non_empty(&format!("{at}.path"), &self.path);
        if self.codec_client_type == CodecClientType::Http3 {
            v.error(&format!("{at}.codec_client_type"), "HTTP3 is not supported by legate yet (HTTP1 and HTTP2 are)");
        }
        for (field, ranges) in
            [("expected_statuses", &self.expected_statuses), ("retriable_statuses", &self.retriable_statuses)]
        {
            for (i, range) in ranges.iter().enumerate() {
                // Envoy's HttpHealthCheckerImpl refuses ranges outside [100, 600).
                if range.start < 100 || range.end > 600 || range.start >= range.end {
                    v.error(
                        &format!("{at}.{field}[{i}]"),
                        format!("range [{}, {}) must be non-empty and inside [100, 600)", range.start, range.end),
                    );
                }
            }
        }
        for (i, option) in self.request_headers_to_add.iter().enumerate() {
            if option.header.value.contains('%') {
                v.error(
                    &format!("{at}.request_headers_to_add[{i}].header.value"),
                    "%VARIABLE% substitution in health check headers is not supported by legate yet",
                );
            }
            if option.header.key.is_empty() {
                v.error(
                    &format!("{at}.request_headers_to_add[{i}].header.key"),
                    "value length must be at least 1 characters",
                );
            }
        }
        if let Some(send) = &self.send {
            send.validate(&format!("{at}.send"), v);
        }
        for (i, receive) in self.receive.iter().enumerate() {
            receive.validate(&format!("{at}.receive[{i}]"), v);
        }
        const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"];
        if let Some(method) = &self.method {
            if !METHODS.contains(&method.as_str()) {
                v.error(&format!("{at}.method"), format!("method {method:?} is not allowed for health checks"));
            }
        }
    }
}

impl TcpHealthCheck {
    fn validate(&self, at: &str, v: &mut Validator) {
        if let Some(send) = &self.send {
            send.validate(&format!("{at}.send"), v);
        }
        for (i, receive) in self.receive.iter().enumerate() {
            receive.validate(&format!("{at}.receive[{i}]"), v);
        }
    }
}

impl Payload {
    /// The bytes, decoded from hex `text` or base64 `binary`.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.text, &self.binary) {
            (Some(text), None) => decode_hex(text),
            (None, Some(binary)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(binary).map_err(|e| format!("invalid base64: {e}"))
            }
            _ => Err("exactly one of text or binary is required".to_string()),
        }
    }

    fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(&format!("{at}.payload"), &[("text", self.text.is_some()), ("binary", self.binary.is_some())], true);
        if self.text.is_some() != self.binary.is_some() {
            if let Err(e) = self.bytes() {
                v.error(at, e);
            }
        }
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return Err(format!("invalid hex payload {text:?}: expected a non-empty even number of hex digits"));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("invalid hex payload {text:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_defaults() {
        let hc = HealthCheck { interval: Some(Duration::from_secs(5)), ..Default::default() };
        assert!(hc.reuse_connection());
        assert_eq!(hc.no_traffic_interval(), std::time::Duration::from_secs(60));
        assert_eq!(hc.no_traffic_healthy_interval(), std::time::Duration::from_secs(60));
        assert_eq!(hc.unhealthy_interval(), std::time::Duration::from_secs(5));
        assert_eq!(hc.unhealthy_edge_interval(), std::time::Duration::from_secs(5));
        assert_eq!(hc.healthy_edge_interval(), std::time::Duration::from_secs(5));
        let http = HttpHealthCheck::default();
        assert_eq!(http.expected_statuses(), vec![Int64Range { start: 200, end: 201 }]);
        assert_eq!(http.method(), "GET");
    }

    #[test]
    fn payloads_decode_hex_and_base64() {
        let hex = Payload { text: Some("50494e47".into()), binary: None };
        assert_eq!(hex.bytes().unwrap(), b"PING");
        let b64 = Payload { text: None, binary: Some("UE9ORw==".into()) };
        assert_eq!(b64.bytes().unwrap(), b"PONG");
        assert!(Payload { text: Some("5".into()), binary: None }.bytes().is_err());
        assert!(Payload { text: Some("zz".into()), binary: None }.bytes().is_err());
    }

    fn load(health_check: serde_json::Value) -> Result<crate::load::LoadedBootstrap, String> {
        let tree = serde_json::json!({"static_resources": {"clusters": [{
            "name": "c",
            "health_checks": [health_check],
            "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}
            ]}]},
        }]}});
        crate::load::parse_bootstrap(tree).map_err(|e| e.to_string())
    }

    #[test]
    fn an_http_check_loads() {
        let b = load(serde_json::json!({
            "timeout": "1s", "interval": "5s", "unhealthy_threshold": 2, "healthy_threshold": 1,
            "http_health_check": {"path": "/healthz", "expected_statuses": [{"start": 200, "end": 300}]},
        }))
        .unwrap()
        .bootstrap;
        let hc = &b.static_resources.clusters[0].health_checks[0];
        assert_eq!(hc.unhealthy_threshold(), 2);
        assert_eq!(
            hc.http_health_check.as_ref().unwrap().expected_statuses(),
            vec![Int64Range { start: 200, end: 300 }]
        );
    }

    #[test]
    fn required_fields_and_zero_thresholds_are_refused() {
        let err = load(serde_json::json!({"tcp_health_check": {}, "healthy_threshold": 0})).unwrap_err();
        for expected in [
            "health_checks[0].timeout: value is required",
            "health_checks[0].interval: value is required",
            "health_checks[0].unhealthy_threshold: value is required",
            "health_checks[0].healthy_threshold: value must be at least 1",
        ] {
            assert!(err.contains(expected), "{expected} in {err}");
        }
    }

    #[test]
    fn exactly_one_checker_kind() {
        let base =
            serde_json::json!({"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1});
        let err = load(base.clone()).unwrap_err();
        assert!(err.contains("health_checks[0].health_checker: one of http_health_check"), "{err}");
        let mut both = base.clone();
        both["tcp_health_check"] = serde_json::json!({});
        both["http_health_check"] = serde_json::json!({"path": "/"});
        let err = load(both).unwrap_err();
        assert!(err.contains("only one of"), "{err}");
    }

    #[test]
    fn unsupported_parts_say_so() {
        let base =
            serde_json::json!({"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1});
        let mut h3 = base.clone();
        h3["http_health_check"] = serde_json::json!({"path": "/", "codec_client_type": "HTTP3"});
        let err = load(h3).unwrap_err();
        assert!(err.contains("health_checks[0].http_health_check.codec_client_type: HTTP3 is not supported"), "{err}");
        let mut custom = base.clone();
        custom["custom_health_check"] = serde_json::json!({"name": "x"});
        let err = load(custom).unwrap_err();
        assert!(err.contains("custom_health_check: this Envoy field is not supported by legate yet"), "{err}");
        let mut grpc = base.clone();
        grpc["grpc_health_check"] = serde_json::json!({"service_name": "s"});
        assert!(load(grpc).is_ok());
        let mut bad_hex = base;
        bad_hex["tcp_health_check"] = serde_json::json!({"send": {"text": "xyz"}});
        let err = load(bad_hex).unwrap_err();
        assert!(err.contains("tcp_health_check.send: invalid hex payload"), "{err}");
    }
}

//! `envoy.config.core.v3` protocol options (`protocol.proto`): HTTP settings shared by the
//! connection manager (downstream) and clusters (upstream).
//!
//! HTTP/2 defaults follow the current Envoy API: `max_concurrent_streams` 1024, stream window
//! 16 MiB and connection window 24 MiB (Envoy lowered them from 2^31-1 and 256 MiB "for
//! safety"; configs that relied on the old values must now set them).

use serde::Deserialize;

use crate::core::Percent;
use crate::duration::Duration;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `envoy.config.core.v3.HttpProtocolOptions`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpProtocolOptions {
    /// A connection with no active stream for this long is closed (HTTP/2: drained). Default
    /// 1 hour, downstream and upstream; 0 disables it.
    pub idle_timeout: Option<Duration>,
    /// Connections older than this are drained. Default: no limit.
    pub max_connection_duration: Option<Duration>,
    /// Default 100; downstream requests over it get 431, upstream responses 502.
    pub max_headers_count: Option<u32>,
    pub max_response_headers_kb: Option<Unsupported>,
    /// A stream is reset after this long whatever else happens. Default: no limit.
    pub max_stream_duration: Option<Duration>,
    #[serde(default)]
    pub headers_with_underscores_action: HeadersWithUnderscoresAction,
    /// Requests per connection, then it is drained (1 disables keep-alive). Default: no limit.
    pub max_requests_per_connection: Option<u32>,
}

impl HttpProtocolOptions {
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    pub const DEFAULT_MAX_HEADERS_COUNT: u32 = 100;

    /// The connection idle timeout: 1 hour when unset, zero when disabled.
    pub fn idle_timeout(&self) -> std::time::Duration {
        self.idle_timeout.unwrap_or(Self::DEFAULT_IDLE_TIMEOUT).0
    }

    /// Zero when unset (no limit).
    pub fn max_connection_duration(&self) -> std::time::Duration {
        self.max_connection_duration.unwrap_or_default().0
    }

    /// Zero when unset (no limit).
    pub fn max_stream_duration(&self) -> std::time::Duration {
        self.max_stream_duration.unwrap_or_default().0
    }

    pub fn max_headers_count(&self) -> u32 {
        self.max_headers_count.unwrap_or(Self::DEFAULT_MAX_HEADERS_COUNT)
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if self.max_headers_count == Some(0) {
            v.error(&format!("{at}.max_headers_count"), "value must be greater than or equal to 1");
        }
    }
}

/// `HttpProtocolOptions.HeadersWithUnderscoresAction`: what to do with client request headers
/// whose name contains `_` (some servers read `x_a` as `x-a`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum HeadersWithUnderscoresAction {
    #[default]
    #[serde(rename = "ALLOW")]
    Allow,
    /// HTTP/1: 400; HTTP/2: stream reset.
    #[serde(rename = "REJECT_REQUEST")]
    RejectRequest,
    /// Removed before the filters see the request.
    #[serde(rename = "DROP_HEADER")]
    DropHeader,
}

/// `envoy.config.core.v3.Http1ProtocolOptions`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Http1ProtocolOptions {
    /// Accept `GET http://host/path` (forward proxy style). Default false.
    pub allow_absolute_url: Option<bool>,
    /// Accept HTTP/1.0 (and 0.9) requests.
    #[serde(default)]
    pub accept_http_10: bool,
    /// Authority of HTTP/1.0 requests without `Host` (with `accept_http_10`).
    #[serde(default)]
    pub default_host_for_http_10: String,
    /// How header names are written: Envoy lower-cases them by default.
    pub header_key_format: Option<HeaderKeyFormat>,
    /// Proxy trailers of chunked HTTP/1.1 messages (dropped by default).
    #[serde(default)]
    pub enable_trailers: bool,
    /// Accept messages with both `Content-Length` and `Transfer-Encoding` (dropping the
    /// former) instead of refusing them; a request smuggling risk.
    #[serde(default)]
    pub allow_chunked_length: bool,
    /// Keep the connection open after an invalid message when possible; overrides the
    /// connection manager's `stream_error_on_invalid_http_message`.
    pub override_stream_error_on_invalid_http_message: Option<bool>,
    /// Upstream requests carry an absolute URL in the request line.
    #[serde(default)]
    pub send_fully_qualified_url: bool,
    /// Envoy's choice of parser (Balsa or http-parser); legate has one parser: accepted, ignored.
    pub use_balsa_parser: Option<bool>,
    /// Accept methods outside the standard list.
    #[serde(default)]
    pub allow_custom_methods: bool,
    pub ignore_http_11_upgrade: Option<Unsupported>,
}

/// `envoy.config.core.v3.KeepaliveSettings`: HTTP/2 PINGs to detect dead connections.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveSettings {
    /// PING period (at least 1 ms; absent or 0: no periodic PINGs).
    pub interval: Option<Duration>,
    /// Required, at least 1 ms: no PING answer (nor any frame) within it closes the connection.
    pub timeout: Option<Duration>,
    /// Random extra on each interval, in percent of it (default 15 %).
    pub interval_jitter: Option<Percent>,
    /// PING before using a connection idle for this long (at least 1 ms).
    pub connection_idle_interval: Option<Duration>,
}

/// `envoy.config.core.v3.Http2ProtocolOptions`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Http2ProtocolOptions {
    /// HPACK dynamic table size (default 4096; 0 disables compression).
    pub hpack_table_size: Option<u32>,
    /// 1..=2^31-1, default 1024. Upstream, also the cap on streams legate opens per connection.
    pub max_concurrent_streams: Option<u32>,
    /// 65535..=2^31-1, default 16 MiB; also the per-stream buffer soft limit.
    pub initial_stream_window_size: Option<u32>,
    /// 65535..=2^31-1, default 24 MiB.
    pub initial_connection_window_size: Option<u32>,
    /// Extended CONNECT (RFC 8441), e.g. websockets over HTTP/2.
    #[serde(default)]
    pub allow_connect: bool,
    /// Not implemented in Envoy either ("do not use"); false is the only value that works.
    #[serde(default)]
    pub allow_metadata: bool,
    /// Flood protection: pending outbound frames (default 10000).
    pub max_outbound_frames: Option<u32>,
    /// Pending outbound PING, SETTINGS and RST_STREAM frames (default 1000).
    pub max_outbound_control_frames: Option<u32>,
    /// Consecutive empty HEADERS/CONTINUATION/DATA frames (default 1).
    pub max_consecutive_inbound_frames_with_empty_payload: Option<u32>,
    /// PRIORITY frames per stream (default 100).
    pub max_inbound_priority_frames_per_stream: Option<u32>,
    /// WINDOW_UPDATE frames per DATA frame sent (default 10).
    pub max_inbound_window_update_frames_per_data_frame_sent: Option<u32>,
    /// Deprecated for `override_stream_error_on_invalid_http_message`.
    #[serde(default)]
    pub stream_error_on_invalid_http_messaging: bool,
    /// Reset only the stream on an invalid message, not the connection.
    pub override_stream_error_on_invalid_http_message: Option<bool>,
    pub custom_settings_parameters: Option<Unsupported>,
    pub connection_keepalive: Option<KeepaliveSettings>,
    /// Envoy's codec choice (oghttp2 or nghttp2); legate has one codec: accepted, ignored.
    pub use_oghttp2_codec: Option<bool>,
    pub max_metadata_size: Option<Unsupported>,
    pub enable_huffman_encoding: Option<Unsupported>,
    pub max_header_field_size_kb: Option<Unsupported>,
    pub disallow_obs_text: Option<Unsupported>,
}

impl Http2ProtocolOptions {
    pub const DEFAULT_HPACK_TABLE_SIZE: u32 = 4096;
    pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
    pub const DEFAULT_INITIAL_STREAM_WINDOW_SIZE: u32 = 16 * 1024 * 1024;
    pub const DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE: u32 = 24 * 1024 * 1024;
    pub const DEFAULT_MAX_CONSECUTIVE_INBOUND_FRAMES_WITH_EMPTY_PAYLOAD: u32 = 1;
    pub const DEFAULT_MAX_INBOUND_PRIORITY_FRAMES_PER_STREAM: u32 = 100;
    pub const DEFAULT_MAX_INBOUND_WINDOW_UPDATE_FRAMES_PER_DATA_FRAME_SENT: u32 = 10;

    pub fn hpack_table_size(&self) -> u32 {
        self.hpack_table_size.unwrap_or(Self::DEFAULT_HPACK_TABLE_SIZE)
    }

    pub fn max_concurrent_streams(&self) -> u32 {
        self.max_concurrent_streams.unwrap_or(Self::DEFAULT_MAX_CONCURRENT_STREAMS)
    }

    pub fn initial_stream_window_size(&self) -> u32 {
        self.initial_stream_window_size.unwrap_or(Self::DEFAULT_INITIAL_STREAM_WINDOW_SIZE)
    }

    pub fn initial_connection_window_size(&self) -> u32 {
        self.initial_connection_window_size.unwrap_or(Self::DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE)
    }

    pub fn max_consecutive_inbound_frames_with_empty_payload(&self) -> u32 {
        self.max_consecutive_inbound_frames_with_empty_payload
            .unwrap_or(Self::DEFAULT_MAX_CONSECUTIVE_INBOUND_FRAMES_WITH_EMPTY_PAYLOAD)
    }

    pub fn max_inbound_priority_frames_per_stream(&self) -> u32 {
        self.max_inbound_priority_frames_per_stream.unwrap_or(Self::DEFAULT_MAX_INBOUND_PRIORITY_FRAMES_PER_STREAM)
    }

    pub fn max_inbound_window_update_frames_per_data_frame_sent(&self) -> u32 {
        self.max_inbound_window_update_frames_per_data_frame_sent
            .unwrap_or(Self::DEFAULT_MAX_INBOUND_WINDOW_UPDATE_FRAMES_PER_DATA_FRAME_SENT)
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        const MAX: u32 = 2_147_483_647;
        if let Some(n) = self.max_concurrent_streams {
            if !(1..=MAX).contains(&n) {
                v.error(&format!("{at}.max_concurrent_streams"), format!("value must be inside range [1, {MAX}]"));
            }
        }
        for (field, value) in [
            ("initial_stream_window_size", self.initial_stream_window_size),
            ("initial_connection_window_size", self.initial_connection_window_size),
        ] {
            if let Some(n) = value {
                if !(65535..=MAX).contains(&n) {
                    v.error(&format!("{at}.{field}"), format!("value must be inside range [65535, {MAX}]"));
                }
            }
        }
        for (field, value) in [
            ("max_outbound_frames", self.max_outbound_frames),
            ("max_outbound_control_frames", self.max_outbound_control_frames),
            (
                "max_inbound_window_update_frames_per_data_frame_sent",
                self.max_inbound_window_update_frames_per_data_frame_sent,
            ),
        ] {
            if value == Some(0) {
                v.error(&format!("{at}.{field}"), "value must be greater than or equal to 1");
            }
        }
        if self.allow_metadata {
            v.error(&format!("{at}.allow_metadata"), "this Envoy field is not supported by legate yet");
        }
        if let Some(k) = &self.connection_keepalive {
            let k_at = format!("{at}.connection_keepalive");
            let one_ms = std::time::Duration::from_millis(1);
            match k.timeout {
                None => v.error(&format!("{k_at}.timeout"), "value is required"),
                Some(t) if t.0 < one_ms => {
                    v.error(&format!("{k_at}.timeout"), "value must be greater than or equal to 1ms")
                }
                Some(_) => {}
            }
            for (field, value) in [("interval", k.interval), ("connection_idle_interval", k.connection_idle_interval)] {
                if value.is_some_and(|d| !d.is_zero() && d.0 < one_ms) {
                    v.error(&format!("{k_at}.{field}"), "value must be greater than or equal to 1ms");
                }
            }
            if let Some(p) = &k.interval_jitter {
                v.percent(&format!("{k_at}.interval_jitter"), p);
            }
        }
    }
}

/// `envoy.config.core.v3.SchemeHeaderTransformation`: what a request's `:scheme` becomes, in
/// place of Envoy's default (the absolute URL's, else a trusted `x-forwarded-proto`, else the
/// connection's). A proto `oneof`: at most one of the two.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SchemeHeaderTransformation {
    /// `http` or `https`: `:scheme` and `x-forwarded-proto` of every request.
    pub scheme_to_overwrite: Option<String>,
    /// The upstream request's `:scheme` says how it is sent: `https` over TLS, else `http`.
    #[serde(default)]
    pub match_upstream: bool,
}

impl SchemeHeaderTransformation {
    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        v.oneof(
            at,
            &[("scheme_to_overwrite", self.scheme_to_overwrite.is_some()), ("match_upstream", self.match_upstream)],
            false,
        );
        if let Some(scheme) = &self.scheme_to_overwrite {
            if scheme != "http" && scheme != "https" {
                v.error(&format!("{at}.scheme_to_overwrite"), "value must be in list [http https]");
            }
        }
    }
}

/// `envoy.config.core.v3.UpstreamHttpProtocolOptions`: SNI and SAN checks from the request's
/// authority (meaningful with TLS upstreams).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHttpProtocolOptions {
    /// SNI from each request's host (or `override_auto_sni_header`): upstream connections are
    /// pooled per SNI.
    #[serde(default)]
    pub auto_sni: bool,
    /// Verify the upstream certificate's SAN against that name (legate: with `auto_sni`).
    #[serde(default)]
    pub auto_san_validation: bool,
    /// Take the SNI from this request header instead of the authority.
    #[serde(default)]
    pub override_auto_sni_header: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;
    use serde_json::json;

    #[test]
    fn defaults() {
        let o = HttpProtocolOptions::default();
        assert_eq!(o.idle_timeout(), std::time::Duration::from_secs(3600));
        assert_eq!(o.max_headers_count(), 100);
        assert_eq!(o.max_connection_duration(), std::time::Duration::ZERO);
        let h2 = Http2ProtocolOptions::default();
        assert_eq!(h2.max_concurrent_streams(), 1024);
        assert_eq!(h2.initial_stream_window_size(), 16 * 1024 * 1024);
        assert_eq!(h2.hpack_table_size(), 4096);
    }

    #[test]
    fn window_sizes_are_range_checked() {
        let h2: Http2ProtocolOptions = path::from_value(json!({
            "initial_stream_window_size": 1024, "initial_connection_window_size": 65536,
            "connection_keepalive": {"interval": "30s"}
        }))
        .unwrap();
        let mut v = Validator::default();
        h2.validate("h2", &mut v);
        let errors: Vec<String> = v.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "h2.initial_stream_window_size: value must be inside range [65535, 2147483647]",
                "h2.connection_keepalive.timeout: value is required"
            ]
        );
    }

    #[test]
    fn idle_timeout_zero_disables() {
        let o: HttpProtocolOptions = path::from_value(json!({"idle_timeout": "0s"})).unwrap();
        assert!(o.idle_timeout().is_zero());
    }
}

/// `Http1ProtocolOptions.HeaderKeyFormat`: `proper_case_words` writes `Content-Type`;
/// the `preserve_case` stateful formatter writes names as the peer sent them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderKeyFormat {
    pub proper_case_words: Option<serde_json::Map<String, serde_json::Value>>,
    pub stateful_formatter: Option<HeaderFormatter>,
}

/// `stateful_formatter`: only `envoy.http.stateful_header_formatters.preserve_case`.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderFormatter;

impl<'de> Deserialize<'de> for HeaderFormatter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PreserveCase {
            /// Reason phrases are hyper's; `false` (the default) is what legate does.
            #[serde(default)]
            forward_reason_phrase: bool,
            formatter_type_on_envoy_headers: Option<serde_json::Value>,
        }
        static FORMATTERS: &[crate::extensions::Extension<HeaderFormatter>] = &[crate::extensions::Extension {
            name: "preserve_case",
            type_url: "envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig",
            parse: |v| {
                let c: PreserveCase = crate::path::from_value(v)?;
                if c.forward_reason_phrase {
                    return Err(crate::path::PathError {
                        path: "forward_reason_phrase".into(),
                        message: "this Envoy field is not supported by legate yet".into(),
                    });
                }
                if c.formatter_type_on_envoy_headers.is_some() {
                    return Err(crate::path::PathError {
                        path: "formatter_type_on_envoy_headers".into(),
                        message: "this Envoy field is not supported by legate yet".into(),
                    });
                }
                Ok(HeaderFormatter)
            },
        }];
        crate::extensions::deserialize_typed(d, FORMATTERS, "stateful header formatter").map(|(_, f)| f)
    }
}

impl Http1ProtocolOptions {
    /// `proper_case_words`.
    pub fn proper_case_headers(&self) -> bool {
        self.header_key_format.as_ref().is_some_and(|f| f.proper_case_words.is_some())
    }

    /// The `preserve_case` formatter.
    pub fn preserve_header_case(&self) -> bool {
        self.header_key_format.as_ref().is_some_and(|f| f.stateful_formatter.is_some())
    }
}

//! `envoy.filters.http.compressor` (`envoy.extensions.filters.http.compressor.v3.Compressor`),
//! Envoy's "Compressor" filter: a response is compressed (gzip, brotli or zstd, flushed chunk
//! by chunk so streams keep flowing) when the client's `accept-encoding` takes that encoding
//! and the response is worth it: long enough (`min_content_length`, 30), of a listed media
//! type (Envoy's text types by default), not already encoded, not `no-transform`, and
//! (with `disable_on_etag_header`) without an `etag`. A compressible response varies on
//! `Accept-Encoding` whether compressed or not.
//!
//! Stats under `http.<stat_prefix>.compressor.<library name>.<gzip|brotli|zstd>.`, Envoy's:
//! `[response.]compressed` / `not_compressed` / `total_uncompressed_bytes` /
//! `total_compressed_bytes` / `content_length_too_small`, and `no_accept_header`,
//! `header_identity`, `header_compressor_used`, `header_wildcard`, `header_not_valid`,
//! `not_compressed_etag`. Request bodies are not compressed (`request_direction_config` is
//! refused); the libraries' tuning fields other than the level and quality are accepted and
//! not applied (the output is the same encoding).

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    TRANSFER_ENCODING, VARY,
};
use http::{Method, StatusCode};
use legate_config::filters::http::compressor::{Compressor as CompressorConfig, CompressorConfig as Library};
use legate_config::route::FilterPerRouteConfig;
use legate_stats::Scope;

use crate::http::filter::{BodyTransform, FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::headers::has_token;
use crate::runtime;
use legate_config::filters::network::connection_limit::RuntimeFeatureFlag;

legate_stats::stats! {
    /// `compressed` … `content_length_too_small`, per direction.
    pub struct DirectionStats {
        counter compressed,
        counter not_compressed,
        counter total_uncompressed_bytes,
        counter total_compressed_bytes,
        counter content_length_too_small,
    }
}

legate_stats::stats! {
    /// What `accept-encoding` said, and refusals for an `etag`.
    pub struct ResponseStats {
        counter no_accept_header,
        counter header_identity,
        counter header_compressor_used,
        counter header_compressor_overshadowed,
        counter header_wildcard,
        counter header_not_valid,
        counter not_compressed_etag,
    }
}

/// Envoy's `defaultContentEncoding()` list.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/ecmascript",
    "text/js",
    "text/jscript",
    "text/x-js",
    "application/ecmascript",
    "application/x-json",
    "application/xml",
    "application/json",
    "image/svg+xml",
    "text/xml",
    "application/xhtml+xml",
    "application/grpc-web",
    "application/grpc-web+proto",
];

/// The filter's config, shared by every stream on every worker.
pub struct CompressorFilterConfig {
    pub name: String,
    library: Library,
    /// `gzip`, `br`, `zstd`.
    encoding: &'static str,
    direction: DirectionStats,
    response: ResponseStats,
    enabled: Option<RuntimeFeatureFlag>,
    min_content_length: u64,
    content_types: HashSet<String>,
    disable_on_etag_header: bool,
    remove_accept_encoding_header: bool,
}

impl CompressorFilterConfig {
    /// `scope` is the connection manager's (`http.<stat_prefix>`).
    pub fn new(name: String, config: &CompressorConfig, scope: &Scope) -> Result<Self, String> {
        let library = config.compressor_library.as_ref().ok_or("compressor: compressor_library is required")?;
        let (encoding, stats_part) = match &library.config {
            Library::Gzip(_) => ("gzip", "gzip"),
            Library::Brotli(_) => ("br", "brotli"),
            Library::Zstd(_) => ("zstd", "zstd"),
        };
        let root = scope.scope(&format!("compressor.{}.{stats_part}", library.name));
        let response_config = config.response_direction_config.as_ref();
        let common = response_config.and_then(|r| r.common_config.as_ref());
        // The deprecated top-level fields count only without `response_direction_config`.
        let (enabled, min, types, etag, remove) = match response_config {
            Some(r) => (
                common.and_then(|c| c.enabled.clone()),
                common.and_then(|c| c.min_content_length),
                common.map(|c| c.content_type.clone()).unwrap_or_default(),
                r.disable_on_etag_header,
                r.remove_accept_encoding_header,
            ),
            None => (
                config.runtime_enabled.clone(),
                config.content_length,
                config.content_type.clone(),
                config.disable_on_etag_header,
                config.remove_accept_encoding_header,
            ),
        };
        let content_types = match types.is_empty() {
            true => DEFAULT_CONTENT_TYPES.iter().map(|t| t.to_string()).collect(),
            false => types.iter().map(|t| t.trim().to_ascii_lowercase()).collect(),
        };
        Ok(CompressorFilterConfig {
            name,
            library: library.config.clone(),
            encoding,
            direction: DirectionStats::new(&if response_config.is_some() {
                root.scope("response")
            } else {
                root.clone()
            }),
            response: ResponseStats::new(&root),
            enabled,
            min_content_length: u64::from(min.filter(|m| *m > 0).unwrap_or(30)),
            content_types,
            disable_on_etag_header: etag,
            remove_accept_encoding_header: remove,
        })
    }

    /// A fresh encoder of the configured library.
    fn encoder(&self) -> Option<Encoder> {
        Some(match &self.library {
            Library::Gzip(g) => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(g.compression_level.level()),
            )),
            Library::Brotli(b) => Encoder::Brotli(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                b.quality.unwrap_or(3).min(11),
                b.window_bits.unwrap_or(18).clamp(10, 24),
            )))),
            Library::Zstd(z) => {
                let level = z.compression_level.map_or(3, |l| l.min(22) as i32);
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level).ok()?;
                encoder.include_checksum(z.enable_checksum).ok()?;
                Encoder::Zstd(Some(encoder))
            }
        })
    }
}

/// One stream's compressor.
pub struct CompressorFilter {
    config: Arc<CompressorFilterConfig>,
    /// The request's `accept-encoding` (all its values).
    accept_encoding: Option<String>,
    head_request: bool,
    /// The route turned compression off, or on with its overrides.
    route_enabled: Option<bool>,
    transform: Option<Box<dyn BodyTransform>>,
}

impl CompressorFilter {
    pub fn new(config: Arc<CompressorFilterConfig>) -> Self {
        CompressorFilter { config, accept_encoding: None, head_request: false, route_enabled: None, transform: None }
    }

    /// Envoy's `chooseEncoding` with this one compressor: whether the client takes it,
    /// counting what its `accept-encoding` said.
    fn accepts(&self) -> bool {
        let stats = &self.config.response;
        let Some(header) = &self.accept_encoding else {
            stats.no_accept_header.inc();
            return false;
        };
        let ours = self.config.encoding;
        let mut choice: Option<(&str, f32)> = None;
        let mut any = false;
        let mut ours_refused = false;
        for token in header.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let mut parts = token.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let mut q = 1.0f32;
            let mut valid = true;
            for param in parts {
                if let Some((key, value)) = param.split_once('=') {
                    if key.trim().eq_ignore_ascii_case("q") {
                        match value.trim().parse::<f32>() {
                            Ok(v) => q = v,
                            Err(_) => valid = false,
                        }
                    }
                }
            }
            if !valid {
                continue;
            }
            any = true;
            if name == ours && q <= 0.0 {
                ours_refused = true;
            }
            let candidate = name == ours || name == "identity" || name == "*";
            if candidate && q > choice.map_or(0.0, |(_, best)| best) {
                choice = Some((name, q));
            }
        }
        match choice {
            _ if !any || ours_refused => {
                stats.header_not_valid.inc();
                false
            }
            None => {
                stats.header_not_valid.inc();
                false
            }
            Some(("identity", _)) => {
                stats.header_identity.inc();
                false
            }
            Some(("*", _)) => {
                stats.header_wildcard.inc();
                true
            }
            Some(_) => {
                stats.header_compressor_used.inc();
                true
            }
        }
    }

    fn content_type_allowed(&self, headers: &http::HeaderMap) -> bool {
        match headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(value) => {
                let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
                self.config.content_types.contains(&media)
            }
        }
    }
}

impl HttpFilter for CompressorFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        _end_stream: bool,
        cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        self.head_request = head.method == Method::HEAD;
        let values: Vec<&str> = head.headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).collect();
        self.accept_encoding = (!values.is_empty()).then(|| values.join(","));
        let mut remove = self.config.remove_accept_encoding_header;
        match cb.per_filter_config(&self.config.name) {
            Some(FilterPerRouteConfig::Compressor(per_route)) if per_route.disabled == Some(true) => {
                self.route_enabled = Some(false);
            }
            Some(FilterPerRouteConfig::Compressor(per_route)) => {
                if let Some(response) = per_route.overrides.as_ref().and_then(|o| o.response_direction_config.as_ref())
                {
                    self.route_enabled = Some(true);
                    remove = response.remove_accept_encoding_header.unwrap_or(remove);
                }
            }
            _ => {}
        }
        if remove && self.route_enabled.unwrap_or_else(|| runtime::flag_enabled_or(self.config.enabled.as_ref(), true))
        {
            head.headers.remove(ACCEPT_ENCODING);
        }
        FilterHeadersStatus::Continue
    }

    fn encode_headers(&mut self, head: &mut http::response::Parts, _cb: &mut FilterCallbacks<'_>) {
        let config = &self.config;
        let headers = &mut head.headers;
        // A response with no body: Envoy's `end_stream` on the headers.
        let end_stream = self.head_request
            || head.status.is_informational()
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        let mut enabled_and_len =
            self.route_enabled.unwrap_or_else(|| runtime::flag_enabled_or(config.enabled.as_ref(), true));
        if enabled_and_len {
            if let Some(length) = headers.get(CONTENT_LENGTH) {
                let long_enough = length
                    .to_str()
                    .ok()
                    .and_then(|l| l.trim().parse::<u64>().ok())
                    .is_some_and(|l| l >= config.min_content_length);
                if !long_enough {
                    config.direction.content_length_too_small.inc();
                    enabled_and_len = false;
                }
            }
        }
        let etag_allowed = || {
            let refused = config.disable_on_etag_header && headers.contains_key(ETAG);
            if refused {
                config.response.not_compressed_etag.inc();
            }
            !refused
        };
        let compressible = enabled_and_len
            && head.status != StatusCode::SWITCHING_PROTOCOLS
            && self.content_type_allowed(headers)
            && !has_token(headers, &CACHE_CONTROL, "no-transform")
            && etag_allowed()
            && !headers.contains_key(CONTENT_ENCODING);
        let accepted = !end_stream && enabled_and_len && self.accepts();
        let transfer_encoding_allowed = !["gzip", "br", "deflate", "compress", "zstd", config.encoding]
            .iter()
            .any(|coding| has_token(headers, &TRANSFER_ENCODING, coding));
        let compress = !end_stream && accepted && compressible && transfer_encoding_allowed;
        let encoder = if compress { config.encoder() } else { None };
        match encoder {
            Some(encoder) => {
                config.direction.compressed.inc();
                // A strong validator no longer describes the bytes sent; a weak one still does.
                let strong = headers.get(ETAG).is_some_and(|e| {
                    e.len() > 2 && !e.as_bytes().starts_with(b"W/") && !e.as_bytes().starts_with(b"w/")
                });
                if strong {
                    headers.remove(ETAG);
                }
                headers.remove(CONTENT_LENGTH);
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static(config.encoding));
                self.transform = Some(Box::new(Compressing { encoder, config: config.clone() }));
            }
            None => config.direction.not_compressed.inc(),
        }
        if compressible {
            match headers.get(VARY).and_then(|v| v.to_str().ok()) {
                None => {
                    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                }
                Some(vary) if !vary.split(',').any(|t| t.trim() == "Accept-Encoding") => {
                    if let Ok(v) = HeaderValue::from_str(&format!("{vary}, Accept-Encoding")) {
                        headers.insert(VARY, v);
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn take_body_transform(&mut self) -> Option<Box<dyn BodyTransform>> {
        self.transform.take()
    }
}

/// One of the libraries, writing into a buffer the transform empties after each chunk.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    Zstd(Option<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

/// A response body being compressed, counted in the byte totals.
struct Compressing {
    encoder: Encoder,
    config: Arc<CompressorFilterConfig>,
}

impl Compressing {
    fn counted(&self, input: usize, output: Vec<u8>) -> Bytes {
        let stats = &self.config.direction;
        stats.total_uncompressed_bytes.add(input as u64);
        stats.total_compressed_bytes.add(output.len() as u64);
        Bytes::from(output)
    }
}

impl BodyTransform for Compressing {
    fn data(&mut self, data: &[u8]) -> Bytes {
        // Written and flushed: each chunk goes out compressed as it comes (Envoy's Flush).
        let output = match &mut self.encoder {
            Encoder::Gzip(e) => {
                let _ = e.write_all(data).and_then(|()| e.flush());
                std::mem::take(e.get_mut())
            }
            Encoder::Brotli(Some(e)) => {
                let _ = e.write_all(data).and_then(|()| e.flush());
                std::mem::take(e.get_mut())
            }
            Encoder::Zstd(Some(e)) => {
                let _ = e.write_all(data).and_then(|()| e.flush());
                std::mem::take(e.get_mut())
            }
            Encoder::Brotli(None) | Encoder::Zstd(None) => Vec::new(),
        };
        self.counted(data.len(), output)
    }

    fn finish(&mut self) -> Bytes {
        let output = match &mut self.encoder {
            Encoder::Gzip(e) => {
                let _ = e.try_finish();
                std::mem::take(e.get_mut())
            }
            Encoder::Brotli(e) => e.take().map(|e| e.into_inner()).unwrap_or_default(),
            Encoder::Zstd(e) => e.take().and_then(|e| e.finish().ok()).unwrap_or_default(),
        };
        self.counted(0, output)
    }
}

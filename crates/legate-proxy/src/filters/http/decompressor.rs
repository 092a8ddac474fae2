//! `envoy.filters.http.decompressor` (`envoy.extensions.filters.http.decompressor.v3.Decompressor`),
//! Envoy's "Decompressor" filter: a body whose `content-encoding` starts with the library's
//! encoding (`gzip`, `br`, `zstd`) is decoded, that encoding taken off the header and
//! `content-length` dropped — requests on their way upstream, responses on their way back —
//! unless `cache-control: no-transform` says otherwise. With response decompression on,
//! requests advertise the encoding in `accept-encoding`.
//!
//! A response is decoded as it streams. A request body is read whole first (up to 8 MiB; past
//! it, 413) where Envoy decodes it as it streams, and decodes to 64 MiB at most. A body that
//! does not decode ends where the decoding stopped, as in Envoy; output stops at
//! `max_inflate_ratio` (gzip, 100) or 1032 (brotli, zstd) times the input, so a body made to
//! inflate without bound cannot fill the memory.
//!
//! Stats under `http.<stat_prefix>.decompressor.<library name>.<gzip|brotli|zstd>.`
//! `request.` / `response.`: `decompressed`, `not_decompressed`, `total_compressed_bytes`,
//! `total_uncompressed_bytes`.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH};
use http::HeaderMap;
use legate_config::filters::http::decompressor::{Decompressor as DecompressorConfig, DecompressorConfig as Library};
use legate_stats::Scope;

use crate::http::filter::{BodyTransform, FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::headers::has_token;
use crate::http::LocalReply;
use crate::runtime;
use legate_config::filters::network::connection_limit::RuntimeFeatureFlag;

legate_stats::stats! {
    /// One direction's counters.
    pub struct DirectionStats {
        counter decompressed,
        counter not_decompressed,
        counter total_compressed_bytes,
        counter total_uncompressed_bytes,
    }
}

/// The largest request body read to be decoded, and the most it may decode to.
const MAX_REQUEST_BODY: usize = 8 << 20;
const MAX_DECODED_REQUEST: u64 = 64 << 20;

/// The filter's config, shared by every stream on every worker.
pub struct DecompressorFilterConfig {
    pub name: String,
    library: Library,
    encoding: &'static str,
    request: DirectionStats,
    response: DirectionStats,
    request_enabled: Option<RuntimeFeatureFlag>,
    request_ignore_no_transform: bool,
    response_enabled: Option<RuntimeFeatureFlag>,
    response_ignore_no_transform: bool,
    advertise_accept_encoding: bool,
}

impl DecompressorFilterConfig {
    /// `scope` is the connection manager's (`http.<stat_prefix>`).
    pub fn new(name: String, config: &DecompressorConfig, scope: &Scope) -> Result<Self, String> {
        let library = config.decompressor_library.as_ref().ok_or("decompressor: decompressor_library is required")?;
        let (encoding, stats_part) = match &library.config {
            Library::Gzip(_) => ("gzip", "gzip"),
            Library::Brotli(_) => ("br", "brotli"),
            Library::Zstd(_) => ("zstd", "zstd"),
        };
        let root = scope.scope(&format!("decompressor.{}.{stats_part}", library.name));
        let request = config.request_direction_config.as_ref().and_then(|r| r.common_config.as_ref());
        let response = config.response_direction_config.as_ref().and_then(|r| r.common_config.as_ref());
        Ok(DecompressorFilterConfig {
            name,
            library: library.config.clone(),
            encoding,
            request: DirectionStats::new(&root.scope("request")),
            response: DirectionStats::new(&root.scope("response")),
            request_enabled: request.and_then(|c| c.enabled.clone()),
            request_ignore_no_transform: request.is_some_and(|c| c.ignore_no_transform_header),
            response_enabled: response.and_then(|c| c.enabled.clone()),
            response_ignore_no_transform: response.is_some_and(|c| c.ignore_no_transform_header),
            advertise_accept_encoding: config
                .request_direction_config
                .as_ref()
                .and_then(|r| r.advertise_accept_encoding)
                .unwrap_or(true),
        })
    }

    /// Envoy's `maybeInitDecompress`: whether to decode a body with these headers, which it
    /// then adjusts (the encoding off `content-encoding`, no `content-length`).
    fn takes(&self, headers: &mut HeaderMap, enabled: bool, ignore_no_transform: bool, stats: &DirectionStats) -> bool {
        let no_transform = !ignore_no_transform && has_token(headers, &CACHE_CONTROL, "no-transform");
        let codings = headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
        let (first, rest) = codings.split_once(',').unwrap_or((codings, ""));
        let matches = !codings.is_empty() && first.trim().eq_ignore_ascii_case(self.encoding);
        if !(enabled && !no_transform && matches) {
            stats.not_decompressed.inc();
            return false;
        }
        stats.decompressed.inc();
        let rest = HeaderValue::from_str(rest.trim());
        headers.remove(CONTENT_LENGTH);
        match rest {
            Ok(v) if !v.is_empty() => {
                headers.insert(CONTENT_ENCODING, v);
            }
            _ => {
                headers.remove(CONTENT_ENCODING);
            }
        }
        true
    }

    fn decoder(self: &Arc<Self>, response: bool) -> Decoding {
        let decoder = match &self.library {
            Library::Gzip(_) => Decoder::Gzip(flate2::write::GzDecoder::new(Sink::new())),
            Library::Brotli(_) => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Sink::new(), 4096))),
            Library::Zstd(_) => match zstd::stream::write::Decoder::new(Sink::new()) {
                Ok(d) => Decoder::Zstd(d),
                Err(_) => Decoder::Failed,
            },
        };
        // gzip's `max_inflate_ratio` (100 by default); the other libraries get the most gzip
        // allows (1032), a bound Envoy keeps by decoding a chunk at a time.
        let ratio = match &self.library {
            Library::Gzip(g) => g.max_inflate_ratio.unwrap_or(100),
            _ => 1032,
        };
        // A request is held whole: its decoded size is bounded too.
        let max_output = if response { u64::MAX } else { MAX_DECODED_REQUEST };
        Decoding { decoder, config: self.clone(), response, ratio: u64::from(ratio), max_output, input: 0, output: 0 }
    }
}

pub struct DecompressorFilter {
    config: Arc<DecompressorFilterConfig>,
    decode_request: bool,
    transform: Option<Box<dyn BodyTransform>>,
}

impl DecompressorFilter {
    pub fn new(config: Arc<DecompressorFilterConfig>) -> Self {
        DecompressorFilter { config, decode_request: false, transform: None }
    }
}

impl HttpFilter for DecompressorFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        end_stream: bool,
        _cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        let config = &self.config;
        if end_stream {
            return FilterHeadersStatus::Continue;
        }
        if runtime::flag_enabled_or(config.response_enabled.as_ref(), true) && config.advertise_accept_encoding {
            let value = match head.headers.get(ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) {
                Some(accepted) if !accepted.is_empty() => format!("{accepted},{}", config.encoding),
                _ => config.encoding.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                head.headers.insert(ACCEPT_ENCODING, v);
            }
        }
        self.decode_request = config.takes(
            &mut head.headers,
            runtime::flag_enabled_or(config.request_enabled.as_ref(), true),
            config.request_ignore_no_transform,
            &config.request,
        );
        if self.decode_request {
            return FilterHeadersStatus::StopAllIterationAndBuffer;
        }
        FilterHeadersStatus::Continue
    }

    fn max_buffered_body(&self) -> usize {
        MAX_REQUEST_BODY
    }

    fn decode_body(
        &mut self,
        _head: &mut http::request::Parts,
        body: &mut Bytes,
        _cb: &mut FilterCallbacks<'_>,
    ) -> Option<LocalReply> {
        if self.decode_request {
            let mut decoding = self.config.decoder(false);
            let mut out = decoding.data(body).to_vec();
            out.extend_from_slice(&decoding.finish());
            *body = Bytes::from(out);
        }
        None
    }

    fn encode_headers(&mut self, head: &mut http::response::Parts, _cb: &mut FilterCallbacks<'_>) {
        let config = &self.config;
        let end_stream = head.status == http::StatusCode::NO_CONTENT || head.status == http::StatusCode::NOT_MODIFIED;
        if end_stream {
            return;
        }
        if config.takes(
            &mut head.headers,
            runtime::flag_enabled_or(config.response_enabled.as_ref(), true),
            config.response_ignore_no_transform,
            &config.response,
        ) {
            self.transform = Some(Box::new(config.decoder(true)));
        }
    }

    fn take_body_transform(&mut self) -> Option<Box<dyn BodyTransform>> {
        self.transform.take()
    }
}

enum Decoder {
    Gzip(flate2::write::GzDecoder<Sink>),
    Brotli(Box<brotli::DecompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Decoder<'static, Sink>),
    /// The body stopped decoding: nothing more comes out.
    Failed,
}

/// Where a decoder writes: a buffer that refuses to grow past `room`, so a body that inflates
/// without bound (a "zip bomb") stops decoding instead of filling the memory.
struct Sink {
    buf: Vec<u8>,
    room: usize,
}

impl Sink {
    fn new() -> Self {
        Sink { buf: Vec::new(), room: 0 }
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let fits = self.room.saturating_sub(self.buf.len()).min(data.len());
        if fits == 0 && !data.is_empty() {
            return Err(std::io::Error::other("inflate limit reached"));
        }
        self.buf.extend_from_slice(&data[..fits]);
        Ok(fits)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A body being decoded, counted in its direction's byte totals.
struct Decoding {
    decoder: Decoder,
    config: Arc<DecompressorFilterConfig>,
    response: bool,
    /// The most bytes out per byte in, over the whole body.
    ratio: u64,
    /// The most bytes out in all.
    max_output: u64,
    input: u64,
    output: u64,
}

impl Decoding {
    /// The sink of the decoder, if it is still decoding.
    fn sink(&mut self) -> Option<&mut Sink> {
        match &mut self.decoder {
            Decoder::Gzip(d) => Some(d.get_mut()),
            Decoder::Brotli(d) => Some(d.get_mut()),
            Decoder::Zstd(d) => Some(d.get_mut()),
            Decoder::Failed => None,
        }
    }

    /// Lets the sink take what `input` more bytes in may bring out.
    fn allow(&mut self, input: usize) {
        let allowed =
            (self.input + input as u64).saturating_mul(self.ratio).min(self.max_output).saturating_sub(self.output);
        let room = usize::try_from(allowed).unwrap_or(usize::MAX);
        if let Some(sink) = self.sink() {
            sink.room = sink.buf.len().saturating_add(room);
        }
    }

    fn take(&mut self) -> Vec<u8> {
        self.sink().map(|s| std::mem::take(&mut s.buf)).unwrap_or_default()
    }

    fn counted(&mut self, input: usize, output: Vec<u8>) -> Bytes {
        self.input += input as u64;
        self.output += output.len() as u64;
        let stats = if self.response { &self.config.response } else { &self.config.request };
        stats.total_compressed_bytes.add(input as u64);
        stats.total_uncompressed_bytes.add(output.len() as u64);
        Bytes::from(output)
    }
}

impl BodyTransform for Decoding {
    fn data(&mut self, data: &[u8]) -> Bytes {
        self.allow(data.len());
        let written = match &mut self.decoder {
            Decoder::Gzip(d) => d.write_all(data).and_then(|()| d.flush()),
            Decoder::Brotli(d) => d.write_all(data).and_then(|()| d.flush()),
            Decoder::Zstd(d) => d.write_all(data).and_then(|()| d.flush()),
            Decoder::Failed => Ok(()),
        };
        let output = self.take();
        if written.is_err() {
            // What decoded before the error (or the limit) goes out; nothing more does.
            self.decoder = Decoder::Failed;
        }
        self.counted(data.len(), output)
    }

    fn finish(&mut self) -> Bytes {
        self.allow(0);
        let output = match std::mem::replace(&mut self.decoder, Decoder::Failed) {
            Decoder::Gzip(d) => d.finish().map(|s| s.buf).unwrap_or_default(),
            Decoder::Brotli(d) => d.into_inner().map(|s| s.buf).unwrap_or_default(),
            Decoder::Zstd(mut d) => d.flush().map(|()| std::mem::take(&mut d.get_mut().buf)).unwrap_or_default(),
            Decoder::Failed => Vec::new(),
        };
        self.counted(0, output)
    }
}

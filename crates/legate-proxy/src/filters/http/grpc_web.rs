//! `envoy.filters.http.grpc_web` (`envoy.extensions.filters.http.grpc_web.v3.GrpcWeb`), Envoy's
//! "gRPC-Web" filter: a gRPC-Web request (`content-type: application/grpc-web[-text][+proto]`)
//! goes upstream as gRPC (`application/grpc`, `te: trailers`, no `content-length`, a
//! `-text` body base64-decoded), and its response comes back as gRPC-Web: the content type
//! `application/grpc-web[-text]+proto`, the trailers as a last frame in the body (flag 0x80,
//! `name:value\r\n` lines), every frame base64-encoded when the client's `accept` asked for
//! text. A response that is not gRPC (an upstream's error page, a local reply) keeps its
//! status and gets the `grpc-status` of it; its body is dropped (Envoy also copies it into
//! `grpc-message`).
//!
//! A `-text` request body is read whole before it goes on (gRPC-Web has no client
//! streaming), up to 8 MiB; invalid base64 is a 400 `Bad gRPC-web request, invalid base64
//! data.`.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, TE};
use http::{HeaderMap, StatusCode};

use crate::http::filter::{BodyTransform, FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::LocalReply;

const GRPC_WEB: &str = "application/grpc-web";
const GRPC_WEB_PROTO: &str = "application/grpc-web+proto";
const GRPC_WEB_TEXT: &str = "application/grpc-web-text";
const GRPC_WEB_TEXT_PROTO: &str = "application/grpc-web-text+proto";
static GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The largest `-text` request body read (base64 of a 6 MiB message).
const MAX_TEXT_BODY: usize = 8 << 20;
/// The flag of the frame holding the trailers.
const TRAILER_FLAG: u8 = 0x80;

#[derive(Default)]
pub struct GrpcWebFilter {
    grpc_web: bool,
    text_request: bool,
    text_response: bool,
    transform: Option<Box<dyn BodyTransform>>,
}

impl GrpcWebFilter {
    pub fn new() -> Self {
        GrpcWebFilter::default()
    }
}

fn invalid_base64() -> LocalReply {
    LocalReply::new(StatusCode::BAD_REQUEST, "Bad gRPC-web request, invalid base64 data.", "grpc_base_64_decode_failed")
}

impl HttpFilter for GrpcWebFilter {
    fn decode_headers(
        &mut self,
        head: &mut http::request::Parts,
        end_stream: bool,
        _cb: &mut FilterCallbacks<'_>,
    ) -> FilterHeadersStatus {
        let content_type = head.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
        let text = content_type == GRPC_WEB_TEXT.as_bytes() || content_type == GRPC_WEB_TEXT_PROTO.as_bytes();
        if !text && content_type != GRPC_WEB.as_bytes() && content_type != GRPC_WEB_PROTO.as_bytes() {
            return FilterHeadersStatus::Continue;
        }
        self.grpc_web = true;
        self.text_request = text;
        let accept = head.headers.get(ACCEPT).map(HeaderValue::as_bytes).unwrap_or_default();
        self.text_response = accept == GRPC_WEB_TEXT.as_bytes() || accept == GRPC_WEB_TEXT_PROTO.as_bytes();
        head.headers.remove(CONTENT_LENGTH);
        head.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        head.headers.insert(TE, HeaderValue::from_static("trailers"));
        head.headers.entry(&GRPC_ACCEPT_ENCODING).or_insert(HeaderValue::from_static("identity,deflate,gzip"));
        if text && !end_stream {
            return FilterHeadersStatus::StopAllIterationAndBuffer;
        }
        FilterHeadersStatus::Continue
    }

    fn max_buffered_body(&self) -> usize {
        MAX_TEXT_BODY
    }

    fn decode_body(
        &mut self,
        _head: &mut http::request::Parts,
        body: &mut Bytes,
        _cb: &mut FilterCallbacks<'_>,
    ) -> Option<LocalReply> {
        if !self.text_request || body.is_empty() {
            return None;
        }
        // Base64 padding is mandatory.
        if !body.len().is_multiple_of(4) {
            return Some(invalid_base64());
        }
        match base64::engine::general_purpose::STANDARD.decode(body.as_ref()) {
            Ok(decoded) => {
                *body = Bytes::from(decoded);
                None
            }
            Err(_) => Some(invalid_base64()),
        }
    }

    fn encode_headers(&mut self, head: &mut http::response::Parts, _cb: &mut FilterCallbacks<'_>) {
        if !self.grpc_web {
            return;
        }
        let headers = &mut head.headers;
        let media = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .unwrap_or_default();
        let grpc = media == "application/grpc" || media.starts_with("application/grpc+");
        let grpc_web = media == GRPC_WEB || media == GRPC_WEB_PROTO;
        let answered = (grpc || grpc_web) && head.status == StatusCode::OK;
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if self.text_response { GRPC_WEB_TEXT_PROTO } else { GRPC_WEB_PROTO }),
        );
        if answered || headers.contains_key(&GRPC_STATUS) {
            self.transform = Some(Box::new(GrpcWebBody { text: self.text_response, pending: BytesMut::new() }));
            return;
        }
        // Not a gRPC answer: its status becomes the gRPC status of an empty one.
        let status = crate::filters::network::http_connection_manager::active_stream::http_to_grpc_status(head.status);
        headers.insert(GRPC_STATUS.clone(), HeaderValue::from(status));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        self.transform = Some(Box::new(Dropped));
    }

    fn take_body_transform(&mut self) -> Option<Box<dyn BodyTransform>> {
        self.transform.take()
    }
}

/// A gRPC response body as gRPC-Web: trailers framed into it, frames base64-encoded for a
/// text client.
struct GrpcWebBody {
    text: bool,
    /// Bytes of a frame not yet whole (text only: each frame is encoded on its own).
    pending: BytesMut,
}

impl BodyTransform for GrpcWebBody {
    fn data(&mut self, data: &[u8]) -> Bytes {
        if !self.text {
            return Bytes::copy_from_slice(data);
        }
        self.pending.extend_from_slice(data);
        let mut out = String::new();
        // A frame is a flag byte, a big-endian length, then that many bytes.
        let frame_length =
            |pending: &BytesMut| pending.get(1..5).and_then(|l| <[u8; 4]>::try_from(l).ok()).map(u32::from_be_bytes);
        while let Some(length) = frame_length(&self.pending) {
            let whole = 5 + length as usize;
            if self.pending.len() < whole {
                break;
            }
            let frame = self.pending.split_to(whole);
            base64::engine::general_purpose::STANDARD.encode_string(&frame, &mut out);
        }
        Bytes::from(out)
    }

    fn trailers(&mut self, trailers: &HeaderMap) -> Option<Bytes> {
        let mut lines = BytesMut::new();
        for (name, value) in trailers {
            lines.put_slice(name.as_str().as_bytes());
            lines.put_u8(b':');
            lines.put_slice(value.as_bytes());
            lines.put_slice(b"\r\n");
        }
        let frame = crate::http::grpc::frame(TRAILER_FLAG, &lines);
        if self.text {
            return Some(Bytes::from(base64::engine::general_purpose::STANDARD.encode(&frame)));
        }
        Some(frame)
    }

    fn finish(&mut self) -> Bytes {
        Bytes::new()
    }
}

/// The body of a non-gRPC answer, which gRPC-Web clients cannot read.
struct Dropped;

impl BodyTransform for Dropped {
    fn data(&mut self, _data: &[u8]) -> Bytes {
        Bytes::new()
    }

    fn trailers(&mut self, _trailers: &HeaderMap) -> Option<Bytes> {
        Some(Bytes::new())
    }

    fn finish(&mut self) -> Bytes {
        Bytes::new()
    }
}

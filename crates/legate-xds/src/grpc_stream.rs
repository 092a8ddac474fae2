//! One bidirectional gRPC stream to a control plane (Envoy's `GrpcStream` over its
//! `AsyncClient`): an HTTP/2 request whose body carries the requests and whose response body
//! the responses, each message behind gRPC's 5-byte prefix (compressed flag, big-endian
//! length), as the gRPC-over-HTTP/2 spec frames them. legate keeps tonic out of the proxy:
//! hyper's HTTP/2 client over the proxy's own upstream connection is all a stream needs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use legate_config::config_source::ApiConfigSource;
use legate_config::protocol::Http2ProtocolOptions;
use legate_proxy::http::io::LocalExec;
use legate_proxy::tls::client::Alpn;
use legate_proxy::upstream::cluster_manager::SharedClusters;
use tokio::sync::mpsc;

use crate::cluster_connect;

/// Requests queued on the stream before the control plane reads them.
const REQUEST_QUEUE: usize = 64;

/// Who a stream goes to: `grpc_services[0].envoy_grpc` of an `api_config_source`.
#[derive(Clone, Debug)]
pub(crate) struct GrpcTarget {
    pub(crate) cluster_name: String,
    /// `:authority`: `envoy_grpc.authority`, else the cluster name.
    pub(crate) authority: String,
    /// `grpc_services[0].initial_metadata`, sent on every stream.
    pub(crate) initial_metadata: Vec<(HeaderName, HeaderValue)>,
    /// `envoy_grpc.max_receive_message_length`; a larger message fails the stream.
    pub(crate) max_receive_message_length: usize,
}

impl GrpcTarget {
    pub(crate) fn new(api: &ApiConfigSource) -> Result<Self, String> {
        let service = api.grpc_services.first().ok_or("grpc_services: a gRPC config source needs one")?;
        let envoy_grpc = service.envoy_grpc.as_ref().ok_or("grpc_services[0]: legate supports 'envoy_grpc' only")?;
        let initial_metadata = service
            .initial_metadata
            .iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.key.to_ascii_lowercase().as_bytes());
                let value = HeaderValue::from_str(&h.value);
                match (name, value) {
                    (Ok(name), Ok(value)) => Ok((name, value)),
                    _ => Err(format!("grpc_services[0].initial_metadata: invalid header '{}'", h.key)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let authority = if envoy_grpc.authority.is_empty() {
            envoy_grpc.cluster_name.clone()
        } else {
            envoy_grpc.authority.clone()
        };
        Ok(GrpcTarget {
            cluster_name: envoy_grpc.cluster_name.clone(),
            authority,
            initial_metadata,
            max_receive_message_length: envoy_grpc
                .max_receive_message_length
                .filter(|l| *l > 0)
                .map_or(usize::MAX, |l| l as usize),
        })
    }
}

/// The control plane's answer: awaited until its headers come, then read message by message.
enum Response {
    /// The request is out; the response headers are not in yet. Some control planes send
    /// them with their first message only, so the stream is usable before they arrive.
    Pending(Pin<Box<dyn Future<Output = hyper::Result<http::Response<Incoming>>>>>),
    Streaming(Incoming),
}

/// An open stream. Dropping it ends the request body and closes the connection.
pub(crate) struct GrpcStream {
    cluster_name: String,
    requests: mpsc::Sender<Bytes>,
    response: Response,
    messages: MessageDecoder,
    connection: tokio::task::JoinHandle<()>,
}

impl GrpcStream {
    /// Connects to the target's cluster and calls `path`, with `initial` requests already on
    /// the request body. Returns once the call is sent, without waiting for the answer.
    pub(crate) async fn open(
        clusters: &SharedClusters,
        target: &GrpcTarget,
        path: &str,
        initial: Vec<Bytes>,
    ) -> Result<GrpcStream, String> {
        let (cluster, socket) = cluster_connect::connect(clusters, &target.cluster_name, Alpn::Http2).await?;
        let options = cluster.info.other_config().upstream_http2_options();
        let mut builder = hyper::client::conn::http2::Builder::new(LocalExec);
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(
                options.initial_stream_window_size.unwrap_or(Http2ProtocolOptions::DEFAULT_INITIAL_STREAM_WINDOW_SIZE),
            )
            .initial_connection_window_size(
                options
                    .initial_connection_window_size
                    .unwrap_or(Http2ProtocolOptions::DEFAULT_INITIAL_CONNECTION_WINDOW_SIZE),
            );
        // `connection_keepalive` is how a control plane that vanished without a FIN is noticed:
        // the stream is otherwise silent between pushes.
        if let Some(keepalive) = &options.connection_keepalive {
            if let Some(interval) = keepalive.interval.map(|d| d.0).filter(|d| !d.is_zero()) {
                builder.keep_alive_interval(interval).keep_alive_while_idle(true);
                if let Some(timeout) = keepalive.timeout.map(|d| d.0) {
                    builder.keep_alive_timeout(timeout);
                }
            }
        }
        let (mut sender, connection) = builder
            .handshake::<_, RequestBody>(TokioIo::new(socket))
            .await
            .map_err(|e| format!("{}: HTTP/2 handshake: {e}", target.cluster_name))?;
        let connection = tokio::task::spawn_local(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "control plane connection closed");
            }
        });
        let (requests, receiver) = mpsc::channel(REQUEST_QUEUE.max(initial.len()));
        for message in initial {
            // The queue was sized for them.
            let _ = requests.try_send(frame(&message));
        }
        let uri = Uri::builder()
            .scheme("http")
            .authority(target.authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|e| format!("{}: invalid authority '{}': {e}", target.cluster_name, target.authority))?;
        let mut request = Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(RequestBody(receiver))
            .map_err(|e| e.to_string())?;
        for (name, value) in &target.initial_metadata {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let response = Response::Pending(Box::pin(sender.send_request(request)));
        Ok(GrpcStream {
            cluster_name: target.cluster_name.clone(),
            requests,
            response,
            messages: MessageDecoder::new(target.max_receive_message_length),
            connection,
        })
    }

    /// Queues one message on the request body.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped send may have lost its message. Call it from a `select!`
    /// branch body, not as a branch.
    pub(crate) async fn send(&self, message: &[u8]) -> Result<(), String> {
        self.requests.send(frame(message)).await.map_err(|_| "control plane stream closed".to_string())
    }

    /// The next message from the control plane; `Err` once the stream ended, with why.
    ///
    /// # Cancel safety
    /// Cancel safe: the pending response and what arrived of a message stay in the stream.
    pub(crate) async fn next_message(&mut self) -> Result<Bytes, String> {
        loop {
            if let Some(message) = self.messages.next_message()? {
                return Ok(message);
            }
            let body = match &mut self.response {
                Response::Streaming(body) => body,
                Response::Pending(response) => {
                    let response = response.await.map_err(|e| format!("{}: {e}", self.cluster_name))?;
                    let (parts, body) = response.into_parts();
                    if parts.status != http::StatusCode::OK {
                        return Err(format!("{}: HTTP status {}", self.cluster_name, parts.status.as_u16()));
                    }
                    // A "trailers-only" answer: the call failed before any message.
                    if let Some(error) = grpc_error(&parts.headers) {
                        return Err(format!("{}: {error}", self.cluster_name));
                    }
                    self.response = Response::Streaming(body);
                    continue;
                }
            };
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.messages.push(&data),
                    Err(frame) => {
                        let error = frame.trailers_ref().and_then(grpc_error);
                        return Err(error.unwrap_or_else(|| "control plane closed the stream".to_string()));
                    }
                },
                Some(Err(e)) => return Err(format!("control plane stream: {e}")),
                None => return Err("control plane closed the stream".to_string()),
            }
        }
    }
}

impl Drop for GrpcStream {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Splits the response body into messages: gRPC's length-prefixed framing.
struct MessageDecoder {
    buffer: BytesMut,
    max_message: usize,
}

impl MessageDecoder {
    fn new(max_message: usize) -> Self {
        MessageDecoder { buffer: BytesMut::new(), max_message }
    }

    fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole message, if it is all in.
    fn next_message(&mut self) -> Result<Option<Bytes>, String> {
        let Some(header) = self.buffer.get(..5) else { return Ok(None) };
        let compressed = header.first().copied().unwrap_or(0);
        let length = header.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes).unwrap_or(0);
        let length = length as usize;
        if compressed != 0 {
            // legate sends no `grpc-accept-encoding`, so a compressed message is a peer bug.
            return Err("control plane sent a compressed message without negotiation".to_string());
        }
        if length > self.max_message {
            return Err(format!("control plane message of {length} bytes exceeds max_receive_message_length"));
        }
        if self.buffer.len() < length.saturating_add(5) {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(length).freeze()))
    }
}

/// `grpc-status` other than OK, with its `grpc-message`.
fn grpc_error(headers: &http::HeaderMap) -> Option<String> {
    let status = headers.get("grpc-status")?.to_str().ok()?;
    if status == "0" {
        return None;
    }
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
    Some(format!("gRPC status {status}: {message}"))
}

fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.extend_from_slice(message);
    framed.freeze()
}

/// The request body: messages as they are queued; it ends when the stream is dropped.
pub(crate) struct RequestBody(mpsc::Receiver<Bytes>);

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|message| message.map(|m| Ok(Frame::data(m))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_across_and_within_data_frames() {
        let mut decoder = MessageDecoder::new(usize::MAX);
        let mut wire = frame(b"first").to_vec();
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(b"second"));
        let (a, b) = wire.split_at(3);
        decoder.push(a);
        assert_eq!(decoder.next_message().unwrap(), None);
        decoder.push(b);
        assert_eq!(decoder.next_message().unwrap().unwrap(), &b"first"[..]);
        assert_eq!(decoder.next_message().unwrap().unwrap(), &b""[..]);
        assert_eq!(decoder.next_message().unwrap().unwrap(), &b"second"[..]);
        assert_eq!(decoder.next_message().unwrap(), None);
    }

    #[test]
    fn compressed_and_oversized_messages_fail_the_stream() {
        let mut decoder = MessageDecoder::new(usize::MAX);
        decoder.push(&[1, 0, 0, 0, 1, 0]);
        assert!(decoder.next_message().unwrap_err().contains("compressed"));
        let mut decoder = MessageDecoder::new(4);
        decoder.push(&[0, 0, 0, 0, 5]);
        assert!(decoder.next_message().unwrap_err().contains("max_receive_message_length"));
        // A length prefix announcing 4 GiB is only a wait for more bytes, not an allocation.
        let mut decoder = MessageDecoder::new(usize::MAX);
        decoder.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decoder.next_message().unwrap(), None);
    }
}

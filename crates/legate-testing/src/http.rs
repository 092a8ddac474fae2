//! HTTP test peers: a real upstream server and real clients, so that HTTP tests assert what a
//! user of legate sees (status, headers, body, connections) and not what a mock tolerates.
//!
//! - [`HttpProxy`]: legate from an HTTP bootstrap with an access log to read back
//!   (`%RESPONSE_CODE% %RESPONSE_FLAGS%`), a client per call.
//! - [`HttpUpstream`]: a hyper server (HTTP/1.1 or h2c) on `127.0.0.1:0`, answering each
//!   request with what a handler decides ([`UpstreamAction`]: respond, delay, reset, stream
//!   slowly, never answer), recording every request and counting connections.
//! - [`HttpClient`]: a blocking HTTP/1.1 client over one kept-alive `TcpStream`, written by
//!   hand so that malformed and split requests can be sent byte by byte.
//! - [`h2c_get`], [`h2c_request`], [`h2c_many`]: hyper's HTTP/2 client with prior knowledge.
//! - [`H2Frame`], [`hpack_request`], [`h2_events`]: raw HTTP/2 frames, written and read by
//!   hand, for what no HTTP/2 client would send.
//!
//! - [`load_http_vectors`]: the shared malformed-input vectors, decoded;
//!   [`run_vectors_in_parallel`] and [`print_vector_report`] to survey them.
//!
//! Which one to use: [`HttpClient::send`] for ordinary HTTP/1.1 requests; its
//! [`HttpClient::write_request`] / [`HttpClient::read_response`] pair when requests must be in
//! flight together (circuit breakers) or when the client must stall; [`HttpClient::raw`] for
//! bytes no client library would send.

mod client;
mod h2_frames;
mod h2c;
pub(crate) mod head;
mod proxy;
mod upstream;
mod vectors;

pub use client::{HttpClient, RawReply};
pub use h2_frames::{error_code, frame_type, h2_error_name, h2_events, hpack_request, H2Event, H2Frame, H2_PREFACE};
pub use h2c::{h2c_get, h2c_many, h2c_request};
pub use proxy::{HttpProxy, CODE_AND_FLAGS};
pub use upstream::{HttpUpstream, UpstreamAction, UpstreamRequest};
pub use vectors::{
    load_http_vectors, print_vector_report, run_vectors_in_parallel, shared_http_vectors, HttpVector, VectorReport,
};

//! HTTP test peers: a real upstream server and real clients, so that HTTP tests assert what a
//! user of legate sees (status, headers, body, connections) and not what a mock tolerates.
//!
//! - [`HttpUpstream`]: a hyper server (HTTP/1.1 or h2c) on `127.0.0.1:0`, answering each
//!   request with what a handler decides ([`UpstreamAction`]: respond, delay, reset, stream
//!   slowly, never answer), recording every request and counting connections.
//! - [`HttpClient`]: a blocking HTTP/1.1 client over one kept-alive `TcpStream`, written by
//!   hand so that malformed and split requests can be sent byte by byte.
//! - [`h2c_get`], [`h2c_request`], [`h2c_many`]: hyper's HTTP/2 client with prior knowledge.
//!
//! - [`load_http_vectors`]: the shared malformed-input vectors, decoded.
//!
//! Which one to use: [`HttpClient::send`] for ordinary HTTP/1.1 requests; its
//! [`HttpClient::write_request`] / [`HttpClient::read_response`] pair when requests must be in
//! flight together (circuit breakers) or when the client must stall; [`HttpClient::raw`] for
//! bytes no client library would send.

mod client;
mod h2c;
mod upstream;
mod vectors;

pub use client::{HttpClient, RawReply};
pub use h2c::{h2c_get, h2c_many, h2c_request};
pub use upstream::{HttpUpstream, UpstreamAction, UpstreamRequest};
pub use vectors::{load_http_vectors, HttpVector};

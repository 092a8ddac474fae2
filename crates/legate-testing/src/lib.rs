//! Test helpers for legate's integration tests (DESIGN.md §9, STYLE.md §8).
//!
//! - [`Legate`]: the real binary, started from a YAML bootstrap written to a temp file, with
//!   `--admin-address-path` so the admin's port is discovered the way Envoy's test harness does;
//!   a raw HTTP/1.1 admin client and a stats reader over `/stats?format=json`.
//! - Upstreams on `127.0.0.1:0` that behave ([`TcpEchoServer`], [`TagServer`]) and that misbehave
//!   on purpose ([`ClosedPort`], [`BlackholeServer`], [`BulkSender`], [`EofReplyServer`]), plus
//!   [`TcpServer`] for a scripted peer; [`DnsServer`] for DNS clusters.
//! - [`HttpProxy`]: legate from an HTTP bootstrap with an access log a test reads back.
//! - HTTP peers ([`http`]): [`HttpUpstream`], a hyper server (HTTP/1.1 or h2c) whose handler
//!   answers, delays, resets, streams slowly or never answers; [`HttpClient`], a blocking
//!   HTTP/1.1 client that can also send raw bytes; [`h2c_get`] and [`h2c_many`]; raw HTTP/2
//!   frames ([`H2Frame`], [`h2_events`]).
//! - TLS ([`TestCa`], [`TlsClient`], [`TlsUpstream`], [`h2_tls_get`]): certificates made at
//!   test time with rcgen and rustls peers (ring), for legate's TLS transport sockets.
//! - xDS ([`control_plane`]): a tonic control plane (SotW and delta, ADS and per type, TLS or
//!   not) and a REST one, with a blocking API and a log of every request legate sends.
//! - [`eventually`] for state that changes in the background (stats), bounded and failing with
//!   the last value seen.
//!
//! Everything is blocking `std::net` with a timeout on every wait: a test that hangs tells
//! nothing, a test that fails after 10 s with "expected 3, last seen 2" tells a lot.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
pub mod config;
pub mod control_plane;
mod dns;
mod eventually;
pub mod http;
mod legate;
mod net;
mod pattern;
mod tls;
mod tls_peer;
mod upstream;

pub use admin::{http_request, HttpResponse};
pub use dns::DnsServer;
pub use eventually::{eventually, EVENTUALLY};
pub use http::{
    h2_events, h2c_get, h2c_many, h2c_request, hpack_request, load_http_vectors, H2Event, H2Frame, HttpClient,
    HttpProxy, HttpUpstream, HttpVector, RawReply, UpstreamAction, UpstreamRequest, H2_PREFACE,
};
pub use legate::{run_bounded, Legate, LegateBuilder, RunOutput, TempDir};
pub use net::{
    connect, connect_from, connect_with_recv_buffer, echo_roundtrip, expect_closed, free_port, is_refused, port_in_use,
    read_to_end, ClosedPort, IO_TIMEOUT,
};
pub use pattern::{PatternChecker, PatternWriter};
pub use serde_json::{self, json, Value};
pub use tls::tls_client_hello;
pub use tls_peer::{h2_tls_get, KeyType, TestCa, TestCert, TlsClient, TlsStream, TlsUpstream};
pub use upstream::{BlackholeServer, BulkSender, EofReplyServer, TagServer, TcpEchoServer, TcpServer};

/// Path of the `legate` binary under test: the one Cargo built for the tests, or the one
/// `LEGATE_TEST_BINARY` names (to run the suite against another build of the same tree, e.g.
/// `bench/pgo.sh`'s). A macro so that `env!("CARGO_BIN_EXE_legate")` is expanded in the
/// calling integration test, the only place Cargo defines it.
#[macro_export]
macro_rules! legate_bin {
    () => {
        $crate::binary_under_test(env!("CARGO_BIN_EXE_legate"))
    };
}

/// `LEGATE_TEST_BINARY` when set, else `built` (see [`legate_bin!`]).
pub fn binary_under_test(built: &'static str) -> &'static str {
    static CHOSEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CHOSEN
        .get_or_init(|| std::env::var("LEGATE_TEST_BINARY").ok().filter(|b| !b.is_empty()))
        .as_deref()
        .unwrap_or(built)
}

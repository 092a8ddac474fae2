//! HTTP pieces shared by the connection manager, the HTTP filters and the router: what is
//! known about a stream, response flags, local replies, header handling and body plumbing.

pub mod async_client;
pub mod body;
pub mod filter;
pub mod grpc;
pub mod h1_body;
pub mod h1_client;
pub mod h1_guard;
pub mod h1_server;
pub mod h2_guard;
pub mod headers;
pub mod io;
pub mod local_reply;
pub mod response_flags;
pub mod stream_info;

use crate::worker::reused::{Reusable, SpareBoxes};
use std::thread::LocalKey;

pub use local_reply::LocalReply;
pub use response_flags::{ResponseFlag, ResponseFlags};
pub use stream_info::{RequestSnapshot, StreamInfo};

thread_local! {
    static SPARE_REQUEST_HEADS: SpareBoxes<::http::request::Parts> = const { SpareBoxes::new() };
    static SPARE_RESPONSE_HEADS: SpareBoxes<::http::response::Parts> = const { SpareBoxes::new() };
}

/// Every request's head is boxed (it goes down a chain of futures, where moving it by value
/// cost copies): its box is reused.
impl Reusable for ::http::request::Parts {
    fn spares() -> &'static LocalKey<SpareBoxes<Self>> {
        &SPARE_REQUEST_HEADS
    }
}

/// As a request's head, its response's.
impl Reusable for ::http::response::Parts {
    fn spares() -> &'static LocalKey<SpareBoxes<Self>> {
        &SPARE_RESPONSE_HEADS
    }
}

//! HTTP pieces shared by the connection manager, the HTTP filters and the router: what is
//! known about a stream, response flags, local replies, header handling and body plumbing.

pub mod body;
pub mod filter;
pub mod h1_body;
pub mod h1_client;
pub mod h1_guard;
pub mod h1_server;
pub mod headers;
pub mod io;
pub mod local_reply;
pub mod response_flags;
pub mod stream_info;

pub use local_reply::LocalReply;
pub use response_flags::{ResponseFlag, ResponseFlags};
pub use stream_info::{RequestSnapshot, StreamInfo};

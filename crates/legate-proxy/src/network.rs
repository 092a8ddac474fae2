//! Connections and the network filter framework (Envoy's `envoy/network/filter.h`).
//!
//! A connection owns an ordered chain of read filters over **one shared read buffer**: what a
//! filter does not drain, the next filter reads again; a filter may insert bytes; a filter that
//! returns `StopIteration` stops the chain until it calls `continue_reading`. Bytes written
//! toward the downstream pass through the write filters in reverse order. The framework knows
//! nothing of upstreams: `tcp_proxy` opens its own and drives them from [`ReadFilter::poll_io`].

pub mod batched_sends;
pub mod connection;
pub mod delayed_close;
pub mod filter;
pub mod filter_manager;
pub mod socket_options;
pub mod transport_socket;

pub use connection::{Connection, ConnectionInfo, Run, RunEnd};
pub use filter::{
    ConnectionCloseType, ConnectionEvent, FilterStatus, Parked, ParkedFilter, ReadFilter, ReadFilterCallbacks,
    TakeOverFuture, TakenOverEnd, Woken, WriteFilter,
};
pub use filter_manager::FilterManager;
pub use transport_socket::{PrefixedTcpStream, TransportSocket};

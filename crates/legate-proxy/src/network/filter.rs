//! The network filter contract: read filters, write filters and the callbacks they get.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Context;

use bytes::BytesMut;

/// What a filter that took the connection's I/O over runs until the connection ends or idles.
pub type TakeOverFuture = Pin<Box<dyn Future<Output = TakenOverEnd>>>;

/// How a filter's run over the socket ended.
pub enum TakenOverEnd {
    Closed(ConnectionEvent),
    /// The connection idles (an HTTP/1.1 keep-alive connection between requests): what it needs
    /// to go on is put aside without a task, a future or a timer, and the worker's
    /// [`crate::worker::park::Park`] watches its socket. Boxed: this is every poll's output
    /// type up the connection's futures, and a parked state is a few hundred bytes.
    Idle(Box<Parked>),
}

/// An idle connection put aside by the filter that took its socket over.
pub struct Parked {
    /// Out of the event loop's registrations while parked.
    pub socket: std::net::TcpStream,
    /// When the filter must look at it again even if nothing arrives (an idle timeout,
    /// `max_connection_duration`).
    pub wake_at: Option<std::time::Instant>,
    pub state: ParkedFilter,
}

/// A filter's state while its connection is parked: held by value in the worker's park,
/// which keeps parked connections side by side in large blocks (an idle connection's memory
/// is mostly what it keeps). Only the HTTP connection manager parks connections.
pub enum ParkedFilter {
    Http1(crate::filters::network::http_connection_manager::ParkedHttp1),
}

impl ParkedFilter {
    /// Something may need the connection: bytes or a close on its socket, its `wake_at`, a
    /// drain. The filter reads what is there and resumes, parks again or closes.
    pub fn wake(self, socket: std::net::TcpStream) -> Woken {
        match self {
            ParkedFilter::Http1(parked) => parked.wake(socket),
        }
    }
}

/// What a parked filter does when woken.
#[allow(clippy::large_enum_variant)] // a return value, moved once per wake-up: no box to make
pub enum Woken {
    /// Runs again, in a task of its own.
    Resume(TakeOverFuture),
    Park(Parked),
    /// The connection is over (its state dropped with it).
    Closed(ConnectionEvent),
}

/// What a filter tells the chain after seeing an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterStatus {
    /// Pass the data (or the new connection) on to the next filter.
    Continue,
    /// Stop here; the chain resumes when this filter calls `continue_reading`.
    StopIteration,
}

/// Connection events, as Envoy raises them to filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The peer closed or reset the connection.
    RemoteClose,
    /// This side closed the connection (a filter, a timeout or drain).
    LocalClose,
}

/// How a connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionCloseType {
    /// Write what is buffered toward the peer first, then close.
    FlushWrite,
    /// Close now, dropping buffered writes.
    NoFlush,
}

/// A read filter. Filters run in the order they were added; each sees the shared buffer.
///
/// All methods run on the connection's worker; a filter is never shared between connections.
pub trait ReadFilter {
    /// Called once, before the first `on_data`. `StopIteration` here stops the chain (later
    /// filters are not initialized) until this filter calls `continue_reading`.
    fn on_new_connection(&mut self, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        FilterStatus::Continue
    }

    /// Bytes read from the downstream. What the filter leaves in `data` is seen by the next
    /// filter and, after `StopIteration`, again by this one with the next read.
    fn on_data(&mut self, data: &mut BytesMut, end_stream: bool, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus;

    /// Drives the filter's own I/O and timers (upstream connections, delays). Called every time
    /// the connection's task is woken; register wakers on `cx` as a future would.
    fn poll_io(&mut self, _cx: &mut Context<'_>, _cb: &mut ReadFilterCallbacks<'_>) {}

    /// The connection closed (remote or local). No more callbacks follow.
    fn on_event(&mut self, _event: ConnectionEvent) {}

    /// Whether the filter must still hear [`Self::on_event`] once a filter took the
    /// connection over (nothing else reaches it then). Those that need not are dropped at
    /// the take-over, so that a long-lived connection keeps no blocks of theirs.
    fn needs_events_after_take_over(&self) -> bool {
        true
    }

    /// Called after this filter asked for [`ReadFilterCallbacks::take_over_io`]: the socket,
    /// the bytes read but not consumed and the connection's description become the filter's
    /// (an HTTP codec reads the socket itself). The connection ends when the returned future
    /// does. A filter that never asks is never called; the default closes the connection.
    fn take_over(
        &mut self,
        _socket: super::TransportSocket,
        _buffered: BytesMut,
        _info: ConnectionInfo,
    ) -> TakeOverFuture {
        Box::pin(std::future::ready(TakenOverEnd::Closed(ConnectionEvent::LocalClose)))
    }
}

/// A write filter: sees bytes on their way to the downstream, in reverse filter order.
pub trait WriteFilter {
    fn on_write(&mut self, data: &mut BytesMut, end_stream: bool) -> FilterStatus;
}

/// What a read filter may do to its connection. Requests are recorded and carried out by the
/// connection's event loop right after the filter returns (as Envoy's dispatcher would).
pub struct ReadFilterCallbacks<'a> {
    pub(crate) state: &'a mut ConnectionState,
    /// Index of the filter being called, for `continue_reading`.
    pub(crate) filter_index: usize,
}

impl ReadFilterCallbacks<'_> {
    /// Resumes the chain after this filter: the next filters get `on_new_connection` if they
    /// never had it, then `on_data` with what is buffered.
    pub fn continue_reading(&mut self) {
        let next = self.filter_index + 1;
        self.state.resume_from = Some(self.state.resume_from.map_or(next, |r| r.min(next)));
    }

    /// Passes `data` to the filters after this one, as if it had been read from the socket.
    pub fn inject_read_data(&mut self, data: BytesMut, end_stream: bool) {
        self.state.injected.push((self.filter_index + 1, data, end_stream));
    }

    /// Writes toward the downstream, through the write filters. `end_stream` half-closes.
    pub fn write(&mut self, data: BytesMut, end_stream: bool) {
        self.state.pending_writes.push((data, end_stream));
    }

    pub fn close(&mut self, close_type: ConnectionCloseType) {
        self.state.close(close_type);
    }

    /// Stops (`true`) or resumes (`false`) reading from the downstream. Counted as in Envoy:
    /// reading resumes when every disable has been matched by an enable.
    pub fn read_disable(&mut self, disable: bool) {
        if disable {
            self.state.read_disable_count += 1;
        } else {
            self.state.read_disable_count = self.state.read_disable_count.saturating_sub(1);
        }
    }

    /// Keeps the connection open after the downstream half-closes (tcp_proxy does).
    pub fn enable_half_close(&mut self) {
        self.state.half_close = true;
    }

    /// Whether a FIN seen while reading is disabled closes the connection (Envoy's
    /// `detectEarlyCloseWhenReadDisabled`; on by default). Off, the FIN waits for reading to
    /// resume and arrives as the end of the stream, after every byte before it.
    pub fn detect_early_close_when_read_disabled(&mut self, detect: bool) {
        self.state.detect_early_close = detect;
    }

    /// Bytes waiting to be written to the downstream socket (for back-pressure).
    pub fn write_buffer_len(&self) -> usize {
        self.state.write_buffer.len() + self.state.pending_writes.iter().map(|(d, _)| d.len()).sum::<usize>()
    }

    /// `per_connection_buffer_limit_bytes` of this connection's listener.
    pub fn buffer_limit(&self) -> usize {
        self.state.buffer_limit
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.state.info
    }

    /// Hands the socket to this filter once what is buffered for the downstream is written
    /// (DESIGN.md §4: a terminal filter may take the connection's I/O over). Filters after it
    /// and write filters see nothing more.
    pub fn take_over_io(&mut self) {
        self.state.take_over = Some(self.filter_index);
    }

    /// Whether the connection is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.state.close_requested.is_some()
    }
}

/// Facts about a connection, fixed when it was accepted.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// Envoy's `[C<id>]`.
    pub id: u64,
    pub remote_address: SocketAddr,
    pub local_address: SocketAddr,
    /// Index of the worker that accepted it (0-based).
    pub worker: usize,
    /// Set when the filter chain terminates TLS: what the handshake settled.
    pub ssl: Option<std::sync::Arc<crate::tls::SslConnectionInfo>>,
    /// The drain of its filter chain (listener updates).
    pub drain: Option<tokio::sync::watch::Receiver<crate::listener::drain::DrainPhase>>,
}

/// The mutable state of a connection that filters act on through their callbacks.
pub struct ConnectionState {
    pub(crate) info: ConnectionInfo,
    pub(crate) buffer_limit: usize,
    /// Bytes ready for the socket, already through the write filters.
    pub(crate) write_buffer: BytesMut,
    /// Set once the write filters passed `end_stream`: shut down writing after the flush.
    pub(crate) write_end_stream: bool,
    /// Writes from read filters, not yet through the write filters.
    pub(crate) pending_writes: Vec<(BytesMut, bool)>,
    pub(crate) resume_from: Option<usize>,
    pub(crate) injected: Vec<(usize, BytesMut, bool)>,
    pub(crate) read_disable_count: u32,
    pub(crate) half_close: bool,
    pub(crate) detect_early_close: bool,
    pub(crate) close_requested: Option<ConnectionCloseType>,
    /// The filter that asked to take the socket over.
    pub(crate) take_over: Option<usize>,
}

impl ConnectionState {
    pub fn new(info: ConnectionInfo, buffer_limit: usize) -> Self {
        ConnectionState {
            info,
            buffer_limit,
            write_buffer: BytesMut::new(),
            write_end_stream: false,
            pending_writes: Vec::new(),
            resume_from: None,
            injected: Vec::new(),
            read_disable_count: 0,
            half_close: false,
            detect_early_close: true,
            close_requested: None,
            take_over: None,
        }
    }

    pub(crate) fn close(&mut self, close_type: ConnectionCloseType) {
        // NoFlush wins over an earlier FlushWrite: the later, stronger request decides.
        self.close_requested = match (self.close_requested, close_type) {
            (Some(ConnectionCloseType::NoFlush), _) | (_, ConnectionCloseType::NoFlush) => {
                Some(ConnectionCloseType::NoFlush)
            }
            _ => Some(ConnectionCloseType::FlushWrite),
        };
    }
}

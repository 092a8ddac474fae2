//! A downstream connection: the socket, its filter chain and the loop that drives them.
//!
//! The loop is Envoy's dispatcher for one connection, written as one future: each time the
//! task is woken it lets filters drive their own I/O (`poll_io`), carries out what they asked
//! for (`continue_reading`, injected data, writes through the write filters, close), flushes
//! the write buffer to the socket and reads more when reading is enabled.
//!
//! Back-pressure: reading stops while the read buffer holds `per_connection_buffer_limit_bytes`
//! or more, or while a filter has disabled reading (tcp_proxy does while its upstream is
//! backed up); a filter that writes checks [`ReadFilterCallbacks::write_buffer_len`] before
//! producing more. Nothing buffers without bound.
//!
//! Lifecycle: `initialize` (filters get `on_new_connection`) → open → either side half-closes
//! (only when a filter enabled half-close; otherwise a downstream end of stream closes the
//! connection after what is buffered is written) → closed, when both directions are done, on
//! a close request or on a socket error. Filters get one `on_event` at the end.

use std::future::Future;
use std::io;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;

pub use super::filter::ConnectionInfo;
use super::filter::{ConnectionCloseType, ConnectionEvent, ConnectionState};
use super::filter_manager::FilterManager;
use super::transport_socket::TransportSocket;
use crate::worker::clock;

/// Bytes asked of the socket per read, as Envoy's 16 KiB read slices; a busy flow (its last
/// read filled its room) asks for 64 KiB, a quarter of the system calls.
const READ_SIZE: usize = super::transport_socket::MAX_READ;
const BUSY_READ_SIZE: usize = super::transport_socket::MAX_BUSY_READ;

/// How long a closing TLS connection may take to flush its records and `close_notify`.
const TLS_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Loop turns before yielding to other connections on this worker.
const MAX_TURNS: usize = 64;

/// How the connection's own loop ended.
enum Step {
    Closed(ConnectionEvent),
    /// The filter at this index takes the socket over.
    TakeOver(usize),
}

pub struct Connection {
    /// The TCP socket, or TLS over it once the handshake is done (DESIGN.md §3 step 3).
    socket: TransportSocket,
    state: ConnectionState,
    filters: FilterManager,
    /// The shared read buffer all read filters see.
    read_buffer: BytesMut,
    /// The downstream sent its end of stream (FIN).
    read_end_stream: bool,
    /// We shut down our sending direction.
    write_shutdown: bool,
    /// While reading is disabled: bytes are known to wait in the socket (early close probing
    /// is paused until the next read).
    data_waiting: bool,
    /// The last read filled all the room it had: more is likely waiting, so the next read goes
    /// straight into the buffer rather than through the stack.
    busy: bool,
    initialized: bool,
    /// Bounds the wait for a TLS close (see `tls_close_pending`).
    close_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// A connection's future: its own loop over the filter chain, then, when a filter took the
/// socket over, that filter's future. Written by hand rather than as an `async fn`: it lives
/// as long as the connection, inside the connection's task, and an `async fn` would keep its
/// arguments and its state for each await on top of these.
pub enum Run {
    /// The loop drives the socket; boxed, so that a connection a filter took over keeps none
    /// of it.
    Own(Box<Connection>),
    TakenOver {
        /// Kept for their `on_event` at the end.
        filters: FilterManager,
        future: super::filter::TakeOverFuture,
    },
    Done,
}

/// How a connection's run ended.
pub enum RunEnd {
    Closed(ConnectionEvent),
    /// The filter that took the socket over parked the connection; the filters stay with it.
    Parked(FilterManager, Box<super::Parked>),
}

impl Future for Run {
    type Output = RunEnd;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RunEnd> {
        // Everything that asks for the time during this wake-up (the filters, the connection
        // manager's streams) gets one reading of the clock.
        clock::clocked(|| self.get_mut().poll_run(cx))
    }
}

impl Run {
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<RunEnd> {
        let this = self;
        if let Run::Own(connection) = this {
            match ready!(connection.poll(cx)) {
                Step::Closed(event) => {
                    *this = Run::Done;
                    return Poll::Ready(RunEnd::Closed(event));
                }
                Step::TakeOver(index) => {
                    if let Run::Own(connection) = std::mem::replace(this, Run::Done) {
                        let (socket, read_buffer, info, mut filters) = connection.into_taken_over();
                        let future = filters.take_over(index, socket, read_buffer, info);
                        *this = Run::TakenOver { filters, future };
                    }
                }
            }
        }
        if let Run::TakenOver { future, .. } = this {
            let end = ready!(future.as_mut().poll(cx));
            let Run::TakenOver { mut filters, .. } = std::mem::replace(this, Run::Done) else {
                return Poll::Pending;
            };
            return Poll::Ready(match end {
                super::TakenOverEnd::Closed(event) => {
                    filters.on_event(event);
                    RunEnd::Closed(event)
                }
                super::TakenOverEnd::Idle(parked) => RunEnd::Parked(filters, parked),
            });
        }
        Poll::Pending
    }
}

impl Connection {
    pub fn new(socket: TransportSocket, info: ConnectionInfo, buffer_limit: usize, filters: FilterManager) -> Self {
        Connection {
            socket,
            state: ConnectionState::new(info, buffer_limit.max(1)),
            filters,
            read_buffer: BytesMut::new(),
            read_end_stream: false,
            write_shutdown: false,
            data_waiting: false,
            busy: false,
            initialized: false,
            close_deadline: None,
        }
    }

    /// Bytes already read from the socket (by listener filters), delivered to the read
    /// filters first, as if just read.
    pub fn with_initial_data(mut self, data: BytesMut) -> Self {
        self.read_buffer = data;
        self
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.state.info
    }

    /// Runs the connection until it closes; the future resolves to which side closed it.
    ///
    /// # Cancel safety
    /// Dropping the future closes the connection without flushing (the worker shutting down).
    pub fn run(self: Box<Self>) -> Run {
        Run::Own(self)
    }

    /// What a filter taking the socket over needs; the rest is freed.
    fn into_taken_over(self: Box<Self>) -> (TransportSocket, BytesMut, ConnectionInfo, FilterManager) {
        let Connection { socket, read_buffer, filters, state, .. } = *self;
        (socket, read_buffer, state.info, filters)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        self.poll_inner(cx).map(|event| match event {
            Some(event) => Step::Closed(event),
            None => Step::TakeOver(self.state.take_over.unwrap_or_default()),
        })
    }

    /// `Ready(None)`: a filter takes the socket over.
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        if !self.initialized {
            self.initialized = true;
            if self.filters.is_empty() {
                // A filter chain without filters: nothing can serve this connection.
                return Poll::Ready(Some(self.close_now(ConnectionEvent::LocalClose)));
            }
            // As Envoy: filters are initialized with an empty buffer; bytes that listener
            // filters already read are then delivered as a first read.
            let initial = std::mem::take(&mut self.read_buffer);
            self.filters.initialize_read_filters(&mut self.read_buffer, &mut self.state);
            if !initial.is_empty() {
                self.read_buffer.unsplit(initial);
                self.filters.on_read(&mut self.read_buffer, false, &mut self.state);
            }
        }
        for _ in 0..MAX_TURNS {
            let mut progress = false;
            self.filters.poll_io(cx, &mut self.state);
            progress |= self.filters.run_requests(&mut self.read_buffer, self.read_end_stream, &mut self.state);
            self.filters.flush_pending_writes(&mut self.state);
            if self.state.close_requested == Some(ConnectionCloseType::NoFlush) {
                return Poll::Ready(Some(self.close_now(ConnectionEvent::LocalClose)));
            }
            match self.poll_flush(cx) {
                Ok(flushed) => progress |= flushed,
                Err(_) => return Poll::Ready(Some(self.close_now(ConnectionEvent::RemoteClose))),
            }
            if self.state.write_buffer.is_empty() && self.state.close_requested == Some(ConnectionCloseType::FlushWrite)
            {
                if self.tls_close_pending(cx) {
                    return Poll::Pending;
                }
                return Poll::Ready(Some(self.close_now(ConnectionEvent::LocalClose)));
            }
            if self.state.take_over.is_some() && self.state.write_buffer.is_empty() {
                return Poll::Ready(None);
            }
            if self.read_end_stream && self.write_shutdown && self.state.write_buffer.is_empty() {
                // Both directions are finished (half-close both ways).
                return Poll::Ready(Some(self.close_now(ConnectionEvent::RemoteClose)));
            }
            match self.poll_read(cx) {
                Ok(read) => progress |= read,
                Err(_) => return Poll::Ready(Some(self.close_now(ConnectionEvent::RemoteClose))),
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Busy connection: let the other connections of this worker run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes the write buffer to the socket; shuts down our side after an end of stream.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progress = false;
        while !self.state.write_buffer.is_empty() {
            match &mut self.socket {
                TransportSocket::RawBuffer(socket) => match socket.poll_write_ready(cx) {
                    Poll::Pending => return Ok(progress),
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Ready(Ok(())) => match socket.try_write(&self.state.write_buffer) {
                        Ok(n) => {
                            let _ = self.state.write_buffer.split_to(n);
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    },
                },
                tls => match tls.poll_write_slice(cx, &self.state.write_buffer) {
                    Poll::Pending => return Ok(progress),
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Ready(Ok(n)) => {
                        let _ = self.state.write_buffer.split_to(n);
                        progress = true;
                    }
                },
            }
        }
        // TLS records rustls still holds go out before anything else happens to the socket.
        match self.socket.poll_flush_records(cx) {
            Poll::Pending => return Ok(progress),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(())) => {}
        }
        if self.state.write_end_stream && !self.write_shutdown {
            // A peer that already went away makes shutdown fail; the read side notices.
            if self.socket.poll_shutdown_write(cx).is_ready() {
                self.write_shutdown = true;
                progress = true;
            }
        }
        if self.state.write_buffer.is_empty() && self.state.write_buffer.capacity() > 0 {
            // An idle connection holds no buffer memory (a drained buffer still owns its
            // allocation).
            self.state.write_buffer = BytesMut::new();
        }
        Ok(progress)
    }

    /// Reads once when reading is enabled and the read buffer is below its limit.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if self.read_end_stream || self.state.close_requested.is_some() || self.state.take_over.is_some() {
            return Ok(false);
        }
        if self.state.read_disable_count > 0 || self.read_buffer.len() >= self.state.buffer_limit {
            return self.detect_early_close(cx).map(|()| false);
        }
        // TLS too reads rather than waits for readiness: decrypted bytes may already wait in
        // rustls.
        let size = if self.busy { BUSY_READ_SIZE } else { READ_SIZE };
        let room = (self.state.buffer_limit - self.read_buffer.len()).min(size);
        let result = match self.socket.poll_read_append(cx, &mut self.read_buffer, room, self.busy) {
            Poll::Pending => {
                self.data_waiting = false;
                self.busy = false;
                // The socket is drained: do not keep a reservation while the connection waits
                // (idle connections must stay small).
                if self.read_buffer.is_empty() {
                    self.read_buffer = BytesMut::new();
                }
                return Ok(false);
            }
            Poll::Ready(result) => result,
        };
        self.data_waiting = false;
        self.busy = result.as_ref().is_ok_and(|&n| n == room);
        self.on_read_result(result)
    }

    /// Hands what one read returned to the filters: data, or the downstream's end of stream.
    fn on_read_result(&mut self, result: io::Result<usize>) -> io::Result<bool> {
        match result {
            Ok(0) => {
                self.read_end_stream = true;
                self.filters.on_read(&mut self.read_buffer, true, &mut self.state);
                if !self.state.half_close {
                    // Without half-close, the downstream's FIN ends the connection once what
                    // is already buffered for it has been written.
                    self.state.close(ConnectionCloseType::FlushWrite);
                }
                Ok(true)
            }
            Ok(_) => {
                self.filters.on_read(&mut self.read_buffer, false, &mut self.state);
                if self.read_buffer.is_empty() {
                    // Idle connections hold no read buffer; the next read allocates one.
                    self.read_buffer = BytesMut::new();
                }
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Envoy's early close detection: while reading is disabled, a peer that closes or resets
    /// is still noticed, so a client that gave up (say, while its upstream is connecting) does
    /// not hold the connection until a timeout. A 1-byte peek tells a FIN (0 bytes) from data.
    /// When data is waiting, probing stops until the next read: the readiness must stay set
    /// for that read (tokio does not even try a read while its readiness is clear), and a FIN
    /// queued behind that data is seen when reading resumes.
    fn detect_early_close(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.data_waiting {
            return Ok(());
        }
        loop {
            // TLS too: a FIN is seen on the TCP socket underneath.
            let socket = self.socket.tcp();
            match socket.poll_read_ready(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(())) => {}
            }
            // Returning WouldBlock from the closure clears the readiness; only when the socket
            // really has nothing, so the next poll registers for the next event.
            let peeked = socket.try_io(tokio::io::Interest::READABLE, || {
                let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                socket2::SockRef::from(socket).peek(&mut probe)
            });
            match peeked {
                Ok(0) if !self.state.detect_early_close => {
                    // The FIN is read in turn once reading resumes.
                    self.data_waiting = true;
                    return Ok(());
                }
                Ok(0) => {
                    tracing::debug!(connection = self.state.info.id, "remote early close");
                    return Err(io::ErrorKind::ConnectionAborted.into());
                }
                Ok(_) => {
                    self.data_waiting = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A TLS connection closing after its writes: the records rustls still holds, then
    /// `close_notify`, go out before the socket closes, for at most `TLS_CLOSE_TIMEOUT` (Envoy's
    /// `delayed_close_timeout` default) so a peer that stopped reading cannot hold it open.
    fn tls_close_pending(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.socket.is_tls() {
            return false;
        }
        let flushed = self.socket.poll_flush_records(cx).is_ready() && self.socket.poll_shutdown_write(cx).is_ready();
        if flushed {
            return false;
        }
        let deadline = self.close_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(TLS_CLOSE_TIMEOUT)));
        deadline.as_mut().poll(cx).is_pending()
    }

    fn close_now(&mut self, event: ConnectionEvent) -> ConnectionEvent {
        self.filters.on_event(event);
        event
    }
}

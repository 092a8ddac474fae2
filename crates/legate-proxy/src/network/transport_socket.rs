//! The transport socket of a connection (Envoy's `Network::TransportSocket`): what turns the
//! TCP byte stream into the byte stream the filters see. A closed set, so an enum:
//! `envoy.transport_sockets.raw_buffer` (the TCP stream itself) and `envoy.transport_sockets.tls`
//! (rustls over the TCP stream, built by [`crate::tls`]). The same type carries downstream and
//! upstream connections.
//!
//! The TLS variant reads and writes plaintext; a TLS record may hold bytes the next read returns
//! without the socket becoming readable, so callers read until `Pending` rather than waiting on
//! the socket's readiness (the raw variant's fast paths in `Connection` do wait on it).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The most [`TransportSocket::poll_read_append`] reads at once through the stack: Envoy's
/// 16 KiB read slices.
pub const MAX_READ: usize = 16 * 1024;
/// The most it reads at once in place, into a busy flow's buffer.
pub const MAX_BUSY_READ: usize = 64 * 1024;

/// A connected socket with its transport (raw or TLS).
pub enum TransportSocket {
    /// `envoy.transport_sockets.raw_buffer`.
    RawBuffer(TcpStream),
    /// `envoy.transport_sockets.tls`, handshake done.
    Tls(Box<tokio_rustls::TlsStream<PrefixedTcpStream>>),
}

/// A TCP stream whose first reads return bytes already read from it (by listener filters):
/// what the TLS handshake reads the ClientHello from.
pub struct PrefixedTcpStream {
    prefix: BytesMut,
    tcp: TcpStream,
}

impl PrefixedTcpStream {
    pub fn new(tcp: TcpStream, prefix: BytesMut) -> Self {
        PrefixedTcpStream { prefix, tcp }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for PrefixedTcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        let n = buf.remaining().min(this.prefix.len());
        buf.put_slice(&this.prefix.split_to(n));
        if this.prefix.is_empty() {
            // Give the buffer back: the connection may live long.
            this.prefix = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PrefixedTcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl TransportSocket {
    /// The TCP socket underneath (socket options, addresses, FIN probing).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            TransportSocket::RawBuffer(s) => s,
            TransportSocket::Tls(s) => s.get_ref().0.tcp(),
        }
    }

    /// Waits until the peer has sent something (or closed). Under TLS this is the TCP socket's
    /// readiness: it is asked only once a read has found no plaintext left in rustls.
    pub async fn readable(&self) -> io::Result<()> {
        self.tcp().readable().await
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, TransportSocket::Tls(_))
    }

    /// Reads plaintext into `buf`; `Ok(0)` is the peer's end of stream. A TLS peer that closes
    /// TCP without `close_notify` is treated as an end of stream too, as Envoy does (HTTP/1.1
    /// and tcp_proxy frame their own ends).
    /// `buf` may be uninitialized (a stack scratch need not be zeroed on every read).
    pub fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<usize>> {
        let before = buf.filled().len();
        match Pin::new(&mut *self).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len() - before)),
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(0)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads up to `room` bytes (at most [`MAX_BUSY_READ`] in place, [`MAX_READ`] through the
    /// scratch buffer) onto the end of `buf`; `Ok(0)` is the peer's end of stream, as for
    /// [`Self::poll_read_slice`].
    ///
    /// A busy flow (`busy`: its last read filled its room) reads a body's large reads (`room`
    /// over [`MAX_READ`]) in place. Other reads go through a scratch buffer and `buf` keeps
    /// only what arrived: a 16 KiB block per read of a few bytes fragments the heap (small
    /// long-lived allocations land in the freed block), which is what idle connections would
    /// then cost, and a head's few bytes cost less to copy than the in-place read's way
    /// through glibc (see [`poll_syscall`]). The scratch buffer is not zeroed: a 16 KiB memset
    /// per read would cost more than the read. (Under TLS, a buffer with room to spare reads
    /// in place.)
    pub fn poll_read_append(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        room: usize,
        busy: bool,
    ) -> Poll<io::Result<usize>> {
        if let TransportSocket::RawBuffer(tcp) = self {
            if !busy || room <= MAX_READ {
                return poll_recv_through_scratch(tcp, cx, buf, room.min(MAX_READ));
            }
            // Most polls that find nothing only leave a waker: asked of the socket's readiness
            // alone, they skip the read machinery (callgrind: ~150 instructions each, four
            // such polls per proxied request).
            ready!(tcp.poll_read_ready(cx))?;
        }
        let in_place = room.min(MAX_BUSY_READ);
        if busy {
            buf.reserve(in_place);
        }
        if buf.capacity() - buf.len() >= in_place {
            let mut limited = bytes::BufMut::limit(&mut *buf, in_place);
            // A fresh `read_buf` future per poll is the same as polling one (it keeps no state).
            let read = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(self, &mut limited));
            return match ready!(read.poll(cx)) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(0)),
                result => Poll::Ready(result),
            };
        }
        self.poll_read_through_scratch(cx, buf, room.min(MAX_READ))
    }

    /// [`Self::poll_read_append`]'s read through the thread's scratch buffer under TLS (a raw
    /// socket's goes through [`poll_recv_through_scratch`]). Not inlined, and
    /// the buffer not on the stack: a 16 KiB stack array made every call of the caller (most of
    /// them only register a waker) probe four fresh stack pages and run its callees 16 KiB
    /// deeper, past what the first-level cache holds of the stack (callgrind's cache model: 12
    /// write misses per proxied request from the probes alone).
    #[inline(never)]
    fn poll_read_through_scratch(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        room: usize,
    ) -> Poll<io::Result<usize>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::uninit(scratch.get_mut(..room).unwrap_or_default());
            let n = ready!(self.poll_read_slice(cx, &mut read))?;
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(n))
        })
    }

    /// Writes some of `buf`; for TLS the records may still wait in rustls: call
    /// [`Self::poll_flush_records`] until it is ready.
    pub fn poll_write_slice(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, buf)
    }

    /// Pushes TLS records buffered in rustls to the socket (nothing to do for raw sockets).
    pub fn poll_flush_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            TransportSocket::RawBuffer(_) => Poll::Ready(Ok(())),
            TransportSocket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    /// Half-closes our sending direction: TLS `close_notify`, then TCP FIN.
    pub fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            TransportSocket::RawBuffer(s) => {
                Poll::Ready(socket2::SockRef::from(&*s).shutdown(std::net::Shutdown::Write))
            }
            TransportSocket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for TransportSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TransportSocket::RawBuffer(s) => Pin::new(s).poll_read(cx, buf),
            TransportSocket::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

thread_local! {
    /// A worker's buffer for reads whose size is not known in advance (see
    /// [`TransportSocket::poll_read_append`]).
    static SCRATCH: RefCell<Box<[MaybeUninit<u8>]>> =
        RefCell::new(vec![MaybeUninit::uninit(); MAX_READ].into_boxed_slice());
}

/// A system call on a raw socket once tokio has seen it ready, as tokio's own reads and writes
/// do, but made directly (rustix) rather than through glibc's `recv`/`send`/`writev`: those
/// are cancellation points, and in a process with more than one thread each call enters and
/// leaves asynchronous cancellation with two atomic read-modify-writes (callgrind: ~60
/// instructions and 2 locked ones per call; a proxied request makes four such calls).
///
/// `call` also says whether the call came up short (a read that did not fill its room, a write
/// that did not take all): with edge-triggered readiness the socket is then drained, or full,
/// and tokio's own reads and writes clear its readiness there, so that the next poll waits
/// for the next event instead of trying a system call that would only say `EAGAIN`. tokio
/// lets a caller clear readiness only by answering `WouldBlock` from `try_io`, so a short call
/// answers that, and its result is kept. `WouldBlock` from the socket itself clears readiness
/// the same way, and the next poll of readiness leaves the waker.
fn poll_syscall<R>(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    interest: Interest,
    mut call: impl FnMut(&TcpStream) -> rustix::io::Result<(R, bool)>,
) -> Poll<io::Result<R>> {
    loop {
        if interest.is_readable() {
            ready!(tcp.poll_read_ready(cx))?;
        } else {
            ready!(tcp.poll_write_ready(cx))?;
        }
        let mut short = None;
        let result = tcp.try_io(interest, || match call(tcp)? {
            (result, true) => {
                short = Some(result);
                Err(io::ErrorKind::WouldBlock.into())
            }
            (result, false) => Ok(result),
        });
        match (result, short) {
            (Ok(result), _) | (Err(_), Some(result)) => return Poll::Ready(Ok(result)),
            (Err(e), None) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
            (Err(e), None) => return Poll::Ready(Err(e)),
        }
    }
}

/// A read of at most `room` bytes (≤ [`MAX_READ`]) through the worker's scratch buffer,
/// appended to `buf`: what a flow that is not busy reads (a request, a response head), where
/// copying the few bytes that came costs less than glibc's wrapper would.
fn poll_recv_through_scratch(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> Poll<io::Result<usize>> {
    poll_syscall(tcp, cx, Interest::READABLE, |tcp| {
        SCRATCH.with_borrow_mut(|scratch| {
            let scratch = scratch.get_mut(..room).unwrap_or_default();
            let ((read, _), _) = rustix::net::recv(tcp, scratch, rustix::net::RecvFlags::empty())?;
            buf.extend_from_slice(read);
            let n = read.len();
            Ok((n, 0 < n && n < room))
        })
    })
}

/// The one non-empty slice of `bufs` (an empty one when all are), or `None` when there are
/// several.
fn single_slice<'a>(bufs: &'a [io::IoSlice<'a>]) -> Option<&'a [u8]> {
    let mut filled = bufs.iter().filter(|b| !b.is_empty());
    let first = filled.next().map_or(&[][..], |b| &**b);
    filled.next().is_none().then_some(first)
}

/// `send` with `MSG_NOSIGNAL`, as the standard library's: a closed peer is an error, not a
/// signal.
fn poll_send(tcp: &TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    poll_syscall(tcp, cx, Interest::WRITABLE, |tcp| {
        let n = rustix::net::send(tcp, buf, rustix::net::SendFlags::NOSIGNAL)?;
        Ok((n, 0 < n && n < buf.len()))
    })
}

impl AsyncWrite for TransportSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TransportSocket::RawBuffer(s) => poll_send(s, cx, buf),
            TransportSocket::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TransportSocket::RawBuffer(s) => match single_slice(bufs) {
                // The kernel's vectored path costs more per call than a plain send, and the
                // writers here often hand over one piece among empty ones (a body piece with
                // no head or chunk framing around it).
                Some(only) => poll_send(s, cx, only),
                None => poll_syscall(s, cx, Interest::WRITABLE, |tcp| {
                    let n = rustix::io::writev(tcp, bufs)?;
                    Ok((n, 0 < n && n < bufs.iter().map(|b| b.len()).sum()))
                }),
            },
            TransportSocket::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TransportSocket::RawBuffer(s) => s.is_write_vectored(),
            TransportSocket::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TransportSocket::RawBuffer(s) => Pin::new(s).poll_flush(cx),
            TransportSocket::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TransportSocket::RawBuffer(s) => Pin::new(s).poll_shutdown(cx),
            TransportSocket::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

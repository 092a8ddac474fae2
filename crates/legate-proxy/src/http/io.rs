//! I/O adapters between sockets and hyper: a local executor for HTTP/2 tasks, a socket that
//! counts bytes into stats and replays bytes already read, and the downstream side of an
//! upgrade.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use legate_stats::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::network::TransportSocket;

/// Runs hyper's HTTP/2 tasks on the current worker (its futures need not be `Send`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// A socket whose reads and writes are added to two counters (`*_rx_bytes_total`,
/// `*_tx_bytes_total`), with bytes that were read before it existed replayed first.
pub struct CountingIo<T> {
    inner: T,
    prefix: BytesMut,
    rx: Counter,
    tx: Counter,
}

impl<T> CountingIo<T> {
    pub fn new(inner: T, prefix: BytesMut, rx: Counter, tx: Counter) -> Self {
        CountingIo { inner, prefix, rx, tx }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Bytes read before this socket existed and not yet replayed.
    pub fn has_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.rx.add(n as u64);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            self.tx.add(*n as u64);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &result {
            self.tx.add(*n as u64);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A socket lent to hyper, whose HTTP/2 server keeps its socket to its end: the lender takes
/// it back once hyper's connection is dropped (see [`linger`]).
pub struct LentIo<T>(Rc<RefCell<T>>);

impl<T> LentIo<T> {
    /// The socket to hand to hyper, and the lender's hold on it.
    pub fn lend(io: T) -> (Self, Rc<RefCell<T>>) {
        let io = Rc::new(RefCell::new(io));
        (LentIo(io.clone()), io)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LentIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LentIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.borrow().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)
    }
}

/// Closes the write side (FIN, TLS close_notify), then reads and drops what the peer still
/// sends until it closes too: a socket closed with unread bytes answers with a reset, which
/// may destroy what was last sent (a GOAWAY) before the peer reads it. Unbounded: the caller
/// bounds it (`delayed_close_timeout`).
pub async fn linger<T: AsyncRead + AsyncWrite + Unpin>(io: &mut T) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
    let mut scratch = vec![0; 16 * 1024];
    while let Ok(1..) = io.read(&mut scratch).await {}
}

/// The downstream side of an upgrade (WebSocket, CONNECT), once its response is written.
pub enum DownstreamUpgrade {
    Hyper(hyper::upgrade::OnUpgrade),
    /// legate's HTTP/1.1 codec hands over the socket, with bytes read past the request.
    Http1(tokio::sync::oneshot::Receiver<CountingIo<TransportSocket>>),
}

impl DownstreamUpgrade {
    /// The socket, or `None` when the response was not an upgrade after all.
    pub async fn wait(self) -> Option<UpgradedIo> {
        match self {
            DownstreamUpgrade::Hyper(on) => on.await.ok().map(|u| UpgradedIo::Hyper(hyper_util::rt::TokioIo::new(u))),
            DownstreamUpgrade::Http1(rx) => rx.await.ok().map(UpgradedIo::Http1),
        }
    }
}

pub enum UpgradedIo {
    Hyper(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>),
    Http1(CountingIo<TransportSocket>),
}

impl AsyncRead for UpgradedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Hyper(io) => Pin::new(io).poll_read(cx, buf),
            UpgradedIo::Http1(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpgradedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpgradedIo::Hyper(io) => Pin::new(io).poll_write(cx, buf),
            UpgradedIo::Http1(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Hyper(io) => Pin::new(io).poll_flush(cx),
            UpgradedIo::Http1(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Hyper(io) => Pin::new(io).poll_shutdown(cx),
            UpgradedIo::Http1(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

//! I/O adapters between sockets and hyper: a local executor for HTTP/2 tasks, a socket that
//! counts bytes into stats and replays bytes already read, and the downstream side of an
//! upgrade.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use legate_stats::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

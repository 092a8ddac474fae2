//! Envoy's limits on what the other end of an HTTP/2 connection may send (its codec's
//! `ProtocolConstraints`), kept in front of h2, which has no such limits: empty frames back to
//! back, PRIORITY frames beyond a budget per stream, and WINDOW_UPDATE frames beyond a budget
//! per DATA frame sent. Each is cheap to send and costs the receiver a frame's worth of work;
//! past the limit the connection is closed and counted in `http2.inbound_*_flood` (a client's,
//! downstream) or `cluster.<name>.http2.inbound_*_flood` (a server's, upstream).
//!
//! Only frame headers are read (and a padded frame's pad length), as the bytes pass: h2 parses
//! every frame again, and keeps its own checks.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use legate_config::protocol::Http2ProtocolOptions;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

legate_stats::stats! {
    /// Envoy's HTTP/2 codec stats: `http2.*` for downstream connections, `cluster.<name>.http2.*`
    /// for upstream ones.
    pub struct Http2Stats {
        counter inbound_empty_frames_flood,
        counter inbound_priority_frames_flood,
        counter inbound_window_update_frames_flood,
        /// RST_STREAM frames received (Envoy counts those on streams it knows; this, all).
        counter rx_reset,
        /// RST_STREAM frames sent.
        counter tx_reset,
    }
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
/// The client's connection preface (RFC 9113 §3.4), which comes before its first frame.
const CLIENT_PREFACE_LEN: u32 = 24;

/// The configured limits (Envoy's defaults where unset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimits {
    pub max_consecutive_empty: u32,
    pub max_priority_per_stream: u32,
    pub max_window_update_per_data_sent: u32,
}

impl FloodLimits {
    pub fn new(options: &Http2ProtocolOptions) -> Self {
        FloodLimits {
            max_consecutive_empty: options.max_consecutive_inbound_frames_with_empty_payload(),
            max_priority_per_stream: options.max_inbound_priority_frames_per_stream(),
            max_window_update_per_data_sent: options.max_inbound_window_update_frames_per_data_frame_sent(),
        }
    }
}

/// A frame's header, as far as the limits need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHead {
    len: u32,
    kind: u8,
    flags: u8,
}

/// Follows a stream of HTTP/2 frames in whatever pieces it passes, yielding each frame's head
/// once it is known.
#[derive(Debug)]
struct FrameScanner {
    /// Bytes to pass over before the next frame header: a preface or a frame's payload.
    skip: u32,
    head: [u8; 9],
    head_len: usize,
    /// A padded frame whose pad length is the next byte.
    awaiting_pad: Option<FrameHead>,
}

impl FrameScanner {
    fn new(preface: u32) -> Self {
        FrameScanner { skip: preface, head: [0; 9], head_len: 0, awaiting_pad: None }
    }

    /// Calls `on_frame` with each frame head that `bytes` completes and the padding it carries
    /// (the pad length byte included, as nghttp2 counts it); stops early when it returns false.
    fn scan(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(FrameHead, u32) -> bool) {
        while !bytes.is_empty() {
            if let Some(head) = self.awaiting_pad.take() {
                let Some((&pad, rest)) = bytes.split_first() else { break };
                bytes = rest;
                self.skip = head.len - 1;
                if !on_frame(head, u32::from(pad) + 1) {
                    return;
                }
                continue;
            }
            if self.skip > 0 {
                let n = bytes.len().min(self.skip as usize);
                bytes = bytes.get(n..).unwrap_or_default();
                self.skip -= n as u32;
                continue;
            }
            let n = bytes.len().min(self.head.len() - self.head_len);
            let (taken, rest) = bytes.split_at(n);
            if let Some(slot) = self.head.get_mut(self.head_len..self.head_len + n) {
                slot.copy_from_slice(taken);
            }
            bytes = rest;
            self.head_len += n;
            if self.head_len < self.head.len() {
                break;
            }
            self.head_len = 0;
            let [l0, l1, l2, kind, flags, ..] = self.head;
            let head = FrameHead { len: u32::from_be_bytes([0, l0, l1, l2]), kind, flags };
            if head.flags & PADDED != 0 && matches!(head.kind, DATA | HEADERS) && head.len > 0 {
                self.awaiting_pad = Some(head);
            } else {
                self.skip = head.len;
                if !on_frame(head, 0) {
                    return;
                }
            }
        }
    }
}

/// Envoy's counts, and the check made after each inbound frame.
#[derive(Debug, Default)]
struct Counts {
    inbound_streams: u64,
    consecutive_empty: u64,
    priority_frames: u64,
    window_update_frames: u64,
    outbound_data_frames: u64,
}

/// Which limit the peer went past: too many frames of which kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flood {
    Empty,
    Priority,
    WindowUpdate,
}

impl Flood {
    /// Envoy's message for it.
    fn message(self) -> &'static str {
        match self {
            Flood::Empty => "Too many consecutive frames with an empty payload",
            Flood::Priority => "Too many PRIORITY frames",
            Flood::WindowUpdate => "Too many WINDOW_UPDATE frames",
        }
    }
}

impl Counts {
    fn inbound(&mut self, head: FrameHead, padding: u32, limits: &FloodLimits) -> Option<Flood> {
        match head.kind {
            HEADERS | CONTINUATION | DATA => {
                if head.kind != DATA && head.flags & END_HEADERS != 0 {
                    self.inbound_streams += 1;
                }
                if head.len.saturating_sub(padding) == 0 && head.flags & END_STREAM == 0 {
                    self.consecutive_empty += 1;
                } else {
                    self.consecutive_empty = 0;
                }
            }
            PRIORITY => self.priority_frames += 1,
            WINDOW_UPDATE => self.window_update_frames += 1,
            _ => {}
        }
        if self.consecutive_empty > u64::from(limits.max_consecutive_empty) {
            return Some(Flood::Empty);
        }
        if self.priority_frames > u64::from(limits.max_priority_per_stream).saturating_mul(1 + self.inbound_streams) {
            return Some(Flood::Priority);
        }
        let window_updates_allowed = u64::from(limits.max_window_update_per_data_sent)
            .saturating_mul(self.outbound_data_frames)
            .saturating_add(self.inbound_streams)
            .saturating_mul(2)
            .saturating_add(1);
        if self.window_update_frames > window_updates_allowed {
            return Some(Flood::WindowUpdate);
        }
        None
    }
}

/// Which end of the connection legate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Downstream: the client's preface comes first on what legate reads.
    Server,
    /// Upstream: legate's preface comes first on what it writes.
    Client,
}

/// An HTTP/2 connection's socket, with the peer's frames held to [`FloodLimits`].
pub struct H2Guard<T> {
    inner: T,
    inbound: FrameScanner,
    outbound: FrameScanner,
    limits: FloodLimits,
    counts: Counts,
    stats: Http2Stats,
    /// Also counts the RST_STREAM frames legate sends: an upstream connection's
    /// `upstream_rq_tx_reset` (Envoy counts a local reset of a multiplexed upstream stream).
    resets_sent: Option<legate_stats::Counter>,
    flood: Option<Flood>,
}

impl<T> H2Guard<T> {
    /// `inner` carries the connection from its first byte: the client's preface, which a
    /// server reads and a client writes.
    pub fn new(inner: T, end: End, limits: FloodLimits, stats: Http2Stats) -> Self {
        let (inbound_preface, outbound_preface) = match end {
            End::Server => (CLIENT_PREFACE_LEN, 0),
            End::Client => (0, CLIENT_PREFACE_LEN),
        };
        H2Guard {
            inner,
            inbound: FrameScanner::new(inbound_preface),
            outbound: FrameScanner::new(outbound_preface),
            limits,
            counts: Counts::default(),
            stats,
            resets_sent: None,
            flood: None,
        }
    }

    /// Counts each RST_STREAM frame sent in `counter` too.
    pub fn counting_resets_sent(mut self, counter: legate_stats::Counter) -> Self {
        self.resets_sent = Some(counter);
        self
    }

    fn flood_error(flood: Flood) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, flood.message())
    }

    fn outbound(&mut self, written: &[u8]) {
        let (counts, stats, resets_sent) = (&mut self.counts, &self.stats, &self.resets_sent);
        self.outbound.scan(written, |head, _| {
            match head.kind {
                DATA => counts.outbound_data_frames += 1,
                RST_STREAM => {
                    stats.tx_reset.inc();
                    if let Some(counter) = resets_sent {
                        counter.inc();
                    }
                }
                _ => {}
            }
            true
        });
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for H2Guard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(flood) = this.flood {
            return Poll::Ready(Err(Self::flood_error(flood)));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().get(before..).unwrap_or_default();
        let (counts, limits, flood, stats) = (&mut this.counts, &this.limits, &mut this.flood, &this.stats);
        this.inbound.scan(read, |head, padding| {
            if head.kind == RST_STREAM {
                stats.rx_reset.inc();
            }
            *flood = counts.inbound(head, padding, limits);
            flood.is_none()
        });
        match this.flood {
            Some(flood) => {
                match flood {
                    Flood::Empty => this.stats.inbound_empty_frames_flood.inc(),
                    Flood::Priority => this.stats.inbound_priority_frames_flood.inc(),
                    Flood::WindowUpdate => this.stats.inbound_window_update_frames_flood.inc(),
                }
                tracing::debug!(reason = flood.message(), "closing an HTTP/2 connection: its peer floods it");
                Poll::Ready(Err(Self::flood_error(flood)))
            }
            None => result,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for H2Guard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.outbound(buf.get(..n).unwrap_or_default());
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            let mut left = n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                self.outbound(b.get(..take).unwrap_or_default());
                left -= take;
            }
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

#[cfg(test)]
mod tests {
    use legate_testing::{H2Frame, H2_PREFACE};

    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        H2Frame { kind, flags, stream, payload: payload.to_vec() }.to_bytes()
    }

    fn heads(bytes: &[u8], piece: usize) -> Vec<(FrameHead, u32)> {
        let mut scanner = FrameScanner::new(CLIENT_PREFACE_LEN);
        let mut seen = Vec::new();
        for chunk in bytes.chunks(piece) {
            scanner.scan(chunk, |h, p| {
                seen.push((h, p));
                true
            });
        }
        seen
    }

    #[test]
    fn frames_are_found_whatever_the_pieces() {
        let mut bytes = H2_PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0; 6]));
        bytes.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[3, 0xaa, 0, 0, 0]));
        bytes.extend(frame(DATA, PADDED, 1, &[0]));
        bytes.extend(frame(PRIORITY, 0, 3, &[0; 5]));
        let want = vec![
            (FrameHead { len: 6, kind: 0x4, flags: 0 }, 0),
            (FrameHead { len: 5, kind: HEADERS, flags: END_HEADERS | PADDED }, 4),
            (FrameHead { len: 1, kind: DATA, flags: PADDED }, 1),
            (FrameHead { len: 5, kind: PRIORITY, flags: 0 }, 0),
        ];
        for piece in [1, 2, 7, 9, 10, bytes.len()] {
            assert_eq!(heads(&bytes, piece), want, "in pieces of {piece}");
        }
    }

    fn limits() -> FloodLimits {
        FloodLimits::new(&Http2ProtocolOptions::default())
    }

    fn head(kind: u8, flags: u8, len: u32) -> FrameHead {
        FrameHead { len, kind, flags }
    }

    #[test]
    fn a_second_empty_frame_in_a_row_is_a_flood_by_default() {
        let mut c = Counts::default();
        let l = limits();
        assert_eq!(c.inbound(head(HEADERS, END_HEADERS, 10), 0, &l), None);
        assert_eq!(c.inbound(head(DATA, 0, 0), 0, &l), None);
        // A padded frame with nothing but padding is empty too.
        assert_eq!(c.inbound(head(DATA, PADDED, 4), 4, &l), Some(Flood::Empty));
        let mut c = Counts::default();
        assert_eq!(c.inbound(head(DATA, 0, 0), 0, &l), None);
        assert_eq!(c.inbound(head(DATA, 0, 1), 0, &l), None);
        assert_eq!(c.inbound(head(DATA, 0, 0), 0, &l), None);
        // END_STREAM on an empty frame is what ends a request: not counted.
        assert_eq!(c.inbound(head(DATA, END_STREAM, 0), 0, &l), None);
    }

    #[test]
    fn priority_frames_are_budgeted_per_stream() {
        let mut c = Counts::default();
        let l = limits();
        for _ in 0..100 {
            assert_eq!(c.inbound(head(PRIORITY, 0, 5), 0, &l), None);
        }
        assert_eq!(c.inbound(head(HEADERS, END_HEADERS | END_STREAM, 10), 0, &l), None);
        for _ in 0..100 {
            assert_eq!(c.inbound(head(PRIORITY, 0, 5), 0, &l), None);
        }
        assert_eq!(c.inbound(head(PRIORITY, 0, 5), 0, &l), Some(Flood::Priority));
    }

    #[test]
    fn window_updates_are_budgeted_per_data_frame_sent() {
        let mut c = Counts::default();
        let l = limits();
        assert_eq!(c.inbound(head(WINDOW_UPDATE, 0, 4), 0, &l), None);
        assert_eq!(c.inbound(head(WINDOW_UPDATE, 0, 4), 0, &l), Some(Flood::WindowUpdate));
        let mut c = Counts { outbound_data_frames: 1, ..Counts::default() };
        for _ in 0..21 {
            assert_eq!(c.inbound(head(WINDOW_UPDATE, 0, 4), 0, &l), None);
        }
        assert_eq!(c.inbound(head(WINDOW_UPDATE, 0, 4), 0, &l), Some(Flood::WindowUpdate));
    }
}

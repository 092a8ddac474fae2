//! HTTP/1.1 message bodies, for legate's client and server codecs: the chunked transfer
//! coding (RFC 9112 §7.1) decoded strictly, taking bytes out of a read buffer, and the
//! outgoing side ([`Encoder`]): a body framed as its head announced, gathered for vectored
//! writes.
//!
//! Strict because a proxy that reads a chunk boundary differently from the next hop is a
//! request smuggling vector: a size line must be hex digits (at most 16) ending in CRLF, an
//! extension may not hold control characters, chunk data must be followed by CRLF, and
//! trailer lines must end in CRLF.

use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

/// A chunk size line longer than this is a protocol error.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Trailer fields beyond this many are a protocol error (Envoy's `max_headers_count`).
const MAX_TRAILERS: usize = 100;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then the empty line.
    Trailers,
}

pub enum ChunkStep {
    /// The decoder moved on without a frame (`None`: the body is complete).
    Next(Option<Chunk>),
    /// A frame, and where the decoder is after it.
    Frame(Frame<Bytes>, Option<Chunk>),
    /// More bytes are needed.
    NeedMore,
}

/// One step of chunked decoding over `buf`, which is not empty. `max_trailers` bounds the
/// trailer section's size.
pub fn decode_chunk(chunk: Chunk, buf: &mut BytesMut, max_trailers: usize) -> Result<ChunkStep, &'static str> {
    match chunk {
        Chunk::Size => {
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                return match buf.len() > MAX_CHUNK_LINE {
                    true => Err("chunk size line too long"),
                    false => Ok(ChunkStep::NeedMore),
                };
            };
            if end > MAX_CHUNK_LINE {
                return Err("chunk size line too long");
            }
            let line = buf.get(..end).unwrap_or_default();
            let line = line.strip_suffix(b"\r").ok_or("malformed chunk size")?;
            // The size, then optional whitespace and extensions (ignored).
            let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let rest = line.get(digits..).unwrap_or_default();
            // Whitespace, then nothing or extensions (RFC 9112 §7.1.1, BWS).
            let extensions = rest.iter().position(|&b| b != b' ' && b != b'\t').and_then(|i| rest.get(i..));
            let rest_ok = extensions.is_none_or(|e| e.starts_with(b";") && !e.iter().any(|&b| b.is_ascii_control()));
            if digits == 0 || digits > 16 || !rest_ok {
                return Err("malformed chunk size");
            }
            let mut size = 0u64;
            for &b in line.iter().take(digits) {
                let digit = (b as char).to_digit(16).unwrap_or(0);
                size = (size << 4) | u64::from(digit);
            }
            buf.advance(end + 1);
            Ok(ChunkStep::Next(Some(match size {
                0 => Chunk::Trailers,
                n => Chunk::Data(n),
            })))
        }
        Chunk::Data(left) => {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let left = left - n as u64;
            let next = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
            Ok(ChunkStep::Frame(Frame::data(take(buf, n)), Some(next)))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return match buf.first() {
                    Some(b'\r') | None => Ok(ChunkStep::NeedMore),
                    Some(_) => Err("missing CRLF after chunk data"),
                };
            }
            if !buf.starts_with(b"\r\n") {
                return Err("missing CRLF after chunk data");
            }
            buf.advance(2);
            Ok(ChunkStep::Next(Some(Chunk::Size)))
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(ChunkStep::Next(None));
            }
            if buf.as_ref() == b"\r" {
                return Ok(ChunkStep::NeedMore);
            }
            let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
            let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Complete((len, fields))) => {
                    if has_bare_lf(buf.get(..len).unwrap_or_default()) {
                        return Err("invalid trailers");
                    }
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for field in fields {
                        let name = HeaderName::from_bytes(field.name.as_bytes());
                        let value = HeaderValue::from_bytes(field.value);
                        let (Ok(name), Ok(value)) = (name, value) else { return Err("invalid trailer") };
                        trailers.append(name, value);
                    }
                    (len, trailers)
                }
                Ok(httparse::Status::Partial) if buf.len() < max_trailers => return Ok(ChunkStep::NeedMore),
                Ok(httparse::Status::Partial) | Err(_) => return Err("invalid trailers"),
            };
            buf.advance(len);
            Ok(ChunkStep::Frame(Frame::trailers(trailers), None))
        }
    }
}

/// Whether a line ends with a bare LF (not CRLF).
pub fn has_bare_lf(bytes: &[u8]) -> bool {
    let mut previous = 0;
    for &b in bytes {
        if b == b'\n' && previous != b'\r' {
            return true;
        }
        previous = b;
    }
    false
}

/// Takes the first `n` bytes of the read buffer. A short piece is copied (into this
/// thread's block, see [`shared_copy`]): sharing the read buffer with it would leave the
/// next read to allocate a new buffer while the piece lives on downstream. A long piece is
/// shared.
pub fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    const COPY_BELOW: usize = 4 * 1024;
    if n < COPY_BELOW {
        let piece = shared_copy(buf.get(..n).unwrap_or_default());
        buf.advance(n.min(buf.len()));
        piece
    } else {
        buf.split_to(n.min(buf.len())).freeze()
    }
}

/// A copy of a short piece (a message head, a small body, a generated header value), cut
/// from a per-thread block: a reference count each instead of an allocation each, and the
/// header values sliced from it share the block as they are. A block is freed with the last
/// piece cut from it; pieces live as long as their request.
pub fn shared_copy(bytes: &[u8]) -> Bytes {
    const BLOCK: usize = 8 * 1024;
    /// Full blocks kept to be used again once their pieces are gone. Allocating a block
    /// costs far more than its size suggests: glibc consolidates its small free chunks first
    /// (callgrind: ~7.6k instructions a block, a block every ~40 requests).
    const RETIRED: usize = 8;
    struct Blocks {
        current: BytesMut,
        retired: Vec<BytesMut>,
    }
    thread_local! {
        static BLOCKS: std::cell::RefCell<Blocks> =
            std::cell::RefCell::new(Blocks { current: BytesMut::new(), retired: Vec::new() });
    }
    if bytes.len() > BLOCK / 4 {
        return Bytes::copy_from_slice(bytes);
    }
    BLOCKS.with_borrow_mut(|blocks| {
        if blocks.current.capacity() - blocks.current.len() < bytes.len() {
            // A retired block whose pieces have all been dropped is whole again.
            let reclaimed = blocks.retired.iter_mut().position(|old| old.try_reclaim(BLOCK));
            let next = match reclaimed {
                Some(at) => blocks.retired.swap_remove(at),
                None => BytesMut::with_capacity(BLOCK),
            };
            let full = std::mem::replace(&mut blocks.current, next);
            if blocks.retired.len() == RETIRED {
                blocks.retired.remove(0);
            }
            blocks.retired.push(full);
        }
        blocks.current.extend_from_slice(bytes);
        blocks.current.split().freeze()
    })
}

/// `n` in base `radix` (10 or 16, lower-case), within `buf`.
pub fn digits(mut n: u64, radix: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        if let Some(slot) = buf.get_mut(start) {
            *slot = b"0123456789abcdef".get((n % radix) as usize).copied().unwrap_or(b'0');
        }
        n /= radix;
        if n == 0 || start == 0 {
            break;
        }
    }
    buf.get(start..).unwrap_or_default()
}

/// Trims optional whitespace (SP and HTAB only: RFC 9110 §5.6.3).
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Whether a `transfer-encoding` value's last coding is `chunked`.
pub fn ends_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
    trim_ows(last).eq_ignore_ascii_case(b"chunked")
}

/// The length of an outgoing `content-length` field (one number; a list is not a length).
pub fn length_of(value: &HeaderValue) -> Option<u64> {
    decimal(trim_ows(value.as_bytes()))
}

/// A number in ASCII digits, as a `content-length` holds: no sign, no space, no other
/// character; leading zeros count for nothing (`007` is 7, as Envoy's parsers read it), and
/// at most 19 digits after them (19 digits always fit in a `u64`). Folding the digits costs a
/// few instructions each, where `str::parse` after a UTF-8 check cost ~200 per field
/// (callgrind).
pub fn decimal(digits: &[u8]) -> Option<u64> {
    let significant = match digits {
        [b'0', _, ..] => digits.get(digits.iter().take_while(|&&d| d == b'0').count()..).unwrap_or_default(),
        _ => digits,
    };
    if digits.is_empty() || significant.len() > 19 {
        return None;
    }
    significant.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// Why a `content-length` field is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LengthError {
    /// A value that is not a number (see [`decimal`]).
    Invalid,
    /// A number other than one seen before, in this field or an earlier one.
    Conflicting,
}

/// Folds a `content-length` field into `seen`, the length of the fields before it: every
/// value in it (a list repeats the number) must be that same number.
pub fn fold_length(value: &[u8], seen: &mut Option<u64>) -> Result<(), LengthError> {
    for part in value.split(|&b| b == b',').map(trim_ows) {
        match (decimal(part), *seen) {
            (None, _) => return Err(LengthError::Invalid),
            (Some(n), Some(earlier)) if n != earlier => return Err(LengthError::Conflicting),
            (Some(n), _) => *seen = Some(n),
        }
    }
    Ok(())
}

/// Outgoing body pieces at least this long are written from their own buffer, not copied.
pub const COPY_LIMIT: usize = 4 * 1024;
/// How much of an outgoing body is gathered before it is written.
const GATHER_LIMIT: usize = 64 * 1024;

/// How an outgoing body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow the head: data is an error.
    Empty,
    /// No body is sent (a response to HEAD, 1xx, 204, 304): its data is dropped.
    Dropped,
    /// `content-length`, this many bytes to go.
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Eof,
}

/// An outgoing message: the bytes to write (the head, chunk framing, small pieces) and a
/// large body piece written from its own buffer, so that one vectored write takes them all.
pub struct Encoder {
    pub framing: Framing,
    /// Bytes to write before `data`.
    pub out: BytesMut,
    /// A large body piece, then `tail` (its chunk's CRLF).
    data: Bytes,
    tail: &'static [u8],
    /// The body's end is in `out`.
    pub ended: bool,
}

/// The body does not match its framing: longer or shorter than announced, or data where
/// none may be.
#[derive(Debug)]
pub struct FramingError;

impl Encoder {
    /// `out` holds the encoded head.
    pub fn new(out: BytesMut, framing: Framing) -> Self {
        Encoder { framing, out, data: Bytes::new(), tail: b"", ended: false }
    }

    /// Whether more of the body may be gathered before writing.
    pub fn wants_more(&self) -> bool {
        !self.ended && self.data.is_empty() && self.tail.is_empty() && self.out.len() < GATHER_LIMIT
    }

    /// Everything gathered is written.
    pub fn is_written(&self) -> bool {
        self.out.is_empty() && self.data.is_empty() && self.tail.is_empty()
    }

    /// What is gathered, when it is one piece: the head, with a small body copied in.
    pub fn single_slice(&self) -> Option<&[u8]> {
        (!self.out.is_empty() && self.data.is_empty() && self.tail.is_empty()).then_some(&self.out[..])
    }

    pub fn slices(&self) -> [IoSlice<'_>; 3] {
        [IoSlice::new(&self.out), IoSlice::new(&self.data), IoSlice::new(self.tail)]
    }

    /// Writes what is gathered in one vectored write (a raw socket sends it with a plain
    /// `send` when only one of the pieces holds bytes: `TransportSocket`).
    pub fn poll_write_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        cx: &mut std::task::Context<'_>,
        io: &mut W,
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(io).poll_write_vectored(cx, &self.slices())
    }

    /// `n` bytes of [`Self::slices`] were written.
    pub fn advance(&mut self, n: usize) {
        let from_out = n.min(self.out.len());
        self.out.advance(from_out);
        let from_data = (n - from_out).min(self.data.len());
        self.data.advance(from_data);
        let from_tail = (n - from_out - from_data).min(self.tail.len());
        self.tail = self.tail.get(from_tail..).unwrap_or_default();
    }

    pub fn put_data(&mut self, data: Bytes) -> Result<(), FramingError> {
        if data.is_empty() {
            return Ok(());
        }
        let chunked = match &mut self.framing {
            Framing::Empty => return Err(FramingError),
            Framing::Dropped => return Ok(()),
            Framing::Length(left) => {
                // More than announced: the peer would read the rest as a next message.
                *left = left.checked_sub(data.len() as u64).ok_or(FramingError)?;
                false
            }
            Framing::Eof => false,
            Framing::Chunked => {
                self.out.put_slice(digits(data.len() as u64, 16, &mut [0; 20]));
                self.out.put_slice(b"\r\n");
                true
            }
        };
        if data.len() >= COPY_LIMIT {
            self.data = data;
            self.tail = if chunked { b"\r\n" } else { b"" };
        } else {
            self.out.put_slice(&data);
            if chunked {
                self.out.put_slice(b"\r\n");
            }
        }
        Ok(())
    }

    /// The body's end, with its trailers (sent only with chunked framing).
    pub fn end(&mut self, trailers: Option<HeaderMap>) -> Result<(), FramingError> {
        match self.framing {
            Framing::Length(left) if left > 0 => return Err(FramingError),
            Framing::Chunked => {
                self.out.put_slice(b"0\r\n");
                for (name, value) in trailers.iter().flatten() {
                    put_field(&mut self.out, name.as_str(), value.as_bytes(), false);
                }
                self.out.put_slice(b"\r\n");
            }
            _ => {}
        }
        self.ended = true;
        Ok(())
    }
}

/// `name: value\r\n`, the name as it is or in `X-Title-Case` (`proper_case_words`).
pub fn put_field(out: &mut BytesMut, name: &str, value: &[u8], title_case: bool) {
    if title_case {
        let mut upper = true;
        for b in name.bytes() {
            out.put_u8(if upper { b.to_ascii_uppercase() } else { b });
            upper = b == b'-';
        }
    } else {
        out.put_slice(name.as_bytes());
    }
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_is_digits_only() {
        assert_eq!(decimal(b"100"), Some(100));
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"000"), Some(0));
        assert_eq!(decimal(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
        // Leading zeros, however many, are not digits of the value.
        assert_eq!(decimal(b"00000000000000000000000042"), Some(42));
        assert_eq!(decimal(b"09999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in [&b""[..], b"+1", b"-1", b" 1", b"1 ", b"0x10", b"1e3", b"10000000000000000000", b"00-1"] {
            assert_eq!(decimal(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(length_of(&HeaderValue::from_static(" 42\t")), Some(42));
        assert_eq!(length_of(&HeaderValue::from_static("1, 1")), None);
    }

    #[test]
    fn short_pieces_cut_from_shared_blocks_keep_their_bytes() {
        let mut buf = BytesMut::new();
        let mut pieces = Vec::new();
        // Three blocks' worth of heads, taken from a read buffer refilled each time.
        for i in 0..300u32 {
            let text = format!("GET /{i} HTTP/1.1\r\nhost: a\r\nx-fill: {}\r\n\r\n", "y".repeat(40));
            buf.extend_from_slice(text.as_bytes());
            buf.extend_from_slice(b"next");
            pieces.push((take(&mut buf, text.len()), text));
            assert_eq!(&buf[..], b"next", "the rest of the read stays");
            buf.clear();
        }
        for (piece, text) in &pieces {
            assert_eq!(&piece[..], text.as_bytes());
        }
        // A long piece is its own copy.
        let long = vec![7u8; 3 * 1024];
        assert_eq!(&shared_copy(&long)[..], &long[..]);
    }

    #[test]
    fn a_block_is_used_again_only_once_its_pieces_are_gone() {
        // Many blocks' worth of pieces, one in ten kept: blocks whose pieces were all dropped
        // come back, and no kept piece is ever written over.
        let text = |i: usize| format!("piece {i:08} {}", "x".repeat(i % 90));
        let mut kept = Vec::new();
        for i in 0..20_000 {
            let piece = shared_copy(text(i).as_bytes());
            if i % 10 == 0 {
                kept.push((i, piece));
            }
        }
        for (i, piece) in &kept {
            assert_eq!(&piece[..], text(*i).as_bytes());
        }
        drop(kept);
        let again: Vec<Bytes> = (0..2_000).map(|i| shared_copy(text(i).as_bytes())).collect();
        assert!(again.iter().enumerate().all(|(i, piece)| piece[..] == *text(i).as_bytes()));
    }

    #[test]
    fn bare_line_feeds_are_found() {
        assert!(!has_bare_lf(b"a: b\r\nc: d\r\n\r\n"));
        assert!(has_bare_lf(b"a: b\nc: d\r\n\r\n"));
        assert!(has_bare_lf(b"\n"));
    }

    #[test]
    fn control_characters_in_extensions_are_refused() {
        let mut buf = BytesMut::from(&b"5;a=b\rc\r\n"[..]);
        assert!(decode_chunk(Chunk::Size, &mut buf, 1024).is_err());
        let mut buf = BytesMut::from(&b"5;a=b\r\n"[..]);
        assert!(matches!(decode_chunk(Chunk::Size, &mut buf, 1024), Ok(ChunkStep::Next(Some(Chunk::Data(5))))));
    }

    #[test]
    fn chunk_sizes_are_lower_case_hex_and_lengths_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(digits(0, 16, &mut buf), b"0");
        assert_eq!(digits(0x1a2b, 16, &mut buf), b"1a2b");
        assert_eq!(digits(u64::MAX, 16, &mut buf), b"ffffffffffffffff");
        assert_eq!(digits(u64::MAX, 10, &mut buf), b"18446744073709551615");
        assert_eq!(digits(100, 10, &mut buf), b"100");
    }
}

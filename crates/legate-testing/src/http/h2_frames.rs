//! Raw HTTP/2 frames (RFC 9113 §4.1, §6), for tests that send what no HTTP/2 library would:
//! malformed header blocks, floods, streams reset as soon as they are opened. Frames are
//! written by hand ([`H2Frame`], [`hpack_request`]) and what the server sends back is read
//! into [`H2Event`]s ([`h2_events`]), with the `:status` of each response decoded.
//!
//! Which one to use: [`crate::h2c_get`] and friends for ordinary HTTP/2 requests; these for
//! bytes a client library refuses to produce. The bytes go over a plain socket
//! ([`crate::HttpClient::write_raw`] / [`crate::HttpClient::read_raw`] do).

use std::fmt;

/// The client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub mod frame_type {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Error codes (RFC 9113 §7).
pub mod error_code {
    /// NO_ERROR: a graceful shutdown.
    pub const NO_ERROR: u32 = 0x0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// STREAM_CLOSED: a frame on a half-closed stream.
    pub const STREAM_CLOSED: u32 = 0x5;
    /// CANCEL: the stream is no longer needed.
    pub const CANCEL: u32 = 0x8;
    /// COMPRESSION_ERROR: the HPACK state cannot be kept.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// ENHANCE_YOUR_CALM: the peer is abusive.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// The name of error `code` (RFC 9113 §7), or its number.
pub fn h2_error_name(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).map_or_else(|| format!("0x{code:x}"), |n| n.to_string())
}

/// END_STREAM on DATA and HEADERS; ACK on SETTINGS and PING (same bit).
const END_STREAM: u8 = 0x1;
/// END_HEADERS on HEADERS and CONTINUATION.
const END_HEADERS: u8 = 0x4;

/// One frame to send.
#[derive(Clone, Debug)]
pub struct H2Frame {
    /// A [`frame_type`].
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (31 bits).
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl H2Frame {
    /// SETTINGS with these (identifier, value) parameters.
    pub fn settings(params: &[(u16, u32)]) -> Self {
        let payload = params.iter().flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()[..]].concat());
        H2Frame { kind: frame_type::SETTINGS, flags: 0, stream: 0, payload: payload.collect() }
    }

    /// HEADERS carrying a whole header `block` (END_HEADERS), ending the stream when
    /// `end_stream`.
    pub fn headers(stream: u32, block: Vec<u8>, end_stream: bool) -> Self {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        H2Frame { kind: frame_type::HEADERS, flags, stream, payload: block }
    }

    /// RST_STREAM with error `code`.
    pub fn rst_stream(stream: u32, code: u32) -> Self {
        H2Frame { kind: frame_type::RST_STREAM, flags: 0, stream, payload: code.to_be_bytes().to_vec() }
    }

    /// Appends the frame's bytes (9-byte header, then the payload) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let len = u32::try_from(self.payload.len()).expect("a test frame under 16 MiB");
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&(self.stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.payload.len());
        self.write_to(&mut out);
        out
    }
}

/// An HPACK header block (RFC 7541) for a request, using only the static table: no dynamic
/// table state, so the same block can open any number of streams. `:method`, `:scheme http`
/// and `:path` are indexed when the static table has the value; other values and
/// `:authority` are literals without indexing, not Huffman-coded.
pub fn hpack_request(method: &str, path: &str, authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    // Static table (RFC 7541 Appendix A): 2 `:method GET`, 3 `:method POST`, 4 `:path /`,
    // 6 `:scheme http`; names 1 `:authority`, 2 `:method`, 4 `:path`.
    match method {
        "GET" => block.push(0x80 | 2),
        "POST" => block.push(0x80 | 3),
        other => literal_with_name_index(&mut block, 2, other),
    }
    block.push(0x80 | 6);
    match path {
        "/" => block.push(0x80 | 4),
        other => literal_with_name_index(&mut block, 4, other),
    }
    literal_with_name_index(&mut block, 1, authority);
    block
}

/// "Literal Header Field without Indexing — Indexed Name" (RFC 7541 §6.2.2).
fn literal_with_name_index(block: &mut Vec<u8>, name_index: u8, value: &str) {
    assert!(name_index < 15 && value.len() < 127, "one-byte HPACK prefixes only");
    block.push(name_index);
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

/// A frame the server sent, as a test looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Event {
    /// SETTINGS (or its ACK).
    Settings {
        /// An acknowledgement.
        ack: bool,
    },
    /// A response header block (HEADERS, with any CONTINUATION folded in).
    Headers {
        /// Stream.
        stream: u32,
        /// `:status`, when it could be decoded (`None` for trailers, or when the block used
        /// HPACK state this reader does not keep; see [`h2_events`]).
        status: Option<u16>,
        /// END_STREAM.
        end_stream: bool,
    },
    /// DATA.
    Data {
        /// Stream.
        stream: u32,
        /// Payload length.
        len: usize,
        /// END_STREAM.
        end_stream: bool,
    },
    /// RST_STREAM.
    RstStream {
        /// Stream.
        stream: u32,
        /// Error code.
        code: u32,
    },
    /// GOAWAY.
    GoAway {
        /// Last stream the server processed.
        last_stream: u32,
        /// Error code.
        code: u32,
    },
    /// PING (or its ACK).
    Ping {
        /// An acknowledgement.
        ack: bool,
    },
    /// WINDOW_UPDATE.
    WindowUpdate {
        /// Stream (0: the connection).
        stream: u32,
    },
    /// Any other frame type.
    Other {
        /// Frame type.
        kind: u8,
        /// Stream.
        stream: u32,
    },
}

impl fmt::Display for H2Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H2Event::Settings { ack } => f.write_str(if *ack { "SETTINGS-ACK" } else { "SETTINGS" }),
            H2Event::Headers { stream, status: Some(s), .. } => write!(f, "HEADERS[{stream}]:{s}"),
            H2Event::Headers { stream, status: None, .. } => write!(f, "HEADERS[{stream}]"),
            H2Event::Data { stream, len, .. } => write!(f, "DATA[{stream}]:{len}"),
            H2Event::RstStream { stream, code } => write!(f, "RST[{stream}]:{}", h2_error_name(*code)),
            H2Event::GoAway { last_stream, code } => write!(f, "GOAWAY[{last_stream}]:{}", h2_error_name(*code)),
            H2Event::Ping { ack } => f.write_str(if *ack { "PING-ACK" } else { "PING" }),
            H2Event::WindowUpdate { stream } => write!(f, "WINDOW_UPDATE[{stream}]"),
            H2Event::Other { kind, stream } => write!(f, "FRAME(0x{kind:x})[{stream}]"),
        }
    }
}

/// The frames in `bytes`, as sent by a server (no preface); a truncated last frame is left
/// out.
///
/// Response header blocks go through a small HPACK reader that keeps the dynamic table's
/// `:status` entries, enough for the first responses of a connection: once the table could
/// have evicted an entry, statuses read `None` rather than a wrong code.
pub fn h2_events(bytes: &[u8]) -> Vec<H2Event> {
    let mut events = Vec::new();
    let mut hpack = StatusReader::default();
    // A header block split over HEADERS + CONTINUATION: (stream, end_stream, fragments).
    let mut open_block: Option<(u32, bool, Vec<u8>)> = None;
    let mut rest = bytes;
    while let Some((ReadFrame { kind, flags, stream, payload }, next)) = split_frame(rest) {
        rest = next;
        let event = match kind {
            frame_type::SETTINGS => H2Event::Settings { ack: flags & END_STREAM != 0 },
            frame_type::PING => H2Event::Ping { ack: flags & END_STREAM != 0 },
            frame_type::DATA => {
                H2Event::Data { stream, len: unpadded(flags, payload).len(), end_stream: flags & END_STREAM != 0 }
            }
            frame_type::HEADERS | frame_type::CONTINUATION => {
                let fragment = if kind == frame_type::HEADERS { headers_fragment(flags, payload) } else { payload };
                let (stream, end_stream, mut block) = match open_block.take() {
                    Some(open) if kind == frame_type::CONTINUATION => open,
                    _ => (stream, flags & END_STREAM != 0, Vec::new()),
                };
                block.extend_from_slice(fragment);
                if flags & END_HEADERS == 0 {
                    open_block = Some((stream, end_stream, block));
                    continue;
                }
                H2Event::Headers { stream, status: hpack.status(&block), end_stream }
            }
            frame_type::RST_STREAM => H2Event::RstStream { stream, code: be_u32(payload, 0).unwrap_or(u32::MAX) },
            frame_type::GOAWAY => H2Event::GoAway {
                last_stream: be_u32(payload, 0).unwrap_or(0) & 0x7fff_ffff,
                code: be_u32(payload, 4).unwrap_or(u32::MAX),
            },
            frame_type::WINDOW_UPDATE => H2Event::WindowUpdate { stream },
            kind => H2Event::Other { kind, stream },
        };
        events.push(event);
    }
    events
}

/// One frame as read, borrowing its payload.
struct ReadFrame<'a> {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &'a [u8],
}

/// The first whole frame in `bytes` and the bytes after it.
fn split_frame(bytes: &[u8]) -> Option<(ReadFrame<'_>, &[u8])> {
    let header = bytes.get(..9)?;
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let payload = bytes.get(9..9 + len)?;
    let stream = be_u32(header, 5)? & 0x7fff_ffff;
    Some((ReadFrame { kind: header[3], flags: header[4], stream, payload }, &bytes[9 + len..]))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// A DATA or HEADERS payload without its padding (PADDED flag, RFC 9113 §6.1).
fn unpadded(flags: u8, payload: &[u8]) -> &[u8] {
    const PADDED: u8 = 0x8;
    if flags & PADDED == 0 {
        return payload;
    }
    let pad = payload.first().map_or(0, |p| usize::from(*p));
    payload.get(1..payload.len().saturating_sub(pad)).unwrap_or_default()
}

/// The header block fragment of a HEADERS payload (without padding and priority fields).
fn headers_fragment(flags: u8, payload: &[u8]) -> &[u8] {
    const PRIORITY: u8 = 0x20;
    let fragment = unpadded(flags, payload);
    if flags & PRIORITY != 0 {
        fragment.get(5..).unwrap_or_default()
    } else {
        fragment
    }
}

/// Reads `:status` out of response header blocks (RFC 7541), keeping of the dynamic table only
/// which entries are `:status` and how large the table may have grown.
#[derive(Default)]
struct StatusReader {
    /// Newest first: each entry and an upper bound of its name's length.
    table: Vec<(Entry, usize)>,
    /// An upper bound of the table's size (RFC 7541 §4.1): Huffman-coded strings are counted at
    /// their longest decoded length.
    max_size: usize,
    /// The table may have evicted an entry: indices into it can no longer be trusted.
    lost: bool,
}

/// A table entry, as far as `:status` goes.
#[derive(Clone, Copy)]
enum Entry {
    /// `:status` with this code.
    Status(u16),
    /// `:status` with a value that is not a code (or could not be decoded).
    StatusName,
    /// Any other field.
    Other,
}

/// RFC 7541 §4.2: the initial SETTINGS_HEADER_TABLE_SIZE.
const HPACK_TABLE_SIZE: usize = 4096;
/// RFC 7541 Appendix A: the static table's size; no name in it is longer than 32 bytes.
const STATIC_ENTRIES: usize = 61;
const STATIC_NAME_MAX: usize = 32;

impl StatusReader {
    /// The first `:status` of `block`.
    fn status(&mut self, block: &[u8]) -> Option<u16> {
        let mut status = None;
        let mut rest = block;
        while let Some(&first) = rest.first() {
            let entry = if first & 0x80 != 0 {
                // Indexed Header Field (§6.1).
                let (index, next) = integer(rest, 7)?;
                rest = next;
                self.lookup(index)?.0
            } else if first & 0xe0 == 0x20 {
                // Dynamic Table Size Update (§6.3): the table may have shrunk.
                let (_, next) = integer(rest, 5)?;
                rest = next;
                self.lost = true;
                continue;
            } else {
                // Literal Header Field with Incremental Indexing, without Indexing, or Never
                // Indexed (§6.2).
                let incremental = first & 0x40 != 0;
                let (name_index, next) = integer(rest, if incremental { 6 } else { 4 })?;
                let (is_status, name_max, next) = if name_index == 0 {
                    let (name, next) = string(next)?;
                    (name.text.as_deref() == Some(":status"), name.max_len, next)
                } else {
                    let (entry, name_max) = self.lookup(name_index)?;
                    (!matches!(entry, Entry::Other), name_max, next)
                };
                let (value, next) = string(next)?;
                rest = next;
                let entry = match value.text.as_deref().map(str::parse) {
                    _ if !is_status => Entry::Other,
                    Some(Ok(code)) => Entry::Status(code),
                    _ => Entry::StatusName,
                };
                if incremental {
                    self.insert(entry, name_max, value.max_len);
                }
                entry
            };
            if let (None, Entry::Status(code)) = (status, entry) {
                status = Some(code);
            }
        }
        status
    }

    /// The entry at `index` and an upper bound of its name's length.
    fn lookup(&self, index: usize) -> Option<(Entry, usize)> {
        // 8..=14 are `:status` 200, 204, 206, 304, 400, 404, 500.
        const STATIC_STATUS: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
        match index {
            8..=14 => Some((Entry::Status(STATIC_STATUS[index - 8]), STATIC_NAME_MAX)),
            1..=STATIC_ENTRIES => Some((Entry::Other, STATIC_NAME_MAX)),
            _ if self.lost => None,
            _ => self.table.get(index.checked_sub(STATIC_ENTRIES + 1)?).copied(),
        }
    }

    fn insert(&mut self, entry: Entry, name_max: usize, value_max: usize) {
        self.max_size += name_max + value_max + 32;
        if self.max_size > HPACK_TABLE_SIZE {
            self.lost = true;
        }
        self.table.insert(0, (entry, name_max));
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1) and the bytes after it.
fn integer(bytes: &[u8], n: u32) -> Option<(usize, &[u8])> {
    let mask = (1u8 << n) - 1;
    let first = bytes.first()? & mask;
    let mut value = usize::from(first);
    let mut rest = &bytes[1..];
    if first < mask {
        return Some((value, rest));
    }
    let mut shift = 0;
    loop {
        let (&b, next) = rest.split_first()?;
        rest = next;
        value = value.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
        shift += 7;
        if b & 0x80 == 0 || shift > 28 {
            return Some((value, rest));
        }
    }
}

/// A string literal: its text when it could be decoded, and the longest it can be decoded to.
struct Literal {
    text: Option<String>,
    max_len: usize,
}

/// An HPACK string literal (RFC 7541 §5.2) and the bytes after it.
fn string(bytes: &[u8]) -> Option<(Literal, &[u8])> {
    let huffman = bytes.first()? & 0x80 != 0;
    let (len, rest) = integer(bytes, 7)?;
    let raw = rest.get(..len)?;
    let literal = if huffman {
        // The shortest Huffman code is 5 bits.
        Literal { text: huffman_digits(raw), max_len: len * 8 / 5 }
    } else {
        Literal { text: Some(String::from_utf8_lossy(raw).into_owned()), max_len: len }
    };
    Some((literal, &rest[len..]))
}

/// Decodes a Huffman-coded string made only of the digits 0-9 (a `:status` value), `None` for
/// anything else. RFC 7541 Appendix B: '0', '1', '2' are the 5-bit codes 0b00000..=0b00010,
/// '3'..='9' the 6-bit codes 0b011001..=0b011111; the end is padded with 1 bits.
fn huffman_digits(raw: &[u8]) -> Option<String> {
    let bits: Vec<bool> = raw.iter().flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1)).collect();
    let value = |bits: &[bool]| bits.iter().fold(0u8, |v, b| v << 1 | u8::from(*b));
    let mut out = String::new();
    let mut at = 0;
    while at < bits.len() {
        let left = &bits[at..];
        if left.len() < 8 && left.iter().all(|b| *b) {
            break;
        }
        let five = left.get(..5).map(value);
        let six = left.get(..6).map(value);
        match (five, six) {
            (Some(c @ 0..=2), _) => {
                out.push(char::from(b'0' + c));
                at += 5;
            }
            (_, Some(c @ 0b011001..=0b011111)) => {
                out.push(char::from(b'3' + (c - 0b011001)));
                at += 6;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_reader() {
        let mut bytes = H2Frame::settings(&[(4, 65535)]).to_bytes();
        bytes.extend(H2Frame::rst_stream(3, error_code::CANCEL).to_bytes());
        bytes.extend(
            H2Frame { kind: frame_type::GOAWAY, flags: 0, stream: 0, payload: vec![0, 0, 0, 5, 0, 0, 0, 1] }.to_bytes(),
        );
        bytes.extend_from_slice(&[0, 0, 9]); // a truncated frame
        let events: Vec<String> = h2_events(&bytes).iter().map(ToString::to_string).collect();
        assert_eq!(events, ["SETTINGS", "RST[3]:CANCEL", "GOAWAY[5]:PROTOCOL_ERROR"]);
    }

    #[test]
    fn statuses_static_literal_huffman_and_dynamic() {
        // 0x88: static `:status 200`. 0x48: literal with incremental indexing, name 8, and a
        // Huffman-coded "431": 011010 011001 00001, padded with ones to 3 bytes.
        let huff_431 = {
            let bits = "011010011001000011111111";
            (0..3).map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap()).collect::<Vec<u8>>()
        };
        let mut first = vec![0x48, 0x80 | 3];
        first.extend_from_slice(&huff_431);
        first.extend_from_slice(&[0x40, 1, b'x', 1, b'y']); // another dynamic entry
        let mut bytes = H2Frame::headers(1, vec![0x88], true).to_bytes();
        bytes.extend(H2Frame::headers(3, first, true).to_bytes());
        // Index 63: the `:status 431` entry, now second in the dynamic table.
        bytes.extend(H2Frame::headers(5, vec![0x80 | 63], false).to_bytes());
        let events: Vec<String> = h2_events(&bytes).iter().map(ToString::to_string).collect();
        assert_eq!(events, ["HEADERS[1]:200", "HEADERS[3]:431", "HEADERS[5]:431"]);
    }

    #[test]
    fn request_block_uses_the_static_table() {
        assert_eq!(hpack_request("GET", "/", "a"), [0x82, 0x86, 0x84, 0x01, 0x01, b'a']);
    }
}

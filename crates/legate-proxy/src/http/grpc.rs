//! gRPC's length-prefixed message framing (a flag byte — compressed, or gRPC-Web's trailers
//! frame —, a big-endian length, the message), for what legate sends and reads itself: health
//! checks, tracer exports, authorization checks, gRPC-Web.

use bytes::Bytes;

/// One frame holding `message`.
pub fn frame(flag: u8, message: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(flag);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// The message of a body holding exactly one uncompressed frame.
pub fn message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..)?;
    (flag == 0 && message.len() == len).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_odd_bodies_are_refused() {
        let framed = frame(0, b"ping");
        assert_eq!(framed.as_ref(), b"\0\0\0\0\x04ping".as_slice());
        assert_eq!(message(&framed), Some(&b"ping"[..]));
        assert_eq!(message(&frame(1, b"ping")), None, "compressed");
        assert_eq!(message(b"\0\0\0\0\x05ping"), None, "short");
        assert_eq!(message(b"\0\0"), None);
    }
}

//! Sends to several raw sockets in one system call (io_uring, `legate-uring`), for a worker
//! that writes many connections at the end of a turn of its event loop.
//!
//! Each worker has its own ring, made at its first batch. Where io_uring is missing (an old
//! kernel, a sandbox that refuses it) or its ring fails, every send is left to the caller,
//! which then writes as it would have anyway: one `send` per socket.

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd};

use legate_uring::{Sends, Sent};
use tokio::net::TcpStream;

/// Submissions per system call; a longer batch takes several.
const RING_ENTRIES: u32 = 256;

enum Ring {
    Untried,
    Ready(Box<Sends>),
    Unavailable,
}

thread_local! {
    static RING: RefCell<Ring> = const { RefCell::new(Ring::Untried) };
}

/// Sends each buffer on its socket without blocking; `out` gets one [`Sent`] per send, in
/// order (`Sent::NotTried` for all of them when this thread has no ring).
///
/// A send here bypasses tokio: a socket left with room keeps its write readiness, and one
/// found full (`WouldBlock`) is the caller's to write again through tokio, which then clears
/// the readiness and waits for room.
pub fn send_all(sends: &[(&TcpStream, &[u8])], out: &mut Vec<Sent>) {
    out.clear();
    let _ = RING.try_with(|ring| {
        let mut ring = ring.borrow_mut();
        if matches!(*ring, Ring::Untried) {
            *ring = match Sends::new(RING_ENTRIES) {
                Ok(sends) => Ring::Ready(Box::new(sends)),
                Err(e) => {
                    tracing::debug!(error = %e, "io_uring unavailable: upstream writes go one system call each");
                    Ring::Unavailable
                }
            };
        }
        if let Ring::Ready(ring_sends) = &mut *ring {
            let fds: Vec<(BorrowedFd<'_>, &[u8])> = sends.iter().map(|(tcp, bytes)| (tcp.as_fd(), *bytes)).collect();
            ring_sends.send(&fds, out);
            if ring_sends.is_broken() {
                tracing::warn!("io_uring failed: upstream writes go one system call each from now on");
                *ring = Ring::Unavailable;
            }
        }
    });
    out.resize_with(sends.len(), || Sent::NotTried);
}

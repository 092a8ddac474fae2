//! Many sockets' sends in one system call, through io_uring.
//!
//! A worker that has requests for several upstream connections writes them at the end of its
//! turn. One `send` each woke an upstream sharing the worker's CPU on every call, and the
//! kernel switched to it at the return of that call: the upstream answered one request at a
//! time, with two context switches each. Submitted together, the sends run inside one
//! `io_uring_enter`, and the upstream, woken once, finds them all.
//!
//! This crate is where legate's data plane uses `unsafe`: the kernel reads each buffer
//! between submission and completion, so [`Sends::send`] returns only once every send it
//! submitted has completed (they are non-blocking: the kernel completes them during the
//! submission itself), and destroys the ring rather than leave an entry that points at a
//! caller's buffer unsubmitted.

#![deny(unsafe_op_in_unsafe_fn)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{opcode, types, IoUring, Probe};

/// `IORING_ENTER_GETEVENTS`: wait for completions.
const ENTER_GETEVENTS: u32 = 1;

/// A thread's ring for batched sends.
pub struct Sends {
    /// `None` once the ring failed: every send is then left to the caller.
    ring: Option<IoUring>,
    entries: usize,
}

/// What became of one send of a batch.
#[derive(Debug)]
pub enum Sent {
    /// Bytes sent (maybe fewer than given).
    Bytes(usize),
    /// The send's error; `WouldBlock` when the socket's buffer is full.
    Failed(io::Error),
    /// Not sent by the ring (none, or one that refused the operation): the caller sends it
    /// itself.
    NotTried,
}

impl Sends {
    /// A ring of `entries` submissions (a batch larger than that goes in several calls).
    ///
    /// `Err` where the kernel's io_uring cannot send: io_uring came in Linux 5.1 and its
    /// `send` in 5.6 (with the probe that says so); on a kernel between the two, every send
    /// would complete with `EINVAL`, which the caller must not take for its socket's error.
    pub fn new(entries: u32) -> io::Result<Sends> {
        let ring = IoUring::new(entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::Send::CODE) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring without IORING_OP_SEND"));
        }
        let entries = ring.params().sq_entries() as usize;
        Ok(Sends { ring: Some(ring), entries })
    }

    /// Sends each buffer on its socket without blocking, `entries` at a time per system
    /// call; `out` receives one [`Sent`] per send, in order.
    pub fn send(&mut self, sends: &[(BorrowedFd<'_>, &[u8])], out: &mut Vec<Sent>) {
        out.clear();
        for batch in sends.chunks(self.entries.max(1)) {
            let first = out.len();
            out.extend(batch.iter().map(|_| Sent::NotTried));
            if let Some(ring) = self.ring.as_mut() {
                if submit(ring, batch, &mut out[first..]).is_err() {
                    // Entries the kernel did not take point at buffers that are about to be
                    // given back: the ring goes, with them, before this returns.
                    self.ring = None;
                }
            }
        }
    }

    /// The ring failed and was dropped: every send is left to the caller.
    pub fn is_broken(&self) -> bool {
        self.ring.is_none()
    }
}

/// One batch no larger than the ring. `Err` when some entries were not taken by the kernel,
/// or when the ring refused one: the ring must then be dropped.
fn submit(ring: &mut IoUring, batch: &[(BorrowedFd<'_>, &[u8])], out: &mut [Sent]) -> Result<(), ()> {
    {
        let mut queue = ring.submission();
        for (i, (fd, bytes)) in batch.iter().enumerate() {
            // A send is at most `u32::MAX` bytes; the rest is the caller's next write.
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            let entry = opcode::Send::new(types::Fd(fd.as_raw_fd()), bytes.as_ptr(), len)
                .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                .build()
                .user_data(i as u64);
            // SAFETY: the buffer and the socket are borrowed for this whole call, and this
            // call returns only after the send has completed (below) or after the ring, with
            // the entry still in its queue, has been dropped (the caller's `Err` path).
            if unsafe { queue.push(&entry) }.is_err() {
                return Err(());
            }
        }
    }
    let pushed = batch.len();
    // One call submits them all; each completes during the submission (`MSG_DONTWAIT`: a full
    // socket completes with `EAGAIN` rather than waiting).
    let taken = loop {
        match ring.submit_and_wait(pushed) {
            Ok(taken) => break taken,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Nothing was taken: the entries are dropped with the ring.
            Err(_) => return Err(()),
        }
    };
    let mut completed = 0;
    let mut refused = false;
    while completed < taken {
        for cqe in ring.completion() {
            completed += 1;
            let Some(slot) = usize::try_from(cqe.user_data()).ok().and_then(|i| out.get_mut(i)) else { continue };
            match sent(cqe.result()) {
                Some(sent) => *slot = sent,
                // Left `NotTried`: the caller's own send says what its socket says.
                None => refused = true,
            }
        }
        if completed < taken {
            wait(ring, taken - completed);
        }
    }
    if taken < pushed || refused {
        return Err(());
    }
    Ok(())
}

/// What a send's completion says, or `None` when io_uring refused the operation itself rather
/// than the socket the send: `send(2)` on a connected TCP socket with these flags returns none
/// of these errors, so they come from the ring (an operation or a flag this kernel's io_uring
/// does not know), and the ring is not to be used again.
fn sent(result: i32) -> Option<Sent> {
    match result {
        n if n >= 0 => Some(Sent::Bytes(n as usize)),
        n if matches!(n.wrapping_neg(), libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => None,
        n => Some(Sent::Failed(io::Error::from_raw_os_error(n.wrapping_neg()))),
    }
}

/// Waits for `want` completions of sends already taken by the kernel, submitting nothing.
fn wait(ring: &IoUring, want: usize) {
    loop {
        // SAFETY: no submission (`to_submit` 0) and no argument: only a wait.
        match unsafe { ring.submitter().enter::<libc::sigset_t>(0, want as u32, ENTER_GETEVENTS, None) } {
            Ok(_) => return,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            // The kernel may still be reading the callers' buffers: nothing safe is left to do.
            Err(e) => {
                eprintln!("legate: waiting for io_uring sends failed: {e}");
                std::process::abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        client.set_nonblocking(true).expect("nonblocking");
        (client, server)
    }

    fn ring(entries: u32) -> Option<Sends> {
        // A kernel or sandbox without io_uring: nothing to test here (legate then sends one
        // socket at a time).
        Sends::new(entries).ok()
    }

    #[test]
    fn each_socket_receives_its_own_bytes_and_batches_larger_than_the_ring_are_split() {
        let Some(mut sends) = ring(2) else { return };
        let pairs: Vec<_> = (0..5).map(|_| pair()).collect();
        let messages: Vec<Vec<u8>> = (0..5).map(|i| format!("request {i}\r\n").into_bytes()).collect();
        let batch: Vec<_> = pairs.iter().zip(&messages).map(|((c, _), m)| (c.as_fd(), &m[..])).collect();
        let mut out = Vec::new();
        sends.send(&batch, &mut out);
        assert_eq!(out.len(), 5);
        for ((sent, (_, mut server)), message) in out.iter().zip(pairs).zip(&messages) {
            assert!(matches!(sent, Sent::Bytes(n) if *n == message.len()), "{sent:?}");
            let mut got = vec![0; message.len()];
            server.read_exact(&mut got).expect("read");
            assert_eq!(&got, message);
        }
        assert!(!sends.is_broken());
    }

    #[test]
    fn a_full_socket_says_would_block_and_a_closed_one_says_why() {
        let Some(mut sends) = ring(8) else { return };
        let (full, _full_peer) = pair();
        // Fill the socket's buffers: the peer never reads.
        let chunk = vec![7u8; 1 << 16];
        let mut out = Vec::new();
        loop {
            sends.send(&[(full.as_fd(), &chunk[..])], &mut out);
            match &out[0] {
                Sent::Bytes(_) => continue,
                Sent::Failed(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
                Sent::NotTried => panic!("the ring failed"),
            }
        }
        let (reset, peer) = pair();
        socket_linger_zero_close(peer);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut errors = Vec::new();
        for _ in 0..2 {
            sends.send(&[(reset.as_fd(), b"x")], &mut out);
            if let Sent::Failed(e) = &out[0] {
                errors.push(e.kind());
            }
        }
        assert!(
            errors.iter().any(|k| matches!(k, io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)),
            "{errors:?}"
        );
    }

    #[test]
    fn a_send_the_ring_refuses_is_left_to_the_caller() {
        assert!(matches!(sent(12), Some(Sent::Bytes(12))));
        assert!(matches!(sent(-libc::EAGAIN), Some(Sent::Failed(e)) if e.kind() == io::ErrorKind::WouldBlock));
        assert!(matches!(sent(-libc::EPIPE), Some(Sent::Failed(e)) if e.kind() == io::ErrorKind::BrokenPipe));
        for refused in [libc::EINVAL, libc::EOPNOTSUPP, libc::ENOSYS] {
            assert!(sent(-refused).is_none(), "{refused}");
        }
    }

    /// Closes with an RST (SO_LINGER 0).
    fn socket_linger_zero_close(stream: TcpStream) {
        socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO)).expect("SO_LINGER");
        drop(stream);
    }
}

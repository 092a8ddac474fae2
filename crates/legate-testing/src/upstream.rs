//! Upstream servers on `127.0.0.1:0`, one thread per connection. Some behave (echo, tag), some
//! misbehave on purpose (never accept, flood a reader that does not read). Each counts what it
//! accepted so a test can say which backend a connection reached.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::pattern::PatternWriter;

/// How long an upstream connection thread waits for its peer before giving up: long enough
/// for any test, short enough that a leaked thread does not outlive the test binary by much.
const UPSTREAM_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP server running `handler` on each accepted connection, on its own thread.
/// Dropping it stops accepting; connections in progress finish on their own.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TcpServer {
    /// Binds `127.0.0.1:0` and accepts on a thread, running `handler` per connection.
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let (acc, st) = (accepted.clone(), stop.clone());
        thread::Builder::new()
            .name(format!("upstream-{addr}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    acc.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_read_timeout(Some(UPSTREAM_IO_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(UPSTREAM_IO_TIMEOUT));
                    let h = handler.clone();
                    thread::spawn(move || h(stream));
                }
            })
            .expect("spawn upstream accept thread");
        Self { addr, accepted, stop }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Echoes every byte back; on the client's FIN it finishes writing and sends its own FIN
/// (half-close kept, as a well-behaved TCP peer does).
pub struct TcpEchoServer;

impl TcpEchoServer {
    /// Starts an echo server.
    pub fn start() -> TcpServer {
        TcpServer::start(|mut stream| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        let _ = stream.shutdown(Shutdown::Write);
                        return;
                    }
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })
    }
}

/// Writes its tag and closes: tells a client which backend it reached.
pub struct TagServer;

impl TagServer {
    /// Starts a server writing `tag`.
    pub fn start(tag: &str) -> TcpServer {
        let tag = tag.as_bytes().to_vec();
        TcpServer::start(move |mut stream| {
            let _ = stream.write_all(&tag);
            let _ = stream.shutdown(Shutdown::Write);
            // Drain until the peer closes so the close is a FIN, not a reset of unread data.
            let _ = io::copy(&mut stream, &mut io::sink());
        })
    }
}

/// Reads until the client's FIN, then answers `received <n> bytes` and closes: the reply can
/// only arrive if the proxy forwarded the half-close and kept the other direction open.
pub struct EofReplyServer;

impl EofReplyServer {
    /// Starts the server.
    pub fn start() -> TcpServer {
        TcpServer::start(|mut stream| {
            let n = io::copy(&mut stream, &mut io::sink()).unwrap_or(u64::MAX);
            let _ = stream.write_all(format!("received {n} bytes").as_bytes());
            let _ = stream.shutdown(Shutdown::Write);
        })
    }
}

/// Sends `total` bytes of the [`PatternWriter`] stream with `seed` on each connection, through
/// a small send buffer so that the bytes it has written track what the proxy has taken.
#[derive(Debug)]
pub struct BulkSender {
    server: TcpServer,
    written: Arc<AtomicU64>,
}

impl BulkSender {
    /// Starts sending `total` bytes per connection.
    pub fn start(total: u64, seed: u64) -> Self {
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        let server = TcpServer::start(move |stream| {
            let socket = Socket::from(stream);
            let _ = socket.set_send_buffer_size(64 * 1024);
            let mut stream: TcpStream = socket.into();
            let mut pattern = PatternWriter::new(seed);
            let mut buf = vec![0u8; 16 * 1024];
            let mut left = total;
            while left > 0 {
                let n = (buf.len() as u64).min(left) as usize;
                pattern.fill(&mut buf[..n]);
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
                w.fetch_add(n as u64, Ordering::SeqCst);
                left -= n as u64;
            }
            let _ = stream.shutdown(Shutdown::Write);
            let _ = io::copy(&mut stream, &mut io::sink());
        });
        Self { server, written }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Bytes written into the socket so far (all connections).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

/// An address where a TCP connect hangs (no SYN-ACK), on loopback.
///
/// A listening socket with backlog 0 that never accepts, whose accept queue is then filled by
/// our own connections: Linux drops a SYN while the accept queue is full, so the next client's
/// connect neither succeeds nor is refused — it times out. That is what `connect_timeout` needs,
/// without routing to a non-loopback blackhole address.
#[derive(Debug)]
pub struct BlackholeServer {
    addr: SocketAddr,
    _listener: Socket,
    _fillers: Vec<Socket>,
}

impl BlackholeServer {
    /// Binds, listens with backlog 0, fills the accept queue; panics if connects do not start to hang.
    pub fn start() -> Self {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        listener.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0)))).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..32 {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            match s.connect_timeout(&SockAddr::from(addr), Duration::from_millis(300)) {
                Ok(()) => fillers.push(s),
                Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                    return Self { addr, _listener: listener, _fillers: fillers };
                }
                Err(e) => panic!("blackhole: filler connect to {addr}: {e}"),
            }
        }
        panic!("blackhole: connects to {addr} still succeed after filling its accept queue with 32 connections");
    }

    /// Where connects hang.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blackhole_connect_hangs_and_echo_echoes() {
        let hole = BlackholeServer::start();
        let err = TcpStream::connect_timeout(&hole.addr(), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock), "{err}");

        let echo = TcpEchoServer::start();
        let mut c = crate::connect(echo.addr());
        crate::echo_roundtrip(&mut c, b"ping");
        c.shutdown(Shutdown::Write).unwrap();
        assert!(crate::read_to_end(&mut c).is_empty());
        assert_eq!(echo.accepted(), 1);
    }
}

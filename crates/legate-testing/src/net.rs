//! Client-side socket helpers: bounded connects and reads, and the assertions tests make about
//! a connection ("it echoes", "it was closed", "the port refuses").

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Bound on every connect, read and write of a test socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn connect_stream(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects to `addr` with [`IO_TIMEOUT`] on connect, reads and writes; panics on failure.
pub fn connect(addr: SocketAddr) -> TcpStream {
    connect_stream(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Connects from a chosen local address (source IP and/or port), as `filter_chain_match`
/// `source_ports` / `source_prefix_ranges` tests need.
pub fn connect_from(local: SocketAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(remote), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(local))?;
    socket.connect_timeout(&SockAddr::from(remote), IO_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes `msg` and asserts the same bytes come back (through an echo upstream).
pub fn echo_roundtrip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap_or_else(|e| panic!("write {:?}: {e}", String::from_utf8_lossy(msg)));
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got).unwrap_or_else(|e| panic!("read echo of {:?}: {e}", String::from_utf8_lossy(msg)));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(msg), "echo mismatch");
}

/// Reads until the peer closes; a reset after data counts as the end too. Panics if the
/// connection is still open after [`IO_TIMEOUT`].
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return data,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                return data
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => panic!(
                "connection still open after {IO_TIMEOUT:?} (received {} bytes: {:?})",
                data.len(),
                String::from_utf8_lossy(&data[..data.len().min(200)])
            ),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Asserts the peer closes (FIN or RST) within [`IO_TIMEOUT`] without sending anything.
pub fn expect_closed(stream: &mut TcpStream, what: &str) {
    let data = read_to_end(stream);
    assert!(data.is_empty(), "{what}: expected a close without data, got {:?}", String::from_utf8_lossy(&data));
}

/// Whether a connect to `addr` is refused (nothing listening). Any other outcome — accepted,
/// timed out — is "not refused".
pub fn is_refused(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

/// Whether something is bound to `addr` (a bind fails with `AddrInUse`).
pub fn port_in_use(addr: SocketAddr) -> bool {
    matches!(TcpListener::bind(addr), Err(e) if e.kind() == io::ErrorKind::AddrInUse)
}

/// A loopback address where nothing listens: bound to learn a free port, then released.
/// Connects to it are refused (unless another process grabs the port meanwhile, which the
/// kernel's ephemeral-port rotation makes unlikely within a test).
#[derive(Debug)]
pub struct ClosedPort {
    addr: SocketAddr,
}

impl ClosedPort {
    /// Binds to learn a free port, releases it.
    pub fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        drop(listener);
        Self { addr }
    }

    /// The address nothing listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A currently free port on 127.0.0.1 (see [`ClosedPort`] for the caveat).
pub fn free_port() -> u16 {
    ClosedPort::new().addr().port()
}

/// Connects with a small, fixed receive buffer (set before connect, which also turns off the
/// kernel's receive-window autotuning): a client that does not read then holds at most about
/// `bytes` in its kernel, so back-pressure reaches the proxy quickly.
pub fn connect_with_recv_buffer(remote: SocketAddr, bytes: usize) -> TcpStream {
    let socket = Socket::new(Domain::for_address(remote), Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    socket.connect_timeout(&SockAddr::from(remote), IO_TIMEOUT).unwrap_or_else(|e| panic!("connect to {remote}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

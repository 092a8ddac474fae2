//! Listen sockets: one per worker with `SO_REUSEPORT` (Envoy's default), so the kernel
//! spreads new connections across workers.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds the sockets for `workers` workers on `address`. Port 0 is resolved by the first
/// socket and the others bind to the same port.
pub fn bind(
    address: SocketAddr,
    workers: usize,
    reuse_port: bool,
    backlog: u32,
    ipv4_compat: bool,
) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(address, reuse_port, backlog, ipv4_compat)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        let socket = if reuse_port { bind_one(bound, true, backlog, ipv4_compat)? } else { sockets[0].try_clone()? };
        sockets.push(socket);
    }
    Ok(sockets)
}

fn bind_one(
    address: SocketAddr,
    reuse_port: bool,
    backlog: u32,
    ipv4_compat: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    // Envoy sets SO_REUSEADDR on listeners so a restart can bind while old connections linger.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(!ipv4_compat)?;
    }
    socket.bind(&address.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

//! Envoy's raw `SocketOption`s (`level`, `name`, `int_value`) applied through socket2's typed
//! setters; the config refused any option not in [`KnownSocketOption`] at load.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use legate_config::socket_option::{KnownSocketOption, SocketOption, SocketState};
use socket2::SockRef;

/// Sets the options of `options` that belong to `state`.
pub fn apply<S: std::os::fd::AsFd>(socket: &S, options: &[SocketOption], state: SocketState) -> io::Result<()> {
    let sock = SockRef::from(socket);
    for option in options.iter().filter(|o| o.state == state) {
        let Some(known) = KnownSocketOption::from_level_name(option.level, option.name) else { continue };
        let value = option.int_value.unwrap_or(0);
        let flag = value != 0;
        let int = u32::try_from(value).unwrap_or(0);
        let size = usize::try_from(value).unwrap_or(0);
        match known {
            KnownSocketOption::ReuseAddr => sock.set_reuse_address(flag)?,
            KnownSocketOption::KeepAlive => sock.set_keepalive(flag)?,
            KnownSocketOption::SendBuffer => sock.set_send_buffer_size(size)?,
            KnownSocketOption::RecvBuffer => sock.set_recv_buffer_size(size)?,
            KnownSocketOption::Priority => sock.set_priority(int)?,
            KnownSocketOption::ReusePort => sock.set_reuse_port(flag)?,
            KnownSocketOption::Mark => sock.set_mark(int)?,
            KnownSocketOption::IpTos => sock.set_tos_v4(int)?,
            KnownSocketOption::IpTtl => sock.set_ttl_v4(int)?,
            KnownSocketOption::IpFreebind => sock.set_freebind_v4(flag)?,
            KnownSocketOption::IpTransparent => sock.set_ip_transparent_v4(flag)?,
            KnownSocketOption::TcpNodelay => sock.set_tcp_nodelay(flag)?,
            KnownSocketOption::TcpMaxSeg => sock.set_tcp_mss(int)?,
            KnownSocketOption::TcpKeepIdle => {
                sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(u64::from(int))))?
            }
            KnownSocketOption::TcpKeepInterval => sock
                .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_interval(Duration::from_secs(u64::from(int))))?,
            KnownSocketOption::TcpKeepCount => {
                sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_retries(int))?
            }
            // Milliseconds; 0 turns it off (the kernel's default).
            KnownSocketOption::TcpUserTimeout => {
                sock.set_tcp_user_timeout(Some(Duration::from_millis(u64::from(int))).filter(|d| !d.is_zero()))?
            }
            KnownSocketOption::TcpNotSentLowat => sock.set_tcp_notsent_lowat(int)?,
            KnownSocketOption::Ipv6Tclass => sock.set_tclass_v6(int)?,
        }
    }
    Ok(())
}

/// `freebind: true` of a bind config: bind to an address the host may not have (yet).
pub fn set_freebind<S: std::os::fd::AsFd>(socket: &S, peer: SocketAddr) -> io::Result<()> {
    let sock = SockRef::from(socket);
    match peer {
        SocketAddr::V4(_) => sock.set_freebind_v4(true),
        SocketAddr::V6(_) => sock.set_freebind_v6(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(level: i64, name: i64, value: i64, state: SocketState) -> SocketOption {
        SocketOption { level, name, int_value: Some(value), state, ..Default::default() }
    }

    #[test]
    fn options_are_set_in_their_state_only() {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let options = [
            option(6, 18, 7000, SocketState::Prebind),
            option(1, 9, 1, SocketState::Bound),
            option(6, 1, 1, SocketState::Prebind),
        ];
        apply(&socket, &options, SocketState::Prebind).unwrap();
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_millis(7000)));
        assert!(socket.tcp_nodelay().unwrap());
        assert!(!socket.keepalive().unwrap(), "a STATE_BOUND option waits for the bind");
        apply(&socket, &options, SocketState::Bound).unwrap();
        assert!(socket.keepalive().unwrap());
    }
}

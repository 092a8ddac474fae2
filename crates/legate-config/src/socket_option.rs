//! `envoy.config.core.v3.SocketOption` and `BindConfig`: raw socket options by level and
//! name, as Envoy takes them (Linux numbering). legate applies the options it knows by name
//! (so that each goes through a typed call) and refuses the others at load, naming them.

use serde::Deserialize;

use crate::core::SocketAddress;
use crate::unsupported::Unsupported;

/// `envoy.config.core.v3.SocketOption`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SocketOption {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub level: i64,
    #[serde(default)]
    pub name: i64,
    pub int_value: Option<i64>,
    pub buf_value: Option<Unsupported>,
    #[serde(default)]
    pub state: SocketState,
    #[serde(rename = "type")]
    pub socket_type: Option<Unsupported>,
}

/// `SocketOption.SocketState`: when the option is set.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum SocketState {
    #[default]
    #[serde(rename = "STATE_PREBIND")]
    Prebind,
    #[serde(rename = "STATE_BOUND")]
    Bound,
    #[serde(rename = "STATE_LISTENING")]
    Listening,
}

/// The options legate sets, by their Linux `(level, name)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnownSocketOption {
    ReuseAddr,
    KeepAlive,
    SendBuffer,
    RecvBuffer,
    Priority,
    ReusePort,
    Mark,
    IpTos,
    IpTtl,
    IpFreebind,
    IpTransparent,
    TcpNodelay,
    TcpMaxSeg,
    TcpKeepIdle,
    TcpKeepInterval,
    TcpKeepCount,
    TcpUserTimeout,
    TcpNotSentLowat,
    Ipv6Tclass,
}

impl KnownSocketOption {
    pub fn from_level_name(level: i64, name: i64) -> Option<Self> {
        use KnownSocketOption::*;
        Some(match (level, name) {
            (1, 2) => ReuseAddr,
            (1, 9) => KeepAlive,
            (1, 7) => SendBuffer,
            (1, 8) => RecvBuffer,
            (1, 12) => Priority,
            (1, 15) => ReusePort,
            (1, 36) => Mark,
            (0, 1) => IpTos,
            (0, 2) => IpTtl,
            (0, 15) => IpFreebind,
            (0, 19) => IpTransparent,
            (6, 1) => TcpNodelay,
            (6, 2) => TcpMaxSeg,
            (6, 4) => TcpKeepIdle,
            (6, 5) => TcpKeepInterval,
            (6, 6) => TcpKeepCount,
            (6, 18) => TcpUserTimeout,
            (6, 25) => TcpNotSentLowat,
            (41, 67) => Ipv6Tclass,
            _ => return None,
        })
    }
}

impl SocketOption {
    pub(crate) fn validate(&self, at: &str, v: &mut crate::validate::Validator) {
        if KnownSocketOption::from_level_name(self.level, self.name).is_none() {
            v.error(
                at,
                format!(
                    "socket option level {} name {} is not supported by legate yet (SOL_SOCKET, IPPROTO_IP, \
                     IPPROTO_TCP and IPV6_TCLASS options with int_value are)",
                    self.level, self.name
                ),
            );
        } else if self.int_value.is_none() {
            v.error(&format!("{at}.int_value"), "value is required");
        }
    }
}

/// `envoy.config.core.v3.BindConfig` (a cluster's `upstream_bind_config`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BindConfig {
    /// The local address upstream connections are bound to (port 0: any port).
    pub source_address: Option<SocketAddress>,
    pub freebind: Option<bool>,
    #[serde(default)]
    pub socket_options: Vec<SocketOption>,
    pub extra_source_addresses: Option<Unsupported>,
    pub additional_source_addresses: Option<Unsupported>,
    pub local_address_selector: Option<Unsupported>,
}

impl BindConfig {
    pub(crate) fn validate(&self, at: &str, v: &mut crate::validate::Validator) {
        if let Some(source) = &self.source_address {
            if source.ip().is_none() {
                v.error(&format!("{at}.source_address.address"), "must be an IP address");
            }
        }
        for (i, option) in self.socket_options.iter().enumerate() {
            option.validate(&format!("{at}.socket_options[{i}]"), v);
        }
    }
}

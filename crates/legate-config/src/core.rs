//! `envoy.config.core.v3`: addresses, node, locality, metadata and small shared messages.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;

use crate::unsupported::Unsupported;

/// A 64-bit integer as proto3 JSON writes it: a number or a decimal string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Int64(pub i64);

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int64, E> {
                Ok(Int64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int64, E> {
                i64::try_from(v).map(Int64).map_err(|_| E::custom("integer out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int64, E> {
                v.trim().parse().map(Int64).map_err(|_| E::custom(format!("invalid integer {v:?}")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `envoy.config.core.v3.Address`. legate listens and connects on socket addresses only.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub socket_address: Option<SocketAddress>,
    pub pipe: Option<Unsupported>,
    pub envoy_internal_address: Option<Unsupported>,
}

impl Address {
    /// The socket address; validation guarantees it is present.
    pub fn socket(&self) -> Option<&SocketAddress> {
        self.socket_address.as_ref()
    }
}

/// `envoy.config.core.v3.SocketAddress`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SocketAddress {
    #[serde(default)]
    pub protocol: SocketProtocol,
    pub address: String,
    #[serde(default)]
    pub port_value: u32,
    pub named_port: Option<Unsupported>,
    pub resolver_name: Option<Unsupported>,
    #[serde(default)]
    pub ipv4_compat: bool,
}

impl SocketAddress {
    /// The address as an IP literal, or `None` when it is a host name (DNS clusters).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }

    /// Envoy's rendering of an address inside stat names: `0.0.0.0_10000`, `[::]_80`.
    pub fn stat_name(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(v6)) => format!("[{v6}]_{}", self.port_value),
            _ => format!("{}_{}", self.address, self.port_value),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum SocketProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// `envoy.config.core.v3.Node`: identifies this proxy to control planes and in `/server_info`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Node {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub cluster: String,
    pub metadata: Option<serde_json::Value>,
    pub dynamic_parameters: Option<serde_json::Value>,
    pub locality: Option<Locality>,
    #[serde(default)]
    pub user_agent_name: String,
    pub user_agent_version: Option<String>,
    pub user_agent_build_version: Option<serde_json::Value>,
    #[serde(default)]
    pub extensions: Vec<serde_json::Value>,
    #[serde(default)]
    pub client_features: Vec<String>,
    #[serde(default)]
    pub listening_addresses: Vec<Address>,
}

/// `envoy.config.core.v3.Locality`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub sub_zone: String,
}

/// `envoy.config.core.v3.Metadata`: kept as given, for config dump and later matching.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub filter_metadata: Option<serde_json::Value>,
    pub typed_filter_metadata: Option<serde_json::Value>,
}

/// `envoy.type.v3.Percent`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// `envoy.config.core.v3.TransportSocket`, resolved through the extension registry.
#[derive(Clone, Debug, PartialEq)]
pub struct TransportSocket {
    pub name: String,
    pub config: crate::extensions::TransportSocketConfig,
}

/// `envoy.config.core.v3.TrafficDirection`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TrafficDirection {
    #[default]
    #[serde(rename = "UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "INBOUND")]
    Inbound,
    #[serde(rename = "OUTBOUND")]
    Outbound,
}

/// `envoy.config.core.v3.CidrRange`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct CidrRange {
    pub address_prefix: String,
    #[serde(default)]
    pub prefix_len: Option<u32>,
}

impl CidrRange {
    /// The parsed prefix and its length (Envoy: a missing length means the whole address).
    pub fn parse(&self) -> Result<(IpAddr, u8), String> {
        let ip: IpAddr =
            self.address_prefix.parse().map_err(|_| format!("malformed IP address: {}", self.address_prefix))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = self.prefix_len.unwrap_or(max);
        if len > max {
            return Err(format!("prefix_len {len} is longer than the address {} allows ({max})", self.address_prefix));
        }
        Ok((ip, len as u8))
    }
}

/// `envoy.config.core.v3.DataSource`: bytes given inline or read from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    Filename(String),
    InlineBytes(Vec<u8>),
    InlineString(String),
    EnvironmentVariable(String),
}

impl<'de> Deserialize<'de> for DataSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            filename: Option<String>,
            inline_bytes: Option<String>,
            inline_string: Option<String>,
            environment_variable: Option<String>,
            watched_directory: Option<Unsupported>,
        }
        use base64::Engine;
        let raw = Raw::deserialize(deserializer)?;
        let _ = raw.watched_directory;
        let set = [
            raw.filename.is_some(),
            raw.inline_bytes.is_some(),
            raw.inline_string.is_some(),
            raw.environment_variable.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(de::Error::custom(
                "exactly one of filename, inline_bytes, inline_string or environment_variable is required",
            ));
        }
        Ok(if let Some(f) = raw.filename {
            DataSource::Filename(f)
        } else if let Some(b) = raw.inline_bytes {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| crate::extensions::invalid::<D::Error>("inline_bytes", format!("invalid base64: {e}")))?;
            DataSource::InlineBytes(bytes)
        } else if let Some(s) = raw.inline_string {
            DataSource::InlineString(s)
        } else {
            DataSource::EnvironmentVariable(raw.environment_variable.unwrap_or_default())
        })
    }
}

impl DataSource {
    /// The bytes, reading the file or environment variable now (at config load).
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            DataSource::Filename(path) => std::fs::read(path).map_err(|e| format!("unable to read file: {path}: {e}")),
            DataSource::InlineBytes(b) => Ok(b.clone()),
            DataSource::InlineString(s) => Ok(s.clone().into_bytes()),
            DataSource::EnvironmentVariable(name) => std::env::var(name)
                .map(String::into_bytes)
                .map_err(|_| format!("environment variable {name} is not set")),
        }
    }
}

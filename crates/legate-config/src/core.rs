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

/// Deserializes a proto `int64` field, written as a number or a decimal string.
pub(crate) fn deserialize_int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Int64::deserialize(d).map(|v| v.0)
}

/// `envoy.type.v3.FractionalPercent`: `numerator / denominator`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FractionalPercent {
    #[serde(default)]
    pub numerator: u32,
    #[serde(default)]
    pub denominator: Denominator,
}

impl FractionalPercent {
    /// The fraction in `0.0..=1.0`; a numerator above the denominator counts as 100 %, as
    /// Envoy's `ProtobufPercentHelper` clamps it.
    pub fn as_fraction(&self) -> f64 {
        let denominator = self.denominator.value();
        f64::from(self.numerator.min(denominator)) / f64::from(denominator)
    }
}

/// `FractionalPercent.DenominatorType`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum Denominator {
    #[default]
    #[serde(rename = "HUNDRED")]
    Hundred,
    #[serde(rename = "TEN_THOUSAND")]
    TenThousand,
    #[serde(rename = "MILLION")]
    Million,
}

impl Denominator {
    pub fn value(self) -> u32 {
        match self {
            Denominator::Hundred => 100,
            Denominator::TenThousand => 10_000,
            Denominator::Million => 1_000_000,
        }
    }
}

/// `envoy.config.core.v3.RuntimeFractionalPercent`: the runtime's value for `runtime_key`,
/// else `default_value` (`legate_proxy::runtime`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFractionalPercent {
    /// Required by the proto.
    pub default_value: FractionalPercent,
    #[serde(default)]
    pub runtime_key: String,
}

/// `envoy.config.core.v3.RuntimeUInt32`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeUInt32 {
    #[serde(default)]
    pub default_value: u32,
    /// Required (at least one character) by the proto.
    #[serde(default)]
    pub runtime_key: String,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    #[serde(default)]
    pub key: String,
    /// May hold Envoy's `%VARIABLE%` substitutions; the data plane formats it per request.
    #[serde(default)]
    pub value: String,
    pub raw_value: Option<Unsupported>,
}

/// `envoy.config.core.v3.HeaderValueOption`: a header to add, and how.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueOption {
    pub header: HeaderValue,
    /// Deprecated in favour of `append_action`, still accepted by Envoy: see [`Self::action`].
    pub append: Option<bool>,
    #[serde(default)]
    pub append_action: HeaderAppendAction,
    /// Without it, a header whose value formats to empty is not added.
    #[serde(default)]
    pub keep_empty_value: bool,
}

impl HeaderValueOption {
    /// The effective action, folding the deprecated `append` the way Envoy's `HeaderParser`
    /// does: `append: false` means overwrite, `append: true` the default append.
    pub fn action(&self) -> HeaderAppendAction {
        match self.append {
            Some(true) => HeaderAppendAction::AppendIfExistsOrAdd,
            Some(false) => HeaderAppendAction::OverwriteIfExistsOrAdd,
            None => self.append_action,
        }
    }
}

/// `HeaderValueOption.HeaderAppendAction`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum HeaderAppendAction {
    /// Append to an existing header (a second value), or add it.
    #[default]
    #[serde(rename = "APPEND_IF_EXISTS_OR_ADD")]
    AppendIfExistsOrAdd,
    #[serde(rename = "ADD_IF_ABSENT")]
    AddIfAbsent,
    #[serde(rename = "OVERWRITE_IF_EXISTS_OR_ADD")]
    OverwriteIfExistsOrAdd,
    #[serde(rename = "OVERWRITE_IF_EXISTS")]
    OverwriteIfExists,
}

/// `envoy.type.v3.TokenBucket`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Bucket size, and the tokens it starts with; must be above 0.
    #[serde(default)]
    pub max_tokens: u32,
    /// Tokens added each `fill_interval` (default 1).
    pub tokens_per_fill: Option<u32>,
    /// Required; the local rate limit filters also want at least 50 ms.
    pub fill_interval: crate::duration::Duration,
}

impl TokenBucket {
    pub fn tokens_per_fill(&self) -> u32 {
        self.tokens_per_fill.unwrap_or(1)
    }
}

/// `envoy.type.v3.HttpStatus`. proto3 JSON writes the `StatusCode` enum by name
/// (`TooManyRequests`) or number (`429`); both are read into the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpStatus {
    pub code: u32,
}

impl<'de> Deserialize<'de> for HttpStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            code: Option<serde_json::Value>,
        }
        let raw = Raw::deserialize(d)?;
        let code = match raw.code {
            None => 0,
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            Some(serde_json::Value::String(name)) => match STATUS_CODE_NAMES.iter().find(|(n, _)| *n == name) {
                Some((_, code)) => *code,
                None => {
                    return Err(crate::extensions::invalid::<D::Error>(
                        "code",
                        format!("unknown variant `{name}` of envoy.type.v3.StatusCode"),
                    ))
                }
            },
            Some(other) => {
                return Err(crate::extensions::invalid::<D::Error>("code", format!("invalid type: {other}")));
            }
        };
        // The proto's enum is `defined_only` and excludes `Empty` (0).
        if !STATUS_CODE_NAMES.iter().any(|(_, c)| *c == code) {
            return Err(crate::extensions::invalid::<D::Error>(
                "code",
                format!("value must be one of the defined enum values (got {code})"),
            ));
        }
        Ok(HttpStatus { code })
    }
}

/// `envoy.type.v3.StatusCode`'s names, as proto3 JSON spells them.
const STATUS_CODE_NAMES: &[(&str, u32)] = &[
    ("Continue", 100),
    ("OK", 200),
    ("Created", 201),
    ("Accepted", 202),
    ("NonAuthoritativeInformation", 203),
    ("NoContent", 204),
    ("ResetContent", 205),
    ("PartialContent", 206),
    ("MultiStatus", 207),
    ("AlreadyReported", 208),
    ("IMUsed", 226),
    ("MultipleChoices", 300),
    ("MovedPermanently", 301),
    ("Found", 302),
    ("SeeOther", 303),
    ("NotModified", 304),
    ("UseProxy", 305),
    ("TemporaryRedirect", 307),
    ("PermanentRedirect", 308),
    ("BadRequest", 400),
    ("Unauthorized", 401),
    ("PaymentRequired", 402),
    ("Forbidden", 403),
    ("NotFound", 404),
    ("MethodNotAllowed", 405),
    ("NotAcceptable", 406),
    ("ProxyAuthenticationRequired", 407),
    ("RequestTimeout", 408),
    ("Conflict", 409),
    ("Gone", 410),
    ("LengthRequired", 411),
    ("PreconditionFailed", 412),
    ("PayloadTooLarge", 413),
    ("URITooLong", 414),
    ("UnsupportedMediaType", 415),
    ("RangeNotSatisfiable", 416),
    ("ExpectationFailed", 417),
    ("MisdirectedRequest", 421),
    ("UnprocessableEntity", 422),
    ("Locked", 423),
    ("FailedDependency", 424),
    ("UpgradeRequired", 426),
    ("PreconditionRequired", 428),
    ("TooManyRequests", 429),
    ("RequestHeaderFieldsTooLarge", 431),
    ("InternalServerError", 500),
    ("NotImplemented", 501),
    ("BadGateway", 502),
    ("ServiceUnavailable", 503),
    ("GatewayTimeout", 504),
    ("HTTPVersionNotSupported", 505),
    ("VariantAlsoNegotiates", 506),
    ("InsufficientStorage", 507),
    ("LoopDetected", 508),
    ("NotExtended", 510),
    ("NetworkAuthenticationRequired", 511),
];

/// `envoy.config.core.v3.RuntimeDouble`: the runtime's number for `runtime_key`, else
/// `default_value`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDouble {
    #[serde(default)]
    pub default_value: f64,
    #[serde(default)]
    pub runtime_key: String,
}

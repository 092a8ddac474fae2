//! Envoy's command operators ("Access logging" → "Command Operators";
//! `source/common/formatter/stream_info_formatter.cc` and the header operators of
//! `substitution_formatter.cc`): what `%START_TIME%`, `%RESPONSE_CODE%`, `%REQ(X?Y):Z%`… read
//! from a [`StreamInfo`], and the type each value has in typed JSON.
//!
//! An operator is resolved once, when its format string is parsed ([`Command::parse`], with
//! Envoy's error texts); evaluating it ([`Command::evaluate`]) borrows from the stream and
//! allocates only for the few values that need rewriting (`%UNIQUE_ID%`, whitespace in
//! `%RESPONSE_CODE_DETAILS%`).
//!
//! Differences from Envoy on purpose: operators for data legate does not record (TLS details,
//! metadata, filter state, wire byte counts, gRPC status…) are refused at parse time with
//! `Not supported field in StreamInfo: X`, rather than printing `-` for data that exists.
//! `%REQ(...)%` reads the request as it arrived (before route rewrites), pseudo-headers
//! `:method`, `:path`, `:authority`, `:scheme` included; as in Envoy, a header sent several
//! times logs its first value. `%VIRTUAL_CLUSTER_NAME%` is always `-` (no virtual clusters).

use std::borrow::Cow;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use super::date_formatter::DateFormatter;
use crate::http::{ResponseFlag, ResponseFlags, StreamInfo};

/// What an operator accepts (Envoy's `CommandSyntaxChecker` flags).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    CommandOnly,
    ParamsOptional,
    ParamsRequired,
    /// Parameters required, `:LENGTH` allowed.
    ParamsRequiredWithLength,
}

fn verify_syntax(syntax: Syntax, command: &str, subcommand: &str, max_length: Option<usize>) -> Result<(), String> {
    if syntax == Syntax::CommandOnly && (!subcommand.is_empty() || max_length.is_some()) {
        return Err(format!("{command} does not take any parameters or length"));
    }
    let required = matches!(syntax, Syntax::ParamsRequired | Syntax::ParamsRequiredWithLength);
    if required && subcommand.is_empty() {
        return Err(format!("{command} requires parameters"));
    }
    if syntax != Syntax::ParamsRequiredWithLength && max_length.is_some() {
        return Err(format!("{command} does not allow length to be specified."));
    }
    Ok(())
}

/// One command operator, resolved at parse time.
#[derive(Clone, Debug)]
pub(super) enum Command {
    /// `%START_TIME(...)%`
    StartTime(DateFormatter),
    /// `%EMIT_TIME(...)%`: when the entry is written.
    EmitTime(DateFormatter),
    /// A duration from the start of the stream to a point, in milliseconds (`%DURATION%`,
    /// `%REQUEST_DURATION%`, …), or between two points (`%COMMON_DURATION%`).
    Duration {
        from: TimePoint,
        to: TimePoint,
        precision: Precision,
    },
    BytesReceived,
    BytesSent,
    Protocol,
    ResponseCode,
    ResponseCodeDetails {
        allow_whitespaces: bool,
    },
    ResponseFlags,
    ResponseFlagsLong,
    Address(AddressSource, AddressPart),
    /// `%UPSTREAM_CLUSTER%` (its `alt_stat_name` where set) or `%UPSTREAM_CLUSTER_RAW%`.
    UpstreamCluster {
        raw: bool,
    },
    UpstreamTransportFailureReason,
    UpstreamRequestAttemptCount,
    ConnectionId,
    RequestedServerName,
    /// `%DOWNSTREAM_TLS_VERSION%`, `%DOWNSTREAM_PEER_SUBJECT%`, …: unset without TLS.
    DownstreamTls(TlsField),
    RouteName,
    LocalReplyBody,
    /// legate has no virtual clusters: always unset.
    VirtualClusterName,
    StreamId,
    UniqueId,
    /// Read once at parse time, as Envoy does.
    Hostname(Option<String>),
    /// `%ENVIRONMENT(X):Z%`, read once at parse time.
    Environment(Option<String>),
    RequestHeader(HeaderCommand),
    ResponseHeader(HeaderCommand),
    ResponseTrailer(HeaderCommand),
}

/// A point on the stream's timeline, as Envoy's `%COMMON_DURATION%` names them.
#[derive(Clone, Copy, Debug)]
pub(super) enum TimePoint {
    /// `DS_RX_BEG`: the stream start.
    Start,
    /// `DS_RX_END`
    LastDownstreamRxByte,
    /// `US_TX_BEG`
    FirstUpstreamTxByte,
    /// `US_TX_END`
    LastUpstreamTxByte,
    /// `US_RX_BEG`
    FirstUpstreamRxByte,
    /// `US_RX_END`
    LastUpstreamRxByte,
    /// `DS_TX_BEG`
    FirstDownstreamTxByte,
    /// `DS_TX_END`
    LastDownstreamTxByte,
    /// The end of the stream, or now while it lasts (Envoy's `currentDuration()`).
    Current,
    /// A point legate does not record (connection and handshake times, custom points).
    Unknown,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Precision {
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum AddressSource {
    DownstreamRemote,
    DownstreamDirectRemote,
    DownstreamLocal,
    UpstreamHost,
    UpstreamLocal,
}

/// Envoy's `StreamInfoAddressFieldExtractionType`, names included.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug)]
pub(super) enum AddressPart {
    WithPort,
    WithoutPort,
    JustPort,
}

/// `%REQ(X?Y):Z%`, `%RESP(X?Y):Z%`, `%TRAILER(X?Y):Z%`.
#[derive(Clone, Debug)]
pub(super) struct HeaderCommand {
    /// Lower-cased header name.
    main: String,
    alternative: Option<String>,
    max_length: Option<usize>,
}

impl HeaderCommand {
    fn parse(subcommand: &str, max_length: Option<usize>) -> Result<HeaderCommand, String> {
        let mut names = subcommand.split('?');
        let main = names.next().unwrap_or_default();
        let alternative = names.next();
        if names.next().is_some() {
            return Err(format!("More than 1 alternative header specified in token: {subcommand}"));
        }
        if subcommand.contains(['\n', '\r', '\0']) {
            return Err("Invalid header configuration. Format string contains newline.".into());
        }
        Ok(HeaderCommand {
            main: main.to_ascii_lowercase(),
            alternative: alternative.filter(|a| !a.is_empty()).map(str::to_ascii_lowercase),
            max_length,
        })
    }

    /// The first value of the main header, else of the alternative one, truncated to Z bytes.
    fn find<'a>(&self, lookup: impl Fn(&str) -> Option<&'a [u8]>) -> Value<'a> {
        let found = lookup(&self.main).or_else(|| lookup(self.alternative.as_deref()?));
        match found {
            Some(value) => {
                let len = self.max_length.map_or(value.len(), |max| max.min(value.len()));
                Value::Bytes(value.get(..len).unwrap_or(value))
            }
            None => Value::Unset,
        }
    }
}

/// Operators Envoy has whose data legate does not record: refused rather than printed as `-`.
const NOT_RECORDED: &[&str] = &[
    "REQUEST_HEADERS_BYTES",
    "RESPONSE_HEADERS_BYTES",
    "RESPONSE_TRAILERS_BYTES",
    "UPSTREAM_PROTOCOL",
    "UPSTREAM_WIRE_BYTES_SENT",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "UPSTREAM_HEADER_BYTES_SENT",
    "UPSTREAM_HEADER_BYTES_RECEIVED",
    "DOWNSTREAM_WIRE_BYTES_SENT",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_HEADER_BYTES_SENT",
    "DOWNSTREAM_HEADER_BYTES_RECEIVED",
    "CONNECTION_TERMINATION_DETAILS",
    "FILTER_CHAIN_NAME",
    "GRPC_STATUS",
    "GRPC_STATUS_NUMBER",
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "UPSTREAM_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "START_TIME_LOCAL",
    "EMIT_TIME_LOCAL",
    "TRACE_ID",
    "ACCESS_LOG_TYPE",
    "UPSTREAM_HOST_NAME",
    "UPSTREAM_HOST_NAME_WITHOUT_PORT",
    "UPSTREAM_CONNECTION_ID",
    "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
    "DOWNSTREAM_HANDSHAKE_DURATION",
    "ROUNDTRIP_DURATION",
    "UPSTREAM_CONNECTION_POOL_READY_DURATION",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_LOCAL_PORT",
    "BYTES_RETRANSMITTED",
    "PACKETS_RETRANSMITTED",
    "CUSTOM_FLAGS",
];

/// The TLS facts of the downstream connection that access logs can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsField {
    Version,
    Cipher,
    PeerSubject,
    PeerSerial,
    PeerFingerprint256,
    /// SANs of a type, comma-separated as Envoy joins them.
    PeerUriSan,
    PeerDnsSan,
    /// Our certificate in the handshake.
    LocalSubject,
    LocalUriSan,
    LocalDnsSan,
}

impl TlsField {
    fn value(self, ssl: &crate::tls::SslConnectionInfo) -> Option<String> {
        use crate::tls::certificate::SubjectAltName;
        let peer = ssl.peer_certificate.as_ref();
        let local = ssl.local_certificate.as_deref();
        let sans = |cert: Option<&crate::tls::certificate::CertificateDetails>,
                    pick: fn(&SubjectAltName) -> Option<&str>| {
            cert.map(|c| c.subject_alt_names.iter().filter_map(pick).collect::<Vec<_>>().join(","))
        };
        fn uri(s: &SubjectAltName) -> Option<&str> {
            match s {
                SubjectAltName::Uri(v) => Some(v.as_str()),
                _ => None,
            }
        }
        fn dns(s: &SubjectAltName) -> Option<&str> {
            match s {
                SubjectAltName::Dns(v) => Some(v.as_str()),
                _ => None,
            }
        }
        match self {
            TlsField::Version => Some(ssl.version.to_string()),
            TlsField::Cipher => Some(ssl.cipher.clone()),
            TlsField::PeerSubject => peer.map(|p| p.subject.clone()),
            TlsField::PeerSerial => peer.map(|p| p.serial_number.clone()),
            TlsField::PeerFingerprint256 => ssl.peer_certificate_hash.clone(),
            TlsField::PeerUriSan => sans(peer, uri),
            TlsField::PeerDnsSan => sans(peer, dns),
            TlsField::LocalSubject => local.map(|c| c.subject.clone()),
            TlsField::LocalUriSan => sans(local, uri),
            TlsField::LocalDnsSan => sans(local, dns),
        }
    }
}

/// Families of Envoy operators (TLS details, SANs, decompressed header sizes) legate does not
/// record.
const NOT_RECORDED_PREFIXES: &[&str] = &[
    "DOWNSTREAM_PEER_",
    "DOWNSTREAM_LOCAL_",
    "DOWNSTREAM_TLS_",
    "DOWNSTREAM_DECOMPRESSED_",
    "UPSTREAM_PEER_",
    "UPSTREAM_LOCAL_",
    "UPSTREAM_TLS_",
    "UPSTREAM_DECOMPRESSED_",
    "TLS_JA",
];

/// Envoy's error for an unknown operator; operators Envoy has but legate cannot fill say so.
fn unsupported(command: &str) -> String {
    let envoy_has_it =
        NOT_RECORDED.contains(&command) || NOT_RECORDED_PREFIXES.iter().any(|prefix| command.starts_with(prefix));
    if envoy_has_it {
        format!(
            "Not supported field in StreamInfo: {command} (an Envoy operator whose data legate \
             does not record)"
        )
    } else {
        format!("Not supported field in StreamInfo: {command}")
    }
}

impl Command {
    /// Builds one operator. As Envoy, the syntax (parameters, length) is checked before the
    /// parameters themselves.
    pub(super) fn parse(command: &str, subcommand: &str, max_length: Option<usize>) -> Result<Command, String> {
        let syntax = match command {
            "START_TIME" | "EMIT_TIME" | "RESPONSE_CODE_DETAILS" => Syntax::ParamsOptional,
            "COMMON_DURATION" => Syntax::ParamsRequired,
            "REQ" | "RESP" | "TRAILER" | "ENVIRONMENT" => Syntax::ParamsRequiredWithLength,
            _ => Syntax::CommandOnly,
        };
        let simple = Command::simple(command);
        let known = simple.is_some() || syntax != Syntax::CommandOnly || command == "HOSTNAME";
        if !known {
            return Err(unsupported(command));
        }
        verify_syntax(syntax, command, subcommand, max_length)?;
        if let Some(simple) = simple {
            return Ok(simple);
        }
        Ok(match command {
            "START_TIME" => Command::StartTime(DateFormatter::parse(subcommand)?),
            "EMIT_TIME" => Command::EmitTime(DateFormatter::parse(subcommand)?),
            "RESPONSE_CODE_DETAILS" => {
                Command::ResponseCodeDetails { allow_whitespaces: subcommand == "ALLOW_WHITESPACES" }
            }
            "COMMON_DURATION" => parse_common_duration(subcommand)?,
            "REQ" => Command::RequestHeader(HeaderCommand::parse(subcommand, max_length)?),
            "RESP" => Command::ResponseHeader(HeaderCommand::parse(subcommand, max_length)?),
            "TRAILER" => Command::ResponseTrailer(HeaderCommand::parse(subcommand, max_length)?),
            // An unset variable is the text `-` (Envoy's `EnvironmentFormatter`), a string even
            // in typed JSON, and kept by `omit_empty_values`.
            "ENVIRONMENT" => Command::Environment(Some(match std::env::var(subcommand) {
                Ok(mut value) => {
                    truncate_string(&mut value, max_length);
                    value
                }
                Err(_) => "-".to_string(),
            })),
            "HOSTNAME" => Command::Hostname(hostname()),
            _ => return Err(unsupported(command)),
        })
    }

    /// The operators that take no parameters and read nothing at parse time.
    fn simple(command: &str) -> Option<Command> {
        use AddressPart::*;
        use AddressSource::*;
        let from_start = |to| Command::Duration { from: TimePoint::Start, to, precision: Precision::Milliseconds };
        Some(match command {
            "REQUEST_DURATION" => from_start(TimePoint::LastDownstreamRxByte),
            "REQUEST_TX_DURATION" => from_start(TimePoint::LastUpstreamTxByte),
            "RESPONSE_DURATION" => from_start(TimePoint::FirstUpstreamRxByte),
            "RESPONSE_TX_DURATION" => Command::Duration {
                from: TimePoint::FirstUpstreamRxByte,
                to: TimePoint::LastDownstreamTxByte,
                precision: Precision::Milliseconds,
            },
            "DURATION" => from_start(TimePoint::Current),
            "BYTES_RECEIVED" => Command::BytesReceived,
            "BYTES_SENT" => Command::BytesSent,
            "PROTOCOL" => Command::Protocol,
            "RESPONSE_CODE" => Command::ResponseCode,
            "RESPONSE_FLAGS" => Command::ResponseFlags,
            "RESPONSE_FLAGS_LONG" => Command::ResponseFlagsLong,
            "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => Command::Address(UpstreamHost, WithPort),
            "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Command::Address(UpstreamHost, WithoutPort),
            "UPSTREAM_REMOTE_PORT" => Command::Address(UpstreamHost, JustPort),
            "UPSTREAM_LOCAL_ADDRESS" => Command::Address(UpstreamLocal, WithPort),
            "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Command::Address(UpstreamLocal, WithoutPort),
            "UPSTREAM_LOCAL_PORT" => Command::Address(UpstreamLocal, JustPort),
            "DOWNSTREAM_REMOTE_ADDRESS" => Command::Address(DownstreamRemote, WithPort),
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Command::Address(DownstreamRemote, WithoutPort),
            "DOWNSTREAM_REMOTE_PORT" => Command::Address(DownstreamRemote, JustPort),
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Command::Address(DownstreamDirectRemote, WithPort),
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => Command::Address(DownstreamDirectRemote, WithoutPort),
            "DOWNSTREAM_DIRECT_REMOTE_PORT" => Command::Address(DownstreamDirectRemote, JustPort),
            "DOWNSTREAM_LOCAL_ADDRESS" => Command::Address(DownstreamLocal, WithPort),
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Command::Address(DownstreamLocal, WithoutPort),
            "DOWNSTREAM_LOCAL_PORT" => Command::Address(DownstreamLocal, JustPort),
            "UPSTREAM_CLUSTER" => Command::UpstreamCluster { raw: false },
            "UPSTREAM_CLUSTER_RAW" => Command::UpstreamCluster { raw: true },
            "UPSTREAM_TRANSPORT_FAILURE_REASON" => Command::UpstreamTransportFailureReason,
            "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Command::UpstreamRequestAttemptCount,
            "CONNECTION_ID" => Command::ConnectionId,
            "REQUESTED_SERVER_NAME" => Command::RequestedServerName,
            "DOWNSTREAM_TLS_VERSION" => Command::DownstreamTls(TlsField::Version),
            "DOWNSTREAM_TLS_CIPHER" => Command::DownstreamTls(TlsField::Cipher),
            "DOWNSTREAM_PEER_SUBJECT" => Command::DownstreamTls(TlsField::PeerSubject),
            "DOWNSTREAM_PEER_SERIAL" => Command::DownstreamTls(TlsField::PeerSerial),
            "DOWNSTREAM_PEER_FINGERPRINT_256" => Command::DownstreamTls(TlsField::PeerFingerprint256),
            "DOWNSTREAM_PEER_URI_SAN" => Command::DownstreamTls(TlsField::PeerUriSan),
            "DOWNSTREAM_PEER_DNS_SAN" => Command::DownstreamTls(TlsField::PeerDnsSan),
            "DOWNSTREAM_LOCAL_SUBJECT" => Command::DownstreamTls(TlsField::LocalSubject),
            "DOWNSTREAM_LOCAL_URI_SAN" => Command::DownstreamTls(TlsField::LocalUriSan),
            "DOWNSTREAM_LOCAL_DNS_SAN" => Command::DownstreamTls(TlsField::LocalDnsSan),
            "ROUTE_NAME" => Command::RouteName,
            "LOCAL_REPLY_BODY" => Command::LocalReplyBody,
            "VIRTUAL_CLUSTER_NAME" => Command::VirtualClusterName,
            "STREAM_ID" => Command::StreamId,
            "UNIQUE_ID" => Command::UniqueId,
            _ => return None,
        })
    }

    /// Extracts this operator's value from `info`.
    pub(super) fn evaluate<'a>(&'a self, info: &'a StreamInfo) -> Value<'a> {
        match self {
            Command::StartTime(format) => Value::Time(info.start_time(), format),
            Command::EmitTime(format) => Value::Time(SystemTime::now(), format),
            Command::Duration { from, to, precision } => {
                let (Some(from), Some(to)) = (from.offset(info), to.offset(info)) else {
                    return Value::Unset;
                };
                // Envoy leaves a negative span unset.
                let Some(span) = to.checked_sub(from) else {
                    return Value::Unset;
                };
                Value::Number(match precision {
                    Precision::Milliseconds => span.as_millis() as u64,
                    Precision::Microseconds => span.as_micros() as u64,
                    Precision::Nanoseconds => span.as_nanos() as u64,
                })
            }
            Command::BytesReceived => Value::Number(info.bytes_received),
            Command::BytesSent => Value::Number(info.bytes_sent),
            Command::Protocol => match info.protocol_str() {
                "-" => Value::Unset,
                protocol => Value::Str(protocol),
            },
            Command::ResponseCode => Value::Number(info.response_code.map_or(0, u64::from)),
            Command::ResponseCodeDetails { allow_whitespaces } => match info.response_code_details.as_deref() {
                None => Value::Unset,
                Some(details) if *allow_whitespaces => Value::Str(details),
                Some(details) => Value::Text(replace_whitespace(details, |c| {
                    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
                })),
            },
            Command::ResponseFlags => Value::Flags(info.response_flags, false),
            Command::ResponseFlagsLong => Value::Flags(info.response_flags, true),
            Command::Address(source, part) => {
                let address = match source {
                    AddressSource::DownstreamRemote => Some(info.downstream_remote_address),
                    AddressSource::DownstreamDirectRemote => Some(info.downstream_direct_remote_address),
                    AddressSource::DownstreamLocal => Some(info.downstream_local_address),
                    AddressSource::UpstreamHost => info.upstream_host,
                    AddressSource::UpstreamLocal => info.upstream_local_address,
                };
                match (address, part) {
                    (None, _) => Value::Unset,
                    (Some(address), AddressPart::WithPort) => Value::Address(address),
                    (Some(address), AddressPart::WithoutPort) => Value::Ip(address.ip()),
                    (Some(address), AddressPart::JustPort) => Value::Number(u64::from(address.port())),
                }
            }
            Command::UpstreamCluster { raw } => non_empty(info.upstream_cluster.as_ref().map(|c| match raw {
                true => c.name(),
                false => c.observability_name(),
            })),
            Command::UpstreamTransportFailureReason => match info.upstream_transport_failure_reason.as_deref() {
                None | Some("") => Value::Unset,
                Some(reason) => Value::Text(replace_whitespace(reason, |c| c == ' ')),
            },
            Command::UpstreamRequestAttemptCount => Value::Number(u64::from(info.attempt_count)),
            Command::ConnectionId => Value::Number(info.connection_id),
            Command::RequestedServerName => non_empty(info.requested_server_name.as_deref()),
            Command::DownstreamTls(field) => match &info.downstream_ssl {
                None => Value::Unset,
                Some(ssl) => match field.value(ssl) {
                    Some(v) if !v.is_empty() => Value::Text(Cow::Owned(v)),
                    _ => Value::Unset,
                },
            },
            Command::RouteName => non_empty(info.route_name.as_deref()),
            Command::LocalReplyBody => non_empty(info.local_reply_body.as_deref()),
            Command::VirtualClusterName => Value::Unset,
            Command::StreamId => non_empty(info.request_id.as_ref().and_then(|v| v.to_str().ok())),
            Command::UniqueId => Value::Text(Cow::Owned(uuid_v4())),
            Command::Hostname(name) | Command::Environment(name) => match name {
                Some(name) => Value::Str(name),
                None => Value::Unset,
            },
            Command::RequestHeader(header) => header.find(|name| request_header(info, name)),
            Command::ResponseHeader(header) => header.find(|name| {
                let headers = info.response_headers.as_deref()?;
                if name == ":status" {
                    return status_digits(info.response_code?);
                }
                header_value(headers, name)
            }),
            Command::ResponseTrailer(header) => {
                header.find(|name| header_value(info.response_trailers.as_deref()?, name))
            }
        }
    }
}

impl TimePoint {
    fn parse(name: &str) -> TimePoint {
        match name {
            "DS_RX_BEG" => TimePoint::Start,
            "DS_RX_END" => TimePoint::LastDownstreamRxByte,
            "US_TX_BEG" => TimePoint::FirstUpstreamTxByte,
            "US_TX_END" => TimePoint::LastUpstreamTxByte,
            "US_RX_BEG" => TimePoint::FirstUpstreamRxByte,
            "US_RX_END" => TimePoint::LastUpstreamRxByte,
            "DS_TX_BEG" => TimePoint::FirstDownstreamTxByte,
            "DS_TX_END" => TimePoint::LastDownstreamTxByte,
            _ => TimePoint::Unknown,
        }
    }

    /// This point as an offset from the stream start, if it happened.
    fn offset(self, info: &StreamInfo) -> Option<Duration> {
        match self {
            TimePoint::Start => Some(Duration::ZERO),
            TimePoint::LastDownstreamRxByte => info.last_downstream_rx_byte,
            TimePoint::FirstUpstreamTxByte => info.first_upstream_tx_byte,
            TimePoint::LastUpstreamTxByte => info.last_upstream_tx_byte,
            TimePoint::FirstUpstreamRxByte => info.first_upstream_rx_byte,
            TimePoint::LastUpstreamRxByte => info.last_upstream_rx_byte,
            TimePoint::FirstDownstreamTxByte => info.first_downstream_tx_byte,
            TimePoint::LastDownstreamTxByte => info.last_downstream_tx_byte,
            TimePoint::Current => Some(info.end.unwrap_or_else(|| info.elapsed())),
            TimePoint::Unknown => None,
        }
    }
}

/// `%COMMON_DURATION(START:END:PRECISION)%`, precision `ms` (default), `us` or `ns`.
fn parse_common_duration(subcommand: &str) -> Result<Command, String> {
    let fields: Vec<&str> = subcommand.split(':').collect();
    let (from, to, precision) = match fields.as_slice() {
        [from, to] => (from, to, "ms"),
        [from, to, precision] => (from, to, *precision),
        _ => return Err(format!("Invalid common duration configuration: {subcommand}.")),
    };
    let precision = match precision {
        "ms" => Precision::Milliseconds,
        "us" => Precision::Microseconds,
        "ns" => Precision::Nanoseconds,
        other => return Err(format!("Invalid common duration precision: {other}.")),
    };
    Ok(Command::Duration { from: TimePoint::parse(from), to: TimePoint::parse(to), precision })
}

/// A request header by lower-case name; pseudo-headers come from the request line.
fn request_header<'a>(info: &'a StreamInfo, name: &str) -> Option<&'a [u8]> {
    let request = info.request.as_ref()?;
    match name {
        ":method" => Some(request.method.as_str().as_bytes()),
        ":path" => Some(request.path.as_bytes()),
        ":authority" if request.authority.is_empty() => None,
        ":authority" => Some(request.authority.as_bytes()),
        ":scheme" => Some(request.scheme.as_str().as_bytes()),
        _ => header_value(&request.headers, name),
    }
}

fn header_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(http::HeaderValue::as_bytes)
}

/// `:status` as the three digits a response header map holds, borrowed from a table built once.
fn status_digits(code: u16) -> Option<&'static [u8]> {
    static DIGITS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let digits = DIGITS.get_or_init(|| (0..1000).flat_map(|n| format!("{n:03}").into_bytes()).collect());
    let start = usize::from(code) * 3;
    digits.get(start..start + 3)
}

fn non_empty(value: Option<&str>) -> Value<'_> {
    match value {
        None | Some("") => Value::Unset,
        Some(value) => Value::Str(value),
    }
}

fn replace_whitespace(text: &str, is_space: impl Fn(char) -> bool) -> Cow<'_, str> {
    if text.contains(&is_space) {
        Cow::Owned(text.chars().map(|c| if is_space(c) { '_' } else { c }).collect())
    } else {
        Cow::Borrowed(text)
    }
}

fn truncate_string(value: &mut String, max_length: Option<usize>) {
    if let Some(max) = max_length {
        let mut end = max.min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
}

/// The system hostname (Envoy calls gethostname(2); this reads the same kernel value).
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim_end();
    (!name.is_empty()).then(|| name.to_string())
}

/// A random (version 4) UUID, as Envoy's `%UNIQUE_ID%`.
fn uuid_v4() -> String {
    let bits = fastrand::u128(..);
    let bits = (bits & !(0xf_u128 << 76) | (0x4_u128 << 76)) & !(0x3_u128 << 62) | (0x2_u128 << 62);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Envoy's long name of a response flag (`%RESPONSE_FLAGS_LONG%`).
pub fn long_name(flag: ResponseFlag) -> &'static str {
    match flag {
        ResponseFlag::FailedLocalHealthCheck => "FailedLocalHealthCheck",
        ResponseFlag::NoHealthyUpstream => "NoHealthyUpstream",
        ResponseFlag::UpstreamRequestTimeout => "UpstreamRequestTimeout",
        ResponseFlag::LocalReset => "LocalReset",
        ResponseFlag::UpstreamRemoteReset => "UpstreamRemoteReset",
        ResponseFlag::UpstreamConnectionFailure => "UpstreamConnectionFailure",
        ResponseFlag::UpstreamConnectionTermination => "UpstreamConnectionTermination",
        ResponseFlag::UpstreamOverflow => "UpstreamOverflow",
        ResponseFlag::NoRouteFound => "NoRouteFound",
        ResponseFlag::DelayInjected => "DelayInjected",
        ResponseFlag::FaultInjected => "FaultInjected",
        ResponseFlag::RateLimited => "RateLimited",
        ResponseFlag::UnauthorizedExternalService => "UnauthorizedExternalService",
        ResponseFlag::RateLimitServiceError => "RateLimitServiceError",
        ResponseFlag::DownstreamConnectionTermination => "DownstreamConnectionTermination",
        ResponseFlag::UpstreamRetryLimitExceeded => "UpstreamRetryLimitExceeded",
        ResponseFlag::StreamIdleTimeout => "StreamIdleTimeout",
        ResponseFlag::InvalidEnvoyRequestHeaders => "InvalidEnvoyRequestHeaders",
        ResponseFlag::DownstreamProtocolError => "DownstreamProtocolError",
        ResponseFlag::UpstreamMaxStreamDurationReached => "UpstreamMaxStreamDurationReached",
        ResponseFlag::ResponseFromCacheFilter => "ResponseFromCacheFilter",
        ResponseFlag::NoFilterConfigFound => "NoFilterConfigFound",
        ResponseFlag::DurationTimeout => "DurationTimeout",
        ResponseFlag::UpstreamProtocolError => "UpstreamProtocolError",
        ResponseFlag::NoClusterFound => "NoClusterFound",
        // Envoy's long name differs from its enum name for these two.
        ResponseFlag::OverloadManager => "OverloadManagerTerminated",
        ResponseFlag::DnsResolutionFailed => "DnsResolutionFailed",
        ResponseFlag::DropOverLoad => "DropOverload",
        ResponseFlag::DownstreamRemoteReset => "DownstreamRemoteReset",
    }
}

// === Values ===

/// An operator's value for one stream, borrowed from the stream or the formatter.
pub(super) enum Value<'a> {
    Unset,
    Str(&'a str),
    Text(Cow<'a, str>),
    /// A header value: bytes, possibly not UTF-8.
    Bytes(&'a [u8]),
    /// A number; a JSON number in typed dictionaries.
    Number(u64),
    Address(SocketAddr),
    Ip(IpAddr),
    Time(SystemTime, &'a DateFormatter),
    /// Response flags, short or long names; `-` (a string, never unset) when there are none.
    Flags(ResponseFlags, bool),
}

impl Value<'_> {
    /// Appends the text form; false (and nothing written) when unset.
    pub(super) fn write_text(&self, out: &mut Vec<u8>) -> bool {
        // Writing into a Vec cannot fail.
        let _ = match self {
            Value::Unset => return false,
            Value::Str(text) => out.write_all(text.as_bytes()),
            Value::Text(text) => out.write_all(text.as_bytes()),
            Value::Bytes(bytes) => out.write_all(bytes),
            Value::Number(n) => write!(out, "{n}"),
            Value::Address(address) => write!(out, "{address}"),
            Value::Ip(ip) => write!(out, "{ip}"),
            Value::Time(time, format) => {
                format.format_into(*time, out);
                Ok(())
            }
            Value::Flags(flags, long) => {
                if flags.is_empty() {
                    out.push(b'-');
                }
                for (i, flag) in flags.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let name = if *long { long_name(flag) } else { flag.short() };
                    out.extend_from_slice(name.as_bytes());
                }
                Ok(())
            }
        };
        true
    }

    /// Appends the typed JSON form: numbers as numbers, unset as null, the rest as strings.
    pub(super) fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Unset => out.extend_from_slice(b"null"),
            Value::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Str(text) => write_json_string(text, out),
            Value::Text(text) => write_json_string(text, out),
            Value::Bytes(bytes) => write_json_string(&String::from_utf8_lossy(bytes), out),
            _ => {
                let mut text = Vec::with_capacity(32);
                self.write_text(&mut text);
                write_json_string(&String::from_utf8_lossy(&text), out);
            }
        }
    }
}

/// Appends `text` as a JSON string.
pub(super) fn write_json_string(text: &str, out: &mut Vec<u8>) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::UNIX_EPOCH;

    use http::{HeaderMap, HeaderValue, Method, Version};

    use super::*;
    use crate::access_log::formatter::Formatter;
    use crate::http::RequestSnapshot;

    /// 2016-04-15T20:17:00.310Z, the time of Envoy's example line.
    pub(crate) fn example_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_460_751_420_310)
    }

    /// A finished request: `POST /api/v1/locations` over HTTP/2 answered 204 through an
    /// upstream, the request of Envoy's "Default Format String" example.
    pub(crate) fn stream_info() -> StreamInfo {
        let mut info =
            StreamInfo::new(Version::HTTP_2, 7, "10.0.35.28:51234".parse().unwrap(), "10.0.0.1:10000".parse().unwrap());
        info.start_time = Some(example_time());
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.35.28"));
        headers.insert("user-agent", HeaderValue::from_static("nsq2http"));
        headers.insert("x-request-id", HeaderValue::from_static("cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"));
        headers.append("x-multi", HeaderValue::from_static("first"));
        headers.append("x-multi", HeaderValue::from_static("second"));
        info.request = Some(Box::new(RequestSnapshot {
            method: Method::POST,
            path: "/api/v1/locations".to_string(),
            authority: "locations".to_string(),
            scheme: http::uri::Scheme::HTTP,
            headers,
        }));
        info.request_id = Some(http::HeaderValue::from_static("cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"));
        info.last_downstream_rx_byte = Some(Duration::from_micros(12_900));
        info.first_upstream_tx_byte = Some(Duration::from_millis(14));
        info.last_upstream_tx_byte = Some(Duration::from_millis(20));
        info.first_upstream_rx_byte = Some(Duration::from_millis(120));
        info.last_upstream_rx_byte = Some(Duration::from_millis(200));
        info.first_downstream_tx_byte = Some(Duration::from_millis(121));
        info.last_downstream_tx_byte = Some(Duration::from_micros(225_999));
        info.end = Some(Duration::from_micros(226_400));
        info.response_code = Some(204);
        info.response_code_details = Some("via_upstream".into());
        let mut response = HeaderMap::new();
        response.insert("x-envoy-upstream-service-time", HeaderValue::from_static("100"));
        response.insert("content-type", HeaderValue::from_static("application/json"));
        info.response_headers = Some(Box::new(response));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        info.response_trailers = Some(Box::new(trailers));
        info.bytes_received = 154;
        info.bytes_sent = 0;
        info.route_name = Some("locations_route".into());
        info.upstream_cluster = Some(test_cluster("locations", None));
        info.upstream_host = Some("10.0.2.1:80".parse().unwrap());
        info.upstream_local_address = Some("10.0.0.1:40000".parse().unwrap());
        info.attempt_count = 1;
        info.requested_server_name = Some("locations.example.com".to_string());
        info
    }

    /// A cluster named `name`, with `alt_stat_name` when given.
    pub(crate) fn test_cluster(name: &str, alt_stat_name: Option<&str>) -> crate::http::stream_info::UpstreamCluster {
        let mut config = serde_json::json!({ "name": name, "connect_timeout": "1s" });
        if let Some(alt) = alt_stat_name {
            config["alt_stat_name"] = serde_json::json!(alt);
        }
        let config: legate_config::cluster::Cluster = legate_config::path::from_value(config).unwrap();
        let store = legate_stats::Store::new(1);
        let cluster = crate::upstream::cluster::Cluster::new(config, &store.scope(&format!("cluster.{name}"))).unwrap();
        crate::http::stream_info::UpstreamCluster(std::sync::Arc::new(cluster))
    }

    #[test]
    fn upstream_cluster_prints_the_stat_name_and_raw_the_name() {
        let mut info = stream_info();
        info.upstream_cluster = Some(test_cluster("svc_v1", Some("svc")));
        assert_eq!(text("%UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW%", &info), "svc svc_v1");
        info.upstream_cluster = Some(test_cluster("plain", None));
        assert_eq!(text("%UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW%", &info), "plain plain");
        info.upstream_cluster = None;
        assert_eq!(text("%UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW%", &info), "- -");
    }

    pub(crate) fn text(format: &str, info: &StreamInfo) -> String {
        Formatter::parse(format).unwrap().format(info)
    }

    #[test]
    fn timing_operators() {
        let info = stream_info();
        assert_eq!(
            text(
                "%REQUEST_DURATION% %REQUEST_TX_DURATION% %RESPONSE_DURATION% \
                 %RESPONSE_TX_DURATION% %DURATION%",
                &info
            ),
            "12 20 120 105 226"
        );
        assert_eq!(
            text(
                "%COMMON_DURATION(US_TX_BEG:US_RX_END)% %COMMON_DURATION(DS_RX_BEG:DS_TX_BEG:us)% \
                 %COMMON_DURATION(US_RX_BEG:US_RX_END:ns)% %COMMON_DURATION(US_CX_BEG:US_CX_END)%",
                &info
            ),
            "186 121000 80000000 -"
        );
        let unset =
            StreamInfo::new(Version::HTTP_11, 1, "127.0.0.1:5000".parse().unwrap(), "127.0.0.1:10000".parse().unwrap());
        assert_eq!(
            text("%REQUEST_DURATION% %REQUEST_TX_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION%", &unset),
            "- - - -"
        );
        // A stream still going: the time since it started.
        assert!(text("%DURATION%", &unset).parse::<u64>().is_ok());
    }

    #[test]
    fn start_time_operators() {
        let info = stream_info();
        assert_eq!(text("%START_TIME%", &info), "2016-04-15T20:17:00.310Z");
        assert_eq!(text("%START_TIME()%", &info), "2016-04-15T20:17:00.310Z");
        assert_eq!(text("%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%", &info), "2016/04/15T20:17:00+0000 1460751420");
        assert_eq!(text("%START_TIME(%s.%3f)%", &info), "1460751420.310");
        assert_eq!(text("%START_TIME(%s.%6f)%", &info), "1460751420.310000");
        assert_eq!(text("%START_TIME(%E6S|%j|%a %b|%Z)%", &info), "00.310000|106|Fri Apr|UTC");
        assert!(text("%EMIT_TIME(%Y)%", &info).starts_with("20"));
    }

    #[test]
    fn counters_codes_and_flags() {
        let mut info = stream_info();
        assert_eq!(
            text(
                "%BYTES_RECEIVED% %BYTES_SENT% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% \
                 %UPSTREAM_REQUEST_ATTEMPT_COUNT% %CONNECTION_ID%",
                &info
            ),
            "154 0 HTTP/2 204 via_upstream 1 7"
        );
        assert_eq!(text("%RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%", &info), "- -");
        info.set_flag(ResponseFlag::UpstreamRetryLimitExceeded);
        info.set_flag(ResponseFlag::UpstreamConnectionFailure);
        info.set_flag(ResponseFlag::OverloadManager);
        assert_eq!(
            text("%RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%", &info),
            "UF,URX,OM UpstreamConnectionFailure,UpstreamRetryLimitExceeded,OverloadManagerTerminated"
        );
        info.response_code = None;
        info.response_code_details = Some("upstream reset: connection\ttermination".into());
        assert_eq!(
            text("%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%|%RESPONSE_CODE_DETAILS(ALLOW_WHITESPACES)%", &info),
            "0 upstream_reset:_connection_termination|upstream reset: connection\ttermination"
        );
        info.protocol = Version::HTTP_11;
        assert_eq!(text("%PROTOCOL%", &info), "HTTP/1.1");
    }

    #[test]
    fn address_operators() {
        let mut info = stream_info();
        info.downstream_remote_address = "[2001:db8::1]:443".parse().unwrap();
        info.downstream_direct_remote_address = "10.1.1.1:3000".parse().unwrap();
        assert_eq!(
            text(
                "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% \
                 %DOWNSTREAM_REMOTE_PORT%",
                &info
            ),
            "[2001:db8::1]:443 2001:db8::1 443"
        );
        assert_eq!(
            text(
                "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT% \
                 %DOWNSTREAM_DIRECT_REMOTE_PORT%",
                &info
            ),
            "10.1.1.1:3000 10.1.1.1 3000"
        );
        assert_eq!(
            text(
                "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% \
                 %DOWNSTREAM_LOCAL_PORT%",
                &info
            ),
            "10.0.0.1:10000 10.0.0.1 10000"
        );
        assert_eq!(
            text(
                "%UPSTREAM_HOST% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT% \
                 %UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT%",
                &info
            ),
            "10.0.2.1:80 10.0.2.1 80 10.0.0.1:40000 10.0.0.1 40000"
        );
        info.upstream_host = None;
        info.upstream_local_address = None;
        assert_eq!(text("%UPSTREAM_HOST% %UPSTREAM_LOCAL_ADDRESS%", &info), "- -");
    }

    #[test]
    fn names_and_ids() {
        let mut info = stream_info();
        info.upstream_transport_failure_reason = Some("TLS error: 268435581 bad cert".into());
        assert_eq!(
            text(
                "%UPSTREAM_CLUSTER% %UPSTREAM_CLUSTER_RAW% %ROUTE_NAME% %VIRTUAL_CLUSTER_NAME% \
                 %REQUESTED_SERVER_NAME% %STREAM_ID% %UPSTREAM_TRANSPORT_FAILURE_REASON%",
                &info
            ),
            "locations locations locations_route - locations.example.com \
             cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2 TLS_error:_268435581_bad_cert"
        );
        let id = text("%UNIQUE_ID%", &info);
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, text("%UNIQUE_ID%", &info));
        let hostname = text("%HOSTNAME%", &info);
        assert!(!hostname.is_empty());
        std::env::set_var("LEGATE_ACCESS_LOG_TEST_ENV", "value-of-env");
        assert_eq!(
            text(
                "%ENVIRONMENT(LEGATE_ACCESS_LOG_TEST_ENV)% %ENVIRONMENT(LEGATE_ACCESS_LOG_TEST_ENV):5% \
                 %ENVIRONMENT(LEGATE_ACCESS_LOG_TEST_UNSET)%",
                &info
            ),
            "value-of-env value -"
        );
    }

    #[test]
    fn header_operators() {
        let mut info = stream_info();
        assert_eq!(
            text("%REQ(:METHOD)% %REQ(:path)% %REQ(:AUTHORITY)% %REQ(:SCHEME)%", &info),
            "POST /api/v1/locations locations http"
        );
        assert_eq!(text("%REQ(USER-AGENT):3% %REQ(X-MISSING?USER-AGENT)% %REQ(X-MISSING)%", &info), "nsq nsq2http -");
        // The first of several values, as Envoy's HeaderFormatter.
        assert_eq!(text("%REQ(X-MULTI)%", &info), "first");
        assert_eq!(
            text("%RESP(CONTENT-TYPE):11% %RESP(:STATUS)% %RESP(X-NONE?X-ENVOY-UPSTREAM-SERVICE-TIME)%", &info),
            "application 204 100"
        );
        assert_eq!(text("%TRAILER(GRPC-STATUS)% %TRAILER(GRPC-MESSAGE)%", &info), "0 -");
        info.request = None;
        info.response_headers = None;
        info.response_trailers = None;
        assert_eq!(text("%REQ(:METHOD)% %RESP(CONTENT-TYPE)% %TRAILER(GRPC-STATUS)%", &info), "- - -");
    }
}

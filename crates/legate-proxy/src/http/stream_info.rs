//! What is known about one HTTP stream, for access logs, stats and local replies (Envoy's
//! `StreamInfo`). Filled in by the connection manager and the router as the stream goes.

use crate::worker::clock;
use crate::worker::reused::{Reusable, SpareBoxes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Method, Version};

use super::response_flags::{ResponseFlag, ResponseFlags};

/// The downstream request as the access logs and formatters see it: as it arrived, and as
/// the router finalized it once it goes upstream (Envoy's router rewrites the downstream
/// request's own headers).
#[derive(Clone, Debug)]
pub struct RequestSnapshot {
    pub method: Method,
    /// Path and query (`:path`).
    pub path: String,
    /// `:authority` / `host`.
    pub authority: String,
    /// `:scheme`, as [`StreamInfo::scheme`].
    pub scheme: http::uri::Scheme,
    pub headers: HeaderMap,
}

thread_local! {
    static SPARE_STREAM_INFOS: SpareBoxes<StreamInfo> = const { SpareBoxes::new() };
}

/// The cluster a stream went to: a reference to it rather than a copy of its names.
pub struct UpstreamCluster(pub Arc<crate::upstream::cluster::Cluster>);

impl UpstreamCluster {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The name its stats go under: `alt_stat_name`, else its name (Envoy's
    /// `observabilityName`).
    pub fn observability_name(&self) -> &str {
        self.0.info.stat_name(&self.0.name)
    }
}

impl std::fmt::Debug for UpstreamCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every request boxes one: its box is reused.
impl Reusable for StreamInfo {
    fn spares() -> &'static LocalKey<SpareBoxes<Self>> {
        &SPARE_STREAM_INFOS
    }
}

#[derive(Debug)]
pub struct StreamInfo {
    /// Wall clock at the first byte of the request (`%START_TIME%`) where something knows it
    /// better than [`Self::start_time`] works it out (tests fix it); unset otherwise.
    pub start_time: Option<SystemTime>,
    /// Monotonic clock at the same point; every duration below is measured from it.
    pub start: Instant,
    pub protocol: Version,
    /// The request's `:scheme`: HTTP/2's, an HTTP/1.1 absolute URL's, else a trusted
    /// `x-forwarded-proto` (`http` or `https`), else the connection's (Envoy's
    /// `ConnectionManagerUtility::mutateRequestHeaders`). Set by the connection manager.
    pub scheme: http::uri::Scheme,
    pub connection_id: u64,
    pub downstream_remote_address: SocketAddr,
    /// The connection's peer, before `x-forwarded-for` is considered.
    pub downstream_direct_remote_address: SocketAddr,
    pub downstream_local_address: SocketAddr,
    /// Boxed, as the response's headers and trailers below: only access logs and formatters
    /// keep them, and a stream's information is made for every request.
    pub request: Option<Box<RequestSnapshot>>,
    pub request_id: Option<http::HeaderValue>,
    /// The whole request was received (`%REQUEST_DURATION%`).
    pub last_downstream_rx_byte: Option<Duration>,
    pub first_upstream_tx_byte: Option<Duration>,
    pub last_upstream_tx_byte: Option<Duration>,
    pub first_upstream_rx_byte: Option<Duration>,
    pub last_upstream_rx_byte: Option<Duration>,
    /// Response headers were sent downstream (`%RESPONSE_DURATION%`).
    pub first_downstream_tx_byte: Option<Duration>,
    pub last_downstream_tx_byte: Option<Duration>,
    /// The stream ended (`%DURATION%`).
    pub end: Option<Duration>,
    pub response_code: Option<u16>,
    /// Why the response is what it is (`%RESPONSE_CODE_DETAILS%`), e.g. `via_upstream`.
    pub response_code_details: Option<std::borrow::Cow<'static, str>>,
    pub response_flags: ResponseFlags,
    pub response_headers: Option<Box<HeaderMap>>,
    pub response_trailers: Option<Box<HeaderMap>>,
    /// Body bytes received from the downstream (`%BYTES_RECEIVED%`).
    pub bytes_received: u64,
    /// Body bytes sent to the downstream (`%BYTES_SENT%`).
    pub bytes_sent: u64,
    pub route_name: Option<Arc<str>>,
    pub virtual_host_name: Option<Arc<str>>,
    /// The cluster the router chose (`%UPSTREAM_CLUSTER%` prints its `alt_stat_name` where it
    /// has one, `%UPSTREAM_CLUSTER_RAW%` its name).
    pub upstream_cluster: Option<UpstreamCluster>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_local_address: Option<SocketAddr>,
    pub upstream_transport_failure_reason: Option<String>,
    /// Tries made upstream (`%UPSTREAM_REQUEST_ATTEMPT_COUNT%`).
    pub attempt_count: u32,
    /// The health check filter answered this request.
    pub health_check: bool,
    /// A gRPC request (`content-type: application/grpc…`): local replies to it are gRPC ones.
    pub grpc_request: bool,
    pub requested_server_name: Option<String>,
    /// The downstream TLS session, when the listener terminated TLS (`%DOWNSTREAM_TLS_*%`,
    /// `%DOWNSTREAM_PEER_*%`).
    pub downstream_ssl: Option<Arc<crate::tls::SslConnectionInfo>>,
    /// The body of a local reply, for `local_reply_config.body_format`.
    pub local_reply_body: Option<String>,
    /// The stream's tracing, where its connection manager traces.
    pub trace: Option<Box<crate::trace::StreamTrace>>,
}

impl StreamInfo {
    pub fn new(
        protocol: Version,
        connection_id: u64,
        downstream_remote_address: SocketAddr,
        downstream_local_address: SocketAddr,
    ) -> Self {
        StreamInfo {
            start_time: None,
            start: clock::now(),
            protocol,
            scheme: http::uri::Scheme::HTTP,
            connection_id,
            downstream_remote_address,
            downstream_direct_remote_address: downstream_remote_address,
            downstream_local_address,
            request: None,
            request_id: None,
            last_downstream_rx_byte: None,
            first_upstream_tx_byte: None,
            last_upstream_tx_byte: None,
            first_upstream_rx_byte: None,
            last_upstream_rx_byte: None,
            first_downstream_tx_byte: None,
            last_downstream_tx_byte: None,
            end: None,
            response_code: None,
            response_code_details: None,
            response_flags: ResponseFlags::default(),
            response_headers: None,
            response_trailers: None,
            bytes_received: 0,
            bytes_sent: 0,
            route_name: None,
            virtual_host_name: None,
            upstream_cluster: None,
            upstream_host: None,
            upstream_local_address: None,
            upstream_transport_failure_reason: None,
            attempt_count: 0,
            health_check: false,
            grpc_request: false,
            requested_server_name: None,
            downstream_ssl: None,
            local_reply_body: None,
            trace: None,
        }
    }

    /// The wall clock at the stream's start. Unless set, it is worked out from the monotonic
    /// start when first asked (an access log line): most streams are never asked, and a
    /// wall-clock read per request is not free. The two agree unless the wall clock is stepped
    /// while the stream lasts.
    pub fn start_time(&self) -> SystemTime {
        self.start_time.unwrap_or_else(|| {
            let now = SystemTime::now();
            now.checked_sub(self.elapsed()).unwrap_or(now)
        })
    }

    /// Time since the stream started.
    pub fn elapsed(&self) -> Duration {
        clock::since(self.start)
    }

    pub fn set_flag(&mut self, flag: ResponseFlag) {
        self.response_flags.set(flag);
    }

    /// `%PROTOCOL%`: `HTTP/1.1`, `HTTP/2`…
    pub fn protocol_str(&self) -> &'static str {
        match self.protocol {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_11 => "HTTP/1.1",
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => "-",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_information_stays_small() {
        // Made, written and dropped for every request: what only access logs keep is boxed.
        let size = std::mem::size_of::<StreamInfo>();
        assert!(size <= 640, "StreamInfo is {size} bytes");
    }

    #[test]
    fn the_start_time_is_worked_out_from_the_monotonic_start_unless_set() {
        let before = SystemTime::now();
        let mut info = StreamInfo::new(Version::HTTP_11, 1, ([127, 0, 0, 1], 1).into(), ([127, 0, 0, 1], 2).into());
        // A stream that started 1.5 s ago (the monotonic clock's reading at its start).
        info.start -= Duration::from_millis(1500);
        let start = info.start_time();
        let after = SystemTime::now();
        // The two clocks are read at slightly different moments: a few ms of slack.
        let earliest = before - Duration::from_millis(1505);
        let latest = after - Duration::from_millis(1495);
        assert!(start >= earliest && start <= latest, "{start:?} not within {earliest:?}..={latest:?}");
        // Asked again later, it is the same instant to within the clocks' reading gap.
        let again = info.start_time();
        let gap = again.duration_since(start).unwrap_or_else(|e| e.duration());
        assert!(gap < Duration::from_millis(50), "{gap:?}");

        info.start_time = Some(SystemTime::UNIX_EPOCH);
        assert_eq!(info.start_time(), SystemTime::UNIX_EPOCH);
    }
}

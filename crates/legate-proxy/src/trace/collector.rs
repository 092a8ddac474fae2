//! One export to a tracer's collector cluster: a POST through the cluster's pool on this
//! worker, counted in the cluster's stats like any upstream request (Envoy's async client).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, TE};
use http::{Request, StatusCode, Version};
use legate_config::cluster::RoutingPriority;

use crate::filters::http::router::UpstreamRequestGuard;
use crate::http::body::{AttemptBody, BodySource};
use crate::upstream::cluster_manager::ChooseHostError;
use crate::upstream::pool::{pool_protocol, Outgoing, PoolProtocol};
use crate::worker::WorkerContext;

/// What became of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// The worker knows no such cluster: nothing was sent.
    NoCluster,
    /// The collector's answer; legate's own where it could not reach one (503 with no host or
    /// no connection, 504 past the timeout), as Envoy's async client answers. `grpc_status`
    /// from the trailers (or a trailers-only head) of a gRPC export.
    Answered { status: StatusCode, grpc_status: Option<u32> },
    /// The exchange broke after the collector started answering.
    Failed,
}

/// What to send.
pub(super) struct Export<'a> {
    pub cluster: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub content_type: &'static str,
    pub body: Bytes,
    pub timeout: Duration,
    /// A gRPC call: HTTP/2 with `te: trailers`, whatever the cluster's protocol options say.
    pub grpc: bool,
}

pub(super) async fn post(worker: &Rc<WorkerContext>, export: Export<'_>) -> Sent {
    let local = |status| Sent::Answered { status, grpc_status: None };
    let (cluster, host) = match worker.cluster_manager.choose_host(export.cluster) {
        Ok(picked) => picked,
        Err(ChooseHostError::NoCluster) => return Sent::NoCluster,
        Err(ChooseHostError::NoHost(cluster)) => {
            cluster.stats().upstream_cx_none_healthy().inc();
            return local(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let length = export.body.len();
    let body = BodySource::buffered(std::iter::once(export.body).collect(), None);
    let mut guard = UpstreamRequestGuard::new(cluster.clone(), host.clone(), body.clone());
    let priority = RoutingPriority::Default;
    let protocol = if export.grpc { PoolProtocol::Http2 } else { pool_protocol(&cluster, Version::HTTP_11) };
    let pool = worker.pools().get(&cluster, &host, protocol, None);
    let exchange = async {
        let Ok(mut conn) = pool.acquire(priority, false).await else {
            return local(StatusCode::SERVICE_UNAVAILABLE);
        };
        let Some(slot) = cluster.breakers(priority).requests.try_acquire() else {
            cluster.stats().upstream_rq_pending_overflow().inc();
            conn.release(true);
            return local(StatusCode::SERVICE_UNAVAILABLE);
        };
        guard.attach(slot);
        let builder = Request::builder().method(http::Method::POST);
        let builder = if conn.protocol() == PoolProtocol::Http2 {
            let uri =
                http::Uri::builder().scheme("http").authority(export.authority).path_and_query(export.path).build();
            match uri {
                Ok(uri) => builder.version(Version::HTTP_2).uri(uri),
                Err(_) => return Sent::Failed,
            }
        } else {
            builder.version(Version::HTTP_11).uri(export.path).header(HOST, export.authority)
        };
        let mut builder = builder.header(CONTENT_TYPE, export.content_type).header(CONTENT_LENGTH, length);
        if export.grpc {
            builder = builder.header(TE, HeaderValue::from_static("trailers"));
        }
        let Ok(request) = builder.body(AttemptBody::new(body.clone())) else { return Sent::Failed };
        let Ok(response) = conn.send_request(Outgoing::Request(request)).await else {
            return local(StatusCode::SERVICE_UNAVAILABLE);
        };
        let status = response.status();
        worker.count_upstream_code(&cluster, status.as_u16());
        let grpc_of = |h: &http::HeaderMap| h.get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok());
        let head_grpc = grpc_of(response.headers());
        let collected = http_body_util::BodyExt::collect(response.into_body()).await;
        conn.release(collected.is_ok());
        match collected {
            Ok(collected) => {
                let grpc_status = collected.trailers().and_then(grpc_of).or(head_grpc);
                Sent::Answered { status, grpc_status }
            }
            Err(_) => Sent::Failed,
        }
    };
    let sent = tokio::time::timeout(export.timeout, exchange).await.unwrap_or(local(StatusCode::GATEWAY_TIMEOUT));
    guard.complete(matches!(sent, Sent::Answered { .. }));
    sent
}

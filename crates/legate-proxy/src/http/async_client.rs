//! A request legate makes itself to a cluster (Envoy's `AsyncClient`): a tracer's export, an
//! authorization check. It goes through the cluster's pool on this worker and is counted in
//! the cluster's stats like any upstream request.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, TE};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::BodyExt;
use legate_config::cluster::RoutingPriority;

use crate::filters::http::router::UpstreamRequestGuard;
use crate::http::body::{AttemptBody, BodySource};
use crate::upstream::cluster_manager::ChooseHostError;
use crate::upstream::pool::{pool_protocol, Outgoing, PoolProtocol};
use crate::worker::WorkerContext;

/// What to send.
pub struct AsyncRequest<'a> {
    pub cluster: &'a str,
    pub authority: &'a str,
    pub method: Method,
    /// Path and query.
    pub path: &'a str,
    /// Headers besides `host` / `:authority`, `content-length` and, for gRPC, `te`.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
    /// A gRPC call: HTTP/2 with `te: trailers`, whatever the cluster's protocol options say.
    pub grpc: bool,
}

/// What became of it.
#[derive(Debug)]
pub enum AsyncResponse {
    /// The worker knows no such cluster: nothing was sent.
    NoCluster,
    /// No answer from the cluster: no host, no connection, no room (503), or none within the
    /// timeout (504), as Envoy's async client answers itself.
    Local(StatusCode),
    /// The cluster's answer, read whole.
    Answered(Box<Answer>),
    /// The exchange broke after the answer started.
    Failed,
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl AsyncResponse {
    /// The status the caller sees: the cluster's, or legate's own.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            AsyncResponse::Local(status) => Some(*status),
            AsyncResponse::Answered(answer) => Some(answer.status),
            AsyncResponse::NoCluster | AsyncResponse::Failed => None,
        }
    }

    /// `grpc-status` of an answer, from its trailers or a trailers-only head.
    pub fn grpc_status(&self) -> Option<u32> {
        let AsyncResponse::Answered(answer) = self else { return None };
        let of = |h: &HeaderMap| h.get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok());
        answer.trailers.as_ref().and_then(of).or_else(|| of(&answer.headers))
    }
}

pub async fn send(worker: &Rc<WorkerContext>, request: AsyncRequest<'_>) -> AsyncResponse {
    let (cluster, host) = match worker.cluster_manager.choose_host(request.cluster) {
        Ok(picked) => picked,
        Err(ChooseHostError::NoCluster) => return AsyncResponse::NoCluster,
        Err(ChooseHostError::NoHost(cluster)) => {
            cluster.stats().upstream_cx_none_healthy().inc();
            return AsyncResponse::Local(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let length = request.body.len();
    let body = BodySource::buffered(std::iter::once(request.body).filter(|b| !b.is_empty()).collect(), None);
    let mut guard = UpstreamRequestGuard::new(cluster.clone(), host.clone(), body.clone());
    let priority = RoutingPriority::Default;
    let protocol = if request.grpc { PoolProtocol::Http2 } else { pool_protocol(&cluster, Version::HTTP_11) };
    let pool = worker.pools().get(&cluster, &host, protocol, None);
    let unavailable = AsyncResponse::Local(StatusCode::SERVICE_UNAVAILABLE);
    let exchange = async {
        let Ok(mut conn) = pool.acquire(priority, false).await else { return unavailable };
        let Some(slot) = cluster.breakers(priority).requests.try_acquire() else {
            cluster.stats().upstream_rq_pending_overflow().inc();
            conn.release(true);
            return unavailable;
        };
        guard.attach(slot);
        let builder = Request::builder().method(request.method.clone());
        let builder = if conn.protocol() == PoolProtocol::Http2 {
            let uri =
                http::Uri::builder().scheme("http").authority(request.authority).path_and_query(request.path).build();
            match uri {
                Ok(uri) => builder.version(Version::HTTP_2).uri(uri),
                Err(_) => return AsyncResponse::Failed,
            }
        } else {
            builder.version(Version::HTTP_11).uri(request.path).header(HOST, request.authority)
        };
        let Ok(mut outgoing) = builder.body(AttemptBody::new(body.clone())) else { return AsyncResponse::Failed };
        let headers = outgoing.headers_mut();
        for (name, value) in &request.headers {
            headers.append(name, value.clone());
        }
        if length > 0 || request.method == Method::POST {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
        if request.grpc {
            headers.insert(TE, HeaderValue::from_static("trailers"));
            headers.entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("application/grpc"));
        }
        let Ok(response) = conn.send_request(Outgoing::Request(outgoing)).await else { return unavailable };
        let (head, incoming) = response.into_parts();
        worker.count_upstream_code(&cluster, head.status.as_u16());
        let collected = incoming.collect().await;
        conn.release(collected.is_ok());
        match collected {
            Ok(collected) => {
                let trailers = collected.trailers().cloned();
                AsyncResponse::Answered(Box::new(Answer {
                    status: head.status,
                    headers: head.headers,
                    body: collected.to_bytes(),
                    trailers,
                }))
            }
            Err(_) => AsyncResponse::Failed,
        }
    };
    let response = tokio::time::timeout(request.timeout, exchange)
        .await
        .unwrap_or(AsyncResponse::Local(StatusCode::GATEWAY_TIMEOUT));
    guard.complete(matches!(response, AsyncResponse::Answered(_)));
    response
}

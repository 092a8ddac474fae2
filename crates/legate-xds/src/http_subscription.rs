//! REST subscriptions (`api_config_source` with `api_type: REST`, Envoy's
//! `HttpSubscriptionImpl`): a `DiscoveryRequest` in proto3 JSON POSTed to
//! `/v3/discovery:<type>` on `cluster_names[0]` every `refresh_delay`, each within
//! `request_timeout`.
//!
//! There is no stream, so ACK and NACK ride on the next poll: its `version_info` is the last
//! accepted version and, after a rejection, `error_detail` carries why (cleared once an update
//! is accepted). As Envoy's `RestApiFetcher`: `304 Not Modified` means no change; any other
//! status but 200, a timeout or a connection error is a connection failure.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use legate_config::config_source::ApiConfigSource;
use legate_config::core::Node;
use legate_proxy::tls::client::Alpn;
use legate_proxy::upstream::cluster_manager::SharedClusters;
use prost::Message;
use serde_json::Value;

use crate::cluster_connect;
use crate::decode::{self, RESOURCE_WRAPPER_TYPE_URL};
use crate::resource::DecodedResource;
use crate::subscription::WatchMap;

const DISCOVERY_REQUEST_TYPE_URL: &str = "type.googleapis.com/envoy.service.discovery.v3.DiscoveryRequest";

/// gRPC's INTERNAL, the code of Envoy's rejections.
const NACK_CODE: i32 = 13;

/// What one poll brought.
enum Fetched {
    /// 200: a `DiscoveryResponse`.
    Response(Value),
    /// 304: nothing changed.
    NotModified,
}

/// Starts polling for `map`'s watches, on the calling (main) thread's `LocalSet`.
pub(crate) fn start(api: ApiConfigSource, node: Node, clusters: Arc<SharedClusters>, map: Rc<WatchMap>) {
    tokio::task::spawn_local(async move {
        let cluster_name = api.cluster_name().unwrap_or_default().to_string();
        let node = match crate::node::node_message(&node) {
            Ok(node) => Some(node),
            Err(e) => {
                tracing::error!("REST xDS: {e}");
                None
            }
        };
        let mut accepted_version = String::new();
        let mut error_detail: Option<Status> = None;
        // Poll once the first watch is in (it is added right after the start).
        tokio::task::yield_now().await;
        loop {
            if map.is_empty() && Rc::strong_count(&map) == 1 {
                return;
            }
            let request = DiscoveryRequest {
                version_info: accepted_version.clone(),
                node: node.clone(),
                resource_names: map.interest().map(|n| n.into_iter().collect()).unwrap_or_default(),
                type_url: map.resource_type.type_url().to_string(),
                error_detail: error_detail.clone(),
                ..Default::default()
            };
            map.count_attempt();
            let poll = fetch(&clusters, &cluster_name, map.resource_type.rest_path(), &request);
            match tokio::time::timeout(api.request_timeout(), poll).await {
                Ok(Ok(Fetched::Response(response))) => match deliver(&map, response) {
                    Ok(version) => {
                        accepted_version = version;
                        error_detail = None;
                    }
                    Err(detail) => {
                        tracing::warn!("{} REST update rejected: {detail}", map.resource_type.short_name());
                        error_detail = Some(Status { code: NACK_CODE, message: detail, details: Vec::new() });
                    }
                },
                Ok(Ok(Fetched::NotModified)) => {}
                Ok(Err(e)) => {
                    tracing::warn!("{} REST fetch failed: {e}", map.resource_type.short_name());
                    map.fail(&e);
                }
                Err(_) => {
                    tracing::warn!("{} REST fetch timed out", map.resource_type.short_name());
                    map.fail("REST fetch timed out");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(api.refresh_delay()) => {}
                // A new name (another cluster's EDS) is asked for at once.
                _ = map.interest_changed.notified() => {}
            }
        }
    });
}

/// One POST on a fresh HTTP/1.1 connection to the cluster.
async fn fetch(
    clusters: &SharedClusters,
    cluster_name: &str,
    path: &str,
    request: &DiscoveryRequest,
) -> Result<Fetched, String> {
    let body = decode::to_json(DISCOVERY_REQUEST_TYPE_URL, &request.encode_to_vec())?;
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let (_, socket) = cluster_connect::connect(clusters, cluster_name, Alpn::Http1).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(socket))
        .await
        .map_err(|e| format!("{cluster_name}: {e}"))?;
    let connection = tokio::task::spawn_local(connection);
    let uri = Uri::builder().path_and_query(path).build().map_err(|e| e.to_string())?;
    let request = Request::post(uri)
        .header(http::header::HOST, cluster_name)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| format!("{cluster_name}: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("{cluster_name}: {e}"))?.to_bytes();
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(Fetched::Response)
                .map_err(|e| format!("{cluster_name}: malformed DiscoveryResponse: {e}")),
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
            other => Err(format!("{cluster_name}: HTTP status {}", other.as_u16())),
        }
    }
    .await;
    connection.abort();
    result
}

/// Decodes and delivers a JSON `DiscoveryResponse`; its `version_info` once accepted.
fn deliver(map: &WatchMap, mut response: Value) -> Result<String, String> {
    legate_config::normalize::normalize(&mut response);
    let decoded = (|| {
        let Value::Object(fields) = &mut response else {
            return Err("a DiscoveryResponse must be an object".to_string());
        };
        let version = match fields.get("version_info") {
            Some(Value::String(v)) => v.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let items = match fields.remove("resources") {
            Some(Value::Array(items)) => items,
            None => Vec::new(),
            Some(_) => return Err("resources: must be a list".to_string()),
        };
        let resources = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let item = match item {
                    Value::Object(mut wrapper)
                        if wrapper.get("@type").and_then(Value::as_str) == Some(RESOURCE_WRAPPER_TYPE_URL) =>
                    {
                        wrapper.remove("resource").unwrap_or(Value::Null)
                    }
                    other => other,
                };
                DecodedResource::from_json(map.resource_type, item, &version)
                    .map_err(|e| format!("resources[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((version, resources))
    })();
    let (version, resources) = decoded.inspect_err(|_| map.count_rejected())?;
    map.deliver_state_of_the_world(&version, resources)?;
    Ok(version)
}

//! The REST control plane of [`super`]: `POST /v3/discovery:<type>` over HTTP/1.1.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use serde_json::Value;

use super::{decode_json, encode_json, ServerThread, Shared, XdsRequest, XdsResource, POOL};

/// The REST control plane: `POST /v3/discovery:<type>` over HTTP/1.1 answered with the
/// current resources as a JSON `DiscoveryResponse`, each request recorded as an
/// [`XdsRequest`] (its `version_info` standing in for the nonce REST does not have).
pub struct RestControlPlane {
    shared: Arc<Shared>,
    address: SocketAddr,
    _server: ServerThread,
}

impl RestControlPlane {
    /// Starts on `127.0.0.1:0`.
    pub fn start() -> RestControlPlane {
        let shared = Shared::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address");
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rest-control-plane".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let accept = async {
                        loop {
                            let Ok((socket, _)) = listener.accept().await else { continue };
                            let state = state.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |request| {
                                    let state = state.clone();
                                    async move { Ok::<_, std::convert::Infallible>(rest_answer(&state, request).await) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                                    .await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = on_shutdown => {}
                    }
                });
            })
            .expect("REST control plane thread");
        RestControlPlane { shared, address, _server: ServerThread { shutdown: Some(shutdown), thread: Some(thread) } }
    }

    /// Where legate's REST cluster points.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces the resources of `type_url` with `resources` (proto3 JSON) at `version`.
    pub fn set(&self, type_url: &str, version: &str, resources: Vec<Value>) {
        let resources = resources.iter().map(|r| XdsResource::from_json(type_url, r)).collect();
        self.shared.set(type_url, version, resources);
    }

    /// Answers every request with this HTTP status and no body (`None`: serve normally).
    pub fn set_status(&self, status: Option<u16>) {
        self.shared.lock().rest_status = status;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<XdsRequest> {
        self.shared.lock().requests.clone()
    }

    /// Waits for a request `matches` accepts.
    pub fn wait_for_request(&self, what: &str, matches: impl Fn(&XdsRequest) -> bool) -> XdsRequest {
        self.shared.wait_for(what, matches)
    }

    /// Waits until `n` requests in all were received.
    pub fn wait_for_requests(&self, n: usize) -> XdsRequest {
        self.shared.wait_for_nth(&format!("{n} requests"), n, |_| true)
    }
}

async fn rest_answer(
    shared: &Shared,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<http_body_util::Full<Bytes>> {
    use http_body_util::BodyExt;
    let reply = |status: u16, body: Vec<u8>| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(body)))
            .expect("response")
    };
    let path = request.uri().path().to_string();
    let Ok(body) = request.into_body().collect().await else { return reply(400, Vec::new()) };
    let Ok(json) = serde_json::from_slice::<Value>(&body.to_bytes()) else { return reply(400, Vec::new()) };
    let Ok(decoded) = encode_json("type.googleapis.com/envoy.service.discovery.v3.DiscoveryRequest", &json)
        .and_then(|bytes| DiscoveryRequest::decode(bytes.as_slice()).map_err(|e| e.to_string()))
    else {
        return reply(400, Vec::new());
    };
    shared.record(XdsRequest {
        type_url: decoded.type_url.clone(),
        version_info: decoded.version_info.clone(),
        resource_names: decoded.resource_names.clone(),
        error_detail: decoded.error_detail.as_ref().map(|s| s.message.clone()),
        error_code: decoded.error_detail.as_ref().map(|s| s.code),
        node_id: decoded.node.as_ref().map(|n| n.id.clone()),
        ..Default::default()
    });
    if let Some(status) = shared.lock().rest_status {
        return reply(status, Vec::new());
    }
    let type_url = decoded.type_url;
    if !path.starts_with("/v3/discovery:") {
        return reply(404, Vec::new());
    }
    let Some(snapshot) = shared.snapshot(&type_url) else { return reply(304, Vec::new()) };
    let mut resources = Vec::new();
    for resource in &snapshot.resources {
        if !decoded.resource_names.is_empty() && !decoded.resource_names.contains(&resource.name) {
            continue;
        }
        match decode_json(&POOL, &resource.any.type_url, &resource.any.value) {
            Ok(Value::Object(mut fields)) => {
                fields.insert("@type".into(), Value::String(resource.any.type_url.clone()));
                resources.push(Value::Object(fields));
            }
            _ => return reply(500, Vec::new()),
        }
    }
    let body = serde_json::json!({"version_info": snapshot.version, "resources": resources, "type_url": type_url});
    reply(200, serde_json::to_vec(&body).unwrap_or_default())
}

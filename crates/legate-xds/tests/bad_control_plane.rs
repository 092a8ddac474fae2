//! A control plane that breaks the protocol: a message on the stream that is not a
//! `DiscoveryResponse` fails the stream (there is no response to NACK), legate keeps what it
//! accepted, tells the watches, and reconnects.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use legate_xds::{decode, ResourceType};
use prost::Message;
use serde_json::json;
use support::{control_plane_cluster, grpc_api, Event, Harness};

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.extend_from_slice(message);
    framed.freeze()
}

/// A response body that sends its bytes and then stays open, as a stream does.
struct OpenBody(Option<Bytes>);

impl http_body::Body for OpenBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(data) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
            None => std::task::Poll::Pending,
        }
    }
}

/// An h2c server answering every call with one good response, then a message that is not a
/// protobuf at all.
fn serve_bad_stream(calls: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let good = DiscoveryResponse {
        version_info: "1".into(),
        resources: vec![decode::any_from_json(ResourceType::Cluster.type_url(), &json!({"name": "a"})).unwrap()],
        type_url: ResourceType::Cluster.type_url().into(),
        nonce: "n1".into(),
        ..Default::default()
    };
    let mut body = grpc_frame(&good.encode_to_vec()).to_vec();
    body.extend_from_slice(&grpc_frame(&[0xff, 0xff, 0xff]));
    let body = Bytes::from(body);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let body = body.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(OpenBody(Some(body.clone())))
                            .unwrap();
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
    });
    address
}

#[test]
fn a_message_that_is_not_a_response_fails_the_stream_and_legate_reconnects() {
    let calls = Arc::new(AtomicUsize::new(0));
    let address = serve_bad_stream(calls.clone());
    let harness =
        Harness::start(vec![control_plane_cluster("xds_cluster", address)], Some(grpc_api("AGGREGATED_GRPC")));
    harness.subscribe("cds", json!({"ads": {}}), ResourceType::Cluster, &[]).unwrap();
    assert_eq!(harness.wait_for_version("cds", "1").names(), ["a"]);
    let failure = harness.wait_for("cds", "stream failure", |e| matches!(e, Event::Failed(_)));
    let Event::Failed(reason) = failure else { unreachable!() };
    assert!(reason.contains("malformed DiscoveryResponse"), "{reason}");
    // What was accepted stays: nothing removed it.
    assert!(harness.events("cds").iter().all(|e| !matches!(e, Event::Update { removed, .. } if !removed.is_empty())));
    let deadline = std::time::Instant::now() + support::WAIT;
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "legate reconnects");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

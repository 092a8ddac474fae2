//! An h2c client (HTTP/2 over cleartext with prior knowledge): hyper's HTTP/2 client on a
//! small runtime made for the call. Used to check that legate speaks HTTP/2 downstream and
//! multiplexes streams on one connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::admin::HttpResponse;

/// Bound on one h2c call, requests included.
const H2C_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET path` over a new h2c connection; panics on failure. A `host` in `headers` becomes the
/// `:authority` (default: `addr`).
pub fn h2c_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    h2c_request(addr, "GET", path, headers, b"")
}

/// One request over a new h2c connection; panics on failure.
pub fn h2c_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let request = Request::new(addr, method, path, headers, body);
    run(addr, async move {
        let mut sender = handshake(addr).await?;
        send(&mut sender, request).await
    })
}

/// `n` concurrent `GET path` streams over one h2c connection; panics if any fails. The
/// responses are in request order.
pub fn h2c_many(addr: SocketAddr, path: &str, n: usize) -> Vec<HttpResponse> {
    let path = path.to_string();
    run(addr, async move {
        let sender = handshake(addr).await?;
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let mut sender = sender.clone();
                let request = Request::new(addr, "GET", &path, &[], b"");
                tokio::spawn(async move { send(&mut sender, request).await })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for (i, task) in tasks.into_iter().enumerate() {
            let response =
                task.await.map_err(|e| format!("stream {i}: {e}"))?.map_err(|e| format!("stream {i}: {e}"))?;
            out.push(response);
        }
        Ok(out)
    })
}

struct Request {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Request {
    fn new(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let authority = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map_or_else(|| addr.to_string(), |(_, v)| v.to_string());
        Request {
            method: method.to_string(),
            uri: format!("http://{authority}{path}"),
            headers: headers
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Bytes::copy_from_slice(body),
        }
    }
}

fn run<T>(addr: SocketAddr, f: impl std::future::Future<Output = Result<T, String>>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match runtime.block_on(async { tokio::time::timeout(H2C_TIMEOUT, f).await }) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("h2c to {addr}: {e}"),
        Err(_) => panic!("h2c to {addr}: no answer within {H2C_TIMEOUT:?}"),
    }
}

async fn handshake(addr: SocketAddr) -> Result<http2::SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn send(sender: &mut http2::SendRequest<Full<Bytes>>, request: Request) -> Result<HttpResponse, String> {
    let mut builder = hyper::Request::builder().method(request.method.as_str()).uri(request.uri.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder.body(Full::new(request.body)).map_err(|e| format!("request: {e}"))?;
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| format!("response body: {e}"))?.to_bytes();
    Ok(HttpResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

//! legate's HTTP/1.1 codecs with raw bytes on the wire.
//!
//! The client codec against upstreams that answer with raw bytes: every way RFC 9112
//! delimits a response body, interim responses, trailers, bodies going upstream, which
//! connections are reused and which are not, and responses that break the protocol.
//!
//! The server codec against clients that write raw bytes: pipelined requests with every
//! body framing, `100 Continue`, how responses are framed for each request, and a client
//! that goes away while its request is in flight. (Malformed requests are in
//! `http_malformed.rs`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use legate_testing::config::http_bootstrap;
use legate_testing::{legate_bin, HttpProxy, TcpServer};

/// One request as the upstream read it: the head's lines, and the body with chunked framing
/// removed.
#[derive(Debug, Clone, Default)]
struct Seen {
    head: Vec<String>,
    body: Vec<u8>,
    chunked: bool,
    trailers: Vec<String>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
    }
}

/// Reads one request; `None` at EOF.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut seen = Seen::default();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        seen.head.push(line);
    }
    if seen.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        seen.chunked = true;
        loop {
            let size = read_line(reader)?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            seen.body.extend_from_slice(&chunk[..size]);
        }
        loop {
            let line = read_line(reader)?;
            if line.is_empty() {
                break;
            }
            seen.trailers.push(line);
        }
    } else if let Some(length) = seen.header("content-length") {
        let mut body = vec![0u8; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
        seen.body = body;
    }
    Some(seen)
}

/// An upstream that answers each request with `respond(request)`: the bytes to write, and
/// whether to close the connection after them. It records every request it read.
struct Scripted {
    server: TcpServer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    fn start(respond: impl Fn(&Seen) -> (Vec<u8>, bool) + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = TcpServer::start(move |stream| {
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            while let Some(request) = read_request(&mut reader) {
                log.lock().unwrap().push(request.clone());
                let (bytes, close) = respond(&request);
                if writer.write_all(&bytes).is_err() || close {
                    return;
                }
            }
        });
        Scripted { server, seen }
    }

    fn proxy(&self) -> HttpProxy {
        HttpProxy::start(legate_bin!(), http_bootstrap(&[self.server.addr()]))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn always(response: &'static str) -> impl Fn(&Seen) -> (Vec<u8>, bool) {
    move |_| (response.as_bytes().to_vec(), false)
}

#[test]
fn a_chunked_response_with_extensions_and_trailers_arrives_whole_and_the_connection_is_reused() {
    let upstream = Scripted::start(always(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n",
    ));
    let px = upstream.proxy();
    let mut client = px.client();

    for i in 0..2 {
        let r = client.get("/");
        assert_eq!((r.status, r.body.as_str()), (200, "hello world"), "request {i}: {r:?}");
    }

    assert_eq!(upstream.server.accepted(), 1, "both requests on one upstream connection");
    px.legate.wait_stat("cluster.backend.upstream_rq_200", 2);
}

#[test]
fn a_body_delimited_by_the_close_arrives_whole_and_its_connection_is_not_reused() {
    let upstream = Scripted::start(|_| (b"HTTP/1.1 200 OK\r\n\r\nuntil the close".to_vec(), true));
    let px = upstream.proxy();
    let mut client = px.client();

    for i in 0..2 {
        let r = client.get("/");
        assert_eq!((r.status, r.body.as_str()), (200, "until the close"), "request {i}: {r:?}");
    }

    assert_eq!(upstream.server.accepted(), 2);
}

#[test]
fn interim_responses_are_dropped_and_the_final_one_is_forwarded() {
    let upstream = Scripted::start(always(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone",
    ));
    let px = upstream.proxy();

    let r = px.client().send("POST", "/", &[], b"payload");

    assert_eq!((r.status, r.body.as_str()), (201, "done"), "{r:?}");
    assert_eq!(r.header("link"), None, "no header of an interim response reaches the final one");
}

#[test]
fn responses_without_a_body_keep_the_connection() {
    // A HEAD response announces the length of the body it does not carry; 204 and 304 have
    // none either.
    let upstream = Scripted::start(|seen: &Seen| {
        let response: &[u8] = match seen.head.first().map(String::as_str) {
            Some(line) if line.starts_with("HEAD") => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            Some(line) if line.contains("/empty") => b"HTTP/1.1 204 No Content\r\n\r\n",
            Some(line) if line.contains("/cached") => b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        };
        (response.to_vec(), false)
    });
    let px = upstream.proxy();
    let mut client = px.client();

    let head = client.send("HEAD", "/", &[], b"");
    assert_eq!((head.status, head.header("content-length")), (200, Some("10")), "{head:?}");
    assert_eq!(client.get("/empty").status, 204);
    assert_eq!(client.get("/cached").status, 304);
    let r = client.get("/");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");

    assert_eq!(upstream.server.accepted(), 1);
}

#[test]
fn connection_close_from_the_upstream_is_honoured() {
    // The upstream says it closes, but does not: legate must not send another request on it.
    let upstream = Scripted::start(always("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"));
    let px = upstream.proxy();
    let mut client = px.client();

    for _ in 0..2 {
        let r = client.get("/");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    }

    assert_eq!(upstream.server.accepted(), 2);
    // An HTTP/1.0 response without keep-alive ends its connection too.
    let old = Scripted::start(always("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"));
    let px = old.proxy();
    let mut client = px.client();
    for _ in 0..2 {
        assert_eq!(client.get("/").status, 200);
    }
    assert_eq!(old.server.accepted(), 2);
}

#[test]
fn request_bodies_go_upstream_with_their_framing() {
    let upstream = Scripted::start(|seen: &Seen| {
        let body = format!("{} bytes", seen.body.len());
        (format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes(), false)
    });
    let px = upstream.proxy();
    let mut client = px.client();

    // A content-length body, small and large (the large one is written without a copy).
    let r = client.send("POST", "/small", &[], b"hello");
    assert_eq!(r.body, "5 bytes");
    let large = vec![b'x'; 300_000];
    let r = client.send("PUT", "/large", &[], &large);
    assert_eq!(r.body, "300000 bytes");
    // A chunked body, with a trailer.
    let chunked = b"4\r\nabcd\r\n3\r\nefg\r\n0\r\nx-sum: 7\r\n\r\n";
    let r = client.send("POST", "/chunked", &[("transfer-encoding", "chunked")], chunked);
    assert_eq!(r.body, "7 bytes");
    // No body at all: no framing headers.
    assert_eq!(client.get("/none").body, "0 bytes");

    let seen = upstream.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!((seen[0].header("content-length"), seen[0].body.as_slice()), (Some("5"), &b"hello"[..]));
    assert_eq!(seen[1].body.len(), 300_000);
    assert!(seen[1].body.iter().all(|&b| b == b'x'));
    assert!(seen[2].chunked, "{:?}", seen[2]);
    assert_eq!(seen[2].body, b"abcdefg");
    assert_eq!(seen[2].trailers, vec!["x-sum: 7".to_string()]);
    assert_eq!((seen[3].header("content-length"), seen[3].header("transfer-encoding")), (None, None));
    assert_eq!(upstream.server.accepted(), 1);
}

#[test]
fn responses_that_break_the_protocol_are_502_upe() {
    let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok", "a".repeat(70 * 1024));
    let huge: &'static str = Box::leak(huge.into_boxed_str());
    let cases: [(&str, &'static str); 4] = [
        ("garbage", "HTTP/1.1 two hundred\r\n\r\n"),
        ("content-length", "HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\nok"),
        ("conflicting lengths", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"),
        ("oversized head", huge),
    ];
    for (what, response) in cases {
        let upstream = Scripted::start(always(response));
        let px = upstream.proxy();

        let r = px.client().get("/");

        assert_eq!(r.status, 502, "{what}: {r:?}");
        assert_eq!(
            r.body, "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
            "{what}"
        );
        px.legate.wait_stat("cluster.backend.upstream_rq_5xx", 1);
    }
}

#[test]
fn a_malformed_chunk_resets_the_stream_after_its_head() {
    let upstream = Scripted::start(always("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"));
    let px = upstream.proxy();
    let mut client = px.client();

    // The head went downstream: the stream can only be reset, and the client sees the body cut.
    let r = client.try_send("GET", "/", &[], b"");
    assert!(r.is_err() || r.as_ref().is_ok_and(|r| r.body != "hello"), "{r:?}");
    px.legate.wait_stat("cluster.backend.upstream_rq_rx_reset", 1);
    px.legate.wait_stat("http.ingress.downstream_rq_tx_reset", 1);
}

#[test]
fn an_upstream_closing_an_idle_pooled_connection_is_noticed_at_once() {
    let upstream = TcpServer::start(|stream| {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        if read_request(&mut reader).is_some() {
            let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            std::thread::sleep(Duration::from_millis(300));
        }
        // Dropping both halves closes the idle connection.
    });
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[upstream.addr()]));

    assert_eq!(px.client().get("/").status, 200);
    px.legate.wait_stat("cluster.backend.upstream_cx_destroy_remote", 1);
    px.legate.wait_stat("cluster.backend.upstream_cx_active", 0);
    assert_eq!(px.legate.stat("cluster.backend.upstream_cx_destroy_with_active_rq"), Some(0));

    // The next request gets a new connection, without a failure.
    let r = px.client().get("/");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    assert_eq!(upstream.accepted(), 2);
}

/// Reads one response from a raw client connection: the head's lines and the body (by
/// content-length or chunked; `None` framing reads until the close).
fn read_response(reader: &mut BufReader<TcpStream>, head_request: bool) -> Option<(Vec<String>, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let seen = Seen { head: head.clone(), ..Seen::default() };
    let mut body = Vec::new();
    if head_request || head.first().is_some_and(|l| l.contains(" 100 ") || l.contains(" 204 ")) {
        return Some((head, body));
    }
    if seen.header("transfer-encoding").is_some() {
        loop {
            let size = usize::from_str_radix(read_line(reader)?.trim(), 16).ok()?;
            if size == 0 {
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = seen.header("content-length") {
        body = vec![0u8; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
    } else {
        reader.read_to_end(&mut body).ok()?;
    }
    Some((head, body))
}

fn raw_client(px: &HttpProxy) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(px.legate.connect_addr("ingress")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

/// Echoes what the upstream read: the path, the body and the trailers.
fn echo(seen: &Seen) -> (Vec<u8>, bool) {
    let path = seen.head.first().and_then(|l| l.split(' ').nth(1)).unwrap_or_default();
    let body = format!("{path} {} {}", String::from_utf8_lossy(&seen.body), seen.trailers.join(","));
    (format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes(), false)
}

#[test]
fn pipelined_requests_with_every_body_framing_are_answered_in_order() {
    let upstream = Scripted::start(echo);
    let px = upstream.proxy();
    let (mut stream, mut reader) = raw_client(&px);

    stream
        .write_all(
            b"POST /sized HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello\
              POST /chunked HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 9\r\n\r\n\
              GET /empty HTTP/1.1\r\nhost: a\r\n\r\n",
        )
        .unwrap();

    let bodies: Vec<String> = (0..3)
        .map(|i| {
            let (head, body) = read_response(&mut reader, false).unwrap_or_else(|| panic!("response {i}"));
            assert_eq!(head[0], "HTTP/1.1 200 OK", "response {i}");
            assert!(head.iter().any(|l| l.starts_with("date: ")), "a date on every response: {head:?}");
            String::from_utf8(body).unwrap()
        })
        .collect();
    assert_eq!(bodies, ["/sized hello ", "/chunked abcde x-sum: 9", "/empty  "]);
    let seen = upstream.seen();
    assert_eq!(seen[1].header("transfer-encoding"), Some("chunked"), "{:?}", seen[1]);
    px.legate.wait_stat("http.ingress.downstream_rq_completed", 3);
    assert_eq!(px.legate.stat("http.ingress.downstream_cx_total"), Some(1));
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let upstream = Scripted::start(echo);
    let px = upstream.proxy();
    let (mut stream, mut reader) = raw_client(&px);

    stream.write_all(b"PUT /up HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n").unwrap();
    let (interim, _) = read_response(&mut reader, false).unwrap();
    assert_eq!(interim, ["HTTP/1.1 100 Continue"]);
    stream.write_all(b"data").unwrap();
    let (head, body) = read_response(&mut reader, false).unwrap();

    assert_eq!(head[0], "HTTP/1.1 200 OK");
    assert_eq!(body, b"/up data ");
}

#[test]
fn responses_are_framed_for_their_request() {
    let upstream = Scripted::start(|seen: &Seen| {
        let response: &[u8] = match seen.head.first().map(String::as_str) {
            Some(l) if l.starts_with("HEAD") => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            Some(l) if l.contains("/stream") => b"HTTP/1.1 200 OK\r\n\r\nuntil the close",
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        };
        (response.to_vec(), seen.head.first().is_some_and(|l| l.contains("/stream")))
    });
    let px = upstream.proxy();
    let (mut stream, mut reader) = raw_client(&px);

    // HEAD: the length of the body it does not carry, and the connection goes on.
    stream.write_all(b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut reader, true).unwrap();
    assert!(head.contains(&"content-length: 10".to_string()), "{head:?}");
    // A body of unknown length goes out chunked.
    stream.write_all(b"GET /stream HTTP/1.1\r\nhost: a\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut reader, false).unwrap();
    assert!(head.contains(&"transfer-encoding: chunked".to_string()), "{head:?}");
    assert_eq!(body, b"until the close");
    // `connection: close` from the client: answered, then closed.
    stream.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").unwrap();
    let (head, body) = read_response(&mut reader, false).unwrap();
    assert!(head.contains(&"connection: close".to_string()), "{head:?}");
    assert_eq!(body, b"ok");
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0, "closed after the response");
}

#[test]
fn a_client_that_goes_away_mid_request_resets_its_stream() {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let upstream = Scripted::start(move |_| {
        // Answers only once the test lets it.
        let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(20));
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false)
    });
    let px = upstream.proxy();
    let (mut stream, _reader) = raw_client(&px);

    stream.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n").unwrap();
    px.legate.wait_stat("cluster.backend.upstream_rq_total", 1);
    drop(stream);
    drop(_reader);

    px.legate.wait_stat("http.ingress.downstream_rq_rx_reset", 1);
    px.legate.wait_stat("http.ingress.downstream_cx_destroy_remote", 1);
    assert_eq!(px.legate.stat("http.ingress.downstream_rq_completed"), Some(0));
    release.send(()).unwrap();
}

#[test]
fn the_connection_closes_after_max_requests_per_connection() {
    let upstream = Scripted::start(echo);
    let mut config = http_bootstrap(&[upstream.server.addr()]);
    legate_testing::config::hcm_config(&mut config, 0)["common_http_protocol_options"] =
        legate_testing::json!({ "max_requests_per_connection": 2 });
    let px = HttpProxy::start(legate_bin!(), config);
    let (mut stream, mut reader) = raw_client(&px);

    stream.write_all(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\n").unwrap();
    let (first, _) = read_response(&mut reader, false).unwrap();
    stream.write_all(b"GET /2 HTTP/1.1\r\nhost: a\r\n\r\n").unwrap();
    let (second, body) = read_response(&mut reader, false).unwrap();

    assert!(!first.contains(&"connection: close".to_string()), "{first:?}");
    assert!(second.contains(&"connection: close".to_string()), "{second:?}");
    assert_eq!(body, b"/2  ");
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0, "closed after the second response");
    px.legate.wait_stat("http.ingress.downstream_cx_max_requests_reached", 1);
}

/// A request body still arriving when the response started (the upstream answers at once and
/// reads on): `%BYTES_RECEIVED%` counts what the downstream sent by the stream's end, not by
/// the response head.
#[test]
fn bytes_received_counts_a_body_that_arrives_after_the_response_started() {
    let upstream = TcpServer::start(|stream| {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        // The head, then the answer's head and first chunk before any of the body.
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n");
        // The body, to its last chunk; then the answer ends.
        let mut seen = Vec::new();
        while !seen.ends_with(b"0\r\n\r\n") {
            let mut byte = [0u8; 1];
            match reader.read(&mut byte) {
                Ok(1) => seen.push(byte[0]),
                _ => return,
            }
        }
        let _ = writer.write_all(b"4\r\nlast\r\n0\r\n\r\n");
    });
    let px = HttpProxy::with_access_log(legate_bin!(), http_bootstrap(&[upstream.addr()]), |path| {
        legate_testing::config::file_access_log(path, Some("%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT%\n"))
    });
    let mut s = TcpStream::connect(px.legate.connect_addr("ingress")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();

    // The response starts before the body is sent.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"a\r\n0123456789\r\n0\r\n\r\n").unwrap();
    while !got.ends_with(b"0\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }

    assert_eq!(px.logged(1), "200 10 9");
    px.legate.wait_stat("http.ingress.downstream_rq_response_before_rq_complete", 1);
}

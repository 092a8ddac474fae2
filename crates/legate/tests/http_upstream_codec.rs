//! legate's HTTP/1.1 client codec against upstreams that answer with raw bytes: every way
//! RFC 9112 delimits a response body, interim responses, trailers, bodies going upstream,
//! which connections are reused and which are not, and responses that break the protocol.

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

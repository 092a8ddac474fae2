//! The keep-alive race (Envoy issue 14981): an upstream closes an idle pooled connection just
//! as legate sends a request on it. The upstream here makes the race certain: each connection
//! answers one request with keep-alive, then closes without a word when the next request
//! arrives — what a server with a short keep-alive timeout does when the timing is unlucky.
//! A request that can safely go out again (idempotent) is resent on a new connection and the
//! client never sees the race; one that cannot (a POST the upstream may have acted on) gets
//! Envoy's 503, as it would without legate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use legate_testing::config::http_bootstrap;
use legate_testing::{legate_bin, HttpProxy, TcpServer};

/// Reads one request (head, and a `content-length` body); `false` at EOF or on an error.
fn read_request(reader: &mut BufReader<TcpStream>) -> bool {
    let mut content_length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        if !first {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        first = false;
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body).is_ok()
}

/// Answers the first request of each connection, then closes on the second one's arrival.
fn one_request_per_connection() -> TcpServer {
    TcpServer::start(|stream| {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        if !read_request(&mut reader) {
            return;
        }
        let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        // The next request arrives on a connection this server has given up on.
        let _ = read_request(&mut reader);
    })
}

#[test]
fn an_idempotent_request_meeting_a_closed_pooled_connection_is_resent() {
    let upstream = one_request_per_connection();
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[upstream.addr()]));
    let mut client = px.client();

    for i in 0..3 {
        let r = client.get("/");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "request {i}: {r:?}");
    }

    // Requests 2 and 3 each met a connection the upstream had closed, and went out again on
    // a new one: three connections in all, none of it visible to the client.
    assert_eq!(upstream.accepted(), 3);
    px.legate.wait_stat("cluster.backend.upstream_rq_stale_connection_resend", 2);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_retry"), Some(0), "a resend is not a retry");
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_5xx"), Some(0));
    // The host did nothing wrong: outlier detection is not told.
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_rx_reset"), Some(0));
}

#[test]
fn a_post_meeting_a_closed_pooled_connection_is_not_resent() {
    let upstream = one_request_per_connection();
    let px = HttpProxy::start(legate_bin!(), http_bootstrap(&[upstream.addr()]));
    let mut client = px.client();

    let first = client.send("POST", "/", &[], b"one");
    assert_eq!(first.status, 200, "{first:?}");
    // The upstream read this POST before closing: it may have acted on it, so it is not
    // sent twice.
    let second = client.send("POST", "/", &[], b"two");

    assert_eq!(second.status, 503, "{second:?}");
    assert_eq!(
        second.body,
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    );
    assert_eq!(upstream.accepted(), 1);
    assert_eq!(px.legate.stat("cluster.backend.upstream_rq_stale_connection_resend"), Some(0));
    px.legate.wait_stat("cluster.backend.upstream_cx_destroy_remote_with_active_rq", 1);
}

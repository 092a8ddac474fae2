//! Process lifecycle as an operator drives it: signals (Envoy: SIGTERM/SIGINT drain, then exit),
//! `--drain-time-s`, `/quitquitquit`, `--mode init_only`, `--config-yaml` merged over `-c`, and
//! the embedded demo run by a bare `legate`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use legate_testing::config::tcp_proxy_bootstrap;
use legate_testing::{
    connect, echo_roundtrip, eventually, http_request, is_refused, legate_bin, port_in_use, read_to_end, run_bounded,
    Legate, TcpEchoServer, EVENTUALLY,
};

const EXIT_BOUND: Duration = Duration::from_secs(20);

fn proxy_with(args: &[&str]) -> (Legate, legate_testing::TcpServer) {
    let echo = TcpEchoServer::start();
    let mut b = Legate::builder(legate_bin!()).config(&tcp_proxy_bootstrap(&[echo.addr()]).to_string());
    for a in args {
        b = b.arg(*a);
    }
    (b.start(), echo)
}

/// SIGTERM: listeners close at once, open connections keep working, and legate exits 0 as soon
/// as the last one closes — long before `--drain-time-s`.
#[test]
fn sigterm_stops_accepting_drains_open_connections_then_exits_zero() {
    let (mut px, _echo) = proxy_with(&["--drain-time-s", "600"]);
    let addr = px.listener_addr("ingress");
    let mut open = connect(addr);
    echo_roundtrip(&mut open, b"before");

    px.terminate();

    eventually("the listener to refuse new connections after SIGTERM", EVENTUALLY, || is_refused(addr), |r| *r);
    echo_roundtrip(&mut open, b"during drain");
    assert!(px.try_wait().is_none(), "legate exited with a connection still open");
    drop(open);
    let status = px.wait_exit(EXIT_BOUND);
    assert_eq!(status.code(), Some(0), "exit status {status}; stderr:\n{}", px.stderr());
}

#[test]
fn drain_time_bounds_the_wait_for_a_connection_held_open() {
    let (mut px, _echo) = proxy_with(&["--drain-time-s", "1"]);
    let mut held = connect(px.listener_addr("ingress"));
    echo_roundtrip(&mut held, b"held");

    px.terminate();

    let status = px.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit status {status}; stderr:\n{}", px.stderr());
    // The process is gone, so is the connection.
    assert!(read_to_end(&mut held).is_empty());
}

#[test]
fn sigint_also_exits_zero() {
    let (mut px, _echo) = proxy_with(&[]);
    px.signal("INT");
    let status = px.wait_exit(EXIT_BOUND);
    assert_eq!(status.code(), Some(0), "exit status {status}; stderr:\n{}", px.stderr());
}

#[test]
fn quitquitquit_exits_zero() {
    let (mut px, _echo) = proxy_with(&[]);
    let (status, body) = px.admin_post("/quitquitquit");
    assert_eq!((status, body.as_str()), (200, "OK\n"));
    let status = px.wait_exit(EXIT_BOUND);
    assert_eq!(status.code(), Some(0), "exit status {status}; stderr:\n{}", px.stderr());
}

#[test]
fn init_only_mode_initializes_and_exits_zero() {
    let echo = TcpEchoServer::start();
    let dir = std::env::temp_dir().join(format!("legate-init-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("init.yaml");
    std::fs::write(&path, tcp_proxy_bootstrap(&[echo.addr()]).to_string()).unwrap();

    let out =
        run_bounded(legate_bin!(), &["--mode", "init_only", "-l", "warning", "-c", path.to_str().unwrap()], EXIT_BOUND);

    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.code(), 0, "stderr:\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// Envoy merges `--config-yaml` over the file given with `-c`.
#[test]
fn config_yaml_is_merged_over_the_file() {
    let (px, _echo) = proxy_with(&["--config-yaml", "node: { id: merged-node, cluster: merged-cluster }"]);

    let info = px.admin_json("/server_info");
    assert_eq!(info["node"]["id"], "merged-node", "{info}");
    assert_eq!(info["node"]["cluster"], "merged-cluster", "{info}");
    // The file's resources are still there.
    let mut c = connect(px.listener_addr("ingress"));
    echo_roundtrip(&mut c, b"from the file");
}

/// A bare `legate` runs the embedded demo: `curl http://127.0.0.1:10000/` prints the body.
/// Its ports are fixed, so the test steps aside when they are taken.
#[test]
fn embedded_demo_answers_hello_through_the_proxy() {
    let ports = [10000, 10001, 9901].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    if let Some(busy) = ports.iter().find(|a| port_in_use(**a)) {
        eprintln!("note: skipping the embedded demo test: {busy} is in use");
        return;
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], 9901));
    let mut px = Legate::builder(legate_bin!()).bare(admin).start();

    let mut c = connect(ports[0]);
    c.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:10000\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n").unwrap();
    let response = String::from_utf8(read_to_end(&mut c)).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(response.ends_with("Hello from legate\n"), "{response:?}");
    px.wait_stat("cluster.demo_backend.upstream_cx_total", 1);

    let quit = http_request(admin, "POST", "/quitquitquit").expect("admin on 9901");
    assert_eq!(quit.status, 200);
    let status = px.wait_exit(EXIT_BOUND);
    assert_eq!(status.code(), Some(0), "exit status {status}; stderr:\n{}", px.stderr());
}

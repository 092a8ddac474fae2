//! The RBAC network filter (`envoy.filters.network.rbac`): a connection from a caller the
//! policies do not allow is closed before anything reaches the upstream; an allowed one is
//! proxied. Counted under `<stat_prefix>.rbac.*`.

use std::io::{Read, Write};
use std::time::Duration;

use legate_testing::config::{bootstrap, echo, listener, static_cluster, tcp_proxy};
use legate_testing::{connect, json, legate_bin, Legate, TcpEchoServer, Value};

fn rbac(remote: &str, shadow_allow: &str) -> Value {
    let policy = |prefix: &str| {
        json!({"policies": {"callers": {
            "permissions": [{"any": true}],
            "principals": [{"direct_remote_ip": {"address_prefix": prefix, "prefix_len": 8}}],
        }}})
    };
    json!({
        "name": "envoy.filters.network.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "tcp.",
            "rules": policy(remote),
            "shadow_rules": policy(shadow_allow),
        },
    })
}

#[test]
fn connections_from_callers_outside_the_policy_are_closed() {
    let upstream = TcpEchoServer::start();
    let config = bootstrap(
        vec![
            listener("denied", vec![rbac("10.0.0.0", "127.0.0.0"), tcp_proxy("denied", "backend")]),
            listener("allowed", vec![rbac("127.0.0.0", "10.0.0.0"), echo()]),
        ],
        vec![static_cluster("backend", &[upstream.addr()])],
    );
    let px = Legate::start(legate_bin!(), &config.to_string());

    let mut client = connect(px.listener_addr("denied"));
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = client.write_all(b"hello");
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert!(got.is_empty(), "a denied connection gets nothing back: {got:?}");
    px.wait_stat("tcp.rbac.denied", 1);
    assert_eq!(px.stat("tcp.rbac.shadow_allowed"), Some(1));
    assert_eq!(px.stat("cluster.backend.upstream_cx_total"), Some(0), "nothing reached the upstream");

    let mut client = connect(px.listener_addr("allowed"));
    client.write_all(b"ping").unwrap();
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping");
    px.wait_stat("tcp.rbac.allowed", 1);
    assert_eq!(px.stat("tcp.rbac.shadow_denied"), Some(1));
}

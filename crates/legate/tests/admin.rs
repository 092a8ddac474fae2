//! The admin interface (Envoy docs: "Administration interface"), over raw HTTP/1.1 with
//! `Connection: close`, as `curl` sends it. Formats are Envoy's, since scripts and scrapers
//! written for Envoy read them.

use std::net::SocketAddr;

use legate_testing::config::tcp_proxy_bootstrap;
use legate_testing::{
    connect, echo_roundtrip, eventually, is_refused, json, legate_bin, read_to_end, Legate, TcpEchoServer, TcpServer,
    EVENTUALLY,
};

/// legate with listener `ingress` → cluster `backend` → an echo server.
fn proxy() -> (Legate, TcpServer) {
    let echo = TcpEchoServer::start();
    let px = Legate::start(legate_bin!(), &tcp_proxy_bootstrap(&[echo.addr()]).to_string());
    (px, echo)
}

/// One proxied connection, echoed and closed; waits until the cluster counted it.
fn one_connection(px: &Legate, n: u64) {
    let mut c = connect(px.listener_addr("ingress"));
    echo_roundtrip(&mut c, b"ping");
    drop(c);
    px.wait_stat("cluster.backend.upstream_cx_total", n);
}

#[test]
fn help_and_home_page_list_the_endpoints() {
    let (px, _echo) = proxy();

    let (status, help) = px.admin_get("/help");
    assert_eq!(status, 200);
    for endpoint in [
        "/stats",
        "/stats/prometheus",
        "/server_info",
        "/ready",
        "/clusters",
        "/listeners",
        "/config_dump",
        "/memory",
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/reset_counters",
        "/drain_listeners",
        "/logging",
        "/quitquitquit",
    ] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(endpoint)), "/help does not list {endpoint}:\n{help}");
    }
    let home = px.admin_request("GET", "/");
    assert_eq!(home.status, 200);
    assert!(home.header("content-type").is_some_and(|t| t.starts_with("text/html")), "{:?}", home.headers);
    assert!(home.body.contains("/stats"), "{}", home.body);
}

#[test]
fn stats_text_is_sorted_name_value_lines() {
    let (px, _echo) = proxy();
    one_connection(&px, 1);

    let (status, body) = px.admin_get("/stats");
    assert_eq!(status, 200);
    // Counters and gauges (`name: <integer>`) come first, sorted by name; histograms follow.
    let names: Vec<&str> = body
        .lines()
        .map_while(|l| {
            let (name, value) = l.split_once(": ")?;
            value.parse::<u64>().ok().map(|_| name)
        })
        .collect();
    assert!(names.len() > 20, "few integer stats before the first other line:\n{body}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "/stats names are not sorted:\n{body}");
    for line in [
        "server.live: 1",
        "cluster_manager.cluster_added: 1",
        "listener_manager.listener_added: 1",
        "cluster.backend.upstream_cx_total: 1",
    ] {
        assert!(body.lines().any(|l| l == line), "/stats lacks the line {line:?}:\n{body}");
    }
}

#[test]
fn server_gauges_report_live_state_and_concurrency() {
    let echo = TcpEchoServer::start();
    let px =
        Legate::builder(legate_bin!()).config(&tcp_proxy_bootstrap(&[echo.addr()]).to_string()).concurrency(2).start();

    let s = px.stats();
    assert_eq!(s.get("server.live"), Some(&1));
    assert_eq!(s.get("server.state"), Some(&0), "0 is LIVE");
    assert_eq!(s.get("server.concurrency"), Some(&2));
    assert_eq!(s.get("cluster_manager.active_clusters"), Some(&1));
    assert!(s.contains_key("server.uptime") && s.contains_key("server.total_connections"), "{s:?}");
    eventually(
        "server.memory_allocated > 0",
        EVENTUALLY,
        || px.stat("server.memory_allocated"),
        |v| v.is_some_and(|v| v > 0),
    );
}

#[test]
fn stats_json_filter_and_usedonly() {
    let (px, _echo) = proxy();
    one_connection(&px, 1);

    let json = px.admin_json("/stats?format=json");
    let all = json["stats"].as_array().expect("stats array");
    assert!(all.iter().any(|s| s["name"] == "cluster.backend.upstream_cx_total" && s["value"] == 1), "{json}");

    let (status, filtered) = px.admin_get("/stats?filter=^cluster.backend.upstream_cx_");
    assert_eq!(status, 200);
    let lines: Vec<&str> = filtered.lines().collect();
    assert!(lines.contains(&"cluster.backend.upstream_cx_total: 1"), "{filtered}");
    assert!(
        lines.iter().all(|l| l.starts_with("cluster.backend.upstream_cx_")),
        "filter leaked other stats:\n{filtered}"
    );

    let (status, used) = px.admin_get("/stats?usedonly");
    assert_eq!(status, 200);
    assert!(used.lines().any(|l| l == "cluster.backend.upstream_cx_total: 1"), "{used}");
    assert!(!used.contains("cluster.backend.upstream_cx_overflow"), "usedonly lists a never-used counter:\n{used}");
    let (_, everything) = px.admin_get("/stats");
    assert!(everything.contains("cluster.backend.upstream_cx_overflow: 0"), "{everything}");
}

/// `type=` keeps one kind of stat; bad parameters get Envoy's 400s; a `+` in a filter is a
/// regex `+`, not a space.
#[test]
fn stats_type_and_bad_parameters() {
    let (px, _echo) = proxy();
    one_connection(&px, 1);

    let (status, counters) = px.admin_get("/stats?type=Counters&filter=cluster\\.backend\\.upstream_cx_.+");
    assert_eq!(status, 200);
    assert!(counters.lines().any(|l| l == "cluster.backend.upstream_cx_total: 1"), "{counters}");
    assert!(!counters.contains("upstream_cx_active"), "a gauge among counters:\n{counters}");
    assert!(!counters.contains("upstream_cx_length_ms"), "a histogram among counters:\n{counters}");
    let (_, gauges) = px.admin_get("/stats?type=Gauges&filter=cluster\\.backend\\.upstream_cx_");
    assert!(gauges.lines().any(|l| l == "cluster.backend.upstream_cx_active: 0"), "{gauges}");
    assert!(!gauges.contains("upstream_cx_total"), "{gauges}");

    assert_eq!(px.admin_get("/stats?type=Bogus"), (400, "invalid &type= param".to_string()));
    assert_eq!(
        px.admin_get("/stats?format=xml"),
        (400, "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n".to_string())
    );
    assert_eq!(px.admin_get("/stats?filter=(unclosed"), (400, "Invalid re2 regex".to_string()));
}

#[test]
fn prometheus_format_extracts_tags() {
    let (px, _echo) = proxy();
    one_connection(&px, 1);

    let r = px.admin_request("GET", "/stats/prometheus");
    assert_eq!(r.status, 200);
    let body = &r.body;
    for line in [
        "# TYPE envoy_cluster_upstream_cx_total counter",
        "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"backend\"} 1",
        "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"ingress\"} 1",
        "# TYPE envoy_server_live gauge",
        "envoy_server_live{} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "/stats/prometheus lacks {line:?}:\n{body}");
    }
    // Each metric has exactly one TYPE line.
    let types: Vec<&str> = body.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut unique = types.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(types.len(), unique.len(), "duplicate # TYPE lines");
}

#[test]
fn server_info_reports_state_and_command_line() {
    let echo = TcpEchoServer::start();
    let px = Legate::builder(legate_bin!())
        .config(&tcp_proxy_bootstrap(&[echo.addr()]).to_string())
        .arg("--service-cluster")
        .arg("edge")
        .arg("--service-node")
        .arg("edge-1")
        .arg("--drain-time-s")
        .arg("33")
        .start();

    let info = px.admin_json("/server_info");
    assert_eq!(info["state"], "LIVE", "{info}");
    assert!(info["version"].as_str().is_some_and(|v| !v.is_empty()), "{info}");
    assert!(!info["uptime_current_epoch"].is_null(), "{info}");
    let opts = &info["command_line_options"];
    assert_eq!(opts["concurrency"], 1, "{info}");
    assert_eq!(opts["service_cluster"], "edge", "{info}");
    assert_eq!(opts["service_node"], "edge-1", "{info}");
    assert_eq!(opts["drain_time"], "33s", "{info}");
    assert_eq!(opts["mode"], "Serve", "{info}");
    let config_path = px.config_path().unwrap().to_str().unwrap();
    assert_eq!(opts["config_path"], config_path, "{info}");
    assert_eq!(info["node"]["id"], "edge-1", "{info}");
    assert_eq!(info["node"]["cluster"], "edge", "{info}");
    assert_eq!(info["node"]["user_agent_name"], "legate", "the node as control planes see it: {info}");
    // Envoy prints every option, defaults included.
    assert_eq!(opts["file_flush_interval"], "10s", "{info}");
    assert_eq!(opts["restart_epoch"], 0, "{info}");
    assert_eq!(opts["drain_strategy"], "Immediate", "{info}");
}

#[test]
fn healthcheck_fail_makes_ready_503_and_ok_restores_it() {
    let (px, _echo) = proxy();
    assert_eq!(px.admin_get("/ready"), (200, "LIVE\n".to_string()));

    assert_eq!(px.admin_post("/healthcheck/fail"), (200, "OK\n".to_string()));
    let (status, body) = px.admin_get("/ready");
    assert_eq!(status, 503, "/ready after /healthcheck/fail: {body}");
    px.wait_stat("server.live", 0);
    // Failing health checks only tells load balancers to go away; traffic still flows.
    let mut c = connect(px.listener_addr("ingress"));
    echo_roundtrip(&mut c, b"still serving");

    assert_eq!(px.admin_post("/healthcheck/ok"), (200, "OK\n".to_string()));
    assert_eq!(px.admin_get("/ready"), (200, "LIVE\n".to_string()));
    px.wait_stat("server.live", 1);
}

#[test]
fn clusters_text_and_json() {
    let (px, echo) = proxy();
    for n in 1..=3 {
        one_connection(&px, n);
    }
    let host = echo.addr();

    let text = eventually(
        "/clusters to show cx_total::3",
        EVENTUALLY,
        || px.admin_get("/clusters").1,
        |t| t.lines().any(|l| l == format!("backend::{host}::cx_total::3")),
    );
    for line in [
        format!("backend::{host}::health_flags::healthy"),
        "backend::default_priority::max_connections::1024".to_string(),
        "backend::added_via_api::false".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "/clusters lacks {line:?}:\n{text}");
    }

    let json = px.admin_json("/clusters?format=json");
    let statuses = json["cluster_statuses"].as_array().expect("cluster_statuses");
    let backend = statuses.iter().find(|c| c["name"] == "backend").unwrap_or_else(|| panic!("{json}"));
    let hosts = backend["host_statuses"].as_array().unwrap_or_else(|| panic!("no host_statuses: {json}"));
    assert_eq!(hosts.len(), 1, "{json}");
    assert_eq!(hosts[0]["address"]["socket_address"]["port_value"], host.port(), "{json}");
    // Envoy derives it from the host's flags: HEALTHY, never the config's UNKNOWN.
    assert_eq!(hosts[0]["health_status"], json!({ "eds_health_status": "HEALTHY" }), "{json}");
}

#[test]
fn listeners_text_and_json_agree() {
    let (px, _echo) = proxy();
    let addr = px.listener_addr("ingress");

    let (status, text) = px.admin_get("/listeners");
    assert_eq!(status, 200);
    assert!(text.lines().any(|l| l == format!("ingress::{addr}")), "/listeners:\n{text}");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    // The reported address is really where legate listens.
    let mut c = connect(addr);
    echo_roundtrip(&mut c, b"here");
}

#[test]
fn config_dump_has_bootstrap_clusters_and_listeners() {
    let (px, _echo) = proxy();

    let dump = px.admin_json("/config_dump");
    let configs = dump["configs"].as_array().unwrap_or_else(|| panic!("{dump}"));
    let of_type = |t: &str| {
        configs
            .iter()
            .find(|c| c["@type"] == format!("type.googleapis.com/envoy.admin.v3.{t}"))
            .unwrap_or_else(|| panic!("no {t} in /config_dump: {dump}"))
    };
    let bootstrap = of_type("BootstrapConfigDump");
    assert!(!bootstrap["bootstrap"].is_null(), "{bootstrap}");
    assert_eq!(of_type("ClustersConfigDump")["static_clusters"][0]["cluster"]["name"], "backend", "{dump}");
    assert_eq!(of_type("ListenersConfigDump")["static_listeners"][0]["listener"]["name"], "ingress", "{dump}");
    // Envoy's six dumps, in its order, the empty ones too.
    let types: Vec<&str> = configs.iter().filter_map(|c| c["@type"].as_str()).collect();
    let expected = ["Bootstrap", "Clusters", "Listeners", "ScopedRoutes", "Routes", "Secrets"]
        .map(|t| format!("type.googleapis.com/envoy.admin.v3.{t}ConfigDump"));
    assert_eq!(types, expected, "{dump}");

    // `?resource=` lists the elements, each with its type; an unknown one is a 404.
    let clusters = px.admin_json("/config_dump?resource=static_clusters");
    let first = &clusters["configs"][0];
    assert_eq!(first["@type"], "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster", "{clusters}");
    assert_eq!(first["cluster"]["name"], "backend", "{clusters}");
    assert_eq!(px.admin_get("/config_dump?resource=bogus"), (404, "bogus not found in config dump".to_string()));
}

#[test]
fn memory_reports_allocated_and_heap_size_as_strings() {
    let (px, _echo) = proxy();

    let memory = px.admin_json("/memory");
    for key in ["allocated", "heap_size"] {
        let value = memory[key].as_str().unwrap_or_else(|| panic!("{key} is not a string: {memory}"));
        value.parse::<u64>().unwrap_or_else(|e| panic!("{key} = {value:?}: {e}"));
    }
    assert!(memory["allocated"].as_str().unwrap().parse::<u64>().unwrap() > 0, "{memory}");
}

#[test]
fn reset_counters_zeroes_counters_not_gauges() {
    let (px, _echo) = proxy();
    one_connection(&px, 1);

    assert_eq!(px.admin_post("/reset_counters").0, 200);

    assert_eq!(px.stat("cluster.backend.upstream_cx_total"), Some(0));
    assert_eq!(px.stat("listener.ingress.downstream_cx_total"), Some(0));
    assert_eq!(px.stat("server.live"), Some(1), "gauges are not counters");
    one_connection(&px, 1);
}

#[test]
fn drain_listeners_stops_accepting_but_admin_answers() {
    let (px, _echo) = proxy();
    let addr = px.listener_addr("ingress");

    assert_eq!(px.admin_post("/drain_listeners").0, 200);

    eventually("the ingress listener to refuse connections", EVENTUALLY, || is_refused(addr), |r| *r);
    assert_eq!(px.admin_get("/help").0, 200);
}

#[test]
fn logging_lists_loggers_and_sets_all_levels() {
    let (px, _echo) = proxy();

    let (status, before) = px.admin_post("/logging");
    assert_eq!(status, 200);
    assert!(before.contains("warning"), "started with -l warning:\n{before}");
    let (status, after) = px.admin_post("/logging?level=debug");
    assert_eq!(status, 200);
    assert!(after.contains("debug") && !after.contains("warning"), "after ?level=debug:\n{after}");
    // A bad level is Envoy's 400, with the usage.
    let (status, refused) = px.admin_post("/logging?level=loud");
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("usage: /logging?level=<level> (change all levels)\n"), "{refused}");
}

#[test]
fn get_of_a_mutating_endpoint_is_405_and_does_nothing() {
    let (px, _echo) = proxy();

    for path in [
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/reset_counters",
        "/drain_listeners",
        "/logging?level=off",
        "/quitquitquit",
    ] {
        let (status, body) = px.admin_get(path);
        assert_eq!(status, 405, "GET {path}: {body}");
        assert!(body.contains("Method GET not allowed, POST required."), "GET {path}: {body:?}");
    }
    assert_eq!(px.admin_get("/ready"), (200, "LIVE\n".to_string()), "a GET must not have failed health checks or quit");
    let mut c = connect(px.listener_addr("ingress"));
    echo_roundtrip(&mut c, b"listeners not drained");
}

#[test]
fn unknown_path_is_404() {
    let (px, _echo) = proxy();
    assert_eq!(px.admin_get("/no/such/endpoint").0, 404);
}

/// A client may read the whole response before the close; the admin must not reset the
/// connection before the body is delivered (checked on a large response).
#[test]
fn large_admin_response_arrives_whole() {
    let (px, _echo) = proxy();
    let addr: SocketAddr = px.admin_addr();
    let mut s = connect(addr);
    std::io::Write::write_all(&mut s, b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let raw = String::from_utf8(read_to_end(&mut s)).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    assert_eq!(body.len(), len);
}

#[test]
fn deferred_stat_creation_shows_a_clusters_traffic_stats_once_used() {
    let echo = TcpEchoServer::start();
    let mut config = tcp_proxy_bootstrap(&[echo.addr()]);
    config["deferred_stat_options"] = legate_testing::json!({ "enable_deferred_creation_stats": true });
    let px = Legate::start(legate_bin!(), &config.to_string());
    // Membership stats exist from the start; traffic stats only after the first connection.
    assert_eq!(px.stat("cluster.backend.membership_total"), Some(1));
    assert_eq!(px.stat("cluster.backend.upstream_cx_total"), None);
    one_connection(&px, 1);
    assert_eq!(px.stat("cluster.backend.upstream_cx_total"), Some(1));
}

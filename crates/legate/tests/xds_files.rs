//! xDS from files (`path_config_source`), as Envoy's filesystem-xDS examples: clusters (CDS),
//! their endpoints (EDS), listeners (LDS) and routes (RDS) read from `DiscoveryResponse` files
//! and read again when a file is replaced atomically (written aside, then renamed over).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use legate_testing::config::{address, bootstrap, http_listener, route_config, route_to, router_filter, virtual_host};
use legate_testing::{eventually, json, legate_bin, HttpClient, HttpUpstream, Legate, TempDir, UpstreamAction, Value};

const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ASSIGNMENT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Writes a `DiscoveryResponse` to `path` the way config pushers do: a temporary file renamed
/// over the old one, so a reader never sees half a file.
fn publish(path: &Path, version: &str, resources: Vec<Value>) {
    let text = json!({ "version_info": version, "resources": resources }).to_string();
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn eds_cluster(name: &str, eds_file: &Path) -> Value {
    json!({
        "@type": CLUSTER,
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": { "eds_config": { "path_config_source": { "path": eds_file.display().to_string() } } },
    })
}

fn assignment(cluster: &str, hosts: &[SocketAddr]) -> Value {
    let lb_endpoints: Vec<Value> = hosts.iter().map(|a| json!({ "endpoint": { "address": address(*a) } })).collect();
    json!({ "@type": ASSIGNMENT, "cluster_name": cluster, "endpoints": [{ "lb_endpoints": lb_endpoints }] })
}

/// A static listener `ingress` routing everything to cluster `dynamic`, which CDS provides.
fn cds_bootstrap(cds_file: &Path) -> Value {
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route_to("/", "dynamic")])]);
    let mut config = bootstrap(vec![http_listener("ingress", routes, vec![router_filter()], json!({}))], vec![]);
    config["dynamic_resources"] =
        json!({ "cds_config": { "path_config_source": { "path": cds_file.display().to_string() } } });
    config
}

#[test]
fn clusters_and_endpoints_come_from_files_and_follow_their_changes() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let b = HttpUpstream::http1(|_| UpstreamAction::ok("b"));
    let dir = TempDir::new();
    let (cds, eds) = (dir.join("cds.json"), dir.join("eds.json"));
    publish(&cds, "c1", vec![eds_cluster("dynamic", &eds)]);
    publish(&eds, "e1", vec![assignment("dynamic", &[a.addr()])]);
    let px = Legate::start(legate_bin!(), &cds_bootstrap(&cds).to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    // The cluster warmed with its endpoints before the listener started.
    assert_eq!(client.get("/").body, "a");
    assert_eq!(px.stat("cluster_manager.cds.update_success"), Some(1));
    assert_eq!(px.stat("cluster.dynamic.update_success"), Some(1));
    assert_eq!(px.stat("cluster_manager.active_clusters"), Some(1));
    assert_eq!(px.stat("cluster_manager.warming_clusters"), Some(0));
    let (_, clusters) = px.admin_get("/clusters");
    assert!(clusters.contains("dynamic::added_via_api::true"), "{clusters}");
    let dump = px.admin_json("/config_dump?resource=dynamic_active_clusters");
    assert_eq!(dump["configs"][0]["version_info"], "c1", "{dump}");
    assert_eq!(dump["configs"][0]["cluster"]["name"], "dynamic", "{dump}");

    // New endpoints: traffic moves to b on the same connection.
    publish(&eds, "e2", vec![assignment("dynamic", &[b.addr()])]);
    eventually("b serves", Duration::from_secs(10), || client.get("/").body, |body| body == "b");
    assert_eq!(px.stat("cluster.dynamic.membership_total"), Some(1));

    // A bad assignment is rejected; b keeps serving.
    let mut bad = assignment("dynamic", &[a.addr()]);
    bad["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] = json!("not-an-ip");
    publish(&eds, "e3", vec![bad]);
    px.wait_stat("cluster.dynamic.update_rejected", 1);
    assert_eq!(client.get("/").body, "b");

    // The cluster leaves CDS: requests get Envoy's 503 for a missing cluster.
    publish(&cds, "c2", vec![]);
    px.wait_stat("cluster_manager.cluster_removed", 1);
    eventually("no cluster", Duration::from_secs(10), || client.get("/").status, |s| *s == 503);
    assert_eq!(px.stat("cluster_manager.active_clusters"), Some(0));
}

/// `/clusters` and `/config_dump` list the clusters in the order they became active: static
/// ones first, a cluster CDS replaced in the place of the one it replaced, one removed and
/// added again last.
#[test]
fn clusters_keep_their_order_across_cds_updates() {
    let up = HttpUpstream::http1(|_| UpstreamAction::ok("up"));
    let dir = TempDir::new();
    let (cds, eds) = (dir.join("cds.json"), dir.join("eds.json"));
    let names = ["x", "y", "z"];
    publish(&eds, "e1", names.iter().map(|n| assignment(n, &[up.addr()])).collect());
    publish(&cds, "c1", vec![eds_cluster("x", &eds), eds_cluster("y", &eds)]);
    let mut config = cds_bootstrap(&cds);
    config["static_resources"]["clusters"] = json!([legate_testing::config::static_cluster("first", &[up.addr()])]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let order = || -> Vec<String> {
        let status = px.admin_json("/clusters?format=json");
        let clusters = status["cluster_statuses"].as_array().cloned().unwrap_or_default();
        clusters.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()
    };
    let dumped = || -> Vec<String> {
        let dump = px.admin_json("/config_dump?resource=dynamic_active_clusters");
        let configs = dump["configs"].as_array().cloned().unwrap_or_default();
        configs.iter().filter_map(|c| c["cluster"]["name"].as_str().map(str::to_string)).collect()
    };
    assert_eq!(order(), ["first", "x", "y"]);

    // x changes (a new cluster object) and z joins: x keeps its place.
    let mut changed = eds_cluster("x", &eds);
    changed["connect_timeout"] = json!("2s");
    publish(&cds, "c2", vec![changed.clone(), eds_cluster("y", &eds), eds_cluster("z", &eds)]);
    px.wait_stat("cluster_manager.cluster_modified", 1);
    eventually("z active", Duration::from_secs(10), order, |o| o.len() == 4);
    assert_eq!(order(), ["first", "x", "y", "z"]);
    assert_eq!(dumped(), ["x", "y", "z"]);
    let dump = px.admin_json("/config_dump?resource=dynamic_active_clusters");
    assert_eq!(dump["configs"][0]["cluster"]["connect_timeout"], "2s", "{dump}");

    // y leaves and comes back: last.
    publish(&cds, "c3", vec![changed.clone(), eds_cluster("z", &eds)]);
    eventually("y gone", Duration::from_secs(10), order, |o| o.len() == 3);
    publish(&cds, "c4", vec![changed, eds_cluster("z", &eds), eds_cluster("y", &eds)]);
    eventually("y back", Duration::from_secs(10), order, |o| o.len() == 4);
    assert_eq!(order(), ["first", "x", "z", "y"]);
    assert_eq!(dumped(), ["x", "z", "y"]);
}

#[test]
fn a_cluster_without_endpoints_waits_for_initial_fetch_timeout() {
    let dir = TempDir::new();
    let (cds, eds) = (dir.join("cds.json"), dir.join("eds.json"));
    let mut cluster = eds_cluster("dynamic", &eds);
    cluster["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = json!("1s");
    publish(&cds, "c1", vec![cluster]);
    // The EDS file names another cluster: "dynamic" never gets its assignment.
    publish(&eds, "e1", vec![assignment("other", &["127.0.0.1:1".parse().unwrap()])]);
    let px = Legate::start(legate_bin!(), &cds_bootstrap(&cds).to_string());
    // Start-up waited for the timeout, then the cluster serves with no hosts.
    assert_eq!(px.stat("cluster.dynamic.init_fetch_timeout"), Some(1));
    assert_eq!(px.stat("cluster_manager.active_clusters"), Some(1));
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    let response = client.get("/");
    assert_eq!(response.status, 503);
    assert_eq!(response.body, "no healthy upstream");
}

const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTES: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// An LDS listener `dynamic` on 127.0.0.1:0 whose connection manager takes route
/// configuration `routes` from `rds_file`; `server_name` tells its versions apart.
fn lds_listener(rds_file: &Path, server_name: &str) -> Value {
    json!({
        "@type": LISTENER,
        "name": "dynamic",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "dynamic",
                "server_name": server_name,
                "rds": {
                    "route_config_name": "routes",
                    "config_source": { "path_config_source": { "path": rds_file.display().to_string() } },
                },
                "http_filters": [router_filter()],
            },
        }]}],
    })
}

fn routes_to(cluster: &str) -> Value {
    json!({
        "@type": ROUTES,
        "name": "routes",
        "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": [route_to("/", cluster)] }],
    })
}

#[test]
fn listeners_and_routes_come_from_files_and_updates_drain_old_connections() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let b = HttpUpstream::http1(|_| UpstreamAction::ok("b"));
    let dir = TempDir::new();
    let (lds, rds) = (dir.join("lds.json"), dir.join("rds.json"));
    publish(&lds, "l1", vec![lds_listener(&rds, "one")]);
    publish(&rds, "r1", vec![routes_to("a")]);
    let mut config = bootstrap(
        vec![],
        vec![
            legate_testing::config::static_cluster("a", &[a.addr()]),
            legate_testing::config::static_cluster("b", &[b.addr()]),
        ],
    );
    config["dynamic_resources"] =
        json!({ "lds_config": { "path_config_source": { "path": lds.display().to_string() } } });
    let px = Legate::builder(legate_bin!()).config(&config.to_string()).arg("--drain-time-s").arg("3").start();
    // Ready only once the listener had its routes.
    let address = px.connect_addr("dynamic");
    let mut old = HttpClient::connect(address);
    let response = old.get("/");
    assert_eq!((response.status, response.body.as_str()), (200, "a"));
    assert_eq!(response.header("server"), Some("one"));
    assert_eq!(px.stat("listener_manager.lds.update_success"), Some(1));
    assert_eq!(px.stat("http.dynamic.rds.routes.update_success"), Some(1));
    assert_eq!(px.stat("listener_manager.total_listeners_active"), Some(1));

    // New routes apply to the open connection's next request.
    publish(&rds, "r2", vec![routes_to("b")]);
    eventually("routes to b", Duration::from_secs(10), || old.get("/").body, |body| body == "b");

    // A route configuration naming an unknown route table field is rejected; b keeps serving.
    let mut bad = routes_to("a");
    bad["virtual_hosts"][0]["no_such_field"] = json!(1);
    publish(&rds, "r3", vec![bad]);
    px.wait_stat("http.dynamic.rds.routes.update_rejected", 1);
    assert_eq!(old.get("/").body, "b");

    // One more connection, idle long enough to be parked when the update comes.
    let mut parked = HttpClient::connect(address);
    assert_eq!(parked.get("/").status, 200);
    std::thread::sleep(Duration::from_millis(300));

    // A new version of the listener: new connections get it; the open one is asked to close
    // (HTTP/1.1 `connection: close`) and then closed when the drain time is over.
    publish(&lds, "l2", vec![lds_listener(&rds, "two")]);
    px.wait_stat("listener_manager.listener_modified", 1);
    let mut new = HttpClient::connect(address);
    assert_eq!(new.get("/").header("server"), Some("two"));
    let dump = px.admin_json("/config_dump");
    let listeners = dump["configs"].as_array().unwrap().iter().find(|c| c["dynamic_listeners"].is_array()).unwrap();
    assert_eq!(listeners["version_info"], "l2", "{listeners}");
    let entry = &listeners["dynamic_listeners"][0];
    assert_eq!(entry["name"], "dynamic");
    assert_eq!(entry["active_state"]["version_info"], "l2");
    assert_eq!(entry["draining_state"]["version_info"], "l1");
    let routes = dump["configs"].as_array().unwrap().iter().find(|c| c["dynamic_route_configs"].is_array()).unwrap();
    assert_eq!(routes["dynamic_route_configs"][0]["version_info"], "r2", "{routes}");
    let last = old.get("/");
    assert_eq!(last.header("server"), Some("one"));
    assert_eq!(last.header("connection"), Some("close"));
    assert!(old.closed_within(Duration::from_secs(10)));
    // The parked one too, with the same counts: drained, closed by legate.
    assert!(parked.closed_within(Duration::from_secs(10)), "the drained chain's parked connection closes");
    px.wait_stat("http.dynamic.downstream_cx_drain_close", 2);
    px.wait_stat("http.dynamic.downstream_cx_destroy_local", 2);
    px.wait_stat("listener_manager.total_listeners_draining", 0);

    // The listener leaves LDS: its port stops accepting; the open connection drains.
    publish(&lds, "l3", vec![]);
    px.wait_stat("listener_manager.listener_removed", 1);
    assert_eq!(new.get("/").header("connection"), Some("close"));
    eventually(
        "port closed",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(address).is_err(),
        |refused| *refused,
    );
}

/// Keeps `clients` keep-alive connections busy until `stop`; returns (requests, failures as
/// `status body` strings).
fn load(
    address: SocketAddr,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = HttpClient::connect(address);
                let (mut requests, mut failures) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let response = client.try_send("GET", "/", &[], b"");
                    requests += 1;
                    match response {
                        Ok(r) if r.status == 200 => {
                            // The server may end a keep-alive connection with `connection: close`.
                            if r.header("connection") == Some("close") {
                                client = HttpClient::connect(address);
                            }
                        }
                        Ok(r) => failures.push(format!("{} {}", r.status, r.body)),
                        Err(e) => {
                            failures.push(format!("error: {e}"));
                            client = HttpClient::connect(address);
                        }
                    }
                }
                (requests, failures)
            })
        })
        .collect()
}

#[test]
fn fifty_pushes_of_routes_clusters_and_endpoints_fail_no_request() {
    let upstreams: Vec<HttpUpstream> = (0..4).map(|_| HttpUpstream::http1(|_| UpstreamAction::ok("up"))).collect();
    let dir = TempDir::new();
    let (lds, rds, cds, eds) = (dir.join("lds.json"), dir.join("rds.json"), dir.join("cds.json"), dir.join("eds.json"));
    let clusters = |timeout: &str| {
        ["one", "two"]
            .iter()
            .map(|name| {
                let mut cluster = eds_cluster(name, &eds);
                cluster["connect_timeout"] = json!(timeout);
                cluster
            })
            .collect::<Vec<_>>()
    };
    let assignments = |first: usize| {
        vec![
            assignment("one", &[upstreams[first % 4].addr(), upstreams[(first + 1) % 4].addr()]),
            assignment("two", &[upstreams[(first + 2) % 4].addr()]),
        ]
    };
    publish(&cds, "c0", clusters("1s"));
    publish(&eds, "e0", assignments(0));
    publish(&rds, "r0", vec![routes_to("one")]);
    publish(&lds, "l0", vec![lds_listener(&rds, "legate")]);
    let mut config = bootstrap(vec![], vec![]);
    config["dynamic_resources"] = json!({
        "lds_config": { "path_config_source": { "path": lds.display().to_string() } },
        "cds_config": { "path_config_source": { "path": cds.display().to_string() } },
    });
    let px = Legate::builder(legate_bin!()).config(&config.to_string()).concurrency(2).start();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = load(px.connect_addr("dynamic"), 4, stop.clone());
    for push in 1..=50 {
        match push % 3 {
            0 => publish(&rds, &format!("r{push}"), vec![routes_to(if push % 2 == 0 { "one" } else { "two" })]),
            1 => publish(&cds, &format!("c{push}"), clusters(if push % 2 == 0 { "1s" } else { "2s" })),
            _ => publish(&eds, &format!("e{push}"), assignments(push)),
        }
        std::thread::sleep(Duration::from_millis(120));
    }
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let (requests, failures) = client.join().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        total += requests;
    }
    assert!(total > 100, "only {total} requests");
    // Every file was read and applied at least a few times; none was rejected.
    assert!(px.stat("cluster_manager.cds.update_success").unwrap_or(0) >= 3);
    assert!(px.stat("http.dynamic.rds.routes.update_success").unwrap_or(0) >= 3);
    assert!(px.stat("cluster.one.update_success").unwrap_or(0) >= 3);
    for stat in ["cluster_manager.cds.update_rejected", "http.dynamic.rds.routes.update_rejected"] {
        assert_eq!(px.stat(stat), Some(0), "{stat}");
    }
}

/// A listener with two filter chains told apart by `http_inspector`: HTTP/1.1 and h2c, each
/// with its own `server_name`.
fn two_chain_listener(rds_file: &Path, http1_name: &str, h2c_name: &str) -> Value {
    let chain = |protocol: &str, server_name: &str| {
        let mut chain = lds_listener(rds_file, server_name)["filter_chains"][0].clone();
        chain["filter_chain_match"] = json!({ "application_protocols": [protocol] });
        chain
    };
    let mut listener = lds_listener(rds_file, "unused");
    listener["listener_filters"] = json!([{
        "name": "envoy.filters.listener.http_inspector",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector" }
    }]);
    listener["filter_chains"] = json!([chain("http/1.1", http1_name), chain("h2c", h2c_name)]);
    listener
}

#[test]
fn an_update_drains_only_the_filter_chains_it_changed() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let dir = TempDir::new();
    let (lds, rds) = (dir.join("lds.json"), dir.join("rds.json"));
    publish(&rds, "r1", vec![routes_to("a")]);
    publish(&lds, "l1", vec![two_chain_listener(&rds, "http1-v1", "h2c-v1")]);
    let mut config = bootstrap(vec![], vec![legate_testing::config::static_cluster("a", &[a.addr()])]);
    config["dynamic_resources"] =
        json!({ "lds_config": { "path_config_source": { "path": lds.display().to_string() } } });
    let px = Legate::builder(legate_bin!()).config(&config.to_string()).arg("--drain-time-s").arg("30").start();
    let address = px.connect_addr("dynamic");
    let mut http1 = HttpClient::connect(address);
    assert_eq!(http1.get("/").header("server"), Some("http1-v1"));
    let h2c = |path: &str| legate_testing::h2c_get(address, path, &[]);
    assert_eq!(h2c("/").header("server"), Some("h2c-v1"));

    // Only the h2c chain changes: the HTTP/1.1 connection is not drained.
    publish(&lds, "l2", vec![two_chain_listener(&rds, "http1-v1", "h2c-v2")]);
    px.wait_stat("listener_manager.listener_in_place_updated", 1);
    assert_eq!(h2c("/").header("server"), Some("h2c-v2"));
    for _ in 0..3 {
        let response = http1.get("/");
        assert_eq!(response.header("server"), Some("http1-v1"));
        assert_eq!(response.header("connection"), None, "the unchanged chain's connection was drained");
    }
    assert_eq!(px.stat("listener_manager.total_filter_chains_draining"), Some(1));
}

#[test]
fn a_listener_that_cannot_bind_is_counted_and_shown() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new();
    let (lds, rds) = (dir.join("lds.json"), dir.join("rds.json"));
    publish(&rds, "r1", vec![routes_to("a")]);
    let mut listener = lds_listener(&rds, "x");
    listener["address"]["socket_address"]["port_value"] = json!(taken.local_addr().unwrap().port());
    publish(&lds, "l1", vec![listener]);
    let mut config = bootstrap(vec![], vec![]);
    config["dynamic_resources"] =
        json!({ "lds_config": { "path_config_source": { "path": lds.display().to_string() } } });
    let px = Legate::start(legate_bin!(), &config.to_string());
    px.wait_stat("listener_manager.listener_create_failure", 1);
    // The update itself was accepted (the bind happens after), as Envoy.
    assert_eq!(px.stat("listener_manager.lds.update_success"), Some(1));
    let dump = px.admin_json("/config_dump");
    let listeners = dump["configs"].as_array().unwrap().iter().find(|c| c["dynamic_listeners"].is_array()).unwrap();
    let error = &listeners["dynamic_listeners"][0]["error_state"];
    assert!(error["details"].as_str().unwrap_or_default().contains("cannot bind"), "{listeners}");
    assert_eq!(error["failed_configuration"]["name"], "dynamic");
}

/// An upstream that accepts one connection and answers `a` to each request on it; reports
/// `true` when legate closes the connection, `false` when it stays idle for `within`.
fn single_connection_upstream(within: Duration) -> (SocketAddr, std::sync::mpsc::Receiver<bool>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let _ = stream.set_read_timeout(Some(within));
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => request.extend_from_slice(&buf[..n]),
                Err(e) => break !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            }
            while let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                request.drain(..end + 4);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na");
            }
        };
        let _ = tx.send(closed);
    });
    (addr, rx)
}

#[test]
fn a_removed_endpoints_idle_upstream_connection_is_closed() {
    let (a, closed) = single_connection_upstream(Duration::from_secs(20));
    let b = HttpUpstream::http1(|_| UpstreamAction::ok("b"));
    let dir = TempDir::new();
    let (cds, eds) = (dir.join("cds.json"), dir.join("eds.json"));
    publish(&cds, "c1", vec![eds_cluster("dynamic", &eds)]);
    publish(&eds, "e1", vec![assignment("dynamic", &[a])]);
    let px = Legate::start(legate_bin!(), &cds_bootstrap(&cds).to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(client.get("/").body, "a");
    // a leaves the cluster: its pooled keep-alive connection is closed (at the worker's next
    // request), not kept for the hour of the upstream idle timeout.
    publish(&eds, "e2", vec![assignment("dynamic", &[b.addr()])]);
    eventually("b serves", Duration::from_secs(10), || client.get("/").body, |body| body == "b");
    assert_eq!(closed.recv_timeout(Duration::from_secs(25)), Ok(true), "the connection to a stayed open");
}

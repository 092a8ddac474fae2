//! The real binary driven by a control plane over gRPC (the test control plane in
//! `legate-testing`, tonic): ADS state-of-the-world and delta, listeners, routes, clusters,
//! endpoints and secrets pushed, updated, refused and removed; the control plane restarting.

use std::net::SocketAddr;
use std::time::Duration;

use legate_testing::config::{address, route_to, router_filter, static_cluster, unreadable_upstream_tls};
use legate_testing::control_plane::{type_url, ControlPlane};
use legate_testing::{eventually, json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction, Value};

/// The control plane's static cluster: HTTP/2 to `at`.
fn xds_cluster(at: SocketAddr) -> Value {
    let mut cluster = static_cluster("xds_cluster", &[at]);
    cluster["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} }
        }
    });
    cluster
}

/// A bootstrap with everything from ADS (`api_type` SotW or delta), plus `static_clusters`.
fn ads_bootstrap(control_plane: &ControlPlane, api_type: &str, static_clusters: Vec<Value>) -> Value {
    let mut clusters = vec![xds_cluster(control_plane.address())];
    clusters.extend(static_clusters);
    json!({
        "node": { "id": "legate-test", "cluster": "tests" },
        "admin": { "address": address(SocketAddr::from(([127, 0, 0, 1], 0))) },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": "xds_cluster" } }],
            },
            "lds_config": { "ads": {}, "resource_api_version": "V3" },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
        },
        "static_resources": { "clusters": clusters },
    })
}

fn listener(server_name: &str) -> Value {
    json!({
        "name": "ingress",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "statPrefix": "ingress",
                "serverName": server_name,
                "rds": { "routeConfigName": "routes", "configSource": { "ads": {}, "resourceApiVersion": "V3" } },
                "httpFilters": [router_filter()],
            },
        }]}],
    })
}

fn routes_to(cluster: &str) -> Value {
    json!({
        "name": "routes",
        "virtualHosts": [{ "name": "all", "domains": ["*"], "routes": [route_to("/", cluster)] }],
    })
}

fn eds_cluster(name: &str) -> Value {
    json!({
        "name": name,
        "type": "EDS",
        "connectTimeout": "1s",
        "edsClusterConfig": { "edsConfig": { "ads": {}, "resourceApiVersion": "V3" } },
    })
}

fn assignment(cluster: &str, hosts: &[SocketAddr]) -> Value {
    let endpoints: Vec<Value> = hosts.iter().map(|a| json!({ "endpoint": { "address": address(*a) } })).collect();
    json!({ "clusterName": cluster, "endpoints": [{ "lbEndpoints": endpoints }] })
}

/// Sets every type of a first configuration: listener → routes → `web` (EDS) → `hosts`.
fn initial(control_plane: &ControlPlane, hosts: &[SocketAddr]) {
    control_plane.set(type_url::CLUSTER, "c1", vec![eds_cluster("web")]);
    control_plane.set(type_url::ENDPOINT, "e1", vec![assignment("web", hosts)]);
    control_plane.set(type_url::LISTENER, "l1", vec![listener("one")]);
    control_plane.set(type_url::ROUTE, "r1", vec![routes_to("web")]);
}

fn get(px: &Legate, path: &str) -> legate_testing::HttpResponse {
    HttpClient::connect(px.connect_addr("ingress")).get(path)
}

#[test]
fn ads_state_of_the_world_configures_updates_refuses_and_survives_a_restart() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let b = HttpUpstream::http1(|_| UpstreamAction::ok("b"));
    let mut control_plane = ControlPlane::start();
    initial(&control_plane, &[a.addr()]);
    let px = Legate::start(legate_bin!(), &ads_bootstrap(&control_plane, "AGGREGATED_GRPC", vec![]).to_string());
    // Ready only once everything arrived: the first request is served.
    assert_eq!(get(&px, "/").body, "a");
    control_plane.wait_for_ack(type_url::LISTENER, "l1");
    control_plane.wait_for_ack(type_url::CLUSTER, "c1");
    control_plane.wait_for_ack(type_url::ROUTE, "r1");
    control_plane.wait_for_ack(type_url::ENDPOINT, "e1");
    let first = control_plane.requests().into_iter().find(|r| r.node_id.is_some()).expect("a request with the node");
    assert_eq!(first.node_id.as_deref(), Some("legate-test"));
    assert_eq!(px.stat("control_plane.connected_state"), Some(1));
    assert_eq!(px.stat("listener_manager.lds.update_success"), Some(1));
    assert_eq!(px.stat("cluster_manager.cds.update_success"), Some(1));
    assert_eq!(px.stat("http.ingress.rds.routes.update_success"), Some(1));
    assert_eq!(px.stat("cluster.web.update_success"), Some(1));

    // Endpoints, then routes, change.
    control_plane.set(type_url::ENDPOINT, "e2", vec![assignment("web", &[b.addr()])]);
    control_plane.wait_for_ack(type_url::ENDPOINT, "e2");
    eventually("b serves", Duration::from_secs(10), || get(&px, "/").body, |body| body == "b");
    control_plane.set(type_url::CLUSTER, "c2", vec![eds_cluster("web"), eds_cluster("other")]);
    control_plane.set(type_url::ENDPOINT, "e3", vec![assignment("web", &[b.addr()]), assignment("other", &[a.addr()])]);
    control_plane.set(type_url::ROUTE, "r2", vec![routes_to("other")]);
    control_plane.wait_for_ack(type_url::ROUTE, "r2");
    eventually("other serves", Duration::from_secs(10), || get(&px, "/").body, |body| body == "a");

    // A bad cluster is NACKed, naming it and the field; the good config keeps serving.
    let mut bad = eds_cluster("web");
    bad["connectTimeout"] = json!("0s");
    control_plane.set(type_url::CLUSTER, "c3", vec![bad, eds_cluster("other")]);
    let nack = control_plane.wait_for_nack(type_url::CLUSTER, "c3");
    let detail = nack.error_detail.unwrap_or_default();
    assert!(detail.contains("cluster 'web'") && detail.contains("connect_timeout"), "{detail}");
    assert_eq!(px.stat("cluster_manager.cds.update_rejected"), Some(1));
    assert_eq!(get(&px, "/").body, "a");
    let dump = px.admin_json("/config_dump");
    let clusters = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"].as_str().unwrap().ends_with("ClustersConfigDump"))
        .unwrap();
    assert_eq!(clusters["version_info"], "c2", "{clusters}");

    // The control plane goes away: legate keeps serving, then reconnects and re-subscribes.
    control_plane.stop();
    px.wait_stat("control_plane.connected_state", 0);
    assert_eq!(get(&px, "/").body, "a");
    control_plane.restart();
    px.wait_stat("control_plane.connected_state", 1);
    control_plane.set(type_url::ROUTE, "r3", vec![routes_to("web")]);
    control_plane.wait_for_ack(type_url::ROUTE, "r3");
    eventually("web again", Duration::from_secs(10), || get(&px, "/").body, |body| body == "b");

    // The listener is removed: its port closes.
    let address = px.connect_addr("ingress");
    control_plane.set(type_url::LISTENER, "l2", vec![]);
    control_plane.wait_for_ack(type_url::LISTENER, "l2");
    px.wait_stat("listener_manager.listener_removed", 1);
    eventually("port closed", Duration::from_secs(10), || std::net::TcpStream::connect(address).is_err(), |c| *c);
}

/// A cluster whose TLS context cannot be built (its certificate files are missing) is NACKed,
/// naming the cluster and the field; the clusters already there keep serving.
#[test]
fn a_cluster_whose_tls_context_cannot_be_built_is_nacked() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let control_plane = ControlPlane::start();
    initial(&control_plane, &[a.addr()]);
    let px = Legate::start(legate_bin!(), &ads_bootstrap(&control_plane, "AGGREGATED_GRPC", vec![]).to_string());
    control_plane.wait_for_ack(type_url::ROUTE, "r1");
    eventually("a serves", Duration::from_secs(10), || get(&px, "/").body, |body| body == "a");

    let mut broken = eds_cluster("mesh");
    broken["transport_socket"] = unreadable_upstream_tls();
    control_plane.set(type_url::CLUSTER, "c2", vec![eds_cluster("web"), broken]);
    let nack = control_plane.wait_for_nack(type_url::CLUSTER, "c2");
    let detail = nack.error_detail.unwrap_or_default();
    assert!(detail.contains("cluster 'mesh'") && detail.contains("transport_socket.typed_config"), "{detail}");
    assert_eq!(px.stat("cluster_manager.cds.update_rejected"), Some(1));
    assert_eq!(get(&px, "/").body, "a");
}

#[test]
fn delta_ads_adds_and_removes_resources() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let control_plane = ControlPlane::start();
    initial(&control_plane, &[a.addr()]);
    let px = Legate::start(legate_bin!(), &ads_bootstrap(&control_plane, "AGGREGATED_DELTA_GRPC", vec![]).to_string());
    assert_eq!(get(&px, "/").body, "a");
    assert!(control_plane.requests().iter().any(|r| r.delta), "requests were not delta");
    assert_eq!(px.stat("cluster_manager.active_clusters"), Some(2));
    // Removing the cluster (delta `removed_resources`) leaves the route without it: 503.
    control_plane.remove(type_url::CLUSTER, "c2", &["web"]);
    px.wait_stat("cluster_manager.cluster_removed", 1);
    eventually("no cluster", Duration::from_secs(10), || get(&px, "/").status, |s| *s == 503);
}

#[test]
fn a_cluster_warms_until_its_endpoints_arrive() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let control_plane = ControlPlane::start();
    initial(&control_plane, &[a.addr()]);
    let px = Legate::start(legate_bin!(), &ads_bootstrap(&control_plane, "AGGREGATED_GRPC", vec![]).to_string());
    assert_eq!(get(&px, "/").body, "a");
    // A new cluster without endpoints yet warms; the route to it waits with it.
    control_plane.set(type_url::CLUSTER, "c2", vec![eds_cluster("web"), eds_cluster("late")]);
    control_plane.wait_for_ack(type_url::CLUSTER, "c2");
    px.wait_stat("cluster_manager.warming_clusters", 1);
    let dump = px.admin_json("/config_dump?resource=dynamic_warming_clusters");
    assert_eq!(dump["configs"][0]["cluster"]["name"], "late", "{dump}");
    control_plane.set(type_url::ENDPOINT, "e2", vec![assignment("web", &[a.addr()]), assignment("late", &[a.addr()])]);
    px.wait_stat("cluster_manager.warming_clusters", 0);
    assert_eq!(px.stat("cluster_manager.active_clusters"), Some(3));
}

/// A `Secret` with an inline certificate and key.
fn secret(name: &str, cert: &legate_testing::TestCert) -> Value {
    json!({
        "name": name,
        "tlsCertificate": {
            "certificateChain": { "inlineString": cert.cert_pem },
            "privateKey": { "inlineString": cert.key_pem },
        },
    })
}

#[test]
fn listener_certificates_come_from_sds_and_rotate() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let ca = legate_testing::TestCa::new("xds test ca");
    let (first, second) = (ca.issue("first", &["edge.example.com"]), ca.issue("second", &["edge.example.com"]));
    let control_plane = ControlPlane::start();
    initial(&control_plane, &[a.addr()]);
    let mut tls_listener = listener("tls");
    tls_listener["filter_chains"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "commonTlsContext": { "tlsCertificateSdsSecretConfigs": [{
                "name": "edge_cert", "sdsConfig": { "ads": {}, "resourceApiVersion": "V3" }
            }] },
        },
    });
    control_plane.set(type_url::LISTENER, "l1", vec![tls_listener]);
    control_plane.set(type_url::SECRET, "s1", vec![secret("edge_cert", &first)]);
    let px = Legate::start(legate_bin!(), &ads_bootstrap(&control_plane, "AGGREGATED_GRPC", vec![]).to_string());
    control_plane.wait_for_ack(type_url::SECRET, "s1");
    let addr = px.connect_addr("ingress");
    let served = || {
        let client = legate_testing::TlsClient::new(&ca, "edge.example.com");
        client.connect(addr).expect("handshake").peer_certificate().unwrap()
    };
    assert_eq!(served(), first.der);
    let client = legate_testing::TlsClient::new(&ca, "edge.example.com");
    assert_eq!(client.get(addr, "/").expect("https").body, "a");
    assert_eq!(px.stat("sds.edge_cert.update_success"), Some(1));
    // A new certificate: new handshakes get it.
    control_plane.set(type_url::SECRET, "s2", vec![secret("edge_cert", &second)]);
    control_plane.wait_for_ack(type_url::SECRET, "s2");
    eventually("the new certificate is served", Duration::from_secs(10), served, |der| *der == second.der);
}

/// An upstream that requires a client certificate of `client_ca` and answers `tag` with a
/// certificate of `server_ca` for `api.internal`.
struct MtlsUpstream {
    server_ca: legate_testing::TestCa,
    client_ca: legate_testing::TestCa,
    upstream: legate_testing::TlsUpstream,
}

impl MtlsUpstream {
    fn start(tag: &str) -> Self {
        let server_ca = legate_testing::TestCa::new("mesh server CA");
        let client_ca = legate_testing::TestCa::new("mesh client CA");
        let upstream = legate_testing::TlsUpstream::http_requiring_client_cert(
            &server_ca.issue("api", &["api.internal"]),
            &client_ca,
            tag,
        );
        MtlsUpstream { server_ca, client_ca, upstream }
    }

    /// The secrets a cluster needs to reach it: `cert` (a client certificate for `san`) and
    /// `ca` (a validation context trusting its server).
    fn secrets(&self, cert: &str, san: &str, ca: &str) -> Vec<Value> {
        vec![
            secret(cert, &self.client_ca.issue("legate", &[san])),
            json!({ "name": ca, "validationContext": { "trustedCa": { "inlineString": self.server_ca.pem() } } }),
        ]
    }
}

/// An upstream TLS context (proto JSON) whose client certificate and validation context are
/// the secrets `cert` and `ca` over ADS (`ca` may be absent).
fn upstream_tls_from_ads(cert: &str, ca: Option<&str>, ads: Value) -> Value {
    let mut common = json!({ "tlsCertificateSdsSecretConfigs": [{ "name": cert, "sdsConfig": ads }] });
    if let Some(ca) = ca {
        common["validationContextSdsSecretConfig"] = json!({ "name": ca, "sdsConfig": ads });
    }
    json!({
        "name": "envoy.transport_sockets.tls",
        "typedConfig": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "api.internal",
            "commonTlsContext": common,
        },
    })
}

/// Routes `/mesh` to the cluster `mesh`, the rest to `web`.
fn routes_with_mesh() -> Value {
    let mut routes = routes_to("web");
    routes["virtualHosts"][0]["routes"] = json!([route_to("/mesh", "mesh"), route_to("/", "web")]);
    routes
}

/// Adds the EDS cluster `mesh` (with `transport_socket`, its one host `host`) beside `web`
/// (host `a`), and routes `/mesh` to it.
fn add_mesh_cluster(control_plane: &ControlPlane, transport_socket: Value, host: SocketAddr, a: SocketAddr) {
    let mut mesh = eds_cluster("mesh");
    mesh["transportSocket"] = transport_socket;
    control_plane.set(type_url::ENDPOINT, "e2", vec![assignment("web", &[a]), assignment("mesh", &[host])]);
    control_plane.set(type_url::CLUSTER, "c2", vec![eds_cluster("web"), mesh]);
    control_plane.wait_for_ack(type_url::CLUSTER, "c2");
    control_plane.set(type_url::ROUTE, "r2", vec![routes_with_mesh()]);
    control_plane.wait_for_ack(type_url::ROUTE, "r2");
}

/// A cluster's upstream mTLS from a control plane (a mesh's sidecar): its client certificate
/// and the CA it checks the server with come over ADS. The cluster warms until both arrive
/// (Envoy: a cluster is not marked active before its SDS secrets), then reaches an upstream
/// that requires a client certificate; a new certificate is picked up.
#[test]
fn cluster_tls_secrets_come_from_sds_and_the_cluster_warms_until_they_arrive() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let mesh = MtlsUpstream::start("mtls-ok");
    let control_plane = ControlPlane::start();
    initial(&control_plane, &[a.addr()]);
    let px = Legate::start(legate_bin!(), &ads_bootstrap(&control_plane, "AGGREGATED_GRPC", vec![]).to_string());
    assert_eq!(get(&px, "/").body, "a");
    let ads = json!({ "ads": {}, "resourceApiVersion": "V3" });
    add_mesh_cluster(
        &control_plane,
        upstream_tls_from_ads("mesh_cert", Some("mesh_ca"), ads),
        mesh.upstream.addr(),
        a.addr(),
    );
    // Its endpoints are there, its secrets are not: it warms, and the route to it has no
    // cluster yet.
    px.wait_stat("cluster_manager.warming_clusters", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(px.stat("cluster_manager.warming_clusters"), Some(1));
    let dump = px.admin_json("/config_dump?resource=dynamic_warming_clusters");
    assert_eq!(dump["configs"][0]["cluster"]["name"], "mesh", "{dump}");
    assert_eq!(get(&px, "/mesh").status, 503);

    control_plane.set(type_url::SECRET, "s1", mesh.secrets("mesh_cert", "first.internal", "mesh_ca"));
    px.wait_stat("cluster_manager.warming_clusters", 0);
    let response = get(&px, "/mesh");
    assert_eq!((response.status, response.body.as_str()), (200, "mtls-ok"), "{}", response.body);
    assert_eq!(px.stat("sds.mesh_cert.update_success"), Some(1));
    assert_eq!(px.stat("cluster.mesh.client_ssl_socket_factory.upstream_context_secrets_not_ready"), Some(0));

    // A new client certificate: the context takes it.
    control_plane.set(type_url::SECRET, "s2", mesh.secrets("mesh_cert", "second.internal", "mesh_ca"));
    control_plane.wait_for_ack(type_url::SECRET, "s2");
    eventually(
        "the new client certificate is in use",
        Duration::from_secs(10),
        || px.admin_json("/certs").to_string(),
        |certs| certs.contains("second.internal"),
    );
}

/// A static cluster whose TLS secrets come over ADS: start-up waits for them, as for a CDS
/// cluster's endpoints, so the first request already has them although the control plane
/// sends them a second late.
#[test]
fn a_static_clusters_tls_secrets_from_ads_are_awaited_at_start_up() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let mesh = MtlsUpstream::start("static-mtls-ok");
    let control_plane = ControlPlane::start();
    initial(&control_plane, &[a.addr()]);
    control_plane.set(type_url::ROUTE, "r1", vec![routes_with_mesh()]);
    let mut cluster = legate_testing::config::static_cluster("mesh", &[mesh.upstream.addr()]);
    // The bootstrap's YAML takes the same JSON as a control plane's resources.
    cluster["transport_socket"] =
        upstream_tls_from_ads("static_cert", Some("static_ca"), json!({ "ads": {}, "resource_api_version": "V3" }));
    std::thread::scope(|threads| {
        threads.spawn(|| {
            std::thread::sleep(Duration::from_secs(1));
            control_plane.set(type_url::SECRET, "s1", mesh.secrets("static_cert", "legate.internal", "static_ca"));
        });
        let bootstrap = ads_bootstrap(&control_plane, "AGGREGATED_GRPC", vec![cluster]);
        let px = Legate::start(legate_bin!(), &bootstrap.to_string());
        let response = get(&px, "/mesh");
        assert_eq!((response.status, response.body.as_str()), (200, "static-mtls-ok"), "{}", response.body);
        assert_eq!(px.stat("cluster.mesh.client_ssl_socket_factory.upstream_context_secrets_not_ready"), Some(0));
    });
}

/// A cluster whose secret never comes: once its `initial_fetch_timeout` passed it is active,
/// as Envoy's, and its requests fail without a TLS connection
/// (`client_ssl_socket_factory.upstream_context_secrets_not_ready`).
#[test]
fn a_cluster_whose_secret_never_comes_serves_after_its_fetch_timeout_and_fails_its_requests() {
    let a = HttpUpstream::http1(|_| UpstreamAction::ok("a"));
    let never = HttpUpstream::http1(|_| UpstreamAction::ok("not over TLS"));
    let control_plane = ControlPlane::start();
    initial(&control_plane, &[a.addr()]);
    let px = Legate::start(legate_bin!(), &ads_bootstrap(&control_plane, "AGGREGATED_GRPC", vec![]).to_string());
    let ads = json!({ "ads": {}, "resourceApiVersion": "V3", "initialFetchTimeout": "0.5s" });
    add_mesh_cluster(&control_plane, upstream_tls_from_ads("missing_cert", None, ads.clone()), never.addr(), a.addr());
    px.wait_stat("sds.missing_cert.init_fetch_timeout", 1);
    px.wait_stat("cluster_manager.warming_clusters", 0);
    assert_eq!(px.stat("cluster_manager.active_clusters"), Some(3));
    let response = get(&px, "/mesh");
    assert_eq!(response.status, 503, "{}", response.body);
    assert!(
        response.body.ends_with("transport failure reason: TLS error: Secret is not supplied by SDS"),
        "{}",
        response.body
    );
    assert!(px.stat("cluster.mesh.client_ssl_socket_factory.upstream_context_secrets_not_ready").unwrap_or(0) >= 1);
    assert_eq!(get(&px, "/").body, "a");
    // A cluster added later with the secret already given up on does not wait for it.
    let mut later = eds_cluster("later");
    later["transportSocket"] = upstream_tls_from_ads("missing_cert", None, ads.clone());
    let mut mesh = eds_cluster("mesh");
    mesh["transportSocket"] = upstream_tls_from_ads("missing_cert", None, ads);
    let hosts = |name| assignment(name, &[never.addr()]);
    control_plane.set(type_url::ENDPOINT, "e3", vec![assignment("web", &[a.addr()]), hosts("mesh"), hosts("later")]);
    control_plane.set(type_url::CLUSTER, "c3", vec![eds_cluster("web"), mesh, later]);
    control_plane.wait_for_ack(type_url::CLUSTER, "c3");
    px.wait_stat("cluster_manager.active_clusters", 4);
    assert_eq!(px.stat("cluster_manager.warming_clusters"), Some(0));
}

/// Loads one Envoy Gateway scenario (listeners moved to 127.0.0.1:0: they bind 0.0.0.0:10080),
/// serves it over ADS and returns legate with the first listener's name; `None` when the
/// shared directory is missing.
fn serve_envoy_gateway(control_plane: &ControlPlane, scenario: &str) -> Option<(Legate, String)> {
    let dir = legate_testing::control_plane::xds_resources_dir();
    let file = |kind: &str| {
        let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&format!("__{scenario}.{kind}.yaml")))
            })
        });
        found.map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let value: Value = serde_yaml_ng::from_str(&text).unwrap();
            value.as_array().cloned().unwrap_or_default()
        })
    };
    let (Some(mut listeners), Some(routes)) = (file("listeners"), file("routes")) else {
        eprintln!("scenario {scenario} not found in {}; skipping", dir.display());
        return None;
    };
    for listener in &mut listeners {
        listener["address"] = json!({ "socketAddress": { "address": "127.0.0.1", "portValue": 0 } });
    }
    control_plane.set(type_url::CLUSTER, "eg1", file("clusters").unwrap_or_default());
    control_plane.set(type_url::ENDPOINT, "eg1", file("endpoints").unwrap_or_default());
    control_plane.set(type_url::LISTENER, "eg1", listeners.clone());
    control_plane.set(type_url::ROUTE, "eg1", routes);
    let px = Legate::start(legate_bin!(), &ads_bootstrap(control_plane, "AGGREGATED_GRPC", vec![]).to_string());
    control_plane.wait_for_ack(type_url::LISTENER, "eg1");
    control_plane.wait_for_ack(type_url::ROUTE, "eg1");
    Some((px, listeners[0]["name"].as_str().unwrap().to_string()))
}

/// Envoy Gateway's `http-route-redirect`: redirects are answered by legate itself, so no
/// request leaves the machine.
#[test]
fn an_envoy_gateway_redirect_scenario_is_served() {
    let control_plane = ControlPlane::start();
    let Some((px, listener)) = serve_envoy_gateway(&control_plane, "http-route-redirect") else { return };
    // The first route: scheme, host, port and prefix rewritten, 302.
    let response = HttpClient::connect(px.connect_addr(&listener)).get("/docs");
    assert_eq!(response.status, 302);
    let location = response.header("location").unwrap_or_default();
    assert!(location.starts_with("https://redirected.com:8443/redirected"), "{location}");
}

/// Envoy Gateway's `http-route-direct-response`: bodies from `direct_response.body_format`.
#[test]
fn an_envoy_gateway_direct_response_scenario_is_served() {
    let control_plane = ControlPlane::start();
    let Some((px, listener)) = serve_envoy_gateway(&control_plane, "http-route-direct-response") else { return };
    let get = |path: &str| {
        HttpClient::connect(px.connect_addr(&listener)).send("GET", path, &[("host", "www.envoyproxy.io")], b"")
    };
    let inline = get("/inline");
    assert_eq!((inline.status, inline.body.as_str()), (200, "OK"));
    let error = get("/value-ref");
    assert_eq!((error.status, error.body.as_str()), (502, r#"{"error": "Internal Server Error"}"#));
    assert_eq!(error.header("x-set-header"), Some("set-502"));
}

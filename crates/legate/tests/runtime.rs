//! The runtime (Envoy's "Runtime" page, `layered_runtime`): static, disk, admin and RTDS
//! layers, the admin's `/runtime` and `/runtime_modify`, `runtime.*` stats, and features
//! reading their `runtime_key` while the server runs (the fault filter's `fault.http.*`, a
//! route's `runtime_fraction`, a listener's connection limit).

use std::path::Path;
use std::time::Duration;

use legate_testing::config::{hcm_config, http_bootstrap, route_config, route_to, tcp_proxy_bootstrap, virtual_host};
use legate_testing::{
    connect, echo_roundtrip, eventually, expect_closed, json, legate_bin, HttpClient, HttpUpstream, Legate,
    TcpEchoServer, TempDir, UpstreamAction, Value,
};

const WITHIN: Duration = Duration::from_secs(10);

/// A fault filter that never aborts unless the runtime says so.
fn fault_filters() -> Value {
    json!([
        { "name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": { "http_status": 503, "percentage": { "numerator": 0 } } } },
        { "name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }
    ])
}

fn fault_bootstrap(upstream: &HttpUpstream, layers: Value) -> Value {
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["http_filters"] = fault_filters();
    config["layered_runtime"] = json!({ "layers": layers });
    config
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Points `link` at `target` the way Envoy's docs say to: a new link renamed over the old.
fn swap(link: &Path, target: &Path) {
    let aside = link.with_extension("new");
    let _ = std::fs::remove_file(&aside);
    std::os::unix::fs::symlink(target, &aside).unwrap();
    std::fs::rename(&aside, link).unwrap();
}

fn status(client: &mut HttpClient, path: &str) -> u16 {
    client.get(path).status
}

#[test]
fn a_disk_layer_drives_the_fault_filter_and_is_read_again_when_its_root_is_swapped() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let dir = TempDir::new();
    write(&dir.join("v1/envoy/fault/http/abort/abort_percent"), "# every request\n100\n");
    write(&dir.join("v1/envoy/fault/http/abort/http_status"), "418");
    let current = dir.join("current");
    swap(&current, &dir.join("v1"));
    let disk = json!({ "symlink_root": current.display().to_string(), "subdirectory": "envoy" });
    let config = fault_bootstrap(&upstream, json!([{ "name": "disk", "disk_layer": disk }]));
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    let r = client.get("/");
    assert_eq!((r.status, r.body.as_str()), (418, "fault filter abort"), "{r:?}");

    let runtime = px.admin_json("/runtime");
    assert_eq!(runtime["layers"], json!(["disk"]));
    assert_eq!(runtime["entries"]["fault.http.abort.abort_percent"]["final_value"], "100");
    assert_eq!(runtime["entries"]["fault.http.abort.http_status"]["layer_values"], json!(["418"]));
    assert_eq!(px.stat("runtime.num_keys"), Some(2));
    assert_eq!(px.stat("runtime.num_layers"), Some(1));

    // Editing a file in place changes nothing (Envoy reloads on a swap only)...
    write(&dir.join("v1/envoy/fault/http/abort/http_status"), "429");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(status(&mut client, "/"), 418);
    // ...a new tree swapped in does.
    write(&dir.join("v2/envoy/fault/http/abort/abort_percent"), "0");
    swap(&current, &dir.join("v2"));
    eventually("the swapped tree's 0 %", WITHIN, || status(&mut client, "/"), |s| *s == 200);
    assert!(px.stat("runtime.load_success").unwrap() >= 2);
    assert_eq!(px.stat("runtime.load_error"), Some(0));
}

#[test]
fn runtime_modify_overrides_and_removes_admin_values() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    // `/gated` goes to a direct response for the runtime's share of requests, else on.
    let mut gated = json!({ "match": { "prefix": "/gated", "runtime_fraction": {
            "default_value": { "numerator": 0 }, "runtime_key": "routing.gated" } },
        "direct_response": { "status": 202, "body": { "inline_string": "gated" } } });
    gated["name"] = json!("gated");
    hcm_config(&mut config, 0)["route_config"] =
        route_config(vec![virtual_host("all", &["*"], vec![gated, route_to("/", "backend")])]);
    config["layered_runtime"] = json!({ "layers": [
        { "name": "static", "static_layer": { "routing": { "gated": 0 }, "other": { "numerator": 5 } } },
        { "name": "admin", "admin_layer": {} }
    ] });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(status(&mut client, "/gated"), 200, "0 % from the static layer");

    assert_eq!(px.admin_post("/runtime_modify?routing.gated=100"), (200, "OK\n".to_string()));
    assert_eq!(px.stat("runtime.admin_overrides_active"), Some(1));
    for _ in 0..5 {
        assert_eq!(status(&mut client, "/gated"), 202, "100 % from the admin layer");
    }
    let entry = &px.admin_json("/runtime")["entries"]["routing.gated"];
    assert_eq!(entry["layer_values"], json!(["0", "100"]));
    assert_eq!(entry["final_value"], "100");
    let fraction = &px.admin_json("/runtime")["entries"]["other"];
    assert_eq!(fraction["layer_values"][1], "", "{fraction}");

    // An empty value removes the override: the static layer's 0 % again.
    assert_eq!(px.admin_post("/runtime_modify?routing.gated=").0, 200);
    assert_eq!(status(&mut client, "/gated"), 200);
    assert_eq!(px.stat("runtime.admin_overrides_active"), Some(0));

    // Envoy's refusals.
    assert_eq!(px.admin_get("/runtime_modify?a=1").0, 405);
    let (code, body) = px.admin_post("/runtime_modify");
    assert_eq!(code, 400);
    assert!(body.starts_with("usage: /runtime_modify?key1=value1"), "{body}");
}

#[test]
fn runtime_modify_takes_form_values() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let config = fault_bootstrap(&upstream, json!([{ "name": "admin", "admin_layer": {} }]));
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(status(&mut client, "/"), 200);
    let mut admin = HttpClient::connect(px.admin_addr());
    let body = b"fault.http.abort.abort_percent=100&fault.http.abort.http_status=451";
    let r = admin.send(
        "POST",
        "/runtime_modify",
        &[("content-type", "application/x-www-form-urlencoded"), ("host", "admin")],
        body,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    assert_eq!(status(&mut client, "/"), 451);
}

#[test]
fn without_layers_there_is_nothing_to_modify() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let px = Legate::start(legate_bin!(), &http_bootstrap(&[upstream.addr()]).to_string());
    assert_eq!(px.admin_json("/runtime"), json!({ "entries": {}, "layers": [] }));
    assert_eq!(px.admin_post("/runtime_modify?a=1"), (503, "No admin layer specified".to_string()));
    assert_eq!(px.stat("runtime.num_layers"), Some(0));
    assert_eq!(px.stat("runtime.load_success"), Some(1));

    // An empty `layered_runtime` has Envoy's one admin layer, with an empty name.
    let mut config = http_bootstrap(&[upstream.addr()]);
    config["layered_runtime"] = json!({});
    let px = Legate::start(legate_bin!(), &config.to_string());
    assert_eq!(px.admin_post("/runtime_modify?a=1").0, 200);
    assert_eq!(px.admin_json("/runtime")["layers"], json!([""]));
}

#[test]
fn an_rtds_layer_comes_from_a_file_and_follows_it() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let dir = TempDir::new();
    let file = dir.join("rtds.json");
    let publish = |version: &str, layer: Value| {
        let resource = json!({ "@type": "type.googleapis.com/envoy.service.runtime.v3.Runtime",
                               "name": "flags", "layer": layer });
        let aside = file.with_extension("tmp");
        std::fs::write(&aside, json!({ "version_info": version, "resources": [resource] }).to_string()).unwrap();
        std::fs::rename(&aside, &file).unwrap();
    };
    publish("1", json!({ "fault": { "http": { "abort": { "abort_percent": 100, "http_status": 429 } } } }));
    let rtds =
        json!({ "name": "flags", "rtds_config": { "path_config_source": { "path": file.display().to_string() } } });
    let config = fault_bootstrap(&upstream, json!([{ "name": "from-control-plane", "rtds_layer": rtds }]));
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    // The server waited for the layer before its listeners served.
    assert_eq!(status(&mut client, "/"), 429);
    assert!(px.stat("runtime.update_success").unwrap_or(0) >= 1);
    assert_eq!(px.admin_json("/runtime")["entries"]["fault.http.abort.http_status"]["final_value"], "429");

    // An update replaces the whole layer.
    publish("2", json!({ "other": "x" }));
    eventually("the second layer", WITHIN, || status(&mut client, "/"), |s| *s == 200);
    let runtime = px.admin_json("/runtime");
    assert!(runtime["entries"].get("fault.http.abort.http_status").is_none(), "{runtime}");
    assert_eq!(runtime["entries"]["other"]["final_value"], "x");

    // A list is no runtime value: refused, the layer as it was.
    publish("3", json!({ "bad": [1] }));
    px.wait_stat("runtime.update_rejected", 1);
    assert_eq!(px.admin_json("/runtime")["entries"]["other"]["final_value"], "x");
}

#[test]
fn the_listener_connection_limit_follows_the_runtime() {
    let echo = TcpEchoServer::start();
    let mut config = tcp_proxy_bootstrap(&[echo.addr()]);
    config["layered_runtime"] = json!({ "layers": [{ "name": "admin", "admin_layer": {} }] });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.listener_addr("ingress");
    let mut c1 = connect(addr);
    echo_roundtrip(&mut c1, b"one");
    let mut c2 = connect(addr);
    echo_roundtrip(&mut c2, b"two, no limit yet");

    assert_eq!(px.admin_post("/runtime_modify?envoy.resource_limits.listener.ingress.connection_limit=2").0, 200);
    let mut c3 = connect(addr);
    expect_closed(&mut c3, "third connection over a runtime limit of 2");
    px.wait_stat("listener.ingress.downstream_cx_overflow", 1);
    echo_roundtrip(&mut c1, b"one still works");
}

#[test]
fn bad_runtime_layers_fail_at_load_with_the_field() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let cases = [
        (json!([{ "name": "a", "admin_layer": {} }, { "name": "b", "admin_layer": {} }]), "Too many admin layers"),
        (json!([{ "name": "a", "static_layer": {} }, { "name": "a", "admin_layer": {} }]), "Duplicate layer name: a"),
        (json!([{ "name": "a" }]), "layered_runtime.layers[0]"),
        (json!([{ "name": "a", "static_layer": { "k": [1] } }]), "Invalid runtime entry value for k"),
        (json!([{ "static_layer": {} }]), "layered_runtime.layers[0].name"),
    ];
    for (layers, expected) in cases {
        let mut config = http_bootstrap(&[upstream.addr()]);
        config["layered_runtime"] = json!({ "layers": layers });
        let out = legate_testing::run_bounded(
            legate_bin!(),
            &["--mode", "validate", "--config-yaml", &config.to_string()],
            Duration::from_secs(30),
        );
        assert_ne!(out.code(), 0, "{layers}");
        assert!(out.stderr.contains(expected), "{layers}: {}", out.stderr);
    }
}

#[test]
fn circuit_breaker_limits_follow_the_runtime() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    config["layered_runtime"] = json!({ "layers": [{ "name": "admin", "admin_layer": {} }] });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(status(&mut client, "/"), 200);

    // No request may be in flight: each overflows the breaker.
    assert_eq!(px.admin_post("/runtime_modify?circuit_breakers.backend.default.max_requests=0").0, 200);
    let r = client.get("/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(px.stat("cluster.backend.upstream_rq_pending_overflow").unwrap_or(0) >= 1);

    assert_eq!(px.admin_post("/runtime_modify?circuit_breakers.backend.default.max_requests=").0, 200);
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(status(&mut client, "/"), 200, "the config's limit again");
}

#[test]
fn outlier_detection_reads_its_settings_from_the_runtime() {
    let good = HttpUpstream::http1(|_| UpstreamAction::ok("good"));
    let bad = HttpUpstream::http1(|_| UpstreamAction::status(503, "bad"));
    let mut config = http_bootstrap(&[good.addr(), bad.addr()]);
    legate_testing::config::cluster_config(&mut config, 0)["outlier_detection"] = json!({
        "consecutive_5xx": 100, "interval": "1s", "base_ejection_time": "60s", "max_ejection_percent": 50
    });
    // The runtime's 2 wins over the config's 100.
    config["layered_runtime"] =
        json!({ "layers": [{ "name": "static", "static_layer": { "outlier_detection.consecutive_5xx": 2 } }] });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    let bad_answers = (0..6).filter(|_| client.get("/").status == 503).count();
    assert_eq!(bad_answers, 2, "ejected at its second 503");
    px.wait_stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx", 1);
}

#[test]
fn the_callers_fault_keys_replace_the_filters() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("upstream"));
    let layer = json!({ "fault.http.alpha.abort.abort_percent": 100, "fault.http.alpha.abort.http_status": 429 });
    let config = fault_bootstrap(&upstream, json!([{ "name": "static", "static_layer": layer }]));
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));
    assert_eq!(status(&mut client, "/"), 200, "no caller: the filter's 0 %");
    let from = |cluster: &str, client: &mut HttpClient| {
        client.send("GET", "/", &[("host", "x"), ("x-envoy-downstream-service-cluster", cluster)], b"").status
    };
    assert_eq!(from("alpha", &mut client), 429);
    assert_eq!(from("beta", &mut client), 200);
    assert_eq!(px.stat("http.ingress.fault.alpha.aborts_injected"), Some(1));
}

//! TLS transport sockets (Envoy's "TLS" architecture page; `DownstreamTlsContext` on filter
//! chains, `UpstreamTlsContext` on clusters): termination for HTTP/1.1 and HTTP/2 chosen by
//! ALPN, certificates and filter chains chosen by SNI, SNI passthrough, client certificates
//! (mTLS), upstream TLS with SAN verification, `/certs`, and the failures an operator must see:
//! `ssl.*` stats, handshake timeouts, garbage instead of a ClientHello.
//!
//! Certificates are made at test time (rcgen); clients and TLS upstreams are rustls.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use legate_testing::config::{
    address, bootstrap, http_bootstrap, http_listener, route_config, route_to, router_filter, static_cluster,
    tcp_proxy, virtual_host,
};
use legate_testing::{
    connect, h2_tls_get, json, legate_bin, read_to_end, HttpUpstream, Legate, TagServer, TempDir, TestCa, TestCert,
    TlsClient, TlsUpstream, Value,
};

/// `envoy.transport_sockets.tls` with a `DownstreamTlsContext` made of `context`'s fields.
fn downstream_tls(context: Value) -> Value {
    let mut typed = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    });
    typed.as_object_mut().unwrap().extend(context.as_object().unwrap().clone());
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": typed })
}

/// `envoy.transport_sockets.tls` with an `UpstreamTlsContext` made of `context`'s fields.
fn upstream_tls(context: Value) -> Value {
    let mut typed = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    });
    typed.as_object_mut().unwrap().extend(context.as_object().unwrap().clone());
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": typed })
}

/// Writes an SDS file (`path_config_source`) at `dir/file` holding one `Secret` named `name`
/// with `body` (`tls_certificate` or `validation_context`); returns its path.
fn sds_file(dir: &TempDir, file: &str, name: &str, body: (&str, Value)) -> String {
    let path = dir.join(file);
    let mut secret = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": name,
    });
    secret[body.0] = body.1;
    std::fs::write(&path, json!({ "resources": [secret] }).to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// An SDS secret config reading `name` from the file at `path`.
fn sds_config(name: &str, path: &str) -> Value {
    json!({ "name": name, "sds_config": { "path_config_source": { "path": path }, "resource_api_version": "V3" } })
}

/// What most tests start from: a test CA, a temporary directory, an upstream tagged `backend`.
fn setup() -> (TestCa, TempDir, HttpUpstream) {
    (TestCa::new("legate test CA"), TempDir::new(), HttpUpstream::tag("backend"))
}

/// A `tls_certificates` entry for `edge.example.com`, issued by `ca`, in files in `dir`.
fn edge_certificate(ca: &TestCa, dir: &TempDir) -> Value {
    certificate_files(dir, &ca.issue("edge", &["edge.example.com"]), "edge")
}

/// A `tls_certificates` entry reading `cert` from files in `dir`.
fn certificate_files(dir: &TempDir, cert: &TestCert, name: &str) -> Value {
    let (crt, key) = cert.write(dir, name);
    json!({ "certificate_chain": { "filename": crt }, "private_key": { "filename": key } })
}

fn tls_inspector() -> Value {
    json!({
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" }
    })
}

/// HTTP bootstrap (listener `ingress` → cluster `backend`) whose one filter chain terminates
/// TLS with `context`.
fn https_bootstrap(upstream: SocketAddr, context: Value) -> Value {
    let mut config = http_bootstrap(&[upstream]);
    config["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = downstream_tls(context);
    config
}

#[test]
fn terminates_tls_for_http1_and_http2_chosen_by_alpn() {
    let (ca, dir, upstream) = setup();
    let context = json!({ "common_tls_context": {
        "tls_certificates": [edge_certificate(&ca, &dir)],
        "alpn_protocols": ["h2", "http/1.1"],
    }});
    let mut config = https_bootstrap(upstream.addr(), context);
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": dir.join("access.log").to_str().unwrap(),
            "log_format": { "text_format_source": {
                "inline_string": "%PROTOCOL% %DOWNSTREAM_TLS_VERSION% %REQUESTED_SERVER_NAME% %DOWNSTREAM_PEER_SUBJECT% %DOWNSTREAM_LOCAL_SUBJECT%\n"
            }},
        }
    }]);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.connect_addr("ingress");

    let client = TlsClient::build(&ca, "edge.example.com", &["http/1.1"], None);
    let mut stream = client.connect(addr).expect("handshake");
    assert_eq!(stream.alpn().as_deref(), Some("http/1.1"));
    assert_eq!(stream.version(), "TLSv1.3");
    drop(stream.write_all(b""));
    let response = client.get(addr, "/one").expect("HTTP/1.1 over TLS");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "backend");
    assert_eq!(upstream.last_request().header("x-forwarded-proto"), Some("https"));

    let (response, alpn) = h2_tls_get(&TlsClient::new(&ca, "edge.example.com"), addr, "/two").expect("h2 over TLS");
    assert_eq!(alpn.as_deref(), Some("h2"));
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "backend");

    px.wait_stat("http.ingress.downstream_cx_http2_total", 1);
    px.wait_stat("http.ingress.downstream_cx_http1_total", 2);
    px.wait_stat("listener.ingress.ssl.handshake", 3);
    // The connection manager counts its TLS connections too (Envoy's `downstream_cx_ssl_*`).
    px.wait_stat("http.ingress.downstream_cx_ssl_total", 3);
    assert!(px.stat("http.ingress.downstream_cx_ssl_active").is_some_and(|n| n <= 3));
    assert_eq!(px.stat("listener.ingress.ssl.versions.TLSv1.3"), Some(3));
    assert_eq!(px.stat("listener.ingress.ssl.no_certificate"), Some(3));
    // Without client certificates no peer signs: no `sigalgs.*` downstream, as Envoy.
    assert!(!px.stats().keys().any(|k| k.contains(".ssl.sigalgs.")), "{:?}", px.stats());
    assert_eq!(px.stat("listener.ingress.ssl.curves.X25519"), Some(3));
    assert!(px.stats().keys().any(|k| k.starts_with("listener.ingress.ssl.ciphers.TLS_")), "{:?}", px.stats());

    let log = legate_testing::eventually(
        "two access log lines",
        legate_testing::EVENTUALLY,
        || std::fs::read_to_string(dir.join("access.log")).unwrap_or_default(),
        |log| log.lines().count() >= 2,
    );
    assert!(log.contains("HTTP/1.1 TLSv1.3 edge.example.com - O=legate tests,CN=edge"), "{log}");
    assert!(log.contains("HTTP/2 TLSv1.3 edge.example.com - O=legate tests,CN=edge"), "{log}");
}

/// Over TLS a request's `:scheme` is `https` (Envoy sets it from the connection): header
/// matchers and `%REQ(:SCHEME)%` see it, a redirect keeps it, and an HTTP/2 upstream is sent
/// it; `scheme_header_transformation.match_upstream` sends the upstream's own instead.
#[test]
fn a_request_over_tls_has_the_https_scheme() {
    let ca = TestCa::new("legate test CA");
    let dir = TempDir::new();
    let upstream = HttpUpstream::http2(|_| legate_testing::UpstreamAction::ok("h2 backend"));
    let context = json!({ "common_tls_context": { "tls_certificates": [edge_certificate(&ca, &dir)] } });
    let mut config = https_bootstrap(upstream.addr(), context);
    config["static_resources"]["clusters"][0] =
        legate_testing::config::with_http2(config["static_resources"]["clusters"][0].clone());
    let https_only = json!([{ "name": ":scheme", "string_match": { "exact": "https" } }]);
    legate_testing::config::hcm_config(&mut config, 0)["route_config"] = route_config(vec![virtual_host(
        "vh",
        &["*"],
        vec![
            json!({ "match": { "prefix": "/old", "headers": https_only }, "redirect": { "path_redirect": "/new" } }),
            json!({
                "match": { "prefix": "/", "headers": https_only },
                "route": { "cluster": "backend" },
                "request_headers_to_add": [{ "header": { "key": "x-scheme", "value": "%REQ(:SCHEME)%" } }],
            }),
        ],
    )]);
    let client = TlsClient::new(&ca, "edge.example.com");
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.connect_addr("ingress");

    let response = client.get(addr, "/items").expect("HTTP/1.1 over TLS");
    assert_eq!((response.status, response.body.as_str()), (200, "h2 backend"), "{response:?}");
    let seen = upstream.last_request();
    assert_eq!(seen.scheme.as_deref(), Some("https"), "{seen:?}");
    assert_eq!(seen.header("x-scheme"), Some("https"), "{seen:?}");
    let moved = client.get(addr, "/old").expect("redirect");
    assert_eq!(moved.status, 301, "{moved:?}");
    let location = moved.header("location").unwrap_or_default();
    assert!(location.starts_with("https://") && location.ends_with("/new"), "{moved:?}");

    // The upstream is reached in the clear: `match_upstream` says so.
    legate_testing::config::hcm_config(&mut config, 0)["scheme_header_transformation"] =
        json!({ "match_upstream": true });
    drop(px);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let response = client.get(px.connect_addr("ingress"), "/items").expect("HTTP/1.1 over TLS");
    assert_eq!(response.status, 200, "{response:?}");
    let seen = upstream.last_request();
    assert_eq!(seen.scheme.as_deref(), Some("http"), "{seen:?}");
    assert_eq!(seen.header("x-scheme"), Some("https"), "the request's own `:scheme` is unchanged: {seen:?}");
}

/// Several `tls_certificates` in one context: the SNI picks the certificate (exact name, then
/// a wildcard); without a match, the first one. The client verifies the name, so a completed
/// handshake proves the choice.
#[test]
fn sni_picks_the_certificate() {
    let (ca, dir, upstream) = setup();
    let context = json!({ "common_tls_context": { "tls_certificates": [
        certificate_files(&dir, &ca.issue("first", &["first.example.com"]), "first"),
        certificate_files(&dir, &ca.issue("api", &["api.example.com"]), "api"),
        certificate_files(&dir, &ca.issue("wild", &["*.apps.example.com"]), "wild"),
    ]}});
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());
    let addr = px.connect_addr("ingress");

    for name in ["first.example.com", "api.example.com", "shop.apps.example.com"] {
        let response = TlsClient::new(&ca, name).get(addr, "/").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(response.status, 200, "{name}");
    }
    // Unknown name: the first certificate, which this client then refuses.
    let stream = TlsClient::new(&ca, "other.example.com").connect(addr);
    assert!(stream.is_err(), "the default certificate does not cover other.example.com");
}

/// `tls_inspector` reads the SNI; `server_names` picks the filter chain, which terminates TLS
/// with its own certificate (exact and wildcard names) or passes the bytes through untouched
/// to a TLS upstream (no termination).
#[test]
fn sni_routes_to_terminating_chains_and_to_passthrough() {
    let ca = TestCa::new("legate test CA");
    let dir = TempDir::new();
    let exact = TagServer::start("exact");
    let wildcard = TagServer::start("wildcard");
    let passthrough = TlsUpstream::tag(&ca.issue("pass", &["pass.example.com"]), "from-the-tls-upstream");
    let terminating = |name: &str, cert: &TestCert, cluster: &str| {
        json!({
            "filter_chain_match": { "server_names": [name] },
            "transport_socket": downstream_tls(json!({ "common_tls_context": {
                "tls_certificates": [certificate_files(&dir, cert, cluster)],
            }})),
            "filters": [tcp_proxy(cluster, cluster)],
        })
    };
    let listener = json!({
        "name": "sni", "stat_prefix": "sni",
        "address": address(SocketAddr::from(([127, 0, 0, 1], 0))),
        "listener_filters": [tls_inspector()],
        "filter_chains": [
            terminating("exact.example.com", &ca.issue("exact", &["exact.example.com"]), "exact"),
            terminating("*.wild.example.com", &ca.issue("wild", &["*.wild.example.com"]), "wildcard"),
            { "filter_chain_match": { "server_names": ["pass.example.com"] }, "filters": [tcp_proxy("pass", "pass")] },
        ],
    });
    let clusters = vec![
        static_cluster("exact", &[exact.addr()]),
        static_cluster("wildcard", &[wildcard.addr()]),
        static_cluster("pass", &[passthrough.addr()]),
    ];
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], clusters).to_string());
    let addr = px.connect_addr("sni");

    let read = |name: &str| {
        let mut stream = TlsClient::new(&ca, name).connect(addr).unwrap_or_else(|e| panic!("{name}: {e}"));
        String::from_utf8(stream.read_to_end_lenient().unwrap()).unwrap()
    };
    assert_eq!(read("exact.example.com"), "exact");
    assert_eq!(read("a.wild.example.com"), "wildcard");
    // Passthrough: the handshake is with the upstream itself, which saw the client's SNI.
    assert_eq!(read("pass.example.com"), "from-the-tls-upstream");
    assert_eq!(passthrough.server_names(), vec![Some("pass.example.com".to_string())]);

    px.wait_stat("listener.sni.ssl.handshake", 2);
    assert_eq!(px.stat("tls_inspector.sni_found"), Some(3));
}

/// `require_client_certificate` with a `validation_context`: a client with a certificate from
/// the trusted CA and a matching SAN gets through; each other client is refused during the
/// handshake and counted under the stat that names why.
#[test]
fn mtls_accepts_the_trusted_client_and_counts_each_refusal() {
    let ca = TestCa::new("legate test CA");
    let other_ca = TestCa::new("someone else's CA");
    let dir = TempDir::new();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let upstream = HttpUpstream::tag("backend");
    let context = json!({
        "require_client_certificate": true,
        "common_tls_context": {
            "tls_certificates": [certificate_files(
                &dir,
                &ca.issue("edge", &["edge.example.com", "spiffe://legate.test/edge"]),
                "edge",
            )],
            "validation_context": {
                "trusted_ca": { "filename": dir.join("ca.pem").to_str().unwrap() },
                "match_typed_subject_alt_names": [
                    { "san_type": "URI", "matcher": { "exact": "spiffe://legate.test/frontend" } },
                ],
            },
        },
    });
    let mut config = https_bootstrap(upstream.addr(), context);
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["forward_client_cert_details"] = json!("SANITIZE_SET");
    hcm["set_current_client_cert_details"] = json!({ "subject": true, "uri": true });
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.connect_addr("ingress");
    let good = ca.issue("frontend", &["spiffe://legate.test/frontend"]);

    let client = TlsClient::build(&ca, "edge.example.com", &[], Some(&good));
    let response = client.get(addr, "/").expect("trusted client");
    assert_eq!(response.status, 200);
    let xfcc = upstream.last_request().header("x-forwarded-client-cert").map(str::to_string);
    let xfcc = xfcc.expect("x-forwarded-client-cert");
    assert!(xfcc.contains("URI=spiffe://legate.test/frontend"), "{xfcc}");
    assert!(xfcc.contains("Subject=\"O=legate tests,CN=frontend\""), "{xfcc}");
    assert!(xfcc.starts_with("By=spiffe://legate.test/edge;Hash="), "{xfcc}");
    px.wait_stat("listener.ingress.ssl.handshake", 1);
    // The client's CertificateVerify signature (rcgen keys are ECDSA P-256).
    assert_eq!(px.stat("listener.ingress.ssl.sigalgs.ecdsa_secp256r1_sha256"), Some(1));

    let refused = |client: TlsClient| {
        // The refusal may come as the handshake's alert or on the first read after it.
        match client.connect(addr) {
            Err(_) => {}
            Ok(mut stream) => {
                let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
                let mut buf = [0u8; 64];
                assert!(!matches!(stream.read(&mut buf), Ok(n) if n > 0), "refused client got a response");
            }
        }
    };
    refused(TlsClient::new(&ca, "edge.example.com"));
    px.wait_stat("listener.ingress.ssl.fail_verify_no_cert", 1);
    refused(TlsClient::build(
        &ca,
        "edge.example.com",
        &[],
        Some(&other_ca.issue("frontend", &["spiffe://legate.test/frontend"])),
    ));
    px.wait_stat("listener.ingress.ssl.fail_verify_error", 1);
    refused(TlsClient::build(
        &ca,
        "edge.example.com",
        &[],
        Some(&ca.issue("intruder", &["spiffe://legate.test/intruder"])),
    ));
    px.wait_stat("listener.ingress.ssl.fail_verify_san", 1);
    px.wait_stat("listener.ingress.ssl.connection_error", 3);
    assert_eq!(px.stat("listener.ingress.ssl.handshake"), Some(1));
    assert_eq!(upstream.request_count(), 1);
}

/// Two TLS upstreams from one CA: `backend.internal` and an imposter whose certificate is for
/// another name, and an `UpstreamTlsContext` that sends SNI `backend.internal` and accepts
/// only that SAN. The CA and its directory live as long as the test keeps them.
fn backend_and_imposter() -> (TestCa, TempDir, TlsUpstream, TlsUpstream, Value) {
    let ca = TestCa::new("legate upstream CA");
    let dir = TempDir::new();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let good = TlsUpstream::http(&ca.issue("backend", &["backend.internal"]), "secure-backend");
    let imposter = TlsUpstream::http(&ca.issue("imposter", &["imposter.internal"]), "imposter");
    let tls = upstream_tls(json!({
        "sni": "backend.internal",
        "common_tls_context": { "validation_context": {
            "trusted_ca": { "filename": dir.join("ca.pem").to_str().unwrap() },
            "match_typed_subject_alt_names": [{ "san_type": "DNS", "matcher": { "exact": "backend.internal" } }],
        }},
    }));
    (ca, dir, good, imposter, tls)
}

/// An `UpstreamTlsContext` with `sni` and SAN verification: the right upstream answers through
/// TLS; an upstream whose certificate does not carry the expected SAN is refused: 503 with
/// `UF`, `cluster.<name>.ssl.fail_verify_san`.
#[test]
fn upstream_tls_verifies_the_san_and_refuses_a_mismatch() {
    let (_ca, dir, good, imposter, tls) = backend_and_imposter();
    let mut secure = static_cluster("secure", &[good.addr()]);
    secure["transport_socket"] = tls.clone();
    let mut wrong = static_cluster("wrong", &[imposter.addr()]);
    wrong["transport_socket"] = tls;
    let routes = route_config(vec![virtual_host(
        "all",
        &["*"],
        vec![route_to("/secure", "secure"), route_to("/wrong", "wrong")],
    )]);
    let access_log = json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": dir.join("access.log").to_str().unwrap(),
            "log_format": { "text_format_source": { "inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS%\n" } },
        }
    }]);
    let listener = http_listener("ingress", routes, vec![router_filter()], json!({ "access_log": access_log }));
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], vec![secure, wrong]).to_string());
    let mut client = legate_testing::HttpClient::connect(px.connect_addr("ingress"));

    let response = client.get("/secure");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "secure-backend");
    assert_eq!(good.server_names(), vec![Some("backend.internal".to_string())]);
    px.wait_stat("cluster.secure.ssl.handshake", 1);
    assert_eq!(px.stat("cluster.secure.ssl.sigalgs.ecdsa_secp256r1_sha256"), Some(1));

    let mut client = legate_testing::HttpClient::connect(px.connect_addr("ingress"));
    let response = client.get("/wrong");
    assert_eq!(response.status, 503);
    assert!(response.body.contains("TLS_error"), "{}", response.body);
    px.wait_stat("cluster.wrong.ssl.fail_verify_san", 1);
    px.wait_stat("cluster.wrong.ssl.connection_error", 1);
    assert_eq!(px.stat("cluster.wrong.upstream_cx_connect_fail"), Some(1));
    let log = legate_testing::eventually(
        "two access log lines",
        legate_testing::EVENTUALLY,
        || std::fs::read_to_string(dir.join("access.log")).unwrap_or_default(),
        |log| log.lines().count() >= 2,
    );
    assert!(log.contains("503 UF"), "{log}");
}

/// tcp_proxy to a TLS upstream: legate originates TLS on the cluster's transport socket.
#[test]
fn tcp_proxy_originates_tls_to_the_upstream() {
    let ca = TestCa::new("legate upstream CA");
    let dir = TempDir::new();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let upstream = TlsUpstream::tag(&ca.issue("db", &["db.internal"]), "hello over tls");
    let mut cluster = static_cluster("db", &[upstream.addr()]);
    cluster["transport_socket"] = upstream_tls(json!({
        "sni": "db.internal",
        "common_tls_context": { "validation_context": { "trusted_ca": { "filename": dir.join("ca.pem").to_str().unwrap() } } },
    }));
    let listener = legate_testing::config::listener("plain", vec![tcp_proxy("plain", "db")]);
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], vec![cluster]).to_string());

    let mut stream = connect(px.connect_addr("plain"));
    assert_eq!(String::from_utf8(read_to_end(&mut stream)).unwrap(), "hello over tls");
    px.wait_stat("cluster.db.ssl.handshake", 1);
    // The next connection to the host resumes the TLS session.
    let mut stream = connect(px.connect_addr("plain"));
    assert_eq!(String::from_utf8(read_to_end(&mut stream)).unwrap(), "hello over tls");
    px.wait_stat("cluster.db.ssl.handshake", 2);
    assert_eq!(px.stat("cluster.db.ssl.session_reused"), Some(1));
}

/// Garbage instead of a ClientHello, a handshake that stalls past
/// `transport_socket_connect_timeout`: the connection closes, the stat counts it, and the next
/// client is served as usual.
#[test]
fn garbage_and_stalled_handshakes_close_and_are_counted() {
    let (ca, dir, upstream) = setup();
    let context = json!({ "common_tls_context": {
        "tls_certificates": [edge_certificate(&ca, &dir)],
    }});
    let mut config = https_bootstrap(upstream.addr(), context);
    config["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket_connect_timeout"] = json!("0.5s");
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.connect_addr("ingress");

    let mut garbage = connect(addr);
    garbage.write_all(b"GET / HTTP/1.1\r\nhost: not-tls\r\n\r\n").unwrap();
    let _ = read_to_end(&mut garbage);
    px.wait_stat("listener.ingress.ssl.connection_error", 1);

    // Half a ClientHello, then nothing.
    let mut stalled = connect(addr);
    stalled.write_all(&legate_testing::tls_client_hello(Some("edge.example.com"), &[])[..20]).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(stalled.read(&mut buf), Ok(0) | Err(_)), "a stalled handshake is closed");
    px.wait_stat("listener.ingress.downstream_cx_transport_socket_connect_timeout", 1);

    let response = TlsClient::new(&ca, "edge.example.com").get(addr, "/").expect("worker still serves");
    assert_eq!(response.status, 200);
    assert_eq!(px.stat("listener.ingress.ssl.handshake"), Some(1));
}

/// `/certs` lists each TLS context's certificates in Envoy's JSON.
#[test]
fn certs_endpoint_lists_the_certificates() {
    let ca = TestCa::new("legate test CA");
    let dir = TempDir::new();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let upstream = HttpUpstream::tag("backend");
    let context = json!({ "common_tls_context": {
        "tls_certificates": [certificate_files(&dir, &ca.issue("edge", &["edge.example.com", "www.example.com"]), "edge")],
        "validation_context": { "trusted_ca": { "filename": dir.join("ca.pem").to_str().unwrap() } },
    }});
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());

    let certs = px.admin_json("/certs");
    let entries = certs["certificates"].as_array().expect("certificates");
    assert_eq!(entries.len(), 1, "{certs}");
    let chain = &entries[0]["cert_chain"][0];
    assert_eq!(chain["path"], dir.join("edge.crt").to_str().unwrap());
    assert_eq!(chain["subject_alt_names"], json!([{ "dns": "edge.example.com" }, { "dns": "www.example.com" }]));
    assert!(chain["days_until_expiration"].as_str().unwrap().parse::<u64>().unwrap() > 365, "{chain}");
    assert!(chain["serial_number"].as_str().unwrap().chars().all(|c| c.is_ascii_hexdigit()), "{chain}");
    assert!(chain["expiration_time"].as_str().unwrap().ends_with('Z'), "{chain}");
    assert_eq!(entries[0]["ca_cert"][0]["path"], dir.join("ca.pem").to_str().unwrap());
}

/// Runs `--mode validate` on `config`; it must fail with one stderr line holding every needle.
fn validate_fails(dir: &TempDir, config: &Value, needles: &[&str]) -> String {
    let path = dir.join("legate.yaml");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = legate_testing::run_bounded(
        legate_bin!(),
        &["--mode", "validate", "-l", "warning", "-c", path.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), 1, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{}", out.stderr);
    for needle in needles {
        assert!(lines[0].contains(needle), "error line does not mention {needle:?}: {}", lines[0]);
    }
    lines[0].to_string()
}

/// A missing or unreadable file, a key that is not the certificate's, a malformed PEM, a
/// cipher or version rustls does not implement, renegotiation: each fails the load with the
/// field's path and, for files, the file.
#[test]
fn bad_tls_config_is_a_load_error_naming_the_field_and_the_file() {
    let ca = TestCa::new("legate test CA");
    let dir = TempDir::new();
    let edge = ca.issue("edge", &["edge.example.com"]);
    let other = ca.issue("other", &["other.example.com"]);
    let (crt, key) = edge.write(&dir, "edge");
    let (_, other_key) = other.write(&dir, "other");
    let garbage = dir.join("garbage.crt");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        .unwrap();
    let garbage = garbage.to_str().unwrap().to_string();
    let missing = dir.join("missing.crt").to_str().unwrap().to_string();
    let with = |certificate_chain: &str, private_key: &str, extra: Value| {
        let mut common = json!({ "tls_certificates": [{
            "certificate_chain": { "filename": certificate_chain },
            "private_key": { "filename": private_key },
        }]});
        common.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        https_bootstrap(SocketAddr::from(([127, 0, 0, 1], 1)), json!({ "common_tls_context": common }))
    };
    let field = "static_resources.listeners[0]";
    let certs = "filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0]";

    let line = validate_fails(
        &dir,
        &with(&missing, &key, json!({})),
        &[field, &format!("{certs}.certificate_chain.filename"), &missing],
    );
    assert!(line.contains("No such file"), "{line}");
    validate_fails(
        &dir,
        &with(&crt, &other_key, json!({})),
        &[field, &format!("{certs}.private_key"), "does not match", &other_key, &crt],
    );
    validate_fails(&dir, &with(&garbage, &key, json!({})), &[&format!("{certs}.certificate_chain.filename"), &garbage]);
    validate_fails(&dir, &with(&crt, &crt, json!({})), &[&format!("{certs}.private_key.filename"), &crt]);
    validate_fails(
        &dir,
        &with(&crt, &key, json!({ "tls_params": { "cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256", "AES128-SHA"] } })),
        &["common_tls_context.tls_params.cipher_suites", "\"AES128-SHA\" is not supported"],
    );
    validate_fails(
        &dir,
        &with(&crt, &key, json!({ "tls_params": { "tls_minimum_protocol_version": "TLSv1_1" } })),
        &["common_tls_context.tls_params.tls_minimum_protocol_version", "TLSv1_1 is not supported"],
    );
    validate_fails(
        &dir,
        &with(&crt, &key, json!({ "tls_params": { "ecdh_curves": ["P-521"] } })),
        &["common_tls_context.tls_params.ecdh_curves", "\"P-521\""],
    );

    let mut cluster = static_cluster("backend", &[SocketAddr::from(([127, 0, 0, 1], 1))]);
    cluster["transport_socket"] = upstream_tls(json!({ "allow_renegotiation": true }));
    let config = bootstrap(vec![], vec![cluster.clone()]);
    validate_fails(&dir, &config, &["static_resources.clusters[0]", "allow_renegotiation", "renegotiation"]);
    cluster["transport_socket"] = upstream_tls(json!({
        "common_tls_context": { "validation_context": { "trusted_ca": { "filename": missing } } },
    }));
    validate_fails(
        &dir,
        &bootstrap(vec![], vec![cluster]),
        &["static_resources.clusters[0] ('backend')", "validation_context.trusted_ca.filename", &missing],
    );
}

/// A client that comes back resumes its session (TLS 1.3 tickets from rustls' rotating
/// ticketer): `ssl.session_reused`. With both resumption kinds disabled, it cannot.
#[test]
fn returning_clients_resume_their_session() {
    let (ca, dir, upstream) = setup();
    let tls_certificates = json!([edge_certificate(&ca, &dir)]);
    let mut config =
        https_bootstrap(upstream.addr(), json!({ "common_tls_context": { "tls_certificates": tls_certificates } }));
    let mut no_resumption = config["static_resources"]["listeners"][0].clone();
    no_resumption["name"] = json!("fresh");
    no_resumption["stat_prefix"] = json!("fresh");
    let socket = &mut no_resumption["filter_chains"][0]["transport_socket"]["typed_config"];
    socket["disable_stateless_session_resumption"] = json!(true);
    socket["disable_stateful_session_resumption"] = json!(true);
    config["static_resources"]["listeners"].as_array_mut().unwrap().push(no_resumption);
    let px = Legate::start(legate_bin!(), &config.to_string());

    let client = TlsClient::new(&ca, "edge.example.com");
    for _ in 0..2 {
        assert_eq!(client.get(px.connect_addr("ingress"), "/").expect("request").status, 200);
    }
    px.wait_stat("listener.ingress.ssl.handshake", 2);
    assert_eq!(px.stat("listener.ingress.ssl.session_reused"), Some(1));

    let client = TlsClient::new(&ca, "edge.example.com");
    for _ in 0..2 {
        assert_eq!(client.get(px.connect_addr("fresh"), "/").expect("request").status, 200);
    }
    px.wait_stat("listener.fresh.ssl.handshake", 2);
    assert_eq!(px.stat("listener.fresh.ssl.session_reused"), Some(0));
}

/// An HTTP/2 cluster over TLS with no `alpn_protocols`: legate offers `h2` (Envoy's
/// codec-aware ALPN fallback), so an upstream that speaks only HTTP/2 over TLS is reached.
#[test]
fn http2_cluster_negotiates_h2_over_tls_with_alpn() {
    let ca = TestCa::new("legate upstream CA");
    let upstream = HttpUpstream::https(&ca.issue("grpc", &["grpc.internal"]), true, |_| {
        legate_testing::UpstreamAction::ok("over h2")
    });
    let mut config = http_bootstrap(&[upstream.addr()]);
    let cluster = legate_testing::config::with_http2(config["static_resources"]["clusters"][0].clone());
    config["static_resources"]["clusters"][0] = cluster;
    config["static_resources"]["clusters"][0]["transport_socket"] = upstream_tls(json!({ "sni": "grpc.internal" }));
    let px = Legate::start(legate_bin!(), &config.to_string());

    let mut client = legate_testing::HttpClient::connect(px.connect_addr("ingress"));
    let response = client.get("/");
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, "over h2");
    px.wait_stat("cluster.backend.ssl.handshake", 1);
    assert_eq!(px.stat("cluster.backend.upstream_cx_http2_total"), Some(1));
    // Envoy's default maximum for upstream contexts is TLS 1.2.
    assert_eq!(px.stat("cluster.backend.ssl.versions.TLSv1.2"), Some(1));
}

/// Two certificates for the same name with different key types: each client gets the one
/// whose signatures it can verify (Envoy picks by the client's signature algorithms too).
#[test]
fn the_key_type_the_client_supports_picks_among_certificates_for_one_name() {
    use legate_testing::KeyType;
    let (ca, dir, upstream) = setup();
    let ed25519 = ca.issue_key("ed", &["edge.example.com"], KeyType::Ed25519);
    let ecdsa = ca.issue_key("ec", &["edge.example.com"], KeyType::EcdsaP256);
    let context = json!({ "common_tls_context": { "tls_certificates": [
        certificate_files(&dir, &ed25519, "ed25519"),
        certificate_files(&dir, &ecdsa, "ecdsa"),
    ]}});
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());
    let addr = px.connect_addr("ingress");

    for (key, expected) in [(KeyType::Ed25519, &ed25519), (KeyType::EcdsaP256, &ecdsa)] {
        let stream = TlsClient::accepting_only(&ca, "edge.example.com", key).connect(addr).expect("handshake");
        assert_eq!(stream.peer_certificate().as_ref(), Some(&expected.der), "{key:?}");
    }
}

/// Certificates from an SDS file (`tls_certificate_sds_secret_configs` with a
/// `path_config_source`) are read again when the files change: new handshakes get the new
/// certificate while a client keeps making requests, none of which fails.
#[test]
fn sds_certificates_rotate_on_disk_without_a_failed_request() {
    let (ca, dir, upstream) = setup();
    let first = ca.issue("first", &["edge.example.com"]);
    let second = ca.issue("second", &["edge.example.com"]);
    let (crt, key) = first.write(&dir, "edge");
    let certificate = json!({ "certificate_chain": { "filename": crt }, "private_key": { "filename": key } });
    let sds = sds_file(&dir, "sds.yaml", "edge_cert", ("tls_certificate", certificate));
    let context =
        json!({ "common_tls_context": { "tls_certificate_sds_secret_configs": [sds_config("edge_cert", &sds)] } });
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());
    let addr = px.connect_addr("ingress");
    // A fresh client each time: a resumed session would report the certificate of the
    // session it resumes.
    let served = || {
        let client = TlsClient::new(&ca, "edge.example.com");
        client.connect(addr).expect("handshake").peer_certificate().unwrap()
    };
    assert_eq!(served(), first.der);
    let client = TlsClient::new(&ca, "edge.example.com");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match client.get(addr, "/") {
                    Ok(r) if r.status == 200 => ok += 1,
                    other => failed.push(format!("{:?}", other.map(|r| r.status))),
                }
            }
            (ok, failed)
        })
    };
    // Replace each file atomically, as a deployment tool would (write aside, rename over).
    for (path, text) in [(&key, &second.key_pem), (&crt, &second.cert_pem)] {
        let aside = format!("{path}.new");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, path).unwrap();
    }
    legate_testing::eventually("the new certificate is served", legate_testing::EVENTUALLY, served, |der| {
        *der == second.der
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.join().unwrap();
    assert!(failed.is_empty(), "failed requests during rotation: {failed:?}");
    assert!(ok > 0);
    assert!(px.stat("listener.ingress.server_ssl_socket_factory.ssl_context_update_by_sds").unwrap() >= 1);
    assert!(px.stat("sds.edge_cert.update_success").unwrap() >= 1);
    let certs = px.admin_json("/certs");
    assert_eq!(certs["certificates"][0]["cert_chain"][0]["path"], crt.as_str());
}

/// Reads one HTTP/1.1 response with a `content-length` from a keep-alive TLS stream.
fn read_response(stream: &mut legate_testing::TlsStream) -> (u16, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).expect("read response head");
        assert!(n > 0, "closed before the response head");
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("content-length");
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).expect("read response body");
        assert!(n > 0, "closed mid-body");
        data.extend_from_slice(&buf[..n]);
    }
    (status, data[head_end..head_end + length].to_vec())
}

/// Large bodies both ways through a TLS connection kept alive: TLS records buffered in rustls
/// reach the socket, back-pressure holds, and the connection serves the next request.
#[test]
fn large_bodies_flow_both_ways_over_a_kept_alive_tls_connection() {
    let ca = TestCa::new("legate test CA");
    let dir = TempDir::new();
    let upstream = HttpUpstream::http1(|request| {
        if request.method == "POST" {
            legate_testing::UpstreamAction::ok(format!("received {}", request.body.len()))
        } else {
            legate_testing::UpstreamAction::ok(vec![b'x'; 3 * 1024 * 1024])
        }
    });
    let context = json!({ "common_tls_context": {
        "tls_certificates": [edge_certificate(&ca, &dir)],
    }});
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());
    let mut stream = TlsClient::new(&ca, "edge.example.com").connect(px.connect_addr("ingress")).expect("handshake");

    let body = vec![b'y'; 2 * 1024 * 1024];
    let head = format!("POST /upload HTTP/1.1\r\nhost: edge.example.com\r\ncontent-length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let (status, reply) = read_response(&mut stream);
    assert_eq!((status, String::from_utf8(reply).unwrap()), (200, format!("received {}", body.len())));

    stream.write_all(b"GET /download HTTP/1.1\r\nhost: edge.example.com\r\n\r\n").unwrap();
    let (status, reply) = read_response(&mut stream);
    assert_eq!(status, 200);
    assert_eq!(reply.len(), 3 * 1024 * 1024);
    assert!(reply.iter().all(|b| *b == b'x'));
    assert_eq!(px.stat("listener.ingress.ssl.handshake"), Some(1));
}

/// tcp_proxy over a terminated TLS connection: what the client sends comes back from an echo
/// upstream byte for byte, chunk after chunk (the network filter chain runs over plaintext).
#[test]
fn tcp_proxy_runs_over_the_decrypted_stream() {
    let ca = TestCa::new("legate test CA");
    let dir = TempDir::new();
    let echo = legate_testing::TcpEchoServer::start();
    let mut listener = legate_testing::config::listener("tls_echo", vec![tcp_proxy("tls_echo", "echo")]);
    listener["filter_chains"][0]["transport_socket"] = downstream_tls(json!({ "common_tls_context": {
        "tls_certificates": [certificate_files(&dir, &ca.issue("echo", &["echo.example.com"]), "echo")],
    }}));
    let px = Legate::start(
        legate_bin!(),
        &bootstrap(vec![listener], vec![static_cluster("echo", &[echo.addr()])]).to_string(),
    );
    let mut stream = TlsClient::new(&ca, "echo.example.com").connect(px.connect_addr("tls_echo")).expect("handshake");

    for round in 0..32u8 {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i as u8).wrapping_add(round)).collect();
        stream.write_all(&chunk).unwrap();
        let mut back = vec![0u8; chunk.len()];
        stream.read_exact(&mut back).unwrap();
        assert!(back == chunk, "round {round}: echo differs");
    }
    px.wait_stat("tcp.tls_echo.downstream_cx_rx_bytes_total", 32 * 64 * 1024);
}

/// Certificate pinning on the client certificate: `verify_certificate_hash` (hex, colons
/// allowed) and `verify_certificate_spki` (base64); either match admits, a certificate
/// matching neither is refused under `ssl.fail_verify_cert_hash`.
#[test]
fn pinned_client_certificates_by_hash_or_spki() {
    let (ca, dir, upstream) = setup();
    let by_hash = ca.issue("by-hash", &["a.client"]);
    let by_spki = ca.issue("by-spki", &["b.client"]);
    let unpinned = ca.issue("unpinned", &["c.client"]);
    let hash = by_hash.sha256_hex();
    let colons: Vec<&str> = (0..hash.len()).step_by(2).map(|i| &hash[i..i + 2]).collect();
    let context = json!({
        "require_client_certificate": true,
        "common_tls_context": {
            "tls_certificates": [edge_certificate(&ca, &dir)],
            // No trusted_ca: only the pins decide, as in Envoy.
            "validation_context": {
                "verify_certificate_hash": [colons.join(":").to_uppercase()],
                "verify_certificate_spki": [by_spki.spki_sha256_base64()],
            },
        },
    });
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());
    let addr = px.connect_addr("ingress");

    for pinned in [&by_hash, &by_spki] {
        let client = TlsClient::build(&ca, "edge.example.com", &[], Some(pinned));
        assert_eq!(client.get(addr, "/").expect("pinned client").status, 200);
    }
    let client = TlsClient::build(&ca, "edge.example.com", &[], Some(&unpinned));
    assert!(client.get(addr, "/").is_err(), "an unpinned certificate is refused");
    px.wait_stat("listener.ingress.ssl.fail_verify_cert_hash", 1);
    assert_eq!(px.stat("listener.ingress.ssl.handshake"), Some(2));
}

/// `/config_dump` never shows a private key: Envoy's redaction of sensitive fields.
#[test]
fn config_dump_redacts_private_keys() {
    let ca = TestCa::new("legate test CA");
    let upstream = HttpUpstream::tag("backend");
    let cert = ca.issue("edge", &["edge.example.com"]);
    let context = json!({ "common_tls_context": { "tls_certificates": [{
        "certificate_chain": { "inline_string": cert.cert_pem },
        "private_key": { "inline_string": cert.key_pem },
    }]}});
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());

    let (status, dump) = px.admin_get("/config_dump");
    assert_eq!(status, 200);
    assert!(!dump.contains("PRIVATE KEY"), "the key leaks in /config_dump");
    assert!(dump.contains("[redacted]"));
    assert!(dump.contains("BEGIN CERTIFICATE"), "certificates are not secret");
    let response = TlsClient::new(&ca, "edge.example.com").get(px.connect_addr("ingress"), "/").unwrap();
    assert_eq!(response.status, 200);
}

/// `require_sni`: a client that sends no server name (one connecting by IP address) is refused.
#[test]
fn require_sni_refuses_a_client_without_a_server_name() {
    let (ca, dir, upstream) = setup();
    let context = json!({
        "require_sni": true,
        "common_tls_context": {
            "tls_certificates": [certificate_files(&dir, &ca.issue("edge", &["edge.example.com", "127.0.0.1"]), "edge")],
        },
    });
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());
    let addr = px.connect_addr("ingress");

    assert_eq!(TlsClient::new(&ca, "edge.example.com").get(addr, "/").expect("with SNI").status, 200);
    // An IP address as the server name: rustls sends no SNI (RFC 6066 §3).
    assert!(TlsClient::new(&ca, "127.0.0.1").get(addr, "/").is_err());
    px.wait_stat("listener.ingress.ssl.connection_error", 1);
}

/// An SDS update that does not load (a key that is not the certificate's) is rejected: the
/// previous certificate is still served.
#[test]
fn a_broken_sds_update_keeps_the_current_certificate() {
    let (ca, dir, upstream) = setup();
    let current = ca.issue("current", &["edge.example.com"]);
    let (crt, key) = current.write(&dir, "edge");
    let certificate = json!({ "certificate_chain": { "filename": crt }, "private_key": { "filename": key } });
    let sds = sds_file(&dir, "sds.yaml", "edge_cert", ("tls_certificate", certificate));
    let context =
        json!({ "common_tls_context": { "tls_certificate_sds_secret_configs": [sds_config("edge_cert", &sds)] } });
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());
    let addr = px.connect_addr("ingress");

    std::fs::write(&key, ca.issue("other", &["edge.example.com"]).key_pem).unwrap();
    px.wait_stat("sds.edge_cert.update_rejected", 1);
    let stream = TlsClient::new(&ca, "edge.example.com").connect(addr).expect("still served");
    assert_eq!(stream.peer_certificate(), Some(current.der.clone()));
    assert_eq!(px.stat("listener.ingress.server_ssl_socket_factory.ssl_context_update_by_sds"), Some(0));
}

/// `tls_params`: the TLS 1.2 cipher suites offered are the configured ones (a client with no
/// suite in common is refused and counted), and `tls_minimum_protocol_version: TLSv1_3`
/// refuses a TLS 1.2-only client.
#[test]
fn tls_params_limit_ciphers_and_versions() {
    let (ca, dir, upstream) = setup();
    let certificate = edge_certificate(&ca, &dir);
    let mut config = https_bootstrap(
        upstream.addr(),
        json!({ "common_tls_context": {
            "tls_certificates": [certificate.clone()],
            "tls_params": { "cipher_suites": ["ECDHE-ECDSA-AES128-GCM-SHA256"], "ecdh_curves": ["P-256"] },
        }}),
    );
    let mut modern = config["static_resources"]["listeners"][0].clone();
    modern["name"] = json!("modern");
    modern["stat_prefix"] = json!("modern");
    modern["filter_chains"][0]["transport_socket"] = downstream_tls(json!({ "common_tls_context": {
        "tls_certificates": [certificate],
        "tls_params": { "tls_minimum_protocol_version": "TLSv1_3" },
    }}));
    config["static_resources"]["listeners"].as_array_mut().unwrap().push(modern);
    let px = Legate::start(legate_bin!(), &config.to_string());
    let addr = px.connect_addr("ingress");

    let aes = TlsClient::tls12_with_cipher(&ca, "edge.example.com", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    assert_eq!(aes.get(addr, "/").expect("common cipher").status, 200);
    px.wait_stat("listener.ingress.ssl.ciphers.ECDHE-ECDSA-AES128-GCM-SHA256", 1);
    assert_eq!(px.stat("listener.ingress.ssl.versions.TLSv1.2"), Some(1));
    assert_eq!(px.stat("listener.ingress.ssl.curves.P-256"), Some(1));

    let chacha = TlsClient::tls12_with_cipher(&ca, "edge.example.com", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");
    assert!(chacha.get(addr, "/").is_err(), "no cipher in common");
    px.wait_stat("listener.ingress.ssl.connection_error", 1);

    assert!(aes.get(px.connect_addr("modern"), "/").is_err(), "TLS 1.2 below the minimum");
    px.wait_stat("listener.modern.ssl.connection_error", 1);
    assert_eq!(px.stat("listener.modern.ssl.handshake"), Some(0));
}

/// A client whose ALPN offer shares nothing with `alpn_protocols` is served without ALPN, as
/// BoringSSL in Envoy does (the HCM then tells HTTP/1.1 from h2c by the first bytes).
#[test]
fn alpn_without_a_common_protocol_goes_on_without_alpn() {
    let (ca, dir, upstream) = setup();
    let context = json!({ "common_tls_context": {
        "tls_certificates": [edge_certificate(&ca, &dir)],
        "alpn_protocols": ["h2", "http/1.1"],
    }});
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());

    let client = TlsClient::build(&ca, "edge.example.com", &["acme-tls/1"], None);
    let stream = client.connect(px.connect_addr("ingress")).expect("handshake without ALPN");
    assert_eq!(stream.alpn(), None);
    let response = client.get(px.connect_addr("ingress"), "/").expect("HTTP/1.1 sniffed");
    assert_eq!(response.status, 200);
}

/// A network filter that writes and closes (`direct_response`) over TLS: every byte, then
/// `close_notify`, reach the client before the socket closes.
#[test]
fn a_closing_tls_connection_flushes_its_records_first() {
    let ca = TestCa::new("legate test CA");
    let dir = TempDir::new();
    let body: String = (0..400_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let mut listener = legate_testing::config::listener(
        "reply",
        vec![json!({
            "name": "envoy.filters.network.direct_response",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config",
                "response": { "inline_string": body },
            }
        })],
    );
    listener["filter_chains"][0]["transport_socket"] = downstream_tls(json!({ "common_tls_context": {
        "tls_certificates": [edge_certificate(&ca, &dir)],
    }}));
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], vec![]).to_string());

    let mut stream = TlsClient::new(&ca, "edge.example.com").connect(px.connect_addr("reply")).expect("handshake");
    let mut received = Vec::new();
    // A clean end: close_notify, not an unexpected EOF.
    stream.read_to_end(&mut received).expect("close_notify after the whole response");
    assert_eq!(received.len(), body.len());
    assert!(received == body.as_bytes());
}

/// The trusted CA from an SDS file, combined with an inline default (the SAN rule): a new CA
/// written over the file takes effect for new handshakes; the old CA's clients are refused.
#[test]
fn client_ca_from_sds_rotates_on_disk() {
    let old_ca = TestCa::new("old client CA");
    let new_ca = TestCa::new("new client CA");
    let server_ca = TestCa::new("server CA");
    let dir = TempDir::new();
    let upstream = HttpUpstream::tag("backend");
    let ca_file = dir.join("client-ca.pem");
    std::fs::write(&ca_file, old_ca.pem()).unwrap();
    let trusted_ca = json!({ "trusted_ca": { "filename": ca_file.to_str().unwrap() } });
    let sds = sds_file(&dir, "validation.yaml", "client_ca", ("validation_context", trusted_ca));
    let context = json!({
        "require_client_certificate": true,
        "common_tls_context": {
            "tls_certificates": [certificate_files(&dir, &server_ca.issue("edge", &["edge.example.com"]), "edge")],
            "combined_validation_context": {
                "default_validation_context": {
                    "match_typed_subject_alt_names": [{ "san_type": "DNS", "matcher": { "suffix": ".clients.test" } }],
                },
                "validation_context_sds_secret_config": sds_config("client_ca", &sds),
            },
        },
    });
    let px = Legate::start(legate_bin!(), &https_bootstrap(upstream.addr(), context).to_string());
    let addr = px.connect_addr("ingress");
    let client = |ca: &TestCa, san: &str| {
        TlsClient::build(&server_ca, "edge.example.com", &[], Some(&ca.issue("client", &[san])))
    };

    assert_eq!(client(&old_ca, "a.clients.test").get(addr, "/").expect("old CA, good SAN").status, 200);
    assert!(client(&old_ca, "a.elsewhere.test").get(addr, "/").is_err(), "the default's SAN rule applies");
    px.wait_stat("listener.ingress.ssl.fail_verify_san", 1);

    let aside = dir.join("client-ca.pem.new");
    std::fs::write(&aside, new_ca.pem()).unwrap();
    std::fs::rename(&aside, &ca_file).unwrap();
    px.wait_stat("sds.client_ca.update_success", 1);
    assert_eq!(client(&new_ca, "b.clients.test").get(addr, "/").expect("new CA").status, 200);
    assert!(client(&old_ca, "a.clients.test").get(addr, "/").is_err(), "the old CA is no longer trusted");
    px.wait_stat("listener.ingress.ssl.fail_verify_error", 1);
    let certs = px.admin_json("/certs");
    assert_eq!(certs["certificates"][0]["ca_cert"][0]["path"], ca_file.to_str().unwrap());
}

/// A client certificate on the upstream context: an upstream that requires one is reached;
/// without it, the handshake fails (503 `UF`, `cluster.<name>.ssl.connection_error`).
#[test]
fn upstream_client_certificate_for_an_mtls_upstream() {
    let server_ca = TestCa::new("upstream server CA");
    let client_ca = TestCa::new("upstream client CA");
    let dir = TempDir::new();
    let upstream =
        TlsUpstream::http_requiring_client_cert(&server_ca.issue("api", &["api.internal"]), &client_ca, "mtls-ok");
    let (crt, key) = client_ca.issue("legate", &["legate.internal"]).write(&dir, "client");
    let mut with_cert = static_cluster("with_cert", &[upstream.addr()]);
    with_cert["transport_socket"] = upstream_tls(json!({
        "sni": "api.internal",
        "common_tls_context": { "tls_certificates": [{
            "certificate_chain": { "filename": crt }, "private_key": { "filename": key },
        }]},
    }));
    let mut without_cert = static_cluster("without_cert", &[upstream.addr()]);
    without_cert["transport_socket"] = upstream_tls(json!({ "sni": "api.internal" }));
    let routes = route_config(vec![virtual_host(
        "all",
        &["*"],
        // "/without" first: "/with" is its prefix.
        vec![route_to("/without", "without_cert"), route_to("/with", "with_cert")],
    )]);
    let listener = http_listener("ingress", routes, vec![router_filter()], json!({}));
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], vec![with_cert, without_cert]).to_string());

    let response = legate_testing::HttpClient::connect(px.connect_addr("ingress")).get("/with");
    assert_eq!((response.status, response.body.as_str()), (200, "mtls-ok"));
    let response = legate_testing::HttpClient::connect(px.connect_addr("ingress")).get("/without");
    assert_eq!(response.status, 503, "{}", response.body);
    px.wait_stat("cluster.without_cert.ssl.connection_error", 1);
}

/// The upstream context's client certificate and server validation context from SDS files
/// (`path_config_source`), as a mesh's sidecar gets them: the mTLS upstream is reached,
/// `/certs` shows the certificate, and a new client certificate written to the file is shown
/// and counted (`client_ssl_socket_factory.ssl_context_update_by_sds`).
#[test]
fn upstream_client_certificate_and_validation_context_from_sds_files() {
    let server_ca = TestCa::new("upstream server CA");
    let client_ca = TestCa::new("upstream client CA");
    let dir = TempDir::new();
    let upstream =
        TlsUpstream::http_requiring_client_cert(&server_ca.issue("api", &["api.internal"]), &client_ca, "mtls-ok");
    let write_certificate = |cert: &TestCert| {
        let (crt, key) = cert.write(&dir, "client");
        let certificate = json!({ "certificate_chain": { "filename": crt }, "private_key": { "filename": key } });
        sds_file(&dir, "client.yaml", "client_cert", ("tls_certificate", certificate))
    };
    let certificate_sds = write_certificate(&client_ca.issue("legate", &["first.internal"]));
    let validation = json!({
        "trusted_ca": { "inline_string": server_ca.pem() },
        "match_typed_subject_alt_names": [{ "san_type": "DNS", "matcher": { "exact": "api.internal" } }],
    });
    let validation_sds = sds_file(&dir, "ca.yaml", "server_ca", ("validation_context", validation));
    let mut mesh = static_cluster("mesh", &[upstream.addr()]);
    mesh["transport_socket"] = upstream_tls(json!({
        "sni": "api.internal",
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [sds_config("client_cert", &certificate_sds)],
            "validation_context_sds_secret_config": sds_config("server_ca", &validation_sds),
        },
    }));
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route_to("/", "mesh")])]);
    let listener = http_listener("ingress", routes, vec![router_filter()], json!({}));
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], vec![mesh]).to_string());

    let response = legate_testing::HttpClient::connect(px.connect_addr("ingress")).get("/");
    assert_eq!((response.status, response.body.as_str()), (200, "mtls-ok"), "{}", response.body);
    assert_eq!(px.stat("cluster.mesh.ssl.handshake"), Some(1));
    let sans = |px: &Legate| {
        let certs = px.admin_json("/certs");
        let cluster = &certs["certificates"][0];
        assert_eq!(cluster["ca_cert"].as_array().map(Vec::len), Some(1), "{certs}");
        cluster["cert_chain"][0]["subject_alt_names"].to_string()
    };
    assert!(sans(&px).contains("first.internal"));
    write_certificate(&client_ca.issue("legate", &["second.internal"]));
    px.wait_stat("cluster.mesh.client_ssl_socket_factory.ssl_context_update_by_sds", 1);
    assert!(sans(&px).contains("second.internal"));
    assert_eq!(px.stat("sds.client_cert.update_success"), Some(1));
}

/// Active health checks go through the cluster's transport socket, as Envoy's: an HTTP check of
/// a TLS host is made over TLS (and fails when the host's certificate does not verify).
#[test]
fn http_health_checks_of_a_tls_cluster_run_over_tls() {
    let (_ca, _dir, good, imposter, tls) = backend_and_imposter();
    let mut cluster = static_cluster("secure", &[good.addr(), imposter.addr()]);
    cluster["transport_socket"] = tls;
    cluster["health_checks"] = json!([{
        "timeout": "1s", "interval": "0.3s", "no_traffic_interval": "0.3s",
        "unhealthy_threshold": 1, "healthy_threshold": 1,
        "http_health_check": { "path": "/healthz" }
    }]);
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route_to("/", "secure")])]);
    let listener = http_listener("ingress", routes, vec![router_filter()], json!({}));
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], vec![cluster]).to_string());

    // The good host passes over TLS before any traffic; the imposter fails verification.
    px.wait_stat("cluster.secure.health_check.healthy", 1);
    assert!(px.stat("cluster.secure.ssl.handshake").unwrap_or(0) >= 1, "checks made TLS handshakes");
    assert!(px.wait_stat_at_least("cluster.secure.ssl.fail_verify_san", 1) >= 1);
    let clusters = px.admin_get("/clusters").1;
    assert!(clusters.contains(&format!("secure::{}::health_flags::healthy", good.addr())), "{clusters}");
    assert!(clusters.contains(&format!("secure::{}::health_flags::/failed_active_hc", imposter.addr())), "{clusters}");
    let mut client = legate_testing::HttpClient::connect(px.connect_addr("ingress"));
    for _ in 0..4 {
        assert_eq!(client.get("/").body, "secure-backend", "only the verified host takes traffic");
    }
}

/// `auto_sni` and `auto_san_validation` (`upstream_http_protocol_options`): each request's
/// upstream TLS connection is made for its host, pooled per name, and the certificate must be
/// valid for that name.
#[test]
fn auto_sni_sends_each_requests_host_and_auto_san_validation_checks_it() {
    let ca = TestCa::new("legate upstream CA");
    let dir = TempDir::new();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let upstream = TlsUpstream::http(&ca.issue("backend", &["backend.internal"]), "secure-backend");
    let mut cluster = static_cluster("secure", &[upstream.addr()]);
    cluster["transport_socket"] = upstream_tls(json!({
        "common_tls_context": { "validation_context": {
            "trusted_ca": { "filename": dir.join("ca.pem").to_str().unwrap() },
        }},
    }));
    cluster["typed_extension_protocol_options"] = legate_testing::config::http_protocol_options(json!({
        "upstream_http_protocol_options": { "auto_sni": true, "auto_san_validation": true },
        "explicit_http_config": { "http_protocol_options": {} },
    }));
    let routes = route_config(vec![virtual_host("all", &["*"], vec![route_to("/", "secure")])]);
    let listener = http_listener("ingress", routes, vec![router_filter()], json!({}));
    let px = Legate::start(legate_bin!(), &bootstrap(vec![listener], vec![cluster]).to_string());
    let mut client = legate_testing::HttpClient::connect(px.connect_addr("ingress"));

    let r = client.send("GET", "/", &[("host", "Backend.Internal:8443")], b"");
    assert_eq!((r.status, r.body.as_str()), (200, "secure-backend"), "{r:?}");
    assert_eq!(upstream.server_names(), vec![Some("backend.internal".to_string())], "SNI from the host");

    // Another name: another connection, whose certificate is not valid for it.
    let r = client.send("GET", "/", &[("host", "other.internal")], b"");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("TLS_error"), "{r:?}");
    px.wait_stat_at_least("cluster.secure.ssl.fail_verify_san", 1);
    // The first name's pooled connection still serves.
    let r = client.send("GET", "/", &[("host", "backend.internal")], b"");
    assert_eq!(r.status, 200, "{r:?}");
}

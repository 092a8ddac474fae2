//! `local_reply_config`: legate's own replies (here 404 no route and 503 no healthy upstream)
//! rewritten by the first matching mapper, and formatted by `body_format` with
//! `%LOCAL_REPLY_BODY%`; replies that come from the upstream are left alone.

use legate_testing::config::{hcm_config, http_bootstrap, route_config, route_to, virtual_host};
use legate_testing::{json, legate_bin, HttpClient, HttpUpstream, Legate, UpstreamAction};

#[test]
fn mappers_and_body_format_rewrite_local_replies_only() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::status(503, "from upstream"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    let hcm = hcm_config(&mut config, 0);
    hcm["route_config"] = route_config(vec![virtual_host(
        "all",
        &["*"],
        vec![route_to("/api", "backend"), route_to("/empty", "nowhere")],
    )]);
    hcm["local_reply_config"] = json!({
        "mappers": [{
            "filter": { "status_code_filter": { "comparison": { "op": "EQ", "value": { "default_value": 404, "runtime_key": "k" } } } },
            "status_code": 401,
            "body": { "inline_string": "not allowed" },
            "headers_to_add": [{ "header": { "key": "foo", "value": "bar" }, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" }]
        }],
        "body_format": { "text_format": "%LOCAL_REPLY_BODY% (%RESPONSE_CODE%)\n", "content_type": "text/plain; charset=UTF-8" }
    });
    config["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "nowhere", "type": "STATIC", "load_assignment": { "cluster_name": "nowhere", "endpoints": [] } }));
    let px = Legate::start(legate_bin!(), &config.to_string());
    let mut client = HttpClient::connect(px.connect_addr("ingress"));

    // No route: 404 mapped to 401 with the mapper's body and header, then formatted.
    let r = client.get("/nothing-here");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.body, "not allowed (401)\n");
    assert_eq!(r.header("foo"), Some("bar"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));

    // No healthy upstream: no mapper matches, the body format still applies.
    let r = client.get("/empty");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, "no healthy upstream (503)\n");
    assert_eq!(r.header("foo"), None);

    // The upstream's own 503 is not a local reply.
    let r = client.get("/api");
    assert_eq!((r.status, r.body.as_str()), (503, "from upstream"), "{r:?}");
}

/// A head the HTTP/1.1 codec refuses is answered through the local reply too, as Envoy's
/// codec sends it: the body format applies to its "Bad Request", and the stats count it
/// under the mapped status.
#[test]
fn the_codecs_own_replies_go_through_local_reply_config() {
    let upstream = HttpUpstream::http1(|_| UpstreamAction::ok("never"));
    let mut config = http_bootstrap(&[upstream.addr()]);
    hcm_config(&mut config, 0)["local_reply_config"] = json!({
        "mappers": [{
            "filter": { "response_flag_filter": { "flags": ["DPE"] } },
            "status_code": 418
        }],
        "body_format": { "json_format": { "error": "%LOCAL_REPLY_BODY%", "code": "%RESPONSE_CODE%" } }
    });
    let px = Legate::start(legate_bin!(), &config.to_string());

    let reply = HttpClient::connect(px.connect_addr("ingress")).raw(b"GET / HTTP/1.1\r\nno colon\r\n\r\n");

    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 418 "), "{reply}");
    assert!(reply.contains("\r\ncontent-type: application/json\r\n"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: legate_testing::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {reply}"));
    assert_eq!(body, json!({ "error": "Bad Request", "code": 418 }));
    px.wait_stat("http.ingress.downstream_rq_4xx", 1);
    assert_eq!(upstream.request_count(), 0);
}

//! The admin endpoint (Envoy's "Administration interface"): an HTTP/1.1 server on the main
//! thread. Handlers that change server state answer only POST, as in current Envoy, which
//! refuses a GET with 405 `Method GET not allowed, POST required.`.

mod certs;
mod clusters;
mod config_dump;
mod listeners;
mod runtime;
mod server_info;
mod stats;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::server::Server;

pub type AdminResponse = Response<Full<Bytes>>;

/// One admin endpoint: its path, help text, whether it mutates state (POST only).
struct Handler {
    path: &'static str,
    help: &'static str,
    mutates: bool,
    handle: fn(&Rc<Server>, &Query) -> AdminResponse,
}

/// The endpoints, in Envoy's `/help` order.
const HANDLERS: &[Handler] = &[
    Handler { path: "/", help: "Admin home page", mutates: false, handle: home },
    Handler { path: "/certs", help: "print certs on machine", mutates: false, handle: certs::handle },
    Handler { path: "/clusters", help: "upstream cluster status", mutates: false, handle: clusters::handle },
    Handler {
        path: "/config_dump",
        help: "dump current Envoy configs (experimental)",
        mutates: false,
        handle: config_dump::handle,
    },
    Handler { path: "/drain_listeners", help: "drain listeners", mutates: true, handle: drain_listeners },
    Handler {
        path: "/healthcheck/fail",
        help: "cause the server to fail health checks",
        mutates: true,
        handle: healthcheck_fail,
    },
    Handler {
        path: "/healthcheck/ok",
        help: "cause the server to pass health checks",
        mutates: true,
        handle: healthcheck_ok,
    },
    Handler { path: "/help", help: "print out list of admin commands", mutates: false, handle: help },
    Handler { path: "/listeners", help: "print listener info", mutates: false, handle: listeners::handle },
    Handler { path: "/logging", help: "query/change logging levels", mutates: true, handle: logging },
    Handler {
        path: "/memory",
        help: "print current allocation/heap usage",
        mutates: false,
        handle: server_info::memory,
    },
    Handler { path: "/quitquitquit", help: "exit the server", mutates: true, handle: quitquitquit },
    Handler {
        path: "/ready",
        help: "print server state, return 200 if LIVE, otherwise return 503",
        mutates: false,
        handle: server_info::ready,
    },
    Handler { path: "/reopen_logs", help: "reopen access logs", mutates: true, handle: reopen_logs },
    Handler {
        path: "/reset_counters",
        help: "reset all counters to zero",
        mutates: true,
        handle: stats::reset_counters,
    },
    Handler { path: "/runtime", help: "print runtime values", mutates: false, handle: runtime::show },
    Handler {
        path: "/runtime_modify",
        help: "Adds or modifies runtime values as passed in query parameters. To delete a previously added key, \
               use an empty string as the value. Note that deletion only applies to overrides added via this \
               endpoint; values loaded from disk can be modified via override but not deleted. \
               E.g. ?key1=value1&key2=value2...",
        mutates: true,
        handle: runtime::modify,
    },
    Handler {
        path: "/server_info",
        help: "print server version/status information",
        mutates: false,
        handle: server_info::handle,
    },
    Handler { path: "/stats", help: "print server stats", mutates: false, handle: stats::handle },
    Handler {
        path: "/stats/prometheus",
        help: "print server stats in prometheus format",
        mutates: false,
        handle: stats::prometheus,
    },
];

/// Accepts admin connections forever.
pub async fn serve(server: Rc<Server>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let server = server.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |request| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(handle(&server, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The most of a form body read for its parameters.
const MAX_FORM_BODY: usize = 1 << 20;

async fn handle(server: &Rc<Server>, request: Request<Incoming>) -> AdminResponse {
    let path = request.uri().path().to_string();
    let mut query = Query::parse(request.uri().query().unwrap_or(""));
    let method = request.method().clone();
    let uri = request.uri().clone();
    // Without a query string, a form body carries the parameters (as Envoy's admin reads them).
    let form =
        request.headers().get(hyper::header::CONTENT_TYPE).is_some_and(|v| v == "application/x-www-form-urlencoded");
    if query.0.is_empty() && form {
        use http_body_util::BodyExt as _;
        let limited = http_body_util::Limited::new(request.into_body(), MAX_FORM_BODY);
        match limited.collect().await {
            Ok(body) => query = Query::parse(&String::from_utf8_lossy(&body.to_bytes())),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n".into()),
        }
    }
    let response = match HANDLERS.iter().find(|h| h.path == path) {
        None => text(StatusCode::NOT_FOUND, "invalid path. admin commands are:\n".to_string() + &help_text()),
        Some(handler) if handler.mutates && method != Method::POST => {
            tracing::error!("admin path \"{}\" mutates state, method={} rather than POST", handler.path, method);
            text(StatusCode::METHOD_NOT_ALLOWED, format!("Method {method} not allowed, POST required."))
        }
        Some(handler) => (handler.handle)(server, &query),
    };
    access_log(server, &method, &uri, response.status());
    response
}

/// One line per admin request to `admin.access_log_path`, unless it is unset or /dev/null.
fn access_log(server: &Server, method: &Method, uri: &hyper::Uri, status: StatusCode) {
    let Some(path) = server.loaded.bootstrap.admin.as_ref().and_then(|a| a.access_log_path.as_deref()) else { return };
    if path.is_empty() || path == "/dev/null" {
        return;
    }
    let line = format!("[{}] \"{method} {uri} HTTP/1.1\" {}\n", rfc3339(std::time::SystemTime::now()), status.as_u16());
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(line.as_bytes());
    }
}

/// Parsed query parameters, percent-decoded (`%XX` only, as Envoy's `PercentEncoding::decode`:
/// a `+` stays a plus, which regex filters use). A parameter may appear without a value.
pub struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: &str) -> Self {
        let mut map = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(status: StatusCode, content_type: &str, body: String) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = content_type.parse() {
        headers.insert(hyper::header::CONTENT_TYPE, v);
    }
    headers.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-cache, max-age=0"));
    headers.insert("x-content-type-options", hyper::header::HeaderValue::from_static("nosniff"));
    response
}

pub fn text(status: StatusCode, body: String) -> AdminResponse {
    respond(status, "text/plain; charset=UTF-8", body)
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> AdminResponse {
    let body = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    respond(status, "application/json", body)
}

fn help_text() -> String {
    let mut out = String::new();
    for h in HANDLERS {
        let post = if h.mutates { " (POST)" } else { "" };
        out.push_str(&format!("  {}{post}: {}\n", h.path, h.help));
    }
    out
}

fn help(_server: &Rc<Server>, _query: &Query) -> AdminResponse {
    text(StatusCode::OK, format!("admin commands are:\n{}", help_text()))
}

fn home(_server: &Rc<Server>, _query: &Query) -> AdminResponse {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><title>legate admin</title></head><body>\n<h1>legate admin</h1>\n<table>\n",
    );
    for h in HANDLERS.iter().filter(|h| h.path != "/") {
        if h.mutates {
            html.push_str(&format!(
                "<tr><td><form action=\"{0}\" method=\"post\"><button>{0}</button></form></td><td>{1}</td></tr>\n",
                h.path, h.help
            ));
        } else {
            html.push_str(&format!("<tr><td><a href=\"{0}\">{0}</a></td><td>{1}</td></tr>\n", h.path, h.help));
        }
    }
    html.push_str("</table>\n</body></html>\n");
    respond(StatusCode::OK, "text/html; charset=UTF-8", html)
}

fn reopen_logs(_server: &Rc<Server>, _query: &Query) -> AdminResponse {
    legate_proxy::access_log::reopen_all();
    text(StatusCode::OK, "OK\n".to_string())
}

fn healthcheck_fail(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    server.set_health_check_failed(true);
    text(StatusCode::OK, "OK\n".into())
}

fn healthcheck_ok(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    server.set_health_check_failed(false);
    text(StatusCode::OK, "OK\n".into())
}

fn quitquitquit(server: &Rc<Server>, _query: &Query) -> AdminResponse {
    server.quit.notify_one();
    text(StatusCode::OK, "OK\n".into())
}

/// Envoy's `/drain_listeners`: `graceful` runs the drain sequence first (connections told to
/// finish for `--drain-time-s` while listeners still accept), `skip_exit` (with `graceful`
/// only) leaves the listeners open after it, `inboundonly` stops only INBOUND listeners.
fn drain_listeners(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let (graceful, skip_exit, inbound_only) = (query.has("graceful"), query.has("skip_exit"), query.has("inboundonly"));
    if skip_exit && !graceful {
        return text(StatusCode::BAD_REQUEST, "skip_exit requires graceful\n".into());
    }
    if graceful {
        server.start_drain_sequence(inbound_only, skip_exit);
    } else {
        let server = server.clone();
        tokio::task::spawn_local(async move { server.stop_listeners(inbound_only).await });
    }
    text(StatusCode::OK, "OK\n".into())
}

fn logging(server: &Rc<Server>, query: &Query) -> AdminResponse {
    let mut ok = true;
    for (key, value) in query.iter() {
        ok &= match key.as_str() {
            "level" => server.logging.set(None, value),
            "paths" => value
                .split(',')
                .all(|p| p.split_once(':').is_some_and(|(name, level)| server.logging.set(Some(name), level))),
            name => server.logging.set(Some(name), value),
        };
    }
    if !ok {
        // Envoy's 400: the error, the usage and the levels, then the loggers as they are.
        let usage = "usage: /logging?<name>=<level> (change single level)\n\
                     usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n\
                     usage: /logging?level=<level> (change all levels)\n\
                     levels: trace debug info warning error critical off \n";
        let body = format!("error: unknown logger or level\n\n{usage}{}", server.logging.listing());
        return text(StatusCode::BAD_REQUEST, body);
    }
    text(StatusCode::OK, server.logging.listing())
}

/// RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-21T06:20:02.123Z`.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_242_002_123);
        assert_eq!(rfc3339(t), "2026-11-21T06:20:02.123Z");
    }

    #[test]
    fn decodes_query() {
        let q = Query::parse("filter=cluster%5C.a%2Bb&usedonly");
        assert_eq!(q.get("filter"), Some("cluster\\.a+b"));
        assert!(q.has("usedonly"));
        let q = Query::parse("filter=cluster\\..+\\.upstream_rq_total");
        assert_eq!(q.get("filter"), Some("cluster\\..+\\.upstream_rq_total"));
    }
}

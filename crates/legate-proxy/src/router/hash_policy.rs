//! The request hash for hashing load balancers: `RouteAction.hash_policy`, Envoy's
//! `Http::HashPolicyImpl` ("Ring hash" / "Maglev" and the route's hash policy docs).
//!
//! Each policy may yield a hash: the xxHash64 of a header's value(s), a cookie's value, the
//! downstream source IP or a query parameter's first value. The hashes are folded in order,
//! the running value rotated left by one before each XOR so that two identical policies do not
//! cancel out; a `terminal` policy stops the walk once there is a hash. A cookie policy with a
//! `ttl` whose cookie is absent generates the cookie as Envoy does — the hex xxHash64 of the
//! connection's remote and local addresses, so that requests racing on one connection get the
//! same value — hashes it, and has the router set it on the response (`Set-Cookie`, with
//! `Max-Age` unless the TTL is 0, the policy's `Path`, `HttpOnly` and its attributes).
//! `filter_state` is refused by config.

use std::net::SocketAddr;

use legate_config::route::{HashPolicy, HashPolicyCookie, HashPolicyHeader};
use xxhash_rust::xxh64::{xxh64, Xxh64};

/// The outcome of the hash policies for one request.
#[derive(Debug, Default, PartialEq)]
pub struct RequestHash {
    /// `None` when no policy produced a hash.
    pub hash: Option<u64>,
    /// A cookie generated for a cookie policy with a TTL: the response sets it.
    pub set_cookie: Option<http::HeaderValue>,
}

/// The request hash of `policies` for this request, on a connection from `remote` to `local`.
pub fn compute_hash(
    policies: &[HashPolicy],
    head: &http::request::Parts,
    remote: SocketAddr,
    local: SocketAddr,
) -> RequestHash {
    let mut hash: Option<u64> = None;
    let mut set_cookie = None;
    for policy in policies {
        let mut new = policy_hash(policy, head, remote);
        if let (None, Some(cookie)) = (new, &policy.cookie) {
            if let Some(ttl) = cookie.ttl {
                let value = format!("{:016x}", xxh64(format!("{remote}{local}").as_bytes(), 0));
                new = Some(xxh64(value.as_bytes(), 0));
                set_cookie = set_cookie.or_else(|| set_cookie_value(cookie, &value, ttl.0));
            }
        }
        if let Some(new) = new {
            hash = Some(hash.map_or(0, |old| old.rotate_left(1)) ^ new);
        }
        // Envoy checks the running hash, not this policy's: a terminal policy that matched
        // nothing still ends the walk when an earlier one produced a hash.
        if policy.terminal && hash.is_some() {
            break;
        }
    }
    RequestHash { hash, set_cookie }
}

/// Envoy's `makeSetCookieValue`: `name="value"; Max-Age=<s>; Path=<p>; <attributes>; HttpOnly`.
fn set_cookie_value(cookie: &HashPolicyCookie, value: &str, ttl: std::time::Duration) -> Option<http::HeaderValue> {
    let mut out = format!("{}=\"{value}\"", cookie.name);
    if !ttl.is_zero() {
        out.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if !cookie.path.is_empty() {
        out.push_str(&format!("; Path={}", cookie.path));
    }
    for attribute in &cookie.attributes {
        match attribute.value.is_empty() {
            true => out.push_str(&format!("; {}", attribute.name)),
            false => out.push_str(&format!("; {}={}", attribute.name, attribute.value)),
        }
    }
    out.push_str("; HttpOnly");
    http::HeaderValue::from_str(&out).ok()
}

fn policy_hash(policy: &HashPolicy, head: &http::request::Parts, remote: SocketAddr) -> Option<u64> {
    if let Some(header) = &policy.header {
        return header_hash(header, head);
    }
    if let Some(cookie) = &policy.cookie {
        return cookie_hash(cookie, head);
    }
    if let Some(connection) = &policy.connection_properties {
        return connection.source_ip.then(|| xxh64(remote.ip().to_string().as_bytes(), 0));
    }
    if let Some(query) = &policy.query_parameter {
        let value = head.uri.query()?.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == query.name).then_some(value)
        })?;
        return Some(xxh64(value.as_bytes(), 0));
    }
    None
}

/// Every value of the header, sorted so that their order does not change the hash (as Envoy
/// does), each rewritten by `regex_rewrite` when set, hashed as one stream.
fn header_hash(header: &HashPolicyHeader, head: &http::request::Parts) -> Option<u64> {
    let name = header.header_name.to_ascii_lowercase();
    let mut values: Vec<String> = match name.as_str() {
        // HTTP/2 pseudo-headers live in the request line here.
        ":authority" => head
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| head.headers.get(http::header::HOST)?.to_str().ok().map(str::to_string))
            .into_iter()
            .collect(),
        ":path" => head.uri.path_and_query().map(|p| p.as_str().to_string()).into_iter().collect(),
        ":method" => vec![head.method.as_str().to_string()],
        _ => head
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect(),
    };
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mut hasher = Xxh64::new(0);
    for value in &values {
        match &header.regex_rewrite {
            Some(rewrite) => hasher.update(rewrite.replace_all(value).as_bytes()),
            None => hasher.update(value.as_bytes()),
        }
    }
    Some(hasher.digest())
}

/// The first cookie of that name in any `Cookie` header, surrounding quotes removed.
fn cookie_hash(cookie: &HashPolicyCookie, head: &http::request::Parts) -> Option<u64> {
    let value = head.headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == cookie.name).then_some(value)
        })
    })?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    Some(xxh64(value.as_bytes(), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(json: serde_json::Value) -> Vec<HashPolicy> {
        serde_json::from_value(json).unwrap()
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    const REMOTE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 5555);
    const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)), 80);

    #[test]
    fn a_cookie_policy_with_a_ttl_generates_the_missing_cookie() {
        let p = policies(serde_json::json!([{"cookie": {"name": "route", "ttl": "3600s", "path": "/app",
            "attributes": [{"name": "SameSite", "value": "Strict"}, {"name": "Secure"}]}}]));
        let first = compute_hash(&p, &head("/", &[]), REMOTE, LOCAL);
        let value = format!("{:016x}", xxh64(b"10.0.0.1:555510.0.0.2:80", 0));
        assert_eq!(first.hash, Some(xxh64(value.as_bytes(), 0)));
        let cookie = first.set_cookie.expect("a cookie to set");
        assert_eq!(
            cookie.to_str().unwrap(),
            format!("route=\"{value}\"; Max-Age=3600; Path=/app; SameSite=Strict; Secure; HttpOnly")
        );
        // The client sends it back: same hash, nothing more to set.
        let back = compute_hash(&p, &head("/", &[("cookie", &format!("route=\"{value}\""))]), REMOTE, LOCAL);
        assert_eq!((back.hash, back.set_cookie), (first.hash, None));
        // TTL 0: a session cookie, no Max-Age.
        let session = policies(serde_json::json!([{"cookie": {"name": "s", "ttl": "0s"}}]));
        let c = compute_hash(&session, &head("/", &[]), REMOTE, LOCAL).set_cookie.unwrap();
        assert!(!c.to_str().unwrap().contains("Max-Age"), "{c:?}");
        // Without a TTL a missing cookie yields no hash.
        let plain = policies(serde_json::json!([{"cookie": {"name": "absent"}}]));
        assert_eq!(compute_hash(&plain, &head("/", &[]), REMOTE, LOCAL), RequestHash::default());
    }

    #[test]
    fn each_input_hashes_its_value() {
        let h = |v: &str| Some(xxh64(v.as_bytes(), 0));
        let rq = head("/p?a=1&user=bob", &[("x-user", "alice"), ("cookie", "x=1; session=\"abc\"")]);
        let hash = |json| compute_hash(&policies(json), &rq, REMOTE, LOCAL).hash;
        assert_eq!(hash(serde_json::json!([{"header": {"header_name": "X-User"}}])), h("alice"));
        assert_eq!(hash(serde_json::json!([{"cookie": {"name": "session"}}])), h("abc"));
        assert_eq!(hash(serde_json::json!([{"connection_properties": {"source_ip": true}}])), h("10.0.0.1"));
        assert_eq!(hash(serde_json::json!([{"query_parameter": {"name": "user"}}])), h("bob"));
        assert_eq!(hash(serde_json::json!([{"header": {"header_name": "absent"}}])), None);
        let rewrite = serde_json::json!([{"header": {"header_name": "x-user",
            "regex_rewrite": {"pattern": {"regex": "^a"}, "substitution": "A"}}}]);
        assert_eq!(hash(rewrite), h("Alice"));
    }

    #[test]
    fn header_values_hash_the_same_in_any_order() {
        let p = policies(serde_json::json!([{"header": {"header_name": "x-k"}}]));
        let a = compute_hash(&p, &head("/", &[("x-k", "1"), ("x-k", "2")]), REMOTE, LOCAL).hash;
        let b = compute_hash(&p, &head("/", &[("x-k", "2"), ("x-k", "1")]), REMOTE, LOCAL).hash;
        assert_eq!(a, b);
        assert!(a.is_some());
    }

    #[test]
    fn hashes_combine_by_rotate_and_xor_and_stop_at_terminal() {
        let h = |v: &str| xxh64(v.as_bytes(), 0);
        let rq = head("/", &[("a", "1"), ("b", "2")]);
        let two = policies(serde_json::json!([
            {"header": {"header_name": "a"}}, {"header": {"header_name": "b"}}
        ]));
        assert_eq!(compute_hash(&two, &rq, REMOTE, LOCAL).hash, Some(h("1").rotate_left(1) ^ h("2")));
        let same = policies(serde_json::json!([
            {"header": {"header_name": "a"}}, {"header": {"header_name": "a"}}
        ]));
        assert_ne!(compute_hash(&same, &rq, REMOTE, LOCAL).hash, Some(0), "duplicates do not cancel out");
        let terminal = policies(serde_json::json!([
            {"header": {"header_name": "missing"}, "terminal": true},
            {"header": {"header_name": "a"}, "terminal": true},
            {"header": {"header_name": "b"}}
        ]));
        assert_eq!(
            compute_hash(&terminal, &rq, REMOTE, LOCAL).hash,
            Some(h("1")),
            "a terminal policy without a hash goes on"
        );
    }
}

//! Header names legate reads or writes, and the hop-by-hop rules of RFC 9110 §7.6.1.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
pub static X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub static X_ENVOY_RETRY_ON: HeaderName = HeaderName::from_static("x-envoy-retry-on");
pub static X_ENVOY_RETRY_GRPC_ON: HeaderName = HeaderName::from_static("x-envoy-retry-grpc-on");
pub static X_ENVOY_UPSTREAM_RQ_TIMEOUT_ALT_RESPONSE: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-alt-response");
pub static X_ENVOY_MAX_RETRIES: HeaderName = HeaderName::from_static("x-envoy-max-retries");
pub static X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
pub static X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
pub static X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
pub static X_ENVOY_EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");
pub static X_ENVOY_DECORATOR_OPERATION: HeaderName = HeaderName::from_static("x-envoy-decorator-operation");
pub static X_ENVOY_IMMEDIATE_HEALTH_CHECK_FAIL: HeaderName =
    HeaderName::from_static("x-envoy-immediate-health-check-fail");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The field names of the last head read on one connection, in order, as sent and as parsed.
/// A peer sends the same names in the same order head after head (a server's responses, a
/// client's requests): comparing a name's bytes with the one at its position last time costs
/// less than parsing it again (`HeaderName::from_bytes` lowercases it, matches it against the
/// standard names and copies a custom one into an allocation).
#[derive(Debug, Default)]
pub struct NameCache {
    /// The names' bytes as sent, one after another.
    sent: Vec<u8>,
    /// Each name: where its bytes lie in `sent`, and the name.
    names: Vec<(u32, u32, HeaderName)>,
}

/// Names beyond this position are parsed each time: the cache stays small.
const NAME_CACHE_FIELDS: usize = 24;

impl NameCache {
    /// The name of field `index` of a head, whose bytes are `sent`. Fields are asked for in
    /// order, from 0, head after head.
    #[inline]
    pub fn name(&mut self, index: usize, sent: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
        if let Some((start, end, name)) = self.names.get(index) {
            if self.sent.get(*start as usize..*end as usize) == Some(sent) {
                return Ok(name.clone());
            }
        }
        self.parse(index, sent)
    }

    /// A name not seen at `index` last time: parsed, and cached in place of what was cached
    /// from there on (this head differs from the last one).
    #[cold]
    fn parse(&mut self, index: usize, sent: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
        let name = HeaderName::from_bytes(sent)?;
        if index <= self.names.len() && index < NAME_CACHE_FIELDS {
            let start = self.names.get(index).map_or(self.sent.len(), |(start, _, _)| *start as usize);
            self.names.truncate(index);
            self.sent.truncate(start);
            self.sent.extend_from_slice(sent);
            // At most `NAME_CACHE_FIELDS` names of a head within `MAX_HEAD`: offsets fit.
            self.names.push((start as u32, self.sent.len() as u32, name.clone()));
        }
        Ok(name)
    }
}

/// Removes hop-by-hop headers (and those the `connection` header names) before a message is
/// forwarded. `te: trailers` survives, as HTTP/2 and gRPC need it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The names, in the order of the bits saying which of them the message carries.
    let hop_by_hop: [&HeaderName; 6] = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::TE,
    ];
    // One pass over the names first, so that only names present are looked up (each lookup
    // hashes): most messages carry none, a typical response only `connection: keep-alive`.
    // A match on the name's text: one length test rules out most names, where comparing
    // each name with the six cost ~40 instructions (callgrind).
    let mut present = 0u8;
    for name in headers.keys() {
        present |= match name.as_str() {
            "connection" => 1,
            "keep-alive" => 1 << 1,
            "proxy-connection" => 1 << 2,
            "transfer-encoding" => 1 << 3,
            "upgrade" => 1 << 4,
            "te" => 1 << 5,
            _ => 0,
        };
    }
    if present == 0 {
        return;
    }
    // The `connection` values leave the map first, so that the headers they name can go too
    // (names given as `&str` are looked up case-insensitively, without allocating).
    if present & 1 != 0 {
        if let http::header::Entry::Occupied(entry) = headers.entry(header::CONNECTION) {
            // Almost every `connection` header is one `close` or `keep-alive`: removed at
            // once, without splitting it into tokens (`keep-alive` is hop-by-hop below; a
            // field named `close` is looked for by name, as for any token).
            let mut values = entry.iter();
            let lone = values.next().map(|v| v.as_bytes()).filter(|_| values.next().is_none());
            let close = lone.is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
            if close || lone.is_some_and(|v| v.eq_ignore_ascii_case(b"keep-alive")) {
                entry.remove();
                if close {
                    remove_field_named(headers, "close");
                }
            } else {
                let (_, values) = entry.remove_entry_mult();
                let mut first = None;
                let mut more = Vec::new();
                for value in values {
                    match first {
                        None => first = Some(value),
                        Some(_) => more.push(value),
                    }
                }
                for value in first.iter().chain(&more) {
                    let Ok(tokens) = value.to_str() else { continue };
                    for token in tokens.split(',').map(str::trim) {
                        // The hop-by-hop names go below if present (`te` is kept for `trailers`).
                        let known = hop_by_hop.iter().any(|h| token.eq_ignore_ascii_case(h.as_str()));
                        if !token.is_empty() && !known {
                            remove_field_named(headers, token);
                        }
                    }
                }
            }
        }
    }
    for (i, name) in hop_by_hop.iter().enumerate().take(5).skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if present & (1 << 5) != 0 {
        let te_trailers = has_token(headers, &header::TE, "trailers");
        headers.remove(header::TE);
        if te_trailers {
            headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
        }
    }
}

/// Removes the field `token` names, if the message has one. Most `connection` tokens name no
/// field (`close` above all): a pass over the names costs less than a lookup, which parses and
/// hashes the token (callgrind: ~600 instructions for `connection: close`).
fn remove_field_named(headers: &mut HeaderMap, token: &str) {
    if headers.keys().any(|name| name.as_str().eq_ignore_ascii_case(token)) {
        headers.remove(token);
    }
}

/// A header value holding `n` in decimal. The values a worker sends again and again
/// (`x-envoy-upstream-service-time` of a few ms, a route's `x-envoy-expected-rq-timeout-ms`)
/// come from a small per-thread cache, so that most calls share bytes instead of allocating.
pub fn decimal_header(n: u64) -> HeaderValue {
    const SLOTS: usize = 256;
    thread_local! {
        static CACHE: std::cell::RefCell<Vec<Option<(u64, HeaderValue)>>> =
            std::cell::RefCell::new(vec![None; SLOTS]);
    }
    CACHE.with_borrow_mut(|cache| {
        let slot = cache.get_mut((n % SLOTS as u64) as usize);
        match slot {
            Some(Some((cached, value))) if *cached == n => value.clone(),
            Some(slot) => {
                let value = HeaderValue::from(n);
                *slot = Some((n, value.clone()));
                value
            }
            None => HeaderValue::from(n),
        }
    })
}

/// Whether a comma-separated header (all its values) holds `token`, ASCII case-insensitive
/// (`te: trailers`, `cache-control: no-transform`, `transfer-encoding: gzip`).
pub fn has_token(headers: &http::HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A UUID version 4, as Envoy's `x-request-id`: 36 ASCII bytes, formatted without allocating.
pub fn uuid4_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    // Where each byte's two digits go, around the dashes at 8, 13, 18 and 23 (constant
    // places: the loop unrolls without bounds checks).
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [b'-'; 36];
    for (byte, at) in bytes.iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

/// Header maps kept for reuse on this thread. A request's map and its response's are made
/// and dropped once per request: reusing them saves four allocations per request.
const SPARE_MAPS: usize = 32;
/// Larger maps (a request with unusually many fields) are not kept.
const SPARE_MAX_CAPACITY: usize = 96;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty header map with room for `capacity` fields, reused when one is spare.
pub fn header_map(capacity: usize) -> HeaderMap {
    match SPARE.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            let _ = map.try_reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Gives a map that is no longer needed back for [`header_map`].
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() > SPARE_MAX_CAPACITY || map.capacity() == 0 {
        return;
    }
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

/// [`uuid4_bytes`] as a `String`.
pub fn uuid4() -> String {
    String::from_utf8_lossy(&uuid4_bytes()).into_owned()
}

/// [`uuid4_bytes`] as a header value, cut from the thread's block of short pieces (a
/// reference count instead of an allocation).
pub fn uuid4_header() -> HeaderValue {
    shared_value(&uuid4_bytes())
}

/// `bytes` as a header value copied into the thread's block of short pieces (see
/// [`super::h1_body::shared_copy`]): no allocation of its own, and its clones share it. Bytes
/// no header value may hold give an empty value.
pub fn shared_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_maybe_shared(super::h1_body::shared_copy(bytes)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_cache_answers_what_parsing_would_as_heads_change() {
        fn parse(cache: &mut NameCache, head: &[&str]) -> Vec<String> {
            head.iter().enumerate().map(|(i, n)| cache.name(i, n.as_bytes()).unwrap().as_str().to_string()).collect()
        }
        let mut cache = NameCache::default();
        assert_eq!(
            parse(&mut cache, &["Server", "X-Custom", "Content-Length"]),
            ["server", "x-custom", "content-length"]
        );
        // The same head again, from the cache; a name spelt differently is parsed again.
        assert_eq!(
            parse(&mut cache, &["Server", "X-Custom", "Content-Length"]),
            ["server", "x-custom", "content-length"]
        );
        assert_eq!(
            parse(&mut cache, &["server", "X-Other", "Content-Length"]),
            ["server", "x-other", "content-length"]
        );
        // Shorter and longer heads, a name moved to another place.
        assert_eq!(parse(&mut cache, &["Date"]), ["date"]);
        assert_eq!(parse(&mut cache, &["Date", "Server", "Date", "ETag"]), ["date", "server", "date", "etag"]);
        assert_eq!(parse(&mut cache, &["Date", "Serve", "Date", "ETag"]), ["date", "serve", "date", "etag"]);
        assert_eq!(parse(&mut cache, &["Date", "Server", "Date", "ETag"]), ["date", "server", "date", "etag"]);
        // An invalid name is refused every time, cached or not.
        assert!(cache.name(0, b"bad name").is_err());
        assert!(cache.name(0, b"bad name").is_err());
        assert_eq!(cache.name(0, b"Date").unwrap(), http::header::DATE);
        // Past the cached positions, names are still right.
        let long: Vec<String> = (0..NAME_CACHE_FIELDS + 4).map(|i| format!("X-F{i}")).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        for _ in 0..2 {
            let got = parse(&mut cache, &long);
            assert!(got.iter().zip(&long).all(|(g, l)| *g == l.to_ascii_lowercase()), "{got:?}");
        }
    }

    #[test]
    fn a_recycled_map_comes_back_empty_with_its_room() {
        let mut map = header_map(8);
        map.insert("x-a", "1".parse().unwrap());
        map.append("x-a", "2".parse().unwrap());
        let room = map.capacity();
        recycle(map);
        let again = header_map(2);
        assert!(again.is_empty() && again.get("x-a").is_none());
        assert_eq!(again.capacity(), room, "the same map, not a new one");
        // A map with unusually many fields is not kept.
        let mut big = header_map(200);
        big.insert("x-b", "1".parse().unwrap());
        recycle(big);
        assert!(header_map(1).capacity() < 200);
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers, deflate".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none() && h.get("connection").is_none());
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("x-kept").unwrap(), "yes");

        // `close` is a connection option; a field of that name, unusual as it is, goes too.
        let mut h = HeaderMap::new();
        h.insert("connection", "Close".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        h.insert("connection", "close".parse().unwrap());
        h.insert("close", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);
        h.insert("connection", "Keep-Alive".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("close", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        // `keep-alive` goes as hop-by-hop; `close` names no option here and stays.
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["close", "x-kept"]);
        // Two `connection` headers, `close` among them: the general path, same outcome.
        let mut h = HeaderMap::new();
        h.append("connection", "close".parse().unwrap());
        h.append("connection", "x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("close", "1".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);

        // Names in `connection` match in any case, across several `connection` headers; a
        // message with no hop-by-hop header is left as it is.
        let mut h = HeaderMap::new();
        h.append("connection", "X-Secret".parse().unwrap());
        h.append("connection", " X-Other , ,".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("x-other", "2".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut plain = HeaderMap::new();
        plain.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);

        // Every hop-by-hop name goes; names of the same lengths stay.
        let mut h = HeaderMap::new();
        for name in ["proxy-connection", "transfer-encoding", "upgrade", "keep-alive", "te", "connection"] {
            h.insert(HeaderName::from_static(name), "x".parse().unwrap());
        }
        let same_lengths = ["ab", "referer", "user-agent", "x-proxy-header16", "x-forwarded-proto"];
        for name in same_lengths {
            h.insert(HeaderName::from_static(name), "kept".parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_by_key(|name| name.len());
        assert_eq!(left, same_lengths);
    }

    #[test]
    fn request_ids_cut_from_blocks_stay_whole_and_distinct() {
        // More than one block's worth: each value keeps its own bytes across blocks.
        let ids: Vec<HeaderValue> = (0..300).map(|_| uuid4_header()).collect();
        let distinct: std::collections::HashSet<&[u8]> = ids.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(distinct.len(), 300);
        for id in &ids {
            let text = id.to_str().unwrap();
            assert_eq!((text.len(), &text[14..15]), (36, "4"), "{text}");
        }
    }

    #[test]
    fn uuid_has_version_and_variant() {
        let id = uuid4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }
}

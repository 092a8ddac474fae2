//! Access log filters: which streams an access logger writes (Envoy's "Access logging" →
//! `config.accesslog.v3.AccessLogFilter`; `source/common/access_log/access_log_impl.cc`).
//!
//! A closed set, evaluated on the worker that finished the stream, reading only its
//! [`StreamInfo`]:
//! - `status_code_filter`: compares the response code, 0 when no response was sent;
//! - `duration_filter`: compares `%DURATION%` in milliseconds (the time so far for a stream
//!   that has not ended, as Envoy's `currentDuration()`);
//! - `not_health_check_filter`: the stream was not answered by the health check filter;
//! - `and_filter` / `or_filter`: all / any of the sub-filters;
//! - `header_filter`: a header matcher over the request headers, several values of a header
//!   joined with `,` as Envoy's `HeaderUtility::matchHeaders` sees them;
//! - `response_flag_filter`: any of the listed flags is set, or, with no list, any flag at all;
//! - `runtime_filter`: a sample: the request id's first 8 hex digits (or, without one or with
//!   `use_independent_randomness`, a random number) modulo the denominator, below the runtime's
//!   numerator for `runtime_key` (else `percent_sampled`'s).
//!
//! The comparisons take the runtime's value for `runtime_key` over `default_value`.
//! `traceable_filter`, `grpc_status_filter`, `metadata_filter`, `log_type_filter` and
//! extension filters are not implemented.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use legate_config::access_log as config;

use crate::http::{ResponseFlag, ResponseFlags, StreamInfo};

/// A filter deciding whether a stream is logged.
#[derive(Clone, Debug)]
pub enum AccessLogFilter {
    /// `status_code_filter`: the response code (0 when none) compared with a value.
    StatusCode(Comparison),
    /// `duration_filter`: `%DURATION%` in milliseconds compared with a value.
    Duration(Comparison),
    /// `not_health_check_filter`: the health check filter did not answer the stream.
    NotHealthCheck,
    /// `and_filter`: every sub-filter passes.
    And(Vec<AccessLogFilter>),
    /// `or_filter`: at least one sub-filter passes.
    Or(Vec<AccessLogFilter>),
    /// `header_filter`: a request header matches.
    Header(HeaderFilter),
    /// `response_flag_filter`: one of these flags is set; an empty set means any flag.
    ResponseFlag(ResponseFlags),
    /// `runtime_filter`.
    Runtime(RuntimeSample),
}

/// `runtime_filter`'s settings.
#[derive(Clone, Debug)]
pub struct RuntimeSample {
    runtime_key: Arc<str>,
    percent: legate_config::core::FractionalPercent,
    independent: bool,
}

/// `config.accesslog.v3.ComparisonFilter`: `<observed> <op> <value>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    pub op: ComparisonOp,
    /// `value.default_value`.
    pub value: u64,
    /// `value.runtime_key`: the runtime's value for it wins.
    pub runtime_key: Option<Arc<str>>,
}

/// `ComparisonFilter.Op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComparisonOp {
    /// `EQ`
    Eq,
    /// `GE`
    Ge,
    /// `LE`
    Le,
    /// `NE`
    Ne,
}

/// `header_filter`: a request header name and a matcher over its value (`None` when absent).
#[derive(Clone)]
pub struct HeaderFilter {
    /// Lower-cased header name; `:method`, `:path`, `:authority` and `:scheme` are the request
    /// line's pseudo-headers.
    name: String,
    matcher: Arc<HeaderMatch>,
}

/// A header matcher over a header's value, `None` when the header is absent.
type HeaderMatch = dyn Fn(Option<&str>) -> bool + Send + Sync;

impl AccessLogFilter {
    /// Builds the filter of an `access_log` entry. Errors carry the path of the bad field
    /// relative to the filter (`and_filter.filters[1].response_flag_filter.flags[0]: …`, or
    /// `: …` for the filter itself); see [`nest`].
    pub fn from_config(filter: &config::AccessLogFilter) -> Result<AccessLogFilter, String> {
        let comparison = |c: &config::ComparisonFilter| {
            let op = match c.op {
                config::Op::Eq => ComparisonOp::Eq,
                config::Op::Ge => ComparisonOp::Ge,
                config::Op::Le => ComparisonOp::Le,
            };
            let mut comparison = Comparison::new(op, u64::from(c.value.default_value));
            comparison.runtime_key = Some(c.value.runtime_key.as_str().into()).filter(|k: &Arc<str>| !k.is_empty());
            comparison
        };
        let list = |field: &str, filters: &[config::AccessLogFilter]| {
            filters
                .iter()
                .enumerate()
                .map(|(i, f)| AccessLogFilter::from_config(f).map_err(|e| nest(&format!("{field}.filters[{i}]"), e)))
                .collect::<Result<Vec<_>, String>>()
        };
        // The config layer checks that exactly one is set; the first one set wins here.
        if let Some(f) = &filter.status_code_filter {
            Ok(AccessLogFilter::StatusCode(comparison(&f.comparison)))
        } else if let Some(f) = &filter.duration_filter {
            Ok(AccessLogFilter::Duration(comparison(&f.comparison)))
        } else if let Some(f) = &filter.runtime_filter {
            Ok(AccessLogFilter::Runtime(RuntimeSample {
                runtime_key: f.runtime_key.as_str().into(),
                percent: f.percent_sampled.unwrap_or_default(),
                independent: f.use_independent_randomness,
            }))
        } else if filter.not_health_check_filter.is_some() {
            Ok(AccessLogFilter::NotHealthCheck)
        } else if let Some(f) = &filter.and_filter {
            Ok(AccessLogFilter::And(list("and_filter", &f.filters)?))
        } else if let Some(f) = &filter.or_filter {
            Ok(AccessLogFilter::Or(list("or_filter", &f.filters)?))
        } else if let Some(f) = &filter.header_filter {
            let matcher = f.header.clone();
            Ok(AccessLogFilter::Header(HeaderFilter::new(&matcher.name.clone(), move |value| matcher.matches(value))))
        } else if let Some(f) = &filter.response_flag_filter {
            let mut flags = ResponseFlags::default();
            for (i, name) in f.flags.iter().enumerate() {
                let flag = ResponseFlag::from_short(name).ok_or_else(|| {
                    format!(
                        "response_flag_filter.flags[{i}]: response flag '{name}' is not \
                         supported by legate"
                    )
                })?;
                flags.set(flag);
            }
            Ok(AccessLogFilter::ResponseFlag(flags))
        } else {
            Err(": one of status_code_filter, duration_filter, not_health_check_filter, \
                 and_filter, or_filter, header_filter or response_flag_filter is required"
                .to_string())
        }
    }

    /// Whether `info` is logged.
    pub fn evaluate(&self, info: &StreamInfo) -> bool {
        match self {
            AccessLogFilter::StatusCode(comparison) => comparison.compare(info.response_code.map_or(0, u64::from)),
            AccessLogFilter::Duration(comparison) => {
                let duration = info.end.unwrap_or_else(|| info.elapsed());
                comparison.compare(duration.as_millis() as u64)
            }
            AccessLogFilter::NotHealthCheck => !info.health_check,
            AccessLogFilter::And(filters) => filters.iter().all(|filter| filter.evaluate(info)),
            AccessLogFilter::Or(filters) => filters.iter().any(|filter| filter.evaluate(info)),
            AccessLogFilter::Header(filter) => filter.evaluate(info),
            AccessLogFilter::ResponseFlag(flags) if flags.is_empty() => !info.response_flags.is_empty(),
            AccessLogFilter::ResponseFlag(flags) => info.response_flags.intersects(*flags),
            AccessLogFilter::Runtime(sample) => sample.evaluate(info),
        }
    }

    /// `response_flag_filter.flags`: short flag names (`UH`, `UF`…); an unknown name is an error
    /// naming it, as Envoy's config validation refuses it.
    pub fn response_flags<S: AsRef<str>>(names: &[S]) -> Result<AccessLogFilter, String> {
        let mut flags = ResponseFlags::default();
        for name in names {
            let name = name.as_ref();
            let flag = ResponseFlag::from_short(name)
                .ok_or_else(|| format!("response_flag_filter: unknown response flag {name:?}"))?;
            flags.set(flag);
        }
        Ok(AccessLogFilter::ResponseFlag(flags))
    }
}

impl Comparison {
    pub fn new(op: ComparisonOp, value: u64) -> Comparison {
        Comparison { op, value, runtime_key: None }
    }

    /// `observed <op> value`, the value the runtime's where it has one that fits 32 bits
    /// (Envoy's `RuntimeUInt32`).
    pub fn compare(&self, observed: u64) -> bool {
        let value = match &self.runtime_key {
            Some(key) => Some(crate::runtime::integer(key, self.value))
                .filter(|v| *v <= u64::from(u32::MAX))
                .unwrap_or(self.value),
            None => self.value,
        };
        match self.op {
            ComparisonOp::Eq => observed == value,
            ComparisonOp::Ge => observed >= value,
            ComparisonOp::Le => observed <= value,
            ComparisonOp::Ne => observed != value,
        }
    }
}

impl RuntimeSample {
    /// Envoy's `RuntimeFilter::evaluate`: `featureEnabled(key, numerator, value, denominator)`.
    fn evaluate(&self, info: &StreamInfo) -> bool {
        let from_id = || {
            let id = info.request_id.as_ref()?.as_bytes().get(..8)?;
            u64::from_str_radix(std::str::from_utf8(id).ok()?, 16).ok()
        };
        let value = if self.independent { None } else { from_id() };
        let value = value.unwrap_or_else(|| fastrand::u64(..));
        let buckets = u64::from(self.percent.denominator.value());
        let numerator = crate::runtime::integer(&self.runtime_key, u64::from(self.percent.numerator));
        value % buckets < numerator.min(buckets)
    }
}

impl HeaderFilter {
    /// A filter on request header `name` (any case) with `matcher` over its value.
    pub fn new(name: &str, matcher: impl Fn(Option<&str>) -> bool + Send + Sync + 'static) -> HeaderFilter {
        HeaderFilter { name: name.to_ascii_lowercase(), matcher: Arc::new(matcher) }
    }

    /// The header's name, lower-cased.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&self, info: &StreamInfo) -> bool {
        (self.matcher)(request_header_value(info, &self.name).as_deref())
    }
}

impl fmt::Debug for HeaderFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderFilter").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Prefixes a config error `path: message` (or `: message`) with the path of its parent.
pub fn nest(prefix: &str, error: String) -> String {
    if error.starts_with(':') {
        format!("{prefix}{error}")
    } else {
        format!("{prefix}.{error}")
    }
}

/// A request header's value as Envoy's header matchers see it: every value joined with `,`
/// (Envoy's `getAllOfHeaderAsString`), `None` when absent or when no request was received.
fn request_header_value<'a>(info: &'a StreamInfo, name: &str) -> Option<Cow<'a, str>> {
    let request = info.request.as_ref()?;
    match name {
        ":method" => return Some(Cow::Borrowed(request.method.as_str())),
        ":path" => return Some(Cow::Borrowed(&request.path)),
        ":authority" if request.authority.is_empty() => return None,
        ":authority" => return Some(Cow::Borrowed(&request.authority)),
        ":scheme" => return Some(Cow::Borrowed(request.scheme.as_str())),
        _ => {}
    }
    let mut values = request.headers.get_all(name).iter();
    let first = String::from_utf8_lossy(values.next()?.as_bytes());
    let mut joined = match values.next() {
        None => return Some(first),
        Some(second) => {
            let mut joined = first.into_owned();
            joined.push(',');
            joined.push_str(&String::from_utf8_lossy(second.as_bytes()));
            joined
        }
    };
    for value in values {
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    Some(Cow::Owned(joined))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue, Method, Version};

    use super::*;
    use crate::http::RequestSnapshot;

    fn stream_info(code: Option<u16>, duration_ms: u64) -> StreamInfo {
        let mut info =
            StreamInfo::new(Version::HTTP_11, 1, "127.0.0.1:5000".parse().unwrap(), "127.0.0.1:10000".parse().unwrap());
        info.response_code = code;
        info.end = Some(Duration::from_millis(duration_ms));
        let mut headers = HeaderMap::new();
        headers.append("x-tag", HeaderValue::from_static("a"));
        headers.append("x-tag", HeaderValue::from_static("b"));
        headers.insert("user-agent", HeaderValue::from_static("curl/8.0"));
        info.request = Some(Box::new(RequestSnapshot {
            method: Method::GET,
            path: "/healthz".to_string(),
            authority: "example.com".to_string(),
            scheme: http::uri::Scheme::HTTP,
            headers,
        }));
        info
    }

    #[test]
    fn status_code_filter_compares_the_response_code_or_zero() {
        let ge_500 = AccessLogFilter::StatusCode(Comparison::new(ComparisonOp::Ge, 500));
        assert!(ge_500.evaluate(&stream_info(Some(503), 1)));
        assert!(ge_500.evaluate(&stream_info(Some(500), 1)));
        assert!(!ge_500.evaluate(&stream_info(Some(200), 1)));
        let eq_0 = AccessLogFilter::StatusCode(Comparison::new(ComparisonOp::Eq, 0));
        assert!(eq_0.evaluate(&stream_info(None, 1)));
        let ne_200 = AccessLogFilter::StatusCode(Comparison::new(ComparisonOp::Ne, 200));
        assert!(!ne_200.evaluate(&stream_info(Some(200), 1)));
        assert!(ne_200.evaluate(&stream_info(None, 1)));
        let le_299 = AccessLogFilter::StatusCode(Comparison::new(ComparisonOp::Le, 299));
        assert!(le_299.evaluate(&stream_info(Some(204), 1)));
        assert!(!le_299.evaluate(&stream_info(Some(404), 1)));
    }

    #[test]
    fn duration_filter_compares_milliseconds() {
        let slow = AccessLogFilter::Duration(Comparison::new(ComparisonOp::Ge, 1000));
        assert!(slow.evaluate(&stream_info(Some(200), 1000)));
        assert!(!slow.evaluate(&stream_info(Some(200), 999)));
        let mut still_going = stream_info(Some(200), 0);
        still_going.end = None;
        assert!(!slow.evaluate(&still_going));
    }

    #[test]
    fn not_health_check_and_or() {
        let mut info = stream_info(Some(200), 5);
        assert!(AccessLogFilter::NotHealthCheck.evaluate(&info));
        info.health_check = true;
        assert!(!AccessLogFilter::NotHealthCheck.evaluate(&info));
        let errors = AccessLogFilter::StatusCode(Comparison::new(ComparisonOp::Ge, 400));
        let and = AccessLogFilter::And(vec![AccessLogFilter::NotHealthCheck, errors.clone()]);
        let or = AccessLogFilter::Or(vec![AccessLogFilter::NotHealthCheck, errors]);
        assert!(!and.evaluate(&info));
        assert!(!or.evaluate(&info));
        info.response_code = Some(500);
        assert!(!and.evaluate(&info));
        assert!(or.evaluate(&info));
        info.health_check = false;
        assert!(and.evaluate(&info));
    }

    #[test]
    fn header_filter_sees_joined_values_and_pseudo_headers() {
        let info = stream_info(Some(200), 5);
        let tag = HeaderFilter::new("X-Tag", |value| value == Some("a,b"));
        assert!(AccessLogFilter::Header(tag).evaluate(&info));
        let agent = HeaderFilter::new("user-agent", |value| value.is_some_and(|v| v.starts_with("curl/")));
        assert!(AccessLogFilter::Header(agent).evaluate(&info));
        let path = HeaderFilter::new(":path", |value| value == Some("/healthz"));
        assert!(AccessLogFilter::Header(path).evaluate(&info));
        let absent = HeaderFilter::new("x-missing", |value| value.is_none());
        assert!(AccessLogFilter::Header(absent.clone()).evaluate(&info));
        let mut no_request = stream_info(None, 5);
        no_request.request = None;
        assert!(AccessLogFilter::Header(absent).evaluate(&no_request));
    }

    fn from_config(json: serde_json::Value) -> Result<AccessLogFilter, String> {
        let config: config::AccessLogFilter = serde_json::from_value(json).unwrap();
        AccessLogFilter::from_config(&config)
    }

    #[test]
    fn built_from_config() {
        let filter = from_config(serde_json::json!({"and_filter": {"filters": [
            {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 500, "runtime_key": "k"}}}},
            {"not_health_check_filter": {}},
            {"or_filter": {"filters": [
                {"duration_filter": {"comparison": {"op": "LE", "value": {"default_value": 10, "runtime_key": "d"}}}},
                {"header_filter": {"header": {"name": "User-Agent", "prefix_match": "curl/"}}},
                {"response_flag_filter": {"flags": ["UH", "UF"]}}
            ]}}
        ]}}))
        .unwrap();
        let mut info = stream_info(Some(503), 50);
        assert!(filter.evaluate(&info), "503, curl: logged");
        info.health_check = true;
        assert!(!filter.evaluate(&info), "health check: not logged");
        info.health_check = false;
        info.request.as_mut().unwrap().headers.insert("user-agent", HeaderValue::from_static("wget"));
        assert!(!filter.evaluate(&info), "503, wget, 50 ms, no flag: not logged");
        info.set_flag(ResponseFlag::NoHealthyUpstream);
        assert!(filter.evaluate(&info), "503 UH: logged");
        info.response_code = Some(200);
        assert!(!filter.evaluate(&info), "200: not logged");
        let any_flag = from_config(serde_json::json!({"response_flag_filter": {}})).unwrap();
        assert!(any_flag.evaluate(&info));
    }

    #[test]
    fn config_errors_name_the_field() {
        assert_eq!(
            from_config(serde_json::json!({"or_filter": {"filters": [
                {"not_health_check_filter": {}},
                {"response_flag_filter": {"flags": ["UH", "UDO"]}}
            ]}}))
            .unwrap_err(),
            "or_filter.filters[1].response_flag_filter.flags[1]: response flag 'UDO' is not \
             supported by legate"
        );
        assert!(from_config(serde_json::json!({})).unwrap_err().starts_with(": one of"));
        assert_eq!(
            nest("filter", from_config(serde_json::json!({})).unwrap_err()),
            "filter: one of status_code_filter, duration_filter, not_health_check_filter, \
             and_filter, or_filter, header_filter or response_flag_filter is required"
        );
    }

    #[test]
    fn response_flag_filter_with_and_without_flags() {
        let mut info = stream_info(Some(503), 5);
        let any = AccessLogFilter::response_flags::<&str>(&[]).unwrap();
        let uf_or_uh = AccessLogFilter::response_flags(&["UF", "UH"]).unwrap();
        assert!(!any.evaluate(&info));
        assert!(!uf_or_uh.evaluate(&info));
        info.set_flag(ResponseFlag::UpstreamOverflow);
        assert!(any.evaluate(&info));
        assert!(!uf_or_uh.evaluate(&info));
        info.set_flag(ResponseFlag::NoHealthyUpstream);
        assert!(uf_or_uh.evaluate(&info));
        assert_eq!(
            AccessLogFilter::response_flags(&["UF", "XX"]).unwrap_err(),
            "response_flag_filter: unknown response flag \"XX\""
        );
    }
}

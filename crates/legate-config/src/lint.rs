//! Timeline lint: the timeouts a request meets on its way (DESIGN §3), route by route, and the
//! settings that contradict that timeline. legate's own check, not Envoy's: `--mode validate`
//! prints the warnings, and the timelines on request.
//!
//! The order, as Envoy arms the timers:
//! - the connection manager's `request_headers_timeout` and `request_timeout` while the request
//!   arrives, and `stream_idle_timeout` (or the route's `idle_timeout`) throughout;
//! - the route `timeout` starts once the whole request is received and spans every try;
//! - each try first waits for a connection (`connect_timeout`), then `per_try_timeout` starts
//!   (Envoy's `UpstreamRequest::onPoolReady`), so connecting is not part of a try's budget but
//!   is part of the route's.
//!
//! Not warned about, because it is not a contradiction: `request_timeout` shorter than the
//! route `timeout` (it is disarmed once the request is sent upstream, before the route timeout
//! matters), and `connect_timeout` longer than `per_try_timeout` (see above).

use crate::bootstrap::Bootstrap;
use crate::cluster::Cluster;
use crate::extensions::NetworkFilterConfig;
use crate::filters::network::http_connection_manager::HttpConnectionManager;
use crate::listener::FilterChain;
use crate::route::{RetryPolicy, Route, RouteAction, VirtualHost};

/// A setting that contradicts the request timeline: `path` is the field to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineWarning {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for TimelineWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every contradiction in the routes of the static listeners.
pub fn timeline_warnings(b: &Bootstrap) -> Vec<TimelineWarning> {
    let mut warnings = Vec::new();
    for r in routes(b) {
        r.warnings(b, &mut warnings);
    }
    warnings
}

/// One text block per route: each timeout in the order a request meets it, its effective
/// value and where that value comes from, and what firing it does (stat, status, flag).
pub fn route_timelines(b: &Bootstrap) -> Vec<String> {
    routes(b).iter().map(|r| r.timeline(b)).collect()
}

/// A route with a `route` action, and what encloses it.
struct RouteInfo<'a> {
    /// Path of the route, `static_resources.listeners[0]...routes[1]`.
    at: String,
    listener: String,
    hcm: &'a HttpConnectionManager,
    vhost: &'a VirtualHost,
    route: &'a Route,
    action: &'a RouteAction,
}

fn routes(b: &Bootstrap) -> Vec<RouteInfo<'_>> {
    let mut out = Vec::new();
    for (i, listener) in b.static_resources.listeners.iter().enumerate() {
        let chains = listener
            .filter_chains
            .iter()
            .enumerate()
            .map(|(j, c)| (format!("static_resources.listeners[{i}].filter_chains[{j}]"), c))
            .chain(
                listener
                    .default_filter_chain
                    .iter()
                    .map(|c| (format!("static_resources.listeners[{i}].default_filter_chain"), c)),
            );
        for (chain_at, chain) in chains {
            collect_chain(&listener.name(), &chain_at, chain, &mut out);
        }
    }
    out
}

fn collect_chain<'a>(listener: &str, chain_at: &str, chain: &'a FilterChain, out: &mut Vec<RouteInfo<'a>>) {
    for (k, filter) in chain.filters.iter().enumerate() {
        let NetworkFilterConfig::HttpConnectionManager(hcm) = &filter.config else { continue };
        let Some(rc) = &hcm.route_config else { continue };
        for (v, vhost) in rc.virtual_hosts.iter().enumerate() {
            for (r, route) in vhost.routes.iter().enumerate() {
                let Some(action) = &route.route else { continue };
                out.push(RouteInfo {
                    at: format!("{chain_at}.filters[{k}].typed_config.route_config.virtual_hosts[{v}].routes[{r}]"),
                    listener: listener.to_string(),
                    hcm,
                    vhost,
                    route,
                    action,
                });
            }
        }
    }
}

/// An effective value and where it came from.
struct Setting {
    value: std::time::Duration,
    origin: String,
}

impl Setting {
    fn new(value: std::time::Duration, origin: impl Into<String>) -> Self {
        Setting { value, origin: origin.into() }
    }

    fn text(&self) -> String {
        format!("{} ({})", fmt_duration(self.value), self.origin)
    }
}

impl RouteInfo<'_> {
    /// The retry policy in force and the path of the message holding it.
    fn retry_policy(&self) -> Option<(&RetryPolicy, String)> {
        match (&self.action.retry_policy, &self.vhost.retry_policy) {
            (Some(p), _) => Some((p, format!("{}.route.retry_policy", self.at))),
            (None, Some(p)) => {
                let vh_at = self.at.rsplit_once(".routes[").map_or(self.at.as_str(), |(vh, _)| vh);
                Some((p, format!("{vh_at}.retry_policy")))
            }
            (None, None) => None,
        }
    }

    fn route_timeout(&self) -> Setting {
        match self.action.timeout {
            Some(t) => Setting::new(t.0, "route timeout"),
            None => Setting::new(self.action.timeout(), "default"),
        }
    }

    fn stream_idle_timeout(&self) -> (&'static str, Setting) {
        match (self.action.idle_timeout, self.hcm.stream_idle_timeout) {
            (Some(t), _) => ("idle_timeout", Setting::new(t.0, "route idle_timeout")),
            (None, Some(t)) => ("stream_idle_timeout", Setting::new(t.0, "connection manager")),
            (None, None) => ("stream_idle_timeout", Setting::new(self.hcm.stream_idle_timeout(), "default")),
        }
    }

    fn clusters<'b>(&self, b: &'b Bootstrap) -> Vec<(String, &'b Cluster)> {
        self.action
            .cluster_names()
            .into_iter()
            .filter_map(|name| {
                let (i, c) = b.static_resources.clusters.iter().enumerate().find(|(_, c)| c.name == name)?;
                Some((format!("static_resources.clusters[{i}]"), c))
            })
            .collect()
    }

    fn warnings(&self, b: &Bootstrap, out: &mut Vec<TimelineWarning>) {
        let timeout = self.route_timeout();
        let timeout_at = format!("{}.route.timeout", self.at);
        let retry = self.retry_policy();
        if let Some((policy, policy_at)) = &retry {
            for token in policy.retry_on().filter(|t| !crate::route::RETRY_ON.contains(t)) {
                out.push(TimelineWarning {
                    path: format!("{policy_at}.retry_on"),
                    message: format!(
                        "unknown retry_on condition '{token}' is ignored, as Envoy ignores it (Envoy's are: {})",
                        crate::route::RETRY_ON.join(", ")
                    ),
                });
            }
        }
        let per_try =
            retry.as_ref().and_then(|(p, at)| Some((p, p.per_try_timeout?.0, at))).filter(|(_, t, _)| !t.is_zero());

        if !timeout.value.is_zero() {
            if let Some((_, per_try, policy_at)) = &per_try {
                if *per_try >= timeout.value {
                    out.push(TimelineWarning {
                        path: format!("{policy_at}.per_try_timeout"),
                        message: format!(
                            "per_try_timeout {} is not shorter than the route timeout {}: the route timeout \
                             always fires first (504 UT, upstream_rq_timeout), so no try ever times out on its \
                             own and none is retried",
                            fmt_duration(*per_try),
                            timeout.text()
                        ),
                    });
                }
            }
            if let Some((policy, per_try, policy_at)) = &per_try {
                let retries = policy.num_retries();
                // Retry n starts after n tries timed out, at n × per_try_timeout at the earliest.
                if retries > 0 && per_try.saturating_mul(retries) >= timeout.value && *per_try < timeout.value {
                    let can_start =
                        (timeout.value.as_nanos().div_ceil(per_try.as_nanos()) - 1).min(u128::from(retries));
                    out.push(TimelineWarning {
                        path: format!("{policy_at}.num_retries"),
                        message: format!(
                            "num_retries {retries} × per_try_timeout {} = {} is not shorter than the route timeout {}: \
                             at most {can_start} of the {retries} retries can start before the route timeout fires",
                            fmt_duration(*per_try),
                            fmt_duration(per_try.saturating_mul(retries)),
                            timeout.text()
                        ),
                    });
                }
            }
            for (cluster_at, cluster) in self.clusters(b) {
                let connect = cluster.connect_timeout();
                if connect >= timeout.value {
                    let origin = if cluster.connect_timeout.is_some() { "" } else { ", cluster default" };
                    out.push(TimelineWarning {
                        path: format!("{cluster_at}.connect_timeout"),
                        message: format!(
                            "connect_timeout {}{origin} of cluster '{}' is not shorter than the route timeout {} of \
                             {}: a slow connect ends in the route timeout (504 UT) and connect_timeout never fires \
                             (503 UF, upstream_cx_connect_timeout)",
                            fmt_duration(connect),
                            cluster.name,
                            timeout.text(),
                            timeout_at
                        ),
                    });
                }
            }
        }

        let (idle_field, idle) = self.stream_idle_timeout();
        if timeout.value.is_zero() && idle.value.is_zero() {
            out.push(TimelineWarning {
                path: timeout_at,
                message: format!(
                    "the route timeout is 0s (disabled) and {idle_field} is {}: nothing bounds a stalled stream, \
                     which holds its connection and upstream request forever",
                    idle.text()
                ),
            });
        }
    }

    fn timeline(&self, b: &Bootstrap) -> String {
        let m = &self.route.r#match;
        let matcher = if let Some(p) = &m.prefix {
            format!("prefix {p:?}")
        } else if let Some(p) = &m.path {
            format!("path {p:?}")
        } else if let Some(r) = &m.safe_regex {
            format!("safe_regex {:?}", r.regex)
        } else if let Some(p) = &m.path_separated_prefix {
            format!("path_separated_prefix {p:?}")
        } else {
            "connect_matcher".to_string()
        };
        let target = match (&self.action.cluster, &self.action.cluster_header, &self.action.weighted_clusters) {
            (Some(c), _, _) => format!("cluster '{c}'"),
            (_, Some(h), _) => format!("the cluster named by header '{h}'"),
            _ => format!("weighted clusters {}", self.action.cluster_names().join(", ")),
        };
        let name = if self.route.name.is_empty() { String::new() } else { format!(" '{}'", self.route.name) };
        let mut lines = vec![
            format!(
                "route{name} ({matcher}) of virtual host '{}', listener '{}' → {target}",
                self.vhost.name, self.listener
            ),
            format!("  at {}", self.at),
        ];
        let mut line = |step: &str, text: String| lines.push(format!("  {step:>3} {text}"));
        let off_or = |s: &Setting, effect: &str| {
            if s.value.is_zero() {
                format!("{} → disabled", s.text())
            } else {
                format!("{} → {effect}", s.text())
            }
        };

        let hcm_setting = |value: Option<crate::duration::Duration>, default: std::time::Duration| match value {
            Some(v) => Setting::new(v.0, "connection manager"),
            None => Setting::new(default, "default"),
        };
        line(
            "5.",
            format!(
                "request_headers_timeout {}",
                off_or(
                    &hcm_setting(self.hcm.request_headers_timeout, self.hcm.request_headers_timeout()),
                    "downstream_rq_header_timeout, 408"
                )
            ),
        );
        line(
            "",
            format!(
                "request_timeout {}",
                off_or(
                    &hcm_setting(self.hcm.request_timeout, self.hcm.request_timeout()),
                    "downstream_rq_timeout, 408 (disarmed once the request is sent upstream)"
                )
            ),
        );
        let (idle_field, idle) = self.stream_idle_timeout();
        line(
            "",
            format!(
                "{idle_field} {}",
                off_or(&idle, "downstream_rq_idle_timeout, 408 (504 once the request was received; reset once the response started), SI")
            ),
        );
        let max_stream = match self.action.max_stream_duration.as_ref().and_then(|m| m.max_stream_duration) {
            Some(d) => Some(Setting::new(d.0, "route max_stream_duration")),
            None => self
                .hcm
                .common_http_protocol_options
                .as_ref()
                .and_then(|o| o.max_stream_duration)
                .map(|d| Setting::new(d.0, "connection manager")),
        };
        if let Some(s) = max_stream {
            line("", format!("max_stream_duration {}", off_or(&s, "downstream_rq_max_duration_reached, 408")));
        }

        let clusters = self.clusters(b);
        for (_, cluster) in &clusters {
            let connect = match cluster.connect_timeout {
                Some(t) => Setting::new(t.0, format!("cluster '{}'", cluster.name)),
                None => Setting::new(cluster.connect_timeout(), format!("cluster '{}' default", cluster.name)),
            };
            line("8.", format!("connect_timeout {} → upstream_cx_connect_timeout, 503 UF", connect.text()));
        }
        if clusters.is_empty() {
            line("8.", "connect_timeout of the cluster picked per request (not known from config)".to_string());
        }

        let timeout = self.route_timeout();
        line(
            "9.",
            format!(
                "timeout {}",
                off_or(&timeout, "upstream_rq_timeout, 504 UT (spans all tries, from the end of the request)")
            ),
        );
        match self.retry_policy() {
            None => {
                line("", "per_try_timeout none (no retry_policy): one try, bounded by the route timeout".to_string())
            }
            Some((policy, policy_at)) => {
                let origin = if policy_at.ends_with("route.retry_policy") { "route" } else { "virtual host" };
                match policy.per_try_timeout {
                    Some(t) => line(
                        "",
                        format!(
                            "per_try_timeout {} ({origin} retry_policy) → upstream_rq_per_try_timeout, then a retry or 504 UT",
                            fmt_duration(t.0)
                        ),
                    ),
                    None => line("", format!("per_try_timeout none ({origin} retry_policy): tries are bounded by the route timeout only")),
                }
                if let Some(t) = policy.per_try_idle_timeout {
                    line(
                        "",
                        format!("per_try_idle_timeout {} ({origin} retry_policy) → upstream_rq_per_try_idle_timeout, 504 UT", fmt_duration(t.0)),
                    );
                }
                let retries = match policy.num_retries {
                    Some(n) => format!("{n} ({origin} retry_policy)"),
                    None => format!("{} (default)", policy.num_retries()),
                };
                let (base, max) = policy.back_off();
                let max_retries: Vec<String> = clusters
                    .iter()
                    .map(|(_, c)| {
                        let t = c.circuit_breakers.for_priority(self.action.priority);
                        match t.max_retries {
                            Some(n) => format!("{n} (cluster '{}')", c.name),
                            None => format!("{} (cluster '{}' default)", t.max_retries(), c.name),
                        }
                    })
                    .collect();
                line(
                    "",
                    format!(
                        "num_retries {retries} on {:?}, back-off {}..{} → upstream_rq_retry; concurrent retries capped by max_retries {} → upstream_rq_retry_overflow",
                        policy.retry_on,
                        fmt_duration(base),
                        fmt_duration(max),
                        if max_retries.is_empty() { "of the cluster".to_string() } else { max_retries.join(", ") }
                    ),
                );
            }
        }

        let downstream = match self.hcm.common_http_protocol_options.as_ref().and_then(|o| o.idle_timeout) {
            Some(t) => Setting::new(t.0, "connection manager"),
            None => Setting::new(crate::protocol::HttpProtocolOptions::DEFAULT_IDLE_TIMEOUT.0, "default"),
        };
        line("11.", format!("downstream idle_timeout {}", off_or(&downstream, "downstream_cx_idle_timeout")));
        for (_, cluster) in &clusters {
            let options = cluster.upstream_common_http_protocol_options();
            let explicit = cluster
                .upstream_http_options()
                .and_then(|e| e.common_http_protocol_options.as_ref())
                .or(cluster.common_http_protocol_options.as_deref())
                .and_then(|o| o.idle_timeout)
                .is_some();
            let origin = if explicit {
                format!("cluster '{}'", cluster.name)
            } else {
                format!("cluster '{}' default", cluster.name)
            };
            let upstream = Setting::new(options.idle_timeout(), origin);
            line("", format!("upstream idle_timeout {}", off_or(&upstream, "upstream_cx_idle_timeout")));
        }
        lines.join("\n")
    }
}

/// `5s`, `250ms`, `5m`, `1h`, `1.5s`: the shortest exact rendering.
fn fmt_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    // `checked_rem` rather than `is_multiple_of`, which is newer than the workspace's rust-version.
    let whole = |n: u128, unit: u128| n.checked_rem(unit) == Some(0);
    if d.is_zero() {
        "0s".into()
    } else if !whole(u128::from(d.subsec_nanos()), 1_000_000) {
        format!("{}s", d.as_secs_f64())
    } else if whole(ms, 3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if whole(ms, 60_000) {
        format!("{}m", ms / 60_000)
    } else if whole(ms, 1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_bootstrap;

    /// A listener with one HCM route to cluster `c`; `route` and `extra` are spliced in.
    fn bootstrap(route: &str, vhost: &str, hcm: &str, cluster: &str) -> Bootstrap {
        let yaml = format!(
            r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          {hcm}
          http_filters: [{{name: envoy.filters.http.router}}]
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              {vhost}
              routes:
              - match: {{prefix: /}}
                route: {{cluster: c, {route}}}
  clusters:
  - name: c
    {cluster}
    load_assignment:
      cluster_name: c
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 8080}}}}}}}}]}}]
"#
        );
        load_bootstrap(None, Some(&yaml)).unwrap().bootstrap
    }

    const ROUTE_AT: &str =
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0]";

    #[test]
    fn defaults_produce_no_warning_and_a_full_timeline() {
        let b = bootstrap("", "", "", "");
        assert_eq!(timeline_warnings(&b), []);
        let timelines = route_timelines(&b);
        assert_eq!(timelines.len(), 1);
        let t = &timelines[0];
        for expected in [
            "route (prefix \"/\") of virtual host 'v', listener 'l' → cluster 'c'",
            "request_headers_timeout 0s (default) → disabled",
            "stream_idle_timeout 5m (default) → downstream_rq_idle_timeout, 408",
            "connect_timeout 5s (cluster 'c' default) → upstream_cx_connect_timeout, 503 UF",
            "timeout 15s (default) → upstream_rq_timeout, 504 UT",
            "per_try_timeout none (no retry_policy)",
            "downstream idle_timeout 1h (default) → downstream_cx_idle_timeout",
            "upstream idle_timeout 1h (cluster 'c' default) → upstream_cx_idle_timeout",
        ] {
            assert!(t.contains(expected), "missing {expected:?} in\n{t}");
        }
    }

    #[test]
    fn per_try_timeout_not_shorter_than_route_timeout() {
        let b = bootstrap("timeout: 2s, retry_policy: {retry_on: 5xx, per_try_timeout: 2s}", "", "", "");
        let w = timeline_warnings(&b);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].path, format!("{ROUTE_AT}.route.retry_policy.per_try_timeout"));
        assert!(
            w[0].message.starts_with("per_try_timeout 2s is not shorter than the route timeout 2s (route timeout)"),
            "{}",
            w[0].message
        );
    }

    #[test]
    fn unknown_retry_on_condition_is_a_warning() {
        let b = bootstrap("retry_policy: {retry_on: '5xx,gateway-eror'}", "", "", "");
        let w = timeline_warnings(&b);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, format!("{ROUTE_AT}.route.retry_policy.retry_on"));
        assert!(w[0].message.starts_with("unknown retry_on condition 'gateway-eror' is ignored"), "{}", w[0].message);
    }

    #[test]
    fn retries_that_can_never_start() {
        let b = bootstrap("retry_policy: {retry_on: 5xx, num_retries: 5, per_try_timeout: 4s}", "", "", "");
        let w = timeline_warnings(&b);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, format!("{ROUTE_AT}.route.retry_policy.num_retries"));
        assert!(
            w[0].message.starts_with(
                "num_retries 5 × per_try_timeout 4s = 20s is not shorter than the route timeout 15s (default): at most 3 of the 5 retries"
            ),
            "{}",
            w[0].message
        );
    }

    #[test]
    fn virtual_host_retry_policy_is_used_and_located() {
        let b = bootstrap("timeout: 1s", "retry_policy: {per_try_timeout: 3s}", "", "");
        let w = timeline_warnings(&b);
        assert!(
            w.iter().any(|w| w.path
                == "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].retry_policy.per_try_timeout"),
            "{w:?}"
        );
    }

    #[test]
    fn connect_timeout_not_shorter_than_route_timeout() {
        let b = bootstrap("timeout: 3s", "", "", "connect_timeout: 5s");
        let w = timeline_warnings(&b);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "static_resources.clusters[0].connect_timeout");
        assert!(
            w[0].message.starts_with("connect_timeout 5s of cluster 'c' is not shorter than the route timeout 3s"),
            "{}",
            w[0].message
        );
    }

    #[test]
    fn nothing_bounds_a_stalled_stream() {
        let b = bootstrap("timeout: 0s", "", "stream_idle_timeout: 0s", "");
        let w = timeline_warnings(&b);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, format!("{ROUTE_AT}.route.timeout"));
        assert!(w[0].message.contains("stream_idle_timeout is 0s (connection manager)"), "{}", w[0].message);
        // The route's idle_timeout replaces the connection manager's.
        assert_eq!(
            timeline_warnings(&bootstrap("timeout: 0s, idle_timeout: 30s", "", "stream_idle_timeout: 0s", "")),
            []
        );
        let w = timeline_warnings(&bootstrap("timeout: 0s, idle_timeout: 0s", "", "", ""));
        assert!(w[0].message.contains("idle_timeout is 0s (route idle_timeout)"), "{w:?}");
    }

    #[test]
    fn durations_render_shortly() {
        assert_eq!(fmt_duration(std::time::Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(std::time::Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(std::time::Duration::from_secs(300)), "5m");
        assert_eq!(fmt_duration(std::time::Duration::from_secs(7200)), "2h");
    }
}

//! Admin output of the store: `/stats` text, `/stats?format=json` and `/stats/prometheus`,
//! byte for byte as Envoy prints them where scrapers depend on it (DESIGN §8; Envoy's
//! `StatsTextRender`, `StatsJsonRender`, `PrometheusStatsFormatter`).
//!
//! Common rules, as Envoy's `StatsParams::shouldShowMetric`: `filter` is searched (not
//! anchored) in the full stat name, and `used_only` drops stats never written (histograms
//! never latched with a sample). Text and JSON list counters and gauges together sorted by
//! name, then histograms sorted by name. Prometheus lists counters, then gauges, then
//! histograms, each type grouped into families by tag-extracted name (sorted), the samples of a
//! family sorted by full name.
//!
//! Histograms show the views of the last [`Store::latch_histograms`]. Envoy's text output
//! prints quantiles with fmt's `{}` (`nan` for an empty interval); JSON prints a missing
//! quantile as `null`, and the order `cumulative`, `interval` follows Envoy's current
//! `StatsJsonRender::populatePercentiles`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Range;

use serde_json::{json, Value};

use crate::counter::{counter_used, counter_value_with};
use crate::filter::{Filter, Scopes};
use crate::gauge::gauge_used;
use crate::histogram::{HistogramLatch, PackedLatch, BUCKET_BOUNDS, SUPPORTED_QUANTILES};
use crate::store::{StatKind, StatMap, Store, UNWRITTEN_SLOT};
use crate::symbol_table::{NameWriter, Names, StatName};
use crate::tag_extraction::{extract_tags, Tag};

/// Envoy's quantile labels, `P{:g}` of the supported quantiles × 100.
const QUANTILE_LABELS: [&str; SUPPORTED_QUANTILES.len()] =
    ["0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100"];

/// What a render reads from the registry, copied under its lock: the names stay interned ids
/// and the histogram views are shared, so the lock is held for one pass over the maps.
/// Filtering, formatting and sorting names happen after, while workers may create stats.
struct Snapshot {
    names: Names,
    counters: Vec<(StatName, u32)>,
    gauges: Vec<(StatName, u32)>,
    histograms: Vec<(StatName, u32, Option<PackedLatch>)>,
}

/// Names written into one buffer, each with what the render needs of its stat, so that a
/// render of 100,000s of stats makes no allocation per stat.
struct Listed<T> {
    text: String,
    stats: Vec<(Range<usize>, T)>,
    /// Each stat's interned name, for sorting.
    names: Vec<StatName>,
}

impl<T> Listed<T> {
    fn new() -> Self {
        Listed { text: String::new(), stats: Vec::new(), names: Vec::new() }
    }

    /// Adds `name` with `stat` if it passes `filter` (Envoy's filter is searched, not anchored,
    /// in the full name).
    fn push(&mut self, writer: &mut NameWriter<'_>, name: StatName, filter: Option<&Filter>, stat: T) {
        let start = self.text.len();
        writer.write(name, &mut self.text);
        let shown = filter.is_none_or(|f| self.text.get(start..).is_some_and(|name| f.is_match(name)));
        if shown {
            self.stats.push((start..self.text.len(), stat));
            self.names.push(name);
        } else {
            self.text.truncate(start);
        }
    }

    /// Sorts the stats by name ([`Names::sorted_order`]); equal names (a counter and a gauge)
    /// keep the order pushed.
    fn sorted(mut self, names: &Names) -> Self {
        let order = names.sorted_order(&self.names);
        let mut stats: Vec<Option<(Range<usize>, T)>> = self.stats.into_iter().map(Some).collect();
        self.stats = order.into_iter().filter_map(|i| stats.get_mut(i).and_then(Option::take)).collect();
        self.names = Vec::new();
        self
    }

    /// Each stat's name and what was pushed with it.
    fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.stats.iter().map(|(range, stat)| (self.text.get(range.clone()).unwrap_or_default(), stat))
    }
}

/// Which kinds of stat a render shows (admin's `type=`, Envoy's `StatsType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatTypes {
    #[default]
    All,
    Counters,
    Gauges,
    Histograms,
    /// legate has no text readouts: such a render is empty.
    TextReadouts,
}

impl StatTypes {
    /// Admin's `type=` value, as Envoy spells it (`Counters`, `Gauges`, `Histograms`,
    /// `TextReadouts`, `All`).
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "All" => StatTypes::All,
            "Counters" => StatTypes::Counters,
            "Gauges" => StatTypes::Gauges,
            "Histograms" => StatTypes::Histograms,
            "TextReadouts" => StatTypes::TextReadouts,
            _ => return None,
        })
    }

    fn shows(self, kind: StatTypes) -> bool {
        self == StatTypes::All || self == kind
    }
}

impl Store {
    /// Copies what renders need under the registry lock (see [`Snapshot`]).
    fn snapshot(&self, filter: Option<&Filter>, used_only: bool, types: StatTypes) -> Snapshot {
        let registry = self.lock();
        let names = registry.names.names();
        let mut scopes = Scopes::new(names, filter);
        let mut numeric = |map: &StatMap<u32>, kind: StatKind| -> Vec<(StatName, u32)> {
            let mut listed: Vec<(StatName, u32)> =
                map.iter().filter(|(name, _)| scopes.may_pass(**name)).map(|(name, index)| (*name, *index)).collect();
            listed.extend(registry.group_stats(kind, &mut scopes));
            // A declared stat no handle wrote is never used.
            if !used_only {
                listed.extend(
                    registry.declared_unwritten(kind, &mut scopes).into_iter().map(|name| (name, UNWRITTEN_SLOT)),
                );
            }
            listed
        };
        let counters =
            if types.shows(StatTypes::Counters) { numeric(&registry.counters, StatKind::Counter) } else { Vec::new() };
        let gauges =
            if types.shows(StatTypes::Gauges) { numeric(&registry.gauges, StatKind::Gauge) } else { Vec::new() };
        let histograms = match types.shows(StatTypes::Histograms) {
            true => registry
                .histograms
                .iter()
                .filter(|(name, _)| scopes.may_pass(**name))
                .map(|(name, e)| (*name, e.index, e.latch.clone()))
                .collect(),
            false => Vec::new(),
        };
        Snapshot { names: names.clone(), counters, gauges, histograms }
    }

    /// Counters and gauges that pass the filter, sorted by name.
    fn numeric_stats(&self, snapshot: &Snapshot, filter: Option<&Filter>, used_only: bool) -> Listed<u64> {
        let mut writer = snapshot.names.writer();
        let mut listed = Listed::new();
        let offsets = self.arena.offsets();
        for &(name, index) in &snapshot.counters {
            if !used_only || counter_used(&self.arena, index) {
                listed.push(&mut writer, name, filter, counter_value_with(&self.arena, &offsets, index));
            }
        }
        for &(name, index) in &snapshot.gauges {
            if !used_only || gauge_used(&self.arena, index) {
                listed.push(&mut writer, name, filter, self.arena.sum(index));
            }
        }
        listed
    }

    /// Histograms that pass the filter, sorted by name; `None` for one never latched with a
    /// sample.
    fn shown_histograms(
        snapshot: &Snapshot,
        filter: Option<&Filter>,
        used_only: bool,
    ) -> Listed<Option<HistogramLatch>> {
        let mut writer = snapshot.names.writer();
        let mut listed = Listed::new();
        for (name, _, latch) in &snapshot.histograms {
            let latch = latch.as_ref().map(PackedLatch::unpack).filter(HistogramLatch::used);
            if !used_only || latch.is_some() {
                listed.push(&mut writer, *name, filter, latch);
            }
        }
        listed
    }

    /// Admin `/stats`: `name: value` lines sorted by name, then one line per histogram,
    /// `name: P0(interval,cumulative) P25(..) .. P100(..)` or `name: No recorded values`.
    pub fn render_text(&self, filter: Option<&Filter>, used_only: bool, types: StatTypes) -> String {
        let snapshot = self.snapshot(filter, used_only, types);
        let mut out = String::new();
        for (name, value) in self.numeric_stats(&snapshot, filter, used_only).sorted(&snapshot.names).iter() {
            let _ = writeln!(out, "{name}: {value}");
        }
        for (name, latch) in Self::shown_histograms(&snapshot, filter, used_only).sorted(&snapshot.names).iter() {
            let Some(latch) = latch else {
                let _ = writeln!(out, "{name}: No recorded values");
                continue;
            };
            let interval = latch.interval.quantiles();
            let cumulative = latch.cumulative.quantiles();
            let _ = write!(out, "{name}:");
            for ((label, i), c) in QUANTILE_LABELS.iter().zip(interval).zip(cumulative) {
                let _ = write!(out, " P{label}({},{})", format_double(i), format_double(c));
            }
            out.push('\n');
        }
        out
    }

    /// Admin `/stats?format=json`: `{"stats":[{"name":..,"value":..},..,{"histograms":
    /// {"supported_quantiles":[0,25,..,100],"computed_quantiles":[{"name":..,"values":
    /// [{"cumulative":..,"interval":..},..]}]}}]}`; the histograms entry only when one is shown.
    pub fn render_json(&self, filter: Option<&Filter>, used_only: bool, types: StatTypes) -> serde_json::Value {
        let snapshot = self.snapshot(filter, used_only, types);
        let mut stats: Vec<Value> = self
            .numeric_stats(&snapshot, filter, used_only)
            .sorted(&snapshot.names)
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        let computed: Vec<Value> = Self::shown_histograms(&snapshot, filter, used_only)
            .sorted(&snapshot.names)
            .iter()
            .map(|(name, latch)| {
                let latch = latch.unwrap_or_default();
                let values: Vec<Value> = latch
                    .cumulative
                    .quantiles()
                    .into_iter()
                    .zip(latch.interval.quantiles())
                    .map(|(c, i)| json!({"cumulative": json_number(c), "interval": json_number(i)}))
                    .collect();
                json!({"name": name, "values": values})
            })
            .collect();
        if !computed.is_empty() {
            let supported: Vec<Value> = SUPPORTED_QUANTILES.iter().map(|q| json_number(q * 100.0)).collect();
            stats.push(json!({"histograms": {"supported_quantiles": supported, "computed_quantiles": computed}}));
        }
        json!({ "stats": stats })
    }

    /// Admin `/stats/prometheus`, text format 0.0.4: per family `# TYPE envoy_<name> <type>`
    /// then `envoy_<name>{<tags>} <value>` (braces even without tags, counters without a
    /// `_total` suffix), histograms as `_bucket{..,le=".."}` per default bound and `+Inf`,
    /// `_sum` and `_count` from the cumulative view. Tags are extracted at every render, not
    /// kept: a kept extraction weighs ~200 bytes per stat (14 KiB per cluster at 10,000
    /// clusters, more than the cluster itself) and saved a tenth of a render's time.
    pub fn render_prometheus(&self, filter: Option<&Filter>, used_only: bool, types: StatTypes) -> String {
        let snapshot = self.snapshot(filter, used_only, types);
        let mut out = String::new();
        let mut writer = snapshot.names.writer();
        let mut listed = Listed::new();
        for &(name, index) in &snapshot.counters {
            if !used_only || counter_used(&self.arena, index) {
                listed.push(&mut writer, name, filter, index);
            }
        }
        let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let offsets = self.arena.offsets();
        for (name, &index) in listed.sorted(&snapshot.names).iter() {
            let tags = extract_tags(name);
            let value = counter_value_with(&self.arena, &offsets, index);
            let line = numeric_line(&tags.extracted_name, &tags.tags, value);
            families.entry(tags.extracted_name.clone()).or_default().push(line);
        }
        write_families(&mut out, families, "counter");

        let mut listed = Listed::new();
        for &(name, index) in &snapshot.gauges {
            if !used_only || gauge_used(&self.arena, index) {
                listed.push(&mut writer, name, filter, index);
            }
        }
        let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, &index) in listed.sorted(&snapshot.names).iter() {
            let tags = extract_tags(name);
            let line = numeric_line(&tags.extracted_name, &tags.tags, self.arena.sum(index));
            families.entry(tags.extracted_name.clone()).or_default().push(line);
        }
        write_families(&mut out, families, "gauge");

        let mut listed = Listed::new();
        for (name, _, latch) in &snapshot.histograms {
            if !used_only || latch.as_ref().is_some_and(PackedLatch::used) {
                listed.push(&mut writer, *name, filter, latch.clone());
            }
        }
        let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, latch) in listed.sorted(&snapshot.names).iter() {
            let tags = extract_tags(name);
            let latch = latch.as_ref().map(PackedLatch::unpack).unwrap_or_default();
            let lines = histogram_lines(&tags.extracted_name, &tags.tags, &latch);
            families.entry(tags.extracted_name.clone()).or_default().push(lines);
        }
        write_families(&mut out, families, "histogram");

        out
    }
}

fn write_families(out: &mut String, families: BTreeMap<String, Vec<String>>, kind: &str) {
    for (extracted_name, lines) in families {
        let _ = writeln!(out, "# TYPE {} {kind}", metric_name(&extracted_name));
        for line in lines {
            out.push_str(&line);
        }
    }
}

/// `envoy_` + the tag-extracted name with every character outside `[a-zA-Z0-9_]` as `_`.
fn metric_name(extracted_name: &str) -> String {
    format!("envoy_{}", sanitize_name(extracted_name))
}

fn sanitize_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Prometheus label value escaping: `\`, newline and `"`.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn formatted_tags(tags: &[Tag]) -> String {
    let mut out = String::new();
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}=\"{}\"", sanitize_name(tag.name), escape_value(&tag.value));
    }
    out
}

fn numeric_line(extracted_name: &str, tags: &[Tag], value: u64) -> String {
    format!("{}{{{}}} {value}\n", metric_name(extracted_name), formatted_tags(tags))
}

fn histogram_lines(extracted_name: &str, tags: &[Tag], latch: &HistogramLatch) -> String {
    let name = metric_name(extracted_name);
    let tags = formatted_tags(tags);
    let bucket_tags = if tags.is_empty() { String::new() } else { format!("{tags},") };
    let cumulative = &latch.cumulative;
    let mut out = String::new();
    for (bound, count) in BUCKET_BOUNDS.iter().zip(cumulative.cumulative_buckets()) {
        let _ = writeln!(out, "{name}_bucket{{{bucket_tags}le=\"{bound}\"}} {count}");
    }
    let count = cumulative.count();
    let _ = writeln!(out, "{name}_bucket{{{bucket_tags}le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{tags}}} {}", cumulative.sum);
    let _ = writeln!(out, "{name}_count{{{tags}}} {count}");
    out
}

/// fmt's `{}` for a double: shortest round-trip digits, `nan` for NaN.
fn format_double(value: f64) -> String {
    if value.is_nan() {
        "nan".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        value.to_string()
    }
}

/// A JSON number as Envoy's JSON streamer prints it: integers without `.0`, NaN as `null`.
fn json_number(value: f64) -> Value {
    if !value.is_finite() {
        Value::Null
    } else if value.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&value) {
        Value::from(value as u64)
    } else {
        Value::from(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store() -> Arc<Store> {
        let store = Store::new(2);
        store.counter("cluster.x.upstream_rq_2xx").add(5);
        store.counter("cluster.x.upstream_rq_200").add(4);
        store.counter("cluster.y.upstream_rq_2xx").add(1);
        store.counter("cluster.x.upstream_rq_retry");
        store.gauge("listener.0.0.0.0_10000.downstream_cx_active").set(2);
        store.counter("listener.0.0.0.0_10000.downstream_cx_total").add(3);
        store.counter("http.ingress.downstream_rq_5xx").inc();
        store.counter("tcp.ingress_tcp.downstream_cx_total").add(6);
        store.gauge("server.uptime").set(0);
        store
    }

    #[test]
    fn text_is_sorted_across_counters_and_gauges() {
        let text = store().render_text(None, false, crate::StatTypes::All);
        assert_eq!(
            text,
            "cluster.x.upstream_rq_200: 4\n\
             cluster.x.upstream_rq_2xx: 5\n\
             cluster.x.upstream_rq_retry: 0\n\
             cluster.y.upstream_rq_2xx: 1\n\
             http.ingress.downstream_rq_5xx: 1\n\
             listener.0.0.0.0_10000.downstream_cx_active: 2\n\
             listener.0.0.0.0_10000.downstream_cx_total: 3\n\
             server.uptime: 0\n\
             tcp.ingress_tcp.downstream_cx_total: 6\n"
        );
    }

    #[test]
    fn a_filter_anchored_at_the_start_shows_what_a_search_of_every_name_shows() {
        let store = store();
        let all = store.render_text(None, false, crate::StatTypes::All);
        for pattern in [
            "^cluster.x.",
            "^cluster\\.x\\.upstream_rq_2",
            "^cluster",
            "^cluster.",
            "^listener\\.0\\.0\\.0\\.0_10000\\.downstream_cx_(active|total)$",
            "^(http|tcp)\\.ingress",
            "^server.uptime$",
            "^cluster\\.xy",
            "^nothing",
        ] {
            let filter = Filter::new(pattern).unwrap();
            let searched: String = all
                .lines()
                .filter(|line| line.split(": ").next().is_some_and(|name| filter.is_match(name)))
                .map(|line| format!("{line}\n"))
                .collect();
            assert_eq!(store.render_text(Some(&filter), false, crate::StatTypes::All), searched, "{pattern}");
        }
        let filter = Filter::new("^cluster\\.y\\.").unwrap();
        assert_eq!(store.render_text(Some(&filter), false, crate::StatTypes::All), "cluster.y.upstream_rq_2xx: 1\n");
    }

    #[test]
    fn used_only_and_filter() {
        let store = store();
        let text = store.render_text(None, true, crate::StatTypes::All);
        assert!(!text.contains("upstream_rq_retry"), "never incremented: {text}");
        assert!(text.contains("server.uptime: 0"), "a set gauge is used even at 0: {text}");
        let filter = Filter::new("upstream_rq_2").unwrap();
        assert_eq!(
            store.render_text(Some(&filter), false, crate::StatTypes::All),
            "cluster.x.upstream_rq_200: 4\ncluster.x.upstream_rq_2xx: 5\ncluster.y.upstream_rq_2xx: 1\n"
        );
        store.reset_counters();
        assert!(
            store.render_text(None, true, crate::StatTypes::All).contains("cluster.x.upstream_rq_2xx: 0"),
            "reset keeps used"
        );
    }

    #[test]
    fn text_histograms() {
        let store = Store::new(1);
        store.counter("a").inc();
        let h = store.histogram("cluster.x.upstream_rq_time");
        store.histogram("cluster.x.upstream_cx_length_ms");
        for _ in 0..4 {
            h.record(10);
        }
        store.latch_histograms();
        store.latch_histograms();
        let text = store.render_text(None, false, crate::StatTypes::All);
        assert_eq!(
            text,
            "a: 1\n\
             cluster.x.upstream_cx_length_ms: No recorded values\n\
             cluster.x.upstream_rq_time: P0(nan,5) P25(nan,6.25) P50(nan,7.5) P75(nan,8.75) P90(nan,9.5) \
             P95(nan,9.75) P99(nan,9.95) P99.5(nan,9.975) P99.9(nan,9.995000000000001) P100(nan,10)\n"
        );
        assert!(!store.render_text(None, true, crate::StatTypes::All).contains("No recorded values"));
    }

    #[test]
    fn json_shape() {
        let store = Store::new(1);
        store.counter("b").add(2);
        store.gauge("a").set(1);
        assert_eq!(
            store.render_json(None, false, crate::StatTypes::All),
            json!({"stats": [{"name": "a", "value": 1}, {"name": "b", "value": 2}]})
        );
        let h = store.histogram("h");
        h.record(1);
        store.latch_histograms();
        let v = store.render_json(None, false, crate::StatTypes::All);
        let histograms = &v["stats"][2]["histograms"];
        assert_eq!(
            serde_json::to_string(&histograms["supported_quantiles"]).unwrap(),
            "[0,25,50,75,90,95,99,99.5,99.9,100]"
        );
        let computed = &histograms["computed_quantiles"][0];
        assert_eq!(computed["name"], "h");
        assert_eq!(computed["values"].as_array().unwrap().len(), 10);
        assert_eq!(serde_json::to_string(&computed["values"][0]).unwrap(), r#"{"cumulative":1,"interval":1}"#);
        store.latch_histograms();
        assert!(computed_interval_is_null(&store), "no samples in the last interval");
    }

    fn computed_interval_is_null(store: &Store) -> bool {
        store.render_json(None, false, crate::StatTypes::All)["stats"][2]["histograms"]["computed_quantiles"][0]
            ["values"][0]["interval"]
            .is_null()
    }

    #[test]
    fn prometheus_examples() {
        let store = store();
        let prom = store.render_prometheus(None, false, crate::StatTypes::All);
        for expected in [
            "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"x\"} 5\n",
            "envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"x\"} 4\n",
            "envoy_listener_downstream_cx_total{envoy_listener_address=\"0.0.0.0_10000\"} 3\n",
            "envoy_http_downstream_rq_xx{envoy_response_code_class=\"5\",envoy_http_conn_manager_prefix=\"ingress\"} 1\n",
            "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"ingress_tcp\"} 6\n",
            "envoy_server_uptime{} 0\n",
        ] {
            assert!(prom.contains(expected), "missing {expected:?} in:\n{prom}");
        }
        assert_eq!(
            prom,
            "# TYPE envoy_cluster_upstream_rq counter\n\
             envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"x\"} 4\n\
             # TYPE envoy_cluster_upstream_rq_retry counter\n\
             envoy_cluster_upstream_rq_retry{envoy_cluster_name=\"x\"} 0\n\
             # TYPE envoy_cluster_upstream_rq_xx counter\n\
             envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"x\"} 5\n\
             envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"y\"} 1\n\
             # TYPE envoy_http_downstream_rq_xx counter\n\
             envoy_http_downstream_rq_xx{envoy_response_code_class=\"5\",envoy_http_conn_manager_prefix=\"ingress\"} 1\n\
             # TYPE envoy_listener_downstream_cx_total counter\n\
             envoy_listener_downstream_cx_total{envoy_listener_address=\"0.0.0.0_10000\"} 3\n\
             # TYPE envoy_tcp_downstream_cx_total counter\n\
             envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"ingress_tcp\"} 6\n\
             # TYPE envoy_listener_downstream_cx_active gauge\n\
             envoy_listener_downstream_cx_active{envoy_listener_address=\"0.0.0.0_10000\"} 2\n\
             # TYPE envoy_server_uptime gauge\n\
             envoy_server_uptime{} 0\n"
        );
        assert!(!store.render_prometheus(None, true, crate::StatTypes::All).contains("upstream_rq_retry"));
        let filter = Filter::new("^tcp").unwrap();
        assert_eq!(
            store.render_prometheus(Some(&filter), false, crate::StatTypes::All),
            "# TYPE envoy_tcp_downstream_cx_total counter\n\
             envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"ingress_tcp\"} 6\n"
        );
    }

    #[test]
    fn stats_created_after_a_render_show_in_the_next() {
        let store = Store::new(1);
        store.counter("b.x").inc();
        assert_eq!(store.render_text(None, false, crate::StatTypes::All), "b.x: 1\n");
        store.counter("a.x");
        store.gauge("b.x").set(3);
        store.counter("b").add(2);
        assert_eq!(store.render_text(None, false, crate::StatTypes::All), "a.x: 0\nb: 2\nb.x: 1\nb.x: 3\n");
    }

    #[test]
    fn prometheus_histogram() {
        let store = Store::new(1);
        let h = store.histogram("cluster.x.upstream_cx_connect_ms");
        h.record(0);
        h.record(3);
        h.record(4_000_000);
        store.latch_histograms();
        let prom = store.render_prometheus(None, false, crate::StatTypes::All);
        let t = "envoy_cluster_name=\"x\"";
        let mut expected = String::from("# TYPE envoy_cluster_upstream_cx_connect_ms histogram\n");
        let counts = [1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];
        let bounds = [
            "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000", "60000",
            "300000", "600000", "1800000", "3600000",
        ];
        for (b, c) in bounds.iter().zip(counts) {
            expected.push_str(&format!("envoy_cluster_upstream_cx_connect_ms_bucket{{{t},le=\"{b}\"}} {c}\n"));
        }
        expected.push_str(&format!("envoy_cluster_upstream_cx_connect_ms_bucket{{{t},le=\"+Inf\"}} 3\n"));
        expected.push_str(&format!("envoy_cluster_upstream_cx_connect_ms_sum{{{t}}} 4000003\n"));
        expected.push_str(&format!("envoy_cluster_upstream_cx_connect_ms_count{{{t}}} 3\n"));
        assert_eq!(prom, expected);

        let store = Store::new(1);
        store.histogram("untagged").record(1);
        store.latch_histograms();
        let prom = store.render_prometheus(None, false, crate::StatTypes::All);
        assert!(prom.contains("envoy_untagged_bucket{le=\"0.5\"} 0\n"), "{prom}");
        assert!(prom.contains("envoy_untagged_sum{} 1\n"), "{prom}");
    }

    #[test]
    fn prometheus_escapes_label_values() {
        assert_eq!(escape_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(sanitize_name("envoy.cluster-name"), "envoy_cluster_name");
    }
}

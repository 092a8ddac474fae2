//! Outlier detection (Envoy's passive health checking): hosts whose responses fail are
//! ejected from load balancing for a while.
//!
//! Workers report each result of a host (`put_result`) into the host's atomics: consecutive
//! 5xx, gateway and local-origin failures eject at once (with the `enforcing_*` chance and
//! within `max_ejection_percent`). The main thread's sweep every `interval` un-ejects hosts
//! whose time is up (`base_ejection_time` × times ejected, capped by `max_ejection_time`, plus
//! jitter) and runs the success-rate and failure-percentage detectors over the interval's
//! counts. An ejection sets the host's `FAILED_OUTLIER_CHECK` flag and republishes the
//! cluster's hosts, so every worker's load balancer leaves the host out.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use legate_config::outlier_detection::OutlierDetection as OutlierDetectionConfig;
use legate_stats::Scope;

use super::host::health_flag;
use super::{Cluster, Host, HostSharedPtr};

legate_stats::stats! {
    pub struct OutlierDetectionStats {
        gauge ejections_active,
        counter ejections_overflow,
        counter ejections_enforced_total,
        counter ejections_enforced_consecutive_5xx,
        counter ejections_detected_consecutive_5xx,
        counter ejections_enforced_consecutive_gateway_failure,
        counter ejections_detected_consecutive_gateway_failure,
        counter ejections_enforced_consecutive_local_origin_failure,
        counter ejections_detected_consecutive_local_origin_failure,
        counter ejections_enforced_success_rate,
        counter ejections_detected_success_rate,
        counter ejections_enforced_failure_percentage,
        counter ejections_detected_failure_percentage,
        counter ejections_enforced_local_origin_success_rate,
        counter ejections_detected_local_origin_success_rate,
        counter ejections_enforced_local_origin_failure_percentage,
        counter ejections_detected_local_origin_failure_percentage,
        /// Deprecated in Envoy and still counted: ejections (enforced or not) by consecutive
        /// 5xx or success rate, and the detections of each.
        counter ejections_total,
        counter ejections_consecutive_5xx,
        counter ejections_success_rate,
    }
}

/// What happened to one request to a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlierResult {
    /// The upstream answered with this status.
    Http(u16),
    /// The connection could not be made (refused, connect timeout).
    LocalOriginConnectFailed,
    /// No answer in time (per-try or route timeout).
    LocalOriginTimeout,
    /// The upstream reset or closed the request.
    ExtOriginRequestFailed,
    /// The connection was made, and nothing more will be reported of it (tcp_proxy's
    /// sessions, which have no answer to report).
    LocalOriginConnectSuccessFinal,
}

/// A host's outlier state, updated by workers and the main thread's sweep.
pub struct HostOutlier {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local_origin: AtomicU32,
    /// This interval's requests and failures (for success rate and failure percentage).
    interval_total: AtomicU64,
    interval_failures: AtomicU64,
    /// With `split_external_local_origin_errors`: this interval's connection attempts and
    /// local-origin failures (connect failures, timeouts).
    interval_local_total: AtomicU64,
    interval_local_failures: AtomicU64,
    /// Milliseconds since the detector started at which the host was ejected; 0 when not.
    ejected_at_ms: AtomicU64,
    times_ejected: AtomicU32,
    /// The last success rates computed for the host (external, and local-origin with the
    /// split), in percent, as `f64` bits (for `/clusters`); NaN when not computed.
    success_rate: AtomicU64,
    local_origin_success_rate: AtomicU64,
}

/// An `f64` that the sweep writes and `/clusters` reads; NaN (not computed) to begin with.
fn rate_cell() -> AtomicU64 {
    AtomicU64::new(f64::NAN.to_bits())
}

fn read_rate(cell: &AtomicU64) -> Option<f64> {
    Some(f64::from_bits(cell.load(Ordering::Relaxed))).filter(|r| !r.is_nan())
}

impl Default for HostOutlier {
    fn default() -> Self {
        HostOutlier {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local_origin: AtomicU32::new(0),
            interval_total: AtomicU64::new(0),
            interval_failures: AtomicU64::new(0),
            interval_local_total: AtomicU64::new(0),
            interval_local_failures: AtomicU64::new(0),
            ejected_at_ms: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            success_rate: rate_cell(),
            local_origin_success_rate: rate_cell(),
        }
    }
}

impl HostOutlier {
    pub fn ejected(&self) -> bool {
        self.ejected_at_ms.load(Ordering::Relaxed) != 0
    }

    /// The success rate of the last interval that had enough requests, in percent.
    pub fn success_rate(&self) -> Option<f64> {
        read_rate(&self.success_rate)
    }

    /// The same of local-origin results (with `split_external_local_origin_errors`).
    pub fn local_origin_success_rate(&self) -> Option<f64> {
        read_rate(&self.local_origin_success_rate)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detector {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    SuccessRate,
    FailurePercentage,
    LocalOriginSuccessRate,
    LocalOriginFailurePercentage,
}

pub struct OutlierDetector {
    config: OutlierDetectionConfig,
    pub stats: OutlierDetectionStats,
    started: Instant,
    /// The last interval's success-rate mean and ejection threshold, external and
    /// local-origin (`/clusters` `outlier::success_rate_average` and the others); NaN when
    /// too few hosts had enough requests.
    success_rate_figures: [AtomicU64; 4],
}

impl OutlierDetector {
    pub fn new(config: &OutlierDetectionConfig, cluster_scope: &Scope) -> Self {
        OutlierDetector {
            config: config.clone(),
            stats: OutlierDetectionStats::new(&cluster_scope.scope("outlier_detection")),
            started: Instant::now(),
            success_rate_figures: std::array::from_fn(|_| rate_cell()),
        }
    }

    /// The last interval's success-rate mean and ejection threshold: `local_origin` for
    /// the local-origin detector's.
    pub fn success_rate_figures(&self, local_origin: bool) -> (Option<f64>, Option<f64>) {
        let at = if local_origin { 2 } else { 0 };
        (read_rate(&self.success_rate_figures[at]), read_rate(&self.success_rate_figures[at + 1]))
    }

    pub fn interval(&self) -> Duration {
        self.config.interval()
    }

    fn now_ms(&self) -> u64 {
        // Never 0: 0 means "not ejected".
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// A worker reports one result of `host`.
    pub fn put_result(&self, cluster: &Cluster, host: &Host, result: OutlierResult) {
        let o = host.outlier();
        let split = self.config.split_external_local_origin_errors;
        let code = match result {
            OutlierResult::Http(code) => code,
            OutlierResult::LocalOriginConnectFailed | OutlierResult::LocalOriginTimeout if split => {
                o.interval_local_total.fetch_add(1, Ordering::Relaxed);
                o.interval_local_failures.fetch_add(1, Ordering::Relaxed);
                let n = o.consecutive_local_origin.fetch_add(1, Ordering::Relaxed) + 1;
                if n == runtime_u32("consecutive_local_origin_failure", self.config.consecutive_local_origin_failure())
                {
                    // Reset at each detection, ejected or not, so that the next bout is seen
                    // too (Envoy's `onConsecutiveErrorWorker`).
                    o.consecutive_local_origin.store(0, Ordering::Relaxed);
                    self.eject(cluster, host, Detector::ConsecutiveLocalOriginFailure);
                }
                return;
            }
            OutlierResult::LocalOriginConnectSuccessFinal if split => {
                o.interval_local_total.fetch_add(1, Ordering::Relaxed);
                o.consecutive_local_origin.store(0, Ordering::Relaxed);
                return;
            }
            // Without the split, local-origin results count as the answers they stand for.
            OutlierResult::LocalOriginConnectSuccessFinal => 200,
            OutlierResult::LocalOriginConnectFailed => 503,
            OutlierResult::LocalOriginTimeout => 504,
            OutlierResult::ExtOriginRequestFailed => 503,
        };
        o.interval_total.fetch_add(1, Ordering::Relaxed);
        if split {
            // An answer (or a reset from the upstream) means the connection worked: a
            // local-origin success.
            o.interval_local_total.fetch_add(1, Ordering::Relaxed);
        }
        if code >= 500 {
            o.interval_failures.fetch_add(1, Ordering::Relaxed);
            let gateway = matches!(code, 502..=504);
            let gateway_count = if gateway {
                o.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                o.consecutive_gateway.store(0, Ordering::Relaxed);
                0
            };
            // Both detectors look at every 5xx (Envoy's `putHttpResponseCode`), and each
            // counter starts again at its detection, ejected or not.
            if gateway
                && gateway_count
                    == runtime_u32("consecutive_gateway_failure", self.config.consecutive_gateway_failure())
            {
                o.consecutive_gateway.store(0, Ordering::Relaxed);
                self.eject(cluster, host, Detector::ConsecutiveGatewayFailure);
            }
            let count = o.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
            if count == runtime_u32("consecutive_5xx", self.config.consecutive_5xx()) {
                o.consecutive_5xx.store(0, Ordering::Relaxed);
                self.eject(cluster, host, Detector::Consecutive5xx);
            }
        } else {
            o.consecutive_5xx.store(0, Ordering::Relaxed);
            o.consecutive_gateway.store(0, Ordering::Relaxed);
            if split {
                o.consecutive_local_origin.store(0, Ordering::Relaxed);
            }
        }
    }

    fn enforcing(&self, detector: Detector) -> u32 {
        let c = &self.config;
        match detector {
            Detector::Consecutive5xx => runtime_u32("enforcing_consecutive_5xx", c.enforcing_consecutive_5xx()),
            Detector::ConsecutiveGatewayFailure => {
                runtime_u32("enforcing_consecutive_gateway_failure", c.enforcing_consecutive_gateway_failure())
            }
            Detector::ConsecutiveLocalOriginFailure => runtime_u32(
                "enforcing_consecutive_local_origin_failure",
                c.enforcing_consecutive_local_origin_failure(),
            ),
            Detector::SuccessRate => runtime_u32("enforcing_success_rate", c.enforcing_success_rate()),
            Detector::FailurePercentage => {
                runtime_u32("enforcing_failure_percentage", c.enforcing_failure_percentage())
            }
            Detector::LocalOriginSuccessRate => {
                runtime_u32("enforcing_local_origin_success_rate", c.enforcing_local_origin_success_rate())
            }
            Detector::LocalOriginFailurePercentage => {
                runtime_u32("enforcing_failure_percentage_local_origin", c.enforcing_failure_percentage_local_origin())
            }
        }
    }

    fn eject(&self, cluster: &Cluster, host: &Host, detector: Detector) {
        let s = &self.stats;
        let (detected, enforced) = match detector {
            Detector::Consecutive5xx => (&s.ejections_detected_consecutive_5xx, &s.ejections_enforced_consecutive_5xx),
            Detector::ConsecutiveGatewayFailure => {
                (&s.ejections_detected_consecutive_gateway_failure, &s.ejections_enforced_consecutive_gateway_failure)
            }
            Detector::ConsecutiveLocalOriginFailure => (
                &s.ejections_detected_consecutive_local_origin_failure,
                &s.ejections_enforced_consecutive_local_origin_failure,
            ),
            Detector::SuccessRate => (&s.ejections_detected_success_rate, &s.ejections_enforced_success_rate),
            Detector::FailurePercentage => {
                (&s.ejections_detected_failure_percentage, &s.ejections_enforced_failure_percentage)
            }
            Detector::LocalOriginSuccessRate => {
                (&s.ejections_detected_local_origin_success_rate, &s.ejections_enforced_local_origin_success_rate)
            }
            Detector::LocalOriginFailurePercentage => (
                &s.ejections_detected_local_origin_failure_percentage,
                &s.ejections_enforced_local_origin_failure_percentage,
            ),
        };
        // Envoy's order: an ejected host is not detected again; the detection counts; past
        // `max_ejection_percent` it overflows; then the `enforcing_*` chance decides.
        if host.outlier().ejected() {
            return;
        }
        // A host the cluster no longer has is out of detection (Envoy drops its monitor).
        let Some(hosts) = hosts_with(cluster, host) else { return };
        detected.inc();
        match detector {
            Detector::Consecutive5xx => s.ejections_consecutive_5xx.inc(),
            Detector::SuccessRate => s.ejections_success_rate.inc(),
            _ => {}
        }
        let active = s.ejections_active.value();
        let over = hosts == 0
            || (active + 1) * 100
                > hosts * u64::from(runtime_u32("max_ejection_percent", self.config.max_ejection_percent()));
        if over && !(self.config.always_eject_one_host && active == 0) {
            s.ejections_overflow.inc();
            return;
        }
        if matches!(detector, Detector::Consecutive5xx | Detector::SuccessRate) {
            s.ejections_total.inc();
        }
        if fastrand::u32(0..100) >= self.enforcing(detector) {
            return;
        }
        let o = host.outlier();
        if o.ejected_at_ms.compare_exchange(0, self.now_ms(), Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return; // Another worker ejected it meanwhile.
        }
        o.times_ejected.fetch_add(1, Ordering::Relaxed);
        o.consecutive_5xx.store(0, Ordering::Relaxed);
        o.consecutive_gateway.store(0, Ordering::Relaxed);
        o.consecutive_local_origin.store(0, Ordering::Relaxed);
        host.set_health_flag(health_flag::FAILED_OUTLIER_CHECK, true);
        s.ejections_active.inc();
        s.ejections_enforced_total.inc();
        enforced.inc();
        tracing::info!(cluster = %cluster.name, host = %host.address(), ?detector, "outlier detection: host ejected");
        // Removed meanwhile: `on_hosts_removed` may have looked before the ejection; whichever
        // of the two takes the ejection back counts it out.
        if hosts_with(cluster, host).is_none() {
            self.uneject(cluster, host, "host removed");
        }
        cluster.refresh_health();
    }

    /// Hosts that left the cluster (EDS, DNS) leave detection, as Envoy's member-update
    /// callback does: an ejected one no longer counts in `ejections_active`, and the sweep,
    /// which walks the cluster's hosts, would never have returned it.
    pub fn on_hosts_removed<'a>(&self, cluster: &Cluster, removed: impl Iterator<Item = &'a HostSharedPtr>) {
        for host in removed {
            self.uneject(cluster, host, "host removed");
        }
    }

    /// Returns an ejected host to service; `false` when it was not ejected.
    fn uneject(&self, cluster: &Cluster, host: &Host, why: &str) -> bool {
        if host.outlier().ejected_at_ms.swap(0, Ordering::AcqRel) == 0 {
            return false;
        }
        host.set_health_flag(health_flag::FAILED_OUTLIER_CHECK, false);
        self.stats.ejections_active.dec();
        tracing::info!(cluster = %cluster.name, host = %host.address(), why, "outlier detection: host returned");
        true
    }

    /// An active health check of `host` passed: with `successful_active_health_check_uneject_host`
    /// (default true) Envoy returns an ejected host to service at once, trusting the check
    /// over the traffic. A host that fails real traffic but passes its checks therefore needs
    /// the option off to stay ejected.
    pub fn on_active_health_check_passed(&self, cluster: &Cluster, host: &Host) {
        if self.config.successful_active_health_check_uneject_host.unwrap_or(true)
            && host.health_flags() & health_flag::FAILED_ACTIVE_HC == 0
            && self.uneject(cluster, host, "active health check passed")
        {
            cluster.refresh_health();
        }
    }

    /// The main thread's sweep, every `interval`.
    pub fn sweep(&self, cluster: &Cluster) {
        let hosts: Vec<HostSharedPtr> = cluster.priority_set().all_hosts().cloned().collect();
        let now = self.now_ms();
        let base = runtime_ms("base_ejection_time_ms", self.config.base_ejection_time());
        let mut changed = false;
        for host in &hosts {
            let o = host.outlier();
            let at = o.ejected_at_ms.load(Ordering::Relaxed);
            if at == 0 {
                // A host healthy for a whole interval earns back one ejection step.
                let _ = o.times_ejected.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                continue;
            }
            let times = o.times_ejected.load(Ordering::Relaxed).max(1);
            let mut duration =
                base.saturating_mul(times).min(runtime_ms("max_ejection_time_ms", self.config.max_ejection_time()));
            let jitter = self.config.max_ejection_time_jitter();
            if !jitter.is_zero() {
                duration += Duration::from_millis(fastrand::u64(0..=jitter.as_millis() as u64));
            }
            if now.saturating_sub(at) >= duration.as_millis() as u64 {
                changed |= self.uneject(cluster, host, "ejection time passed");
            }
        }
        // The interval's counts, per host: (host, requests, failures).
        let counts: Vec<(&HostSharedPtr, u64, u64)> = hosts
            .iter()
            .map(|h| {
                let total = h.outlier().interval_total.swap(0, Ordering::Relaxed);
                let failures = h.outlier().interval_failures.swap(0, Ordering::Relaxed);
                (h, total, failures)
            })
            .collect();
        self.success_rate(cluster, &counts, Detector::SuccessRate);
        self.failure_percentage(cluster, &counts, Detector::FailurePercentage);
        if self.config.split_external_local_origin_errors {
            let local: Vec<(&HostSharedPtr, u64, u64)> = hosts
                .iter()
                .map(|h| {
                    let total = h.outlier().interval_local_total.swap(0, Ordering::Relaxed);
                    let failures = h.outlier().interval_local_failures.swap(0, Ordering::Relaxed);
                    (h, total, failures)
                })
                .collect();
            self.success_rate(cluster, &local, Detector::LocalOriginSuccessRate);
            self.failure_percentage(cluster, &local, Detector::LocalOriginFailurePercentage);
        }
        if changed {
            cluster.refresh_health();
        }
    }

    /// The success-rate detector over one interval's counts (external, or local-origin with
    /// the split); `/clusters` shows the rates, mean and threshold it leaves.
    fn success_rate(&self, cluster: &Cluster, counts: &[(&HostSharedPtr, u64, u64)], detector: Detector) {
        let volume = u64::from(runtime_u32("success_rate_request_volume", self.config.success_rate_request_volume()));
        let rates: Vec<(&HostSharedPtr, f64)> = counts
            .iter()
            .filter(|(_, total, _)| *total >= volume && *total > 0)
            .map(|(h, total, failures)| (*h, 100.0 * (total - failures) as f64 / *total as f64))
            .collect();
        let local = detector == Detector::LocalOriginSuccessRate;
        for (host, rate) in &rates {
            let o = host.outlier();
            let cell = if local { &o.local_origin_success_rate } else { &o.success_rate };
            cell.store(rate.to_bits(), Ordering::Relaxed);
        }
        // Envoy resets the figures each interval; they stay unknown below the minimum hosts.
        let figures = &self.success_rate_figures[if local { 2..4 } else { 0..2 }];
        figures.iter().for_each(|f| f.store(f64::NAN.to_bits(), Ordering::Relaxed));
        if rates.len() < runtime_u32("success_rate_minimum_hosts", self.config.success_rate_minimum_hosts()) as usize
            || rates.is_empty()
        {
            return;
        }
        let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / rates.len() as f64;
        let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        let threshold = mean
            - variance.sqrt()
                * f64::from(runtime_u32("success_rate_stdev_factor", self.config.success_rate_stdev_factor()))
                / 1000.0;
        if let [average, ejection_threshold] = figures {
            average.store(mean.to_bits(), Ordering::Relaxed);
            ejection_threshold.store(threshold.to_bits(), Ordering::Relaxed);
        }
        for (host, rate) in rates {
            if rate < threshold && !host.outlier().ejected() {
                self.eject(cluster, host, detector);
            }
        }
    }

    fn failure_percentage(&self, cluster: &Cluster, counts: &[(&HostSharedPtr, u64, u64)], detector: Detector) {
        let volume = u64::from(runtime_u32(
            "failure_percentage_request_volume",
            self.config.failure_percentage_request_volume(),
        ));
        let eligible: Vec<(&HostSharedPtr, f64)> = counts
            .iter()
            .filter(|(_, total, _)| *total >= volume && *total > 0)
            .map(|(h, total, failures)| (*h, 100.0 * *failures as f64 / *total as f64))
            .collect();
        if eligible.len()
            < runtime_u32("failure_percentage_minimum_hosts", self.config.failure_percentage_minimum_hosts()) as usize
        {
            return;
        }
        let threshold =
            f64::from(runtime_u32("failure_percentage_threshold", self.config.failure_percentage_threshold()));
        for (host, failure) in eligible {
            if failure >= threshold && !host.outlier().ejected() {
                self.eject(cluster, host, detector);
            }
        }
    }
}

/// The number of the cluster's hosts, `None` when `host` is not one of them.
fn hosts_with(cluster: &Cluster, host: &Host) -> Option<u64> {
    let mut count = 0;
    let mut present = false;
    for h in cluster.priority_set().all_hosts() {
        count += 1;
        present |= std::ptr::eq(HostSharedPtr::as_ptr(h), host);
    }
    present.then_some(count)
}

/// Runs a cluster's sweeps on the main thread until the process ends.
pub async fn run(cluster: Arc<Cluster>) {
    let Some(detector) = cluster.outlier_detector() else { return };
    loop {
        // Armed again each time, with the runtime's `outlier_detection.interval_ms` if set.
        let interval = runtime_ms("interval_ms", detector.interval()).max(Duration::from_millis(1));
        tokio::time::sleep(interval).await;
        detector.sweep(&cluster);
    }
}

/// The runtime's `outlier_detection.<name>` over the config's value, as Envoy's detector
/// reads each setting when it uses it.
fn runtime_u32(name: &str, configured: u32) -> u32 {
    if !crate::runtime::has_values() {
        return configured;
    }
    let value = crate::runtime::integer(&format!("outlier_detection.{name}"), u64::from(configured));
    u32::try_from(value).unwrap_or(configured)
}

/// A duration setting, in milliseconds in the runtime.
fn runtime_ms(name: &str, configured: Duration) -> Duration {
    if !crate::runtime::has_values() {
        return configured;
    }
    let configured_ms = u64::try_from(configured.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(crate::runtime::integer(&format!("outlier_detection.{name}"), configured_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(outlier: serde_json::Value) -> Cluster {
        cluster_in(&legate_stats::Store::new(1), outlier)
    }

    fn cluster_in(store: &Arc<legate_stats::Store>, outlier: serde_json::Value) -> Cluster {
        let endpoints: Vec<_> = (1..=4)
            .map(|p| serde_json::json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
            .collect();
        let config: legate_config::cluster::Cluster = legate_config::path::from_value(serde_json::json!({
            "name": "c",
            "outlier_detection": outlier,
            "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": endpoints}]},
        }))
        .unwrap();
        Cluster::new(config, &store.scope("cluster.c")).unwrap()
    }

    fn host(c: &Cluster, i: usize) -> HostSharedPtr {
        c.priority_set().all_hosts().nth(i).unwrap().clone()
    }

    #[test]
    fn consecutive_5xx_ejects_and_a_success_resets_the_count() {
        let c = cluster(serde_json::json!({"consecutive_5xx": 3, "max_ejection_percent": 50}));
        let d = c.outlier_detector().unwrap();
        let h = host(&c, 0);
        for code in [503, 500, 200, 503, 502] {
            d.put_result(&c, &h, OutlierResult::Http(code));
        }
        assert!(!h.outlier().ejected(), "the 200 reset the streak");
        d.put_result(&c, &h, OutlierResult::Http(500));
        assert!(h.outlier().ejected());
        assert!(!h.healthy());
        assert_eq!(d.stats.ejections_enforced_consecutive_5xx.value(), 1);
        assert_eq!(d.stats.ejections_active.value(), 1);
        assert_eq!(c.priority_set().host_sets[0].healthy_hosts().len(), 3, "workers see it gone");
    }

    /// Each bout of consecutive errors is a detection, ejected or not (the counter starts again
    /// at each); a 5xx that is a gateway error feeds both detectors; the deprecated counters
    /// follow Envoy's.
    #[test]
    fn every_bout_is_detected_and_gateway_errors_feed_both_detectors() {
        let c = cluster(serde_json::json!({
            "consecutive_5xx": 3, "consecutive_gateway_failure": 3,
            "enforcing_consecutive_5xx": 0, "enforcing_consecutive_gateway_failure": 0, "max_ejection_percent": 100
        }));
        let d = c.outlier_detector().unwrap();
        let h = host(&c, 0);
        for _ in 0..9 {
            d.put_result(&c, &h, OutlierResult::Http(503));
        }
        assert!(!h.outlier().ejected(), "not enforced");
        assert_eq!(d.stats.ejections_detected_consecutive_5xx.value(), 3);
        assert_eq!(d.stats.ejections_detected_consecutive_gateway_failure.value(), 3);
        assert_eq!(d.stats.ejections_consecutive_5xx.value(), 3);
        assert_eq!(d.stats.ejections_total.value(), 3, "past the overflow check, enforced or not");
        assert_eq!(d.stats.ejections_enforced_total.value(), 0);
    }

    /// A host that leaves the cluster ejected no longer counts in `ejections_active`, and a
    /// late result for it detects nothing.
    #[test]
    fn a_removed_host_leaves_detection() {
        let c = cluster(serde_json::json!({"consecutive_5xx": 1, "max_ejection_percent": 100}));
        let d = c.outlier_detector().unwrap();
        let (gone, stays) = (host(&c, 0), host(&c, 1));
        d.put_result(&c, &gone, OutlierResult::Http(503));
        assert_eq!(d.stats.ejections_active.value(), 1);
        let endpoints: Vec<_> = (2..=4)
            .map(|p| serde_json::json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
            .collect();
        let assignment = legate_config::path::from_value(
            serde_json::json!({"cluster_name": "c", "endpoints": [{"lb_endpoints": endpoints}]}),
        )
        .unwrap();
        c.apply_load_assignment(&assignment);
        assert_eq!(c.priority_set().all_hosts().count(), 3);
        assert_eq!(d.stats.ejections_active.value(), 0);
        assert!(!gone.outlier().ejected());
        d.put_result(&c, &gone, OutlierResult::Http(503));
        assert_eq!(d.stats.ejections_active.value(), 0);
        assert_eq!(d.stats.ejections_detected_consecutive_5xx.value(), 1, "the removed host is not detected");
        d.put_result(&c, &stays, OutlierResult::Http(503));
        assert_eq!(d.stats.ejections_active.value(), 1);
    }

    #[test]
    fn a_replaced_cluster_takes_its_ejections_with_it() {
        let store = legate_stats::Store::new(1);
        let outlier = serde_json::json!({"consecutive_5xx": 1, "max_ejection_percent": 100});
        let c = cluster_in(&store, outlier.clone());
        c.outlier_detector().unwrap().put_result(&c, &host(&c, 0), OutlierResult::Http(503));
        assert_eq!(c.outlier_detector().unwrap().stats.ejections_active.value(), 1);
        drop(c);
        let again = cluster_in(&store, outlier);
        assert_eq!(again.outlier_detector().unwrap().stats.ejections_active.value(), 0);
    }

    #[test]
    fn max_ejection_percent_overflows() {
        let c = cluster(serde_json::json!({"consecutive_5xx": 1, "max_ejection_percent": 25}));
        let d = c.outlier_detector().unwrap();
        d.put_result(&c, &host(&c, 0), OutlierResult::Http(503));
        d.put_result(&c, &host(&c, 1), OutlierResult::Http(503));
        assert_eq!(d.stats.ejections_active.value(), 1);
        assert_eq!(d.stats.ejections_overflow.value(), 1);
        assert!(host(&c, 0).outlier().ejected() && !host(&c, 1).outlier().ejected());
    }

    #[test]
    fn the_sweep_returns_a_host_after_its_ejection_time() {
        let c = cluster(
            serde_json::json!({"consecutive_5xx": 1, "base_ejection_time": "0.05s", "max_ejection_percent": 100}),
        );
        let d = c.outlier_detector().unwrap();
        let h = host(&c, 2);
        d.put_result(&c, &h, OutlierResult::LocalOriginConnectFailed);
        assert!(h.outlier().ejected(), "without the split, a connect failure counts as a 503");
        d.sweep(&c);
        assert!(h.outlier().ejected(), "not yet");
        std::thread::sleep(Duration::from_millis(80));
        d.sweep(&c);
        assert!(!h.outlier().ejected() && h.healthy());
        assert_eq!(d.stats.ejections_active.value(), 0);
    }

    #[test]
    fn success_rate_ejects_the_outlier() {
        let c = cluster(serde_json::json!({
            "success_rate_minimum_hosts": 4, "success_rate_request_volume": 10, "max_ejection_percent": 100,
            "success_rate_stdev_factor": 1000,
            "consecutive_5xx": 1000
        }));
        let d = c.outlier_detector().unwrap();
        for i in 0..4 {
            let h = host(&c, i);
            for n in 0..100 {
                let failing = i == 3 && n % 2 == 0;
                d.put_result(&c, &h, OutlierResult::Http(if failing { 500 } else { 200 }));
            }
        }
        d.sweep(&c);
        assert!(host(&c, 3).outlier().ejected());
        assert_eq!(host(&c, 3).outlier().success_rate(), Some(50.0));
        assert!(!host(&c, 0).outlier().ejected());
        assert_eq!(d.stats.ejections_enforced_success_rate.value(), 1);
        // Rates 100, 100, 100, 50: mean 87.5, stdev 21.65, threshold at one stdev.
        let (mean, threshold) = d.success_rate_figures(false);
        assert_eq!(mean, Some(87.5));
        assert!(threshold.is_some_and(|t| (t - 65.849).abs() < 0.01), "{threshold:?}");
        assert_eq!(d.success_rate_figures(true), (None, None));
    }

    #[test]
    fn split_mode_keeps_local_origin_failures_apart_with_their_own_detectors() {
        let c = cluster(serde_json::json!({
            "split_external_local_origin_errors": true,
            "consecutive_5xx": 1000, "consecutive_local_origin_failure": 1000, "consecutive_gateway_failure": 1000,
            "failure_percentage_minimum_hosts": 4, "failure_percentage_request_volume": 10,
            "failure_percentage_threshold": 40,
            "enforcing_failure_percentage": 100, "enforcing_failure_percentage_local_origin": 100,
            "max_ejection_percent": 100
        }));
        let d = c.outlier_detector().unwrap();
        for i in 0..4 {
            let h = host(&c, i);
            for n in 0..20 {
                let result = match (i, n % 2) {
                    // Host 3 times out half the time: local origin.
                    (3, 0) => OutlierResult::LocalOriginTimeout,
                    // Host 2 answers 500 half the time: external.
                    (2, 0) => OutlierResult::Http(500),
                    _ => OutlierResult::Http(200),
                };
                d.put_result(&c, &h, result);
            }
        }
        d.sweep(&c);
        assert!(host(&c, 2).outlier().ejected() && host(&c, 3).outlier().ejected());
        assert!(!host(&c, 0).outlier().ejected());
        assert_eq!(d.stats.ejections_enforced_failure_percentage.value(), 1, "host 2, on 5xx");
        assert_eq!(d.stats.ejections_enforced_local_origin_failure_percentage.value(), 1, "host 3, on timeouts");
        // The timeouts never counted as 5xx: the external detector saw host 2 only.
        assert_eq!(d.stats.ejections_detected_failure_percentage.value(), 1);
    }
}

//! `envoy.config.cluster.v3.OutlierDetection`: passive health checking, with Envoy's defaults.

use serde::Deserialize;

use crate::duration::Duration;
use crate::unsupported::Unsupported;
use crate::validate::Validator;

/// `envoy.config.cluster.v3.OutlierDetection`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx before ejection (default 5).
    pub consecutive_5xx: Option<u32>,
    /// Time between ejection sweeps (default 10 s).
    pub interval: Option<Duration>,
    /// Ejection time, multiplied by the times a host was ejected (default 30 s).
    pub base_ejection_time: Option<Duration>,
    /// Most hosts ejected at once, in percent (default 10).
    pub max_ejection_percent: Option<u32>,
    /// Chance an ejection detected by consecutive 5xx is enforced, in percent (default 100).
    pub enforcing_consecutive_5xx: Option<u32>,
    /// Default 100.
    pub enforcing_success_rate: Option<u32>,
    /// Default 5.
    pub success_rate_minimum_hosts: Option<u32>,
    /// Default 100.
    pub success_rate_request_volume: Option<u32>,
    /// Ejected below mean − stdev × (factor / 1000) (default 1900).
    pub success_rate_stdev_factor: Option<u32>,
    /// Consecutive 502/503/504 (and local-origin failures) before ejection (default 5).
    pub consecutive_gateway_failure: Option<u32>,
    /// Default 0: detected, not enforced.
    pub enforcing_consecutive_gateway_failure: Option<u32>,
    #[serde(default)]
    pub split_external_local_origin_errors: bool,
    /// Default 5.
    pub consecutive_local_origin_failure: Option<u32>,
    /// Default 100.
    pub enforcing_consecutive_local_origin_failure: Option<u32>,
    /// Default 100.
    pub enforcing_local_origin_success_rate: Option<u32>,
    /// Default 85.
    pub failure_percentage_threshold: Option<u32>,
    /// Default 0.
    pub enforcing_failure_percentage: Option<u32>,
    /// Default 0.
    pub enforcing_failure_percentage_local_origin: Option<u32>,
    /// Default 5.
    pub failure_percentage_minimum_hosts: Option<u32>,
    /// Default 50.
    pub failure_percentage_request_volume: Option<u32>,
    /// Longest ejection (default 300 s, at least `base_ejection_time`).
    pub max_ejection_time: Option<Duration>,
    /// Random extra ejection time, up to this (default 0).
    pub max_ejection_time_jitter: Option<Duration>,
    /// Default true.
    pub successful_active_health_check_uneject_host: Option<bool>,
    pub monitors: Option<Unsupported>,
    #[serde(default)]
    pub always_eject_one_host: bool,
    pub detector_tuning: Option<Unsupported>,
}

impl OutlierDetection {
    pub fn consecutive_5xx(&self) -> u32 {
        self.consecutive_5xx.unwrap_or(5)
    }
    pub fn interval(&self) -> std::time::Duration {
        self.interval.map_or(std::time::Duration::from_secs(10), |d| d.0)
    }
    pub fn base_ejection_time(&self) -> std::time::Duration {
        self.base_ejection_time.map_or(std::time::Duration::from_secs(30), |d| d.0)
    }
    pub fn max_ejection_percent(&self) -> u32 {
        self.max_ejection_percent.unwrap_or(10)
    }
    pub fn enforcing_consecutive_5xx(&self) -> u32 {
        self.enforcing_consecutive_5xx.unwrap_or(100)
    }
    pub fn enforcing_success_rate(&self) -> u32 {
        self.enforcing_success_rate.unwrap_or(100)
    }
    pub fn success_rate_minimum_hosts(&self) -> u32 {
        self.success_rate_minimum_hosts.unwrap_or(5)
    }
    pub fn success_rate_request_volume(&self) -> u32 {
        self.success_rate_request_volume.unwrap_or(100)
    }
    pub fn success_rate_stdev_factor(&self) -> u32 {
        self.success_rate_stdev_factor.unwrap_or(1900)
    }
    pub fn consecutive_gateway_failure(&self) -> u32 {
        self.consecutive_gateway_failure.unwrap_or(5)
    }
    pub fn enforcing_consecutive_gateway_failure(&self) -> u32 {
        self.enforcing_consecutive_gateway_failure.unwrap_or(0)
    }
    pub fn consecutive_local_origin_failure(&self) -> u32 {
        self.consecutive_local_origin_failure.unwrap_or(5)
    }
    pub fn enforcing_consecutive_local_origin_failure(&self) -> u32 {
        self.enforcing_consecutive_local_origin_failure.unwrap_or(100)
    }
    pub fn failure_percentage_threshold(&self) -> u32 {
        self.failure_percentage_threshold.unwrap_or(85)
    }
    pub fn enforcing_local_origin_success_rate(&self) -> u32 {
        self.enforcing_local_origin_success_rate.unwrap_or(100)
    }
    pub fn enforcing_failure_percentage_local_origin(&self) -> u32 {
        self.enforcing_failure_percentage_local_origin.unwrap_or(0)
    }
    pub fn enforcing_failure_percentage(&self) -> u32 {
        self.enforcing_failure_percentage.unwrap_or(0)
    }
    pub fn failure_percentage_minimum_hosts(&self) -> u32 {
        self.failure_percentage_minimum_hosts.unwrap_or(5)
    }
    pub fn failure_percentage_request_volume(&self) -> u32 {
        self.failure_percentage_request_volume.unwrap_or(50)
    }
    pub fn max_ejection_time(&self) -> std::time::Duration {
        self.max_ejection_time.map_or(std::time::Duration::from_secs(300), |d| d.0).max(self.base_ejection_time())
    }
    pub fn max_ejection_time_jitter(&self) -> std::time::Duration {
        self.max_ejection_time_jitter.map_or(std::time::Duration::ZERO, |d| d.0)
    }

    pub(crate) fn validate(&self, at: &str, v: &mut Validator) {
        if self.interval.is_some_and(|d| d.is_zero()) {
            v.error(&format!("{at}.interval"), "value must be greater than 0s");
        }
        if self.base_ejection_time.is_some_and(|d| d.is_zero()) {
            v.error(&format!("{at}.base_ejection_time"), "value must be greater than 0s");
        }
        let percents = [
            ("max_ejection_percent", self.max_ejection_percent),
            ("enforcing_consecutive_5xx", self.enforcing_consecutive_5xx),
            ("enforcing_success_rate", self.enforcing_success_rate),
            ("enforcing_consecutive_gateway_failure", self.enforcing_consecutive_gateway_failure),
            ("enforcing_consecutive_local_origin_failure", self.enforcing_consecutive_local_origin_failure),
            ("enforcing_local_origin_success_rate", self.enforcing_local_origin_success_rate),
            ("failure_percentage_threshold", self.failure_percentage_threshold),
            ("enforcing_failure_percentage", self.enforcing_failure_percentage),
            ("enforcing_failure_percentage_local_origin", self.enforcing_failure_percentage_local_origin),
        ];
        for (field, value) in percents {
            if value.is_some_and(|p| p > 100) {
                v.error(&format!("{at}.{field}"), "value must be less than or equal to 100");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_defaults() {
        let o = OutlierDetection::default();
        assert_eq!(o.consecutive_5xx(), 5);
        assert_eq!(o.interval(), std::time::Duration::from_secs(10));
        assert_eq!(o.base_ejection_time(), std::time::Duration::from_secs(30));
        assert_eq!(o.max_ejection_percent(), 10);
        assert_eq!(o.enforcing_consecutive_gateway_failure(), 0);
        assert_eq!(o.max_ejection_time(), std::time::Duration::from_secs(300));
    }
}

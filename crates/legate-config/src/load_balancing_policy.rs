//! `Cluster.load_balancing_policy`: the typed-extension form of the load balancers
//! (`envoy.extensions.load_balancing_policies.*`). Envoy takes the first policy of the list
//! that it implements; legate does the same, and writes the chosen one into the classic fields
//! (`lb_policy`, `*_lb_config`, `common_lb_config`), so the data plane sees one model whichever
//! form the user wrote.

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::{
    Cluster, ConsistentHashingLbConfig, HashFunction, LbPolicy, LeastRequestLbConfig, LocalityWeightedLbConfig,
    MaglevLbConfig, RingHashLbConfig, RoundRobinLbConfig, SlowStartConfig,
};
use crate::core::RuntimeDouble;
use crate::extensions::{self, Extension};
use crate::path::{self, PathError};
use crate::unsupported::Unsupported;

/// `envoy.config.cluster.v3.LoadBalancingPolicy`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancingPolicy {
    #[serde(default)]
    pub policies: Vec<Policy>,
}

/// `LoadBalancingPolicy.Policy`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub typed_extension_config: Option<TypedExtensionConfig>,
}

/// `envoy.config.core.v3.TypedExtensionConfig`, kept raw until a policy is chosen.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TypedExtensionConfig {
    #[serde(default)]
    pub name: String,
    pub typed_config: Option<Value>,
}

/// The policies legate implements, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum LbPolicyConfig {
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    Random(Random),
    RingHash(RingHash),
    Maglev(Maglev),
}

pub static LB_POLICIES: &[Extension<LbPolicyConfig>] = &[
    Extension {
        name: "envoy.load_balancing_policies.round_robin",
        type_url: "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
        parse: |v| path::from_value(v).map(LbPolicyConfig::RoundRobin),
    },
    Extension {
        name: "envoy.load_balancing_policies.least_request",
        type_url: "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
        parse: |v| path::from_value(v).map(LbPolicyConfig::LeastRequest),
    },
    Extension {
        name: "envoy.load_balancing_policies.random",
        type_url: "envoy.extensions.load_balancing_policies.random.v3.Random",
        parse: |v| path::from_value(v).map(LbPolicyConfig::Random),
    },
    Extension {
        name: "envoy.load_balancing_policies.ring_hash",
        type_url: "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",
        parse: |v| path::from_value(v).map(LbPolicyConfig::RingHash),
    },
    Extension {
        name: "envoy.load_balancing_policies.maglev",
        type_url: "envoy.extensions.load_balancing_policies.maglev.v3.Maglev",
        parse: |v| path::from_value(v).map(LbPolicyConfig::Maglev),
    },
];

/// `envoy.extensions.load_balancing_policies.common.v3.LocalityLbConfig`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalityLbConfig {
    pub zone_aware_lb_config: Option<Unsupported>,
    pub locality_weighted_lb_config: Option<LocalityWeightedLbConfig>,
}

/// `...round_robin.v3.RoundRobin`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoundRobin {
    pub slow_start_config: Option<SlowStartConfig>,
    pub locality_lb_config: Option<LocalityLbConfig>,
}

/// `...least_request.v3.LeastRequest`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeastRequest {
    pub choice_count: Option<u32>,
    pub active_request_bias: Option<RuntimeDouble>,
    pub slow_start_config: Option<SlowStartConfig>,
    pub locality_lb_config: Option<LocalityLbConfig>,
    pub enable_full_scan: Option<Unsupported>,
    pub selection_method: Option<Unsupported>,
}

/// `...random.v3.Random`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Random {
    pub locality_lb_config: Option<LocalityLbConfig>,
}

/// `...ring_hash.v3.RingHash`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RingHash {
    #[serde(default)]
    pub hash_function: HashFunction,
    pub minimum_ring_size: Option<u64>,
    pub maximum_ring_size: Option<u64>,
    #[serde(default)]
    pub use_hostname_for_hashing: bool,
    pub hash_balance_factor: Option<u32>,
    pub consistent_hashing_lb_config: Option<ConsistentHashingLbConfig>,
    pub locality_weighted_lb_config: Option<LocalityWeightedLbConfig>,
}

/// `...maglev.v3.Maglev`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Maglev {
    pub table_size: Option<u64>,
    pub consistent_hashing_lb_config: Option<ConsistentHashingLbConfig>,
    pub locality_weighted_lb_config: Option<LocalityWeightedLbConfig>,
}

impl LoadBalancingPolicy {
    /// The first policy legate implements, parsed; an error names the policy's path when none
    /// is implemented or the chosen one is malformed.
    pub fn choose(&self) -> Result<LbPolicyConfig, PathError> {
        for (i, policy) in self.policies.iter().enumerate() {
            let Some(ext) = &policy.typed_extension_config else { continue };
            if !extensions::is_registered(LB_POLICIES, &ext.name, ext.typed_config.as_ref()) {
                continue;
            }
            return extensions::resolve(LB_POLICIES, "load balancing policy", &ext.name, ext.typed_config.clone())
                .map_err(|e| PathError {
                    path: path::join(&format!("policies[{i}].typed_extension_config"), &e.path),
                    message: e.message,
                });
        }
        Err(PathError {
            path: "policies".into(),
            message: "none of the policies is implemented by legate (round_robin, least_request, random, \
                      ring_hash and maglev are)"
                .into(),
        })
    }
}

/// Writes the typed policy into the classic fields the data plane reads.
pub(crate) fn apply(cluster: &mut Cluster, policy: LbPolicyConfig) {
    let locality = |l: Option<LocalityLbConfig>| l.and_then(|l| l.locality_weighted_lb_config);
    match policy {
        LbPolicyConfig::RoundRobin(rr) => {
            cluster.lb_policy = LbPolicy::RoundRobin;
            cluster.round_robin_lb_config =
                Some(Box::new(RoundRobinLbConfig { slow_start_config: rr.slow_start_config }));
            cluster.common_lb_config.locality_weighted_lb_config = locality(rr.locality_lb_config);
        }
        LbPolicyConfig::LeastRequest(lr) => {
            cluster.lb_policy = LbPolicy::LeastRequest;
            cluster.least_request_lb_config = Some(Box::new(LeastRequestLbConfig {
                choice_count: lr.choice_count,
                active_request_bias: lr.active_request_bias,
                slow_start_config: lr.slow_start_config,
            }));
            cluster.common_lb_config.locality_weighted_lb_config = locality(lr.locality_lb_config);
        }
        LbPolicyConfig::Random(random) => {
            cluster.lb_policy = LbPolicy::Random;
            cluster.common_lb_config.locality_weighted_lb_config = locality(random.locality_lb_config);
        }
        LbPolicyConfig::RingHash(ring) => {
            cluster.lb_policy = LbPolicy::RingHash;
            cluster.ring_hash_lb_config = Some(Box::new(RingHashLbConfig {
                minimum_ring_size: ring.minimum_ring_size,
                maximum_ring_size: ring.maximum_ring_size,
                hash_function: ring.hash_function,
            }));
            // The deprecated top-level fields fold into consistent_hashing_lb_config.
            let mut hashing = ring.consistent_hashing_lb_config.unwrap_or_default();
            hashing.use_hostname_for_hashing |= ring.use_hostname_for_hashing;
            hashing.hash_balance_factor = hashing.hash_balance_factor.or(ring.hash_balance_factor);
            cluster.common_lb_config.consistent_hashing_lb_config = Some(hashing);
            cluster.common_lb_config.locality_weighted_lb_config = ring.locality_weighted_lb_config;
        }
        LbPolicyConfig::Maglev(maglev) => {
            cluster.lb_policy = LbPolicy::Maglev;
            cluster.maglev_lb_config = Some(Box::new(MaglevLbConfig { table_size: maglev.table_size }));
            cluster.common_lb_config.consistent_hashing_lb_config = maglev.consistent_hashing_lb_config;
            cluster.common_lb_config.locality_weighted_lb_config = maglev.locality_weighted_lb_config;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::{Cluster, LbPolicy};
    use crate::load::{load_bootstrap, ConfigError};

    fn cluster(policies: &str) -> Result<Cluster, ConfigError> {
        let yaml = format!(
            r#"
static_resources:
  clusters:
  - name: backend
    load_balancing_policy:
      policies: {policies}
"#
        );
        load_bootstrap(None, Some(&yaml)).map(|b| b.bootstrap.static_resources.clusters[0].clone())
    }

    const LEAST_REQUEST: &str = r#"[{typed_extension_config: {name: lr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest, choice_count: 3, slow_start_config: {slow_start_window: 30s}, locality_lb_config: {locality_weighted_lb_config: {}}}}}]"#;

    #[test]
    fn a_typed_policy_fills_the_classic_fields() {
        let c = cluster(LEAST_REQUEST).unwrap();
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest);
        let lr = c.least_request_lb_config.as_ref().unwrap();
        assert_eq!(lr.choice_count, Some(3));
        assert_eq!(lr.slow_start_config.as_ref().unwrap().window(), std::time::Duration::from_secs(30));
        assert!(c.common_lb_config.locality_weighted_lb_config.is_some());

        let ring = r#"[{typed_extension_config: {name: r, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash, minimum_ring_size: 64, hash_balance_factor: 150}}}]"#;
        let c = cluster(ring).unwrap();
        assert_eq!(c.lb_policy, LbPolicy::RingHash);
        assert_eq!(c.ring_hash_lb_config.as_ref().unwrap().minimum_ring_size(), 64);
        let hashing = c.common_lb_config.consistent_hashing_lb_config.as_ref().unwrap();
        assert_eq!(hashing.hash_balance_factor, Some(150));

        let maglev = r#"[{typed_extension_config: {name: m, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev, table_size: 257}}}]"#;
        let c = cluster(maglev).unwrap();
        assert_eq!((c.lb_policy, c.maglev_lb_config.unwrap().table_size()), (LbPolicy::Maglev, 257));
    }

    #[test]
    fn the_first_implemented_policy_wins() {
        let policies = r#"[
        {typed_extension_config: {name: custom, typed_config: {"@type": type.googleapis.com/example.CustomLb}}},
        {typed_extension_config: {name: random, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random}}},
        {typed_extension_config: {name: rr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin}}}]"#;
        assert_eq!(cluster(policies).unwrap().lb_policy, LbPolicy::Random);
    }

    #[test]
    fn no_implemented_policy_or_a_bad_field_names_the_path() {
        let custom = r#"[{typed_extension_config: {name: custom, typed_config: {"@type": type.googleapis.com/example.CustomLb}}}]"#;
        let err = cluster(custom).unwrap_err().to_string();
        assert!(
            err.starts_with("static_resources.clusters[0].load_balancing_policy.policies: none of the policies"),
            "{err}"
        );
        let bad = LEAST_REQUEST.replace("choice_count: 3", "choice_cont: 3");
        let err = cluster(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "static_resources.clusters[0].load_balancing_policy.policies[0].typed_extension_config.typed_config.choice_cont: unknown field"
            ),
            "{err}"
        );
        let low = r#"[{typed_extension_config: {name: m, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev, consistent_hashing_lb_config: {hash_balance_factor: 90}}}}]"#;
        let err = cluster(low).unwrap_err().to_string();
        assert!(
            err.contains(
                "consistent_hashing_lb_config.hash_balance_factor: value must be greater than or equal to 100"
            ),
            "{err}"
        );
    }
}

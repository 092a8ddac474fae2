//! Load balancers, one per cluster per worker (Envoy keeps LB state thread-local).
//!
//! Priority first: each priority gets a share of the traffic from its health, scaled by the
//! overprovisioning factor (Envoy's "Priority levels"), and traffic spills to the next
//! priority as a level loses health. Within the chosen priority the policy picks a host among
//! the healthy ones; when fewer than `healthy_panic_threshold` percent are healthy, Envoy's
//! panic mode picks among all hosts and counts `lb_healthy_panic`.
//!
//! The hashing policies (`RING_HASH`, `MAGLEV`) pick from the request hash of the route's
//! `hash_policy`: the priority from `hash mod 100`, the host from a ring or table built lazily
//! per priority and host list, and rebuilt with the load balancer when the hosts change. With
//! no hash they use a random one, as Envoy does.

pub mod maglev;
pub mod ring_hash;

use std::sync::atomic::Ordering;

use legate_config::cluster::LbPolicy;

use super::cluster::{Cluster, HostSet, PrioritySet};
use super::host::{monotonic_ms, Host, HostSharedPtr};
use maglev::Maglev;
use ring_hash::RingHash;

pub struct LoadBalancer {
    policy: LbPolicy,
    /// Hosts sampled by LEAST_REQUEST (power of two choices by default).
    choice_count: u32,
    /// `active_request_bias` of LEAST_REQUEST (default 1.0).
    active_request_bias: f64,
    panic_threshold: f64,
    overprovisioning_factor: u32,
    /// Per priority and host list (healthy or panic): the round-robin state.
    round_robin: Vec<[RoundRobin; 2]>,
    /// Per priority and host list (healthy or panic): the ring or table of a hashing policy,
    /// built at its first use.
    hashing: Vec<[Option<HashingTable>; 2]>,
    /// `consistent_hashing_lb_config.hash_balance_factor` of the hashing policies.
    hash_balance_factor: Option<u32>,
    /// `locality_weighted_lb_config`: per priority and host list, the hosts grouped by
    /// locality, built at first use.
    locality_weighted: bool,
    localities: Vec<[Option<LocalityGroups>; 2]>,
    /// The slow start of ROUND_ROBIN or LEAST_REQUEST, while some host is in its window.
    slow_start: Option<SlowStart>,
    rng: fastrand::Rng,
}

/// `slow_start_config`, with the time its last host leaves the window.
struct SlowStart {
    window_ms: u64,
    aggression: f64,
    /// `min_weight_percent` as a fraction.
    min_weight: f64,
    /// [`monotonic_ms`] when every current host is past its window.
    until_ms: u64,
}

impl SlowStart {
    /// Envoy's scaling: weight × max(min_weight, (elapsed / window)^(1 / aggression)) inside
    /// the window.
    fn factor(&self, host: &Host, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(host.slow_start_since_ms());
        if elapsed >= self.window_ms {
            return 1.0;
        }
        let time_factor = elapsed.max(1) as f64 / self.window_ms as f64;
        time_factor.powf(1.0 / self.aggression).max(self.min_weight)
    }
}

/// The hosts of one priority grouped by locality, each locality weighted by its
/// `load_balancing_weight` times its share of healthy hosts (scaled by the overprovisioning
/// factor, capped at 1: Envoy's effective locality weight), picked by smooth weighted round
/// robin; a round-robin state per locality for the host within it.
struct LocalityGroups {
    groups: Vec<Vec<HostSharedPtr>>,
    weights: Vec<i64>,
    scores: Vec<i64>,
    round_robin: Vec<RoundRobin>,
}

impl LocalityGroups {
    fn new(set: &HostSet, panic: bool, overprovisioning_factor: u32) -> Self {
        let mut localities: Vec<(&legate_config::core::Locality, u32, Vec<HostSharedPtr>, usize)> = Vec::new();
        for host in &set.hosts {
            let index = match localities.iter().position(|(l, ..)| *l == host.locality()) {
                Some(i) => i,
                None => {
                    localities.push((host.locality(), host.locality_weight(), Vec::new(), 0));
                    localities.len() - 1
                }
            };
            if let Some((_, _, members, total)) = localities.get_mut(index) {
                *total += 1;
                // `healthy()` is what put the host in `healthy_hosts` (a linear search there
                // would make this quadratic in the cluster's size).
                if panic || host.healthy() {
                    members.push(host.clone());
                }
            }
        }
        let mut groups =
            LocalityGroups { groups: Vec::new(), weights: Vec::new(), scores: Vec::new(), round_robin: Vec::new() };
        for (_, weight, members, total) in localities {
            let availability = match panic {
                true => 1.0,
                false => (f64::from(overprovisioning_factor) / 100.0 * members.len() as f64 / total as f64).min(1.0),
            };
            // Thousandths keep fractional availability in integer arithmetic.
            let effective = (f64::from(weight) * availability * 1000.0).round() as i64;
            if effective > 0 && !members.is_empty() {
                groups.groups.push(members);
                groups.weights.push(effective);
                groups.scores.push(0);
                groups.round_robin.push(RoundRobin::default());
            }
        }
        groups
    }

    fn pick(&mut self) -> Option<usize> {
        let total: i64 = self.weights.iter().sum();
        let mut best: Option<(usize, i64)> = None;
        for (i, (score, weight)) in self.scores.iter_mut().zip(&self.weights).enumerate() {
            *score += weight;
            if best.is_none_or(|(_, top)| *score > top) {
                best = Some((i, *score));
            }
        }
        let (best, _) = best?;
        *self.scores.get_mut(best)? -= total;
        Some(best)
    }
}

/// A priority level's health in percent: its healthy share scaled by the overprovisioning
/// factor, capped at 100.
fn health_percent(overprovisioning_factor: u32, set: &HostSet) -> u64 {
    if set.hosts.is_empty() {
        return 0;
    }
    let healthy = set.healthy_hosts().len() as u64;
    (u64::from(overprovisioning_factor) * healthy / set.hosts.len() as u64).min(100)
}

/// Smooth weighted round robin (the nginx algorithm): each pick adds every host's weight to
/// its running score, takes the highest, and subtracts the total from the winner. Equal
/// weights reduce to plain rotation, done without the scores.
///
/// It also keeps what every policy needs to know about its host list's weights, worked out at
/// the list's first pick: a balancer is rebuilt whenever its hosts change, and host weights
/// never change, so a pick need not scan the list again.
#[derive(Default, Clone)]
struct RoundRobin {
    next: usize,
    scores: Vec<i64>,
    weights: Option<Weights>,
}

/// The weights of one host list.
#[derive(Clone)]
struct Weights {
    /// The list's length when this was computed.
    len: usize,
    uniform: bool,
    /// Running sums of the weights (empty when uniform): a weighted random pick is a binary
    /// search.
    cumulative: Vec<u64>,
}

impl Weights {
    fn of(hosts: &[HostSharedPtr]) -> Weights {
        let first = hosts.first().map_or(1, |h| h.weight);
        let uniform = hosts.iter().all(|h| h.weight == first);
        let cumulative = match uniform {
            true => Vec::new(),
            false => hosts
                .iter()
                .scan(0u64, |sum, h| {
                    *sum += u64::from(h.weight);
                    Some(*sum)
                })
                .collect(),
        };
        Weights { len: hosts.len(), uniform, cumulative }
    }
}

impl RoundRobin {
    fn weights(&mut self, hosts: &[HostSharedPtr]) -> &Weights {
        if self.weights.as_ref().is_none_or(|w| w.len != hosts.len()) {
            self.weights = Some(Weights::of(hosts));
        }
        self.weights.get_or_insert_with(|| Weights::of(hosts))
    }
}

/// The lookup structure of a hashing policy over one host list.
enum HashingTable {
    RingHash(RingHash),
    Maglev(Maglev),
}

impl LoadBalancer {
    pub fn new(cluster: &Cluster, priority_set: &PrioritySet) -> Self {
        let mut rng = fastrand::Rng::new();
        let round_robin = priority_set
            .host_sets
            .iter()
            .map(|s| {
                // Envoy starts each worker at a random host so that workers do not all send
                // their first request to the same one.
                let mut start = |n: usize| if n == 0 { 0 } else { rng.usize(0..n) };
                [
                    RoundRobin { next: start(s.healthy_hosts().len()), ..Default::default() },
                    RoundRobin { next: start(s.hosts.len()), ..Default::default() },
                ]
            })
            .collect();
        LoadBalancer {
            policy: cluster.info.lb_policy,
            choice_count: cluster
                .info
                .other_config()
                .least_request_lb_config
                .as_ref()
                .and_then(|c| c.choice_count)
                .unwrap_or(2),
            active_request_bias: cluster
                .info
                .other_config()
                .least_request_lb_config
                .as_ref()
                .and_then(|c| c.active_request_bias.as_ref())
                .map_or(1.0, crate::runtime::double_of),
            panic_threshold: cluster.info.other_config().common_lb_config.healthy_panic_threshold(),
            overprovisioning_factor: cluster.overprovisioning_factor(),
            hashing: priority_set.host_sets.iter().map(|_| [None, None]).collect(),
            hash_balance_factor: cluster
                .info
                .other_config()
                .common_lb_config
                .consistent_hashing_lb_config
                .as_ref()
                .and_then(|c| c.hash_balance_factor),
            locality_weighted: cluster.info.other_config().common_lb_config.locality_weighted_lb_config.is_some(),
            localities: priority_set.host_sets.iter().map(|_| [None, None]).collect(),
            slow_start: Self::slow_start(cluster, priority_set),
            round_robin,
            rng,
        }
    }

    fn slow_start(cluster: &Cluster, priority_set: &PrioritySet) -> Option<SlowStart> {
        let config = match cluster.info.lb_policy {
            LbPolicy::RoundRobin => {
                cluster.info.other_config().round_robin_lb_config.as_ref()?.slow_start_config.as_ref()?
            }
            LbPolicy::LeastRequest => {
                cluster.info.other_config().least_request_lb_config.as_ref()?.slow_start_config.as_ref()?
            }
            _ => return None,
        };
        let window_ms = config.window().as_millis() as u64;
        let latest = priority_set.all_hosts().map(|h| h.slow_start_since_ms()).max()?;
        (window_ms > 0).then(|| SlowStart {
            window_ms,
            aggression: config.aggression(),
            min_weight: config.min_weight_percent() / 100.0,
            until_ms: latest + window_ms,
        })
    }

    /// Picks a host, or `None` when the cluster has no host at all. `hash` is the request hash
    /// of the route's `hash_policy`; only the hashing policies use it.
    pub fn choose_host(
        &mut self,
        cluster: &Cluster,
        priority_set: &PrioritySet,
        hash: Option<u64>,
    ) -> Option<HostSharedPtr> {
        let hashing = matches!(self.policy, LbPolicy::RingHash | LbPolicy::Maglev);
        let hash = if hashing { Some(hash.unwrap_or_else(|| self.rng.u64(..))) } else { None };
        let (priority, panic) = self.choose_priority(priority_set, hash)?;
        let set = priority_set.host_sets.get(priority)?;
        if panic {
            cluster.endpoint_stats.lb_healthy_panic().inc();
        }
        let hosts = if panic { set.hosts.as_slice() } else { set.healthy_hosts() };
        if hosts.is_empty() {
            return None;
        }
        if let Some(hash) = hash {
            let slot = self.hashing.get_mut(priority).map(|s| &mut s[usize::from(panic)])?;
            let policy = self.policy;
            let table = slot.get_or_insert_with(|| match policy {
                LbPolicy::Maglev => {
                    HashingTable::Maglev(Maglev::new(hosts, cluster.info.other_config().maglev_lb_config.as_deref()))
                }
                _ => HashingTable::RingHash(RingHash::new(
                    hosts,
                    cluster.info.other_config().ring_hash_lb_config.as_deref(),
                )),
            });
            let table = &*table;
            let lookup = |hash: u64| match table {
                HashingTable::RingHash(ring) => ring.choose_host(hash),
                HashingTable::Maglev(maglev) => maglev.choose_host(hash),
            };
            return match self.hash_balance_factor {
                Some(factor) => bounded_load_pick(hosts, factor, hash, lookup),
                None => lookup(hash),
            }
            .cloned();
        }
        let mut hosts: &[HostSharedPtr] = hosts;
        let mut state = self.round_robin.get_mut(priority).map(|s| &mut s[usize::from(panic)]);
        if self.locality_weighted {
            let overprovisioning = self.overprovisioning_factor;
            if let Some(slot) = self.localities.get_mut(priority).map(|s| &mut s[usize::from(panic)]) {
                let groups = slot.get_or_insert_with(|| LocalityGroups::new(set, panic, overprovisioning));
                if let Some(i) = groups.pick() {
                    if let (Some(members), Some(rr)) = (groups.groups.get(i), groups.round_robin.get_mut(i)) {
                        hosts = members;
                        state = Some(rr);
                    }
                }
            }
        }
        // The clock is read only when slow start is configured (a read costs as much as a pick).
        let now = if self.slow_start.is_some() { monotonic_ms() } else { 0 };
        let slow_start = self.slow_start.as_ref().filter(|s| now < s.until_ms);
        let index = match (self.policy, slow_start) {
            (LbPolicy::LeastRequest, Some(slow)) => {
                slow_start_pick(&mut self.rng, hosts, slow, now, Some(self.active_request_bias))
            }
            (_, Some(slow)) => slow_start_pick(&mut self.rng, hosts, slow, now, None),
            (LbPolicy::LeastRequest, None) => {
                let uniform = state.map_or_else(|| Weights::of(hosts).uniform, |s| s.weights(hosts).uniform);
                least_request(&mut self.rng, hosts, uniform, self.choice_count, self.active_request_bias)
            }
            (LbPolicy::Random, None) => match state {
                Some(state) => weighted_random(&mut self.rng, state.weights(hosts)),
                None => weighted_random(&mut self.rng, &Weights::of(hosts)),
            },
            _ => match state {
                Some(state) => state.pick(hosts),
                None => 0,
            },
        };
        hosts.get(index).cloned()
    }

    /// The priority to use and whether it is in panic mode, as Envoy's
    /// `recalculatePerPriorityPanic` decides them. A request hash picks the priority too
    /// (Envoy's `choosePriority(hash)`), so that a key sticks to one level.
    fn choose_priority(&mut self, priority_set: &PrioritySet, hash: Option<u64>) -> Option<(usize, bool)> {
        let sets = &priority_set.host_sets;
        if sets.iter().all(|s| s.hosts.is_empty()) {
            return None;
        }
        // Computed twice rather than collected: no allocation per pick.
        let factor = self.overprovisioning_factor;
        let health = || sets.iter().map(move |s| health_percent(factor, s));
        let total_health: u64 = health().sum::<u64>().min(100);
        let pick = hash.map_or_else(|| self.rng.u64(0..100), |h| h % 100);
        // No level is in panic while the levels together are fully healthy.
        let in_panic = |set: &HostSet| total_health < 100 && self.in_panic(set);
        if sets.iter().all(in_panic) {
            // Total panic: each level's share of the load is its share of all hosts, and the
            // rounding's remainder goes to the first level with hosts.
            let all: u64 = sets.iter().map(|s| s.hosts.len() as u64).sum();
            let first = sets.iter().position(|s| !s.hosts.is_empty())?;
            let mut cumulative = 100 - sets.iter().map(|s| s.hosts.len() as u64 * 100 / all).sum::<u64>();
            for (priority, set) in sets.iter().enumerate() {
                cumulative += set.hosts.len() as u64 * 100 / all;
                if pick < cumulative && !set.hosts.is_empty() {
                    return Some((priority, true));
                }
            }
            return Some((first, true));
        }
        // Nothing healthy enough to share the load by: all of it to the first level, as Envoy
        // does. With panic disabled (a threshold of 0) its healthy list may well be empty, and
        // the pick finds no host ("no healthy upstream").
        if total_health == 0 {
            return Some((0, in_panic(&sets[0])));
        }
        // Normalised priority load: each level's health share of the total, in order.
        let mut remaining = 100u64;
        let mut cumulative = 0u64;
        for (priority, h) in health().enumerate() {
            let load = (h * 100 / total_health).min(remaining);
            remaining -= load;
            cumulative += load;
            if pick < cumulative {
                return Some((priority, in_panic(&sets[priority])));
            }
        }
        let last = sets.iter().rposition(|s| health_percent(factor, s) > 0)?;
        Some((last, in_panic(&sets[last])))
    }

    /// Envoy's `isHostSetInPanic`: the level's healthy share is under the threshold (an empty
    /// level has none).
    fn in_panic(&self, set: &HostSet) -> bool {
        let healthy = match set.hosts.len() {
            0 => 0.0,
            n => set.healthy_hosts().len() as f64 * 100.0 / n as f64,
        };
        // The runtime's `upstream.healthy_panic_threshold` (a whole percentage, at most 100)
        // over the cluster's.
        let threshold = match crate::runtime::integer("upstream.healthy_panic_threshold", u64::MAX) {
            u64::MAX => self.panic_threshold,
            runtime => runtime.min(100) as f64,
        };
        healthy < threshold
    }
}

impl RoundRobin {
    fn pick(&mut self, hosts: &[HostSharedPtr]) -> usize {
        if self.weights(hosts).uniform {
            let index = self.next % hosts.len();
            self.next = index + 1;
            return index;
        }
        if self.scores.len() != hosts.len() {
            self.scores = vec![0; hosts.len()];
        }
        let total: i64 = hosts.iter().map(|h| i64::from(h.weight)).sum();
        let mut best = 0;
        for (i, host) in hosts.iter().enumerate() {
            self.scores[i] += i64::from(host.weight);
            if self.scores[i] > self.scores[best] {
                best = i;
            }
        }
        self.scores[best] -= total;
        best
    }
}

/// What LEAST_REQUEST compares: requests in flight (for connection-level traffic, active
/// connections).
fn active_load(h: &Host) -> u64 {
    h.stats.rq_active.load(Ordering::Relaxed) + h.stats.cx_active.load(Ordering::Relaxed)
}

/// Envoy's LEAST_REQUEST. Equal weights: power of `choice_count` choices, the sampled host with
/// the fewest active requests (for connection-level traffic, active connections). Unequal
/// weights: a weighted pick where each host's weight is divided by
/// (active requests + 1)^`active_request_bias` (bias 0 is plain weighted round robin's share).
fn least_request(
    rng: &mut fastrand::Rng,
    hosts: &[HostSharedPtr],
    uniform: bool,
    choice_count: u32,
    bias: f64,
) -> usize {
    let load = active_load;
    if hosts.is_empty() {
        return 0;
    }
    if !uniform {
        let effective: Vec<f64> =
            hosts.iter().map(|h| f64::from(h.weight) / ((load(h) + 1) as f64).powf(bias)).collect();
        let total: f64 = effective.iter().sum();
        let mut pick = rng.f64() * total;
        for (i, weight) in effective.iter().enumerate() {
            if pick < *weight {
                return i;
            }
            pick -= weight;
        }
        return hosts.len() - 1;
    }
    let mut best = rng.usize(0..hosts.len());
    for _ in 1..choice_count {
        let candidate = rng.usize(0..hosts.len());
        if load(&hosts[candidate]) < load(&hosts[best]) {
            best = candidate;
        }
    }
    best
}

/// Consistent hashing with bounded loads (Envoy's `hash_balance_factor`): the key's host
/// unless it already carries more than `factor` percent of its weighted share of the requests
/// in flight, in which case the key is rehashed until it lands on a host with room. The same
/// key under the same loads always takes the same path.
fn bounded_load_pick<'a>(
    hosts: &[HostSharedPtr],
    factor: u32,
    hash: u64,
    lookup: impl Fn(u64) -> Option<&'a HostSharedPtr>,
) -> Option<&'a HostSharedPtr> {
    let load = |h: &Host| h.stats.rq_active.load(Ordering::Relaxed);
    let total_load: u64 = hosts.iter().map(|h| load(h)).sum();
    let total_weight: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum::<u64>().max(1);
    let has_room = |h: &Host| {
        let bound =
            ((total_load + 1) as f64 * f64::from(factor) / 100.0 * f64::from(h.weight) / total_weight as f64).ceil();
        ((load(h) + 1) as f64) <= bound
    };
    let first = lookup(hash)?;
    if has_room(first) {
        return Some(first);
    }
    let mut key = hash;
    for _ in 0..hosts.len().saturating_mul(4) {
        // A splitmix64 step: a fresh, well-spread position for the same key.
        key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        if let Some(candidate) = lookup(z) {
            if has_room(candidate) {
                return Some(candidate);
            }
        }
    }
    Some(first)
}

/// A weighted pick with each weight scaled by its host's slow start factor (and, for
/// LEAST_REQUEST, divided by (active requests + 1)^bias), as Envoy's EDF schedulers do while
/// hosts are in their window.
fn slow_start_pick(
    rng: &mut fastrand::Rng,
    hosts: &[HostSharedPtr],
    slow: &SlowStart,
    now_ms: u64,
    least_request_bias: Option<f64>,
) -> usize {
    let effective = |h: &Host| {
        let weight = f64::from(h.weight) * slow.factor(h, now_ms);
        match least_request_bias {
            Some(bias) => weight / ((active_load(h) + 1) as f64).powf(bias),
            None => weight,
        }
    };
    let total: f64 = hosts.iter().map(|h| effective(h)).sum();
    let mut pick = rng.f64() * total;
    for (i, host) in hosts.iter().enumerate() {
        let weight = effective(host);
        if pick < weight {
            return i;
        }
        pick -= weight;
    }
    hosts.len().saturating_sub(1)
}

/// A host picked with probability proportional to its weight (uniformly when all are equal).
fn weighted_random(rng: &mut fastrand::Rng, weights: &Weights) -> usize {
    if weights.uniform {
        return rng.usize(0..weights.len.max(1));
    }
    let total = weights.cumulative.last().copied().unwrap_or(0);
    let pick = rng.u64(0..total.max(1));
    weights.cumulative.partition_point(|&sum| sum <= pick).min(weights.len.saturating_sub(1))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::upstream::host::HostLocality;
    use legate_config::endpoint::HealthStatus;

    pub(super) fn host(port: u16, weight: u32) -> HostSharedPtr {
        host_at(port, weight, 0, HealthStatus::Healthy)
    }

    fn host_at(port: u16, weight: u32, priority: u32, health: HealthStatus) -> HostSharedPtr {
        HostSharedPtr::new(Host::new(
            ([127, 0, 0, 1], port).into(),
            String::new(),
            weight,
            HostLocality::new(None, priority, None),
            health,
        ))
    }

    fn cluster(policy: &str) -> Cluster {
        cluster_with(serde_json::json!({"lb_policy": policy}))
    }

    fn cluster_with(fields: serde_json::Value) -> Cluster {
        let store = legate_stats::Store::new(1);
        let mut config = serde_json::json!({"name": "c", "type": "STRICT_DNS"});
        if let (Some(c), serde_json::Value::Object(f)) = (config.as_object_mut(), fields) {
            c.extend(f);
        }
        let config: legate_config::cluster::Cluster = serde_json::from_value(config).unwrap();
        Cluster::new(config, &store.scope("cluster.c")).unwrap()
    }

    fn host_in(port: u16, zone: &str, locality_weight: u32, health: HealthStatus) -> HostSharedPtr {
        let locality = legate_config::core::Locality { zone: zone.into(), ..Default::default() };
        let place = HostLocality::new(Some(&locality), 0, Some(locality_weight));
        HostSharedPtr::new(Host::new(([127, 0, 0, 1], port).into(), String::new(), 1, place, health))
    }

    #[test]
    fn random_follows_the_weights() {
        let c = cluster("RANDOM");
        let ps = PrioritySet::new(vec![host(1, 1), host(2, 3)], 1);
        let mut lb = LoadBalancer::new(&c, &ps);
        let m = counts(&mut lb, &c, &ps, 8000);
        let heavy = m.get(&2).copied().unwrap_or(0);
        // 6000 expected; the binomial standard deviation is about 39.
        assert!((5700..6300).contains(&heavy), "weights 1:3 over 8000 picks: {heavy}");
    }

    #[test]
    fn least_request_with_equal_weights_avoids_the_busy_host() {
        let hosts = vec![host(1, 1), host(2, 1), host(3, 1)];
        hosts[0].stats.rq_active.store(5, Ordering::Relaxed);
        let mut rng = fastrand::Rng::with_seed(11);
        let picks = |rng: &mut fastrand::Rng, choices: u32| {
            (0..9000).filter(|_| least_request(rng, &hosts, true, choices, 1.0) == 0).count()
        };
        // Two choices: the busy host wins only when both samples are it (1/9 of the picks).
        let two = picks(&mut rng, 2);
        assert!((800..1200).contains(&two), "power of two choices: {two} of 9000");
        // More choices make it rarer still (1/27 with three).
        let three = picks(&mut rng, 3);
        assert!(three < two && (200..450).contains(&three), "choice_count 3: {three} of 9000");
        // Without load the picks spread evenly.
        hosts[0].stats.rq_active.store(0, Ordering::Relaxed);
        let idle = picks(&mut rng, 2);
        assert!((2700..3300).contains(&idle), "no load: {idle} of 9000");
    }

    #[test]
    fn bounded_loads_move_keys_off_a_busy_host_only() {
        let hosts: Vec<HostSharedPtr> = (1..=4).map(|p| host(p, 1)).collect();
        let ring = RingHash::new(&hosts, None);
        let lookup = |h: u64| ring.choose_host(h);
        let keys = key_hashes(2000);
        // No load anywhere: every key goes where the ring puts it.
        for &k in &keys {
            assert!(HostSharedPtr::ptr_eq(bounded_load_pick(&hosts, 150, k, lookup).unwrap(), lookup(k).unwrap()));
        }
        // Host 1 carries all 20 requests in flight: its bound is ceil(21 × 1.5 / 4) = 8.
        hosts[0].stats.rq_active.store(20, Ordering::Relaxed);
        for &k in &keys {
            let home = lookup(k).unwrap();
            let chosen = bounded_load_pick(&hosts, 150, k, lookup).unwrap();
            if home.address().port() == 1 {
                assert_ne!(chosen.address().port(), 1, "a key of the busy host moves");
                let again = bounded_load_pick(&hosts, 150, k, lookup).unwrap();
                assert!(HostSharedPtr::ptr_eq(chosen, again), "and always to the same place");
            } else {
                assert!(HostSharedPtr::ptr_eq(chosen, home), "other keys stay home");
            }
        }
    }

    #[test]
    fn locality_weights_split_traffic_and_follow_locality_health() {
        let c = cluster_with(serde_json::json!({"common_lb_config": {"locality_weighted_lb_config": {}}}));
        let hosts = |b2: HealthStatus| {
            vec![
                host_in(1, "a", 1, HealthStatus::Healthy),
                host_in(2, "a", 1, HealthStatus::Healthy),
                host_in(3, "b", 3, HealthStatus::Healthy),
                host_in(4, "b", 3, b2),
            ]
        };
        let ps = PrioritySet::new(hosts(HealthStatus::Healthy), 1);
        let mut lb = LoadBalancer::new(&c, &ps);
        let m = counts(&mut lb, &c, &ps, 4000);
        let share = |ports: &[u16]| ports.iter().map(|p| m.get(p).copied().unwrap_or(0)).sum::<usize>();
        // Weights 1 : 3, picked by smooth round robin: exact.
        assert_eq!((share(&[1, 2]), share(&[3, 4])), (1000, 3000), "{m:?}");
        assert_eq!((m[&1], m[&2]), (500, 500), "round robin inside a locality");

        // Half of b unhealthy: b's weight is 3 × min(1, 1.4 × 1/2) = 2.1 against a's 1.
        let ps = PrioritySet::new(hosts(HealthStatus::Unhealthy), 2);
        let mut lb = LoadBalancer::new(&c, &ps);
        let m = counts(&mut lb, &c, &ps, 3100);
        let share = |ports: &[u16]| ports.iter().map(|p| m.get(p).copied().unwrap_or(0)).sum::<usize>();
        assert_eq!((share(&[1, 2]), share(&[3]), share(&[4])), (1000, 2100, 0), "{m:?}");
    }

    #[test]
    fn slow_start_ramps_a_new_host_up_from_min_weight() {
        for policy in ["round_robin_lb_config", "least_request_lb_config"] {
            let lb_policy = if policy.starts_with("round") { "ROUND_ROBIN" } else { "LEAST_REQUEST" };
            let c = cluster_with(serde_json::json!({
                "lb_policy": lb_policy,
                policy: {"slow_start_config": {"slow_start_window": "60s", "min_weight_percent": {"value": 10}}}
            }));
            let (old, new) = (host(1, 1), host(2, 1));
            let ps = PrioritySet::new(vec![old.clone(), new.clone()], 1);
            let lb = LoadBalancer::new(&c, &ps);
            let slow = lb.slow_start.as_ref().expect("slow start configured");
            let bias = (lb_policy == "LEAST_REQUEST").then_some(1.0);
            let mut rng = fastrand::Rng::with_seed(7);
            let mut share_of_new = |now: u64, n: usize| {
                (0..n).filter(|_| slow_start_pick(&mut rng, &ps.host_sets[0].hosts, slow, now, bias) == 1).count()
            };
            // At 200 s the old host is long past its window.
            old.set_slow_start_since_ms(0);
            // Just added: min_weight 0.1 against 1 → about 1/11 of the picks.
            new.set_slow_start_since_ms(200_000);
            let fresh = share_of_new(200_000, 11_000);
            assert!((600..1400).contains(&fresh), "{policy}: new host got {fresh} of 11000");
            // Half way through a linear window: 0.5 against 1 → a third.
            let half = share_of_new(230_000, 9000);
            assert!((2500..3500).contains(&half), "{policy}: half-way host got {half} of 9000");
            // Past the window: equal shares again.
            let done = share_of_new(261_000, 1000);
            assert!((400..600).contains(&done), "{policy}: {done}");
        }
        // Without a window, no slow start.
        let c = cluster_with(serde_json::json!({"round_robin_lb_config": {"slow_start_config": {}}}));
        let ps = PrioritySet::new(vec![host(1, 1)], 1);
        assert!(LoadBalancer::new(&c, &ps).slow_start.is_none());
    }

    fn counts(lb: &mut LoadBalancer, c: &Cluster, ps: &PrioritySet, n: usize) -> std::collections::HashMap<u16, usize> {
        let mut m = std::collections::HashMap::new();
        for _ in 0..n {
            *m.entry(lb.choose_host(c, ps, None).unwrap().address().port()).or_default() += 1;
        }
        m
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_exact() {
        let c = cluster("ROUND_ROBIN");
        let ps =
            PrioritySet::new(vec![host_at(1, 3, 0, HealthStatus::Healthy), host_at(2, 1, 0, HealthStatus::Healthy)], 1);
        let mut lb = LoadBalancer::new(&c, &ps);
        let picks: Vec<u16> = (0..8).map(|_| lb.choose_host(&c, &ps, None).unwrap().address().port()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 6);
        assert!(
            picks.windows(2).all(|w| !(w[0] == 2 && w[1] == 2)),
            "smooth: never the light host twice in a row: {picks:?}"
        );
    }

    #[test]
    fn spills_over_to_the_next_priority_as_health_drops() {
        let c = cluster("ROUND_ROBIN");
        // P0: 1 of 2 healthy → health 70 % (1.4 × 50 %); P1 takes the remaining 30 %.
        let ps = PrioritySet::new(
            vec![
                host_at(1, 1, 0, HealthStatus::Healthy),
                host_at(2, 1, 0, HealthStatus::Unhealthy),
                host_at(3, 1, 1, HealthStatus::Healthy),
            ],
            1,
        );
        let mut lb = LoadBalancer::new(&c, &ps);
        let m = counts(&mut lb, &c, &ps, 2000);
        assert_eq!(m.get(&2), None, "unhealthy host never chosen");
        let p1 = *m.get(&3).unwrap_or(&0);
        assert!((450..750).contains(&p1), "about 30 % to priority 1, got {p1}");
    }

    #[test]
    fn panic_mode_uses_all_hosts_and_counts() {
        let c = cluster("RANDOM");
        let ps = PrioritySet::new(
            vec![host_at(1, 1, 0, HealthStatus::Unhealthy), host_at(2, 1, 0, HealthStatus::Unhealthy)],
            1,
        );
        let mut lb = LoadBalancer::new(&c, &ps);
        let m = counts(&mut lb, &c, &ps, 100);
        assert_eq!(m.values().sum::<usize>(), 100);
        assert_eq!(c.endpoint_stats.lb_healthy_panic().value(), 100);
    }

    /// A threshold of 0 disables panic: with no healthy host there is no host, not any host.
    #[test]
    fn a_panic_threshold_of_zero_finds_no_host_when_none_is_healthy() {
        let c = cluster_with(serde_json::json!({"common_lb_config": {"healthy_panic_threshold": {"value": 0}}}));
        let ps = PrioritySet::new(
            vec![host_at(1, 1, 0, HealthStatus::Unhealthy), host_at(2, 1, 1, HealthStatus::Unhealthy)],
            1,
        );
        let mut lb = LoadBalancer::new(&c, &ps);
        assert!((0..50).all(|_| lb.choose_host(&c, &ps, None).is_none()));
        assert_eq!(c.endpoint_stats.lb_healthy_panic().value(), 0);
    }

    /// A level under the threshold is not in panic while the levels together are fully
    /// healthy: its unhealthy hosts are never chosen.
    #[test]
    fn no_level_panics_while_the_total_health_is_full() {
        let c = cluster("ROUND_ROBIN");
        // P0: 1 of 3 healthy (33 %, under 50 %) → health 46 %; P1 healthy: total 100 %.
        let ps = PrioritySet::new(
            vec![
                host_at(1, 1, 0, HealthStatus::Healthy),
                host_at(2, 1, 0, HealthStatus::Unhealthy),
                host_at(3, 1, 0, HealthStatus::Unhealthy),
                host_at(4, 1, 1, HealthStatus::Healthy),
            ],
            1,
        );
        let mut lb = LoadBalancer::new(&c, &ps);
        let m = counts(&mut lb, &c, &ps, 1000);
        assert_eq!((m.get(&2), m.get(&3)), (None, None), "{m:?}");
        assert!(m.get(&1).is_some_and(|&n| n > 300), "{m:?}");
        assert_eq!(c.endpoint_stats.lb_healthy_panic().value(), 0);
    }

    /// Every level in panic: the load follows each level's share of all hosts.
    #[test]
    fn total_panic_shares_the_load_by_host_count() {
        let c = cluster("ROUND_ROBIN");
        let ps = PrioritySet::new(
            vec![
                host_at(1, 1, 0, HealthStatus::Unhealthy),
                host_at(2, 1, 1, HealthStatus::Unhealthy),
                host_at(3, 1, 1, HealthStatus::Unhealthy),
                host_at(4, 1, 1, HealthStatus::Unhealthy),
            ],
            1,
        );
        let mut lb = LoadBalancer::new(&c, &ps);
        let m = counts(&mut lb, &c, &ps, 2000);
        let p0 = *m.get(&1).unwrap_or(&0);
        assert!((350..650).contains(&p0), "about a quarter to priority 0, got {p0}: {m:?}");
        assert_eq!(c.endpoint_stats.lb_healthy_panic().value(), 2000);
    }

    /// A hashing table as a lookup from request hash to host port.
    type Lookup = Box<dyn Fn(u64) -> u16>;

    /// Both hashing tables over `hosts`.
    fn hashing_tables(hosts: &[HostSharedPtr]) -> [(&'static str, Lookup); 2] {
        let ring = RingHash::new(hosts, None);
        let maglev = Maglev::new(hosts, None);
        [
            ("ring hash", Box::new(move |h| ring.choose_host(h).unwrap().address().port())),
            ("maglev", Box::new(move |h| maglev.choose_host(h).unwrap().address().port())),
        ]
    }

    fn key_hashes(n: usize) -> Vec<u64> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..n).map(|_| xxhash_rust::xxh64::xxh64(format!("user-{}", rng.u64(..)).as_bytes(), 0)).collect()
    }

    fn shares(choose: &dyn Fn(u64) -> u16, keys: &[u64]) -> std::collections::HashMap<u16, usize> {
        let mut m = std::collections::HashMap::new();
        for k in keys {
            *m.entry(choose(*k)).or_default() += 1;
        }
        m
    }

    #[test]
    fn hashing_spreads_keys_evenly_and_by_weight() {
        let keys = key_hashes(10_000);
        for (name, choose) in hashing_tables(&[host(1, 1), host(2, 1), host(3, 1)]) {
            let m = shares(&*choose, &keys);
            for port in 1..=3 {
                let n = m.get(&port).copied().unwrap_or(0);
                assert!((2_800..3_900).contains(&n), "{name}: host {port} got {n} of 10000: {m:?}");
            }
        }
        for (name, choose) in hashing_tables(&[host(1, 1), host(2, 2)]) {
            let heavy = shares(&*choose, &keys).get(&2).copied().unwrap_or(0);
            assert!((6_000..7_300).contains(&heavy), "{name}: weight 2 of 3 got {heavy} of 10000");
        }
    }

    #[test]
    fn hashing_is_sticky_and_moves_few_keys_when_hosts_change() {
        let keys = key_hashes(10_000);
        let three = hashing_tables(&[host(1, 1), host(2, 1), host(3, 1)]);
        let four = hashing_tables(&[host(1, 1), host(2, 1), host(3, 1), host(4, 1)]);
        let two = hashing_tables(&[host(1, 1), host(3, 1)]);
        for (((name, before), (_, added)), (_, removed)) in three.iter().zip(&four).zip(&two) {
            assert!(keys.iter().all(|k| before(*k) == before(*k)), "{name}: same key, same host");
            let moved = keys.iter().filter(|k| before(**k) != added(**k)).count();
            assert!(moved < 4_000, "{name}: adding a 4th host moved {moved} of 10000 keys");
            let to_new = keys.iter().filter(|k| before(**k) != added(**k) && added(**k) == 4).count();
            // Not all: the ring gives each host fewer replicas as hosts are added (Envoy sizes it
            // from the lightest host's share), and Maglev's fill order shifts a few slots.
            assert!(to_new * 10 >= moved * 6, "{name}: only {to_new} of {moved} moved keys went to the new host");
            // Removing host 2 remaps its keys and, for the same reasons, a few others.
            let others_moved = keys.iter().filter(|k| before(**k) != 2 && before(**k) != removed(**k)).count();
            assert!(others_moved < 1_500, "{name}: {others_moved} keys of remaining hosts moved");
        }
    }

    #[test]
    fn hashing_policy_picks_by_hash_and_randomly_without_one() {
        let c = cluster("MAGLEV");
        let ps = PrioritySet::new(vec![host(1, 1), host(2, 1), host(3, 1)], 1);
        let mut lb = LoadBalancer::new(&c, &ps);
        let first = lb.choose_host(&c, &ps, Some(42)).unwrap().address().port();
        assert!((0..20).all(|_| lb.choose_host(&c, &ps, Some(42)).unwrap().address().port() == first));
        assert_eq!(counts(&mut lb, &c, &ps, 300).len(), 3, "no hash: random hosts");
    }

    #[test]
    fn hashing_excludes_unhealthy_hosts() {
        let c = cluster("RING_HASH");
        let ps =
            PrioritySet::new(vec![host(1, 1), host(2, 1), host(3, 1), host_at(4, 1, 0, HealthStatus::Unhealthy)], 1);
        let mut lb = LoadBalancer::new(&c, &ps);
        for k in key_hashes(1_000) {
            assert_ne!(lb.choose_host(&c, &ps, Some(k)).unwrap().address().port(), 4);
        }
    }

    #[test]
    fn weighted_least_request_divides_weights_by_active_requests() {
        let hosts = vec![host(1, 1), host(2, 3)];
        let mut rng = fastrand::Rng::with_seed(7);
        let share = |rng: &mut fastrand::Rng, bias: f64| {
            let picks = (0..20_000).filter(|_| least_request(rng, &hosts, false, 2, bias) == 1).count();
            picks as f64 / 20_000.0
        };
        let idle = share(&mut rng, 1.0);
        assert!((0.72..0.78).contains(&idle), "weights 1:3 with no load: {idle}");
        hosts[1].stats.rq_active.store(3, Ordering::Relaxed);
        let loaded = share(&mut rng, 1.0);
        assert!((0.39..0.47).contains(&loaded), "3 / (3 + 1) against 1: {loaded}");
        let unbiased = share(&mut rng, 0.0);
        assert!((0.72..0.78).contains(&unbiased), "bias 0 ignores load: {unbiased}");
    }
}

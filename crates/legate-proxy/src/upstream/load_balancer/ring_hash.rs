//! The `RING_HASH` table: Envoy's "Ring hash" load balancer (a Ketama-style consistent hash
//! ring), built from `Cluster.RingHashLbConfig`.
//!
//! Each host is placed on the ring many times, at the xxHash64 of `<address>_<i>` for
//! `i = 0, 1, …`, as Envoy names the replicas; a request goes to the first entry at or after its
//! hash, wrapping around. The number of replicas is proportional to the host's weight, scaled
//! so that the lightest host gets at least `minimum_ring_size × its share` entries and the ring
//! has at most `maximum_ring_size`. Legate differs on purpose: only `XX_HASH` (config refuses
//! `MURMUR_HASH_2`), and the key is always the address (no `use_hostname_for_hashing`).

use legate_config::cluster::RingHashLbConfig;

use crate::upstream::host::HostSharedPtr;

/// A sorted ring of `(hash, host index)` over one host list.
pub struct RingHash {
    hosts: Vec<HostSharedPtr>,
    /// Sorted by hash.
    ring: Vec<(u64, u32)>,
}

impl RingHash {
    /// Builds the ring over `hosts` (the healthy hosts of a priority, or all of them in panic).
    pub fn new(hosts: &[HostSharedPtr], config: Option<&RingHashLbConfig>) -> Self {
        let config = config.cloned().unwrap_or_default();
        let (min_ring_size, max_ring_size) = (config.minimum_ring_size(), config.maximum_ring_size());
        let total: f64 = hosts.iter().map(|h| f64::from(h.weight)).sum();
        let mut ring = Vec::new();
        if !hosts.is_empty() {
            let normalized: Vec<f64> = hosts.iter().map(|h| f64::from(h.weight) / total).collect();
            let min_weight = normalized.iter().copied().fold(1.0, f64::min);
            // Envoy's scale: enough entries for the lightest host's share of the minimum size,
            // capped by the maximum size.
            let scale = ((min_weight * min_ring_size as f64).ceil() / min_weight).min(max_ring_size as f64);
            ring.reserve(scale as usize + hosts.len());
            // Running totals, so that rounding never drifts the ring past `scale` entries.
            let (mut current, mut target) = (0.0f64, 0.0f64);
            for (index, (host, weight)) in hosts.iter().zip(&normalized).enumerate() {
                target += scale * weight;
                let mut replica = 0u64;
                while current < target {
                    let key = format!("{}_{replica}", host.address());
                    ring.push((xxhash_rust::xxh64::xxh64(key.as_bytes(), 0), index as u32));
                    replica += 1;
                    current += 1.0;
                }
            }
            ring.sort_unstable();
        }
        RingHash { hosts: hosts.to_vec(), ring }
    }

    /// The host owning `hash`: the first entry at or after it, wrapping to the first.
    pub fn choose_host(&self, hash: u64) -> Option<&HostSharedPtr> {
        let at = self.ring.partition_point(|(h, _)| *h < hash);
        let (_, index) = self.ring.get(at).or_else(|| self.ring.first())?;
        self.hosts.get(*index as usize)
    }

    /// Entries on the ring.
    pub fn size(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_minimum_and_maximum() {
        let hosts: Vec<HostSharedPtr> = (1..=3).map(|p| crate::upstream::load_balancer::tests::host(p, 1)).collect();
        assert_eq!(RingHash::new(&hosts, None).size(), 1026, "1024 rounded up to 342 per host");
        let small = RingHashLbConfig { minimum_ring_size: Some(3), maximum_ring_size: Some(3), ..Default::default() };
        assert_eq!(RingHash::new(&hosts, Some(&small)).size(), 3);
        assert!(RingHash::new(&[], None).choose_host(7).is_none());
    }
}

//! The `MAGLEV` table: Envoy's "Maglev" load balancer (Google's Maglev consistent hashing),
//! built from `Cluster.MaglevLbConfig`.
//!
//! Each host has a permutation of the table slots, `(offset + skip × j) mod table_size` with
//! `offset` the xxHash64 of its address (seed 0) and `skip` from the same key with seed 1; the
//! table size is prime, so every permutation visits every slot. Hosts take turns claiming their
//! next free slot until the table is full; a host of weight `w` takes a turn every
//! `max_weight / w` rounds, so it ends up with slots proportional to its weight. A request goes
//! to `table[hash mod table_size]`.

use legate_config::cluster::MaglevLbConfig;

use crate::upstream::host::HostSharedPtr;

/// A filled lookup table over one host list.
pub struct Maglev {
    hosts: Vec<HostSharedPtr>,
    /// Host index per slot; empty when there are no hosts.
    table: Vec<u32>,
}

/// One host while the table is filled.
struct Entry {
    index: u32,
    offset: u64,
    skip: u64,
    /// Share of the total weight.
    weight: f64,
    /// The next turn is taken once `round × weight` reaches this.
    target: f64,
    /// Position in the host's permutation.
    next: u64,
}

impl Maglev {
    /// Builds the table over `hosts` (the healthy hosts of a priority, or all of them in panic).
    pub fn new(hosts: &[HostSharedPtr], config: Option<&MaglevLbConfig>) -> Self {
        let size = config.map_or(MaglevLbConfig::DEFAULT_TABLE_SIZE, MaglevLbConfig::table_size);
        if hosts.is_empty() || size < 2 {
            return Maglev { hosts: Vec::new(), table: Vec::new() };
        }
        let total: f64 = hosts.iter().map(|h| f64::from(h.weight)).sum();
        let mut entries: Vec<Entry> = hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                let key = host.address().to_string();
                Entry {
                    index: index as u32,
                    offset: xxhash_rust::xxh64::xxh64(key.as_bytes(), 0) % size,
                    skip: xxhash_rust::xxh64::xxh64(key.as_bytes(), 1) % (size - 1) + 1,
                    weight: f64::from(host.weight) / total,
                    target: 0.0,
                    next: 0,
                }
            })
            .collect();
        // The same table on every worker, whatever order the hosts arrived in.
        entries.sort_by_key(|e| hosts[e.index as usize].address());
        let max_weight = entries.iter().map(|e| e.weight).fold(0.0, f64::max);
        let mut table: Vec<Option<u32>> = vec![None; size as usize];
        let mut filled = 0u64;
        let mut round = 0u64;
        'fill: loop {
            for entry in &mut entries {
                if (round as f64) * entry.weight < entry.target {
                    continue;
                }
                entry.target += max_weight;
                loop {
                    let slot = ((entry.offset + entry.skip * entry.next) % size) as usize;
                    entry.next += 1;
                    if table[slot].is_none() {
                        table[slot] = Some(entry.index);
                        break;
                    }
                }
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
            round += 1;
        }
        let table = table.into_iter().map(|slot| slot.expect("every slot is filled before the loop ends")).collect();
        Maglev { hosts: hosts.to_vec(), table }
    }

    /// The host owning `hash`.
    pub fn choose_host(&self, hash: u64) -> Option<&HostSharedPtr> {
        let slot = self.table.get((hash % self.table.len().max(1) as u64) as usize)?;
        self.hosts.get(*slot as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_filled_and_shares_follow_weights() {
        let hosts =
            vec![crate::upstream::load_balancer::tests::host(1, 1), crate::upstream::load_balancer::tests::host(2, 3)];
        let maglev = Maglev::new(&hosts, Some(&MaglevLbConfig { table_size: Some(1009) }));
        assert_eq!(maglev.table.len(), 1009);
        let heavy = maglev.table.iter().filter(|i| **i == 1).count();
        assert!((740..775).contains(&heavy), "about 3/4 of 1009 slots, got {heavy}");
        assert!(Maglev::new(&[], None).choose_host(1).is_none());
    }
}

//! The stats store: every counter, gauge and histogram of one server, by full name (Envoy's
//! `ThreadLocalStoreImpl` with its scopes).
//!
//! Creating a stat (`counter(name)`) takes the registry lock and happens at config time; asking
//! twice for the same name returns a handle to the same stat. The handles write into per-shard
//! arenas ([`crate::arena`]) without a lock; admin renders copy the interned names and slots
//! under the registry lock, then format and sum the shards outside it ([`crate::render`]).
//! Names are interned ([`crate::symbol_table`]), so a stat costs ~20 bytes in the registry
//! rather than its full name.
//!
//! Names: [`Store::scope`]`("cluster.foo")` and [`Scope::counter`]`("upstream_rq_total")` give
//! `cluster.foo.upstream_rq_total`: the scope prefix has no trailing dot (one given is
//! dropped) and names are joined with `.`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxBuildHasher;

use crate::arena::{Arena, CHUNK_SLOTS, SCRATCH_SLOTS};
use crate::counter::{counter_value, Counter, CounterRef};
use crate::filter::Scopes;
use crate::gauge::{Gauge, GaugeRef};
use crate::histogram::{Histogram, HistogramRef, PackedLatch, RareHistogram, RARE_INDEX, SLOTS as HISTOGRAM_SLOTS};
use crate::symbol_table::{Id, StatName, SymbolTable};

/// All stats of one server, shared as `Arc<Store>` by the main thread and the workers.
pub struct Store {
    pub(crate) arena: Arc<Arena>,
    pub(crate) registry: Mutex<Registry>,
    /// `deferred_stat_options.enable_deferred_creation_stats`.
    deferred_creation: std::sync::atomic::AtomicBool,
}

/// The slot of every declared stat no handle was asked for yet ([`Store::declare_counter`]):
/// in the scratch area, where no handle ever points (overflowing stats write slot 0), so it
/// reads 0 for all of them.
pub(crate) const UNWRITTEN_SLOT: u32 = 1;

/// Interned name → stat, one map per stat type.
pub(crate) type StatMap<V> = HashMap<StatName, V, FxBuildHasher>;

/// Every stat's name and slot. Names are interned ([`SymbolTable`]): a stat costs its 8-byte
/// [`StatName`] and its slot index here, and shares its name's tokens with every other stat.
/// Unordered: admin renders sort the names they show.
#[derive(Default)]
pub(crate) struct Registry {
    next_slot: usize,
    pub(crate) names: SymbolTable,
    /// Counter name → slot.
    pub(crate) counters: StatMap<u32>,
    /// Gauge name → slot.
    pub(crate) gauges: StatMap<u32>,
    pub(crate) histograms: StatMap<HistogramEntry>,
    /// The groups of stats [`Store::declare_stats`] was asked to list, in the order first met.
    declared_groups: Vec<DeclaredGroup>,
    /// Prefix → the groups declared under it, one bit per index into `declared_groups`. A
    /// cluster declares ~24 stats in four groups under three prefixes (its unchanged and
    /// update stats, each priority's breaker gauges): three 8-byte entries here instead of ~24
    /// 12-byte entries in `counters` and `gauges` (0.28 KiB of heap per cluster at 10,000).
    declared: PrefixGroups,
    /// (prefix, group) → the first slot of a group created whole ([`Store::group_slots`]):
    /// its counters, then its gauges, in consecutive slots. One entry for a compact `stats!`
    /// struct (a cluster's membership stats), where each of its stats took an entry in
    /// `counters` or `gauges`.
    group_bases: HashMap<(Id, u8), u32, FxBuildHasher>,
}

/// The groups of each prefix, indexed by the prefix's id (one past it: the empty prefix,
/// `NO_PREFIX`, comes first). Prefix ids are dense, and most prefixes a cluster interns carry
/// groups (`cluster.<name>` and its breakers' two), so a vector costs less than a hash map
/// with its empty buckets (85–170 bytes per cluster at 10,000 clusters, against ~40).
#[derive(Default)]
struct PrefixGroups(Vec<GroupBits>);

impl PrefixGroups {
    fn index(prefix: Id) -> usize {
        prefix.wrapping_add(1) as usize
    }

    fn get(&self, prefix: Id) -> Option<GroupBits> {
        self.0.get(Self::index(prefix)).copied().filter(|bits| !bits.is_empty())
    }

    fn entry(&mut self, prefix: Id) -> &mut GroupBits {
        let index = Self::index(prefix);
        if index >= self.0.len() {
            self.0.resize(index + 1, GroupBits::default());
        }
        &mut self.0[index]
    }

    /// The prefixes with groups.
    fn iter(&self) -> impl Iterator<Item = (Id, GroupBits)> + '_ {
        let id = |index: usize| Id::try_from(index).ok().map(|i| i.wrapping_sub(1));
        self.0
            .iter()
            .enumerate()
            .filter(|(_, bits)| !bits.is_empty())
            .filter_map(move |(i, &bits)| Some((id(i)?, bits)))
    }
}

/// The groups of one prefix, one bit per index into `Registry::declared_groups`.
#[derive(Clone, Copy, Default)]
struct GroupBits {
    /// Listed at 0 until a handle asks for one of its names.
    declared: u32,
    /// Created whole: see `Registry::group_bases`.
    created: u32,
}

impl GroupBits {
    fn is_empty(&self) -> bool {
        self.declared == 0 && self.created == 0
    }
}

/// The kind of each stat of a `stats!` struct, for [`Store::declare_stats`].
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatKind {
    Counter,
    Gauge,
    Histogram,
    /// A [`RareHistogram`].
    RareHistogram,
}

/// One `stats!` struct's counters and gauges as interned last tokens, declared under many
/// prefixes (see `Registry::declared`).
struct DeclaredGroup {
    /// The struct's list of stats: its address identifies the group.
    stats: &'static [(StatKind, &'static str)],
    counters: Box<[Id]>,
    gauges: Box<[Id]>,
}

impl DeclaredGroup {
    /// Its counters (for `StatKind::Counter`) or gauges (otherwise), and where they start in
    /// the group's slots when it is created whole: its counters, then its gauges.
    fn scalars(&self, kind: StatKind) -> (&[Id], usize) {
        match kind {
            StatKind::Counter => (&self.counters, 0),
            _ => (&self.gauges, self.counters.len()),
        }
    }
}

/// `prefix.name`, or `name` under the empty prefix.
fn joined(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// At most this many groups are kept as bits; more are declared name by name.
const MAX_DECLARED_GROUPS: usize = u32::BITS as usize;

/// A registered histogram and its latched views.
pub(crate) struct HistogramEntry {
    /// Its first slot in the arena; [`RARE_INDEX`] for a rare histogram, whose live totals
    /// are packed with its views.
    pub(crate) index: u32,
    /// `None` until a latch sees a sample (most histograms of a large config never do); shared
    /// with the renders in progress, which read it outside the lock.
    pub(crate) latch: Option<PackedLatch>,
}

impl Registry {
    /// The bit of the group `stats` (added on first use); `None` past [`MAX_DECLARED_GROUPS`]
    /// or when a token cannot be interned.
    fn declared_group(&mut self, stats: &'static [(StatKind, &'static str)]) -> Option<u32> {
        let same = |group: &DeclaredGroup| std::ptr::eq(group.stats, stats);
        if let Some(index) = self.declared_groups.iter().position(same) {
            return u32::try_from(index).ok();
        }
        if self.declared_groups.len() >= MAX_DECLARED_GROUPS {
            return None;
        }
        let mut leaves = |kind: StatKind| -> Option<Box<[Id]>> {
            stats.iter().filter(|(k, _)| *k == kind).map(|(_, name)| self.names.intern_leaf(name)).collect()
        };
        let group = DeclaredGroup { stats, counters: leaves(StatKind::Counter)?, gauges: leaves(StatKind::Gauge)? };
        self.declared_groups.push(group);
        u32::try_from(self.declared_groups.len() - 1).ok()
    }

    /// The declared counters (or gauges) that no handle gave a slot yet, each once, under the
    /// prefixes `scopes` may show.
    pub(crate) fn declared_unwritten(&self, kind: StatKind, scopes: &mut Scopes<'_>) -> Vec<StatName> {
        let map = match kind {
            StatKind::Counter => &self.counters,
            _ => &self.gauges,
        };
        let mut out = Vec::new();
        for (prefix, groups) in self.declared.iter() {
            // A group also created whole has a slot for every name.
            let bits = groups.declared & !groups.created;
            if bits == 0 || !scopes.may_pass_under(prefix) {
                continue;
            }
            let first = out.len();
            for (bit, group) in self.declared_groups.iter().enumerate() {
                if bits & (1 << bit) == 0 {
                    continue;
                }
                let (leaves, _) = group.scalars(kind);
                for &leaf in leaves.iter() {
                    let name = StatName::new(prefix, leaf);
                    // Two groups of one prefix may both list a name: it is one stat.
                    let listed = out.get(first..).is_some_and(|names: &[StatName]| names.contains(&name));
                    let grouped = groups.created != 0 && self.group_slot(name, kind).is_some();
                    if !listed && !map.contains_key(&name) && !grouped {
                        out.push(name);
                    }
                }
            }
        }
        out
    }

    /// Whether `name` is a declared stat of `kind` (whether or not a handle gave it a slot).
    fn is_declared(&self, name: StatName, kind: StatKind) -> bool {
        let Some(bits) = self.declared.get(name.prefix()) else { return false };
        self.declared_groups.iter().enumerate().any(|(bit, group)| {
            let (leaves, _) = group.scalars(kind);
            bits.declared & (1 << bit) != 0 && leaves.contains(&name.leaf())
        })
    }

    /// The slot of `name` when it is a counter (or gauge) of a group created whole.
    fn group_slot(&self, name: StatName, kind: StatKind) -> Option<u32> {
        let bits = self.declared.get(name.prefix())?.created;
        if bits == 0 {
            return None;
        }
        self.declared_groups.iter().enumerate().filter(|(bit, _)| bits & (1 << bit) != 0).find_map(|(bit, group)| {
            if !matches!(kind, StatKind::Counter | StatKind::Gauge) {
                return None;
            }
            let (leaves, offset) = group.scalars(kind);
            let index = leaves.iter().position(|&leaf| leaf == name.leaf())?;
            let base = *self.group_bases.get(&(name.prefix(), u8::try_from(bit).ok()?))?;
            base.checked_add(u32::try_from(offset + index).ok()?)
        })
    }

    /// The counters (or gauges) of the groups created whole, with their slots, under the
    /// prefixes `scopes` may show.
    pub(crate) fn group_stats(&self, kind: StatKind, scopes: &mut Scopes<'_>) -> Vec<(StatName, u32)> {
        let mut out = Vec::new();
        for (&(prefix, bit), &base) in &self.group_bases {
            let Some(group) = self.declared_groups.get(usize::from(bit)) else { continue };
            let (leaves, offset) = group.scalars(kind);
            if leaves.is_empty() || !scopes.may_pass_under(prefix) {
                continue;
            }
            for (index, &leaf) in leaves.iter().enumerate() {
                let slot = u32::try_from(offset + index).ok().and_then(|i| base.checked_add(i));
                if let Some(slot) = slot {
                    out.push((StatName::new(prefix, leaf), slot));
                }
            }
        }
        out
    }

    /// The slots of every counter, in `counters` and in groups created whole.
    fn counter_slots(&self) -> impl Iterator<Item = u32> + '_ {
        let grouped = self.group_bases.iter().flat_map(|(&(_, bit), &base)| {
            let count = self.declared_groups.get(usize::from(bit)).map_or(0, |group| group.counters.len());
            (0..count).filter_map(move |i| u32::try_from(i).ok().and_then(|i| base.checked_add(i)))
        });
        self.counters.values().copied().chain(grouped)
    }

    /// The map of one-slot stats of `kind`: `gauges` for a gauge, `counters` otherwise.
    fn scalars(&mut self, kind: StatKind) -> &mut StatMap<u32> {
        match kind {
            StatKind::Gauge => &mut self.gauges,
            _ => &mut self.counters,
        }
    }

    /// Reserves `len` consecutive slots, never crossing a chunk; `None` when the arena is full.
    fn allocate(&mut self, arena: &Arena, len: usize) -> Option<u32> {
        if self.next_slot < SCRATCH_SLOTS {
            self.next_slot = SCRATCH_SLOTS;
        }
        let mut start = self.next_slot;
        if start % CHUNK_SLOTS + len > CHUNK_SLOTS {
            start = (start / CHUNK_SLOTS + 1) * CHUNK_SLOTS;
        }
        if start + len > Arena::capacity() {
            return None;
        }
        let index = u32::try_from(start).ok()?;
        arena.ensure(start, len);
        self.next_slot = start + len;
        Some(index)
    }
}

impl Store {
    /// A store with `shards` shards: workers + 1 (shard 0 is the main thread and any thread
    /// that is not a worker; see [`crate::set_thread_shard`]).
    pub fn new(shards: usize) -> Arc<Store> {
        Arc::new(Store {
            arena: Arc::new(Arena::new(shards)),
            registry: Mutex::new(Registry::default()),
            deferred_creation: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Envoy's `deferred_stat_options.enable_deferred_creation_stats`: stat groups that allow
    /// it (a cluster's traffic stats) are created on first use instead of up front.
    pub fn set_deferred_creation(&self, deferred: bool) {
        self.deferred_creation.store(deferred, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn deferred_creation(&self) -> bool {
        self.deferred_creation.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counter with this full name, created on first use.
    pub fn counter(&self, name: &str) -> Counter {
        Counter { arena: self.arena.clone(), index: self.scalar_index(name, StatKind::Counter) }
    }

    /// The gauge with this full name, created on first use.
    pub fn gauge(&self, name: &str) -> Gauge {
        Gauge { arena: self.arena.clone(), index: self.scalar_index(name, StatKind::Gauge) }
    }

    /// Lists the counter `name` (at 0) without giving it a slot yet: see
    /// [`Scope::declare_counter`].
    pub fn declare_counter(&self, name: &str) {
        self.declare(name, StatKind::Counter);
    }

    /// Lists the gauge `name` (at 0, unused) without giving it a slot yet.
    pub fn declare_gauge(&self, name: &str) {
        self.declare(name, StatKind::Gauge);
    }

    /// Lists the stats of one `stats!` struct under `prefix` without handles: counters and
    /// gauges at 0 with no slot until a handle asks for the name (as [`Self::declare_counter`]),
    /// histograms created. The struct's names are kept once for every prefix they are declared
    /// under (`Registry::declared`).
    #[doc(hidden)]
    pub fn declare_stats(&self, prefix: &str, stats: &'static [(StatKind, &'static str)]) {
        let join = |name: &str| joined(prefix, name);
        {
            let mut registry = self.lock();
            let group = registry.declared_group(stats);
            match (group, registry.names.intern_prefix(prefix)) {
                (Some(bit), Some(prefix)) => registry.declared.entry(prefix).declared |= 1 << bit,
                _ => {
                    drop(registry);
                    for (kind, name) in stats {
                        match kind {
                            StatKind::Counter => self.declare_counter(&join(name)),
                            StatKind::Gauge => self.declare_gauge(&join(name)),
                            StatKind::Histogram | StatKind::RareHistogram => {}
                        }
                    }
                }
            }
        }
        for (kind, name) in stats {
            match kind {
                StatKind::Histogram => drop(self.histogram(&join(name))),
                StatKind::RareHistogram => drop(self.register_rare(&join(name))),
                StatKind::Counter | StatKind::Gauge => {}
            }
        }
    }

    /// Creates every stat of a `stats!` struct under `prefix` (a compact struct's `new`): its
    /// counters and gauges in consecutive slots under one registry entry
    /// (`Registry::group_bases`), its histograms as [`Self::histogram`] (a rare one as
    /// [`Self::rare_histogram`], with no slot). Returns each stat's slot, in the order of `stats`.
    /// When one of the names already has a slot of its own, or the group cannot be kept as a
    /// bit, each stat is created by name instead.
    #[doc(hidden)]
    pub fn group_slots(&self, prefix: &str, stats: &'static [(StatKind, &'static str)]) -> Vec<u32> {
        let join = |name: &str| joined(prefix, name);
        let mut whole = self.create_group(prefix, stats).map(Vec::into_iter);
        stats
            .iter()
            .map(|(kind, name)| match (kind, whole.as_mut()) {
                (StatKind::Histogram, _) => self.histogram(&join(name)).index,
                (StatKind::Counter | StatKind::Gauge, Some(slots)) => slots.next().unwrap_or(0),
                (StatKind::Counter | StatKind::Gauge, None) => self.scalar_index(&join(name), *kind),
                // Listed; it has no slot to keep (see `RareHistogram`).
                (StatKind::RareHistogram, _) => {
                    let _ = self.register_rare(&join(name));
                    0
                }
            })
            .collect()
    }

    /// The slots of the counters and gauges of `stats` created whole under `prefix`, in the
    /// order of `stats`; `None` when they must be created by name (see [`Self::group_slots`]).
    fn create_group(&self, prefix: &str, stats: &'static [(StatKind, &'static str)]) -> Option<Vec<u32>> {
        let mut registry = self.lock();
        let bit = registry.declared_group(stats)?;
        let prefix = registry.names.intern_prefix(prefix)?;
        let key = (prefix, u8::try_from(bit).ok()?);
        let group = registry.declared_groups.get(usize::try_from(bit).ok()?)?;
        let scalars: Vec<(StatKind, StatName)> = [StatKind::Counter, StatKind::Gauge]
            .into_iter()
            .flat_map(|kind| {
                let (leaves, _) = group.scalars(kind);
                leaves.iter().map(move |&leaf| (kind, StatName::new(prefix, leaf)))
            })
            .collect();
        let base = match registry.group_bases.get(&key) {
            Some(&base) => base,
            None => {
                let own_slot = |registry: &mut Registry, (kind, name): &(StatKind, StatName)| {
                    registry.scalars(*kind).get(name).is_some_and(|&slot| slot != UNWRITTEN_SLOT)
                };
                if scalars.is_empty() || scalars.iter().any(|stat| own_slot(&mut registry, stat)) {
                    return None;
                }
                let base = registry.allocate(&self.arena, scalars.len())?;
                // Names only declared until now are the group's from here on.
                for (kind, name) in &scalars {
                    registry.scalars(*kind).remove(name);
                }
                registry.group_bases.insert(key, base);
                registry.declared.entry(prefix).created |= 1 << bit;
                base
            }
        };
        // In the order of `stats`: the group's slots hold its counters, then its gauges.
        let counters = scalars.iter().filter(|(kind, _)| *kind == StatKind::Counter).count();
        let (mut counter, mut gauge) = (0, counters);
        let mut slots = Vec::with_capacity(scalars.len());
        for (kind, _) in stats {
            let offset = match kind {
                StatKind::Counter => &mut counter,
                StatKind::Gauge => &mut gauge,
                StatKind::Histogram | StatKind::RareHistogram => continue,
            };
            slots.push(base.checked_add(u32::try_from(*offset).ok()?)?);
            *offset += 1;
        }
        Some(slots)
    }

    fn declare(&self, name: &str, kind: StatKind) {
        let mut registry = self.lock();
        if let Some(name) = registry.names.intern(name) {
            if registry.group_slot(name, kind).is_none() {
                registry.scalars(kind).entry(name).or_insert(UNWRITTEN_SLOT);
            }
        }
    }

    /// The slot of the one-slot stat `name` in the map `kind` picks, allocated on first use,
    /// or on the first handle to a declared stat (slot 0, the discarded scratch slot, when the
    /// arena is full).
    fn scalar_index(&self, name: &str, kind: StatKind) -> u32 {
        let mut registry = self.lock();
        let Some(name) = registry.names.intern(name) else { return 0 };
        if let Some(&index) = registry.scalars(kind).get(&name) {
            if index != UNWRITTEN_SLOT {
                return index;
            }
        }
        if let Some(index) = registry.group_slot(name, kind) {
            return index;
        }
        match registry.allocate(&self.arena, 1) {
            Some(index) => {
                registry.scalars(kind).insert(name, index);
                index
            }
            None => 0,
        }
    }

    /// The histogram with this full name, created on first use. Values are in the stat's unit:
    /// milliseconds for Envoy's `*_ms` and `*_time` histograms, raw units otherwise.
    pub fn histogram(&self, name: &str) -> Histogram {
        let mut registry = self.lock();
        let index = match registry.names.intern(name) {
            None => 0,
            Some(name) => match registry.histograms.get(&name) {
                Some(entry) => entry.index,
                None => match registry.allocate(&self.arena, HISTOGRAM_SLOTS) {
                    Some(index) => {
                        registry.histograms.insert(name, HistogramEntry { index, latch: None });
                        index
                    }
                    None => 0,
                },
            },
        };
        Histogram { arena: self.arena.clone(), index }
    }

    /// The rare histogram with this full name (see [`RareHistogram`]), created on first use.
    /// A histogram of that name that already has arena slots stays as it is.
    pub fn rare_histogram(self: &Arc<Self>, name: &str) -> RareHistogram {
        RareHistogram { store: self.clone(), name: self.register_rare(name) }
    }

    fn register_rare(&self, name: &str) -> Option<StatName> {
        let mut registry = self.lock();
        let name = registry.names.intern(name)?;
        registry.histograms.entry(name).or_insert(HistogramEntry { index: RARE_INDEX, latch: None });
        Some(name)
    }

    /// Records `value` into the histogram `name`: into its live totals when it is rare,
    /// into the arena otherwise.
    pub(crate) fn record_rare(&self, name: StatName, value: u64) {
        let mut registry = self.lock();
        let Some(entry) = registry.histograms.get_mut(&name) else { return };
        if entry.index == RARE_INDEX {
            PackedLatch::record_rare(&mut entry.latch, value);
        } else {
            HistogramRef::new(&self.arena, entry.index).record(value);
        }
    }

    /// A scope whose stats are named `prefix.<name>`; a trailing dot in `prefix` is ignored.
    pub fn scope(self: &Arc<Self>, prefix: &str) -> Scope {
        Scope { store: self.clone(), prefix: Arc::from(prefix.trim_end_matches('.')) }
    }

    /// Admin `/reset_counters`: every counter reads 0 afterwards. Workers keep adding into
    /// their shards; the store only records the current sum as the counter's offset.
    pub fn reset_counters(&self) {
        let registry = self.lock();
        self.arena.reset(registry.counter_slots());
    }

    /// The value of the counter with this full name, if it exists.
    pub fn counter_value(&self, name: &str) -> Option<u64> {
        let registry = self.lock();
        let name = registry.names.find(name)?;
        match registry.counters.get(&name).copied().or_else(|| registry.group_slot(name, StatKind::Counter)) {
            Some(index) => Some(counter_value(&self.arena, index)),
            None => registry.is_declared(name, StatKind::Counter).then_some(0),
        }
    }

    /// The value of the gauge with this full name, if it exists.
    pub fn gauge_value(&self, name: &str) -> Option<u64> {
        let registry = self.lock();
        let name = registry.names.find(name)?;
        match registry.gauges.get(&name).copied().or_else(|| registry.group_slot(name, StatKind::Gauge)) {
            Some(index) => Some(self.arena.sum(index)),
            None => registry.is_declared(name, StatKind::Gauge).then_some(0),
        }
    }

    /// Called by the main thread at every stats flush (`stats_flush_interval`, 5 s): the samples
    /// recorded since the previous call become each histogram's "interval" view, and all
    /// samples so far its "cumulative" view (Envoy's `ParentHistogramImpl::merge`).
    pub fn latch_histograms(&self) {
        let mut registry = self.lock();
        for entry in registry.histograms.values_mut() {
            PackedLatch::latch(&mut entry.latch, &self.arena, entry.index);
        }
    }

    /// Number of shards (workers + 1).
    pub fn shards(&self) -> usize {
        self.arena.shard_count()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registry = self.lock();
        f.debug_struct("Store")
            .field("shards", &self.arena.shard_count())
            .field("counters", &registry.counters.len())
            .field("gauges", &registry.gauges.len())
            .field("histograms", &registry.histograms.len())
            .finish()
    }
}

/// A name prefix over a store, e.g. `cluster.foo` for one cluster's stats (Envoy's
/// `Stats::Scope`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Scope {
    store: Arc<Store>,
    /// Shared by the scope's clones (a cluster keeps its scope in several of its parts).
    prefix: Arc<str>,
}

impl Scope {
    fn name(&self, name: &str) -> String {
        joined(&self.prefix, name)
    }

    /// The counter `prefix.name`.
    pub fn counter(&self, name: &str) -> Counter {
        self.store.counter(&self.name(name))
    }

    /// The gauge `prefix.name`.
    pub fn gauge(&self, name: &str) -> Gauge {
        self.store.gauge(&self.name(name))
    }

    /// The histogram `prefix.name`.
    pub fn histogram(&self, name: &str) -> Histogram {
        self.store.histogram(&self.name(name))
    }

    /// The rare histogram `prefix.name` (see [`RareHistogram`]).
    pub fn rare_histogram(&self, name: &str) -> RareHistogram {
        self.store.rare_histogram(&self.name(name))
    }

    /// Lists the counter `prefix.name` in admin output (at 0, as Envoy lists every stat of a
    /// component) without giving it memory to count in: for stats that legate never changes,
    /// or changes only in some configurations (a DNS cluster's `update_*`). The first
    /// [`Self::counter`] of that name gives it its slot.
    pub fn declare_counter(&self, name: &str) {
        self.store.declare_counter(&self.name(name));
    }

    /// As [`Self::declare_counter`], for a gauge (listed at 0 and unused until a handle sets it).
    pub fn declare_gauge(&self, name: &str) {
        self.store.declare_gauge(&self.name(name));
    }

    /// Creates every stat of a compact `stats!` struct under this scope (its `new`); see
    /// [`Store::group_slots`].
    #[doc(hidden)]
    pub fn group_slots(&self, stats: &'static [(StatKind, &'static str)]) -> Vec<u32> {
        self.store.group_slots(&self.prefix, stats)
    }

    /// Declares every stat of a `stats!` struct under this scope (its `declare`).
    #[doc(hidden)]
    pub fn declare_stats(&self, stats: &'static [(StatKind, &'static str)]) {
        self.store.declare_stats(&self.prefix, stats);
    }

    /// A nested scope `prefix.sub` (a trailing dot in `sub` is ignored).
    pub fn scope(&self, sub: &str) -> Scope {
        Scope { store: self.store.clone(), prefix: Arc::from(self.name(sub.trim_end_matches('.'))) }
    }

    /// The prefix, without a trailing dot.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store this scope creates stats in.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The arena of this scope's stats, for a compact `stats!` struct.
    #[doc(hidden)]
    pub fn stat_arena(&self) -> StatArena {
        StatArena(self.store.arena.clone())
    }
}

/// What a compact `stats!` struct keeps once for all its stats (each keeps its 4-byte slot),
/// where each handle would keep a pointer of its own: see [`crate::stats!`].
#[doc(hidden)]
#[derive(Clone)]
pub struct StatArena(Arc<Arena>);

impl StatArena {
    #[inline]
    pub fn counter(&self, slot: u32) -> CounterRef<'_> {
        CounterRef::new(&self.0, slot)
    }

    #[inline]
    pub fn gauge(&self, slot: u32) -> GaugeRef<'_> {
        GaugeRef::new(&self.0, slot)
    }

    #[inline]
    pub fn histogram(&self, slot: u32) -> HistogramRef<'_> {
        HistogramRef::new(&self.0, slot)
    }

    /// An owned handle to the counter at `slot`, for a holder that outlives the borrow.
    pub fn counter_handle(&self, slot: u32) -> Counter {
        Counter { arena: self.0.clone(), index: slot }
    }
}

impl fmt::Debug for StatArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatArena")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::HistogramLatch;
    use crate::set_thread_shard;

    #[test]
    fn same_name_same_stat() {
        let store = Store::new(2);
        store.counter("a.b").inc();
        store.counter("a.b").add(2);
        assert_eq!(store.counter_value("a.b"), Some(3));
        let scope = store.scope("a.");
        assert_eq!(scope.prefix(), "a");
        scope.counter("b").inc();
        assert_eq!(store.counter_value("a.b"), Some(4));
        assert_eq!(scope.scope("c").counter("d").value(), 0);
        assert!(store.counter_value("a.c.d").is_some());
        assert_eq!(store.counter_value("missing"), None);
        assert_eq!(store.scope("").counter("top").value(), 0);
        assert!(store.counter_value("top").is_some());
    }

    #[test]
    fn shards_are_summed() {
        let store = Store::new(3);
        let counter = store.counter("c");
        let gauge = store.gauge("g");
        let threads: Vec<_> = (1..=2)
            .map(|shard| {
                let (counter, gauge) = (counter.clone(), gauge.clone());
                std::thread::spawn(move || {
                    set_thread_shard(shard);
                    for _ in 0..10_000 {
                        counter.inc();
                        gauge.inc();
                    }
                    // Decrements on one worker cancel increments on another.
                    if shard == 2 {
                        gauge.sub(15_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        counter.add(5); // main thread, shard 0
        assert_eq!(counter.value(), 20_005);
        assert_eq!(gauge.value(), 5_000);
        // Each shard holds its own part.
        assert_eq!(store.arena.sum(counter.index), 20_005);
        assert!(store.arena.any_nonzero(counter.index));
    }

    #[test]
    fn out_of_range_shard_falls_back_to_zero() {
        let store = Store::new(1);
        let counter = store.counter("c");
        std::thread::spawn(move || {
            set_thread_shard(7);
            counter.inc();
        })
        .join()
        .unwrap();
        assert_eq!(store.counter_value("c"), Some(1));
    }

    #[test]
    fn reset_counters_keeps_counting() {
        let store = Store::new(2);
        let c = store.counter("c");
        c.add(7);
        store.reset_counters();
        assert_eq!(c.value(), 0);
        c.inc();
        assert_eq!(store.counter_value("c"), Some(1));
    }

    #[test]
    fn gauge_set_then_value() {
        let store = Store::new(2);
        let g = store.gauge("g");
        g.set(42);
        assert_eq!(g.value(), 42);
        g.set(3);
        assert_eq!(store.gauge_value("g"), Some(3));
        g.dec();
        g.dec();
        g.dec();
        assert_eq!(g.value(), 0);
    }

    #[test]
    fn histograms_never_cross_a_chunk() {
        let store = Store::new(1);
        for i in 0..200 {
            let h = store.histogram(&format!("h{i}"));
            let start = h.index as usize;
            assert_eq!(start / CHUNK_SLOTS, (start + HISTOGRAM_SLOTS - 1) / CHUNK_SLOTS);
            store.counter(&format!("c{i}"));
        }
    }

    /// The latched views of histogram `name` (default, i.e. empty, before any sample).
    fn latch_of(store: &Store, name: &str) -> HistogramLatch {
        let registry = store.lock();
        let name = registry.names.find(name).expect("interned");
        registry
            .histograms
            .get(&name)
            .and_then(|entry| entry.latch.as_ref().map(PackedLatch::unpack))
            .unwrap_or_default()
    }

    #[test]
    fn histogram_latch_moves_interval_into_cumulative() {
        let store = Store::new(2);
        let h = store.histogram("h");
        store.latch_histograms();
        assert!(store.lock().histograms.values().all(|e| e.latch.is_none()), "no views kept without a sample");
        h.record(3);
        h.record(7);
        assert!(!latch_of(&store, "h").used(), "not visible before a latch");
        store.latch_histograms();
        h.record(100);
        let latch = latch_of(&store, "h");
        assert_eq!(latch.interval.count(), 2);
        assert_eq!(latch.cumulative.count(), 2);
        assert_eq!(latch.cumulative.sum, 10);
        store.latch_histograms();
        let latch = latch_of(&store, "h");
        assert_eq!(latch.interval.count(), 1);
        assert_eq!(latch.interval.sum, 100);
        assert_eq!(latch.cumulative.count(), 3);
        assert_eq!(latch.cumulative.sum, 110);
        store.latch_histograms();
        let latch = latch_of(&store, "h");
        assert_eq!(latch.interval.count(), 0);
        assert!(latch.used());
    }

    #[test]
    fn rare_histogram_latches_as_an_arena_one_without_slots() {
        let store = Store::new(2);
        let arena_one = store.histogram("arena");
        let slots_before = store.lock().next_slot;
        let rare = store.scope("cluster.a").rare_histogram("update_duration");
        assert_eq!(store.lock().next_slot, slots_before, "no arena slots");
        for h in [&store.rare_histogram("cluster.a.update_duration"), &rare] {
            h.record(3);
        }
        arena_one.record(3);
        arena_one.record(3);
        assert!(!latch_of(&store, "cluster.a.update_duration").used(), "not visible before a latch");
        store.latch_histograms();
        rare.record(100);
        arena_one.record(100);
        let (latch, arena_latch) = (latch_of(&store, "cluster.a.update_duration"), latch_of(&store, "arena"));
        assert_eq!((latch.interval, latch.cumulative), (arena_latch.interval, arena_latch.cumulative));
        assert_eq!((latch.cumulative.count(), latch.cumulative.sum), (2, 6));
        for _ in 0..2 {
            store.latch_histograms();
            let (latch, arena_latch) = (latch_of(&store, "cluster.a.update_duration"), latch_of(&store, "arena"));
            assert_eq!((latch.interval, latch.cumulative), (arena_latch.interval, arena_latch.cumulative));
        }
        let latch = latch_of(&store, "cluster.a.update_duration");
        assert_eq!((latch.interval.count(), latch.cumulative.count(), latch.cumulative.sum), (0, 3, 106));
        let text = store.render_text(None, true, crate::StatTypes::All);
        let line = |name: &str| text.lines().find_map(|l| l.strip_prefix(name).map(str::to_owned));
        assert_eq!(line("cluster.a.update_duration: "), line("arena: "), "{text}");
        assert!(line("arena: ").is_some_and(|l| l.starts_with("P0(nan,1) ")), "{text}");
    }

    #[test]
    fn rare_histogram_of_an_arena_histogram_records_into_the_arena() {
        let store = Store::new(1);
        let h = store.histogram("h");
        store.rare_histogram("h").record(7);
        h.record(7);
        store.latch_histograms();
        assert_eq!(latch_of(&store, "h").cumulative.count(), 2);
    }

    #[test]
    fn declared_stats_read_zero_until_a_handle_gives_them_a_slot() {
        let store = Store::new(2);
        let scope = store.scope("cluster.a");
        scope.declare_counter("bind_errors");
        scope.declare_gauge("version");
        store.scope("cluster.b").declare_counter("bind_errors");
        assert_eq!(store.counter_value("cluster.a.bind_errors"), Some(0));
        assert_eq!(store.gauge_value("cluster.a.version"), Some(0));
        assert!(store.render_text(None, false, crate::StatTypes::All).contains("cluster.b.bind_errors: 0\n"));
        assert!(!store.render_text(None, true, crate::StatTypes::All).contains("bind_errors"), "declared: unused");
        store.reset_counters();
        let version = scope.gauge("version");
        version.set(7);
        scope.declare_gauge("version");
        assert_eq!(store.gauge_value("cluster.a.version"), Some(7), "declaring again changes nothing");
        assert_eq!(store.counter_value("cluster.b.bind_errors"), Some(0));
        assert_eq!(store.lock().next_slot, SCRATCH_SLOTS + 1, "a slot for the one handle only");
        let prometheus = store.render_prometheus(None, false, crate::StatTypes::All);
        assert!(prometheus.contains("envoy_cluster_bind_errors{envoy_cluster_name=\"a\"} 0\n"), "{prometheus}");
        assert!(prometheus.contains("envoy_cluster_bind_errors{envoy_cluster_name=\"b\"} 0\n"), "{prometheus}");
        assert!(prometheus.contains("envoy_cluster_version{envoy_cluster_name=\"a\"} 7\n"), "{prometheus}");
    }

    /// Stats structs whose handles the tests never take.
    #[allow(dead_code)]
    mod declared {
        crate::stats! {
            /// Declared under many prefixes.
            pub struct UnchangedStats {
                counter bind_errors,
                gauge version,
                histogram never_recorded,
            }
        }

        crate::stats! {
            /// Shares a name with `UnchangedStats`.
            pub struct OtherStats {
                counter bind_errors,
                counter assignment_stale,
            }
        }
    }
    use declared::{OtherStats, UnchangedStats};

    #[test]
    fn declared_groups_list_each_name_once_until_a_handle_takes_it() {
        let store = Store::new(2);
        for i in 0..3 {
            let scope = store.scope(&format!("cluster.c{i}"));
            UnchangedStats::declare(&scope);
            OtherStats::declare(&scope);
            UnchangedStats::declare(&scope);
        }
        UnchangedStats::declare(&store.scope(""));
        {
            let registry = store.lock();
            assert!(registry.counters.is_empty() && registry.gauges.is_empty(), "no entry per name");
            assert_eq!(registry.declared.iter().count(), 4);
            assert_eq!(registry.declared_groups.len(), 2);
        }
        assert_eq!(store.counter_value("cluster.c1.bind_errors"), Some(0));
        assert_eq!(store.counter_value("cluster.c1.assignment_stale"), Some(0));
        assert_eq!(store.counter_value("cluster.c1.version"), None, "a gauge, not a counter");
        assert_eq!(store.gauge_value("cluster.c2.version"), Some(0));
        assert_eq!(store.gauge_value("version"), Some(0));
        assert_eq!(store.counter_value("cluster.c3.bind_errors"), None);
        store.scope("cluster.c1").counter("bind_errors").add(4);
        store.scope("cluster.c2").gauge("version").set(9);
        let text = store.render_text(None, false, crate::StatTypes::All);
        assert_eq!(text.matches("cluster.c1.bind_errors: ").count(), 1, "{text}");
        assert!(text.contains("cluster.c1.bind_errors: 4\n"), "{text}");
        assert!(text.contains("cluster.c0.bind_errors: 0\n"), "{text}");
        assert!(text.contains("cluster.c2.version: 9\n"), "{text}");
        assert!(text.contains("\nversion: 0\n"), "{text}");
        assert!(text.contains("cluster.c0.never_recorded: No recorded values\n"), "{text}");
        let used = store.render_text(None, true, crate::StatTypes::All);
        assert_eq!(used, "cluster.c1.bind_errors: 4\ncluster.c2.version: 9\n");
        store.reset_counters();
        assert_eq!(store.counter_value("cluster.c1.bind_errors"), Some(0));
    }

    crate::stats! {
        /// A compact struct: created as one group.
        pub compact struct GroupStats {
            counter rq_total,
            gauge cx_active,
            histogram rq_time,
            counter rq_error,
            gauge weight,
        }
    }

    #[test]
    fn compact_struct_is_one_group_with_each_name_listed_once() {
        let store = Store::new(2);
        let a = GroupStats::new(&store.scope("cluster.a"));
        let b = GroupStats::new(&store.scope("cluster.b"));
        {
            let registry = store.lock();
            assert!(registry.counters.is_empty() && registry.gauges.is_empty(), "no entry per name");
            assert_eq!(registry.group_bases.len(), 2);
        }
        a.rq_total().inc();
        a.rq_error().add(2);
        a.cx_active().set(3);
        b.weight().set(7);
        a.rq_time().record(5);
        assert_eq!(store.counter_value("cluster.a.rq_total"), Some(1));
        assert_eq!(store.counter_value("cluster.a.rq_error"), Some(2));
        assert_eq!(store.gauge_value("cluster.a.cx_active"), Some(3));
        assert_eq!(store.gauge_value("cluster.b.weight"), Some(7));
        assert_eq!(store.counter_value("cluster.b.rq_total"), Some(0));
        assert_eq!(store.counter_value("cluster.a.cx_active"), None, "a gauge, not a counter");
        // By name, the same stat.
        store.scope("cluster.a").counter("rq_total").inc();
        assert_eq!(a.rq_total().value(), 2);
        // Created again, or declared, it stays one stat with each name once.
        let again = GroupStats::new(&store.scope("cluster.a"));
        assert_eq!(again.rq_total().value(), 2);
        GroupStats::declare(&store.scope("cluster.a"));
        store.scope("cluster.a").declare_counter("rq_error");
        store.latch_histograms();
        let text = store.render_text(None, false, crate::StatTypes::All);
        for name in
            ["cluster.a.rq_total: 2\n", "cluster.a.rq_error: 2\n", "cluster.a.cx_active: 3\n", "cluster.b.weight: 7\n"]
        {
            assert_eq!(text.matches(name).count(), 1, "{name} in {text}");
        }
        assert_eq!(text.matches("cluster.a.rq_time: ").count(), 1, "{text}");
        assert_eq!(text.matches("cluster.b.rq_total: 0\n").count(), 1, "{text}");
        let used = store.render_text(None, true, crate::StatTypes::All);
        assert!(!used.contains("cluster.b.rq_total"), "{used}");
        assert!(used.contains("cluster.b.weight: 7\n"), "{used}");
        let filtered =
            store.render_text(Some(&crate::Filter::new("cluster\\.b\\.").unwrap()), false, crate::StatTypes::All);
        assert!(!filtered.contains("cluster.a."), "{filtered}");
        assert!(filtered.contains("cluster.b.weight: 7\n"), "{filtered}");
        store.reset_counters();
        assert_eq!(a.rq_total().value(), 0);
        assert_eq!(store.counter_value("cluster.a.rq_error"), Some(0));
    }

    #[test]
    fn compact_struct_after_a_declaration_or_a_handle_by_name() {
        let store = Store::new(1);
        // Declared first: the group takes the names over.
        GroupStats::declare(&store.scope("cluster.d"));
        let d = GroupStats::new(&store.scope("cluster.d"));
        d.rq_total().inc();
        // A name with a slot of its own first: the struct is made name by name, on that slot.
        store.scope("cluster.h").counter("rq_error").add(5);
        let h = GroupStats::new(&store.scope("cluster.h"));
        assert_eq!(h.rq_error().value(), 5);
        h.cx_active().set(1);
        let text = store.render_text(None, false, crate::StatTypes::All);
        for name in [
            "cluster.d.rq_total: 1\n",
            "cluster.d.rq_error: 0\n",
            "cluster.h.rq_error: 5\n",
            "cluster.h.cx_active: 1\n",
        ] {
            assert_eq!(text.matches(name).count(), 1, "{name} in {text}");
        }
        let registry = store.lock();
        assert_eq!(registry.group_bases.len(), 1, "cluster.d only");
        assert_eq!(registry.counters.len() + registry.gauges.len(), 4, "cluster.h's, by name");
    }

    #[test]
    fn names_are_interned_once() {
        let store = Store::new(1);
        for i in 0..50 {
            let scope = store.scope(&format!("cluster.svc{i}"));
            scope.counter("upstream_rq_total");
            scope.gauge("membership_total");
            scope.scope("circuit_breakers.default").gauge("cx_open");
        }
        let registry = store.lock();
        assert_eq!(registry.counters.len(), 50);
        assert_eq!(registry.gauges.len(), 100);
        let names = registry.names.names();
        let mut all: Vec<String> = registry.gauges.keys().map(|name| names.full_name(*name)).collect();
        all.sort();
        assert_eq!(all.first().map(String::as_str), Some("cluster.svc0.circuit_breakers.default.cx_open"));
        assert_eq!(all.last().map(String::as_str), Some("cluster.svc9.membership_total"));
    }
}

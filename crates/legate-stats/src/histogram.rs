//! Histogram: a distribution of values, in Envoy's default buckets (`Stats::Histogram`,
//! `HistogramSettingsImpl::defaultBuckets`).
//!
//! A histogram occupies [`SLOTS`] consecutive slots in each shard, never crossing a chunk: one
//! count per bucket of [`BUCKET_BOUNDS`] plus an overflow bucket, then the sum of the values. The
//! sample count is the sum of the buckets, so a reader never sees count and buckets disagree.
//!
//! Like Envoy's `ParentHistogramImpl::merge`, the main thread latches every stats flush
//! ([`crate::Store::latch_histograms`]): the samples recorded since the previous latch become
//! the "interval" view and all samples up to this latch the "cumulative" view. Admin output only
//! shows latched data, so a sample recorded after the last latch is not visible yet, and a
//! histogram is "used" once a latch has seen a sample (Envoy's `ParentHistogram::used`).
//!
//! Differences from Envoy: Envoy records into a log-linear `circllhist` (two significant
//! digits) and estimates quantiles from it; legate keeps only the default Prometheus buckets
//! and interpolates linearly inside a bucket, so the `P..` quantiles are coarser. Prometheus
//! bucket counts are exact (`value <= le`).

use std::fmt;
use std::sync::Arc;

use crate::arena::Arena;

/// Envoy's default histogram bucket upper bounds (`le`), in the histogram's unit (usually ms).
pub const BUCKET_BOUNDS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// The same bounds for integer samples: a value `v` falls in bucket `i` when `v <= INT_BOUNDS[i]`
/// (so `le="0.5"` holds only 0).
const INT_BOUNDS: [u64; 19] =
    [0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

/// Buckets including the overflow bucket (`le="+Inf"` only).
pub(crate) const BUCKETS: usize = INT_BOUNDS.len() + 1;
/// Index of the sum slot.
const SUM_SLOT: usize = BUCKETS;
/// Slots one histogram takes in each shard.
pub(crate) const SLOTS: usize = BUCKETS + 1;

/// Envoy's supported quantiles (`HistogramStatisticsImpl::supportedQuantiles`), as fractions.
pub const SUPPORTED_QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// A handle to one histogram; cheap to clone, every clone records into the same stat.
#[derive(Clone)]
pub struct Histogram {
    pub(crate) arena: Arc<Arena>,
    pub(crate) index: u32,
}

impl Histogram {
    /// Records one sample. Hot path: two adds into the current thread's shard.
    #[inline]
    pub fn record(&self, value: u64) {
        HistogramRef { arena: &self.arena, index: self.index }.record(value);
    }

    /// Its first slot, for a compact `stats!` struct to keep instead of the handle.
    #[doc(hidden)]
    pub fn slot(&self) -> u32 {
        self.index
    }
}

/// A histogram borrowed from a compact `stats!` struct (see [`crate::stats!`]): the same
/// operation as [`Histogram`], without a pointer of its own to the arena.
#[derive(Clone, Copy)]
pub struct HistogramRef<'a> {
    arena: &'a Arena,
    index: u32,
}

impl<'a> HistogramRef<'a> {
    pub(crate) fn new(arena: &'a Arena, index: u32) -> Self {
        HistogramRef { arena, index }
    }

    /// Records one sample (as [`Histogram::record`]).
    #[inline]
    pub fn record(self, value: u64) {
        let bucket = bucket_of(value);
        if let Some((chunk, exclusive)) = self.arena.local_chunk(self.index) {
            let base = self.index as usize % crate::arena::CHUNK_SLOTS;
            if let Some(slot) = chunk.slot(base + bucket) {
                crate::arena::add(slot, 1, exclusive);
            }
            if let Some(slot) = chunk.slot(base + SUM_SLOT) {
                crate::arena::add(slot, value, exclusive);
            }
        }
    }
}

/// A histogram of rare samples that only the main thread records, e.g. how long each xDS
/// update took to apply (`cluster.<name>.update_duration`, one sample per update of each of
/// 10,000 EDS clusters). It has no slots in the arena (21 a histogram, 168 bytes in the main
/// thread's shard alone): its totals are packed with its latched views, ~80 bytes once it has
/// samples, and [`Self::record`] takes the store's registry lock and finds it by name.
#[derive(Clone)]
pub struct RareHistogram {
    pub(crate) store: Arc<crate::Store>,
    /// `None` when the name could not be interned (the symbol table is full): records are
    /// dropped, as an arena histogram's past the arena's end.
    pub(crate) name: Option<crate::symbol_table::StatName>,
}

impl RareHistogram {
    /// Records one sample. Not for a hot path: it locks the registry.
    pub fn record(&self, value: u64) {
        if let Some(name) = self.name {
            self.store.record_rare(name, value);
        }
    }
}

impl fmt::Debug for RareHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RareHistogram").finish_non_exhaustive()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram").field("index", &self.index).finish()
    }
}

/// The bucket a sample falls in: the first bound `>= value`, or the overflow bucket.
#[inline]
fn bucket_of(value: u64) -> usize {
    INT_BOUNDS.partition_point(|&bound| bound < value)
}

/// Counts per bucket (overflow last) and the sum of the samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Samples per bucket, not cumulative; the last entry is the overflow bucket.
    pub buckets: [u64; BUCKETS],
    /// Sum of all samples.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Reads the live totals of the histogram at `index`, summed over all shards.
    pub(crate) fn read(arena: &Arena, index: u32) -> HistogramSnapshot {
        // The buckets, then the sum, in consecutive slots.
        let mut slots = [0u64; BUCKETS + 1];
        arena.sum_into(index, &mut slots);
        let mut snapshot = HistogramSnapshot::default();
        if let Some((sum, buckets)) = slots.split_last() {
            snapshot.buckets.copy_from_slice(buckets);
            snapshot.sum = *sum;
        }
        snapshot
    }

    /// Adds one sample.
    pub(crate) fn record(&mut self, value: u64) {
        if let Some(bucket) = self.buckets.get_mut(bucket_of(value)) {
            *bucket = bucket.wrapping_add(1);
        }
        self.sum = self.sum.wrapping_add(value);
    }

    /// `self - earlier`, slot by slot (wrapping, as the totals only grow).
    pub(crate) fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut diff = HistogramSnapshot { sum: self.sum.wrapping_sub(earlier.sum), ..Default::default() };
        for (d, (now, before)) in diff.buckets.iter_mut().zip(self.buckets.iter().zip(earlier.buckets.iter())) {
            *d = now.wrapping_sub(*before);
        }
        diff
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |acc, n| acc.wrapping_add(*n))
    }

    /// Cumulative counts per bound of [`BUCKET_BOUNDS`] (Prometheus `_bucket{le=..}`).
    pub fn cumulative_buckets(&self) -> [u64; BUCKET_BOUNDS.len()] {
        let mut out = [0u64; BUCKET_BOUNDS.len()];
        let mut running = 0u64;
        for (o, n) in out.iter_mut().zip(self.buckets.iter()) {
            running = running.wrapping_add(*n);
            *o = running;
        }
        out
    }

    /// Estimates quantile `q` (0..=1): NaN without samples, as Envoy; otherwise linear
    /// interpolation inside the bucket holding rank `q × count`.
    pub fn quantile(&self, q: f64) -> f64 {
        let count = self.count();
        if count == 0 {
            return f64::NAN;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut seen = 0u64;
        let mut last = 0.0;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let (low, high) = bucket_range(i);
            last = high;
            if (seen + n) as f64 >= rank {
                let fraction = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
                return low + (high - low) * fraction;
            }
            seen += n;
        }
        last
    }

    /// The supported quantiles, in [`SUPPORTED_QUANTILES`] order.
    pub fn quantiles(&self) -> [f64; SUPPORTED_QUANTILES.len()] {
        SUPPORTED_QUANTILES.map(|q| self.quantile(q))
    }
}

/// The value range an integer sample in bucket `i` can have, for interpolation: bucket 0 holds
/// only 0, bucket 1 only 1, bucket `i` the values in `(bound[i-1], bound[i]]`, and the overflow
/// bucket is reported at the last bound (its upper end is unknown).
fn bucket_range(i: usize) -> (f64, f64) {
    let bound = |j: usize| INT_BOUNDS.get(j).copied().unwrap_or(INT_BOUNDS[INT_BOUNDS.len() - 1]) as f64;
    match i {
        0 => (0.0, 0.0),
        1 => (1.0, 1.0),
        i if i >= INT_BOUNDS.len() => (bound(i - 1), bound(i - 1)),
        i => (bound(i - 1), bound(i)),
    }
}

/// The latched views of one histogram, as admin renders read them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HistogramLatch {
    /// Samples between the two most recent latches.
    pub(crate) interval: HistogramSnapshot,
    /// All samples up to the most recent latch.
    pub(crate) cumulative: HistogramSnapshot,
}

impl HistogramLatch {
    /// Envoy's `ParentHistogram::used`: a latch has seen at least one sample.
    pub(crate) fn used(&self) -> bool {
        self.cumulative.count() != 0
    }
}

/// A [`HistogramLatch`] as the store's registry keeps it: only the buckets that hold samples.
/// A histogram recorded once (an EDS cluster's `update_duration`) has one bucket of 20 in
/// each view, and 10,000 of them spelled out would cost 340 bytes each.
///
/// Layout: the bucket masks (interval's in the low 32 bits, cumulative's in the high), the
/// interval's sum, the cumulative sum, then the counts of the interval's buckets in the mask,
/// in bucket order, then those of the cumulative view. Immutable: shared with the renders in
/// progress, which unpack it outside the registry lock.
///
/// A rare histogram ([`crate::Scope::rare_histogram`]) has no slots in the arena: its live
/// totals follow the views, as a third view (its mask, its sum, its counts), or are the
/// cumulative view itself when nothing was recorded since the last latch
/// ([`LIVE_IS_CUMULATIVE`]: an EDS cluster's `update_duration` between updates).
///
/// Behind a thin pointer with no weak count: a registry entry holds 8 bytes of it, not 16.
#[derive(Clone, Debug)]
pub(crate) struct PackedLatch(triomphe::ThinArc<(), u64>);

/// Words before the counts.
const PACKED_HEADER: usize = 3;

/// A flag in the first word, beside the bucket masks (20 bits each, at bits 0 and 32): a rare
/// histogram's live totals are its cumulative view.
const LIVE_IS_CUMULATIVE: u64 = 1 << 63;

/// The most words a packing takes: the header, the counts of two views and a live view with
/// its mask and sum.
const MAX_PACKED_WORDS: usize = PACKED_HEADER + 3 * BUCKETS + 2;

impl PackedLatch {
    /// Packs the views, and the live totals of a rare histogram, into `views`: in place when
    /// no render holds the packed words and they have room (the words past the new ones are
    /// zeroed, which reads as no live totals). Each stats flush repacks every histogram that
    /// changed; a new allocation each time left the freed one as a hole among long-lived
    /// allocations (an 80-byte chunk for each of 10,000 EDS clusters' `update_duration`).
    fn store(views: &mut Option<PackedLatch>, latch: &HistogramLatch, live: Option<&HistogramSnapshot>) {
        let mask = |view: &HistogramSnapshot| {
            view.buckets.iter().enumerate().filter(|(_, n)| **n != 0).fold(0u64, |mask, (i, _)| mask | 1 << i)
        };
        let nonzero = |view: &HistogramSnapshot| view.buckets.into_iter().filter(|n| *n != 0);
        let (live, flag) = match live {
            Some(live) if *live == latch.cumulative => (None, LIVE_IS_CUMULATIVE),
            live => (live, 0),
        };
        let live_words = live.into_iter().flat_map(|live| [mask(live), live.sum].into_iter().chain(nonzero(live)));
        let mut words = [0u64; MAX_PACKED_WORDS];
        let mut len = 0;
        for (slot, word) in words.iter_mut().zip(
            [flag | mask(&latch.interval) | mask(&latch.cumulative) << 32, latch.interval.sum, latch.cumulative.sum]
                .into_iter()
                .chain(nonzero(&latch.interval))
                .chain(nonzero(&latch.cumulative))
                .chain(live_words),
        ) {
            *slot = word;
            len += 1;
        }
        let words = words.get(..len).unwrap_or_default();
        if let Some(PackedLatch(packed)) = views {
            let rewritten = packed.with_arc_mut(|arc| match triomphe::Arc::get_mut(arc) {
                Some(unique) if unique.length() >= words.len() => {
                    for (slot, word) in
                        unique.slice_mut().iter_mut().zip(words.iter().copied().chain(std::iter::repeat(0)))
                    {
                        *slot = word;
                    }
                    true
                }
                _ => false,
            });
            if rewritten {
                return;
            }
        }
        *views = Some(PackedLatch(triomphe::ThinArc::from_header_and_slice((), words)));
    }

    fn words(&self) -> &[u64] {
        &self.0.slice
    }

    /// A rare histogram's live totals: the words after the views (all 0 when there are none).
    fn unpack_live(&self) -> HistogramSnapshot {
        let words = self.words();
        let first = words.first().copied().unwrap_or(0);
        if first & LIVE_IS_CUMULATIVE != 0 {
            return self.unpack().cumulative;
        }
        let start = PACKED_HEADER + first.count_ones() as usize;
        let live = words.get(start..).unwrap_or_default();
        let (mask, sum) = (live.first().copied().unwrap_or(0), live.get(1).copied().unwrap_or(0));
        let mut counts = live.get(2..).unwrap_or_default().iter().copied();
        let mut snapshot = HistogramSnapshot { sum, ..Default::default() };
        for (i, bucket) in snapshot.buckets.iter_mut().enumerate() {
            if mask & 1 << i != 0 {
                *bucket = counts.next().unwrap_or(0);
            }
        }
        snapshot
    }

    /// Adds one sample to a rare histogram's live totals.
    pub(crate) fn record_rare(views: &mut Option<PackedLatch>, value: u64) {
        let (latch, mut live) = match views {
            Some(packed) => (packed.unpack(), packed.unpack_live()),
            None => Default::default(),
        };
        live.record(value);
        PackedLatch::store(views, &latch, Some(&live));
    }

    /// The views, spelled out.
    pub(crate) fn unpack(&self) -> HistogramLatch {
        let words = self.words();
        let header = |i: usize| words.get(i).copied().unwrap_or(0);
        let mut counts = words.get(PACKED_HEADER..).unwrap_or_default().iter().copied();
        let mut view = |mask: u64, sum: u64| {
            let mut snapshot = HistogramSnapshot { sum, ..Default::default() };
            for (i, bucket) in snapshot.buckets.iter_mut().enumerate() {
                if mask & 1 << i != 0 {
                    *bucket = counts.next().unwrap_or(0);
                }
            }
            snapshot
        };
        let interval = view(header(0) & u64::from(u32::MAX), header(1));
        let cumulative = view((header(0) & !LIVE_IS_CUMULATIVE) >> 32, header(2));
        HistogramLatch { interval, cumulative }
    }

    /// Envoy's `ParentHistogram::used`, without unpacking.
    pub(crate) fn used(&self) -> bool {
        self.unpack().used()
    }

    /// Moves the live totals of the histogram at `index` into its views (Envoy's
    /// `ParentHistogramImpl::merge`). `None` stands for empty views and stays so until a latch
    /// sees a sample; views that did not change are not packed again.
    pub(crate) fn latch(views: &mut Option<PackedLatch>, arena: &Arena, index: u32) {
        if index == RARE_INDEX {
            return Self::latch_rare(views);
        }
        let now = HistogramSnapshot::read(arena, index);
        let latched = match views {
            Some(packed) => {
                let before = packed.unpack();
                let latched = HistogramLatch { interval: now.since(&before.cumulative), cumulative: now };
                if latched.interval == before.interval && latched.cumulative == before.cumulative {
                    return;
                }
                latched
            }
            None if now.count() != 0 => HistogramLatch { interval: now, cumulative: now },
            None => return,
        };
        PackedLatch::store(views, &latched, None);
    }

    /// [`Self::latch`] for a rare histogram, whose live totals are packed with its views.
    fn latch_rare(views: &mut Option<PackedLatch>) {
        let Some(packed) = views else { return };
        let (before, now) = (packed.unpack(), packed.unpack_live());
        let latched = HistogramLatch { interval: now.since(&before.cumulative), cumulative: now };
        if latched.interval == before.interval && latched.cumulative == before.cumulative {
            return;
        }
        PackedLatch::store(views, &latched, Some(&now));
    }
}

/// The index a rare histogram has in the registry in place of its first arena slot: none of
/// the arena's 4 Mi slots, so nothing records into the arena for it.
pub(crate) const RARE_INDEX: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(values: &[u64]) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        for &v in values {
            let bucket = INT_BOUNDS.partition_point(|&bound| bound < v);
            s.buckets[bucket] += 1;
            s.sum += v;
        }
        s
    }

    #[test]
    fn bucket_of_value_follows_prometheus_le() {
        let s = snapshot(&[0, 1, 2, 5, 6, 3_600_000, 3_600_001]);
        assert_eq!(s.buckets[0], 1, "0 <= 0.5");
        assert_eq!(s.buckets[1], 1, "1 <= 1");
        assert_eq!(s.buckets[2], 2, "2 and 5 <= 5");
        assert_eq!(s.buckets[3], 1, "6 <= 10");
        assert_eq!(s.buckets[18], 1, "3600000 <= 3600000");
        assert_eq!(s.buckets[19], 1, "overflow");
        assert_eq!(s.count(), 7);
        let cumulative = s.cumulative_buckets();
        assert_eq!(cumulative[0], 1);
        assert_eq!(cumulative[2], 4);
        assert_eq!(cumulative[18], 6);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        assert!(HistogramSnapshot::default().quantile(0.5).is_nan());
        let s = snapshot(&[10; 4]);
        // All in (5, 10]: P0 at the low edge, P100 at the high edge, P50 in the middle.
        assert_eq!(s.quantile(0.0), 5.0);
        assert_eq!(s.quantile(0.5), 7.5);
        assert_eq!(s.quantile(1.0), 10.0);
        let s = snapshot(&[1, 1, 100, 100]);
        assert_eq!(s.quantile(0.25), 1.0);
        assert_eq!(s.quantile(0.5), 1.0);
        assert_eq!(s.quantile(0.75), 75.0);
        assert_eq!(s.quantile(1.0), 100.0);
        let q = s.quantiles();
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "monotonic: {q:?}");
    }

    #[test]
    fn overflow_reports_last_bound() {
        let s = snapshot(&[10_000_000]);
        assert_eq!(s.quantile(0.5), 3_600_000.0);
    }

    impl PackedLatch {
        fn pack(latch: &HistogramLatch, live: Option<&HistogramSnapshot>) -> PackedLatch {
            let mut views = None;
            PackedLatch::store(&mut views, latch, live);
            views.expect("stored")
        }

        fn address(&self) -> *const u64 {
            self.words().as_ptr()
        }
    }

    #[test]
    fn repacking_reuses_the_words_no_render_holds() {
        let latch = HistogramLatch { interval: snapshot(&[3]), cumulative: snapshot(&[3, 70]) };
        let live = snapshot(&[3, 70, 3_600_001]);
        let mut views = Some(PackedLatch::pack(&latch, Some(&live)));
        let first = views.as_ref().map(PackedLatch::address);
        // Fewer words: the same allocation, the rest zeroed, read back exactly.
        let shorter = HistogramLatch { interval: snapshot(&[]), cumulative: live };
        PackedLatch::store(&mut views, &shorter, Some(&live));
        let packed = views.clone().expect("packed");
        assert_eq!(Some(packed.address()), first);
        assert!(packed.words().ends_with(&[0, 0]));
        let unpacked = packed.unpack();
        assert_eq!((unpacked.interval, unpacked.cumulative, packed.unpack_live()), (shorter.interval, live, live));
        // A render holds it (the clone above): a new allocation, the render's words unchanged.
        let more = HistogramLatch { interval: snapshot(&[1, 2, 5]), cumulative: snapshot(&[1, 2, 5, 3, 70, 9]) };
        PackedLatch::store(&mut views, &more, None);
        let repacked = views.as_ref().expect("packed");
        assert_ne!(repacked.address(), packed.address());
        assert_eq!(packed.unpack().cumulative, live);
        assert_eq!(repacked.unpack().cumulative, more.cumulative);
        assert_eq!(repacked.unpack_live(), HistogramSnapshot::default());
    }

    #[test]
    fn packed_latch_unpacks_to_what_was_packed() {
        for (interval, cumulative) in [
            (snapshot(&[]), snapshot(&[])),
            (snapshot(&[3]), snapshot(&[3])),
            (snapshot(&[]), snapshot(&[0, 7, 7, 3_600_001])),
            (snapshot(&[1, 2, 5, 6, 100]), snapshot(&[0, 1, 2, 5, 6, 100, 3_600_000, 3_600_001])),
        ] {
            let latch = HistogramLatch { interval, cumulative };
            let packed = PackedLatch::pack(&latch, None);
            let unpacked = packed.unpack();
            assert_eq!((unpacked.interval, unpacked.cumulative), (interval, cumulative));
            assert_eq!(packed.used(), latch.used());
        }
        assert_eq!(
            PackedLatch::pack(&HistogramLatch { interval: snapshot(&[]), cumulative: snapshot(&[9]) }, None)
                .words()
                .len(),
            4
        );
    }

    #[test]
    fn packed_live_totals_unpack_to_what_was_packed() {
        let latch = HistogramLatch { interval: snapshot(&[3]), cumulative: snapshot(&[3, 70]) };
        for live in [snapshot(&[]), snapshot(&[3, 70, 3_600_001]), snapshot(&[3, 70])] {
            let packed = PackedLatch::pack(&latch, Some(&live));
            let unpacked = packed.unpack();
            assert_eq!((unpacked.interval, unpacked.cumulative), (latch.interval, latch.cumulative));
            assert_eq!(packed.unpack_live(), live);
        }
        // Live totals equal to the cumulative view take no words of their own.
        let same = PackedLatch::pack(&latch, Some(&latch.cumulative));
        assert_eq!(same.words().len(), PackedLatch::pack(&latch, None).words().len());
    }

    #[test]
    fn since_subtracts_slotwise() {
        let a = snapshot(&[1, 2]);
        let b = snapshot(&[1, 2, 3, 300]);
        let d = b.since(&a);
        assert_eq!(d.count(), 2);
        assert_eq!(d.sum, 303);
    }
}

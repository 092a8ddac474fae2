//! Per-worker slot arenas: the memory every counter, gauge and histogram writes into.
//!
//! Envoy gives each worker a thread-local cache of the central stats and merges on read; legate
//! keeps one arena per shard (shard 0 = the main thread and any thread that is not a worker,
//! shards `1..=workers` = the workers) and sums the shards when admin reads a stat (DESIGN §2).
//!
//! A stat is an index into every arena. An arena is a fixed top-level table of lazily allocated
//! fixed-size chunks, so memory never moves and readers need no lock. Shard 0 gets a chunk when
//! a stat in it is created (config time); a worker's shard gets it on the worker's first write
//! into it, as Envoy's worker caches hold only the stats their worker used: with 10,000 idle
//! clusters, a worker's copy of their ~600,000 slots was 4.6 MiB per worker of zeros. So a
//! worker's hot path allocates once per chunk of [`CHUNK_SLOTS`] slots, then never again. A
//! chunk not allocated reads as 0. Chunks are cache-line aligned and owned by one shard, so
//! two workers never write the same cache line.
//!
//! Besides the shards, two things only the main thread writes: a gauge's "was set" flag, one
//! bit per slot ([`Arena::mark_set`]), and the offsets `/reset_counters` left, kept only for
//! the counters that had counted something ([`Arena::reset`]). A full slot per stat for
//! either (as this arena had) cost 8 bytes × every stat, for a flag and for offsets that
//! most servers never take.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use rustc_hash::FxBuildHasher;

/// Slots per chunk (8 KiB of `u64`).
pub(crate) const CHUNK_SLOTS: usize = 1024;
/// Chunks per arena: 4 Mi slots (32 MiB) per shard at most, which is far beyond thousands of
/// clusters × ~60 stats; the top-level table itself costs 64 KiB per shard.
const MAX_CHUNKS: usize = 4096;
/// Slots reserved at the start of the arena as a write-only sink for stats created after the
/// arena is full (their values are discarded and they are not registered).
pub(crate) const SCRATCH_SLOTS: usize = 32;

thread_local! {
    /// The shard the current thread writes into; see [`set_thread_shard`].
    static THREAD_SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Declares which shard the current thread writes its stats into.
///
/// A worker calls this once when it starts, with its index `1..=workers`. Threads that never
/// call it (the main thread, admin, tests) write into shard 0, which is safe to share because
/// every write is an atomic add. An index outside a store's shards also falls back to shard 0.
pub fn set_thread_shard(index: usize) {
    THREAD_SHARD.with(|shard| shard.set(index));
}

fn current_shard() -> usize {
    THREAD_SHARD.with(Cell::get)
}

/// Adds `n` (wrapping) to `slot`. A slot of a worker's shard has one writer, the worker: a
/// plain load and store (readers still see whole values), where an atomic add would take a
/// locked instruction on every stat change of every request. Shard 0 is written by several
/// threads and adds atomically.
#[inline]
pub(crate) fn add(slot: &AtomicU64, n: u64, exclusive: bool) {
    if exclusive {
        slot.store(slot.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    } else {
        slot.fetch_add(n, Ordering::Relaxed);
    }
}

/// A cache-line aligned block of slots, so that no two shards ever share a cache line.
#[repr(align(128))]
pub(crate) struct Chunk(pub(crate) [AtomicU64; CHUNK_SLOTS]);

impl Chunk {
    fn new_boxed() -> Box<Chunk> {
        Box::new(Chunk(std::array::from_fn(|_| AtomicU64::new(0))))
    }

    /// The slot at `offset` inside this chunk, if in range.
    #[inline]
    pub(crate) fn slot(&self, offset: usize) -> Option<&AtomicU64> {
        self.0.get(offset)
    }
}

/// One shard's memory: a fixed table of chunks allocated on first use.
struct Shard {
    chunks: Box<[OnceLock<Box<Chunk>>]>,
}

impl Shard {
    fn new() -> Shard {
        Shard { chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect() }
    }

    #[inline]
    fn chunk(&self, index: u32) -> Option<&Chunk> {
        self.chunks.get(index as usize / CHUNK_SLOTS)?.get().map(|chunk| &**chunk)
    }

    #[inline]
    fn slot(&self, index: u32) -> Option<&AtomicU64> {
        self.chunk(index)?.slot(index as usize % CHUNK_SLOTS)
    }

    fn ensure_chunk(&self, chunk: usize) {
        if let Some(cell) = self.chunks.get(chunk) {
            cell.get_or_init(Chunk::new_boxed);
        }
    }
}

/// One bit per slot of a chunk: the gauges' "was set" flags.
type ChunkBits = [AtomicU64; CHUNK_SLOTS / 64];

/// All shards of one store, the gauges' "set" bits and the counters' reset offsets.
pub(crate) struct Arena {
    shards: Box<[Shard]>,
    /// Chunk → its slots' "set" bits (allocated with the chunk).
    set_bits: Box<[OnceLock<Box<ChunkBits>>]>,
    /// Counter slot → the sum it had at the last `/reset_counters`; only for counters whose
    /// sum was not 0 then (0 is no offset).
    offsets: Mutex<HashMap<u32, u64, FxBuildHasher>>,
    /// Whether `offsets` ever held anything: until then a read skips the lock.
    any_offset: AtomicBool,
}

impl Arena {
    /// An arena with `shards` shards (at least one).
    pub(crate) fn new(shards: usize) -> Arena {
        let arena = Arena {
            shards: (0..shards.max(1)).map(|_| Shard::new()).collect(),
            set_bits: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            offsets: Mutex::new(HashMap::default()),
            any_offset: AtomicBool::new(false),
        };
        arena.ensure(0, SCRATCH_SLOTS);
        arena
    }

    /// Number of shards.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Makes slots `[start, start + len)` backed by memory in shard 0 (and their bits); a
    /// worker's shard gets its chunk on the worker's first write (see the module doc).
    /// Called at stat creation only.
    pub(crate) fn ensure(&self, start: usize, len: usize) {
        let first = start / CHUNK_SLOTS;
        let last = (start + len.max(1) - 1) / CHUNK_SLOTS;
        for chunk in first..=last {
            if let Some(shard) = self.shards.first() {
                shard.ensure_chunk(chunk);
            }
            if let Some(bits) = self.set_bits.get(chunk) {
                bits.get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
            }
        }
    }

    /// Total number of slots an arena can hold.
    pub(crate) const fn capacity() -> usize {
        MAX_CHUNKS * CHUNK_SLOTS
    }

    /// The current thread's shard, and whether the thread is its only writer (a worker's
    /// shard; shard 0 is shared by every other thread).
    fn local_shard(&self) -> Option<(&Shard, bool)> {
        let index = current_shard();
        match self.shards.get(index) {
            Some(shard) if index != 0 => Some((shard, true)),
            _ => self.shards.first().map(|shard| (shard, false)),
        }
    }

    /// Adds `n` (wrapping) to the current thread's copy of slot `index`. Hot path: no lock;
    /// allocates only the first time this thread writes into the slot's chunk.
    #[inline]
    pub(crate) fn local_add(&self, index: u32, n: u64) {
        if let Some((chunk, exclusive)) = self.local_chunk(index) {
            if let Some(slot) = chunk.slot(index as usize % CHUNK_SLOTS) {
                add(slot, n, exclusive);
            }
        }
    }

    /// The current thread's chunk holding `index` (a histogram's slots never cross chunks),
    /// allocated on this thread's first write into it; `true` when the thread is its only
    /// writer (see [`add`]).
    #[inline]
    pub(crate) fn local_chunk(&self, index: u32) -> Option<(&Chunk, bool)> {
        let (shard, exclusive) = self.local_shard()?;
        let cell = shard.chunks.get(index as usize / CHUNK_SLOTS)?;
        Some((&**cell.get_or_init(Chunk::new_boxed), exclusive))
    }

    /// Sum over all shards of slot `index`, with wrapping arithmetic (gauges keep deltas).
    pub(crate) fn sum(&self, index: u32) -> u64 {
        self.shards
            .iter()
            .filter_map(|shard| shard.slot(index))
            .fold(0u64, |acc, slot| acc.wrapping_add(slot.load(Ordering::Relaxed)))
    }

    /// Adds to `out`, slot by slot, the sums over all shards of the `out.len()` slots from
    /// `start`: a histogram's, read with one chunk lookup per shard instead of one per slot
    /// (a stats flush reads every histogram, tens of thousands with 10,000 clusters).
    pub(crate) fn sum_into(&self, start: u32, out: &mut [u64]) {
        let offset = start as usize % CHUNK_SLOTS;
        let Some(end) = offset.checked_add(out.len()).filter(|&end| end <= CHUNK_SLOTS) else {
            // Slots are reserved so as never to cross a chunk; read one by one if they did.
            for (index, sum) in (start..).zip(out.iter_mut()) {
                *sum = sum.wrapping_add(self.sum(index));
            }
            return;
        };
        for shard in self.shards.iter() {
            let Some(slots) = shard.chunk(start).and_then(|chunk| chunk.0.get(offset..end)) else { continue };
            for (sum, slot) in out.iter_mut().zip(slots) {
                *sum = sum.wrapping_add(slot.load(Ordering::Relaxed));
            }
        }
    }

    /// Whether any shard holds a nonzero value in slot `index`.
    pub(crate) fn any_nonzero(&self, index: u32) -> bool {
        self.shards.iter().filter_map(|shard| shard.slot(index)).any(|slot| slot.load(Ordering::Relaxed) != 0)
    }

    /// The word of "set" bits holding slot `index`'s, and its mask.
    fn set_bit(&self, index: u32) -> Option<(&AtomicU64, u64)> {
        let index = index as usize;
        let bits = self.set_bits.get(index / CHUNK_SLOTS)?.get()?;
        let offset = index % CHUNK_SLOTS;
        Some((bits.get(offset / 64)?, 1 << (offset % 64)))
    }

    /// Records that the gauge at `index` was set (Envoy marks a gauge used on `set`).
    pub(crate) fn mark_set(&self, index: u32) {
        if let Some((word, mask)) = self.set_bit(index) {
            word.fetch_or(mask, Ordering::Relaxed);
        }
    }

    /// Whether [`Self::mark_set`] was called for `index`.
    pub(crate) fn was_set(&self, index: u32) -> bool {
        self.set_bit(index).is_some_and(|(word, mask)| word.load(Ordering::Relaxed) & mask != 0)
    }

    /// The reset offsets, for reading many counters under one lock.
    pub(crate) fn offsets(&self) -> Offsets<'_> {
        if self.any_offset.load(Ordering::Acquire) {
            Offsets(Some(self.offsets.lock().unwrap_or_else(|e| e.into_inner())))
        } else {
            Offsets(None)
        }
    }

    /// Makes the counters at `indices` read 0 from now on: each one's current sum becomes its
    /// offset.
    pub(crate) fn reset(&self, indices: impl Iterator<Item = u32>) {
        let mut offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        for index in indices {
            match self.sum(index) {
                0 => offsets.remove(&index),
                sum => offsets.insert(index, sum),
            };
        }
        if !offsets.is_empty() {
            self.any_offset.store(true, Ordering::Release);
        }
    }
}

/// The counters' reset offsets, locked (or nothing to lock: no counter was ever reset with a
/// value).
pub(crate) struct Offsets<'a>(Option<MutexGuard<'a, HashMap<u32, u64, FxBuildHasher>>>);

impl Offsets<'_> {
    /// The offset of the counter at `index` (0 when it has none).
    pub(crate) fn get(&self, index: u32) -> u64 {
        self.0.as_ref().and_then(|offsets| offsets.get(&index).copied()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_shard_gets_a_chunk_on_its_first_write_only() {
        let arena = Arena::new(3);
        let index = (SCRATCH_SLOTS + 1) as u32;
        arena.ensure(index as usize, 1);
        let allocated = |shard: usize| arena.shards.get(shard).is_some_and(|s| s.chunk(index).is_some());
        assert!(allocated(0), "shard 0 at creation");
        assert!(!allocated(1) && !allocated(2), "workers: not before they write");
        assert_eq!(arena.sum(index), 0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                set_thread_shard(2);
                arena.local_add(index, 5);
            });
        });
        assert!(!allocated(1) && allocated(2));
        arena.local_add(index, 1);
        assert_eq!(arena.sum(index), 6);
        assert!(arena.any_nonzero(index));
    }

    #[test]
    fn workers_add_into_their_own_shards_and_other_threads_share_shard_0_exactly() {
        let arena = Arena::new(3);
        let index = (SCRATCH_SLOTS + 2) as u32;
        arena.ensure(index as usize, 1);
        std::thread::scope(|scope| {
            for worker in 1..=2 {
                let arena = &arena;
                scope.spawn(move || {
                    set_thread_shard(worker);
                    (0..10_000).for_each(|_| arena.local_add(index, 1));
                    arena.local_add(index, 3u64.wrapping_neg());
                });
            }
            // Threads that are not workers all write shard 0: their adds must not be lost.
            for _ in 0..4 {
                scope.spawn(|| (0..10_000).for_each(|_| arena.local_add(index, 1)));
            }
        });
        assert_eq!(arena.sum(index), 2 * (10_000 - 3) + 4 * 10_000);
    }
}

//! Counter: an unsigned integer that only increases (Envoy's `Stats::Counter`).
//!
//! Each worker adds into its own shard; [`Counter::value`] sums the shards and subtracts the
//! offset left by admin `/reset_counters`, which Envoy implements as `counter->reset()`.

use std::fmt;
use std::sync::Arc;

use crate::arena::{Arena, Offsets};

/// A handle to one counter; cheap to clone, every clone updates the same stat.
#[derive(Clone)]
pub struct Counter {
    pub(crate) arena: Arc<Arena>,
    pub(crate) index: u32,
}

/// A counter borrowed from a compact `stats!` struct (see [`crate::stats!`]): the same
/// operations as [`Counter`], without a pointer of its own to the arena.
#[derive(Clone, Copy)]
pub struct CounterRef<'a> {
    arena: &'a Arena,
    index: u32,
}

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.borrow().inc();
    }

    /// Adds `n`. Hot path: one add into the current thread's shard (see `arena::add`).
    #[inline]
    pub fn add(&self, n: u64) {
        self.borrow().add(n);
    }

    /// The value summed over all shards, minus the last `/reset_counters` offset.
    pub fn value(&self) -> u64 {
        self.borrow().value()
    }

    #[inline]
    fn borrow(&self) -> CounterRef<'_> {
        CounterRef { arena: &self.arena, index: self.index }
    }

    /// Its slot, for a compact `stats!` struct to keep instead of the handle.
    #[doc(hidden)]
    pub fn slot(&self) -> u32 {
        self.index
    }
}

impl<'a> CounterRef<'a> {
    pub(crate) fn new(arena: &'a Arena, index: u32) -> Self {
        CounterRef { arena, index }
    }

    /// Adds one.
    #[inline]
    pub fn inc(self) {
        self.add(1);
    }

    /// Adds `n` (as [`Counter::add`]).
    #[inline]
    pub fn add(self, n: u64) {
        self.arena.local_add(self.index, n);
    }

    /// The value summed over all shards, minus the last `/reset_counters` offset.
    pub fn value(self) -> u64 {
        counter_value(self.arena, self.index)
    }

    /// Its slot, for its compact `stats!` struct to make an owned handle of.
    #[doc(hidden)]
    pub fn slot(self) -> u32 {
        self.index
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter").field("value", &self.value()).finish()
    }
}

pub(crate) fn counter_value(arena: &Arena, index: u32) -> u64 {
    counter_value_with(arena, &arena.offsets(), index)
}

/// [`counter_value`] with the offsets already locked (a render reads every counter).
pub(crate) fn counter_value_with(arena: &Arena, offsets: &Offsets<'_>, index: u32) -> u64 {
    arena.sum(index).wrapping_sub(offsets.get(index))
}

/// Envoy marks a counter used on its first increment; a reset does not clear that.
pub(crate) fn counter_used(arena: &Arena, index: u32) -> bool {
    arena.sum(index) != 0
}

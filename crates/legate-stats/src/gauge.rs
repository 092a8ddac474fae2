//! Gauge: an unsigned integer that goes up and down (Envoy's `Stats::Gauge`).
//!
//! Each shard holds a delta with wrapping arithmetic; the value is the wrapping sum of all
//! shards, so an increment on one worker and a decrement on another cancel out.
//!
//! [`Gauge::set`] is meant for the main thread, on gauges that are never `inc`/`dec`'d
//! (e.g. `server.uptime`, `cluster.<name>.membership_total`): it writes the delta between the
//! wanted value and the current sum, so `set` then `value` returns the value set; mixing `set`
//! with concurrent `inc`/`dec` from workers would race.

use std::fmt;
use std::sync::Arc;

use crate::arena::Arena;

/// A handle to one gauge; cheap to clone, every clone updates the same stat.
#[derive(Clone)]
pub struct Gauge {
    pub(crate) arena: Arc<Arena>,
    pub(crate) index: u32,
}

/// A gauge borrowed from a compact `stats!` struct (see [`crate::stats!`]): the same
/// operations as [`Gauge`], without a pointer of its own to the arena.
#[derive(Clone, Copy)]
pub struct GaugeRef<'a> {
    arena: &'a Arena,
    index: u32,
}

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.borrow().inc();
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.borrow().dec();
    }

    /// Adds `n` to the current thread's shard.
    #[inline]
    pub fn add(&self, n: u64) {
        self.borrow().add(n);
    }

    /// Subtracts `n` from the current thread's shard (wrapping; the sum stays right).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.borrow().sub(n);
    }

    /// Sets the value. Main thread only, on gauges never `inc`/`dec`'d (see the module doc).
    pub fn set(&self, value: u64) {
        self.borrow().set(value);
    }

    /// The wrapping sum of all shards.
    pub fn value(&self) -> u64 {
        self.borrow().value()
    }

    #[inline]
    fn borrow(&self) -> GaugeRef<'_> {
        GaugeRef { arena: &self.arena, index: self.index }
    }

    /// Its slot, for a compact `stats!` struct to keep instead of the handle.
    #[doc(hidden)]
    pub fn slot(&self) -> u32 {
        self.index
    }
}

impl<'a> GaugeRef<'a> {
    pub(crate) fn new(arena: &'a Arena, index: u32) -> Self {
        GaugeRef { arena, index }
    }

    /// Adds one.
    #[inline]
    pub fn inc(self) {
        self.add(1);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(self) {
        self.sub(1);
    }

    /// Adds `n` to the current thread's shard.
    #[inline]
    pub fn add(self, n: u64) {
        self.arena.local_add(self.index, n);
    }

    /// Subtracts `n` from the current thread's shard (wrapping; the sum stays right).
    #[inline]
    pub fn sub(self, n: u64) {
        self.arena.local_add(self.index, n.wrapping_neg());
    }

    /// Sets the value (as [`Gauge::set`]: main thread only, on gauges never `inc`/`dec`'d).
    pub fn set(self, value: u64) {
        let delta = value.wrapping_sub(self.value());
        self.add(delta);
        self.arena.mark_set(self.index);
    }

    /// The wrapping sum of all shards.
    pub fn value(self) -> u64 {
        self.arena.sum(self.index)
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gauge").field("value", &self.value()).finish()
    }
}

/// Used once `set` was called or any shard holds a nonzero delta (an `inc` followed by a `dec`
/// on the same worker reads unused, unlike Envoy, to keep the flag off the hot path).
pub(crate) fn gauge_used(arena: &Arena, index: u32) -> bool {
    arena.was_set(index) || arena.any_nonzero(index)
}

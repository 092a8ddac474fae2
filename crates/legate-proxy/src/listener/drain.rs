//! Draining the connections of a filter chain that an update replaced or removed (Envoy's
//! listener `DrainManager`): first they are asked to finish (HTTP/1.1 answers with
//! `connection: close`, HTTP/2 sends GOAWAY, idle connections close), then, when the drain
//! time is over, whatever is still open is closed. Chains an update left unchanged are not
//! drained: their connections never hear of it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DrainPhase {
    Serving,
    Draining,
    Closed,
}

/// Owned by the filter chain; connections hold receivers.
pub struct FilterChainDrain {
    phase: watch::Sender<DrainPhase>,
}

impl Default for FilterChainDrain {
    fn default() -> Self {
        FilterChainDrain { phase: watch::Sender::new(DrainPhase::Serving) }
    }
}

impl FilterChainDrain {
    pub fn subscribe(&self) -> watch::Receiver<DrainPhase> {
        self.phase.subscribe()
    }

    /// Moves to `phase` (never backwards).
    pub fn advance(&self, phase: DrainPhase) {
        self.phase.send_if_modified(|current| {
            let later = phase > *current;
            if later {
                *current = phase;
            }
            later
        });
    }
}

/// A worker's connections waiting to hear of a drain (Envoy posts drains to each worker's
/// dispatcher the same way). A waiting connection leaves its waker in a slot here, a few
/// bytes, instead of holding watch futures of its own: an idle keep-alive connection then
/// costs little memory, and polling it costs no lock. When the server or any filter chain
/// starts or ends a drain, every waiting connection is woken and checks its own chain.
#[derive(Default)]
pub struct WorkerDrains {
    /// Counts announcements: a waiter that saw an older count has news.
    announced: Cell<u64>,
    server_draining: Cell<bool>,
    /// The worker stopped accepting on every listener: no connection is new any more.
    listeners_stopped: Cell<bool>,
    slots: RefCell<Vec<Slot>>,
    /// The first free slot, if any (free slots link to the next free one).
    free: Cell<Option<usize>>,
    /// Taken slots; the table is freed when none is.
    taken: Cell<usize>,
}

/// Slots whose memory an empty table keeps.
const KEPT_SLOTS: usize = 64;

enum Slot {
    Taken(Option<Waker>),
    Free(Option<usize>),
}

impl WorkerDrains {
    /// Wakes every waiting connection; `server` says the whole server drains.
    pub fn announce(&self, server: bool) {
        if server {
            self.server_draining.set(true);
        }
        self.announced.set(self.announced.get().wrapping_add(1));
        // Collected first: a woken task never runs inside this call, but its waker's drop
        // could, and it must not find the table borrowed.
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(|slot| match slot {
                Slot::Taken(waker) => waker.take(),
                Slot::Free(_) => None,
            })
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The server drains (SIGTERM, `/drain_listeners`, `/quitquitquit`).
    pub fn server_draining(&self) -> bool {
        self.server_draining.get()
    }

    /// Every listener stopped accepting (and the server drains): announce after it.
    pub fn set_listeners_stopped(&self) {
        self.listeners_stopped.set(true);
    }

    /// See [`Self::set_listeners_stopped`]. Until then, during a graceful drain, a new
    /// connection is still served (one request, answered `connection: close`).
    pub fn listeners_stopped(&self) -> bool {
        self.listeners_stopped.get()
    }

    fn take_slot(&self) -> usize {
        self.taken.set(self.taken.get() + 1);
        let mut slots = self.slots.borrow_mut();
        if let Some(index) = self.free.get() {
            if let Some(slot) = slots.get_mut(index) {
                if let Slot::Free(next) = *slot {
                    self.free.set(next);
                    *slot = Slot::Taken(None);
                    return index;
                }
            }
        }
        slots.push(Slot::Taken(None));
        slots.len() - 1
    }

    fn release(&self, index: usize) {
        self.taken.set(self.taken.get().saturating_sub(1));
        let mut slots = self.slots.borrow_mut();
        if self.taken.get() == 0 {
            // All connections gone: give a large table's memory back. A small one is kept, so
            // that a worker serving one short connection at a time does not allocate and
            // grow its table again for each.
            if slots.capacity() > KEPT_SLOTS {
                *slots = Vec::new();
            } else {
                slots.clear();
            }
            self.free.set(None);
            return;
        }
        if let Some(slot) = slots.get_mut(index) {
            *slot = Slot::Free(self.free.get());
            self.free.set(Some(index));
        }
    }

    fn register(&self, index: usize, waker: &Waker) {
        if let Some(Slot::Taken(slot)) = self.slots.borrow_mut().get_mut(index) {
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
    }
}

/// A waiter without a slot.
const NO_SLOT: usize = usize::MAX;

/// One connection's place among its worker's [`WorkerDrains`].
pub struct DrainWaiter {
    drains: Rc<WorkerDrains>,
    /// Taken at the first poll that waits; given back while the connection is parked.
    /// `NO_SLOT` when it has none (not an `Option`: 8 bytes less in each parked connection).
    slot: usize,
    /// The announcement count last seen; one behind the count at first, so that the first
    /// poll reports at once (a drain may have started before the connection was accepted).
    seen: u64,
}

impl DrainWaiter {
    pub fn new(drains: &Rc<WorkerDrains>) -> Self {
        Self::with_seen(drains, drains.announced.get().wrapping_sub(1))
    }

    /// Ready when a drain was announced since the last time it was ready; the caller then
    /// looks at what drains.
    pub fn poll_announced(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let announced = self.drains.announced.get();
        if self.seen != announced {
            self.seen = announced;
            return Poll::Ready(());
        }
        if self.slot == NO_SLOT {
            self.slot = self.drains.take_slot();
        }
        self.drains.register(self.slot, cx.waker());
        Poll::Pending
    }

    /// Ready once the chain reaches `phase`: a connection's end when its filter chain has
    /// finished draining.
    pub fn poll_chain_reached(
        &mut self,
        cx: &mut Context<'_>,
        chain: &watch::Receiver<DrainPhase>,
        phase: DrainPhase,
    ) -> Poll<()> {
        loop {
            std::task::ready!(self.poll_announced(cx));
            if *chain.borrow() >= phase {
                return Poll::Ready(());
            }
        }
    }

    /// Gives its slot back: a parked connection has no task to wake (the park hears drains
    /// for it), and the slot's waker would keep its ended task's memory alive. The next poll
    /// takes a slot again; what was announced meanwhile is still reported.
    pub fn release_slot(&mut self) {
        let slot = std::mem::replace(&mut self.slot, NO_SLOT);
        if slot != NO_SLOT {
            self.drains.release(slot);
        }
    }

    pub fn drains(&self) -> &WorkerDrains {
        &self.drains
    }

    /// What a parked connection keeps of its waiter: the announcement count it saw (its
    /// slot goes back; the worker's drains are its worker's).
    pub fn into_seen(mut self) -> u64 {
        self.release_slot();
        self.seen
    }

    /// The waiter [`Self::into_seen`] put aside.
    pub fn with_seen(drains: &Rc<WorkerDrains>, seen: u64) -> Self {
        DrainWaiter { drains: drains.clone(), slot: NO_SLOT, seen }
    }
}

impl Drop for DrainWaiter {
    fn drop(&mut self) {
        self.release_slot();
    }
}

/// Passes every filter chain drain (announced by the main thread through `chains`) to this
/// worker's connections; runs as long as the worker.
pub async fn relay(drains: Rc<WorkerDrains>, mut chains: watch::Receiver<u64>) {
    while chains.changed().await.is_ok() {
        drains.announce(false);
    }
}

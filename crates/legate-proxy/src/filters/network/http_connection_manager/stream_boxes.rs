//! The allocations that hyper-served streams (HTTP/2, and HTTP/1.1 with `header_key_format`)
//! keep their futures in, reused across the worker's streams.
//!
//! hyper moves a stream's future several times (into its stream, to the executor, into the
//! task), so the future is boxed; it weighs ~6.5 KB, past what glibc's per-thread cache
//! serves (1 KiB), and every request then paid a trip through the general allocator for its
//! box and another for freeing it. A finished stream's box goes back to the worker's spares;
//! the next stream's future is started in it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Spare boxes kept per worker and kind of future at most: as many as streams run at once on
/// a busy worker (a box made and freed per request costs a copy of the future and a trip
/// through the general allocator; 64 clients on one worker emptied a spare list of 16 on
/// every other request). A burst past it frees its extra boxes as its streams end.
const KEPT: usize = 256;

/// How often a worker frees the spare boxes none of its streams took since the last time
/// (see [`Reap`]): a burst's extra boxes outlive it by one to two periods.
pub const REAP_EVERY: Duration = Duration::from_secs(1);

/// A worker's spare boxes for futures of type `F`.
pub struct Spare<F> {
    boxes: RefCell<Vec<Pin<Box<Option<F>>>>>,
    /// The fewest boxes the list held since the last reap: those at its bottom (it is taken
    /// from and given back to at its top) were not needed meanwhile.
    untouched: Cell<usize>,
}

impl<F> Default for Spare<F> {
    fn default() -> Self {
        Spare { boxes: RefCell::new(Vec::new()), untouched: Cell::new(0) }
    }
}

impl<F> Spare<F> {
    /// Starts the future `make` returns in a spare box, or in a new one when none is left.
    /// The box is empty first and the future started in place: a new box of the future would
    /// build it on the stack and copy it over (a request's future is ~5 KB).
    pub fn start(&self, make: impl FnOnce() -> F) -> Pin<Box<Option<F>>> {
        let taken = {
            let mut boxes = self.boxes.borrow_mut();
            let taken = boxes.pop();
            self.untouched.set(self.untouched.get().min(boxes.len()));
            taken
        };
        let mut slot = taken.unwrap_or_else(|| Box::pin(None));
        slot.set(Some(make()));
        slot
    }

    /// Takes back a box: its future is dropped now (its drop may run the stream's own
    /// accounting); only the allocation is kept.
    pub fn give_back(&self, mut slot: Pin<Box<Option<F>>>) {
        slot.set(None);
        let mut spare = self.boxes.borrow_mut();
        if spare.len() < KEPT {
            spare.push(slot);
        }
    }
}

/// Spare boxes that a worker frees every [`REAP_EVERY`] when its streams did not need them:
/// without it, a burst of concurrent streams would leave up to [`KEPT`] boxes (1–2 MB) per
/// kind held for good.
pub trait Reap {
    /// Frees the boxes not taken since the last call; the bytes freed.
    fn reap(&self) -> usize;
}

impl<F> Reap for Spare<F> {
    fn reap(&self) -> usize {
        let mut boxes = self.boxes.borrow_mut();
        let unused = self.untouched.get().min(boxes.len());
        boxes.drain(..unused);
        self.untouched.set(boxes.len());
        unused * std::mem::size_of::<Option<F>>()
    }
}

/// A stream's future in a box taken from (and given back to) the worker's spares.
pub struct Recycled<F> {
    slot: Option<Pin<Box<Option<F>>>>,
    spare: Rc<Spare<F>>,
}

impl<F: Future> Recycled<F> {
    /// Starts the future `make` returns in a spare box ([`Spare::start`]).
    pub fn new(spare: &Rc<Spare<F>>, make: impl FnOnce() -> F) -> Self {
        Recycled { slot: Some(spare.start(make)), spare: spare.clone() }
    }
}

impl<F: Future> Future for Recycled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut().slot.as_mut().and_then(|slot| slot.as_mut().as_pin_mut()) {
            Some(future) => future.poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<F> Drop for Recycled<F> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.spare.give_back(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_streams_box_serves_the_next_one() {
        let spare = Rc::new(Spare::default());
        let make = |n: u32| async move { n * 2 };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut first = Recycled::new(&spare, || make(1));
        assert_eq!(Pin::new(&mut first).poll(&mut cx), Poll::Ready(2));
        let address = first.slot.as_ref().map(|slot| &**slot as *const Option<_>);
        drop(first);
        assert_eq!(spare.boxes.borrow().len(), 1, "the box is kept");
        let mut second = Recycled::new(&spare, || make(4));
        assert_eq!(second.slot.as_ref().map(|slot| &**slot as *const Option<_>), address, "and reused");
        assert!(spare.boxes.borrow().is_empty());
        assert_eq!(Pin::new(&mut second).poll(&mut cx), Poll::Ready(8));
    }

    #[test]
    fn the_spares_are_bounded_and_a_dropped_stream_is_dropped_at_once() {
        let spare = Rc::new(Spare::default());
        let alive = Rc::new(());
        let streams: Vec<_> = (0..KEPT + 5)
            .map(|_| {
                let alive = alive.clone();
                Recycled::new(&spare, move || async move {
                    let _held = alive;
                    std::future::pending::<()>().await
                })
            })
            .collect();
        assert_eq!(Rc::strong_count(&alive), KEPT + 6);
        drop(streams);
        assert_eq!(Rc::strong_count(&alive), 1, "every stream's state was dropped");
        assert_eq!(spare.boxes.borrow().len(), KEPT);
    }

    /// The size of a box's contents for the futures `make` makes.
    fn slot_size<F>(_make: impl Fn() -> F) -> usize {
        std::mem::size_of::<Option<F>>()
    }

    #[test]
    fn a_reap_frees_the_boxes_no_stream_took_since_the_last_one() {
        let spare = Rc::new(Spare::default());
        let make = || async {};
        // A burst of 10 streams at once leaves 10 boxes.
        let burst: Vec<_> = (0..10).map(|_| Recycled::new(&spare, make)).collect();
        drop(burst);
        assert_eq!(spare.boxes.borrow().len(), 10);
        // Within the period that follows, at most 3 run at once.
        assert_eq!(spare.reap(), 0);
        let three: Vec<_> = (0..3).map(|_| Recycled::new(&spare, make)).collect();
        drop(three);
        assert_eq!(spare.boxes.borrow().len(), 10, "nothing is freed while its use is unknown");
        assert_eq!(spare.reap(), 7 * slot_size(make), "7 boxes' bytes");
        assert_eq!(spare.boxes.borrow().len(), 3, "the 7 boxes untouched for a whole period are freed");
        spare.reap();
        assert!(spare.boxes.borrow().is_empty(), "and the rest after a period without streams");
    }
}

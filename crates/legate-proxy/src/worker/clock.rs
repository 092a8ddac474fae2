//! The time of a connection's current wake-up: the clock is read once when its task is
//! polled, and everything that asks for the time during that poll gets that reading.
//!
//! Envoy does the same with its dispatcher's `approximateMonotonicTime()`, updated once per
//! event loop iteration. A request asked for the time about 16 times (stream start, attempt
//! and response times, body activity, completion, the pool…), and a clock read costs about
//! 26 ns in a VM: 0.4 µs per request. A poll lasts microseconds, so a duration measured
//! across polls loses at most that; within one poll, time stands still.
//!
//! Outside a connection's poll through [`clocked`] (other tasks, the main thread), [`now`]
//! reads the clock.

use std::cell::Cell;
use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time read when the current poll of this connection began; the clock itself outside
/// a connection's poll.
pub fn now() -> Instant {
    NOW.get().unwrap_or_else(Instant::now)
}

/// The time elapsed since `earlier`, as [`now`] tells it.
pub fn since(earlier: Instant) -> std::time::Duration {
    now().saturating_duration_since(earlier)
}

/// Runs `f` (a connection's poll) with the clock read once for [`now`].
pub fn clocked<T>(f: impl FnOnce() -> T) -> T {
    let outer = NOW.replace(Some(Instant::now()));
    let result = f();
    NOW.set(outer);
    result
}

/// An instant in 8 bytes where `Instant` takes 16: nanoseconds since the process's clock
/// epoch, plus one, so that `Option<Stamp>` is 8 bytes too. A parked connection keeps its
/// times in these (an idle connection's memory is mostly what it keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(NonZeroU64);

/// Set when the first worker starts, before any connection: every instant a connection
/// keeps is later.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Stamp {
    /// Fixes the epoch (once; later calls change nothing).
    pub fn start_epoch() {
        epoch();
    }

    /// `at` to the nanosecond (an instant before the epoch reads as the epoch; none are).
    pub fn of(at: Instant) -> Stamp {
        let nanos = u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX - 1);
        Stamp(NonZeroU64::new(nanos.saturating_add(1)).unwrap_or(NonZeroU64::MAX))
    }

    pub fn instant(self) -> Instant {
        epoch() + Duration::from_nanos(self.0.get() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll};

    #[test]
    fn time_stands_still_within_a_poll_and_moves_between_polls() {
        let mut readings = Vec::new();
        let mut polls = 0;
        let future = std::future::poll_fn(|cx| {
            readings.push((now(), now()));
            std::thread::sleep(std::time::Duration::from_millis(2));
            polls += 1;
            match polls {
                2 => Poll::Ready(()),
                _ => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        });
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while clocked(|| future.as_mut().poll(&mut cx)).is_pending() {}
        assert_eq!(readings.len(), 2);
        assert_eq!(readings[0].0, readings[0].1, "one reading per poll");
        assert!(readings[1].0 > readings[0].0, "a new reading at the next poll");
        let outside = now();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(now() > outside, "outside a poll, the clock itself");
    }

    #[test]
    fn a_stamp_gives_back_its_instant_to_the_nanosecond() {
        Stamp::start_epoch();
        let at = Instant::now() + Duration::from_nanos(1_234_567_891);
        assert_eq!(Stamp::of(at).instant(), at);
        assert!(Stamp::of(at) < Stamp::of(at + Duration::from_nanos(1)));
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }
}

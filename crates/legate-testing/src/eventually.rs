//! Bounded polling for state that changes in the background (a stat, a closed listener).
//!
//! STYLE.md §8: no sleep as synchronisation; poll to a deadline and fail with what was expected
//! and the last value seen.

use std::fmt::Debug;
use std::thread;
use std::time::{Duration, Instant};

/// The default bound for [`eventually`]: generous, for a loaded 2-core machine.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// Calls `probe` until `done` accepts its value, and returns that value. Panics after `timeout`
/// with `what` (the expectation, in words) and the last value seen.
pub fn eventually<T: Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let value = probe();
        if done(&value) {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last value seen: {value:?}");
        }
        thread::sleep(Duration::from_millis(25));
    }
}

//! The process's allocator: glibc's, with a shelf per worker thread for the blocks tokio
//! aligns to 128 bytes.
//!
//! tokio aligns each task and each socket's readiness state to 128 bytes (a pair of cache
//! lines, so that two threads never share one). glibc's per-thread cache does not serve
//! aligned blocks: each comes from `posix_memalign`, which carves it out of a larger chunk
//! and frees the ends (callgrind: ~740 instructions a call, two calls per accepted
//! connection, one per HTTP/2 stream, against ~60 for an unaligned block). A worker keeps
//! the aligned blocks it frees, up to [`KEPT_BYTES`] in all, and hands them out again.
//!
//! Lifecycle: a worker thread turns its shelf on as it starts ([`worker_started`]); from
//! then its frees of such blocks go onto the shelf while it holds less than [`KEPT_BYTES`],
//! and its allocations take from the shelf first. As the thread ends
//! ([`worker_stopping`]), the shelf is turned off and its blocks are given back to glibc.
//! Other threads (the main thread, tokio's blocking threads, which come and go) never keep
//! blocks: a thread that ended with blocks on its shelf would lose them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// The alignment tokio asks for on x86_64 (its `CachePadded` and task cells).
const ALIGN: usize = 128;
/// Sizes kept: 128, 256, …, 4 KiB (a type's size is a multiple of its alignment).
const CLASSES: usize = 32;
/// Bytes of blocks kept per worker: a burst of connections or streams ends together and the
/// next one starts together (h2load's 64 streams missed the shelf 7 times in 10 with 16
/// blocks of each size). glibc would keep these bytes in its free lists all the same.
const KEPT_BYTES: usize = 256 * 1024;

pub struct Allocator;

/// One thread's free blocks: a list per size, linked through the blocks' first word.
struct Shelf {
    on: Cell<bool>,
    heads: [Cell<*mut u8>; CLASSES],
    /// Bytes on all lists.
    kept: Cell<usize>,
}

thread_local! {
    // A constant initialiser and no destructor: reaching it never allocates (which would
    // re-enter the allocator) and it stays valid while the thread ends.
    static SHELF: Shelf = const {
        Shelf {
            on: Cell::new(false),
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            kept: Cell::new(0),
        }
    };
}

/// A block of `layout` from the calling thread's shelf, if it keeps such blocks and has one.
fn from_shelf(layout: Layout) -> Option<*mut u8> {
    class_of(layout).and_then(|class| SHELF.with(|shelf| shelf.take(class)))
}

/// The shelf's list for blocks of `layout`, if it keeps them.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    (layout.align() == ALIGN && size != 0 && size.is_multiple_of(ALIGN) && size <= ALIGN * CLASSES)
        .then(|| size / ALIGN - 1)
}

impl Shelf {
    fn take(&self, class: usize) -> Option<*mut u8> {
        if !self.on.get() {
            return None;
        }
        self.pop(class)
    }

    fn pop(&self, class: usize) -> Option<*mut u8> {
        let head = self.heads.get(class)?;
        let block = head.get();
        if block.is_null() {
            return None;
        }
        // SAFETY: `block` is on the list, so `keep` wrote the next block's address into its
        // first word, and nothing else has touched it since: a block on the list is owned
        // by the list alone (it was freed to us, and only `pop` takes it off). The block is
        // aligned to 128 bytes and at least 128 long, room for the word.
        let next = unsafe { block.cast::<*mut u8>().read() };
        head.set(next);
        self.kept.set(self.kept.get().saturating_sub((class + 1) * ALIGN));
        Some(block)
    }

    fn keep(&self, class: usize, block: *mut u8) -> bool {
        let Some(head) = self.heads.get(class) else {
            return false;
        };
        let kept = self.kept.get() + (class + 1) * ALIGN;
        if !self.on.get() || kept > KEPT_BYTES {
            return false;
        }
        // SAFETY: the caller gave `block` back to the allocator: it is ours, 128-aligned and
        // at least 128 long (its layout is of this class), so its first word can hold the
        // list's link.
        unsafe { block.cast::<*mut u8>().write(head.get()) };
        head.set(block);
        self.kept.set(kept);
        true
    }
}

// SAFETY: every block handed out comes from `System` with a layout of its class (same size,
// same alignment) — either directly, or from the shelf, which holds only blocks freed with
// such a layout. A block goes onto the shelf instead of back to `System`, and comes off it to
// exactly one caller. Blocks of any other layout pass straight through to `System`.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(block) = from_shelf(layout) {
            return block;
        }
        // SAFETY: the caller's contract (a non-zero size) is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if class_of(layout).is_some_and(|class| SHELF.with(|shelf| shelf.keep(class, block))) {
            return;
        }
        // SAFETY: `block` was allocated by `System` with `layout` (see the impl's comment).
        unsafe { System.dealloc(block, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(block) = from_shelf(layout) {
            // SAFETY: the block is ours and `layout.size()` long.
            unsafe { block.write_bytes(0, layout.size()) };
            return block;
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // `System` reallocates in place where glibc can, and otherwise allocates, copies and
        // frees with `System` itself: a block from the shelf is a `System` block too.
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.realloc(block, layout, new_size) }
    }
}

/// Turns the calling thread's shelf on (a worker thread, as it starts).
pub fn worker_started() {
    SHELF.with(|shelf| shelf.on.set(true));
}

/// Turns the calling thread's shelf off and gives its blocks back (a worker thread, as it
/// ends).
pub fn worker_stopping() {
    SHELF.with(|shelf| {
        shelf.on.set(false);
        for class in 0..CLASSES {
            let Ok(layout) = Layout::from_size_align((class + 1) * ALIGN, ALIGN) else { continue };
            while let Some(block) = shelf.pop(class) {
                // SAFETY: the block came off the shelf, which holds only blocks `System`
                // allocated with this class's layout.
                unsafe { System.dealloc(block, layout) }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test runner's threads are not workers: each test turns its own thread's shelf on
    /// and empties it again.
    fn on_shelf<T>(test: impl FnOnce() -> T) -> T {
        worker_started();
        let out = test();
        worker_stopping();
        out
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, ALIGN).unwrap()
    }

    #[test]
    fn a_freed_aligned_block_is_handed_out_again_and_only_once() {
        on_shelf(|| {
            let a = unsafe { Allocator.alloc(layout(256)) };
            assert_eq!(a as usize % ALIGN, 0);
            unsafe { Allocator.dealloc(a, layout(256)) };
            // The same size gets it back; another size does not.
            let other = unsafe { Allocator.alloc(layout(384)) };
            assert_ne!(other, a);
            let b = unsafe { Allocator.alloc(layout(256)) };
            assert_eq!(b, a);
            let c = unsafe { Allocator.alloc(layout(256)) };
            assert_ne!(c, a);
            // Each block is the caller's whole: writing one leaves the other intact.
            unsafe {
                b.write_bytes(0xb, 256);
                c.write_bytes(0xc, 256);
                assert!(std::slice::from_raw_parts(b, 256).iter().all(|&x| x == 0xb));
                Allocator.dealloc(b, layout(256));
                Allocator.dealloc(c, layout(256));
                Allocator.dealloc(other, layout(384));
            }
        });
    }

    #[test]
    fn the_shelf_keeps_a_bounded_number_and_gives_them_back_when_the_worker_ends() {
        on_shelf(|| {
            let blocks: Vec<_> = (0..KEPT_BYTES / 1024 + 4).map(|_| unsafe { Allocator.alloc(layout(1024)) }).collect();
            for &b in &blocks {
                unsafe { Allocator.dealloc(b, layout(1024)) };
            }
            assert_eq!(SHELF.with(|s| s.kept.get()), KEPT_BYTES);
            // Full: a block of another size is not kept either.
            let other = unsafe { Allocator.alloc(layout(128)) };
            unsafe { Allocator.dealloc(other, layout(128)) };
            assert!(SHELF.with(|s| s.heads[0].get().is_null()));
        });
        assert_eq!(SHELF.with(|s| (s.kept.get(), s.heads[7].get().is_null(), s.on.get())), (0, true, false));
    }

    #[test]
    fn zeroed_blocks_from_the_shelf_are_zeroed() {
        on_shelf(|| unsafe {
            let a = Allocator.alloc(layout(512));
            a.write_bytes(0xff, 512);
            Allocator.dealloc(a, layout(512));
            let b = Allocator.alloc_zeroed(layout(512));
            assert_eq!(b, a);
            assert!(std::slice::from_raw_parts(b, 512).iter().all(|&x| x == 0));
            Allocator.dealloc(b, layout(512));
        });
    }

    #[test]
    fn other_layouts_and_threads_that_are_not_workers_pass_straight_through() {
        assert_eq!(class_of(Layout::from_size_align(256, 64).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(200, 128).unwrap()), None);
        assert_eq!(class_of(layout(ALIGN * CLASSES + ALIGN)), None);
        assert_eq!(class_of(layout(ALIGN * CLASSES)), Some(CLASSES - 1));
        // Shelf off: nothing is kept.
        let a = unsafe { Allocator.alloc(layout(128)) };
        unsafe { Allocator.dealloc(a, layout(128)) };
        assert_eq!(SHELF.with(|s| s.kept.get()), 0);
    }
}

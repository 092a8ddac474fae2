//! Heap figures for `server.memory_*` and `/memory`, from glibc's allocator.

/// Allocator statistics in bytes.
pub struct MemoryStats {
    /// Bytes handed out to the program (Envoy's `allocated`).
    pub allocated: u64,
    /// Bytes the allocator holds from the OS, in use or free (Envoy's `heap_size`).
    pub heap_size: u64,
    /// Free bytes held by the allocator (Envoy's `pageheap_free`).
    pub free: u64,
    /// Resident set size of the process.
    pub physical: u64,
}

pub fn read() -> MemoryStats {
    // SAFETY: mallinfo2 takes no arguments, only reads the allocator's counters under its own
    // locks and returns a plain struct by value; it is safe to call from any thread.
    #[allow(unsafe_code)]
    let info = unsafe { libc::mallinfo2() };
    let mapped = info.hblkhd as u64;
    MemoryStats {
        allocated: info.uordblks as u64 + mapped,
        heap_size: info.arena as u64 + mapped,
        free: info.fordblks as u64,
        physical: resident_bytes().unwrap_or(0),
    }
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Gives the allocator's free pages back to the OS soon, once per burst of calls. A large xDS
/// update parses its whole response into short-lived trees; glibc keeps the freed pages in
/// its heap, and the process would hold its peak for good (Envoy's tcmalloc releases them
/// in the background the same way).
pub fn release_free_memory_soon() {
    thread_local! {
        static SCHEDULED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if SCHEDULED.with(|s| s.replace(true)) {
        return;
    }
    tokio::task::spawn_local(async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        SCHEDULED.with(|s| s.set(false));
        // SAFETY: malloc_trim only walks and releases the allocator's own free lists under its
        // locks; it takes a plain integer and touches no memory the program owns.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

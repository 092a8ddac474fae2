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

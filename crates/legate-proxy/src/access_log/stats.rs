//! File access log stats under Envoy's names ("Access logs" → "Statistics").

legate_stats::stats! {
    /// `filesystem.*`, Envoy's ACCESS_LOG_FILE_STATS (shared by every access log file).
    pub struct FilesystemStats {
        counter write_buffered,
        counter write_completed,
        counter write_failed,
        counter flushed_by_timer,
        counter reopen_failed,
        gauge write_total_buffered,
    }
}

//! Access loggers and where their lines go: Envoy's file and stream access loggers
//! (`envoy.access_loggers.file`, `envoy.access_loggers.stdout`, `envoy.access_loggers.stderr`)
//! over its `AccessLogManager` (`source/common/access_log/access_log_manager_impl.cc`).
//!
//! Which one to use: the config layer builds an [`AccessLogger`] per `access_log` entry with
//! [`AccessLogger::from_config`] (on the main thread: the file is opened there, so a bad path
//! fails the config load); a worker calls [`AccessLogger::log`] when a stream ends. At exit the
//! server calls [`flush_all`]; admin `POST /reopen_logs` calls [`reopen_all`].
//!
//! How a line travels, as in Envoy: every destination (a path, stdout, stderr) is one
//! [`AccessLogFile`] shared by all the loggers writing there. [`AccessLogger::log`] formats the
//! line into a per-thread buffer, then appends it to the file's pending buffer under a short
//! lock: no I/O, no allocation beyond the buffer's growth. That lock (Envoy's `write_lock_`) is
//! the one thing workers share here, held for a copy of one line. One flush thread per file
//! (`AccessLogFlush`) swaps the pending buffer out and writes it when more than 64 KiB are
//! pending, when the flush interval (Envoy's `--file-flush-interval-msec`, 10 s by default, see
//! [`set_file_flush_interval`]) passes, on [`AccessLogFile::flush`], on reopen and when the last
//! logger of the file is dropped. Lines from one logger keep their order.
//!
//! Differences from Envoy on purpose: the pending buffer is bounded (64 MiB per file; a line that
//! does not fit is dropped and counted in `filesystem.write_failed`), so a stuck disk cannot eat
//! the memory; a failed reopen keeps writing to the file already open (Envoy drops the lines)
//! and counts `filesystem.reopen_failed`; the last logger of a file going away does not wait for
//! the final write, [`flush_all`] does.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use legate_config::access_log::{self as config, AccessLoggerConfig};

use super::filter::{nest, AccessLogFilter};
use super::formatter::{Formatter, JsonFormatter, LogFormat};
use super::stats::FilesystemStats;
use crate::http::StreamInfo;

/// Pending bytes above which the flush thread is woken (Envoy's `MIN_FLUSH_SIZE`).
const MIN_FLUSH_SIZE: usize = 64 * 1024;

/// Pending bytes above which lines are dropped rather than buffered.
const MAX_PENDING: usize = 64 * 1024 * 1024;

/// Envoy's default `--file-flush-interval-msec`.
const DEFAULT_FLUSH_INTERVAL_MS: u64 = 10_000;

static FLUSH_INTERVAL_MS: AtomicU64 = AtomicU64::new(DEFAULT_FLUSH_INTERVAL_MS);

/// `filesystem.*`, once the server installed them.
static STATS: ArcSwapOption<FilesystemStats> = ArcSwapOption::const_empty();

/// Every destination with a live [`AccessLogFile`]: Envoy's `AccessLogManagerImpl::access_logs_`.
static FILES: Mutex<Vec<(Destination, Weak<AccessLogFile>)>> = Mutex::new(Vec::new());

/// Files whose last logger is gone, with their flush threads writing the last lines.
static EXITING: Mutex<Vec<(Arc<Shared>, JoinHandle<()>)>> = Mutex::new(Vec::new());

thread_local! {
    /// The line being formatted, reused across streams on a worker.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

// === AccessLogger ===

/// One configured access log: an optional filter, a format and a destination.
#[derive(Debug)]
pub struct AccessLogger {
    filter: Option<AccessLogFilter>,
    format: LogFormat,
    file: Arc<AccessLogFile>,
}

/// Where an access log's lines go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A file, created if needed and appended to.
    File(PathBuf),
    /// The process's standard output (also `path: /dev/stdout`).
    Stdout,
    /// The process's standard error (also `path: /dev/stderr`).
    Stderr,
}

impl AccessLogger {
    /// A logger writing to `destination`, opened (or shared with other loggers) now.
    pub fn new(
        filter: Option<AccessLogFilter>,
        format: LogFormat,
        destination: Destination,
    ) -> Result<AccessLogger, String> {
        Ok(AccessLogger { filter, format, file: AccessLogFile::open(destination)? })
    }

    /// Builds an `access_log` entry (`envoy.access_loggers.file`, `.stdout`, `.stderr`) and
    /// opens its destination. No format means Envoy's default format. Errors carry the path of
    /// the bad field within the entry, e.g. `typed_config.log_format.text_format: Not supported
    /// field in StreamInfo: FOO` or `typed_config.path: unable to open file '/x/y.log': …`.
    pub fn from_config(config: &config::AccessLog) -> Result<AccessLogger, String> {
        let filter = match &config.filter {
            Some(filter) => Some(AccessLogFilter::from_config(filter).map_err(|e| nest("filter", e))?),
            None => None,
        };
        let (format, destination) = match &config.config {
            AccessLoggerConfig::File(file) => {
                (file_format(file).map_err(|e| nest("typed_config", e))?, Destination::File(PathBuf::from(&file.path)))
            }
            AccessLoggerConfig::Stdout(stream) => (stream_format(stream)?, Destination::Stdout),
            AccessLoggerConfig::Stderr(stream) => (stream_format(stream)?, Destination::Stderr),
        };
        AccessLogger::new(filter, format, destination).map_err(|e| format!("typed_config.path: {e}"))
    }

    /// Writes `info`'s line if the filter lets it through. Never blocks on I/O: callable from
    /// any worker.
    pub fn log(&self, info: &StreamInfo) {
        if let Some(filter) = &self.filter {
            if !filter.evaluate(info) {
                return;
            }
        }
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.format.format_into(info, &mut line);
                self.file.write(&line);
                if line.capacity() > MIN_FLUSH_SIZE {
                    // One huge line (long headers) should not pin memory on every worker.
                    *line = Vec::with_capacity(1024);
                }
            }
            Err(_) => {
                let mut line = Vec::with_capacity(256);
                self.format.format_into(info, &mut line);
                self.file.write(&line);
            }
        });
    }

    /// Writes what is pending for this logger's destination and waits for the write. Main
    /// thread only (it blocks).
    pub fn flush(&self) {
        self.file.flush();
    }

    pub fn destination(&self) -> &Destination {
        &self.file.destination
    }

    pub fn format(&self) -> &LogFormat {
        &self.format
    }

    pub fn filter(&self) -> Option<&AccessLogFilter> {
        self.filter.as_ref()
    }
}

/// `FileAccessLog`'s format: `log_format`, or one of its deprecated spellings, or the default.
fn file_format(file: &config::FileAccessLog) -> Result<LogFormat, String> {
    if let Some(format) = &file.log_format {
        return LogFormat::from_config(format).map_err(|e| nest("log_format", e));
    }
    if let Some(fields) = &file.typed_json_format {
        let formatter = JsonFormatter::new(fields, false);
        return formatter.map(LogFormat::Json).map_err(|e| format!("typed_json_format: {e}"));
    }
    if let Some(fields) = &file.json_format {
        // Envoy's legacy dictionary: every value a string, `"-"` when unset.
        let formatter = JsonFormatter::untyped(fields);
        return formatter.map(LogFormat::Json).map_err(|e| format!("json_format: {e}"));
    }
    match file.format.as_deref() {
        None | Some("") => Ok(LogFormat::default()),
        Some(text) => Formatter::parse(text).map(LogFormat::Text).map_err(|e| format!("format: {e}")),
    }
}

fn stream_format(stream: &config::StreamAccessLog) -> Result<LogFormat, String> {
    match &stream.log_format {
        Some(format) => LogFormat::from_config(format).map_err(|e| nest("typed_config.log_format", e)),
        None => Ok(LogFormat::default()),
    }
}

/// Writes every destination's pending lines and waits for them, including those of files no
/// logger uses any more. The server calls it before exiting.
pub fn flush_all() {
    for file in live_files() {
        file.flush();
    }
    let exiting: Vec<Arc<Shared>> = lock(&EXITING).iter().map(|(shared, _)| Arc::clone(shared)).collect();
    for shared in exiting {
        shared.wait_until(|state| state.exited);
    }
    let finished: Vec<JoinHandle<()>> = {
        let mut exiting = lock(&EXITING);
        let (finished, running) = std::mem::take(&mut *exiting).into_iter().partition(|(_, h)| h.is_finished());
        *exiting = running;
        finished.into_iter().map(|(_, handle)| handle).collect()
    };
    for handle in finished {
        let _ = handle.join();
    }
}

/// Reopens every access log file (admin `POST /reopen_logs`, after log rotation): each flush
/// thread closes and reopens its path before its next write. Returns at once.
pub fn reopen_all() {
    for file in live_files() {
        file.reopen();
    }
}

/// Sets the flush interval of every access log file (Envoy's `--file-flush-interval-msec`,
/// 10 s by default); a flush thread waiting longer than the new interval wakes up sooner.
pub fn set_file_flush_interval(interval: Duration) {
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    FLUSH_INTERVAL_MS.store(ms, Ordering::Relaxed);
}

/// Creates the `filesystem.*` stats in `store` and counts every later write there.
pub fn install_stats(store: &Arc<legate_stats::Store>) {
    STATS.store(Some(Arc::new(FilesystemStats::new(&store.scope("filesystem")))));
}

fn live_files() -> Vec<Arc<AccessLogFile>> {
    lock(&FILES).iter().filter_map(|(_, file)| file.upgrade()).collect()
}

fn flush_interval() -> Duration {
    Duration::from_millis(FLUSH_INTERVAL_MS.load(Ordering::Relaxed))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === AccessLogFile ===

/// One destination shared by every logger writing there (Envoy's `AccessLogFileImpl`): a
/// pending buffer filled by workers and the flush thread that writes it.
pub struct AccessLogFile {
    destination: Destination,
    shared: Arc<Shared>,
    flush_thread: Option<JoinHandle<()>>,
}

/// What the workers and the flush thread share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the flush thread (Envoy's `flush_event_`).
    wake: Condvar,
    /// Wakes [`AccessLogFile::flush`] callers when a write completed.
    written: Condvar,
}

struct State {
    /// Lines not yet handed to the flush thread.
    pending: Vec<u8>,
    /// `reopen_all` asked for the file to be reopened before the next write.
    reopen: bool,
    /// The last logger is gone: write what is pending and stop.
    exit: bool,
    /// Flushes asked for, and flushes whose data is written.
    flush_requested: u64,
    flush_completed: u64,
    /// The flush thread wrote its last lines and stopped.
    exited: bool,
}

impl Shared {
    /// Waits on `written` until `done` holds; bounded, in case the flush thread is stuck on a
    /// dead disk.
    fn wait_until(&self, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut state = lock(&self.state);
        while !done(&state) {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!("access log flush timed out");
                return;
            }
            state = self.written.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl AccessLogFile {
    /// The file for `destination`, shared with the loggers already writing there, or opened now
    /// with its flush thread. The error reads as Envoy's: `unable to open file '<path>': <why>`.
    pub fn open(destination: Destination) -> Result<Arc<AccessLogFile>, String> {
        let destination = match destination {
            Destination::File(path) if path == Path::new("/dev/stdout") => Destination::Stdout,
            Destination::File(path) if path == Path::new("/dev/stderr") => Destination::Stderr,
            other => other,
        };
        let mut files = lock(&FILES);
        files.retain(|(_, file)| file.strong_count() > 0);
        if let Some(file) = files.iter().find(|(d, _)| *d == destination).and_then(|(_, file)| file.upgrade()) {
            return Ok(file);
        }
        let output = Output::open(&destination)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::new(),
                reopen: false,
                exit: false,
                flush_requested: 0,
                flush_completed: 0,
                exited: false,
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let flush_thread = std::thread::Builder::new()
            .name("AccessLogFlush".to_string())
            .spawn(move || flush_thread(&thread_shared, output))
            .map_err(|e| format!("unable to start the access log flush thread: {e}"))?;
        let file =
            Arc::new(AccessLogFile { destination: destination.clone(), shared, flush_thread: Some(flush_thread) });
        files.push((destination, Arc::downgrade(&file)));
        Ok(file)
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// Appends `data` to the pending buffer (Envoy's `AccessLogFileImpl::write`); wakes the
    /// flush thread when more than 64 KiB are pending.
    pub fn write(&self, data: &[u8]) {
        let stats = STATS.load();
        let mut state = lock(&self.shared.state);
        if state.pending.len() + data.len() > MAX_PENDING {
            drop(state);
            if let Some(stats) = &*stats {
                stats.write_failed.inc();
            }
            return;
        }
        state.pending.extend_from_slice(data);
        let wake = state.pending.len() > MIN_FLUSH_SIZE;
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
        if let Some(stats) = &*stats {
            stats.write_buffered.inc();
            stats.write_total_buffered.add(data.len() as u64);
        }
    }

    /// Has the flush thread write everything pending now, and waits until it is written.
    /// Blocks: main thread and tests only.
    pub fn flush(&self) {
        let target = {
            let mut state = lock(&self.shared.state);
            state.flush_requested += 1;
            state.flush_requested
        };
        self.shared.wake.notify_one();
        self.shared.wait_until(|state| state.flush_completed >= target);
    }

    /// Asks the flush thread to reopen the file before its next write.
    pub fn reopen(&self) {
        lock(&self.shared.state).reopen = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for AccessLogFile {
    /// Tells the flush thread to write what is left and stop, without waiting for it (this may
    /// run on a worker dropping the last config snapshot); [`flush_all`] joins it.
    fn drop(&mut self) {
        lock(&self.shared.state).exit = true;
        self.shared.wake.notify_one();
        if let Some(handle) = self.flush_thread.take() {
            lock(&EXITING).push((Arc::clone(&self.shared), handle));
        }
    }
}

impl std::fmt::Debug for AccessLogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogFile").field("destination", &self.destination).finish_non_exhaustive()
    }
}

/// The flush thread of one file (Envoy's `flushThreadFunc`).
fn flush_thread(shared: &Shared, mut output: Output) {
    let mut writing = Vec::new();
    let mut next_timer = Instant::now() + flush_interval();
    loop {
        let mut state = lock(&shared.state);
        let mut by_timer = false;
        loop {
            let asked = state.exit || state.reopen || state.flush_requested > state.flush_completed;
            if asked || state.pending.len() > MIN_FLUSH_SIZE {
                break;
            }
            let now = Instant::now();
            let interval = flush_interval();
            // A shorter interval set meanwhile applies now.
            next_timer = next_timer.min(now + interval);
            if now >= next_timer {
                by_timer = true;
                next_timer = now + interval;
                break;
            }
            state = shared.wake.wait_timeout(state, next_timer - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        std::mem::swap(&mut state.pending, &mut writing);
        let reopen = std::mem::take(&mut state.reopen);
        let flushed = state.flush_requested;
        let exit = state.exit;
        drop(state);

        let stats = STATS.load();
        if by_timer {
            if let Some(stats) = &*stats {
                stats.flushed_by_timer.inc();
            }
        }
        if reopen {
            if let Err(error) = output.reopen() {
                tracing::warn!(%error, "access log reopen failed, writing to the file already open");
                if let Some(stats) = &*stats {
                    stats.reopen_failed.inc();
                }
            }
        }
        if !writing.is_empty() {
            let result = output.write(&writing);
            if let Some(stats) = &*stats {
                match result {
                    Ok(()) => stats.write_completed.inc(),
                    // Probably a full disk.
                    Err(_) => stats.write_failed.inc(),
                }
                stats.write_total_buffered.sub(writing.len() as u64);
            }
            writing.clear();
            if writing.capacity() > 4 * MIN_FLUSH_SIZE {
                writing = Vec::new();
            }
        }

        let mut state = lock(&shared.state);
        state.flush_completed = state.flush_completed.max(flushed);
        state.exited = exit;
        drop(state);
        shared.written.notify_all();
        if exit {
            return;
        }
    }
}

/// The open destination, owned by the flush thread.
enum Output {
    File { path: PathBuf, file: File },
    Stdout,
    Stderr,
}

impl Output {
    fn open(destination: &Destination) -> Result<Output, String> {
        match destination {
            Destination::File(path) => Ok(Output::File {
                file: open_append(path).map_err(|e| format!("unable to open file '{}': {e}", path.display()))?,
                path: path.clone(),
            }),
            Destination::Stdout => Ok(Output::Stdout),
            Destination::Stderr => Ok(Output::Stderr),
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Output::File { file, .. } => file.write_all(data),
            Output::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(data)?;
                stdout.flush()
            }
            Output::Stderr => io::stderr().lock().write_all(data),
        }
    }

    /// Opens the path again (the old one may have been renamed by log rotation); the old file
    /// stays in use if that fails.
    fn reopen(&mut self) -> io::Result<()> {
        if let Output::File { path, file } = self {
            *file = open_append(path)?;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http::Version;

    use super::*;
    use crate::access_log::filter::{Comparison, ComparisonOp};
    use crate::access_log::formatter::Formatter;

    /// A path under the temp dir no other test (or run) uses.
    fn temp_path(name: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "legate-access-log-{}-{}-{}-{name}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        );
        std::env::temp_dir().join(unique)
    }

    fn stream_info(code: u16) -> StreamInfo {
        let mut info = StreamInfo::new(
            Version::HTTP_11,
            u64::from(code),
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:10000".parse().unwrap(),
        );
        info.response_code = Some(code);
        info.end = Some(Duration::from_millis(1));
        info
    }

    fn logger(path: &Path, format: &str, filter: Option<AccessLogFilter>) -> AccessLogger {
        let format = LogFormat::Text(Formatter::parse(format).unwrap());
        AccessLogger::new(filter, format, Destination::File(path.to_path_buf())).unwrap()
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Polls `path` until `check` holds, failing with the last content after 10 s.
    fn eventually(path: &Path, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let content = read(path);
            if check(&content) {
                return;
            }
            assert!(Instant::now() < deadline, "{} never matched; last: {content:?}", path.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Loggers live in config snapshots shared by every worker.
    #[test]
    fn loggers_are_shared_across_workers() {
        fn shared<T: Send + Sync>() {}
        shared::<AccessLogger>();
    }

    #[test]
    fn file_sink_writes_lines_on_flush() {
        let path = temp_path("flush");
        let log = logger(&path, "%RESPONSE_CODE% %CONNECTION_ID%\n", None);
        log.log(&stream_info(200));
        log.log(&stream_info(503));
        log.flush();
        assert_eq!(read(&path), "200 200\n503 503\n");
        drop(log);
        flush_all();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn filter_decides_what_is_written() {
        let path = temp_path("filter");
        let errors = AccessLogFilter::StatusCode(Comparison::new(ComparisonOp::Ge, 500));
        let log = logger(&path, "%RESPONSE_CODE%\n", Some(errors));
        for code in [200, 502, 404, 503] {
            log.log(&stream_info(code));
        }
        log.flush();
        assert_eq!(read(&path), "502\n503\n");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn loggers_of_one_path_share_the_file_and_workers_never_interleave_lines() {
        let path = temp_path("shared");
        let first = Arc::new(logger(&path, "first %RESPONSE_CODE%\n", None));
        let second = Arc::new(logger(&path, "second %RESPONSE_CODE%\n", None));
        assert!(Arc::ptr_eq(&first.file, &second.file));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (first, second) = (Arc::clone(&first), Arc::clone(&second));
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        first.log(&stream_info(200));
                        second.log(&stream_info(201));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        first.flush();
        let content = read(&path);
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), 4000);
        assert_eq!(lines.iter().filter(|l| **l == "first 200").count(), 2000);
        assert_eq!(lines.iter().filter(|l| **l == "second 201").count(), 2000);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn dropping_the_last_logger_writes_the_rest() {
        let path = temp_path("drop");
        let log = logger(&path, "%RESPONSE_CODE%\n", None);
        log.log(&stream_info(204));
        drop(log);
        flush_all();
        assert_eq!(read(&path), "204\n");
        // A new logger on the same path appends to it.
        let log = logger(&path, "%RESPONSE_CODE%\n", None);
        log.log(&stream_info(205));
        log.flush();
        assert_eq!(read(&path), "204\n205\n");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn reopen_after_rotation_writes_to_the_new_file() {
        let path = temp_path("reopen");
        let rotated = path.with_extension("log.1");
        let log = logger(&path, "%RESPONSE_CODE%\n", None);
        log.log(&stream_info(200));
        log.flush();
        std::fs::rename(&path, &rotated).unwrap();
        reopen_all();
        log.log(&stream_info(201));
        log.flush();
        assert_eq!(read(&rotated), "200\n");
        assert_eq!(read(&path), "201\n");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&rotated).unwrap();
    }

    #[test]
    fn open_failure_reads_as_envoys_error() {
        let path = std::env::temp_dir().join("legate-no-such-dir").join("access.log");
        let format = LogFormat::Text(Formatter::parse("%RESPONSE_CODE%\n").unwrap());
        let error = AccessLogger::new(None, format, Destination::File(path.clone())).unwrap_err();
        assert!(error.starts_with(&format!("unable to open file '{}': ", path.display())), "{error}");
    }

    /// Without a flush call, the flush thread writes once 64 KiB are pending, and on its timer;
    /// both are counted in `filesystem.*`.
    #[test]
    fn flush_thread_writes_on_size_and_on_timer_and_counts() {
        let store = legate_stats::Store::new(1);
        install_stats(&store);

        let path = temp_path("size");
        let log = logger(&path, "%REQ(X-PAD)%%RESPONSE_CODE%\n", None);
        let mut big = stream_info(200);
        let mut headers = http::HeaderMap::new();
        let pad = "x".repeat(1000);
        headers.insert("x-pad", http::HeaderValue::from_str(&pad).unwrap());
        big.request = Some(Box::new(crate::http::RequestSnapshot {
            method: http::Method::GET,
            path: "/".into(),
            authority: "a".into(),
            scheme: http::uri::Scheme::HTTP,
            headers,
        }));
        for _ in 0..70 {
            log.log(&big);
        }
        eventually(&path, |content| content.len() >= 64 * 1024);

        set_file_flush_interval(Duration::from_millis(20));
        let timed = temp_path("timer");
        let timed_log = logger(&timed, "%RESPONSE_CODE%\n", None);
        timed_log.log(&stream_info(418));
        eventually(&timed, |content| content == "418\n");
        // The timer fires (and counts) even with nothing pending; another test's `flush_all`
        // may have written the line first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.counter_value("filesystem.flushed_by_timer") == Some(0) {
            assert!(Instant::now() < deadline, "filesystem.flushed_by_timer stayed 0");
            std::thread::sleep(Duration::from_millis(10));
        }
        set_file_flush_interval(Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS));

        log.flush();
        assert!(store.counter_value("filesystem.write_buffered").unwrap() >= 71);
        assert!(store.counter_value("filesystem.write_completed").unwrap() >= 2);
        assert_eq!(store.counter_value("filesystem.write_failed"), Some(0));
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&timed).unwrap();
    }

    fn from_config(json: serde_json::Value) -> Result<AccessLogger, String> {
        let config: config::AccessLog = legate_config::path::from_value(json).unwrap();
        AccessLogger::from_config(&config)
    }

    #[test]
    fn built_from_config() {
        let path = temp_path("config");
        let log = from_config(serde_json::json!({
            "name": "envoy.access_loggers.file",
            "filter": {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": 500, "runtime_key": "k"}}}},
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": path.to_str().unwrap(),
                "log_format": {"json_format": {"code": "%RESPONSE_CODE%", "route": "%ROUTE_NAME%"}}
            }
        }))
        .unwrap();
        log.log(&stream_info(200));
        log.log(&stream_info(503));
        log.flush();
        assert_eq!(read(&path), "{\"code\":503,\"route\":null}\n");
        std::fs::remove_file(&path).unwrap();

        let default = from_config(serde_json::json!({"name": "envoy.access_loggers.stderr"})).unwrap();
        assert_eq!(default.destination(), &Destination::Stderr);
        let LogFormat::Text(text) = default.format() else { panic!("not text") };
        let mut info = stream_info(200);
        info.start_time = Some(std::time::UNIX_EPOCH);
        assert_eq!(
            text.format(&info),
            "[1970-01-01T00:00:00.000Z] \"- - HTTP/1.1\" 200 - 0 0 1 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let file = |typed: serde_json::Value| {
            let mut typed = typed;
            typed["@type"] = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog".into();
            from_config(serde_json::json!({"name": "envoy.access_loggers.file", "typed_config": typed})).unwrap_err()
        };
        let path = temp_path("errors");
        let path = path.to_str().unwrap();
        assert_eq!(
            file(serde_json::json!({"path": path, "format": "%NOPE%"})),
            "typed_config.format: Not supported field in StreamInfo: NOPE"
        );
        assert_eq!(
            file(serde_json::json!({"path": path, "log_format": {"text_format": "%REQ%"}})),
            "typed_config.log_format.text_format: REQ requires parameters"
        );
        assert_eq!(
            file(serde_json::json!({"path": path, "log_format": {}})),
            "typed_config.log_format: one of text_format, json_format or text_format_source is \
             required"
        );
        assert!(file(serde_json::json!({"path": "/nonexistent-dir/a.log"}))
            .starts_with("typed_config.path: unable to open file '/nonexistent-dir/a.log': "),);
        let stdout = from_config(serde_json::json!({
            "name": "envoy.access_loggers.stdout",
            "filter": {"response_flag_filter": {"flags": ["XX"]}}
        }));
        assert_eq!(
            stdout.unwrap_err(),
            "filter.response_flag_filter.flags[0]: response flag 'XX' is not supported by legate"
        );
        assert!(!Path::new(path).exists(), "a refused config opens no file");
    }

    #[test]
    fn dev_stdout_is_the_stdout_destination() {
        let format = || LogFormat::Text(Formatter::parse("").unwrap());
        let by_path = AccessLogger::new(None, format(), Destination::File("/dev/stdout".into())).unwrap();
        let by_kind = AccessLogger::new(None, format(), Destination::Stdout).unwrap();
        assert_eq!(by_path.destination(), &Destination::Stdout);
        assert!(Arc::ptr_eq(&by_path.file, &by_kind.file));
        by_kind.flush();
    }
}

//! The real `legate` binary as a child process: config written to a temp file, admin address
//! discovered through `--admin-address-path` (as Envoy's integration tests do), readiness awaited
//! on `/ready`, stats read over admin. Dropping a [`Legate`] kills the process.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::admin::{http_request, HttpResponse};
use crate::eventually::{eventually, EVENTUALLY};

/// Bound on startup: admin address file written and `/ready` answering 200.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A per-test scratch directory, removed on drop (for access log files and the like).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "legate-test-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Self(dir)
    }
}

impl TempDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How to start legate. Defaults: `--concurrency 1 -l warning`, admin address discovered via
/// `--admin-address-path`.
#[derive(Debug, Clone)]
pub struct LegateBuilder {
    bin: PathBuf,
    yaml: Option<String>,
    concurrency: Option<u32>,
    log_level: Option<String>,
    args: Vec<String>,
    /// `None`: discover via `--admin-address-path`; `Some`: a fixed admin address (bare mode).
    fixed_admin: Option<SocketAddr>,
}

impl LegateBuilder {
    /// The bootstrap, written to `legate.yaml` in a temp dir and passed with `-c`.
    pub fn config(mut self, yaml: &str) -> Self {
        self.yaml = Some(yaml.to_string());
        self
    }

    /// Worker threads (`--concurrency`); default 1.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// `-l`; default `warning`.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.to_string());
        self
    }

    /// An extra command-line argument, appended after the defaults.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// No arguments at all (beyond [`Self::arg`]s): the embedded demo. The admin address must be
    /// known in advance since `--admin-address-path` is not passed.
    pub fn bare(mut self, admin: SocketAddr) -> Self {
        self.fixed_admin = Some(admin);
        self.concurrency = None;
        self.log_level = None;
        self
    }

    /// Starts legate and waits until its admin answers `/ready` with 200. Panics with legate's
    /// stderr if it exits or does not become ready within 30 s.
    pub fn start(self) -> Legate {
        let dir = TempDir::new();
        let mut cmd = Command::new(&self.bin);
        let admin_path = dir.0.join("admin_address");
        let mut config_path = None;
        if self.fixed_admin.is_none() {
            cmd.arg("--admin-address-path").arg(&admin_path);
            cmd.arg("-l").arg(self.log_level.as_deref().unwrap_or("warning"));
            cmd.arg("--concurrency").arg(self.concurrency.unwrap_or(1).to_string());
        } else {
            if let Some(level) = &self.log_level {
                cmd.arg("-l").arg(level);
            }
            if let Some(n) = self.concurrency {
                cmd.arg("--concurrency").arg(n.to_string());
            }
        }
        if let Some(yaml) = &self.yaml {
            let path = dir.0.join("legate.yaml");
            fs::write(&path, yaml).unwrap();
            cmd.arg("-c").arg(&path);
            config_path = Some(path);
        }
        cmd.args(&self.args);
        let stdout_path = dir.0.join("stdout");
        let stderr_path = dir.0.join("stderr");
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let mut legate = Legate {
            pid: child.id(),
            child,
            exit: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            config_path,
            stdout_path,
            stderr_path,
            _dir: dir,
        };
        legate.admin = match self.fixed_admin {
            Some(addr) => addr,
            None => legate.await_admin_address(&admin_path),
        };
        legate.await_ready();
        legate
    }
}

/// A running `legate` process.
#[derive(Debug)]
pub struct Legate {
    child: Child,
    pid: u32,
    exit: Option<ExitStatus>,
    admin: SocketAddr,
    config_path: Option<PathBuf>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl Legate {
    /// A builder for the binary at `bin` (pass [`crate::legate_bin!()`]).
    pub fn builder(bin: impl AsRef<Path>) -> LegateBuilder {
        LegateBuilder {
            bin: bin.as_ref().to_path_buf(),
            yaml: None,
            concurrency: None,
            log_level: None,
            args: Vec::new(),
            fixed_admin: None,
        }
    }

    /// Starts `bin` with `yaml` and the defaults (one worker).
    pub fn start(bin: impl AsRef<Path>, yaml: &str) -> Legate {
        Self::builder(bin).config(yaml).start()
    }

    fn await_admin_address(&mut self, path: &Path) -> SocketAddr {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            // The file may be seen half-written: retry until it parses.
            if let Some(addr) = fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()) {
                return addr;
            }
            self.fail_if_exited("writing the admin address file");
            if Instant::now() >= deadline {
                panic!(
                    "legate did not write its admin address to {} within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    path.display(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn await_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let last = http_request(self.admin, "GET", "/ready");
            if matches!(&last, Ok(r) if r.status == 200) {
                return;
            }
            self.fail_if_exited("becoming ready");
            if Instant::now() >= deadline {
                panic!(
                    "legate admin {} not ready within {STARTUP_TIMEOUT:?}: last /ready {last:?}; stderr:\n{}",
                    self.admin,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn fail_if_exited(&mut self, while_doing: &str) {
        if let Some(status) = self.try_wait() {
            panic!("legate exited ({status}) before {while_doing}; stderr:\n{}", self.stderr());
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where the admin listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Path of the YAML passed with `-c`, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Everything legate wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Everything legate wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// One admin request; panics if the admin does not answer.
    pub fn admin_request(&self, method: &str, path: &str) -> HttpResponse {
        http_request(self.admin, method, path)
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}; legate stderr:\n{}", self.stderr()))
    }

    /// `GET path` → (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let r = self.admin_request("GET", path);
        (r.status, r.body)
    }

    /// `POST path` → (status, body).
    pub fn admin_post(&self, path: &str) -> (u16, String) {
        let r = self.admin_request("POST", path);
        (r.status, r.body)
    }

    /// `GET path` parsed as JSON; panics unless 200 and valid JSON.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.admin_get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: invalid JSON ({e}): {body}"))
    }

    /// Counters and gauges from `/stats?format=json` (histograms left out).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let json = self.admin_json("/stats?format=json");
        let entries =
            json["stats"].as_array().unwrap_or_else(|| panic!("/stats?format=json has no \"stats\" array: {json}"));
        entries.iter().filter_map(|e| Some((e.get("name")?.as_str()?.to_string(), e.get("value")?.as_u64()?))).collect()
    }

    /// One counter or gauge, `None` if legate does not have it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats().get(name).copied()
    }

    /// Waits (bounded, [`EVENTUALLY`]) until stat `name` equals `expected`.
    pub fn wait_stat(&self, name: &str, expected: u64) {
        eventually(&format!("{name} == {expected}"), EVENTUALLY, || self.stat(name), |v| *v == Some(expected));
    }

    /// Waits (bounded) until stat `name` is at least `min`; returns its value.
    pub fn wait_stat_at_least(&self, name: &str, min: u64) -> u64 {
        eventually(&format!("{name} >= {min}"), EVENTUALLY, || self.stat(name), |v| v.is_some_and(|v| v >= min))
            .unwrap()
    }

    /// The bound address of listener `name`, from `/listeners?format=json`.
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        let json = self.admin_json("/listeners?format=json");
        let statuses = json["listener_statuses"].as_array().unwrap_or_else(|| panic!("no listener_statuses: {json}"));
        let status = statuses
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no listener named {name:?} in /listeners: {json}"));
        let sa = &status["local_address"]["socket_address"];
        let ip = sa["address"].as_str().unwrap_or_else(|| panic!("listener {name}: no address: {status}"));
        let port = sa["port_value"].as_u64().unwrap_or_else(|| panic!("listener {name}: no port_value: {status}"));
        let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|e| panic!("listener {name}: {ip}: {e}"));
        let port = u16::try_from(port).unwrap_or_else(|e| panic!("listener {name}: port {port}: {e}"));
        let addr = SocketAddr::new(ip, port);
        assert_ne!(addr.port(), 0, "listener {name} reports port 0, not its bound port: {status}");
        addr
    }

    /// Like [`Self::listener_addr`], with an unspecified bind address (`0.0.0.0`) replaced by
    /// 127.0.0.1: the address a local client connects to.
    pub fn connect_addr(&self, name: &str) -> SocketAddr {
        let mut addr = self.listener_addr(name);
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        addr
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed: {status}", self.pid);
    }

    /// SIGTERM: Envoy's graceful shutdown.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// The exit status if legate has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits for exit up to `timeout`; `None` if still running.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exit up to `timeout`; panics (with stderr) if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.try_wait_exit(timeout).unwrap_or_else(|| {
            panic!("legate still running {timeout:?} after being asked to exit; stderr:\n{}", self.stderr())
        })
    }

    /// Resident set size from `/proc/<pid>/status` (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }
}

impl Drop for Legate {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let stderr = self.stderr();
            let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
            eprintln!("--- legate (pid {}) stderr, last lines ---", self.pid);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Output of a short-lived run (`--mode validate`, a config error).
#[derive(Debug)]
pub struct RunOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl RunOutput {
    /// The exit code; panics if killed by a signal (a crash).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("terminated by a signal ({}); stderr:\n{}", self.status, self.stderr))
    }
}

/// Runs `bin args…` to completion, killing it after `timeout` (then panics: a run that should
/// exit did not).
pub fn run_bounded(bin: impl AsRef<Path>, args: &[&str], timeout: Duration) -> RunOutput {
    let dir = TempDir::new();
    let (out, err) = (dir.0.join("stdout"), dir.0.join("stderr"));
    let mut child = Command::new(bin.as_ref())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.as_ref().display()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`legate {}` still running after {timeout:?}; stderr:\n{}",
                args.join(" "),
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    RunOutput {
        status,
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

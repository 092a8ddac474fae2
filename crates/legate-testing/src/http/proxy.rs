//! [`HttpProxy`]: the real binary started from an HTTP bootstrap (see
//! [`crate::config::http_bootstrap`]) with a file access log a test reads back, the fixture of
//! the HTTP tests that check what an operator sees: the client's status, the access log's
//! response code and flags, the stats.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::{file_access_log, hcm_config};
use crate::eventually::{eventually, EVENTUALLY};
use crate::http::HttpClient;
use crate::legate::{Legate, TempDir};

/// The access log format of [`HttpProxy::start`]: a line reads `503 UH`, `200 -`.
pub const CODE_AND_FLAGS: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS%\n";

/// legate, its access log file and the temp dir holding it (removed on drop, after legate
/// is killed).
#[derive(Debug)]
pub struct HttpProxy {
    /// The process: stats (`wait_stat`), admin.
    pub legate: Legate,
    log: PathBuf,
    _dir: TempDir,
}

impl HttpProxy {
    /// Starts the binary `bin` ([`crate::legate_bin!()`]) from `config`, whose listener 0 is an
    /// HTTP connection manager named `ingress`, with a file access log of [`CODE_AND_FLAGS`].
    pub fn start(bin: impl AsRef<Path>, config: Value) -> Self {
        Self::with_access_log(bin, config, |path| file_access_log(path, Some(CODE_AND_FLAGS)))
    }

    /// Like [`Self::start`], with the access log `access_log` builds for a file path (another
    /// format, JSON lines). The file is flushed every 100 ms (Envoy's
    /// `--file-flush-interval-msec`), so a test waits for lines, not for the 10 s default.
    pub fn with_access_log(bin: impl AsRef<Path>, mut config: Value, access_log: impl FnOnce(&Path) -> Value) -> Self {
        let dir = TempDir::new();
        let log = dir.join("access.log");
        hcm_config(&mut config, 0)["access_log"] = json!([access_log(&log)]);
        let legate =
            Legate::builder(bin).config(&config.to_string()).arg("--file-flush-interval-msec").arg("100").start();
        HttpProxy { legate, log, _dir: dir }
    }

    /// Where listener `ingress` accepts connections.
    pub fn addr(&self) -> SocketAddr {
        self.legate.connect_addr("ingress")
    }

    /// A new HTTP/1.1 connection to listener `ingress`.
    pub fn client(&self) -> HttpClient {
        HttpClient::connect(self.addr())
    }

    /// Access log line `n` (1-based), waited for.
    pub fn logged(&self, n: usize) -> String {
        self.log_lines(n).swap_remove(n - 1)
    }

    /// The access log's lines once there are at least `n`; panics after [`EVENTUALLY`].
    pub fn log_lines(&self, n: usize) -> Vec<String> {
        eventually(
            &format!("{n} access log lines in {}", self.log.display()),
            EVENTUALLY,
            || std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>(),
            |lines| lines.len() >= n,
        )
    }
}

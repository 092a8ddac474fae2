//! The command line, with Envoy's flag names ("Command line options" in Envoy's docs).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Parser, Debug, Clone)]
#[command(name = "legate", version, about = "legate: an Envoy-compatible L4/L7 proxy")]
pub struct Options {
    /// Path to an Envoy v3 bootstrap (YAML, or JSON when it ends in .json).
    #[arg(short = 'c', long = "config-path")]
    pub config_path: Option<PathBuf>,

    /// YAML bootstrap merged over the file given with --config-path.
    #[arg(long = "config-yaml")]
    pub config_yaml: Option<String>,

    /// Worker threads (default: the number of cores).
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// serve: run; validate: check the config and exit; init_only: initialize and exit.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    pub mode: Mode,

    /// trace, debug, info, warning/warn, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,

    /// Seconds to wait for open connections to finish after SIGTERM/SIGINT.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,

    /// Overrides node.cluster.
    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,

    /// Overrides node.id.
    #[arg(long = "service-node")]
    pub service_node: Option<String>,

    /// Overrides node.locality.zone.
    #[arg(long = "service-zone")]
    pub service_zone: Option<String>,

    /// Writes the admin's bound address here once it listens.
    /// How often access log files are flushed (Envoy's default: 10 s).
    #[arg(long = "file-flush-interval-msec", default_value_t = 10000)]
    pub file_flush_interval_msec: u64,

    #[arg(long = "admin-address-path")]
    pub admin_address_path: Option<PathBuf>,

    /// Accepted for compatibility: legate has no hot restart to disable.
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
    #[value(name = "init_only")]
    InitOnly,
}

impl Mode {
    /// Envoy's spelling in `/server_info`.
    pub fn envoy_name(self) -> &'static str {
        match self {
            Mode::Serve => "Serve",
            Mode::Validate => "Validate",
            Mode::InitOnly => "InitOnly",
        }
    }
}

impl Options {
    pub fn concurrency(&self) -> usize {
        self.concurrency
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// No config given: run the embedded demo.
    pub fn is_demo(&self) -> bool {
        self.config_path.is_none() && self.config_yaml.is_none()
    }
}

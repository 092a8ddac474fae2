//! Logging with Envoy's levels and named loggers, changeable at run time through `/logging`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Envoy logger names and the legate modules whose logs they cover.
const LOGGERS: &[(&str, &[&str])] = &[
    ("admin", &["legate::admin"]),
    ("config", &["legate_config"]),
    ("connection", &["legate_proxy::network", "legate_proxy::listener"]),
    ("filter", &["legate_proxy::filters"]),
    ("main", &["legate"]),
    ("stats", &["legate_stats"]),
    ("upstream", &["legate_proxy::upstream", "legate_proxy::worker"]),
];

pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    levels: Mutex<BTreeMap<&'static str, &'static str>>,
}

/// Maps Envoy's level names to tracing's (`critical` is `error`; `warning` is `warn`).
pub fn parse_level(level: &str) -> Option<&'static str> {
    Some(match level {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}

fn envoy_level(level: &str) -> &'static str {
    match level {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" => "warning",
        "error" => "error",
        _ => "off",
    }
}

impl LogControl {
    pub fn init(level: &str) -> anyhow::Result<Self> {
        let level = parse_level(level).ok_or_else(|| anyhow::anyhow!("error: invalid log level specified: {level}"))?;
        let levels: BTreeMap<&'static str, &'static str> = LOGGERS.iter().map(|(name, _)| (*name, level)).collect();
        let filter = EnvFilter::new(directives(&levels));
        let (layer, handle) = reload::Layer::new(filter);
        tracing_subscriber::registry()
            .with(layer)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_thread_names(true),
            )
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot initialise logging: {e}"))?;
        Ok(LogControl { handle, levels: Mutex::new(levels) })
    }

    /// `/logging` listing: `active loggers:` then `  <name>: <level>` lines.
    pub fn listing(&self) -> String {
        let levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from("active loggers:\n");
        for (name, level) in levels.iter() {
            out.push_str(&format!("  {name}: {}\n", envoy_level(level)));
        }
        out
    }

    /// Sets every logger (`name` = None) or one. Returns false for an unknown name or level.
    pub fn set(&self, name: Option<&str>, level: &str) -> bool {
        let Some(level) = parse_level(level) else { return false };
        let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        match name {
            None => levels.values_mut().for_each(|l| *l = level),
            Some(name) => match levels.get_mut(name) {
                Some(l) => *l = level,
                None => return false,
            },
        }
        let _ = self.handle.reload(EnvFilter::new(directives(&levels)));
        true
    }
}

fn directives(levels: &BTreeMap<&'static str, &'static str>) -> String {
    let mut parts = vec!["warn".to_string()];
    for (name, targets) in LOGGERS {
        let level = levels.get(name).copied().unwrap_or("info");
        for target in *targets {
            parts.push(format!("{target}={level}"));
        }
    }
    // "main" covers the binary crate; its admin module is a separate logger, listed after so
    // the more specific directive wins.
    parts.join(",")
}

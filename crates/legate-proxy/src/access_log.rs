//! Access logs (`envoy.access_loggers.*`): format strings with Envoy's command operators,
//! filters deciding which streams are logged, and sinks that never block a worker.
//!
//! Envoy's "Access logging" page, in three parts that follow a finished stream:
//! - [`filter`]: `AccessLogFilter`, whether the stream is logged;
//! - [`formatter`]: `SubstitutionFormatString`, the line (text or JSON) built from its
//!   [`StreamInfo`](crate::http::StreamInfo) with command operators (`%START_TIME%`, …);
//! - [`sink`]: the file, stdout and stderr access loggers; lines are buffered and written by one
//!   flush thread per destination, as Envoy's `AccessLogManager` does.
//!
//! Stats: `filesystem.*` ([`stats::FilesystemStats`]), once the server calls
//! [`sink::install_stats`].

mod command_operators;
pub(crate) mod date_formatter;
pub mod filter;
pub mod formatter;
pub mod sink;
pub mod stats;

pub use filter::{AccessLogFilter, Comparison, ComparisonOp, HeaderFilter};
pub use formatter::{default_format, Formatter, JsonFormatter, LogFormat, DEFAULT_FORMAT};
pub use sink::{
    flush_all, install_stats, reopen_all, set_file_flush_interval, AccessLogFile, AccessLogger, Destination,
};

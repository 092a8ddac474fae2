//! legate's stats: counters, gauges and histograms under Envoy's names, written per worker
//! shard and summed when admin reads them (DESIGN §2, §8; Envoy's "Statistics" overview and
//! `source/common/stats`).
//!
//! Which one to use: a component declares its stats once with [`stats!`] and builds them from a
//! [`Scope`] when config is applied; the hot path only calls [`Counter::inc`],
//! [`Gauge::inc`]/[`Gauge::dec`] or [`Histogram::record`], which never lock or look up a name,
//! and allocate only on a worker's first write into a block of 1,024 slots (see the `arena`
//! module). A worker thread calls [`set_thread_shard`] once so its writes land in its own memory.
//! The main thread calls [`Store::latch_histograms`] at every stats flush, and admin renders
//! with [`Store::render_text`], [`Store::render_json`] and [`Store::render_prometheus`].
//!
//! Differences from Envoy on purpose: histograms keep only Envoy's default Prometheus buckets,
//! so quantiles are interpolated within a bucket (see [`histogram`]); there are no text
//! readouts, no stats sinks and no configurable tag extractors (the defaults always apply).

#![forbid(unsafe_code)]

mod arena;
mod counter;
mod filter;
mod gauge;
pub mod histogram;
mod macros;
mod render;
mod store;
mod symbol_table;
pub mod tag_extraction;

pub use arena::set_thread_shard;
pub use counter::{Counter, CounterRef};
pub use filter::Filter;
pub use gauge::{Gauge, GaugeRef};
pub use histogram::{Histogram, HistogramRef, RareHistogram};
pub use render::StatTypes;
pub use store::{Scope, StatArena, StatKind, Store};

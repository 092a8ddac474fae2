//! legate's data plane: workers, listeners, the network filter framework, network filters and
//! upstream clusters. Modules follow the path of a connection: `worker` accepts on a
//! `listener`, which picks a filter chain; the `network` connection runs its `filters`; the
//! terminal filter reaches `upstream` hosts through the cluster manager.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod extensions;
pub mod filters;
pub mod http;
pub mod listener;
pub mod network;
pub mod router;
pub mod runtime;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod worker;

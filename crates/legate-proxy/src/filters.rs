//! The filters legate implements, by kind, under Envoy's extension names.

pub mod http;
pub mod listener;
pub mod network;
pub mod rbac;

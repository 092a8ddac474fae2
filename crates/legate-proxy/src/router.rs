//! Route tables (`envoy.config.route.v3.RouteConfiguration`), compiled once per config:
//! virtual hosts found by `:authority`, routes matched in order, and what each route does.
//!
//! Matching cost does not grow with the number of routes where a faster structure exists:
//! exact domains are hashed, wildcard domains are hashed per suffix/prefix length, and a
//! virtual host's exact-path and prefix routes are indexed so that only candidate routes are
//! checked (still in configuration order: the first route that matches wins, as in Envoy).

pub mod action;
pub mod hash_policy;
pub mod header_parser;
pub mod rds;
pub mod retry_policy;
pub mod route;
pub mod route_config;

pub use action::{ClusterSpecifier, DirectResponse, Redirect, RouteAction, RouteKind};
pub use header_parser::HeaderParser;
pub use rds::RouteConfigProvider;
pub use retry_policy::{RetryOn, RetryPolicy};
pub use route::{MatchInput, Route};
pub use route_config::{RouteConfig, VirtualHost};

//! What a filter builds from a route's (or virtual host's) `typed_per_filter_config` — a rate
//! limiter, RBAC engines — made once per config, on its first request, and found again by the
//! config's address.
//!
//! Read without a lock on each request (an `ArcSwap` snapshot); written once per route config.
//! An entry whose owner is gone (a replaced route table) is dropped at the next insertion and
//! never matched again: its address may be reused, but its owner pointer is checked.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use legate_config::route::FilterPerRouteConfig;

use super::StreamView;
use crate::router::{Route, VirtualHost};

/// What holds a route config.
#[derive(Clone)]
pub(crate) enum Owner {
    Route(Weak<Route>),
    VirtualHost(Weak<VirtualHost>),
}

impl Owner {
    fn alive(&self) -> bool {
        match self {
            Owner::Route(w) => w.strong_count() > 0,
            Owner::VirtualHost(w) => w.strong_count() > 0,
        }
    }

    fn is(&self, other: &Owner) -> bool {
        match (self, other) {
            (Owner::Route(a), Owner::Route(b)) => Weak::ptr_eq(a, b),
            (Owner::VirtualHost(a), Owner::VirtualHost(b)) => Weak::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The filter named `name`'s config on the stream's route, else its virtual host, and what
/// holds it; `of` picks the filter's kind of config.
pub(crate) fn route_entry<'a, C>(
    stream: &StreamView<'a>,
    name: &str,
    of: impl Fn(&'a FilterPerRouteConfig) -> Option<&'a C>,
) -> Option<(Owner, &'a C)> {
    if let Some(route) = stream.route {
        if let Some(config) = route.per_filter_config.get(name).and_then(&of) {
            return Some((Owner::Route(Arc::downgrade(route)), config));
        }
    }
    let vhost = stream.virtual_host?;
    vhost.per_filter_config.get(name).and_then(of).map(|config| (Owner::VirtualHost(Arc::downgrade(vhost)), config))
}

/// Built states by the address of their config.
pub(crate) struct RouteStates<T> {
    entries: ArcSwap<HashMap<usize, Entry<T>>>,
}

impl<T> Default for RouteStates<T> {
    fn default() -> Self {
        RouteStates { entries: ArcSwap::default() }
    }
}

struct Entry<T> {
    owner: Owner,
    /// `None`: the route config cannot be applied (logged when it was first seen).
    state: Option<Arc<T>>,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry { owner: self.owner.clone(), state: self.state.clone() }
    }
}

impl<T> RouteStates<T> {
    /// Whether every entry's owner is alive (the dead are dropped at each insertion).
    #[cfg(test)]
    pub(crate) fn all_alive(&self) -> bool {
        self.entries.load().values().all(|e| e.owner.alive())
    }

    /// The state of `config`, built with `build` the first time.
    pub(crate) fn get<C>(
        &self,
        owner: Owner,
        config: &C,
        build: impl FnOnce(&C) -> Result<T, String>,
    ) -> Option<Arc<T>> {
        let key = config as *const C as usize;
        if let Some(entry) = self.entries.load().get(&key) {
            if entry.owner.is(&owner) && entry.owner.alive() {
                return entry.state.clone();
            }
        }
        let state = match build(config) {
            Ok(state) => Some(Arc::new(state)),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        };
        let fresh = Entry { owner, state };
        // Another worker may have inserted the same config meanwhile: keep the first, so all
        // share one state.
        self.entries.rcu(|entries| {
            let mut entries: HashMap<usize, Entry<T>> =
                entries.iter().filter(|(_, e)| e.owner.alive()).map(|(k, e)| (*k, e.clone())).collect();
            let keep = entries.get(&key).is_some_and(|e| e.owner.is(&fresh.owner));
            if !keep {
                entries.insert(key, fresh.clone());
            }
            entries
        });
        self.entries.load().get(&key).and_then(|e| e.state.clone())
    }
}

//! What a subscriber sees: [`SubscriptionCallbacks`], the [`ConfigUpdate`] it is handed and the
//! [`Watch`] that keeps its interest alive; and the [`WatchMap`] every transport shares, which
//! turns a response into per-watch updates (Envoy's `WatchMap`).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::resource::{DecodedResource, ResourceType};
use crate::stats::SubscriptionStats;

/// One update for one watch. State-of-the-world responses arrive here already turned into
/// changes: `resources` is every resource of the response the watch is interested in, and
/// `removed` the names a wildcard (LDS/CDS) response left out or a delta response removed.
#[derive(Debug)]
pub struct ConfigUpdate<'a> {
    pub resource_type: ResourceType,
    pub version_info: &'a str,
    pub resources: &'a [&'a DecodedResource],
    pub removed: &'a [String],
    /// Whether `resources` is the whole set (SotW, files, REST) rather than the changed ones.
    pub state_of_the_world: bool,
}

/// Why a subscription could not deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateFailure {
    /// `initial_fetch_timeout` elapsed before the first update: what waits for it goes on.
    FetchTimedOut,
    /// The control plane or the file could not be reached or read.
    ConnectionFailure(String),
}

/// The subscriber's side (Envoy's `SubscriptionCallbacks`). Runs on the main thread.
pub trait SubscriptionCallbacks {
    /// Applies an update. `Err(detail)` NACKs the whole response with `detail` as its
    /// `error_detail`; the subscriber must then have changed nothing.
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String>;

    /// The first update did not come in time, or the source failed. What was applied stays.
    fn on_config_update_failed(&self, failure: &UpdateFailure);
}

/// One subscriber's interest: a set of names (empty for a wildcard subscription), and the
/// subscriber itself, in the same allocation when it subscribed by value
/// ([`crate::XdsClient::subscribe_inline`]: an EDS cluster's state and its watch were two
/// allocations, 224 bytes of malloc chunks for each of 10,000 EDS clusters, now one of 160).
pub(crate) struct WatchEntry<C: ?Sized = dyn SubscriptionCallbacks> {
    names: RefCell<NameSet>,
    wildcard: bool,
    pub(crate) stats: SubscriptionStats,
    /// Names delivered and not removed since, to find what a SotW response left out.
    delivered: RefCell<NameSet>,
    /// Whether any update (or the fetch timeout) reached the subscriber yet.
    initialized: Cell<bool>,
    /// Whether a response was offered to it yet (even one with none of its names).
    offered: Cell<bool>,
    callbacks: C,
}

impl<C: ?Sized> WatchEntry<C> {
    /// An update reached the subscriber: its fetch timeout has nothing left to do.
    fn set_initialized(&self) {
        self.initialized.set(true);
    }
}

impl<C: SubscriptionCallbacks + ?Sized> WatchEntry<C> {
    /// `initial_fetch_timeout` elapsed: a watch that heard nothing yet hears that.
    fn fetch_timed_out(&self) {
        if !self.initialized.replace(true) {
            self.stats.init_fetch_timeout().inc();
            self.callbacks.on_config_update_failed(&UpdateFailure::FetchTimedOut);
        }
    }
}

/// A subscriber held by a pointer subscribes as one.
impl<T: SubscriptionCallbacks + ?Sized> SubscriptionCallbacks for Rc<T> {
    fn on_config_update(&self, update: &ConfigUpdate<'_>) -> Result<(), String> {
        (**self).on_config_update(update)
    }

    fn on_config_update_failed(&self, failure: &UpdateFailure) {
        (**self).on_config_update_failed(failure)
    }
}

/// A set of resource names, sorted, without duplicates: what a watch wants. Most watches name
/// one resource (an EDS cluster's assignment): that one is kept as a shared string, which the
/// cluster's own name and the names delivered to the watch share (each held a copy, two
/// 32-byte malloc chunks for 10,000 EDS clusters each); more go in a sorted vector (a
/// `BTreeSet` node takes ~280 bytes for one name).
#[derive(Debug, Default, PartialEq, Eq)]
pub enum NameSet {
    #[default]
    Empty,
    One(Arc<str>),
    /// Two or more.
    Many(SortedNames),
}

/// Two or more names, sorted, without duplicates: made only by [`NameSet`] itself.
#[derive(Debug, PartialEq, Eq)]
pub struct SortedNames(Vec<String>);

impl From<BTreeSet<String>> for NameSet {
    fn from(names: BTreeSet<String>) -> Self {
        // A set iterates in order, without duplicates.
        NameSet::from_sorted(names.into_iter().collect())
    }
}

impl NameSet {
    /// The set of `names`, sorted and without duplicates already.
    fn from_sorted(mut names: Vec<String>) -> Self {
        match names.len() {
            0 => NameSet::Empty,
            1 => names.pop().map_or(NameSet::Empty, |name| NameSet::One(name.into())),
            _ => {
                names.shrink_to_fit();
                NameSet::Many(SortedNames(names))
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many): (Option<&str>, &[String]) = match self {
            NameSet::Empty => (None, &[]),
            NameSet::One(name) => (Some(name), &[]),
            NameSet::Many(names) => (None, &names.0),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            NameSet::Empty => false,
            NameSet::One(one) => **one == *name,
            NameSet::Many(names) => names.0.binary_search_by(|n| n.as_str().cmp(name)).is_ok(),
        }
    }

    /// The names, as strings of their own.
    fn into_vec(self) -> Vec<String> {
        match self {
            NameSet::Empty => Vec::new(),
            NameSet::One(name) => vec![name.to_string()],
            NameSet::Many(names) => names.0,
        }
    }

    /// Adds `names` (a whole SotW response may repeat every name already there). A name that
    /// is the one name of `wanted` is shared with it.
    fn extend<'a>(&mut self, names: impl Iterator<Item = &'a str>, wanted: &NameSet) {
        let new: Vec<&str> = names.filter(|name| !self.contains(name)).collect();
        match (&*self, new.as_slice()) {
            (_, []) => {}
            (NameSet::Empty, [name]) => {
                *self = NameSet::One(match wanted {
                    NameSet::One(one) if **one == **name => one.clone(),
                    _ => Arc::from(*name),
                });
            }
            _ => {
                let mut all = std::mem::take(self).into_vec();
                all.extend(new.into_iter().map(String::from));
                all.sort_unstable();
                all.dedup();
                *self = NameSet::from_sorted(all);
            }
        }
    }

    /// Removes each of `names`; one pass whatever their number.
    fn remove_all(&mut self, names: &[String]) {
        let mut all = match names {
            [] => return,
            _ => std::mem::take(self).into_vec(),
        };
        match names {
            [name] => all.retain(|n| n != name),
            names => {
                let gone: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
                all.retain(|n| !gone.contains(n.as_str()));
            }
        }
        *self = NameSet::from_sorted(all);
    }
}

/// The watches of one subscription (one resource type on one source).
pub(crate) struct WatchMap {
    pub(crate) resource_type: ResourceType,
    watches: RefCell<Vec<Rc<WatchEntry>>>,
    /// Woken when the set of names changes, so the transport sends a new request.
    pub(crate) interest_changed: Notify,
    fetch_timeouts: Rc<FetchTimeouts>,
}

/// The `initial_fetch_timeout`s of a subscription's watches, under one timer. A task and a
/// timer for each watch cost 10,000 spawns when 10,000 EDS clusters subscribe at once, and
/// their 272-byte task cells, freed when the assignments arrived, left as many holes among
/// the clusters' long-lived allocations: resident memory no cluster used.
#[derive(Default)]
struct FetchTimeouts {
    /// Deadlines still to come. A watch initialized or dropped since stays until its
    /// deadline, and is then passed over.
    pending: RefCell<BinaryHeap<Reverse<FetchDeadline>>>,
    /// Whether the task that waits for the earliest deadline runs.
    running: Cell<bool>,
    /// Wakes that task when a deadline earlier than the one it waits for is added.
    earlier: Notify,
}

struct FetchDeadline {
    /// Tokio's clock, which tests can pause and advance.
    at: tokio::time::Instant,
    watch: Weak<WatchEntry>,
}

impl PartialEq for FetchDeadline {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for FetchDeadline {}

impl PartialOrd for FetchDeadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FetchDeadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl FetchTimeouts {
    fn add(self: &Rc<Self>, at: tokio::time::Instant, watch: Weak<WatchEntry>) {
        let earliest = self.earliest();
        self.pending.borrow_mut().push(Reverse(FetchDeadline { at, watch }));
        if !self.running.replace(true) {
            tokio::task::spawn_local(Rc::clone(self).run());
        } else if earliest.is_some_and(|earliest| at < earliest) {
            self.earlier.notify_one();
        }
    }

    fn earliest(&self) -> Option<tokio::time::Instant> {
        self.pending.borrow().peek().map(|Reverse(d)| d.at)
    }

    /// Waits for each deadline in turn and tells its watch; ends when none is left.
    async fn run(self: Rc<Self>) {
        while let Some(at) = self.earliest() {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.earlier.notified() => continue,
            }
            let now = tokio::time::Instant::now();
            loop {
                // The borrow ends before the watch is told: its subscriber may add watches.
                let due = {
                    let mut pending = self.pending.borrow_mut();
                    match pending.peek() {
                        Some(Reverse(d)) if d.at <= now => pending.pop(),
                        _ => None,
                    }
                };
                let Some(Reverse(due)) = due else { break };
                if let Some(watch) = due.watch.upgrade() {
                    watch.fetch_timed_out();
                }
            }
        }
        // The heap's room for 10,000 watches goes too.
        *self.pending.borrow_mut() = BinaryHeap::new();
        self.running.set(false);
    }
}

impl WatchMap {
    pub(crate) fn new(resource_type: ResourceType) -> Rc<Self> {
        Rc::new(WatchMap {
            resource_type,
            watches: RefCell::new(Vec::new()),
            interest_changed: Notify::new(),
            fetch_timeouts: Rc::default(),
        })
    }

    /// Adds a watch for `callbacks`, kept in the watch's entry; its initial-fetch timer starts
    /// now.
    pub(crate) fn add<C: SubscriptionCallbacks + 'static>(
        self: &Rc<Self>,
        names: NameSet,
        callbacks: C,
        stats: SubscriptionStats,
        initial_fetch_timeout: Option<Duration>,
    ) -> Watch<C> {
        let entry = Rc::new(WatchEntry {
            wildcard: names == NameSet::Empty,
            names: RefCell::new(names),
            stats,
            delivered: RefCell::new(NameSet::default()),
            initialized: Cell::new(false),
            offered: Cell::new(false),
            callbacks,
        });
        let shared: Rc<WatchEntry> = entry.clone();
        self.watches.borrow_mut().push(shared.clone());
        if let Some(timeout) = initial_fetch_timeout {
            self.fetch_timeouts.add(tokio::time::Instant::now() + timeout, Rc::downgrade(&shared));
        }
        self.interest_changed.notify_one();
        Watch { map: Rc::downgrade(self), entry: Rc::downgrade(&entry) }
    }

    /// Removes the entry at `entry` (its address: the watch's type may be the subscriber's).
    fn remove(&self, entry: *const ()) {
        self.watches.borrow_mut().retain(|w| !std::ptr::eq(Rc::as_ptr(w).cast::<()>(), entry));
        self.interest_changed.notify_one();
    }

    fn watches(&self) -> Vec<Rc<WatchEntry>> {
        self.watches.borrow().clone()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.watches.borrow().is_empty()
    }

    /// What the subscription must ask for: `None` for a wildcard, else the union of names.
    pub(crate) fn interest(&self) -> Option<BTreeSet<String>> {
        let watches = self.watches.borrow();
        if watches.iter().any(|w| w.wildcard) {
            return None;
        }
        Some(watches.iter().flat_map(|w| w.names.borrow().iter().map(String::from).collect::<Vec<_>>()).collect())
    }

    /// Counts an attempt on every watch (a response arrived or a poll was made).
    pub(crate) fn count_attempt(&self) {
        for watch in self.watches() {
            watch.stats.update_attempt().inc();
        }
    }

    /// A response (or file, or poll) failed before it could be decoded: counted as rejected
    /// on every watch.
    pub(crate) fn count_rejected(&self) {
        for watch in self.watches() {
            watch.stats.update_rejected().inc();
        }
    }

    /// The source failed: every watch hears it; a watch still waiting for its first update
    /// does not (it waits for `initial_fetch_timeout`, as Envoy).
    pub(crate) fn fail(&self, reason: &str) {
        for watch in self.watches() {
            watch.stats.update_failure().inc();
            if watch.initialized.get() {
                watch.callbacks.on_config_update_failed(&UpdateFailure::ConnectionFailure(reason.to_string()));
            }
        }
    }

    /// Delivers a complete response (SotW, file, REST). `Err` is the NACK's `error_detail`.
    pub(crate) fn deliver_state_of_the_world(
        &self,
        version_info: &str,
        resources: Vec<DecodedResource>,
    ) -> Result<(), String> {
        self.deliver_state_of_the_world_to(version_info, resources, false)
    }

    /// Delivers the last complete response again, to the watches added since (a cluster that
    /// subscribes to a name the source already sent gets it without a new fetch).
    pub(crate) fn deliver_to_new_watches(
        &self,
        version_info: &str,
        resources: Vec<DecodedResource>,
    ) -> Result<(), String> {
        self.deliver_state_of_the_world_to(version_info, resources, true)
    }

    fn deliver_state_of_the_world_to(
        &self,
        version_info: &str,
        resources: Vec<DecodedResource>,
        only_new: bool,
    ) -> Result<(), String> {
        let by_name = index_by_name(self.resource_type, &resources)?;
        self.deliver(version_info, true, only_new, |watch| {
            let mine = select(watch, &resources, &by_name);
            let removed: Vec<String> = if self.resource_type.is_wildcard() {
                watch.delivered.borrow().iter().filter(|n| !by_name.contains_key(n)).map(String::from).collect()
            } else {
                Vec::new()
            };
            (mine, removed)
        })
    }

    /// Delivers a delta response.
    pub(crate) fn deliver_delta(
        &self,
        system_version_info: &str,
        resources: Vec<DecodedResource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let by_name = index_by_name(self.resource_type, &resources)?;
        self.deliver(system_version_info, false, false, |watch| {
            let mine = select(watch, &resources, &by_name);
            let gone: Vec<String> = removed.iter().filter(|n| watch.delivered.borrow().contains(n)).cloned().collect();
            (mine, gone)
        })
    }

    fn deliver<'r>(
        &self,
        version_info: &str,
        state_of_the_world: bool,
        only_new: bool,
        select: impl Fn(&WatchEntry) -> (Vec<&'r DecodedResource>, Vec<String>),
    ) -> Result<(), String> {
        let mut first_error = None;
        for watch in self.watches() {
            crate::pace();
            if watch.offered.replace(true) && only_new {
                continue;
            }
            let (resources, removed) = select(&watch);
            // A named watch whose resources are not in this response has nothing to hear
            // (SotW responses for RDS/EDS need not carry every subscribed name).
            if resources.is_empty() && removed.is_empty() && !watch.wildcard {
                continue;
            }
            let update = ConfigUpdate {
                resource_type: self.resource_type,
                version_info,
                resources: &resources,
                removed: &removed,
                state_of_the_world,
            };
            let started = Instant::now();
            match watch.callbacks.on_config_update(&update) {
                Ok(()) => {
                    watch.set_initialized();
                    {
                        let mut delivered = watch.delivered.borrow_mut();
                        delivered.remove_all(&removed);
                        delivered.extend(resources.iter().map(|r| r.name.as_str()), &watch.names.borrow());
                    }
                    if resources.is_empty() && removed.is_empty() {
                        watch.stats.update_empty().inc();
                    }
                    watch.stats.accepted(version_info, started.elapsed());
                }
                Err(detail) => {
                    watch.stats.update_rejected().inc();
                    first_error.get_or_insert(detail);
                }
            }
        }
        match first_error {
            Some(detail) => Err(detail),
            None => Ok(()),
        }
    }
}

/// The resources of a response `watch` asks for: all of them for a wildcard watch, else its
/// names looked up (not the response scanned once per watch: 10,000 EDS watches on one
/// response of 10,000 assignments).
fn select<'r>(
    watch: &WatchEntry,
    resources: &'r [DecodedResource],
    by_name: &BTreeMap<&str, &'r DecodedResource>,
) -> Vec<&'r DecodedResource> {
    if watch.wildcard {
        return resources.iter().collect();
    }
    watch.names.borrow().iter().filter_map(|name| by_name.get(name).copied()).collect()
}

/// Refuses a response naming one resource twice.
fn index_by_name(
    resource_type: ResourceType,
    resources: &[DecodedResource],
) -> Result<BTreeMap<&str, &DecodedResource>, String> {
    let mut by_name = BTreeMap::new();
    for resource in resources {
        crate::pace();
        if by_name.insert(resource.name.as_str(), resource).is_some() {
            return Err(format!("duplicate {} resource name '{}'", resource_type.short_name(), resource.name));
        }
    }
    Ok(by_name)
}

/// A subscriber's interest; dropping it unsubscribes. `C` is the subscriber when it subscribed
/// by value ([`crate::XdsClient::subscribe_inline`]), reachable through
/// [`Self::with_subscriber`].
pub struct Watch<C: ?Sized = dyn SubscriptionCallbacks> {
    map: Weak<WatchMap>,
    /// Which entry of `map` is this watch's (weak: the map owns it).
    entry: Weak<WatchEntry<C>>,
}

impl<C: ?Sized> Watch<C> {
    /// Changes the names this watch wants (RDS/EDS/SDS); the subscription asks again.
    pub fn update_names(&self, names: BTreeSet<String>) {
        if let Some(map) = self.map.upgrade() {
            if let Some(watch) = self.entry.upgrade() {
                *watch.names.borrow_mut() = NameSet::from(names);
            }
            map.interest_changed.notify_one();
        }
    }

    /// Runs `f` on the subscriber; `None` once its subscription is gone.
    pub fn with_subscriber<R>(&self, f: impl FnOnce(&C) -> R) -> Option<R> {
        self.entry.upgrade().map(|entry| f(&entry.callbacks))
    }
}

impl<C: SubscriptionCallbacks + 'static> Watch<C> {
    /// The same watch, without its subscriber's type.
    pub(crate) fn erased(mut self) -> Watch {
        let map = std::mem::take(&mut self.map);
        let entry: Weak<WatchEntry<C>> = std::mem::take(&mut self.entry);
        Watch { map, entry }
    }
}

impl<C: ?Sized> Drop for Watch<C> {
    fn drop(&mut self) {
        if let Some(map) = self.map.upgrade() {
            map.remove(self.entry.as_ptr().cast::<()>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records which watches heard their fetch time out.
    struct Recorder {
        name: &'static str,
        heard: Rc<RefCell<Vec<&'static str>>>,
    }

    impl SubscriptionCallbacks for Recorder {
        fn on_config_update(&self, _: &ConfigUpdate<'_>) -> Result<(), String> {
            Ok(())
        }

        fn on_config_update_failed(&self, failure: &UpdateFailure) {
            assert!(matches!(failure, UpdateFailure::FetchTimedOut));
            self.heard.borrow_mut().push(self.name);
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn fetch_timeouts_share_one_timer_and_fire_in_deadline_order() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let store = legate_stats::Store::new(1);
                let map = WatchMap::new(ResourceType::ClusterLoadAssignment);
                let heard = Rc::new(RefCell::new(Vec::new()));
                let watch = |name: &'static str, ms: u64| {
                    let recorder = Recorder { name, heard: heard.clone() };
                    let stats = SubscriptionStats::new(&store.scope("watch"));
                    map.add(set(&[name]), recorder, stats, Some(Duration::from_millis(ms)))
                };
                let ms = |n| tokio::time::sleep(Duration::from_millis(n));
                let _a = watch("a", 300);
                let _b = watch("b", 100);
                let c = watch("c", 200);
                let dropped = watch("dropped", 150);
                drop(dropped);
                c.entry.upgrade().expect("c is held").set_initialized();
                ms(250).await;
                assert_eq!(*heard.borrow(), ["b"], "c was initialized, `dropped` is gone");
                // Earlier than the deadline the timer waits for (a's, at 300 ms).
                let _d = watch("d", 10);
                ms(20).await;
                assert_eq!(*heard.borrow(), ["b", "d"]);
                ms(100).await;
                assert_eq!(*heard.borrow(), ["b", "d", "a"]);
                assert_eq!(store.counter_value("watch.init_fetch_timeout"), Some(3));
                assert!(!map.fetch_timeouts.running.get() && map.fetch_timeouts.pending.borrow().capacity() == 0);
                // A later watch starts the timer again.
                let _e = watch("e", 50);
                ms(60).await;
                assert_eq!(*heard.borrow(), ["b", "d", "a", "e"]);
            })
            .await;
    }

    fn set(names: &[&str]) -> NameSet {
        NameSet::from(names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>())
    }

    #[test]
    fn name_set_stays_sorted_and_unique() {
        let mut names = set(&["b", "a"]);
        assert_eq!(names.iter().collect::<Vec<_>>(), ["a", "b"]);
        names.extend(["c", "a", "0", "c"].into_iter(), &NameSet::Empty);
        assert_eq!(names, set(&["0", "a", "b", "c"]));
        assert!(names.contains("0") && names.contains("c") && !names.contains("d"));
        names.remove_all(&["a".to_string()]);
        assert_eq!(names, set(&["0", "b", "c"]));
        names.remove_all(&["0".to_string(), "c".to_string(), "missing".to_string()]);
        assert_eq!(names, set(&["b"]));
        names.remove_all(&[]);
        assert_eq!(names, set(&["b"]));
        assert_eq!(set(&["x"]), NameSet::One("x".into()), "one name, one allocation");
        let mut delivered = NameSet::default();
        let wanted = set(&["x"]);
        delivered.extend(std::iter::once("x"), &wanted);
        assert_eq!(delivered, NameSet::One("x".into()));
        match (&delivered, &wanted) {
            (NameSet::One(a), NameSet::One(b)) => assert!(Arc::ptr_eq(a, b), "shares the wanted name"),
            other => panic!("{other:?}"),
        }
        delivered.extend(std::iter::once("x"), &wanted);
        assert_eq!(delivered, NameSet::One("x".into()));
        delivered.remove_all(&["x".to_string()]);
        assert_eq!(delivered, NameSet::Empty);
        if let NameSet::Many(SortedNames(names)) = set(&["a", "b", "c"]) {
            assert_eq!(names.capacity(), 3, "no room for growth");
        } else {
            panic!("three names");
        }
    }
}

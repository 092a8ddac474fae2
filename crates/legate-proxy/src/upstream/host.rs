//! An upstream host: one address of a cluster, with its weight, locality and health.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use legate_config::core::Locality;
use legate_config::endpoint::HealthStatus;

/// Why a host is not healthy, as the bits of Envoy's `Host::HealthFlag`.
pub mod health_flag {
    pub const FAILED_ACTIVE_HC: u32 = 0x01;
    pub const FAILED_OUTLIER_CHECK: u32 = 0x02;
    pub const FAILED_EDS_HEALTH: u32 = 0x04;
    pub const DEGRADED_EDS_HEALTH: u32 = 0x10;
    pub const PENDING_DYNAMIC_REMOVAL: u32 = 0x20;
    pub const EXCLUDED_VIA_IMMEDIATE_HC_FAIL: u32 = 0x80;
    pub const ACTIVE_HC_TIMEOUT: u32 = 0x100;
}

/// `endpoint.health_check_config` of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostHealthCheck {
    /// Checks go to this port instead of the host's.
    pub port: Option<u16>,
    /// Checks go to this address instead of the host's.
    pub address: Option<std::net::IpAddr>,
    /// The `host` header of HTTP checks (empty: the check's own or the cluster's name).
    pub hostname: String,
    /// Not actively checked: it never fails a check.
    pub disabled: bool,
}

/// The `health_check_config` of an endpoint that has none: checks go to the host's address.
static NO_HEALTH_CHECK_CONFIG: HostHealthCheck =
    HostHealthCheck { port: None, address: None, hostname: String::new(), disabled: false };

/// Where a host sits, as its `LocalityLbEndpoints` says: the locality, the priority and the
/// locality's weight. Shared by the hosts of one `LocalityLbEndpoints` (an EDS update lists
/// hundreds under one), so that a host carries one pointer for the three.
///
/// A host that has [`HostExtras`] (a hostname, a health check config, an IPv6 address: few
/// have any) holds a copy of its own with them, so that every host carries one pointer for
/// both: a host is then 32 bytes, a 48-byte malloc chunk with its reference count.
#[derive(Debug, PartialEq, Eq)]
pub struct HostLocality {
    pub locality: Locality,
    pub priority: u32,
    /// `load_balancing_weight` of the locality (1 when unset).
    pub load_balancing_weight: u32,
    /// The extras of the one host that holds this copy; `None` in a shared one.
    extras: Option<Box<HostExtras>>,
}

impl HostLocality {
    /// The place of the hosts of one `LocalityLbEndpoints`. Most EDS endpoints name no
    /// locality, at priority 0 with no weight: those share one (each cluster's hosts would
    /// otherwise hold their own, 100 bytes).
    pub fn new(locality: Option<&Locality>, priority: u32, load_balancing_weight: Option<u32>) -> Arc<HostLocality> {
        let load_balancing_weight = load_balancing_weight.unwrap_or(1).max(1);
        let unnamed = locality.is_none_or(|l| *l == Locality::default());
        if unnamed && priority == 0 && load_balancing_weight == 1 {
            static UNNAMED: std::sync::OnceLock<Arc<HostLocality>> = std::sync::OnceLock::new();
            return UNNAMED
                .get_or_init(|| {
                    Arc::new(HostLocality {
                        locality: Locality::default(),
                        priority: 0,
                        load_balancing_weight: 1,
                        extras: None,
                    })
                })
                .clone();
        }
        Arc::new(HostLocality {
            locality: locality.cloned().unwrap_or_default(),
            priority,
            load_balancing_weight,
            extras: None,
        })
    }

    /// `place` with `extras` (none kept when they hold only defaults): `place` itself when it
    /// already has them, else a copy of its own.
    fn with_extras(place: Arc<HostLocality>, extras: HostExtras) -> Arc<HostLocality> {
        let extras = (extras != HostExtras::default()).then(|| Box::new(extras));
        if place.extras == extras {
            return place;
        }
        Arc::new(HostLocality {
            locality: place.locality.clone(),
            priority: place.priority,
            load_balancing_weight: place.load_balancing_weight,
            extras,
        })
    }
}

/// Milliseconds on a monotonic clock shared by every thread (from the first call).
pub fn monotonic_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// An upstream host. Kept small: a large EDS config has 100,000s of them, most idle, so what
/// few hosts set (a hostname, a health check config, an IPv6 address, counters, a slow start)
/// hangs off pointers, and what the hosts of one locality share is shared (a host is 32
/// bytes, a 48-byte malloc chunk with its [`HostSharedPtr`]; with a `SocketAddr` and a
/// `String` inline it was 120 in a 144-byte chunk).
pub struct Host {
    /// The address of an IPv4 host (6 bytes); an IPv6 host's is in its place's extras (see
    /// [`Self::address`]).
    address_v4: SocketAddrV4,
    /// Health as the config (or EDS) states it.
    pub health_status: HealthStatus,
    pub weight: u32,
    /// `health_flag` bits; shared by all workers, written by the main thread.
    health_flags: AtomicU32,
    /// Locality, priority and locality weight (see [`Self::locality`], [`Self::priority`],
    /// [`Self::locality_weight`]), and the host's extras when it has any (see
    /// [`Self::hostname`], [`Self::health_check`]).
    place: Arc<HostLocality>,
    /// Allocated on the host's first connection or request: most hosts of a large EDS
    /// config never see one, and their counters read 0 without it. Outlier detection's state
    /// and the start of a slow start hang off the same allocation (see [`Self::outlier`],
    /// [`Self::with_slow_start`]).
    pub stats: LazyHostStats,
}

/// A shared host (Envoy's `HostSharedPtr`): a reference count without `std::sync::Arc`'s weak
/// count, which no host needs; 8 bytes less for each of 100,000s of hosts, which puts a host
/// in a 48-byte malloc chunk instead of a 64-byte one.
pub type HostSharedPtr = triomphe::Arc<Host>;

/// What few hosts have: `endpoint.hostname` (or the name a DNS cluster resolved), an
/// `endpoint.health_check_config` that says more than the defaults, an IPv6 address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct HostExtras {
    hostname: Box<str>,
    health_check: HostHealthCheck,
    address_v6: Option<SocketAddrV6>,
}

/// Per-host counters shown by `/clusters` (Envoy keeps these as plain atomics, not in the
/// stats store).
#[derive(Default)]
pub struct HostStats {
    pub cx_total: AtomicU64,
    pub cx_active: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_active: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_success: AtomicU64,
    pub rq_timeout: AtomicU64,
}

/// [`HostStats`] created on first use (64 bytes a host would otherwise carry inline), with the
/// host's outlier detection state. Writers reach the counters through `Deref`
/// (`host.stats.rq_total.fetch_add(..)`), which creates them; [`Self::values`] reads without
/// creating. One allocation for both keeps an idle host at 120 bytes.
#[derive(Default)]
pub struct LazyHostStats(once_cell::race::OnceBox<HostInUse>);

/// What a host has once it is used.
#[derive(Default)]
struct HostInUse {
    stats: HostStats,
    /// Outlier detection's counters and ejection state, allocated when a detector first looks
    /// at the host: most clusters have no detector.
    outlier: std::sync::OnceLock<Box<super::outlier_detection::HostOutlier>>,
    /// When the host last entered slow start ([`monotonic_ms`]): its creation in a cluster
    /// with a slow start, or its return to health after failing active health checks.
    slow_start_since_ms: AtomicU64,
}

impl std::ops::Deref for LazyHostStats {
    type Target = HostStats;

    fn deref(&self) -> &HostStats {
        &self.in_use().stats
    }
}

impl LazyHostStats {
    /// Two threads may both make it on a host's first use: one box wins, the other is
    /// dropped before anything counted into it (a `OnceBox` is one pointer, a `OnceLock` two
    /// words).
    fn in_use(&self) -> &HostInUse {
        self.0.get_or_init(Box::default)
    }

    /// Name and value of each stat, in the order `/clusters` prints them (all 0 when the host
    /// never counted anything).
    pub fn values(&self) -> [(&'static str, u64); 8] {
        static NONE: HostStats = HostStats::new();
        self.0.get().map_or(&NONE, |in_use| &in_use.stats).values()
    }
}

impl HostStats {
    const fn new() -> HostStats {
        HostStats {
            cx_total: AtomicU64::new(0),
            cx_active: AtomicU64::new(0),
            cx_connect_fail: AtomicU64::new(0),
            rq_total: AtomicU64::new(0),
            rq_active: AtomicU64::new(0),
            rq_error: AtomicU64::new(0),
            rq_success: AtomicU64::new(0),
            rq_timeout: AtomicU64::new(0),
        }
    }

    /// Name and value of each stat, in the order `/clusters` prints them.
    pub fn values(&self) -> [(&'static str, u64); 8] {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("cx_active", v(&self.cx_active)),
            ("cx_connect_fail", v(&self.cx_connect_fail)),
            ("cx_total", v(&self.cx_total)),
            ("rq_active", v(&self.rq_active)),
            ("rq_error", v(&self.rq_error)),
            ("rq_success", v(&self.rq_success)),
            ("rq_timeout", v(&self.rq_timeout)),
            ("rq_total", v(&self.rq_total)),
        ]
    }
}

impl Host {
    pub fn new(
        address: SocketAddr,
        hostname: String,
        weight: u32,
        place: Arc<HostLocality>,
        health_status: HealthStatus,
    ) -> Self {
        let flags = match health_status {
            HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout => health_flag::FAILED_EDS_HEALTH,
            HealthStatus::Degraded => health_flag::DEGRADED_EDS_HEALTH,
            HealthStatus::Unknown | HealthStatus::Healthy => 0,
        };
        let (address_v4, address_v6) = match address {
            SocketAddr::V4(v4) => (v4, None),
            SocketAddr::V6(v6) => (SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0), Some(v6)),
        };
        let extras = HostExtras { hostname: hostname.into_boxed_str(), address_v6, ..HostExtras::default() };
        Host {
            address_v4,
            weight: weight.max(1),
            place: HostLocality::with_extras(place, extras),
            health_status,
            health_flags: AtomicU32::new(flags),
            stats: LazyHostStats::default(),
        }
    }

    /// Whether `other` describes the same endpoint: an EDS update that repeats it keeps this
    /// host (and what hangs off it) instead of replacing it.
    pub fn same_endpoint(&self, other: &Host) -> bool {
        self.address_v4 == other.address_v4
            && self.weight == other.weight
            && self.place == other.place
            && self.health_status == other.health_status
    }

    /// The host's socket address.
    #[inline]
    pub fn address(&self) -> SocketAddr {
        match self.extras().and_then(|extras| extras.address_v6) {
            Some(v6) => SocketAddr::V6(v6),
            None => SocketAddr::V4(self.address_v4),
        }
    }

    /// The name it was resolved from (DNS clusters) or `endpoint.hostname`; empty when none.
    pub fn hostname(&self) -> &str {
        self.extras().map_or("", |extras| &extras.hostname)
    }

    fn extras(&self) -> Option<&HostExtras> {
        self.place.extras.as_deref()
    }

    /// Changes the extras; none are kept when they hold only defaults (so that
    /// `same_endpoint` compares what the host does, not how its config was spelled).
    fn update_extras(&mut self, change: impl FnOnce(&mut HostExtras)) {
        let mut extras = self.extras().cloned().unwrap_or_default();
        change(&mut extras);
        self.place = HostLocality::with_extras(self.place.clone(), extras);
    }

    /// Sets how active health checks reach the host (`endpoint.health_check_config`).
    pub fn with_health_check_config(
        mut self,
        config: Option<&legate_config::endpoint::EndpointHealthCheckConfig>,
    ) -> Self {
        if let Some(c) = config {
            let health_check = HostHealthCheck {
                port: u16::try_from(c.port_value).ok().filter(|p| *p > 0),
                address: c.address.as_ref().and_then(|a| a.socket()).and_then(|s| s.ip()),
                hostname: c.hostname.clone(),
                disabled: c.disable_active_health_check,
            };
            self.update_extras(|extras| extras.health_check = health_check);
        }
        self
    }

    /// `endpoint.health_check_config`: where and how active checks reach this host.
    pub fn health_check(&self) -> &HostHealthCheck {
        self.extras().map_or(&NO_HEALTH_CHECK_CONFIG, |extras| &extras.health_check)
    }

    /// Takes the `health_check_config` of `other` (a host re-created for a new cluster object).
    pub fn with_health_check_of(mut self, other: &Host) -> Self {
        let health_check = other.health_check().clone();
        self.update_extras(|extras| extras.health_check = health_check);
        self
    }

    /// The outlier detection state of this host, created on first use: called only for hosts
    /// of a cluster with `outlier_detection`.
    pub fn outlier(&self) -> &super::outlier_detection::HostOutlier {
        self.stats.in_use().outlier.get_or_init(Default::default)
    }

    /// The outlier detection state, if a detector ever looked at this host.
    pub fn outlier_if_tracked(&self) -> Option<&super::outlier_detection::HostOutlier> {
        self.stats.0.get()?.outlier.get().map(|outlier| &**outlier)
    }

    /// The host's locality (`LocalityLbEndpoints.locality`).
    pub fn locality(&self) -> &Locality {
        &self.place.locality
    }

    /// `LocalityLbEndpoints.priority`.
    pub fn priority(&self) -> u32 {
        self.place.priority
    }

    /// The weight of the host's locality (`LocalityLbEndpoints.load_balancing_weight`, 1 when
    /// unset).
    pub fn locality_weight(&self) -> u32 {
        self.place.load_balancing_weight
    }

    /// Where the host sits, to share with a host made like it (which takes its extras from
    /// what it is given, not from this place: see [`Host::new`]).
    pub fn place(&self) -> &Arc<HostLocality> {
        &self.place
    }

    /// A host of a cluster with a slow start (`slow_start_config`): its slow start begins now.
    /// Only such clusters read when it began, so other hosts keep no time.
    pub fn with_slow_start(self, slow_start: bool) -> Self {
        if slow_start {
            self.restart_slow_start();
        }
        self
    }

    /// The host passed its health check after failing: its slow start begins again.
    pub fn restart_slow_start(&self) {
        self.stats.in_use().slow_start_since_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn set_slow_start_since_ms(&self, ms: u64) {
        self.stats.in_use().slow_start_since_ms.store(ms, Ordering::Relaxed);
    }

    /// When the host last entered slow start (see [`Self::with_slow_start`]); 0 when it never
    /// did.
    pub fn slow_start_since_ms(&self) -> u64 {
        self.stats.0.get().map_or(0, |in_use| in_use.slow_start_since_ms.load(Ordering::Relaxed))
    }

    pub fn health_flags(&self) -> u32 {
        self.health_flags.load(Ordering::Relaxed)
    }

    /// Neither failed nor degraded.
    /// Sets or clears one `health_flag` bit (health checking, outlier detection).
    pub fn set_health_flag(&self, flag: u32, on: bool) {
        if on {
            self.health_flags.fetch_or(flag, Ordering::AcqRel);
        } else {
            self.health_flags.fetch_and(!flag, Ordering::AcqRel);
        }
    }

    /// Left out of load balancing and of the healthy share (Envoy's excluded hosts).
    pub fn excluded(&self) -> bool {
        self.health_flags() & health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL != 0
    }

    pub fn healthy(&self) -> bool {
        self.health_flags() == 0
    }

    pub fn degraded(&self) -> bool {
        self.health_flags() & health_flag::DEGRADED_EDS_HEALTH != 0
            && self.health_flags() & !(health_flag::DEGRADED_EDS_HEALTH) == 0
    }

    /// Envoy's `/clusters` `health_flags` text: `healthy`, or each reason prefixed by `/`.
    pub fn health_flags_text(&self) -> String {
        let flags = self.health_flags();
        if flags == 0 {
            return "healthy".to_string();
        }
        let mut out = String::new();
        for (bit, name) in [
            (health_flag::FAILED_ACTIVE_HC, "/failed_active_hc"),
            (health_flag::FAILED_OUTLIER_CHECK, "/failed_outlier_check"),
            (health_flag::FAILED_EDS_HEALTH, "/failed_eds_health"),
            (health_flag::DEGRADED_EDS_HEALTH, "/degraded_eds_health"),
            (health_flag::PENDING_DYNAMIC_REMOVAL, "/pending_dynamic_removal"),
            (health_flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, "/excluded_via_immediate_hc_fail"),
            (health_flag::ACTIVE_HC_TIMEOUT, "/active_hc_timeout"),
        ] {
            if flags & bit != 0 {
                out.push_str(name);
            }
        }
        out
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("address", &self.address()).field("weight", &self.weight).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_config::endpoint::EndpointHealthCheckConfig;

    fn host() -> Host {
        Host::new(
            "127.0.0.1:80".parse().unwrap(),
            String::new(),
            1,
            HostLocality::new(None, 0, None),
            HealthStatus::Unknown,
        )
    }

    #[test]
    fn health_check_config_takes_space_only_when_it_says_something() {
        let plain = host();
        let defaults = host().with_health_check_config(Some(&EndpointHealthCheckConfig::default()));
        assert!(defaults.extras().is_none(), "all defaults: nothing kept");
        assert!(Arc::ptr_eq(defaults.place(), plain.place()), "the shared place is kept");
        assert!(plain.same_endpoint(&defaults));
        assert_eq!(*defaults.health_check(), HostHealthCheck::default());

        let config = EndpointHealthCheckConfig { port_value: 8080, ..Default::default() };
        let other_port = host().with_health_check_config(Some(&config));
        assert_eq!(other_port.health_check().port, Some(8080));
        assert!(!plain.same_endpoint(&other_port));
        let copy = host().with_health_check_of(&other_port);
        assert!(copy.same_endpoint(&other_port));
        let named = Host::new(
            "127.0.0.1:80".parse().unwrap(),
            "a".into(),
            1,
            HostLocality::new(None, 0, None),
            HealthStatus::Unknown,
        )
        .with_health_check_config(Some(&config));
        assert_eq!((named.hostname(), named.health_check().port), ("a", Some(8080)));
        assert!(!named.same_endpoint(&other_port));
        assert_eq!(host().hostname(), "");
    }

    #[test]
    fn a_host_with_extras_keeps_its_locality_in_a_place_of_its_own() {
        let locality = Locality { zone: "z".into(), ..Locality::default() };
        let place = HostLocality::new(Some(&locality), 2, Some(3));
        let at = |hostname: &str| {
            Host::new("127.0.0.1:80".parse().unwrap(), hostname.into(), 1, place.clone(), HealthStatus::Unknown)
        };
        let (plain, named) = (at(""), at("a.example"));
        assert!(Arc::ptr_eq(plain.place(), &place), "no extras: the locality's place, shared");
        assert!(!Arc::ptr_eq(named.place(), &place));
        assert_eq!((named.locality().zone.as_str(), named.priority(), named.locality_weight()), ("z", 2, 3));
        assert_eq!((named.hostname(), plain.hostname()), ("a.example", ""));
        assert!(!plain.same_endpoint(&named));
        // A host made from another's place takes its extras from what it is given.
        let copy = Host::new(named.address(), String::new(), 1, named.place().clone(), HealthStatus::Unknown);
        assert_eq!(copy.hostname(), "");
        assert!(copy.same_endpoint(&plain));
    }

    #[test]
    fn an_idle_host_is_small() {
        assert!(std::mem::size_of::<Host>() <= 32, "{}", std::mem::size_of::<Host>());
        let v6 = |port| {
            Host::new(
                SocketAddr::new("::1".parse().unwrap(), port),
                String::new(),
                1,
                HostLocality::new(None, 0, None),
                HealthStatus::Unknown,
            )
        };
        assert_eq!(v6(8080).address(), "[::1]:8080".parse().unwrap());
        assert!(v6(8080).same_endpoint(&v6(8080)));
        assert!(!v6(8080).same_endpoint(&v6(8081)));
        let checked =
            v6(8080).with_health_check_config(Some(&EndpointHealthCheckConfig { port_value: 9, ..Default::default() }));
        assert_eq!((checked.address(), checked.health_check().port), ("[::1]:8080".parse().unwrap(), Some(9)));
        assert_eq!(host().address(), "127.0.0.1:80".parse().unwrap());
    }

    #[test]
    fn stats_are_created_on_first_write() {
        let host = host();
        assert!(host.stats.values().iter().all(|(_, value)| *value == 0));
        assert!(host.stats.0.get().is_none(), "reading creates nothing");
        host.stats.rq_total.fetch_add(2, Ordering::Relaxed);
        assert!(host.stats.values().contains(&("rq_total", 2)));
    }

    #[test]
    fn outlier_state_is_created_on_first_use() {
        let host = host();
        assert!(host.outlier_if_tracked().is_none());
        assert!(!host.outlier().ejected());
        assert!(host.outlier_if_tracked().is_some_and(|o| o.success_rate().is_none()));
    }
}

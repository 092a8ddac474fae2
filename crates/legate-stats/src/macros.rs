//! `stats!`: declares a component's stats struct with Envoy's stat names as field names
//! (the role of Envoy's `ALL_*_STATS(COUNTER, GAUGE, HISTOGRAM)` macros, STYLE §4).

/// Declares a stats struct whose field names are Envoy's stat names; `new(&Scope)` creates each
/// stat as the scope prefix + `.` + the field name. Fields are `pub`; the struct derives
/// `Clone` and `Debug` itself (do not add those derives), other attributes are passed through.
///
/// `compact struct` keeps one pointer to the stats' memory and a 4-byte slot per stat, where a
/// handle is 16 bytes: for structs that many objects carry (a cluster's among 10,000). Each
/// stat is then a method returning a borrowed handle (`stats.membership_total().set(10)`).
///
/// ```
/// legate_stats::stats! {
///     /// `tcp.<stat_prefix>.*`, Envoy's ALL_TCP_PROXY_STATS.
///     pub struct TcpProxyStats {
///         counter downstream_cx_total,
///         gauge downstream_cx_active,
///         histogram downstream_cx_length_ms,
///     }
/// }
/// let store = legate_stats::Store::new(1);
/// let stats = TcpProxyStats::new(&store.scope("tcp.ingress"));
/// stats.downstream_cx_total.inc();
/// assert_eq!(store.counter_value("tcp.ingress.downstream_cx_total"), Some(1));
/// ```
#[macro_export]
macro_rules! stats {
    (@type counter) => { $crate::Counter };
    (@type gauge) => { $crate::Gauge };
    (@type histogram) => { $crate::Histogram };
    (@type rare_histogram) => { $crate::RareHistogram };
    (@kind counter) => { $crate::StatKind::Counter };
    (@kind gauge) => { $crate::StatKind::Gauge };
    (@kind histogram) => { $crate::StatKind::Histogram };
    (@kind rare_histogram) => { $crate::StatKind::RareHistogram };
    (@ref counter) => { $crate::CounterRef<'_> };
    (@ref gauge) => { $crate::GaugeRef<'_> };
    (@ref histogram) => { $crate::HistogramRef<'_> };
    (
        $(#[$meta:meta])*
        $vis:vis compact struct $name:ident {
            $( $(#[$field_meta:meta])* $kind:ident $field:ident ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        $vis struct $name {
            arena: $crate::StatArena,
            $( $field: u32, )*
        }

        impl $name {
            /// The struct's stats, one list (its address names the group in the store).
            fn stat_list() -> &'static [($crate::StatKind, &'static str)] {
                static STATS: &[($crate::StatKind, &str)] =
                    &[$( ($crate::stats!(@kind $kind), stringify!($field)) ),*];
                STATS
            }

            /// Creates (or finds) every stat of this struct under `scope`: its counters and
            /// gauges as one group in consecutive slots ([`$crate::Scope::group_slots`]).
            pub fn new(scope: &$crate::Scope) -> Self {
                let mut slots = scope.group_slots(Self::stat_list()).into_iter();
                Self { arena: scope.stat_arena(), $( $field: slots.next().unwrap_or(0), )* }
            }

            $(
                $(#[$field_meta])*
                #[inline]
                pub fn $field(&self) -> $crate::stats!(@ref $kind) {
                    self.arena.$kind(self.$field)
                }
            )*

            /// An owned handle to one of its counters (`stats.counter_handle(stats.x())`),
            /// for a holder that outlives the borrow.
            #[allow(dead_code)]
            pub fn counter_handle(&self, counter: $crate::CounterRef<'_>) -> $crate::Counter {
                self.arena.counter_handle(counter.slot())
            }

            /// Lists every stat of this struct under `scope` without handles (as the
            /// `declare` of a struct that is not compact).
            #[allow(dead_code)]
            pub fn declare(scope: &$crate::Scope) {
                scope.declare_stats(Self::stat_list());
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $kind:ident $field:ident ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        $vis struct $name {
            $( $(#[$field_meta])* pub $field: $crate::stats!(@type $kind), )*
        }

        impl $name {
            /// Creates (or finds) every stat of this struct under `scope`.
            pub fn new(scope: &$crate::Scope) -> Self {
                Self { $( $field: scope.$kind(stringify!($field)), )* }
            }

            /// The struct's stats, one list (its address names the group in the store).
            #[allow(dead_code)]
            fn stat_list() -> &'static [($crate::StatKind, &'static str)] {
                static STATS: &[($crate::StatKind, &str)] =
                    &[$( ($crate::stats!(@kind $kind), stringify!($field)) ),*];
                STATS
            }

            /// Lists every stat of this struct under `scope` without handles: counters and
            /// gauges get their memory with the first handle ([`$crate::Scope::declare_counter`]),
            /// and their names are kept once for all the scopes that declare them.
            #[allow(dead_code)]
            pub fn declare(scope: &$crate::Scope) {
                scope.declare_stats(Self::stat_list());
            }

            /// Creates every stat of this struct under `scope` as one group, without handles:
            /// its counters and gauges in consecutive slots under one registry entry, for a
            /// holder that finds them by name ([`$crate::Scope::group_slots`]).
            #[allow(dead_code)]
            pub fn create_group(scope: &$crate::Scope) {
                drop(scope.group_slots(Self::stat_list()));
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::stats! {
        /// Test stats.
        pub struct TestStats {
            /// A counter.
            counter downstream_cx_total,
            gauge downstream_cx_active,
            histogram downstream_cx_length_ms
        }
    }

    #[test]
    fn macro_names_stats_after_fields() {
        let store = crate::Store::new(1);
        let stats = TestStats::new(&store.scope("tcp.ingress_tcp"));
        stats.downstream_cx_total.inc();
        stats.downstream_cx_active.inc();
        stats.downstream_cx_length_ms.record(12);
        assert_eq!(store.counter_value("tcp.ingress_tcp.downstream_cx_total"), Some(1));
        assert_eq!(store.gauge_value("tcp.ingress_tcp.downstream_cx_active"), Some(1));
        store.latch_histograms();
        assert!(store
            .render_text(None, true, crate::StatTypes::All)
            .contains("tcp.ingress_tcp.downstream_cx_length_ms: P0("));
        // A second struct over the same scope shares the stats.
        let again = TestStats::new(&store.scope("tcp.ingress_tcp"));
        assert_eq!(again.downstream_cx_total.value(), 1);
    }

    crate::stats! {
        /// Compact test stats.
        pub compact struct CompactStats {
            counter downstream_cx_total,
            gauge downstream_cx_active,
            histogram downstream_cx_length_ms,
        }
    }

    #[test]
    fn a_compact_struct_names_the_same_stats_in_less_room() {
        let store = crate::Store::new(1);
        let stats = CompactStats::new(&store.scope("tcp.ingress_tcp"));
        stats.downstream_cx_total().inc();
        stats.downstream_cx_active().set(3);
        stats.downstream_cx_length_ms().record(12);
        assert_eq!(store.counter_value("tcp.ingress_tcp.downstream_cx_total"), Some(1));
        assert_eq!(store.gauge_value("tcp.ingress_tcp.downstream_cx_active"), Some(3));
        let handles = TestStats::new(&store.scope("tcp.ingress_tcp"));
        assert_eq!((handles.downstream_cx_total.value(), handles.downstream_cx_active.value()), (1, 3));
        handles.downstream_cx_length_ms.record(30);
        store.latch_histograms();
        let text = store.render_text(None, true, crate::StatTypes::All);
        assert!(text.contains("tcp.ingress_tcp.downstream_cx_length_ms: P0(10,10) "), "both samples, one stat: {text}");
        let owned = stats.counter_handle(stats.downstream_cx_total());
        owned.inc();
        assert_eq!(stats.downstream_cx_total().value(), 2, "the owned handle counts into the same stat");
        assert!(std::mem::size_of::<CompactStats>() <= 24, "one pointer and 4 bytes a stat");
    }
}

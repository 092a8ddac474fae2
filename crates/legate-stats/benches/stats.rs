//! Stats on the request path and in the admin interface. Increments must cost a few
//! nanoseconds and touch only the calling thread's shard; looking a stat up by name takes the
//! registry's lock, so the data path does it once and keeps the handle; rendering `/stats`
//! holds that lock only to copy the interned names and slots, then filters, formats and sorts
//! outside it. Run: `cargo bench -p legate-stats --bench stats`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn bench(c: &mut Criterion) {
    let store = legate_stats::Store::new(2);
    legate_stats::set_thread_shard(1);
    let scope = store.scope("cluster.backend");
    let counter = scope.counter("upstream_rq_total");
    let gauge = scope.gauge("upstream_rq_active");
    let histogram = scope.histogram("upstream_rq_time");

    let mut group = c.benchmark_group("stats");
    group.bench_function("counter_inc", |b| b.iter(|| counter.inc()));
    group.bench_function("gauge_inc_dec", |b| {
        b.iter(|| {
            gauge.inc();
            gauge.dec();
        })
    });
    let mut value = 0u64;
    group.bench_function("histogram_record", |b| {
        b.iter(|| {
            value = (value + 7) % 5_000;
            histogram.record(value)
        })
    });
    group.bench_function("lookup_existing_by_name", |b| b.iter(|| scope.counter("upstream_rq_total")));

    // /stats with a filter that matches one stat, as a monitoring probe asks, over registries
    // of 1 000 and 10 000 clusters' worth of names (15 each).
    let filter = legate_stats::Filter::new("^cluster_manager.active_clusters$").expect("regex");
    for clusters in [1_000usize, 10_000] {
        let store = legate_stats::Store::new(2);
        for i in 0..clusters {
            let scope = store.scope(&format!("cluster.svc{i}"));
            for name in [
                "membership_total",
                "membership_healthy",
                "membership_degraded",
                "membership_excluded",
                "membership_change",
                "update_attempt",
                "update_success",
                "update_failure",
                "update_rejected",
                "update_empty",
                "update_no_rebuild",
                "version",
                "max_host_weight",
                "lb_healthy_panic",
                "upstream_cx_none_healthy",
            ] {
                scope.counter(name);
            }
        }
        group.bench_with_input(BenchmarkId::new("render_text_filtered", clusters * 15), &clusters, |b, _| {
            b.iter(|| store.render_text(Some(&filter), false, legate_stats::StatTypes::All))
        });
        // A stats flush: two histograms per cluster, each with a sample.
        for i in 0..clusters {
            let scope = store.scope(&format!("cluster.svc{i}"));
            scope.histogram("upstream_cx_connect_ms").record(3);
            scope.histogram("upstream_cx_length_ms").record(40);
        }
        group.bench_with_input(BenchmarkId::new("latch_histograms", clusters * 2), &clusters, |b, _| {
            b.iter(|| store.latch_histograms())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

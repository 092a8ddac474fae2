//! Load balancer pick cost per request, per policy, as clusters grow. Every policy should stay
//! flat (or logarithmic for the hashing ones) from 10 to 1 000 hosts: a pick is on every
//! request's path. Run: `cargo bench -p legate-proxy --bench lb_pick`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use legate_config::endpoint::HealthStatus;
use legate_proxy::upstream::host::HostLocality;
use legate_proxy::upstream::load_balancer::LoadBalancer;
use legate_proxy::upstream::{Cluster, Host, HostSharedPtr, PrioritySet};

fn cluster(policy: &str) -> Cluster {
    let store = legate_stats::Store::new(1);
    let config = serde_json::json!({ "name": "c", "type": "STATIC", "lb_policy": policy });
    let config: legate_config::cluster::Cluster = legate_config::path::from_value(config).expect("cluster");
    Cluster::new(config, &store.scope("cluster.c")).expect("the bench's cluster")
}

fn hosts(n: u16) -> PrioritySet {
    let hosts = (0..n)
        .map(|i| {
            let address = ([127, 0, (i >> 8) as u8, i as u8], 8080).into();
            HostSharedPtr::new(Host::new(
                address,
                String::new(),
                1,
                HostLocality::new(None, 0, None),
                HealthStatus::Healthy,
            ))
        })
        .collect();
    PrioritySet::new(hosts, 1)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("lb_pick");
    for policy in ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"] {
        for n in [10u16, 100, 1_000] {
            let cluster = cluster(policy);
            let set = hosts(n);
            let mut lb = LoadBalancer::new(&cluster, &set);
            assert!(lb.choose_host(&cluster, &set, Some(42)).is_some());
            let mut hash = 0u64;
            group.bench_with_input(BenchmarkId::new(policy, n), &n, |b, _| {
                b.iter(|| {
                    hash = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    lb.choose_host(&cluster, &set, Some(hash))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

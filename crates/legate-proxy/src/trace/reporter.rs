//! A worker's finished spans, waiting for their tracer's next export (Envoy's reporters): sent
//! once `min_flush_spans` are waiting or when the flush timer fires, by the worker itself, so
//! the request path takes no lock and touches nothing another worker does.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use legate_stats::Counter;

use crate::worker::WorkerContext;

/// When a worker exports: once `min_flush_spans` wait, and every `flush_interval` (runtime
/// `tracing.<tracer>.min_flush_spans`, default 5, and `flush_interval_ms`, default 5 s).
#[derive(Clone, Copy, Debug)]
pub(super) struct FlushRule {
    pub min_flush_spans: usize,
    pub flush_interval: Duration,
}

impl FlushRule {
    /// The rule of `tracer` (`zipkin`, `opentelemetry`) in the runtime now
    /// (`tracing.<tracer>.min_flush_spans`, 5; `tracing.<tracer>.flush_interval_ms`, 5000).
    pub(super) fn from_runtime(min_flush_spans_key: &str, flush_interval_key: &str) -> Self {
        let value = |key: &str, default: u64| crate::runtime::integer(key, default).max(1);
        FlushRule {
            min_flush_spans: usize::try_from(value(min_flush_spans_key, 5)).unwrap_or(usize::MAX),
            flush_interval: Duration::from_millis(value(flush_interval_key, 5000)),
        }
    }
}

/// A tracer that exports spans in batches.
pub(super) trait Exporter: Send + Sync + 'static {
    /// A span as the export carries it.
    type Item: 'static;

    fn flush_rule(&self) -> FlushRule;

    /// `tracing.<tracer>.timer_flushed`.
    fn timer_flushed(&self) -> &Counter;

    /// Sends one batch, on the worker's runtime.
    fn export(self: Arc<Self>, worker: Rc<WorkerContext>, items: Vec<Self::Item>) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// One tracer's spans on this worker.
struct Pending<T> {
    items: Vec<T>,
}

/// A tracer (its address; alive while the `Weak` upgrades) and its `Pending` spans.
type Entry = (Weak<dyn Any + Send + Sync>, Box<dyn Any>);

thread_local! {
    static PENDING: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// Keeps `item` for the next export of `exporter`, exporting now if enough are waiting. The
/// first span of a tracer on a worker starts that worker's flush timer for it.
pub(super) fn buffer<E: Exporter>(exporter: &Arc<E>, worker: &Rc<WorkerContext>, item: E::Item) {
    let min_flush = exporter.flush_rule().min_flush_spans;
    let full = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        pending.retain(|(tracer, _)| tracer.strong_count() > 0);
        let key = Arc::as_ptr(exporter) as *const ();
        let index = match pending.iter().position(|(tracer, _)| std::ptr::eq(tracer.as_ptr() as *const (), key)) {
            Some(i) => i,
            None => {
                let any: Arc<dyn Any + Send + Sync> = exporter.clone();
                pending.push((Arc::downgrade(&any), Box::new(Pending::<E::Item> { items: Vec::new() })));
                tokio::task::spawn_local(flush_timer(Arc::downgrade(exporter), worker.clone()));
                pending.len() - 1
            }
        };
        let entry = pending.get_mut(index).and_then(|(_, p)| p.downcast_mut::<Pending<E::Item>>())?;
        entry.items.push(item);
        (entry.items.len() >= min_flush).then(|| std::mem::take(&mut entry.items))
    });
    if let Some(items) = full {
        tokio::task::spawn_local(exporter.clone().export(worker.clone(), items));
    }
}

/// Takes what is waiting for `exporter` on this worker.
fn take<E: Exporter>(exporter: &Arc<E>) -> Vec<E::Item> {
    PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        let key = Arc::as_ptr(exporter) as *const ();
        pending
            .iter_mut()
            .find(|(tracer, _)| std::ptr::eq(tracer.as_ptr() as *const (), key))
            .and_then(|(_, p)| p.downcast_mut::<Pending<E::Item>>())
            .map(|p| std::mem::take(&mut p.items))
            .unwrap_or_default()
    })
}

/// Envoy's flush timer: every interval, whatever waits goes (counted in `timer_flushed`),
/// until the tracer is gone.
async fn flush_timer<E: Exporter>(exporter: Weak<E>, worker: Rc<WorkerContext>) {
    loop {
        let Some(interval) = exporter.upgrade().map(|e| e.flush_rule().flush_interval) else { return };
        tokio::time::sleep(interval).await;
        let Some(strong) = exporter.upgrade() else { return };
        strong.timer_flushed().inc();
        let items = take(&strong);
        if !items.is_empty() {
            tokio::task::spawn_local(strong.export(worker.clone(), items));
        }
    }
}

//! The queues' own signals on every worker's `/metrics`: backlog, delayed
//! and dead tasks, the oldest task's age, consumers and arrival and
//! completion counts, read from Redis for the queues the worker serves.
//!
//! They come from the same [`QueueStats`] the autoscaler and `spoolctl
//! queues` read, so Prometheus shows what scaling decisions see even where
//! no autoscaler runs. Every worker of a queue exports the same values:
//! aggregate them with `max by (queue)`, not `sum`.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
use spool_broker::{Broker, QueueName, QueueStats, RedisBroker};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::family;

/// How often the served queues' signals are read: often enough for a
/// 15 s scrape, a few cheap reads per queue.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The latest stats of each served queue.
#[derive(Debug, Default)]
pub struct QueueGauges {
    latest: Mutex<BTreeMap<String, QueueStats>>,
}

/// The gauge families: name, help, and the value read from the stats.
type GaugeSpec = (&'static str, &'static str, fn(&QueueStats) -> f64);

#[allow(clippy::cast_precision_loss)]
const GAUGES: [GaugeSpec; 8] = [
    (
        "spool_queue_ready",
        "Tasks waiting to be fetched, all priorities.",
        |s| s.ready_total() as f64,
    ),
    (
        "spool_queue_delayed",
        "Tasks scheduled for later (countdowns, retries), due ones included.",
        |s| s.delayed as f64,
    ),
    (
        "spool_queue_delayed_due",
        "Delayed tasks whose time has come: backlog the next fetch promotes.",
        |s| s.delayed_due as f64,
    ),
    (
        "spool_queue_in_flight",
        "Tasks fetched by a worker and not yet settled.",
        |s| s.pending as f64,
    ),
    (
        "spool_queue_dead_letters",
        "Entries in the queue's dead-letter stream.",
        |s| s.dead as f64,
    ),
    (
        "spool_queue_oldest_age_seconds",
        "How long the oldest runnable task has waited; 0 when none waits.",
        |s| s.oldest_age.map_or(0.0, |age| age.as_secs_f64()),
    ),
    (
        "spool_queue_consumers",
        "Worker processes serving the queue now.",
        |s| s.consumers as f64,
    ),
    ("spool_queue_paused", "1 while the queue is paused.", |s| {
        f64::from(u8::from(s.paused))
    }),
];

/// The counter families: cumulative counts Redis keeps per queue (they
/// restart when the queue is purged, which `rate()` takes as a reset).
type CounterSpec = (&'static str, &'static str, fn(&QueueStats) -> u64);

const COUNTERS: [CounterSpec; 2] = [
    (
        "spool_queue_enqueued_total",
        "Tasks that entered the queue's streams (enqueues, promotions, requeues).",
        |s| s.enqueued_total,
    ),
    (
        "spool_queue_completed_total",
        "Tasks that left the queue's streams (settled, retried, dead-lettered, requeued).",
        |s| s.completed_total,
    ),
];

impl QueueGauges {
    /// Every family name, with or without a series yet.
    pub fn names() -> impl Iterator<Item = &'static str> {
        GAUGES
            .iter()
            .map(|(name, ..)| *name)
            .chain(COUNTERS.iter().map(|(name, ..)| *name))
    }

    /// Records `queue`'s latest stats.
    pub fn record(&self, queue: &QueueName, stats: QueueStats) {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.as_str().to_owned(), stats);
    }

    /// The families, a series per recorded queue; none before the first
    /// sample.
    pub fn families(&self) -> Vec<MetricFamily> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if latest.is_empty() {
            return Vec::new();
        }
        let label = |queue: &str| {
            let mut pair = LabelPair::default();
            pair.set_name("queue".to_owned());
            pair.set_value(queue.to_owned());
            vec![pair]
        };
        let mut families = Vec::new();
        for (name, help, value) in GAUGES {
            let metrics = latest
                .iter()
                .map(|(queue, stats)| {
                    let mut gauge = prometheus::proto::Gauge::default();
                    gauge.set_value(value(stats));
                    let mut metric = Metric::from_gauge(gauge);
                    metric.set_label(label(queue));
                    metric
                })
                .collect();
            families.push(family(name, help, MetricType::GAUGE, metrics));
        }
        for (name, help, value) in COUNTERS {
            let metrics = latest
                .iter()
                .map(|(queue, stats)| {
                    let mut counter = Counter::default();
                    #[allow(clippy::cast_precision_loss)]
                    counter.set_value(value(stats) as f64);
                    let mut metric = Metric::default();
                    metric.set_counter(counter);
                    metric.set_label(label(queue));
                    metric
                })
                .collect();
            families.push(family(name, help, MetricType::COUNTER, metrics));
        }
        families
    }
}

/// Reads the stats of `queues` every `every` into `gauges` until `stop`
/// fires. A failed read keeps the last values and is logged once until a
/// read succeeds again.
pub async fn sample(
    broker: RedisBroker,
    queues: Vec<QueueName>,
    gauges: std::sync::Arc<QueueGauges>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        for queue in &queues {
            match broker.stats(queue).await {
                Ok(stats) => {
                    gauges.record(queue, stats);
                    if failing {
                        debug!(queue = %queue, "queue signals readable again");
                        failing = false;
                    }
                }
                Err(e) if !failing => {
                    warn!(queue = %queue, error = %e, "cannot read the queue's signals for /metrics");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

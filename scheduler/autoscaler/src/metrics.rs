//! The autoscaler's decisions and the signals behind them, as Prometheus
//! metrics on `GET /metrics`.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `spool_autoscaler_desired_workers` | gauge | `pool` |
//! | `spool_autoscaler_current_workers` | gauge | `pool` |
//! | `spool_autoscaler_busy_slots`, `spool_autoscaler_total_slots` | gauge | `pool` |
//! | `spool_autoscaler_decisions_total` | counter | `pool`, `direction` (`up`, `down`, `hold`) |
//! | `spool_autoscaler_queue_backlog` | gauge | `queue` |
//! | `spool_autoscaler_queue_in_flight` | gauge | `queue` |
//! | `spool_autoscaler_queue_oldest_age_seconds` | gauge | `queue` |
//! | `spool_autoscaler_queue_consumers` | gauge | `queue` |
//! | `spool_autoscaler_queue_dead_letters` | gauge | `queue` |
//! | `spool_autoscaler_queue_paused` | gauge | `queue` (1 while paused) |
//! | `spool_autoscaler_gpus` | gauge | |
//! | `spool_autoscaler_tick_errors_total` | counter | |
//!
//! The queue gauges are the same signals KEDA or an HPA could scale on
//! instead (see `ops/autoscaler.md`); consumers, dead letters and paused
//! are there for alerts (`ops/prometheus/`). [`AutoscalerMetrics::metric_names`]
//! lists them all.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::task::JoinHandle;
use tracing::debug;

use super::policy::Decision;
use super::signals::PoolSignals;
use crate::error::{Error, Result};

/// The autoscaler's metrics.
///
/// # Examples
///
/// ```
/// use spool_autoscaler::AutoscalerMetrics;
///
/// let metrics = AutoscalerMetrics::new()?;
/// metrics.set_gpus(2);
/// assert!(metrics.render().contains("spool_autoscaler_gpus 2"));
/// # Ok::<(), spool_autoscaler::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AutoscalerMetrics {
    registry: Registry,
    /// The names of the families in `registry`, which cannot list them.
    names: Vec<String>,
    desired: IntGaugeVec,
    current: IntGaugeVec,
    busy_slots: IntGaugeVec,
    total_slots: IntGaugeVec,
    decisions: IntCounterVec,
    backlog: IntGaugeVec,
    in_flight: IntGaugeVec,
    oldest_age: GaugeVec,
    consumers: IntGaugeVec,
    dead_letters: IntGaugeVec,
    paused: IntGaugeVec,
    gpus: IntGauge,
    tick_errors: IntCounter,
}

fn metric_error(e: &prometheus::Error) -> Error {
    Error::Config(format!("cannot set up the metrics: {e}"))
}

impl AutoscalerMetrics {
    /// Registers every metric, at zero.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if a metric cannot be registered, which
    /// only a programming error causes.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let mut names = Vec::new();
        let mut register = |collector: Box<dyn Collector>| -> Result<()> {
            names.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(collector).map_err(|e| metric_error(&e))
        };
        let mut gauge_vec = |name: &str, help: &str, label: &str| -> Result<IntGaugeVec> {
            let gauge =
                IntGaugeVec::new(Opts::new(name, help), &[label]).map_err(|e| metric_error(&e))?;
            register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let desired = gauge_vec(
            "spool_autoscaler_desired_workers",
            "Workers the policy wants for the pool.",
            "pool",
        )?;
        let current = gauge_vec(
            "spool_autoscaler_current_workers",
            "Workers the actuator runs for the pool (starting included, retiring not).",
            "pool",
        )?;
        let busy_slots = gauge_vec(
            "spool_autoscaler_busy_slots",
            "Slots running a task, over the pool's workers in the registry.",
            "pool",
        )?;
        let total_slots = gauge_vec(
            "spool_autoscaler_total_slots",
            "Slots of the pool's running workers in the registry.",
            "pool",
        )?;
        let backlog = gauge_vec(
            "spool_autoscaler_queue_backlog",
            "Tasks waiting for a worker (ready plus due delayed), as read.",
            "queue",
        )?;
        let in_flight = gauge_vec(
            "spool_autoscaler_queue_in_flight",
            "Tasks fetched by a worker and not yet settled, as read.",
            "queue",
        )?;
        let consumers = gauge_vec(
            "spool_autoscaler_queue_consumers",
            "Worker processes that fetched from the queue lately or hold its tasks, as read.",
            "queue",
        )?;
        let dead_letters = gauge_vec(
            "spool_autoscaler_queue_dead_letters",
            "Entries in the queue's dead-letter stream, as read.",
            "queue",
        )?;
        let paused = gauge_vec(
            "spool_autoscaler_queue_paused",
            "1 while the queue is paused (workers do not fetch it), else 0.",
            "queue",
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "spool_autoscaler_decisions_total",
                "Decisions made, one per pool per tick, by direction.",
            ),
            &["pool", "direction"],
        )
        .map_err(|e| metric_error(&e))?;
        register(Box::new(decisions.clone()))?;
        let oldest_age = GaugeVec::new(
            Opts::new(
                "spool_autoscaler_queue_oldest_age_seconds",
                "How long the oldest runnable task has waited (0 when none), as read.",
            ),
            &["queue"],
        )
        .map_err(|e| metric_error(&e))?;
        register(Box::new(oldest_age.clone()))?;
        let gpus = IntGauge::new("spool_autoscaler_gpus", "GPUs the GPU pools are capped by.")
            .map_err(|e| metric_error(&e))?;
        register(Box::new(gpus.clone()))?;
        let tick_errors = IntCounter::new(
            "spool_autoscaler_tick_errors_total",
            "Ticks that failed to read the signals or to act.",
        )
        .map_err(|e| metric_error(&e))?;
        register(Box::new(tick_errors.clone()))?;
        names.sort();
        Ok(Self {
            registry,
            names,
            desired,
            current,
            busy_slots,
            total_slots,
            decisions,
            backlog,
            in_flight,
            oldest_age,
            consumers,
            dead_letters,
            paused,
            gpus,
            tick_errors,
        })
    }

    /// The name of every metric family exported, sorted, including those
    /// without a series yet (a label vector appears at the first tick).
    #[must_use]
    pub fn metric_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Records one pool's signals, its decision, and the workers it has
    /// after acting on it.
    pub fn observe(&self, signals: &PoolSignals, decision: &Decision, workers: u32) {
        let pool = [signals.pool.as_str()];
        self.desired
            .with_label_values(&pool)
            .set(i64::from(decision.desired));
        self.current
            .with_label_values(&pool)
            .set(i64::from(workers));
        self.busy_slots
            .with_label_values(&pool)
            .set(i64::from(signals.busy_slots));
        self.total_slots
            .with_label_values(&pool)
            .set(i64::from(signals.total_slots));
        self.decisions
            .with_label_values(&[signals.pool.as_str(), decision.direction.as_str()])
            .inc();
        for queue in &signals.queues {
            let label = [queue.queue.as_str()];
            let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.backlog
                .with_label_values(&label)
                .set(clamp(queue.backlog()));
            self.in_flight
                .with_label_values(&label)
                .set(clamp(queue.in_flight));
            self.oldest_age
                .with_label_values(&label)
                .set(queue.oldest_age.map_or(0.0, |d| d.as_secs_f64()));
            self.consumers
                .with_label_values(&label)
                .set(clamp(queue.consumers));
            self.dead_letters
                .with_label_values(&label)
                .set(clamp(queue.dead_letters));
            self.paused
                .with_label_values(&label)
                .set(i64::from(queue.paused));
        }
    }

    /// Records the GPUs present.
    pub fn set_gpus(&self, count: u32) {
        self.gpus.set(i64::from(count));
    }

    /// Counts a tick that failed.
    pub fn tick_failed(&self) {
        self.tick_errors.inc();
    }

    /// The metrics in Prometheus's text format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            debug!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Binds `addr` and serves `metrics` on `GET /metrics` until the returned
/// task is aborted; returns the bound address (useful with port 0).
///
/// # Errors
///
/// [`Error::Io`] when the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<AutoscalerMetrics>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    spool_cli_common::serve_metrics(addr, move || metrics.render())
        .await
        .map_err(|source| Error::Io {
            context: format!("cannot serve metrics on {addr}"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use spool_broker::QueueName;

    use super::*;
    use crate::policy::Direction;
    use crate::signals::QueueSignals;

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn metrics_are_served_on_slash_metrics() {
        let metrics = Arc::new(AutoscalerMetrics::new().unwrap());
        metrics.set_gpus(3);
        metrics.tick_failed();
        let (addr, server) = serve(SocketAddr::from(([127, 0, 0, 1], 0)), metrics)
            .await
            .unwrap();
        let response = get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("text/plain; version=0.0.4"), "{response}");
        assert!(response.contains("spool_autoscaler_gpus 3"), "{response}");
        assert!(
            response.contains("spool_autoscaler_tick_errors_total 1"),
            "{response}"
        );
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404"));
        // The address is taken: a second server says which.
        let e = serve(addr, Arc::new(AutoscalerMetrics::new().unwrap()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        server.abort();
    }

    #[test]
    fn decisions_and_signals_are_exported_by_label() {
        let metrics = AutoscalerMetrics::new().unwrap();
        let mut queue = QueueSignals::new(QueueName::DEFAULT);
        queue.ready = 40;
        queue.delayed_due = 2;
        queue.in_flight = 8;
        queue.oldest_age = Some(Duration::from_millis(2500));
        queue.consumers = 3;
        queue.dead_letters = 9;
        queue.paused = true;
        let signals = PoolSignals {
            queues: vec![queue],
            busy_slots: 8,
            total_slots: 8,
            ..PoolSignals::new("cpu")
        };
        let decision = Decision {
            current: 2,
            desired: 5,
            needed: 5,
            cap: 10,
            direction: Direction::Up,
            reason: String::new(),
        };
        metrics.observe(&signals, &decision, 2);
        metrics.observe(&signals, &decision, 2);
        let text = metrics.render();
        for line in [
            "spool_autoscaler_desired_workers{pool=\"cpu\"} 5",
            "spool_autoscaler_current_workers{pool=\"cpu\"} 2",
            "spool_autoscaler_decisions_total{direction=\"up\",pool=\"cpu\"} 2",
            "spool_autoscaler_queue_backlog{queue=\"default\"} 42",
            "spool_autoscaler_queue_in_flight{queue=\"default\"} 8",
            "spool_autoscaler_queue_oldest_age_seconds{queue=\"default\"} 2.5",
            "spool_autoscaler_busy_slots{pool=\"cpu\"} 8",
            "spool_autoscaler_queue_consumers{queue=\"default\"} 3",
            "spool_autoscaler_queue_dead_letters{queue=\"default\"} 9",
            "spool_autoscaler_queue_paused{queue=\"default\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Every family now has a series: the names listed are those rendered.
        metrics.set_gpus(1);
        metrics.tick_failed();
        let text = metrics.render();
        assert_eq!(text_families(&text), metrics.metric_names());
    }

    /// The family names in `# TYPE` lines, in order.
    fn text_families(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect()
    }

    #[test]
    fn names_are_known_before_the_first_tick() {
        let metrics = AutoscalerMetrics::new().unwrap();
        let names = metrics.metric_names();
        // gather() leaves out label vectors without a series...
        assert!(!metrics.render().contains("spool_autoscaler_queue_backlog"));
        // ...the list does not.
        for name in [
            "spool_autoscaler_queue_backlog",
            "spool_autoscaler_queue_consumers",
            "spool_autoscaler_gpus",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
    }
}

//! Prometheus metrics, prefixed `spool_`.
//!
//! # Several children, one endpoint
//!
//! Children cannot all bind `--metrics-addr`, and a scrape of one child
//! would miss the others. So **the supervisor serves `/metrics` alone** and
//! the children push to it:
//!
//! - each child counts its tasks in a [`TaskMetrics`] observer and, every
//!   second and once more as it exits, sends the *increments* since its
//!   last report, plus its current in-flight and prefetched counts, as one
//!   line on its status pipe (its stdout; see the supervisor's protocol);
//! - the supervisor's [`MetricsHub`] adds the increments into running
//!   totals, keeps the latest gauges per child, and drops a child's gauges
//!   when it exits.
//!
//! Counters therefore stay monotonic across recycling: a retired child's
//! counts live on in the totals, and nothing a child did is counted twice.
//! A child that crashes loses at most its last second of increments. With
//! `--processes 0` the hub reads the in-process observer directly at each
//! scrape, so nothing is delayed.
//!
//! The supervisor adds what only it knows: child restarts, live children,
//! and GPU utilization and memory, sampled through NVML at scrape time.
//!
//! [`MetricsHub::metric_names`] lists every family the hub can export,
//! those without a series yet included: the ops checks hold the alert
//! rules and dashboards to it.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `spool_tasks_total` | counter | `queue`, `name`, `outcome` |
//! | `spool_task_duration_seconds` | histogram | `queue`, `name` |
//! | `spool_tasks_in_flight` | gauge | |
//! | `spool_tasks_prefetched` | gauge | |
//! | `spool_task_retries_total` | counter | `queue`, `name` |
//! | `spool_dead_letters_total` | counter | `queue`, `reason` |
//! | `spool_child_restarts_total` | counter | |
//! | `spool_children` | gauge | |
//! | `spool_gpu_utilization_ratio` | gauge | `gpu` |
//! | `spool_gpu_memory_used_bytes`, `spool_gpu_memory_total_bytes` | gauge | `gpu` |
//! | `spool_gpu_encoder_utilization_ratio`, `spool_gpu_decoder_utilization_ratio` | gauge | `gpu` |
//! | `spool_queue_ready`, `_delayed`, `_delayed_due`, `_in_flight`, `_dead_letters`, `_oldest_age_seconds`, `_consumers`, `_paused` | gauge | `queue` |
//! | `spool_queue_enqueued_total`, `spool_queue_completed_total` | counter | `queue` |
//! | `spool_workflow_running` | gauge | |
//! | `spool_workflow_finished_total` | counter | `outcome` |
//! | `spool_workflow_repaired_total` | counter | |
//! | `spool_workflow_node_latency_seconds` | histogram | |
//!
//! The `spool_workflow_*` families are described in [`workflows`].
//!
//! The `spool_queue_*` families are the served queues' own signals, read
//! from Redis ([`queues`]): every worker of a queue exports the same values.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, GaugeVec, IntCounter, IntGauge, Opts, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use spool_broker::workflow::{NodeSettlement, Settled, SweepReport};
use spool_broker::{QueueName, TaskId};
use tokio::task::JoinHandle;

use spool_video::probe::GpuTelemetry;
use spool_worker::{Observer, Outcome, TaskInfo};

pub mod queues;
pub mod workflows;

pub use self::queues::QueueGauges;
pub use self::workflows::{NODE_LATENCY_BUCKETS, WorkflowTotals};

/// Upper bounds of the task-duration histogram, in seconds: from 5 ms
/// no-ops to two-hour encodes.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0, 7200.0,
];

/// The counts of one task name on one queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Series {
    /// Deliveries by outcome label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    outcomes: BTreeMap<String, u64>,
    /// Runs per duration bucket (not cumulative); the last is `+Inf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    buckets: Vec<u64>,
    /// Seconds run in all.
    #[serde(default)]
    seconds: f64,
}

/// Task counts: per queue and name, outcomes and a duration histogram; per
/// queue and reason, dead letters. Used both for a child's increments and
/// for the supervisor's totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTotals {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tasks: BTreeMap<String, BTreeMap<String, Series>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    dead: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "WorkflowTotals::is_empty")]
    workflows: WorkflowTotals,
}

impl TaskTotals {
    /// Whether nothing was counted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.dead.is_empty() && self.workflows.is_empty()
    }

    /// Counts one outcome; `ran_for` is the run's duration when it ran.
    fn record(&mut self, queue: &str, name: &str, outcome: Outcome, ran_for: Option<Duration>) {
        if let Outcome::DeadLettered(reason) = outcome
            && let Some(n) = entry(&mut self.dead, queue).and_then(|r| entry(r, reason.as_str()))
        {
            *n += 1;
        }
        let Some(series) = entry(&mut self.tasks, queue).and_then(|names| entry(names, name))
        else {
            return;
        };
        if let Some(n) = entry(&mut series.outcomes, outcome.as_str()) {
            *n += 1;
        }
        if let Some(ran_for) = ran_for {
            let seconds = ran_for.as_secs_f64();
            if series.buckets.len() != DURATION_BUCKETS.len() + 1 {
                series.buckets = vec![0; DURATION_BUCKETS.len() + 1];
            }
            let bucket = DURATION_BUCKETS
                .iter()
                .position(|&bound| seconds <= bound)
                .unwrap_or(DURATION_BUCKETS.len());
            series.buckets[bucket] += 1;
            series.seconds += seconds;
        }
    }

    /// Adds `other`'s counts into these.
    pub fn merge(&mut self, other: Self) {
        for (queue, names) in other.tasks {
            let mine = self.tasks.entry(queue).or_default();
            for (name, series) in names {
                let into = mine.entry(name).or_default();
                for (outcome, n) in series.outcomes {
                    *into.outcomes.entry(outcome).or_default() += n;
                }
                if series.buckets.len() == DURATION_BUCKETS.len() + 1 {
                    if into.buckets.len() != series.buckets.len() {
                        into.buckets = vec![0; series.buckets.len()];
                    }
                    for (into, n) in into.buckets.iter_mut().zip(series.buckets) {
                        *into += n;
                    }
                }
                into.seconds += series.seconds;
            }
        }
        for (queue, reasons) in other.dead {
            let mine = self.dead.entry(queue).or_default();
            for (reason, n) in reasons {
                *mine.entry(reason).or_default() += n;
            }
        }
        self.workflows.merge(other.workflows);
    }

    /// The families `spool_tasks_total`, `spool_task_duration_seconds`,
    /// `spool_task_retries_total` and `spool_dead_letters_total`.
    fn families(&self) -> Vec<MetricFamily> {
        let mut tasks = Vec::new();
        let mut durations = Vec::new();
        let mut retries = Vec::new();
        for (queue, names) in &self.tasks {
            for (name, series) in names {
                for (outcome, n) in &series.outcomes {
                    tasks.push(counter(
                        &[("queue", queue), ("name", name), ("outcome", outcome)],
                        *n,
                    ));
                }
                let retried = series.outcomes.get(Outcome::Retried.as_str()).copied();
                retries.push(counter(
                    &[("queue", queue), ("name", name)],
                    retried.unwrap_or(0),
                ));
                if !series.buckets.is_empty() {
                    durations.push(histogram(
                        &[("queue", queue), ("name", name)],
                        &series.buckets,
                        series.seconds,
                    ));
                }
            }
        }
        let mut dead = Vec::new();
        for (queue, reasons) in &self.dead {
            for (reason, n) in reasons {
                dead.push(counter(&[("queue", queue), ("reason", reason)], *n));
            }
        }
        let mut families = vec![
            family(
                "spool_tasks_total",
                "Deliveries that reached an outcome, by queue, task name and outcome.",
                MetricType::COUNTER,
                tasks,
            ),
            family(
                "spool_task_duration_seconds",
                "How long handlers ran, by queue and task name.",
                MetricType::HISTOGRAM,
                durations,
            ),
            family(
                "spool_task_retries_total",
                "Runs that failed and were scheduled again, by queue and task name.",
                MetricType::COUNTER,
                retries,
            ),
            family(
                "spool_dead_letters_total",
                "Tasks moved to a dead-letter stream, by queue and reason.",
                MetricType::COUNTER,
                dead,
            ),
        ];
        families.extend(self.workflows.families());
        families
    }
}

/// `map[key]`, inserted empty first if needed, so the key is allocated only
/// the first time (always `Some`).
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> Option<&'m mut V> {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

#[allow(clippy::cast_precision_loss)]
fn counter(pairs: &[(&str, &str)], value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut metric = Metric::from_label(labels(pairs));
    metric.set_counter(c);
    metric
}

fn histogram(pairs: &[(&str, &str)], counts: &[u64], seconds: f64) -> Metric {
    histogram_with(&DURATION_BUCKETS, pairs, counts, seconds)
}

fn histogram_with(bounds: &[f64], pairs: &[(&str, &str)], counts: &[u64], seconds: f64) -> Metric {
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(bounds.len());
    for (bound, n) in bounds.iter().zip(counts) {
        cumulative += n;
        let mut bucket = Bucket::default();
        bucket.set_upper_bound(*bound);
        bucket.set_cumulative_count(cumulative);
        buckets.push(bucket);
    }
    let mut h = Histogram::default();
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(seconds);
    h.set_bucket(buckets);
    let mut metric = Metric::from_label(labels(pairs));
    metric.set_histogram(h);
    metric
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// A process's gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gauges {
    /// Handlers running now.
    pub in_flight: u64,
    /// Tasks fetched and not yet settled (running ones included).
    pub prefetched: u64,
    /// Running workflows at this process's last workflow sweep, if it
    /// swept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows_running: Option<u64>,
}

/// Counts one worker process's tasks; an [`Observer`].
#[derive(Debug, Default)]
pub struct TaskMetrics {
    /// Increments since the last [`take`](Self::take).
    pending: Mutex<TaskTotals>,
    /// Runs in flight (a multiset: a task may in rare cases run twice here).
    running: Mutex<HashMap<TaskId, u32>>,
    in_flight: AtomicU64,
    prefetched: AtomicU64,
    /// Running workflows at the last sweep, plus one (0: no sweep yet).
    workflows_running: AtomicU64,
}

impl TaskMetrics {
    /// A fresh, empty set of counts.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Takes the increments counted since the last call, and the gauges now.
    pub fn take(&self) -> (TaskTotals, Gauges) {
        let totals =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        (totals, self.gauges())
    }

    /// The gauges now.
    #[must_use]
    pub fn gauges(&self) -> Gauges {
        Gauges {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            prefetched: self.prefetched.load(Ordering::Relaxed),
            workflows_running: self
                .workflows_running
                .load(Ordering::Relaxed)
                .checked_sub(1),
        }
    }
}

impl Observer for TaskMetrics {
    fn fetched(&self, _queue: &QueueName, count: usize) {
        self.prefetched.fetch_add(count as u64, Ordering::Relaxed);
    }

    fn started(&self, task: &TaskInfo<'_>) {
        *self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(task.id)
            .or_default() += 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self, task: &TaskInfo<'_>, outcome: Outcome, ran_for: Duration) {
        let ran = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            match running.get_mut(&task.id) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    true
                }
                Some(_) => {
                    running.remove(&task.id);
                    true
                }
                None => false,
            }
        };
        if ran {
            let _ = self
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(
                task.queue.as_str(),
                task.name,
                outcome,
                ran.then_some(ran_for),
            );
    }

    fn settled(&self, count: usize) {
        let _ = self
            .prefetched
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(count as u64))
            });
    }

    fn workflow_node_started(&self, _task: &TaskInfo<'_>, waited: Option<Duration>) {
        if let Some(waited) = waited {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .workflows
                .node_started(waited);
        }
    }

    fn workflow_node_settled(&self, _settlement: &NodeSettlement, settled: &Settled) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .workflows
            .node_settled(settled);
    }

    fn workflow_swept(&self, report: &SweepReport) {
        self.workflows_running.store(
            workflows::running_after(report).saturating_add(1),
            Ordering::Relaxed,
        );
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .workflows
            .swept(report);
    }
}

/// The metrics one endpoint serves: task totals pushed by children (or
/// read from an in-process worker), the supervisor's own counters, and GPU
/// telemetry.
pub struct MetricsHub {
    totals: Mutex<TaskTotals>,
    gauges: Mutex<BTreeMap<u32, Gauges>>,
    local: Option<Arc<TaskMetrics>>,
    registry: Registry,
    /// The names of the families in `registry`, which cannot list them.
    registered: Vec<String>,
    child_restarts: IntCounter,
    children: IntGauge,
    gpu: GpuGauges,
    telemetry: Option<GpuTelemetry>,
    queues: Arc<QueueGauges>,
}

/// Always registered, so their names are known on hosts without a GPU too;
/// a vector without series is not rendered.
struct GpuGauges {
    utilization: GaugeVec,
    memory_used: GaugeVec,
    memory_total: GaugeVec,
    encoder: GaugeVec,
    decoder: GaugeVec,
}

impl std::fmt::Debug for MetricsHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHub")
            .field("local", &self.local.is_some())
            .field("gpu", &self.telemetry.is_some())
            .finish_non_exhaustive()
    }
}

impl MetricsHub {
    /// A hub fed by children (`local` = `None`) or reading one in-process
    /// worker's observer; `gpu` adds GPU telemetry.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) if a metric cannot be
    /// registered (a bug).
    pub fn new(local: Option<Arc<TaskMetrics>>, gpu: Option<GpuTelemetry>) -> crate::Result<Self> {
        let registry = Registry::new();
        let mut registered = Vec::new();
        let bad = |e: prometheus::Error| crate::Error::Config(format!("metrics: {e}"));
        let mut register = |collector: Box<dyn Collector>| -> crate::Result<()> {
            registered.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(collector).map_err(bad)
        };
        let child_restarts = IntCounter::new(
            "spool_child_restarts_total",
            "Child processes restarted after they crashed.",
        )
        .map_err(bad)?;
        let children =
            IntGauge::new("spool_children", "Child processes running now.").map_err(bad)?;
        register(Box::new(child_restarts.clone()))?;
        register(Box::new(children.clone()))?;
        let mut vec = |name: &str, help: &str| -> crate::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), &["gpu"]).map_err(bad)?;
            register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gpu_gauges = GpuGauges {
            utilization: vec("spool_gpu_utilization_ratio", "GPU busy time, 0 to 1.")?,
            memory_used: vec("spool_gpu_memory_used_bytes", "GPU memory in use.")?,
            memory_total: vec("spool_gpu_memory_total_bytes", "GPU memory installed.")?,
            encoder: vec(
                "spool_gpu_encoder_utilization_ratio",
                "Video encoder (NVENC) busy time, 0 to 1.",
            )?,
            decoder: vec(
                "spool_gpu_decoder_utilization_ratio",
                "Video decoder (NVDEC) busy time, 0 to 1.",
            )?,
        };
        Ok(Self {
            totals: Mutex::new(TaskTotals::default()),
            gauges: Mutex::new(BTreeMap::new()),
            local,
            registry,
            registered,
            child_restarts,
            children,
            gpu: gpu_gauges,
            telemetry: gpu,
            queues: Arc::default(),
        })
    }

    /// The name of every metric family this hub can export, sorted: those
    /// without a series yet and the GPU ones (exported only where NVML
    /// works) included. Histograms are named without their `_bucket`,
    /// `_sum` and `_count` suffixes.
    #[must_use]
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = TaskTotals::default()
            .families()
            .into_iter()
            .chain(gauge_families(Gauges::default()))
            .map(|family| family.name().to_owned())
            .chain(self.registered.iter().cloned())
            .chain(QueueGauges::names().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Adds a child's increments and records its gauges.
    pub fn push(&self, pid: u32, increments: TaskTotals, gauges: Gauges) {
        if !increments.is_empty() {
            self.totals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .merge(increments);
        }
        self.gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pid, gauges);
    }

    /// Forgets an exited child's gauges (its counts stay in the totals).
    pub fn child_exited(&self, pid: u32) {
        self.gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
    }

    /// Where the served queues' signals are recorded ([`queues::sample`]).
    #[must_use]
    pub fn queues(&self) -> Arc<QueueGauges> {
        Arc::clone(&self.queues)
    }

    /// Counts a child restart.
    pub fn child_restarted(&self) {
        self.child_restarts.inc();
    }

    /// Sets how many children run now.
    pub fn set_children(&self, n: usize) {
        self.children.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The task totals so far (for tests and reports).
    #[must_use]
    pub fn totals(&self) -> TaskTotals {
        if let Some(local) = &self.local {
            let (increments, gauges) = local.take();
            self.push(std::process::id(), increments, gauges);
        }
        self.totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every metric in the Prometheus text format.
    #[must_use]
    pub fn render(&self) -> String {
        let totals = self.totals();
        let gauges = self
            .gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .fold(Gauges::default(), |sum, g| Gauges {
                in_flight: sum.in_flight + g.in_flight,
                prefetched: sum.prefetched + g.prefetched,
                // Every process sees the same index: the latest of any.
                workflows_running: sum.workflows_running.max(g.workflows_running),
            });
        if let Some(telemetry) = &self.telemetry {
            self.gpu.sample(telemetry);
        }
        let mut families = totals.families();
        families.extend(gauge_families(gauges));
        families.extend(self.registry.gather());
        families.extend(self.queues.families());
        // The text format has no way to say "a family with no series yet".
        families.retain(|family| !family.get_metric().is_empty());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl GpuGauges {
    fn sample(&self, telemetry: &GpuTelemetry) {
        for sample in telemetry.sample() {
            let gpu = sample.index.to_string();
            let set = |g: &GaugeVec, v: Option<f64>| {
                if let Some(v) = v {
                    g.with_label_values(&[gpu.as_str()]).set(v);
                }
            };
            set(&self.utilization, sample.utilization);
            set(&self.memory_used, sample.memory_used_bytes);
            set(&self.memory_total, sample.memory_total_bytes);
            set(&self.encoder, sample.encoder_utilization);
            set(&self.decoder, sample.decoder_utilization);
        }
    }
}

/// The families of the summed process gauges.
#[allow(clippy::cast_precision_loss)]
fn gauge_families(gauges: Gauges) -> [MetricFamily; 3] {
    [
        gauge_family(
            "spool_tasks_in_flight",
            "Handlers running now.",
            gauges.in_flight as f64,
        ),
        gauge_family(
            "spool_tasks_prefetched",
            "Tasks fetched and not yet acknowledged, running ones included.",
            gauges.prefetched as f64,
        ),
        gauge_family(
            "spool_workflow_running",
            "Running workflows, as this fleet's last workflow sweep saw them.",
            gauges.workflows_running.unwrap_or(0) as f64,
        ),
    ]
}

fn gauge_family(name: &str, help: &str, value: f64) -> MetricFamily {
    let mut g = prometheus::proto::Gauge::default();
    g.set_value(value);
    family(name, help, MetricType::GAUGE, vec![Metric::from_gauge(g)])
}

/// Binds `addr` and serves `hub` on `GET /metrics`, with `/healthz` and
/// `/readyz` (ready while `readiness` says so; anything else: 404), until
/// the returned task is aborted. Returns the bound address (useful with
/// port 0) and the serving task.
///
/// # Errors
///
/// [`Error::Config`](crate::Error::Config) when the address cannot be
/// bound (in use, not local, no permission).
pub async fn serve(
    addr: SocketAddr,
    hub: Arc<MetricsHub>,
    readiness: spool_cli_common::Readiness,
) -> crate::Result<(SocketAddr, JoinHandle<()>)> {
    spool_cli_common::serve_with_readiness(addr, move || hub.render(), readiness)
        .await
        .map_err(|e| crate::Error::Config(format!("cannot serve metrics on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_broker::DeadReason;

    fn info<'a>(id: TaskId, name: &'a str, queue: &'a QueueName) -> TaskInfo<'a> {
        TaskInfo {
            id,
            name,
            queue,
            attempt: 1,
        }
    }

    #[test]
    fn observer_counts_and_increments_merge() {
        let metrics = TaskMetrics::new();
        let q = QueueName::DEFAULT;
        let a = TaskId::new();
        metrics.fetched(&q, 3);
        metrics.started(&info(a, "spool.ping", &q));
        assert_eq!(
            metrics.gauges(),
            Gauges {
                in_flight: 1,
                prefetched: 3,
                workflows_running: None,
            }
        );
        metrics.finished(
            &info(a, "spool.ping", &q),
            Outcome::Succeeded,
            Duration::from_millis(3),
        );
        metrics.finished(
            &info(TaskId::new(), "nope", &q),
            Outcome::DeadLettered(DeadReason::UnknownTask),
            Duration::ZERO,
        );
        metrics.settled(2);
        let (first, gauges) = metrics.take();
        assert_eq!(
            gauges,
            Gauges {
                in_flight: 0,
                prefetched: 1,
                workflows_running: None,
            }
        );
        assert!(metrics.take().0.is_empty(), "take drains");

        let hub = MetricsHub::new(None, None).expect("hub");
        hub.push(7, first.clone(), gauges);
        hub.push(
            8,
            first,
            Gauges {
                in_flight: 2,
                prefetched: 2,
                workflows_running: None,
            },
        );
        hub.child_exited(7);
        hub.child_restarted();
        let text = hub.render();
        for line in [
            r#"spool_tasks_total{queue="default",name="spool.ping",outcome="succeeded"} 2"#,
            r#"spool_dead_letters_total{queue="default",reason="unknown_task"} 2"#,
            r#"spool_task_duration_seconds_bucket{queue="default",name="spool.ping",le="0.005"} 2"#,
            r#"spool_task_duration_seconds_count{queue="default",name="spool.ping"} 2"#,
            "spool_tasks_in_flight 2",
            "spool_child_restarts_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // The unknown task never ran: no duration.
        assert!(
            !text.contains(r#"spool_task_duration_seconds_count{queue="default",name="nope"}"#)
        );
    }

    /// The names listed are exactly those rendered once every family has a
    /// series (GPU gauges set by hand: there is no NVML here).
    #[test]
    fn metric_names_cover_every_rendered_family() {
        let hub = MetricsHub::new(None, None).expect("hub");
        let names = hub.metric_names();
        let q = QueueName::DEFAULT;
        let mut totals = TaskTotals::default();
        let info = info(TaskId::new(), "t", &q);
        totals.record(
            info.queue.as_str(),
            info.name,
            Outcome::DeadLettered(DeadReason::Malformed),
            Some(Duration::from_millis(1)),
        );
        totals.workflows.node_started(Duration::from_millis(3));
        totals
            .workflows
            .node_settled(&spool_broker::workflow::Settled::Recorded {
                ready: Vec::new(),
                outboxed: false,
                finished: Some(spool_broker::workflow::WorkflowState::Succeeded),
            });
        hub.push(1, totals, Gauges::default());
        hub.child_restarted();
        hub.queues().record(
            &q,
            spool_broker::QueueStats {
                ready: [1, 2, 3],
                oldest_age: Some(Duration::from_millis(1500)),
                enqueued_total: 9,
                ..spool_broker::QueueStats::default()
            },
        );
        for g in [
            &hub.gpu.utilization,
            &hub.gpu.memory_used,
            &hub.gpu.memory_total,
            &hub.gpu.encoder,
            &hub.gpu.decoder,
        ] {
            g.with_label_values(&["0"]).set(1.0);
        }
        let rendered: Vec<String> = hub
            .render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        assert_eq!(rendered, names);
        assert!(names.iter().any(|n| n == "spool_gpu_memory_used_bytes"));
        let text = hub.render();
        for line in [
            r#"spool_queue_ready{queue="default"} 6"#,
            r#"spool_queue_oldest_age_seconds{queue="default"} 1.5"#,
            r#"spool_queue_enqueued_total{queue="default"} 9"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn totals_travel_as_json() {
        let mut totals = TaskTotals::default();
        totals.record("q", "t", Outcome::Retried, Some(Duration::from_secs(2)));
        let text = serde_json::to_string(&totals).expect("encodes");
        let back: TaskTotals = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, totals);
    }
}

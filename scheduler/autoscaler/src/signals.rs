//! What the autoscaler reads at each tick: per-queue counts from the
//! broker, per-pool slots from the worker registry.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use spool_broker::{Broker, QueueName, QueueStats, RedisBroker, WorkerRecord, WorkerState};

use super::config::PoolConfig;
use crate::error::Result;

/// One queue as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSignals {
    /// The queue.
    pub queue: QueueName,
    /// Tasks in its streams waiting to be fetched, all priorities.
    pub ready: u64,
    /// Delayed tasks (countdowns, retries) whose time has come: the next
    /// fetch promotes them, so they are backlog too.
    pub delayed_due: u64,
    /// Tasks fetched by a worker and not yet settled.
    pub in_flight: u64,
    /// How long the oldest runnable task has waited; `None` when nothing
    /// is runnable.
    #[serde(rename = "oldest_age_seconds", serialize_with = "opt_seconds")]
    pub oldest_age: Option<Duration>,
    /// Consumers that touched the queue recently: about the worker
    /// processes serving it.
    pub consumers: u64,
    /// Whether the queue is paused: workers do not fetch it, so its backlog
    /// asks for no worker.
    pub paused: bool,
    /// Entries in its dead-letter stream: exported for alerts, never scaled
    /// on.
    pub dead_letters: u64,
}

fn opt_seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl QueueSignals {
    /// An empty, idle queue.
    #[must_use]
    pub fn new(queue: QueueName) -> Self {
        Self {
            queue,
            ready: 0,
            delayed_due: 0,
            in_flight: 0,
            oldest_age: None,
            consumers: 0,
            paused: false,
            dead_letters: 0,
        }
    }

    /// The signals in a queue's [`QueueStats`].
    #[must_use]
    pub fn from_stats(queue: QueueName, stats: &QueueStats) -> Self {
        Self {
            queue,
            ready: stats.ready_total(),
            delayed_due: stats.delayed_due,
            in_flight: stats.pending,
            oldest_age: stats.oldest_age,
            consumers: stats.consumers,
            paused: stats.paused,
            dead_letters: stats.dead,
        }
    }

    /// The work waiting for a worker: ready plus due delayed tasks.
    #[must_use]
    pub fn backlog(&self) -> u64 {
        self.ready.saturating_add(self.delayed_due)
    }
}

/// One pool as the autoscaler sees it: its queues, and its workers in the
/// registry (those whose name is the pool's worker name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSignals {
    /// The pool's name.
    pub pool: String,
    /// Its queues.
    pub queues: Vec<QueueSignals>,
    /// Its workers in the registry that are running (not retiring or
    /// stopping).
    pub registered_workers: u32,
    /// Of those, the ones running no task now.
    pub idle_workers: u32,
    /// Slots running a task, over all its live workers (retiring ones
    /// included: they still finish tasks).
    pub busy_slots: u32,
    /// Slots of its running workers.
    pub total_slots: u32,
}

impl PoolSignals {
    /// A pool with no queue and no worker.
    #[must_use]
    pub fn new(pool: impl Into<String>) -> Self {
        Self {
            pool: pool.into(),
            queues: Vec::new(),
            registered_workers: 0,
            idle_workers: 0,
            busy_slots: 0,
            total_slots: 0,
        }
    }

    /// The signals of `pool`, from its queues' stats (a queue missing from
    /// `stats` reads as empty) and the registry's records.
    #[must_use]
    pub fn gather(
        pool: &PoolConfig,
        stats: &BTreeMap<QueueName, QueueStats>,
        records: &[WorkerRecord],
    ) -> Self {
        let queues = pool
            .queues
            .iter()
            .map(|queue| match stats.get(queue) {
                Some(stats) => QueueSignals::from_stats(queue.clone(), stats),
                None => QueueSignals::new(queue.clone()),
            })
            .collect();
        let mut signals = Self {
            queues,
            ..Self::new(pool.name.clone())
        };
        for record in pool.workers_of(records) {
            signals.busy_slots = signals.busy_slots.saturating_add(record.busy);
            if record.state == WorkerState::Running {
                signals.registered_workers += 1;
                signals.total_slots = signals.total_slots.saturating_add(record.slots);
                if record.busy == 0 {
                    signals.idle_workers += 1;
                }
            }
        }
        signals
    }

    /// Runnable tasks waiting in the pool's queues that are not paused.
    #[must_use]
    pub fn backlog(&self) -> u64 {
        self.queues
            .iter()
            .filter(|q| !q.paused)
            .map(QueueSignals::backlog)
            .fold(0, u64::saturating_add)
    }

    /// Tasks held by workers, in every queue (those of a paused queue still
    /// run to their end).
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.queues
            .iter()
            .map(|q| q.in_flight)
            .fold(0, u64::saturating_add)
    }

    /// What the policy scales on: backlog plus in-flight tasks.
    #[must_use]
    pub fn load(&self) -> u64 {
        self.backlog().saturating_add(self.in_flight())
    }

    /// The longest wait among the queues that are not paused.
    #[must_use]
    pub fn oldest_age(&self) -> Option<Duration> {
        self.queues
            .iter()
            .filter(|q| !q.paused)
            .filter_map(|q| q.oldest_age)
            .max()
    }
}

/// Everything one tick reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// One entry per configured pool, in order.
    pub pools: Vec<PoolSignals>,
    /// The registry's records (stopped ones included), for actuators that
    /// choose which worker to retire.
    pub workers: Vec<WorkerRecord>,
}

/// Reads the signals of a set of pools from Redis.
///
/// # Examples
///
/// ```no_run
/// use spool_broker::{RedisBroker, RedisConfig};
/// use spool_autoscaler::{AutoscalerConfig, SignalReader};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_autoscaler::Result<()> {
/// let config = AutoscalerConfig::example().validated()?;
/// let broker = RedisBroker::connect(RedisConfig::from_url(&config.redis_url)).await?;
/// let snapshot = SignalReader::new(broker).read(&config.pools).await?;
/// for pool in &snapshot.pools {
///     println!("{}: backlog {}, in flight {}", pool.pool, pool.backlog(), pool.in_flight());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SignalReader {
    broker: RedisBroker,
}

impl SignalReader {
    /// A reader over `broker` (its key prefix selects the deployment).
    #[must_use]
    pub fn new(broker: RedisBroker) -> Self {
        Self { broker }
    }

    /// The broker read from.
    #[must_use]
    pub fn broker(&self) -> &RedisBroker {
        &self.broker
    }

    /// Reads every queue of `pools` once, and the registry once.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`](crate::Error::Broker) when Redis fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn read(&self, pools: &[PoolConfig]) -> Result<Snapshot> {
        let mut stats = BTreeMap::new();
        for queue in pools.iter().flat_map(|p| p.queues.iter()) {
            if !stats.contains_key(queue) {
                stats.insert(queue.clone(), self.broker.stats(queue).await?);
            }
        }
        let workers = self.broker.workers().await?;
        let pools = pools
            .iter()
            .map(|pool| PoolSignals::gather(pool, &stats, &workers))
            .collect();
        Ok(Snapshot { pools, workers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, pid: u32, state: WorkerState, busy: u32, slots: u32) -> WorkerRecord {
        let mut record = WorkerRecord::new(format!("{name}-{pid}"), name, "host", pid);
        record.state = state;
        record.busy = busy;
        record.slots = slots;
        record
    }

    #[test]
    fn stats_map_into_queue_signals() {
        let stats = QueueStats {
            ready: [1, 2, 3],
            pending: 4,
            delayed: 10,
            delayed_due: 5,
            oldest_age: Some(Duration::from_millis(1500)),
            consumers: 2,
            dead: 7,
            paused: true,
            ..QueueStats::default()
        };
        let q = QueueSignals::from_stats(QueueName::GPU, &stats);
        assert_eq!((q.ready, q.delayed_due, q.in_flight), (6, 5, 4));
        assert_eq!((q.consumers, q.dead_letters, q.paused), (2, 7, true));
        assert_eq!(q.backlog(), 11);
        let json = serde_json::to_value(&q).unwrap_or_default();
        assert_eq!(json["oldest_age_seconds"], 1.5);
        assert_eq!(json["queue"], "gpu");
    }

    #[test]
    fn a_pool_counts_only_its_own_workers() {
        let pool: PoolConfig =
            toml::from_str("name = \"cpu\"\nqueues = [\"default\", \"analysis\"]")
                .unwrap_or_else(|e| panic!("{e}"));
        let mut stats = BTreeMap::new();
        stats.insert(
            QueueName::DEFAULT,
            QueueStats {
                ready: [0, 7, 0],
                pending: 3,
                ..QueueStats::default()
            },
        );
        let records = [
            record("cpu", 1, WorkerState::Running, 2, 4),
            record("cpu", 2, WorkerState::Running, 0, 4),
            record("cpu", 3, WorkerState::Retiring, 1, 4),
            record("cpu", 4, WorkerState::Stopped, 0, 4),
            record("gpu", 5, WorkerState::Running, 0, 4),
        ];
        let signals = PoolSignals::gather(&pool, &stats, &records);
        assert_eq!(signals.queues.len(), 2);
        assert_eq!(signals.queues[1], QueueSignals::new(QueueName::ANALYSIS));
        assert_eq!(
            (signals.backlog(), signals.in_flight(), signals.load()),
            (7, 3, 10)
        );
        assert_eq!((signals.registered_workers, signals.idle_workers), (2, 1));
        assert_eq!((signals.busy_slots, signals.total_slots), (3, 8));
    }

    #[test]
    fn paused_queues_keep_their_in_flight_tasks_only() {
        let mut open = QueueSignals::new(QueueName::DEFAULT);
        open.ready = 4;
        open.oldest_age = Some(Duration::from_secs(2));
        let mut paused = QueueSignals::new(QueueName::ANALYSIS);
        paused.ready = 100;
        paused.in_flight = 1;
        paused.oldest_age = Some(Duration::from_secs(60));
        paused.paused = true;
        let signals = PoolSignals {
            queues: vec![open, paused],
            ..PoolSignals::new("p")
        };
        assert_eq!((signals.backlog(), signals.in_flight()), (4, 1));
        assert_eq!(signals.oldest_age(), Some(Duration::from_secs(2)));
    }
}

//! The autoscaler's loop: at each tick, read the signals, let each pool's
//! policy decide, act (unless dry-running), and export the decision.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use spool_broker::Timestamp;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::actuator::Actuator;
use super::config::AutoscalerConfig;
use super::gpu::GpuCount;
use super::metrics::AutoscalerMetrics;
use super::policy::{Decision, Direction, Observation, PolicyMemory};
use super::signals::{QueueSignals, SignalReader};
use crate::error::Result;

/// One pool at one tick: what was read, what was decided, what was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolReport {
    /// The pool.
    pub pool: String,
    /// Runnable tasks waiting in its queues that are not paused.
    pub backlog: u64,
    /// Tasks held by its workers.
    pub in_flight: u64,
    /// The longest wait among its queues, in whole milliseconds; in JSON
    /// `oldest_age_seconds`, as every duration.
    #[serde(rename = "oldest_age_seconds", serialize_with = "millis_as_seconds")]
    pub oldest_age_ms: Option<u64>,
    /// Busy slots over its live workers in the registry.
    pub busy_slots: u32,
    /// Slots of its running workers in the registry.
    pub total_slots: u32,
    /// Its running workers in the registry.
    pub registered_workers: u32,
    /// Of those, the idle ones.
    pub idle_workers: u32,
    /// Each of its queues as read.
    pub queues: Vec<QueueSignals>,
    /// The policy's decision.
    pub decision: Decision,
    /// Workers after acting (in a dry run, as they would be).
    pub workers: u32,
    /// Why acting failed, if it did (the next tick tries again).
    pub error: Option<String>,
}

/// Milliseconds written as seconds (to the millisecond), or null.
fn millis_as_seconds<S: serde::Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_f64(*ms as f64 / 1000.0),
        None => s.serialize_none(),
    }
}

/// One tick, every pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// Ticks since start, from 1.
    pub tick: u64,
    /// When the signals were read (RFC 3339).
    pub at: String,
    /// Whether this was a dry run (nothing started or retired).
    pub dry_run: bool,
    /// GPUs the GPU pools are capped by.
    pub gpus: u32,
    /// One report per pool, in configuration order.
    pub pools: Vec<PoolReport>,
}

impl TickReport {
    /// The header over [`TickReport::to_lines`].
    pub const HEADER: &'static str =
        "TICK  POOL          BACKLOG  IN-FLIGHT   OLDEST      BUSY  WORKERS     ACTION  REASON";

    /// One table line per pool, each ending with a newline.
    #[must_use]
    pub fn to_lines(&self) -> String {
        let mut out = String::new();
        for pool in &self.pools {
            let oldest = pool.oldest_age_ms.map_or_else(
                || "-".to_owned(),
                |ms| format!("{:.1}s", Duration::from_millis(ms).as_secs_f64()),
            );
            let decision = &pool.decision;
            let workers = format!("{} -> {}", decision.current, pool.workers);
            let reason = match &pool.error {
                Some(e) => format!("{}; FAILED: {e}", decision.reason),
                None => decision.reason.clone(),
            };
            let _ = writeln!(
                out,
                "{:>4}  {:<12}  {:>7}  {:>9}  {:>7}  {:>8}  {:<10}  {:>6}  {}",
                self.tick,
                pool.pool,
                pool.backlog,
                pool.in_flight,
                oldest,
                format!("{}/{}", pool.busy_slots, pool.total_slots),
                workers,
                decision.direction.as_str(),
                reason
            );
        }
        out
    }
}

/// The GPUs to cap GPU pools by: the configured count, else NVML's count
/// when some pool needs GPUs (logging clearly when there are none), else
/// zero without asking NVML.
#[must_use]
pub fn gpus_for(config: &AutoscalerConfig) -> GpuCount {
    if let Some(count) = config.gpus {
        return GpuCount::configured(count);
    }
    if !config.needs_gpus() {
        return GpuCount {
            count: 0,
            source: "unused",
            note: None,
        };
    }
    let gpus = GpuCount::detect();
    let gpu_pools: Vec<&str> = config
        .pools
        .iter()
        .filter(|p| p.policy.gpus_needed() > 0)
        .map(|p| p.name.as_str())
        .collect();
    if gpus.count == 0 {
        warn!(
            pools = %gpu_pools.join(","),
            "no GPU on this host ({}): the GPU pools are capped at 0 workers; set gpus in the \
             configuration (or --gpus) to override",
            gpus.note.as_deref().unwrap_or("none found")
        );
    } else {
        info!(gpus = gpus.count, pools = %gpu_pools.join(","), "GPU pools are capped by the GPUs present");
    }
    gpus
}

/// The autoscaler: signals in, decisions out, through an [`Actuator`].
///
/// # Examples
///
/// ```no_run
/// use spool_broker::{RedisBroker, RedisConfig};
/// use spool_autoscaler::{
///     Autoscaler, AutoscalerConfig, LocalActuator, SignalReader, TickReport, gpus_for,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_autoscaler::Result<()> {
/// let config = AutoscalerConfig::example().validated()?;
/// let broker = RedisBroker::connect(RedisConfig::from_url(&config.redis_url)).await?;
/// let actuator = LocalActuator::new(&config);
/// let gpus = gpus_for(&config);
/// let mut autoscaler = Autoscaler::new(config, SignalReader::new(broker), actuator, gpus)?
///     .dry_run(true);
/// let report = autoscaler.tick().await?;
/// print!("{}\n{}", TickReport::HEADER, report.to_lines());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Autoscaler<A> {
    config: AutoscalerConfig,
    reader: SignalReader,
    actuator: A,
    metrics: Arc<AutoscalerMetrics>,
    gpus: GpuCount,
    dry_run: bool,
    memories: Vec<PolicyMemory>,
    /// In a dry run, each pool's count as it would be after the last tick.
    assumed: Vec<Option<u32>>,
    origin: Instant,
    ticks: u64,
}

impl<A: Actuator> Autoscaler<A> {
    /// An autoscaler for the pools of `config` (validated), reading through
    /// `reader` and acting through `actuator`; GPU pools are capped by
    /// `gpus`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) if the
    /// metrics cannot be set up.
    pub fn new(
        config: AutoscalerConfig,
        reader: SignalReader,
        actuator: A,
        gpus: GpuCount,
    ) -> Result<Self> {
        let metrics = Arc::new(AutoscalerMetrics::new()?);
        metrics.set_gpus(gpus.count);
        let pools = config.pools.len();
        Ok(Self {
            config,
            reader,
            actuator,
            metrics,
            gpus,
            dry_run: false,
            memories: vec![PolicyMemory::default(); pools],
            assumed: vec![None; pools],
            origin: Instant::now(),
            ticks: 0,
        })
    }

    /// In a dry run, decisions are made and reported but nothing is started
    /// or retired; each pool's count is assumed to follow the decisions.
    #[must_use]
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The metrics, to serve.
    #[must_use]
    pub fn metrics(&self) -> Arc<AutoscalerMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The actuator.
    #[must_use]
    pub fn actuator(&self) -> &A {
        &self.actuator
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &AutoscalerConfig {
        &self.config
    }

    /// Reads the signals, decides for every pool, acts (unless dry-running)
    /// and records the metrics. A pool whose action fails says so in its
    /// report; the others go on.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`](crate::Error::Broker) when the signals cannot be
    /// read; nothing is decided then.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a tick dropped while acting may have started or
    /// retired some workers without recording it. Let it finish.
    pub async fn tick(&mut self) -> Result<TickReport> {
        let snapshot = match self.reader.read(&self.config.pools).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.metrics.tick_failed();
                return Err(e);
            }
        };
        let at = Timestamp::now().to_string();
        let now = self.origin.elapsed();
        self.ticks += 1;
        let mut reports = Vec::with_capacity(snapshot.pools.len());
        let mut failed = false;
        for (i, (pool, signals)) in self.config.pools.iter().zip(snapshot.pools).enumerate() {
            let mut error = None;
            let read = match self.assumed[i] {
                Some(assumed) if self.dry_run => Ok(assumed),
                _ => self.actuator.current(pool).await.map(|n| {
                    // A dry run with the local actuator starts nothing, so
                    // the registry says better what runs.
                    if self.dry_run {
                        n.max(signals.registered_workers)
                    } else {
                        n
                    }
                }),
            };
            let current = match read {
                Ok(n) => n,
                Err(e) => {
                    warn!(pool = %pool.name, error = %e, "cannot count the pool's workers; skipping it this tick");
                    self.metrics.tick_failed();
                    failed = true;
                    continue;
                }
            };
            let decision = pool.policy.decide(
                &mut self.memories[i],
                &Observation {
                    signals: &signals,
                    current,
                    gpus: self.gpus.count,
                    now,
                },
            );
            let workers = if self.dry_run {
                self.assumed[i] = Some(decision.desired);
                decision.desired
            } else if decision.desired == current {
                current
            } else {
                match self
                    .actuator
                    .scale(pool, decision.desired, &snapshot.workers)
                    .await
                {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(pool = %pool.name, error = %e, "cannot scale the pool; trying again at the next tick");
                        error = Some(e.to_string());
                        failed = true;
                        current
                    }
                }
            };
            if decision.direction == Direction::Hold {
                debug!(pool = %pool.name, workers, reason = %decision.reason, "hold");
            } else {
                info!(
                    pool = %pool.name,
                    from = current,
                    to = decision.desired,
                    now = workers,
                    direction = %decision.direction,
                    dry_run = self.dry_run,
                    reason = %decision.reason,
                    "scaling"
                );
            }
            self.metrics.observe(&signals, &decision, workers);
            reports.push(PoolReport {
                pool: pool.name.clone(),
                backlog: signals.backlog(),
                in_flight: signals.in_flight(),
                oldest_age_ms: signals
                    .oldest_age()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                busy_slots: signals.busy_slots,
                total_slots: signals.total_slots,
                registered_workers: signals.registered_workers,
                idle_workers: signals.idle_workers,
                queues: signals.queues,
                decision,
                workers,
                error,
            });
        }
        if failed {
            self.metrics.tick_failed();
        }
        Ok(TickReport {
            tick: self.ticks,
            at,
            dry_run: self.dry_run,
            gpus: self.gpus.count,
            pools: reports,
        })
    }

    /// Ticks every `interval` until `shutdown` completes, handing each
    /// report to `on_tick`; then stops the actuator (the local one retires
    /// its workers, hurried by `hurry`). A tick that fails is logged and the
    /// next one tries again.
    ///
    /// # Errors
    ///
    /// When the actuator cannot stop cleanly.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        hurry: impl Future<Output = ()> + Send,
        mut on_tick: impl FnMut(&TickReport),
    ) -> Result<()> {
        let mut interval = tokio::time::interval(self.config.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        info!(
            actuator = self.actuator.kind(),
            pools = self.config.pools.len(),
            interval = ?self.config.interval,
            dry_run = self.dry_run,
            "autoscaler running"
        );
        loop {
            // A tick runs to its end: dropping it halfway could lose track
            // of a worker it started.
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = interval.tick() => {}
            }
            match self.tick().await {
                Ok(report) => on_tick(&report),
                Err(e) => {
                    warn!(error = %e, "cannot read the signals; trying again at the next tick")
                }
            }
        }
        info!(actuator = self.actuator.kind(), "stopping");
        self.actuator.shutdown(hurry).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::PoolSignals;

    #[test]
    fn a_tick_renders_one_aligned_line_per_pool() {
        let signals = PoolSignals::new("cpu");
        let report = TickReport {
            tick: 3,
            at: "2026-01-01T00:00:00Z".into(),
            dry_run: true,
            gpus: 0,
            pools: vec![PoolReport {
                pool: signals.pool.clone(),
                backlog: 120,
                in_flight: 8,
                oldest_age_ms: Some(3300),
                busy_slots: 8,
                total_slots: 8,
                registered_workers: 2,
                idle_workers: 0,
                queues: Vec::new(),
                decision: Decision {
                    current: 2,
                    desired: 4,
                    needed: 13,
                    cap: 4,
                    direction: Direction::Up,
                    reason: "load 128".into(),
                },
                workers: 4,
                error: None,
            }],
        };
        let line = report.to_lines();
        assert_eq!(
            line,
            "   3  cpu               120          8     3.3s       8/8  2 -> 4          up  load 128\n"
        );
        let header_reason = TickReport::HEADER.find("REASON");
        assert_eq!(header_reason, line.find("load"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["pools"][0]["decision"]["direction"], "up");
        assert_eq!(json["pools"][0]["workers"], 4);
    }
}

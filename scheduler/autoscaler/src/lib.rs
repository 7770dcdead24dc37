//! `spool-autoscaler`: grows a fleet of workers when tasks pile up and
//! shrinks it when they drain, without losing a task.
//!
//! Workers come in **pools**: a set of queues plus the `spool-worker` flags
//! to serve them with ([`PoolConfig`]). At each tick (every `interval`) the
//! [`Autoscaler`]:
//!
//! 1. **reads** each queue's backlog (ready plus due delayed tasks),
//!    in-flight tasks and oldest wait from Redis, and each pool's busy and
//!    total slots from the worker registry ([`SignalReader`]);
//! 2. **decides** how many workers each pool should have
//!    ([`Policy::decide`], a pure function): `ceil(load / target)` within
//!    `min_workers..=max_workers`, at once when that is more; fewer only
//!    once a whole `scale_down_cooldown` has asked for fewer, and only by
//!    retiring idle workers; GPU pools capped by the GPUs present
//!    ([`GpuCount`]);
//! 3. **acts** through an [`Actuator`]: [`LocalActuator`] starts
//!    `spool-worker` processes and retires them with a warm shutdown,
//!    [`KubernetesActuator`] sets a Deployment's replicas;
//! 4. **exports** signals and decisions as Prometheus metrics
//!    ([`AutoscalerMetrics`]), and reports them ([`TickReport`]) for
//!    `--dry-run`.
//!
//! [`simulate`] replays a [`LoadProfile`] against the same policy in
//! simulated time and plots the result, to tune a policy offline.
//!
//! ```
//! use std::time::Duration;
//! use spool_autoscaler::{AutoscalerConfig, LoadProfile, simulate};
//!
//! let config = AutoscalerConfig::from_toml(r#"
//!     [[pools]]
//!     name = "cpu"
//!     queues = ["default"]
//!     concurrency = 4
//!     [pools.policy]
//!     max_workers = 6
//!     target_backlog_per_worker = 8
//!     scale_down_cooldown = "30s"
//! "#)?.validated()?;
//! let profile = LoadProfile::from_toml(r#"
//!     duration = "3m"
//!     [[bursts]]
//!     at = "5s"
//!     count = 300
//! "#)?;
//! let run = simulate(&config, None, &profile)?;
//! assert_eq!(run.summary.max_workers, 6);
//! assert_eq!(run.summary.unfinished, 0);
//! # Ok::<(), spool_autoscaler::Error>(())
//! ```

// Library crates: every public item documented, and nothing `pub` that the
// crate does not export.
#![warn(missing_docs, unreachable_pub)]

mod actuator;
mod config;
mod daemon;
mod error;
mod gpu;
mod metrics;
mod policy;
mod signals;
mod simulate;

pub use self::actuator::{
    Actuator, KubernetesActuator, LocalActuator, resolve_worker_bin, worker_args,
};
pub use self::config::{
    ActuatorKind, AutoscalerConfig, KubernetesConfig, LocalConfig, PoolConfig, parse_optional_addr,
};
pub use self::daemon::{Autoscaler, PoolReport, TickReport, gpus_for};
pub use self::error::{Error, Result};
pub use self::gpu::GpuCount;
pub use self::metrics::{AutoscalerMetrics, serve as serve_metrics};
pub use self::policy::{Decision, Direction, Observation, Policy, PolicyMemory};
pub use self::signals::{PoolSignals, QueueSignals, SignalReader, Snapshot};
pub use self::simulate::{
    Burst, Distribution, Durations, Fleet, LoadProfile, MAX_TASKS, Phase, Recorded, Sample,
    SimTask, Simulation, Summary, plot, simulate,
};

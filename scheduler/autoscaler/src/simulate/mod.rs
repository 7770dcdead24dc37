//! Policy simulation: a load profile replayed against a pool's policy, the
//! same [`Policy::decide`](super::Policy::decide) the daemon runs, in
//! simulated time, so a policy can be tuned offline.
//!
//! The model is a discrete-event simulation: tasks arrive into one FIFO
//! queue; a worker takes `start_delay` from the decision that starts it to
//! its first fetch, then runs up to `concurrency` tasks at once; the policy
//! ticks every `interval` of the configuration; a scale-down retires idle
//! workers at once (starting ones next), never busy ones. Fetch latency
//! and prefetch are left out: they are milliseconds against the seconds
//! this is for.

mod durations;
mod engine;
mod plot;
mod profile;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use self::durations::{Distribution, Durations};
pub use self::engine::simulate;
pub use self::plot::plot;
pub use self::profile::{Burst, Fleet, LoadProfile, MAX_TASKS, Phase, Recorded, SimTask};
use crate::error::{Error, Result};

/// One row of `simulation.csv`: the state at time `t` and what happened
/// since the previous row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the start (`t_seconds` in JSON, as every duration).
    #[serde(rename = "t_seconds")]
    pub t: f64,
    /// Tasks that arrived since the previous row.
    pub arrivals: u64,
    /// Tasks waiting for a worker.
    pub backlog: u64,
    /// Workers, starting ones included (the actuator's count).
    pub workers: u32,
    /// Workers that are up and fetching.
    pub ready_workers: u32,
    /// Slots running a task.
    pub busy: u64,
    /// The policy's last decision.
    pub desired: u32,
    /// Tasks finished since the previous row.
    pub completed: u64,
    /// Median wait (arrival to start), in seconds, of the tasks started
    /// since the previous row.
    #[serde(rename = "wait_p50_seconds")]
    pub wait_p50: Option<f64>,
    /// Their 95th percentile wait.
    #[serde(rename = "wait_p95_seconds")]
    pub wait_p95: Option<f64>,
    /// Their mean wait.
    #[serde(rename = "wait_mean_seconds")]
    pub wait_mean: Option<f64>,
}

/// What a simulation found, over its whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The pool simulated.
    pub pool: String,
    /// Tasks that arrived.
    pub tasks: u64,
    /// Tasks that finished before the end.
    pub completed: u64,
    /// Tasks waiting or running at the end.
    pub unfinished: u64,
    /// Median wait, in seconds, over every task started.
    #[serde(rename = "wait_p50_seconds")]
    pub wait_p50: f64,
    /// 95th percentile wait, in seconds.
    #[serde(rename = "wait_p95_seconds")]
    pub wait_p95: f64,
    /// Longest wait, in seconds.
    #[serde(rename = "wait_max_seconds")]
    pub wait_max: f64,
    /// Mean wait, in seconds.
    #[serde(rename = "wait_mean_seconds")]
    pub wait_mean: f64,
    /// The largest backlog.
    pub max_backlog: u64,
    /// The most workers at once.
    pub max_workers: u32,
    /// Workers times seconds alive (starting and retiring included): the
    /// fleet's cost.
    pub worker_seconds: f64,
    /// Ticks that scaled up.
    pub scale_ups: u64,
    /// Ticks that scaled down.
    pub scale_downs: u64,
    /// Slots per worker.
    pub concurrency: u32,
    /// Seconds from a start decision to a fetching worker.
    pub start_delay_seconds: f64,
}

impl Summary {
    /// A few lines for people.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pool {}: {} tasks, {} completed, {} unfinished",
            self.pool, self.tasks, self.completed, self.unfinished
        );
        let _ = writeln!(
            out,
            "wait: p50 {:.1}s, p95 {:.1}s, max {:.1}s, mean {:.1}s",
            self.wait_p50, self.wait_p95, self.wait_max, self.wait_mean
        );
        let _ = writeln!(
            out,
            "backlog max {}; workers max {}, {} scale-ups, {} scale-downs; {:.0} worker-seconds",
            self.max_backlog,
            self.max_workers,
            self.scale_ups,
            self.scale_downs,
            self.worker_seconds
        );
        out
    }
}

/// A finished simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    /// The run as a whole.
    pub summary: Summary,
    /// One row per sample interval.
    pub samples: Vec<Sample>,
}

impl Simulation {
    /// The samples as CSV, with a header line.
    #[must_use]
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "t,arrivals,backlog,workers,ready_workers,busy,desired,completed,wait_p50,wait_p95,wait_mean\n",
        );
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
        for s in &self.samples {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                s.t,
                s.arrivals,
                s.backlog,
                s.workers,
                s.ready_workers,
                s.busy,
                s.desired,
                s.completed,
                opt(s.wait_p50),
                opt(s.wait_p95),
                opt(s.wait_mean)
            );
        }
        out
    }

    /// Writes `simulation.csv` and `simulation.png` into `dir` (created if
    /// missing); returns their paths.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a file cannot be written,
    /// [`Error::Plot`] when the plot cannot be drawn.
    pub fn write_to(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let csv = dir.join("simulation.csv");
        std::fs::write(&csv, self.to_csv()).map_err(|source| Error::Io {
            context: format!("cannot write {}", csv.display()),
            source,
        })?;
        let png = dir.join("simulation.png");
        plot(self, &png)?;
        Ok((csv, png))
    }
}

#[cfg(test)]
mod tests;

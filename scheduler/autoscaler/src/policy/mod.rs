//! The scaling policy: from one pool's signals to a desired worker count.
//!
//! [`Policy::decide`] is a pure function of its inputs and of the pool's
//! [`PolicyMemory`]: no clock, no I/O. The caller passes the time, so the
//! daemon (wall time) and the simulator (simulated time) run the same code.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::signals::PoolSignals;

/// How one pool scales. Every field has a default, so a pool's `[policy]`
/// table may name only what it changes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_autoscaler::Policy;
///
/// let policy: Policy = toml::from_str(
///     "min_workers = 1\nmax_workers = 8\ntarget_backlog_per_worker = 20\nscale_down_cooldown = \"2m\"",
/// )?;
/// assert_eq!(policy.max_workers, 8);
/// assert_eq!(policy.scale_down_cooldown, Duration::from_secs(120));
/// assert_eq!(policy.max_wait, None);
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The fewest workers, even with nothing to do. Default: 0.
    pub min_workers: u32,
    /// The most workers. Default: 4.
    pub max_workers: u32,
    /// How many tasks, waiting or in flight, one worker is meant to carry:
    /// the pool wants `ceil(load / target_backlog_per_worker)` workers. Set
    /// it near a worker's concurrency for tasks of seconds, a few times
    /// that for tasks of milliseconds. Default: 10 (0 reads as 1).
    pub target_backlog_per_worker: u64,
    /// How long the need must stay below the current count before workers
    /// are retired: the pool scales down to the highest need seen over this
    /// window, and only by retiring idle workers. Scaling up never waits.
    /// Default: 60 s.
    #[serde(with = "spool_cli_common::text::duration")]
    pub scale_down_cooldown: Duration,
    /// When the oldest runnable task has waited longer than this, one more
    /// worker is added even though the backlog is within target (tasks
    /// slower than expected). Default: none.
    #[serde(with = "spool_cli_common::text::optional_duration")]
    pub max_wait: Option<Duration>,
    /// GPUs each worker needs: the pool is capped at the GPUs present
    /// divided by this. 0 means the pool does not need GPUs. Default: 1
    /// for a pool serving the `gpu` queue, 0 otherwise (filled in when the
    /// configuration is validated).
    pub gpus_per_worker: Option<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_workers: 0,
            max_workers: 4,
            target_backlog_per_worker: 10,
            scale_down_cooldown: Duration::from_secs(60),
            max_wait: None,
            gpus_per_worker: None,
        }
    }
}

/// Which way a decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Start workers.
    Up,
    /// Retire workers.
    Down,
    /// Keep the count.
    Hold,
}

impl Direction {
    /// `up`, `down` or `hold`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Hold => "hold",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy is told at one tick.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The pool's queues and workers as read now.
    pub signals: &'a PoolSignals,
    /// Workers the actuator runs for the pool now: starting ones included,
    /// retiring ones not.
    pub current: u32,
    /// GPUs present (0 where none were found).
    pub gpus: u32,
    /// The time, on any monotonic clock the caller keeps for this pool.
    pub now: Duration,
}

/// One tick's decision for one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Workers before the decision.
    pub current: u32,
    /// Workers wanted now.
    pub desired: u32,
    /// What the load alone asks for, before the bounds and the cooldown.
    pub needed: u32,
    /// The upper bound in force: `max_workers`, or fewer where GPUs run
    /// short.
    pub cap: u32,
    /// Up, down or hold.
    pub direction: Direction,
    /// Why, in words.
    pub reason: String,
}

/// What a pool's policy remembers between ticks: the bounded needs seen
/// during the last cooldown, which a scale-down may not undercut.
#[derive(Debug, Clone, Default)]
pub struct PolicyMemory {
    first_seen: Option<Duration>,
    recent: VecDeque<(Duration, u32)>,
}

impl PolicyMemory {
    /// Records `need` at `now` and forgets what is older than `window`;
    /// returns the highest need left and whether a whole window has been
    /// observed.
    fn record(&mut self, now: Duration, need: u32, window: Duration) -> (u32, bool) {
        // A clock that goes backwards (a test, a restarted simulation)
        // starts the memory again rather than keeping stale highs.
        if self.recent.back().is_some_and(|&(at, _)| at > now) {
            self.recent.clear();
            self.first_seen = None;
        }
        let first = *self.first_seen.get_or_insert(now);
        self.recent.push_back((now, need));
        let horizon = now.saturating_sub(window);
        while self.recent.front().is_some_and(|&(at, _)| at < horizon) {
            self.recent.pop_front();
        }
        let highest = self.recent.iter().map(|&(_, n)| n).max().unwrap_or(need);
        let observed = now.saturating_sub(first) >= window;
        (highest, observed)
    }
}

impl Policy {
    /// GPUs each worker needs (0: none).
    #[must_use]
    pub fn gpus_needed(&self) -> u32 {
        self.gpus_per_worker.unwrap_or(0)
    }

    /// The upper bound for `gpus` devices present, and why it is lower than
    /// `max_workers` when it is.
    fn cap(&self, gpus: u32) -> (u32, Option<String>) {
        let per = self.gpus_needed();
        if per == 0 {
            return (self.max_workers, None);
        }
        let by_gpus = gpus / per;
        if by_gpus < self.max_workers {
            let why = if gpus == 0 {
                "no GPU present".to_owned()
            } else {
                format!("{gpus} GPU(s) at {per} per worker")
            };
            (by_gpus, Some(why))
        } else {
            (self.max_workers, None)
        }
    }

    /// Decides how many workers the pool should have now, and remembers
    /// the need for later scale-downs.
    ///
    /// - Up: at once, to what the load needs (`ceil(load / target)`, plus
    ///   one when the oldest task waited past `max_wait`), within
    ///   `min_workers..=cap`.
    /// - Down: only once a whole cooldown has been observed, to the highest
    ///   need of that window, and by at most the pool's idle workers
    ///   (those not in the registry yet count as idle); a
    ///   pool above its cap (GPUs lost) goes down to it at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use spool_autoscaler::{Direction, Observation, Policy, PolicyMemory, PoolSignals, QueueSignals};
    ///
    /// let policy = Policy { max_workers: 8, target_backlog_per_worker: 10, ..Policy::default() };
    /// let mut memory = PolicyMemory::default();
    /// let mut queue = QueueSignals::new("default".parse()?);
    /// queue.ready = 45;
    /// let signals = PoolSignals { queues: vec![queue], ..PoolSignals::new("cpu") };
    /// let now = Duration::ZERO;
    /// let decision = policy.decide(&mut memory, &Observation { signals: &signals, current: 1, gpus: 0, now });
    /// assert_eq!((decision.direction, decision.desired), (Direction::Up, 5));
    /// # Ok::<(), spool_broker::Error>(())
    /// ```
    pub fn decide(&self, memory: &mut PolicyMemory, seen: &Observation<'_>) -> Decision {
        let signals = seen.signals;
        let load = signals.load();
        let per_worker = self.target_backlog_per_worker.max(1);
        let mut needed = u32::try_from(load.div_ceil(per_worker)).unwrap_or(u32::MAX);
        let mut why = format!("load {load} at {per_worker} per worker needs {needed}");
        if let (Some(max_wait), Some(oldest)) = (self.max_wait, signals.oldest_age())
            && oldest > max_wait
            && signals.backlog() > 0
            && needed <= seen.current
        {
            needed = seen.current.saturating_add(1);
            why = format!(
                "oldest task waited {} (over {}): one more worker",
                seconds(oldest),
                seconds(max_wait)
            );
        }
        let (cap, cap_reason) = self.cap(seen.gpus);
        let floor = self.min_workers.min(cap);
        let bounded = needed.clamp(floor, cap);
        if bounded > needed {
            why = format!("{why}; min_workers is {floor}");
        } else if bounded < needed {
            why = match &cap_reason {
                Some(gpus) => format!("{why}; capped at {cap} by {gpus}"),
                None => format!("{why}; capped at max_workers {cap}"),
            };
        }
        let (highest, observed) = memory.record(seen.now, bounded, self.scale_down_cooldown);
        let current = seen.current;
        let decision = |desired: u32, direction: Direction, reason: String| Decision {
            current,
            desired,
            needed,
            cap,
            direction,
            reason,
        };
        if current > cap {
            let why = cap_reason.unwrap_or_else(|| format!("max_workers is {cap}"));
            return decision(cap, Direction::Down, format!("above the cap: {why}"));
        }
        if bounded > current {
            return decision(bounded, Direction::Up, why);
        }
        if bounded == current {
            return decision(current, Direction::Hold, why);
        }
        let cooldown = seconds(self.scale_down_cooldown);
        if !observed {
            return decision(
                current,
                Direction::Hold,
                format!("{why}; cooldown: not yet observed for {cooldown}"),
            );
        }
        if highest >= current {
            return decision(
                current,
                Direction::Hold,
                format!("{why}; cooldown: {highest} needed within the last {cooldown}"),
            );
        }
        // Workers the actuator counts that are not in the registry (still
        // starting, or stuck before their first heartbeat) run nothing:
        // they may be retired as well as idle ones.
        let unregistered = current.saturating_sub(signals.registered_workers);
        let retirable = signals.idle_workers.saturating_add(unregistered);
        let lowest_by_idle = current.saturating_sub(retirable);
        let desired = highest.max(lowest_by_idle);
        if desired >= current {
            return decision(
                current,
                Direction::Hold,
                format!("{why}; no idle worker to retire"),
            );
        }
        let reason = if desired > highest {
            format!(
                "{why}; {highest} needed over the last {cooldown}; {} idle worker(s) retired",
                current - desired
            )
        } else {
            format!("{why}; {highest} needed over the last {cooldown}")
        };
        decision(desired, Direction::Down, reason)
    }
}

/// A duration in humantime, to the millisecond.
fn seconds(d: Duration) -> String {
    let ms = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(ms).to_string()
}

#[cfg(test)]
mod tests;

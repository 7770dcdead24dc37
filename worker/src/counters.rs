//! Counters of what a worker did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::observer::{Observer, Outcome, TaskInfo};

/// Live counters of a worker's outcomes; cheap to clone and read from any
/// task (tests wait on them, metrics export them).
///
/// A counter moves when an outcome is decided; the settler stores it with
/// the broker (and the job store) a moment later. Wait on the broker or the
/// store, not on a counter, to know an outcome is stored.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    expired: AtomicU64,
    revoked: AtomicU64,
    requeued: AtomicU64,
    abandoned: AtomicU64,
    deferred: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Runs started.
    pub started: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed for good (no retry left or wanted).
    pub failed: u64,
    /// Runs that failed and were scheduled again.
    pub retried: u64,
    /// Tasks moved to a dead-letter stream.
    pub dead_lettered: u64,
    /// Tasks skipped because they expired.
    pub expired: u64,
    /// Tasks revoked before or while running.
    pub revoked: u64,
    /// Prefetched tasks given back unstarted at shutdown.
    pub requeued: u64,
    /// Runs stopped because another worker took their task over.
    pub abandoned: u64,
    /// Tasks put back by a rate limit.
    pub deferred: u64,
}

impl CounterSnapshot {
    /// Tasks that reached a final outcome: succeeded, failed, dead-lettered,
    /// expired or revoked. A retry is not one: the task runs again.
    #[must_use]
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.dead_lettered + self.expired + self.revoked
    }
}

impl Observer for Counters {
    fn started(&self, _task: &TaskInfo<'_>) {
        self.inner.started.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self, _task: &TaskInfo<'_>, outcome: Outcome, _ran_for: Duration) {
        let counter = match outcome {
            Outcome::Succeeded => &self.inner.succeeded,
            Outcome::Failed => &self.inner.failed,
            Outcome::Retried => &self.inner.retried,
            Outcome::DeadLettered(_) => &self.inner.dead_lettered,
            Outcome::Expired => &self.inner.expired,
            Outcome::Revoked => &self.inner.revoked,
            Outcome::Requeued => &self.inner.requeued,
            Outcome::Abandoned => &self.inner.abandoned,
            Outcome::Deferred => &self.inner.deferred,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counters {
    /// The current values.
    #[must_use]
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            started: get(&self.inner.started),
            succeeded: get(&self.inner.succeeded),
            failed: get(&self.inner.failed),
            retried: get(&self.inner.retried),
            dead_lettered: get(&self.inner.dead_lettered),
            expired: get(&self.inner.expired),
            revoked: get(&self.inner.revoked),
            requeued: get(&self.inner.requeued),
            abandoned: get(&self.inner.abandoned),
            deferred: get(&self.inner.deferred),
        }
    }
}

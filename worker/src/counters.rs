//! Counters of what a worker did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a worker's outcomes; cheap to clone and read from any
/// task (tests wait on them, metrics export them).
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
    requeued: AtomicU64,
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
    /// Prefetched tasks given back unstarted at shutdown.
    pub requeued: u64,
}

impl CounterSnapshot {
    /// Tasks that reached a final outcome: succeeded, failed, dead-lettered
    /// or expired. A retry is not one: the task runs again.
    #[must_use]
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.dead_lettered + self.expired
    }
}

/// One kind of outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Started,
    Succeeded,
    Failed,
    Retried,
    DeadLettered,
    Expired,
    Requeued,
}

impl Counters {
    pub(crate) fn add(&self, count: Count) {
        let counter = match count {
            Count::Started => &self.inner.started,
            Count::Succeeded => &self.inner.succeeded,
            Count::Failed => &self.inner.failed,
            Count::Retried => &self.inner.retried,
            Count::DeadLettered => &self.inner.dead_lettered,
            Count::Expired => &self.inner.expired,
            Count::Requeued => &self.inner.requeued,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

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
            requeued: get(&self.inner.requeued),
        }
    }
}

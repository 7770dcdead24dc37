//! A queue's counts and signals, as [`Broker::stats`](super::Broker::stats)
//! reads them: for `spoolctl`, the autoscaler and dashboards.

use std::time::Duration;

/// How long a consumer that holds no task may go without fetching and still
/// count in [`QueueStats::consumers`]: 30 s, the default visibility timeout.
/// A live worker fetches at least once a `poll_interval` (1 s by default)
/// while it has free slots; a busy one holds tasks.
pub const ACTIVE_CONSUMER_WINDOW: Duration = Duration::from_secs(30);

/// A queue's state and signals, read in one round trip: how many tasks it
/// holds by state, how long the oldest has waited, who serves it, and
/// counters from which arrival and completion rates are derived.
///
/// Build one outside this crate with `..QueueStats::default()`, so fields
/// added later do not break the code.
///
/// # Examples
///
/// ```
/// use spool_broker::QueueStats;
///
/// let stats = QueueStats { ready: [1, 2, 0], delayed_due: 4, ..QueueStats::default() };
/// assert_eq!(stats.backlog(), 7);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Waiting to be fetched, per priority (high, normal, low).
    pub ready: [u64; 3],
    /// Fetched by a worker and not yet settled: in flight.
    pub pending: u64,
    /// Scheduled for later (countdown, ETA, retry backoff), due ones
    /// included.
    pub delayed: u64,
    /// In the dead-letter stream.
    pub dead: u64,
    /// Of [`QueueStats::delayed`], those whose time has come: the next fetch
    /// promotes them (unless the queue is paused), so they are backlog.
    pub delayed_due: u64,
    /// How long the oldest runnable task has waited to be fetched: the
    /// oldest of the ready entries (measured from when it entered its
    /// stream, which for a promoted countdown or retry is its promotion, and
    /// for a requeued task its requeue) and of the due delayed tasks
    /// (measured from their due time). `None` when nothing is runnable.
    pub oldest_age: Option<Duration>,
    /// Consumers (worker processes) serving the queue now: those that
    /// fetched from it within [`ACTIVE_CONSUMER_WINDOW`], and those holding
    /// tasks of it (fetched, not yet settled). A dead worker's consumer
    /// counts until its tasks are reclaimed; a worker serving a paused
    /// queue stops fetching it, so it drops out once it holds nothing.
    pub consumers: u64,
    /// Tasks that entered the queue's streams since they were created:
    /// every enqueue of a ready task, promotion of a delayed one (countdowns,
    /// retries), requeue and revived dead letter. A cumulative counter:
    /// sample it twice for the arrival rate. It restarts from zero when the
    /// queue is purged. Needs Redis 7.0 (0 on older servers).
    pub enqueued_total: u64,
    /// Tasks that left the queue's streams since they were created: settled
    /// by an acknowledgement (succeeded, failed, expired, revoked), a retry,
    /// a dead letter or a requeue. Always `enqueued_total − ready − pending`;
    /// sample it twice for the completion rate. Restarts with
    /// `enqueued_total`.
    pub completed_total: u64,
    /// Whether the queue is paused
    /// ([`Broker::pause`](crate::Broker::pause)): workers do not fetch it,
    /// and its delayed tasks are not promoted.
    pub paused: bool,
}

impl QueueStats {
    /// Tasks waiting to be fetched, all priorities together.
    #[must_use]
    pub fn ready_total(&self) -> u64 {
        self.ready.iter().sum()
    }

    /// The work waiting for a worker: ready tasks plus due delayed ones.
    #[must_use]
    pub fn backlog(&self) -> u64 {
        self.ready_total().saturating_add(self.delayed_due)
    }

    /// Whether nothing is waiting, running or scheduled (dead letters aside).
    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.ready_total() == 0 && self.pending == 0 && self.delayed == 0
    }
}

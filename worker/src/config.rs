//! Worker configuration.

use std::time::Duration;

use spool_broker::QueueName;

/// How a worker fetches and runs tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The queues to serve. Default: `[default]`.
    pub queues: Vec<QueueName>,
    /// How many tasks run at once. Default: the number of CPUs.
    pub concurrency: usize,
    /// The most tasks fetched and not yet acknowledged (running ones
    /// included); a fetch never claims more, nor more than `concurrency`
    /// at once (the next claim then runs while this one's tasks start).
    /// Default: 4 × `concurrency`.
    pub prefetch: usize,
    /// The longest one fetch blocks on an empty queue (a new task ends the
    /// wait at once). A warm shutdown waits for fetches in flight, so this
    /// also bounds how long it takes to stop fetching. Default: 1 s.
    pub poll_interval: Duration,
    /// A hard limit on each run, for tasks without their own: past it the
    /// run is dropped and fails. Default: `None`.
    pub time_limit: Option<Duration>,
    /// A soft limit on each run: past it the task's cancellation token
    /// fires, so the handler can wind down (stop FFmpeg, clean up) before
    /// the hard limit. Default: `None`.
    pub soft_time_limit: Option<Duration>,
    /// How long a fetched task may go without a lease renewal before other
    /// workers consider its worker dead and reclaim it. Default: 30 s.
    pub visibility_timeout: Duration,
    /// How often this worker renews the leases of the tasks it holds; well
    /// under `visibility_timeout`, so a live worker's tasks (even hour-long
    /// ones) are never reclaimed. Default: 10 s.
    pub heartbeat_interval: Duration,
    /// How often a task may be delivered without an outcome (its workers
    /// keep dying on it) before it is dead-lettered. Default: 5.
    pub max_deliveries: u32,
    /// How long a revoked or soft-limited run may take to wind down after
    /// its cancellation token fires, before it is dropped. Default: 10 s.
    pub cancel_grace: Duration,
    /// The consumer name in the broker. Default: `None`, which means
    /// `<host>-<pid>-<random>`.
    pub consumer_name: Option<String>,
    /// Stop fetching after this many tasks, finish them and return (the
    /// building block of max-tasks-per-child recycling). Default: `None`.
    pub max_tasks: Option<u64>,
    /// The most bytes a task's encoded result may have. A larger result is
    /// not stored: the task is dead-lettered `oversized` with the size (it
    /// would produce the same again on a retry). Results are written to
    /// the job store and published to every watcher, so they should stay
    /// small; large outputs belong in storage, returned by path or URL.
    /// Default: [`DEFAULT_MAX_RESULT_BYTES`], 16 MiB, the same as the
    /// broker's envelope limit.
    pub max_result_bytes: usize,
    /// How often this worker runs the workflow sweeper
    /// ([`Broker::sweep_workflows`](spool_broker::Broker::sweep_workflows),
    /// safe on every worker at once): dispatches outboxes a settler left
    /// behind and fails workflows past their deadline. `None` runs none.
    /// Default: every 10 s.
    pub workflow_sweep_interval: Option<Duration>,
}

/// The default [`WorkerConfig::max_result_bytes`]: 16 MiB, as
/// [`spool_broker::DEFAULT_MAX_ENVELOPE_BYTES`], so a result may be passed
/// on as the next task's argument.
pub const DEFAULT_MAX_RESULT_BYTES: usize = spool_broker::DEFAULT_MAX_ENVELOPE_BYTES;

impl Default for WorkerConfig {
    fn default() -> Self {
        let concurrency = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            queues: vec![QueueName::DEFAULT],
            concurrency,
            prefetch: concurrency * 4,
            poll_interval: Duration::from_secs(1),
            time_limit: None,
            soft_time_limit: None,
            visibility_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            max_deliveries: 5,
            cancel_grace: Duration::from_secs(10),
            consumer_name: None,
            max_tasks: None,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            workflow_sweep_interval: Some(Duration::from_secs(10)),
        }
    }
}

impl WorkerConfig {
    /// Checks that the settings can work together; [`Worker::run`] does the
    /// same before it fetches anything.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first setting that cannot work: no
    /// queue, zero concurrency or prefetch, a heartbeat that does not fit
    /// twice in the visibility timeout...
    ///
    /// [`Worker::run`]: crate::Worker::run
    /// [`Error::Config`]: crate::Error::Config
    pub fn validate(&self) -> crate::Result<()> {
        let problem = if self.queues.is_empty() {
            "at least one queue is needed"
        } else if self.concurrency == 0 {
            "concurrency must be at least 1"
        } else if self.prefetch == 0 {
            "prefetch must be at least 1"
        } else if self.poll_interval.is_zero() {
            "poll_interval must be positive"
        } else if self.heartbeat_interval.is_zero()
            || self.heartbeat_interval * 2 > self.visibility_timeout
        {
            "heartbeat_interval must be positive and at most half of visibility_timeout"
        } else if self.max_deliveries == 0 {
            "max_deliveries must be at least 1"
        } else if self.max_result_bytes == 0 {
            "max_result_bytes must be at least 1"
        } else if self.workflow_sweep_interval.is_some_and(|i| i.is_zero()) {
            "workflow_sweep_interval must be positive"
        } else {
            return Ok(());
        };
        Err(crate::Error::Config(problem.to_owned()))
    }

    pub(crate) fn consumer_name(&self) -> String {
        self.consumer_name.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-{:04x}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id(),
                // Tells apart two workers that reuse a pid on one host.
                fastrand::u16(..)
            )
        })
    }
}

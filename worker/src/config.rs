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
    /// included); a fetch never claims more. Default: 4 × `concurrency`.
    pub prefetch: usize,
    /// The longest one fetch blocks on an empty queue (a new task ends the
    /// wait at once). A warm shutdown waits for fetches in flight, so this
    /// also bounds how long it takes to stop fetching. Default: 1 s.
    pub poll_interval: Duration,
    /// A hard limit on each run, for tasks without their own. Default:
    /// `None`.
    pub time_limit: Option<Duration>,
    /// The consumer name in the broker. Default: `None`, which means
    /// `<host>-<pid>-<random>`.
    pub consumer_name: Option<String>,
    /// Stop fetching after this many tasks, finish them and return (the
    /// building block of max-tasks-per-child recycling). Default: `None`.
    pub max_tasks: Option<u64>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let concurrency = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            queues: vec![QueueName::DEFAULT],
            concurrency,
            prefetch: concurrency * 4,
            poll_interval: Duration::from_secs(1),
            time_limit: None,
            consumer_name: None,
            max_tasks: None,
        }
    }
}

impl WorkerConfig {
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let problem = if self.queues.is_empty() {
            "at least one queue is needed"
        } else if self.concurrency == 0 {
            "concurrency must be at least 1"
        } else if self.prefetch == 0 {
            "prefetch must be at least 1"
        } else if self.poll_interval.is_zero() {
            "poll_interval must be positive"
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

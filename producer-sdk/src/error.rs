//! The SDK's error type.

use std::time::Duration;

use spool_broker::{JobStatus, TaskId};

/// Everything that can go wrong when enqueueing, or when waiting on a task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker or the job store failed or refused the request, or a task
    /// or its output could not be encoded or decoded.
    #[error(transparent)]
    Broker(#[from] spool_broker::Error),

    /// A task whose payload cannot work (a video task with an odd frame
    /// size, a CRF out of range, thousands of threads): refused before it
    /// is enqueued, and by the worker before it runs.
    #[error("invalid {task} task: {reason}")]
    InvalidTask {
        /// The task's wire name (`video.transcode`).
        task: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// An enqueue option that cannot be honoured.
    #[error("invalid enqueue option: {0}")]
    InvalidOption(String),

    /// The tasks were enqueued, but recording them in the job store failed.
    ///
    /// They will run all the same, and a worker with a store creates their
    /// records when it starts them: do not enqueue them again.
    #[error(
        "enqueued {} task(s), but could not record them in the job store: {source}",
        .ids.len()
    )]
    NotRecorded {
        /// The tasks enqueued but not recorded.
        ids: Vec<TaskId>,
        /// The job store's error.
        #[source]
        source: spool_broker::Error,
    },

    /// Task handles read the job store, and this client has none: build it
    /// with `Client::with_store` or `Client::connect_with_store`.
    #[error(
        "this client has no job store: configure one with Client::with_store \
         or Client::connect_with_store to follow tasks"
    )]
    NoStore,

    /// A workflow node settled without success: it failed, was
    /// dead-lettered, revoked, expired, or cancelled by a parent's failure
    /// or the workflow's.
    #[error("workflow node {node} {state}{}", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    NodeNotSucceeded {
        /// The node.
        node: spool_broker::workflow::NodeName,
        /// How it settled.
        state: spool_broker::workflow::NodeState,
        /// Its error, if one was recorded.
        error: Option<String>,
    },

    /// The task did not finish within the time given to wait for it.
    #[error("the task did not finish within {0:?}")]
    Timeout(Duration),

    /// The task ended without its output: it failed for good, was
    /// dead-lettered, revoked, or expired.
    #[error(
        "the task ended {status}{}",
        .error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    TaskFailed {
        /// How it ended (a final status other than `succeeded`).
        status: JobStatus,
        /// What went wrong, as recorded.
        error: Option<String>,
    },

    /// The job store has no record of the task (never recorded, or pruned).
    #[error("the job store has no record of task {0}")]
    NotFound(TaskId),
}

/// The result type of `spool-sdk`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

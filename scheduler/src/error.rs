//! The library's error type.

use spool_broker::workflow::WorkflowId;
use spool_broker::{QueueName, TaskId};

/// Everything that can go wrong in a `spoolctl` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker failed, or refused a value (a queue name, the
    /// configuration).
    #[error(transparent)]
    Broker(#[from] spool_broker::Error),

    /// The task arguments given to `call` are not valid JSON.
    #[error("--args is not valid JSON: {0}")]
    InvalidArgs(#[source] serde_json::Error),

    /// A value that the command cannot use (an empty task name, a zero
    /// count).
    #[error("{0}")]
    InvalidInput(String),

    /// A destructive command was not confirmed.
    #[error(
        "refusing to purge queue {queue:?} without --yes: it deletes every task of the queue \
         (ready, running, delayed and dead)"
    )]
    NotConfirmed {
        /// The queue that would have been purged.
        queue: QueueName,
    },

    /// Dead letters were not purged because the purge was not confirmed.
    #[error(
        "refusing to purge the dead letters of queue {queue:?} without --yes: they are deleted \
         for good"
    )]
    DeadPurgeNotConfirmed {
        /// The queue whose dead letters would have been purged.
        queue: QueueName,
    },

    /// The command reads the job store and none is configured.
    #[error("this command needs the job store: pass --store-url or set SPOOL_STORE_URL")]
    NoStore,

    /// Some of the dead-letter entry ids given to `dead retry` named no dead
    /// letter of the queue; the others were requeued.
    #[error(
        "{missing} of the entry ids given {verb} not a dead letter of queue {queue} (requeued or \
         purged already?); {requeued} requeued",
        verb = if *missing == 1 { "is" } else { "are" }
    )]
    DeadLettersNotFound {
        /// The queue.
        queue: QueueName,
        /// How many of the ids were requeued.
        requeued: u64,
        /// How many were not found.
        missing: u64,
    },

    /// `dead show` found no dead letter with this entry id or task id.
    #[error(
        "no dead letter {id:?} in queue {queue} (requeued or purged already?); `spoolctl dead \
         list {queue}` shows its entry ids and task ids"
    )]
    DeadLetterNotFound {
        /// The queue searched.
        queue: QueueName,
        /// The entry id or task id asked for.
        id: String,
    },

    /// `revoke` found no task with this id (nothing was revoked).
    #[error(
        "no task {id} in the queues {searched} (ready, running, delayed or dead){}; nothing \
         revoked (pass --force to revoke it ahead of its enqueue)",
        if *store { " nor in the job store" } else { "" }
    )]
    TaskNotFound {
        /// The id.
        id: TaskId,
        /// The queues searched, comma-separated.
        searched: String,
        /// Whether the job store was searched too.
        store: bool,
    },

    /// Tasks were enqueued, and will run, but the job store could not
    /// record them: `task show` will not know them until a worker starts
    /// them.
    #[error("enqueued {} task(s), but could not record them in the job store: {source}", ids.len())]
    NotRecorded {
        /// The tasks enqueued and not recorded.
        ids: Vec<TaskId>,
        /// Why the store refused.
        #[source]
        source: spool_broker::Error,
    },

    /// The job store has no record of this task.
    #[error("no task {0} in the job store")]
    UnknownTask(TaskId),

    /// Neither Redis nor the job store knows the workflow.
    #[error("no workflow {0} in Redis or the job store")]
    UnknownWorkflow(WorkflowId),

    /// The output could not be written (a closed pipe, say).
    #[error("cannot write the output: {0}")]
    Write(#[from] std::io::Error),

    /// `call` of a task name that no live worker serves.
    #[error(
        "no live worker serves task {name:?}; the live workers serve: {registered} (pass --force \
         to enqueue it all the same)"
    )]
    UnregisteredTask {
        /// The name given.
        name: String,
        /// The names the live workers serve, comma-separated.
        registered: String,
    },

    /// `call` while no live worker is in the registry.
    #[error(
        "no live worker is registered, so none would run task {name:?} (pass --force to enqueue \
         it all the same, for workers to come)"
    )]
    NoLiveWorker {
        /// The name given.
        name: String,
    },

    /// A report could not be encoded as JSON.
    #[error("cannot encode the output as JSON: {0}")]
    Output(#[source] serde_json::Error),
}

/// The result type of `spool-scheduler`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

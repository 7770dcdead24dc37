//! The library's error type.

use spool_broker::QueueName;

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

    /// A report could not be encoded as JSON.
    #[error("cannot encode the output as JSON: {0}")]
    Output(#[source] serde_json::Error),
}

/// The result type of `spool-scheduler`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

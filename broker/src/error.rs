//! The broker's error type.

use std::error::Error as StdError;

/// A boxed error from a backend library; kept opaque so that Spool's public
/// API never exposes another crate's types.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in `spool-broker`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A queue name that Spool cannot use as (part of) a Redis key.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A configuration value that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A task or its output could not be serialized.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded (an envelope, a payload, an output).
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: BoxError,
    },

    /// Bytes that are not a valid envelope, payload or output.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The deserializer's error.
        #[source]
        source: BoxError,
    },

    /// The broker could not be reached or the connection broke.
    #[error("broker connection failed: {0}")]
    Connection(#[source] BoxError),

    /// The broker answered with an error or an unexpected reply.
    #[error("broker command failed: {0}")]
    Backend(#[source] BoxError),

    /// The job store could not be reached, or refused for now (busy,
    /// deadlocked): retrying the batch later may succeed. The message names
    /// the store (its URL redacted) where it is known.
    #[error("{0}")]
    StoreUnavailable(#[source] BoxError),

    /// The job store failed in a way retrying does not fix.
    #[error("{0}")]
    Store(#[source] BoxError),

    /// The broker has been closed.
    #[error("broker is closed")]
    Closed,

    /// An envelope or a task's result larger than the configured limit
    /// ([`RedisConfig::max_envelope_bytes`](crate::RedisConfig::max_envelope_bytes),
    /// the worker's `max_result_bytes`): refused before it is sent or
    /// stored.
    #[error(
        "{what} is {size} bytes, over the limit of {limit} bytes: pass large data by reference \
         (a path or URL), or raise the limit"
    )]
    Oversized {
        /// What was too large, such as `the envelope of task <id>
        /// (video.transcode)`.
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// An envelope that must not be enqueued as it is (no attempt allowed).
    #[error("{what} cannot be enqueued: {reason}")]
    InvalidEnvelope {
        /// The task, such as `task <id> (video.transcode)`.
        what: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The server at the URL answered, but not in the Redis protocol (an
    /// HTTP server on the Redis port, say).
    #[error("{url} does not speak the Redis protocol (is another service on that port?): {detail}")]
    NotRedis {
        /// The URL, credentials redacted.
        url: String,
        /// The parser's complaint.
        detail: String,
    },

    /// The Redis user lacks a permission Spool needs (`NOPERM`): retrying
    /// cannot help, so a worker stops with it.
    #[error(
        "the Redis user may not run {command}: {detail} (grant it in the user's ACL; see \
         ops/redis/users.acl)"
    )]
    Permission {
        /// The command (and key or channel, when Redis names one) refused.
        command: String,
        /// Redis' words.
        detail: String,
    },

    /// A workflow (or the children a node adds to one) that cannot be
    /// accepted: a cycle, an unknown parent, a duplicate node name, an
    /// empty graph, too many nodes. Nothing of it was written.
    #[error("invalid workflow: {0}")]
    InvalidWorkflow(String),

    /// A workflow with this id exists already: nothing was written.
    #[error("workflow {0} exists already")]
    WorkflowExists(crate::workflow::WorkflowId),

    /// No workflow with this id is live in the broker (never submitted,
    /// or finished longer ago than its retention).
    #[error("no workflow {0} in the broker")]
    UnknownWorkflow(crate::workflow::WorkflowId),

    /// The workflow cannot do this in its current state (retrying one that
    /// is still running, say).
    #[error("workflow {id}: {reason}")]
    WorkflowConflict {
        /// The workflow.
        id: crate::workflow::WorkflowId,
        /// Why not.
        reason: String,
    },

    /// Part of a batch was enqueued and the rest refused (Redis out of
    /// memory, say): which tasks made it, and why the others did not.
    #[error(
        "enqueued {} of {} tasks; the other {} were refused: {source}",
        enqueued.len(),
        enqueued.len() + refused,
        refused
    )]
    PartialEnqueue {
        /// The ids of the tasks enqueued, in input order.
        enqueued: Vec<crate::envelope::TaskId>,
        /// How many were not.
        refused: usize,
        /// The first refusal; the others are alike as a rule.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Whether the operation may succeed if retried later (a dropped
    /// connection, a restarting server), as opposed to a bug or bad input.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::StoreUnavailable(_))
    }

    /// Whether retrying cannot help until an operator changes something
    /// (a permission, the service on the Redis port): a worker stops
    /// rather than retry forever.
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Permission { .. } | Self::NotRedis { .. })
    }

    /// Whether Redis did not answer in time: no connection within
    /// `connect_timeout`, or no reply within `response_timeout`. Lets a
    /// tool say which of its timeouts expired.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Connection(e) | Self::Backend(e) => e
                .downcast_ref::<redis::RedisError>()
                .is_some_and(redis::RedisError::is_timeout),
            Self::PartialEnqueue { source, .. } => source.is_timeout(),
            _ => false,
        }
    }

    pub(crate) fn encode(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Encode {
            what,
            source: source.into(),
        }
    }

    pub(crate) fn decode(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Decode {
            what,
            source: source.into(),
        }
    }
}

/// The result type of `spool-broker`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

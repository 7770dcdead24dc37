//! The error type of the `spool-worker` binary's internals.

/// Everything that stops `spool-worker` from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Settings that cannot work: a bad flag value, an unreadable file, an
    /// address in use.
    #[error("invalid worker configuration: {0}")]
    Config(String),

    /// The broker failed in a way the worker cannot ride out.
    #[error(transparent)]
    Broker(#[from] spool_broker::Error),

    /// The runtime refused to start.
    #[error(transparent)]
    Worker(#[from] spool_worker::Error),
}

/// The result type of the `spool-worker` binary's internals.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The worker's error type.

/// Everything that stops a worker from running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration that cannot work.
    #[error("invalid worker configuration: {0}")]
    Config(String),

    /// The broker failed in a way the worker cannot ride out.
    #[error(transparent)]
    Broker(#[from] spool_broker::Error),
}

/// The result type of `spool-worker`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

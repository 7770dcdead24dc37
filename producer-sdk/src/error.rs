//! The SDK's error type.

/// Everything that can go wrong when enqueueing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker failed or refused the request.
    #[error(transparent)]
    Broker(#[from] spool_broker::Error),

    /// An enqueue option that cannot be honoured.
    #[error("invalid enqueue option: {0}")]
    InvalidOption(String),
}

/// The result type of `spool-sdk`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

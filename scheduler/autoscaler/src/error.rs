//! The autoscaler's error type.

/// Everything that can go wrong in `spool-autoscaler`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker failed, or refused a value.
    #[error(transparent)]
    Broker(#[from] spool_broker::Error),

    /// The configuration, a load profile or a setting is not usable; the
    /// message names the file or key and what is wrong.
    #[error("{0}")]
    Config(String),

    /// A file could not be read or written, a worker process started or
    /// signalled, or the metrics served.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },

    /// The Kubernetes API could not be reached, or refused a request.
    #[error("Kubernetes API: {0}")]
    Kubernetes(String),

    /// The simulation's plot could not be drawn.
    #[error("cannot draw the plot: {0}")]
    Plot(String),
}

/// The result type of `spool-autoscaler`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

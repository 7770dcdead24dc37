//! The error of the shared command-line parts.

use std::time::Duration;

/// What can go wrong in `spool-cli-common`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that cannot work, or a settings file that does not read;
    /// the message names the flag or the file and the key.
    #[error("{0}")]
    Config(String),

    /// Redis accepted no connection in time.
    #[error(
        "Redis accepted no connection within the {} connect timeout (--redis-connect-timeout)",
        humantime::format_duration(*.0)
    )]
    ConnectTimeout(Duration),

    /// Redis did not answer a command in time.
    #[error(
        "Redis did not answer within the {} command timeout (--redis-command-timeout)",
        humantime::format_duration(*.0)
    )]
    CommandTimeout(Duration),

    /// The broker's error.
    #[error(transparent)]
    Broker(#[from] spool_broker::Error),
}

/// The result type of `spool-cli-common`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

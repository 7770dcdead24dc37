//! How database errors become Spool's: transient ones (retry the batch)
//! apart from the rest.

use std::fmt;

use crate::error::{BoxError, Error};

/// A database error with what the store was doing.
#[derive(Debug)]
pub(super) struct StoreError {
    pub(super) what: &'static str,
    pub(super) source: sqlx::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job store could not {}: {}", self.what, self.source)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Maps a sqlx error into Spool's: whatever may pass if the batch is
/// retried (an unreachable server, a busy SQLite file, a PostgreSQL
/// deadlock or serialization failure) is a transient
/// [`Error::Connection`].
pub(super) fn db_error(what: &'static str, source: sqlx::Error) -> Error {
    let transient = match &source {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::PoolClosed => return Error::Closed,
        sqlx::Error::Configuration(e) => {
            return Error::Config(format!("job store: {e}"));
        }
        sqlx::Error::Database(db) => {
            #[cfg(feature = "sqlite")]
            let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
            #[cfg(not(feature = "sqlite"))]
            let sqlite = false;
            db.code()
                .is_some_and(|code| is_transient_code(&code, sqlite))
        }
        _ => false,
    };
    let error: BoxError = Box::new(StoreError { what, source });
    if transient {
        Error::Connection(error)
    } else {
        Error::Backend(error)
    }
}

/// Whether `error` is a database error with this code.
#[cfg(feature = "postgres")]
pub(super) fn has_code(error: &sqlx::Error, code: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}

/// SQLite's extended result codes are numbers (`SQLITE_BUSY` = 5 and
/// `SQLITE_LOCKED` = 6 in the low byte); PostgreSQL's are SQLSTATEs.
fn is_transient_code(code: &str, sqlite: bool) -> bool {
    if sqlite {
        return code
            .parse::<i32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6));
    }
    // serialization_failure, deadlock_detected, connection exceptions,
    // admin/crash shutdown, cannot_connect_now, too_many_connections.
    matches!(
        code,
        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
    ) || code.starts_with("08")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_recognised() {
        assert!(is_transient_code("5", true));
        assert!(is_transient_code("517", true)); // SQLITE_BUSY_SNAPSHOT
        assert!(!is_transient_code("19", true)); // SQLITE_CONSTRAINT
        assert!(is_transient_code("40P01", false));
        assert!(is_transient_code("08006", false));
        assert!(!is_transient_code("23505", false));
    }
}

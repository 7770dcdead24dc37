//! `spoolctl store migrate`: the one way a job store is created or its
//! schema upgraded. Every other command (and every worker) only opens a
//! store created so, so a mistyped URL is an error, not a new store.

use serde::Serialize;
use spool_broker::RedisConfig;
use spool_broker::store::JobStore;

use super::Report;
use crate::error::Result;

/// A store created or brought up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreMigrateReport {
    /// The store's URL, without its password.
    pub store: String,
    /// Its backend: `sqlite` or `postgres`.
    pub backend: String,
}

impl Report for StoreMigrateReport {
    fn to_text(&self) -> String {
        format!(
            "job store {} ({}) is created and its schema up to date\n",
            self.store, self.backend
        )
    }
}

/// Creates the store at `url` if it does not exist (a SQLite file in an
/// existing directory, or a PostgreSQL database) and applies the
/// migrations it lacks; safe to run again.
///
/// # Errors
///
/// [`Error::Broker`](crate::Error::Broker) when the store cannot be
/// reached, created or migrated.
pub async fn store_migrate(url: &str) -> Result<StoreMigrateReport> {
    let store = JobStore::create(url).await?;
    let backend = store.backend().as_str().to_owned();
    store.close().await;
    Ok(StoreMigrateReport {
        store: RedisConfig::redact(url),
        backend,
    })
}

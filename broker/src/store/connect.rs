//! Opening a store: which backend a URL selects, the pool settings, and
//! the migrations that ship with the crate.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::SqlSafeStr;
#[cfg(feature = "postgres")]
use sqlx::migrate::MigrateDatabase;
use sqlx::migrate::{Migration, MigrationType, Migrator};
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::Inner;
use super::db_error::db_error;
#[cfg(feature = "postgres")]
use super::db_error::has_code;
use crate::error::{Error, Result};

/// The table that tracks which of Spool's migrations a database has, kept
/// apart from sqlx's default so that Spool can share a database with an
/// application that runs its own sqlx migrations.
const MIGRATIONS_TABLE: &str = "spool_migrations";

/// Spool's migrations: version, description, SQLite and PostgreSQL SQL.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "jobs",
        include_str!("../../migrations/sqlite/0001_jobs.sql"),
        include_str!("../../migrations/postgres/0001_jobs.sql"),
    ),
    (
        2,
        "args",
        include_str!("../../migrations/sqlite/0002_args.sql"),
        include_str!("../../migrations/postgres/0002_args.sql"),
    ),
    (
        3,
        "workflows",
        include_str!("../../migrations/sqlite/0003_workflows.sql"),
        include_str!("../../migrations/postgres/0003_workflows.sql"),
    ),
    (
        4,
        "search indexes",
        include_str!("../../migrations/sqlite/0004_search_indexes.sql"),
        include_str!("../../migrations/postgres/0004_search_indexes.sql"),
    ),
];

/// Which database a [`JobStore`](super::JobStore) writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreBackend {
    /// A SQLite file (or memory).
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl StoreBackend {
    /// The backend's lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// The backend a store URL selects: `sqlite:…` or `postgres://…`
    /// (also `postgresql://…`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for any other scheme.
    pub fn of_url(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(Error::Config(format!(
                "job store URL {:?} must start with sqlite: or postgres://",
                redact(url)
            ))),
        }
    }
}

impl fmt::Display for StoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How [`JobStore::connect_with`](super::JobStore::connect_with) sets up its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most connections the pool opens (one for an in-memory SQLite
    /// database, which lives in its only connection).
    pub max_connections: u32,
    /// How long a SQLite writer waits for another process's write
    /// transaction before it fails with a transient error.
    pub busy_timeout: Duration,
    /// How long to wait for a connection, including the first one.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 4,
            busy_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether opening a store may create it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Open {
    /// Only an existing database, with Spool's schema.
    Existing,
    /// Create the database (SQLite: the file, in an existing directory) if
    /// it is missing; the caller then applies the migrations.
    Create,
}

/// Where a SQLite URL's file is, for messages; `None` in memory.
#[cfg(feature = "sqlite")]
fn sqlite_path(connect: &SqliteConnectOptions, in_memory: bool) -> Option<&std::path::Path> {
    (!in_memory).then(|| connect.get_filename())
}

#[cfg(feature = "sqlite")]
pub(super) async fn connect_sqlite(url: &str, options: &StoreOptions, open: Open) -> Result<Inner> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("job store URL {:?}: {e}", redact(url))))?
        // A private in-memory database never exists beforehand.
        .create_if_missing(in_memory || open == Open::Create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(options.busy_timeout)
        // 32 MiB of page cache: the five indexes stay in memory.
        .pragma("cache_size", "-32768");
    // SQLite's own message ("unable to open database file") names nothing:
    // say which file, and why, before it tries. Directories are never
    // created: a typo in a path must not leave new directories behind.
    if let Some(path) = sqlite_path(&connect, in_memory) {
        let parent = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty());
        if let Some(parent) = parent.filter(|parent| !parent.is_dir()) {
            return Err(Error::Config(format!(
                "job store {}: the directory {} does not exist (Spool does not create it)",
                redact(url),
                parent.display()
            )));
        }
        if open == Open::Existing && !path.exists() {
            return Err(Error::Config(format!(
                "job store {}: the SQLite file {} does not exist; create the store with \
                 `spoolctl store migrate --store-url URL`",
                redact(url),
                path.display()
            )));
        }
    }
    let pool = if in_memory {
        // The database lives as long as its connection: keep exactly one.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(options.max_connections.max(1))
    }
    .acquire_timeout(options.acquire_timeout);
    // Processes that open a new file at once race to switch it to WAL,
    // which takes an exclusive lock that SQLite's busy handler does not
    // wait for (it could deadlock): the losers see "database is locked"
    // and try again, within the busy timeout.
    let deadline = tokio::time::Instant::now() + options.busy_timeout;
    let what = "open the SQLite database";
    let pool = loop {
        match pool.clone().connect_with(connect.clone()).await {
            Ok(pool) => break pool,
            Err(e) => {
                let error = db_error(what, e);
                if !error.is_transient() || tokio::time::Instant::now() >= deadline {
                    return Err(match sqlite_path(&connect, in_memory) {
                        Some(path) => Error::Config(format!(
                            "job store {}: cannot open the SQLite file {}: {error}",
                            redact(url),
                            path.display()
                        )),
                        None => error,
                    });
                }
                tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
            }
        }
    };
    Ok(Inner::Sqlite {
        pool,
        write_lock: tokio::sync::Mutex::new(()),
    })
}

#[cfg(feature = "postgres")]
pub(super) async fn connect_postgres(
    url: &str,
    options: &StoreOptions,
    open: Open,
) -> Result<Inner> {
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("job store URL {:?}: {e}", redact(url))))?;
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout);
    let pool = match pool.clone().connect_with(connect.clone()).await {
        // invalid_catalog_name: the database does not exist.
        Err(e) if has_code(&e, "3D000") && open == Open::Existing => {
            return Err(Error::Config(format!(
                "job store {}: the PostgreSQL database {:?} does not exist; create the store \
                 with `spoolctl store migrate --store-url URL`",
                redact(url),
                connect.get_database().unwrap_or_default()
            )));
        }
        // Creating takes the CREATEDB privilege; racing creators are fine.
        Err(e) if has_code(&e, "3D000") => {
            match <sqlx::Postgres as MigrateDatabase>::create_database(url).await {
                // duplicate_database, or the unique index of pg_database
                // when another creator commits at the same moment.
                Err(e) if !has_code(&e, "42P04") && !has_code(&e, "23505") => {
                    return Err(db_error("create the PostgreSQL database", e));
                }
                _ => pool.connect_with(connect).await,
            }
        }
        connected => connected,
    }
    .map_err(|e| db_error("connect to PostgreSQL", e))?;
    Ok(Inner::Postgres { pool })
}

/// The migrator of a backend, built once from the embedded SQL.
pub(super) fn migrator(backend: StoreBackend) -> &'static Migrator {
    static SQLITE: OnceLock<Migrator> = OnceLock::new();
    static POSTGRES: OnceLock<Migrator> = OnceLock::new();
    let cell = match backend {
        StoreBackend::Sqlite => &SQLITE,
        StoreBackend::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| {
        let migrations = MIGRATIONS
            .iter()
            .map(|&(version, description, sqlite, postgres)| {
                let sql = match backend {
                    StoreBackend::Sqlite => sqlite,
                    StoreBackend::Postgres => postgres,
                };
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let mut migrator = Migrator::with_migrations(migrations);
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator
    })
}

/// A URL without its password, for error messages.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_their_backend() {
        assert_eq!(
            StoreBackend::of_url("sqlite://spool.db").unwrap(),
            StoreBackend::Sqlite
        );
        assert_eq!(
            StoreBackend::of_url("sqlite::memory:").unwrap(),
            StoreBackend::Sqlite
        );
        assert_eq!(
            StoreBackend::of_url("postgresql://u@h/db").unwrap(),
            StoreBackend::Postgres
        );
        let err = StoreBackend::of_url("mysql://u:secret@h/db").unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}

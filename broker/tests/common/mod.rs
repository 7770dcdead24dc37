//! Harness for the job store suites: each test gets a fresh database, a
//! SQLite file in its own temporary directory or a PostgreSQL database of
//! its own, dropped afterwards even when the test fails.
//!
//! PostgreSQL is `SPOOL_TEST_POSTGRES_URL` (an admin connection that may
//! create databases), by default `postgres://postgres@127.0.0.1:5432/postgres`.
//! When it cannot be reached the PostgreSQL tests fail, unless
//! `SPOOL_SKIP_POSTGRES=1` is set, in which case they pass without running.
#![allow(clippy::unwrap_used, dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use futures_util::FutureExt;
use spool_broker::store::JobStore;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL connection used to create and drop test databases.
pub fn postgres_admin_url() -> String {
    std::env::var("SPOOL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn skip_postgres() -> bool {
    std::env::var("SPOOL_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

/// A fresh database for one test.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Dir(PathBuf),
    Database { admin_url: String, name: String },
}

impl TestDb {
    /// Creates the database, or returns `None` when PostgreSQL is skipped.
    pub async fn create(backend: Backend) -> Option<Self> {
        let tag = format!("{}_{:08x}", std::process::id(), fastrand::u32(..));
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("spool-store-test-{tag}"));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite://{}", dir.join("spool.db").display());
                Some(Self {
                    backend,
                    url,
                    cleanup: Cleanup::Dir(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let mut admin = match PgConnection::connect(&admin_url).await {
                    Ok(admin) => admin,
                    Err(e) if skip_postgres() => {
                        eprintln!("skipping: PostgreSQL unreachable at {admin_url}: {e}");
                        return None;
                    }
                    Err(e) => panic!(
                        "PostgreSQL is not reachable at {admin_url}: {e}\n\
                         The job store suite runs against PostgreSQL too. Start it \
                         (SPOOL_WITH_POSTGRES=1 ops/scripts/setup.sh), point \
                         SPOOL_TEST_POSTGRES_URL at one, or set SPOOL_SKIP_POSTGRES=1 \
                         to skip the PostgreSQL half."
                    ),
                };
                let name = format!("spool_test_{tag}");
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let _ = admin.close().await;
                Some(Self {
                    backend,
                    url: with_database(&admin_url, &name),
                    cleanup: Cleanup::Database { admin_url, name },
                })
            }
        }
    }

    /// Deletes the database.
    pub async fn destroy(self) {
        match self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Database { admin_url, name } => {
                // Also the databases a test derived from its own name.
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let names: Vec<String> = sqlx::query_scalar(
                        "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
                    )
                    .bind(&name)
                    .fetch_all(&mut admin)
                    .await
                    .unwrap_or_default();
                    for name in names {
                        let _ = sqlx::query(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                    let _ = admin.close().await;
                }
            }
        }
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Runs `test` with a store on a fresh database of `backend` and the
/// database's URL, then drops the database, whether the test passed or not.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(JobStore, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let outcome = AssertUnwindSafe(async {
        let store = JobStore::create(&db.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", db.url));
        test(store.clone(), db.url.clone()).await;
        store.close().await;
    })
    .catch_unwind()
    .await;
    db.destroy().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Generates `sqlite::$test` and `postgres::$test` for each async
/// `$test(store, url)` of the calling file.
#[macro_export]
macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    $crate::common::run($crate::common::Backend::Sqlite, super::$test).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    $crate::common::run($crate::common::Backend::Postgres, super::$test).await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/p?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}

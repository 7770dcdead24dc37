//! Every task recorded from enqueue, by every producer path (the SDK,
//! `spoolctl call`, `spool-beat`, `spoolctl dead retry`), with its
//! arguments, and secret fields redacted everywhere; and store commands
//! that never create a store. Real Redis, a real SQLite file (and
//! PostgreSQL for the missing-database case), the real binaries; no worker
//! runs, so every record shown is the producer's.
//!
//! Build the binaries first: `cargo build -p spool-scheduler --bins`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spool_broker::store::{Finished, JobQuery, JobStatus, JobStore};
use spool_broker::{Broker, DeadLetter, DeadReason, QueueName, Task, TaskId, Timestamp};
use spool_tests::{TestRedis, bins, redis_url, wait_until};

/// The secret every producer passes; it must appear nowhere.
const SECRET: &str = "s3cr3t-t0ken-9f2c";

/// A task with a secret field, as an application declares it.
#[derive(Serialize, Deserialize)]
struct Fetch {
    url: String,
    token: String,
}

impl Task for Fetch {
    const NAME: &'static str = "records.fetch";
    const SECRET_FIELDS: &'static [&'static str] = &["token"];
    type Output = ();
}

fn fetch() -> Fetch {
    Fetch {
        url: "https://cdn.example/in.mp4".to_owned(),
        token: SECRET.to_owned(),
    }
}

/// What every record's arguments read.
fn redacted() -> Value {
    json!({"url": "https://cdn.example/in.mp4", "token": "***"})
}

/// A migrated SQLite store in a fresh directory.
async fn sqlite_store() -> (JobStore, String, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "spool-records-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("jobs.db").display());
    let store = JobStore::create(&url).await.unwrap();
    (store, url, dir)
}

fn spoolctl(redis: &TestRedis, store_url: &str, args: &[&str]) -> Output {
    Command::new(bins::spoolctl())
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(["--store-url", store_url])
        .args(args)
        .output()
        .unwrap()
}

/// Runs `spoolctl`, failing on a non-zero exit; returns stdout, which must
/// not hold the secret.
fn spoolctl_ok(redis: &TestRedis, store_url: &str, args: &[&str]) -> String {
    let out = spoolctl(redis, store_url, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "spoolctl {args:?}: {stderr}");
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "spoolctl {args:?} showed the secret: {stdout}"
    );
    stdout
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The ids `spoolctl tasks --status STATUS --json` lists.
fn listed(redis: &TestRedis, store_url: &str, status: &str) -> Vec<String> {
    let out = spoolctl_ok(
        redis,
        store_url,
        &["tasks", "--status", status, "--limit", "100", "--json"],
    );
    json_of(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Checks `task show ID` (JSON and text): the status, and the arguments
/// with the secret redacted.
fn assert_shown(redis: &TestRedis, store_url: &str, id: &str, status: &str) -> Value {
    let record = json_of(&spoolctl_ok(
        redis,
        store_url,
        &["task", "show", id, "--json"],
    ));
    assert_eq!(record["status"], status, "{record}");
    assert_eq!(record["args"], redacted(), "{record}");
    let text = spoolctl_ok(redis, store_url, &["task", "show", id]);
    assert!(text.contains(r#""token":"***""#), "{text}");
    record
}

/// The secret is in no file of the store (database, WAL, shared memory).
fn assert_not_stored(dir: &Path) {
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("jobs.db")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
}

#[tokio::test]
async fn every_producer_records_its_tasks_from_enqueue_with_secrets_redacted() {
    let redis = TestRedis::new().await;
    let (store, url, dir) = sqlite_store().await;
    let hour = Duration::from_secs(3600);

    // The SDK: a queued task and a delayed one.
    let client = redis.client().with_store(store.clone());
    let sdk_queued = client.enqueue(fetch()).await.unwrap().to_string();
    let sdk_delayed = client
        .enqueue(fetch())
        .countdown(hour)
        .await
        .unwrap()
        .to_string();

    // spoolctl call, with the secret field named on the command line.
    let args = serde_json::to_string(&fetch()).unwrap();
    let call = |extra: &[&str]| {
        let mut argv = vec!["call", Fetch::NAME, "--force", "--secret", "token"];
        argv.extend(["--args", &args]);
        argv.extend(extra);
        spoolctl_ok(&redis, &url, &argv).trim().to_owned()
    };
    let call_queued = call(&[]);
    let call_delayed = call(&["--countdown", "1h"]);

    // spool-beat, with the secret field in its configuration.
    let config = dir.join("beat.toml");
    std::fs::write(
        &config,
        format!(
            "[[entry]]\nname = \"fetch\"\ntask = \"{}\"\nevery = \"1s\"\nqueue = \"beatq\"\n\
             secret = [\"token\"]\nargs = '{args}'\n",
            Fetch::NAME
        ),
    )
    .unwrap();
    let beat = Command::new(bins::workspace_bin("spool-beat", "spool-scheduler"))
        .args(["--config", config.to_str().unwrap()])
        .env("SPOOL_REDIS_URL", redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_STORE_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let beat_queue = QueueName::new("beatq").unwrap();
    let in_beat_queue = JobQuery::new().queue(beat_queue.clone());
    wait_until(
        "the beat's first tick in the job store",
        Duration::from_secs(20),
        || {
            let (store, query) = (store.clone(), in_beat_queue.clone());
            async move { !store.query(&query).await.unwrap().records.is_empty() }
        },
    )
    .await;
    let beat_stderr = bins::stop_warm(beat);
    assert!(!beat_stderr.contains(SECRET), "{beat_stderr}");
    let beat_queued = store.query(&in_beat_queue).await.unwrap().records[0]
        .id
        .to_string();

    // A dead letter, sent back by `spoolctl dead retry`.
    let dead_queue = QueueName::new("deadq").unwrap();
    let dead_id = client
        .enqueue(fetch())
        .queue(dead_queue.clone())
        .await
        .unwrap();
    let batch = redis
        .broker
        .fetch(&dead_queue, "test", 1, Duration::ZERO)
        .await
        .unwrap();
    let delivery = &batch.deliveries[0];
    let letter = DeadLetter {
        reason: DeadReason::AttemptsExhausted,
        error: "gave up".to_owned(),
        attempts: 1,
    };
    redis
        .broker
        .dead_letter(&delivery.tag, &letter)
        .await
        .unwrap();
    // What the worker records as it dead-letters the task.
    store
        .record_outcomes(&[Finished::from_envelope(
            &delivery.envelope,
            JobStatus::Dead,
            Timestamp::now(),
        )])
        .await
        .unwrap();
    let dead = json_of(&spoolctl_ok(
        &redis,
        &url,
        &["dead", "list", "deadq", "--json"],
    ));
    assert_eq!(dead[0]["task_id"], dead_id.to_string());
    assert_eq!(dead[0]["args"], redacted(), "{dead}");
    let dead_text = spoolctl_ok(&redis, &url, &["dead", "list", "deadq"]);
    assert!(dead_text.contains(r#""token":"***""#), "{dead_text}");
    spoolctl_ok(&redis, &url, &["dead", "retry", "deadq"]);
    let dead_id = dead_id.to_string();

    // Every one of them, by id and by status, before any worker ran.
    let queued = [&sdk_queued, &call_queued, &beat_queued, &dead_id];
    let delayed = [&sdk_delayed, &call_delayed];
    for id in queued {
        assert_shown(&redis, &url, id, "queued");
    }
    for id in delayed {
        assert_shown(&redis, &url, id, "scheduled");
    }
    // The revived task counts the attempt it made.
    assert_eq!(
        assert_shown(&redis, &url, &dead_id, "queued")["attempts"],
        1
    );
    let listed_queued = listed(&redis, &url, "queued");
    for id in queued {
        assert!(listed_queued.contains(id), "{id} not in {listed_queued:?}");
    }
    let listed_scheduled = listed(&redis, &url, "scheduled");
    for id in delayed {
        assert!(
            listed_scheduled.contains(id),
            "{id} not in {listed_scheduled:?}"
        );
        assert!(!listed_queued.contains(id));
    }
    // They are in Redis too, waiting for a worker.
    for id in queued.iter().chain(&delayed) {
        let id: TaskId = id.parse().unwrap();
        let queues = [QueueName::DEFAULT, beat_queue.clone(), dead_queue.clone()];
        let mut found = false;
        for queue in &queues {
            found |= redis.broker.find_task(queue, id).await.unwrap().is_some();
        }
        assert!(found, "{id} is not queued");
    }

    store.close().await;
    assert_not_stored(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every command that opens the job store (the readers `tasks` and `task
/// show`, and `call` and `dead retry`, which record) refuses a SQLite file
/// or PostgreSQL database that does not exist, naming it, creates nothing,
/// and enqueues nothing.
#[tokio::test]
async fn store_commands_never_create_a_missing_store() {
    let redis = TestRedis::new().await;
    let dir = std::env::temp_dir().join(format!(
        "spool-records-missing-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("typo.db");
    let sqlite = format!("sqlite://{}", path.display());
    let name = format!(
        "spool_records_missing_{}_{:08x}",
        std::process::id(),
        fastrand::u32(..)
    );
    let admin = std::env::var("SPOOL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let postgres = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let skip_postgres = std::env::var("SPOOL_SKIP_POSTGRES").is_ok_and(|v| v == "1");
    let id = TaskId::new().to_string();
    let commands: [&[&str]; 4] = [
        &["tasks"],
        &["task", "show", &id],
        &["call", "spool.ping", "--force"],
        &["dead", "retry", "default"],
    ];
    for (url, named) in [
        (&sqlite, path.display().to_string()),
        (&postgres, name.clone()),
    ] {
        if skip_postgres && url == &postgres {
            continue;
        }
        for args in commands {
            let out = spoolctl(&redis, url, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&named),
                "{args:?} does not name {named}: {stderr}"
            );
        }
    }
    assert!(!path.exists(), "a command created {}", path.display());
    if !skip_postgres {
        use sqlx::migrate::MigrateDatabase;
        assert!(!sqlx::Postgres::database_exists(&postgres).await.unwrap());
    }
    assert_eq!(redis.stats(&QueueName::DEFAULT).await.backlog(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

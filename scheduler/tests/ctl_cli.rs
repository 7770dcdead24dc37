//! Runs the built `spoolctl` against the real Redis at `SPOOL_REDIS_URL`
//! (else the local one), under a key prefix no other run uses. The job
//! store commands read a temporary SQLite file that the tests seed through
//! the library, since no worker runs here.

use std::hash::{BuildHasher as _, RandomState};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use spool_broker::store::{Finished, JobStatus, JobStore, NewJob, WorkerId};
use spool_broker::{
    Broker, DeadLetter, DeadReason, Envelope, QueueName, RedisBroker, RedisConfig, TaskId,
    Timestamp, WorkerRecord, encode_payload,
};

/// A `spoolctl` with its own key prefix; purges the routed queues when
/// dropped, so a failing test leaves nothing behind either.
struct Ctl {
    prefix: String,
}

impl Ctl {
    fn new() -> Self {
        let random = RandomState::new().hash_one(std::process::id());
        Self {
            prefix: format!("spoolctl-test-{random:016x}"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_spoolctl"))
            .args(["--key-prefix", &self.prefix])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("SPOOL_STORE_URL")
            .env_remove("SPOOL_REDIS_URL")
            .env("SPOOL_REDIS_URL", redis_url())
            .output()
            .expect("spoolctl runs")
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "spoolctl {args:?} failed ({}); is Redis running? {stderr}",
            out.status
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Runs a command that must fail and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "spoolctl {args:?} succeeded");
        assert!(out.stdout.is_empty(), "spoolctl {args:?} printed output");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A broker on the same Redis and prefix, to seed what no worker makes
    /// here.
    async fn broker(&self) -> RedisBroker {
        let config = RedisConfig {
            url: redis_url(),
            key_prefix: self.prefix.clone(),
            pool_size: 1,
            ..RedisConfig::default()
        };
        RedisBroker::connect(config)
            .await
            .expect("Redis is running")
    }
}

fn redis_url() -> String {
    std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A SQLite job store in a temporary file, deleted when dropped.
struct TempStore {
    path: PathBuf,
}

impl TempStore {
    fn new() -> Self {
        let random = RandomState::new().hash_one(std::process::id());
        let path = std::env::temp_dir().join(format!("spoolctl-test-{random:016x}.db"));
        Self { path }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        for queue in ["default", "analysis", "streaming", "gpu"] {
            let _ = self.run(&["purge", queue, "--yes"]);
        }
    }
}

fn queue<'a>(rows: &'a Value, name: &str) -> &'a Value {
    let rows = rows.as_array().expect("an array of queues");
    rows.iter()
        .find(|r| r["queue"] == name)
        .expect("the queue is listed")
}

#[test]
fn call_queues_and_purge_against_redis() {
    let ctl = Ctl::new();

    let ids = ctl.json(&["call", "spool.ping", "--count", "3", "--json"]);
    let ids = ids.as_array().expect("an array of ids");
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| id.as_str().is_some_and(|s| s.len() == 36)),
        "{ids:?}"
    );

    let rows = ctl.json(&["queues", "--json"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(4), "{rows}");
    let default = queue(&rows, "default");
    assert_eq!(
        (&default["ready"], &default["ready_normal"]),
        (&3.into(), &3.into()),
        "{rows}"
    );
    assert_eq!(queue(&rows, "gpu")["ready"], 0, "{rows}");

    let table = ctl.ok(&["queues"]);
    assert!(table.starts_with("QUEUE "), "{table}");
    assert!(table.lines().any(|l| l.starts_with("default ")), "{table}");

    let refused = ctl.run(&["purge", "default"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let purged = ctl.json(&["purge", "default", "--yes", "--json"]);
    assert_eq!(purged, serde_json::json!({"queue": "default", "purged": 3}));
    let rows = ctl.json(&["queues", "--json"]);
    assert_eq!(queue(&rows, "default")["ready"], 0, "{rows}");
}

#[test]
fn an_unknown_flag_prints_usage_and_fails() {
    let out = Ctl::new().run(&["queues", "--no-such-flag"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--no-such-flag") && stderr.contains("Usage:"),
        "{stderr}"
    );
}

#[test]
fn bad_args_json_fails_naming_the_problem() {
    let out = Ctl::new().run(&["call", "x", "--args", "{bad"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not valid JSON") && stderr.contains("line 1 column 2"),
        "{stderr}"
    );
}

/// Seeds a store with a queued task created an hour ago and a succeeded
/// one created a minute ago; returns them oldest first.
async fn seed_store(url: &str) -> (Envelope, Envelope) {
    let store = JobStore::connect(url).await.expect("the store opens");
    let now = Timestamp::now().as_millis();
    let mut queued = Envelope::new("video.probe", QueueName::GPU, vec![]);
    queued.created_at = Timestamp::from_millis(now - 3_600_000);
    store
        .record_enqueued(&[NewJob::from_envelope(&queued)])
        .await
        .expect("recorded");
    let mut done = Envelope::new("video.transcode", QueueName::DEFAULT, vec![]);
    done.created_at = Timestamp::from_millis(now - 60_000);
    done.attempt = 2;
    let mut finished = Finished::from_envelope(&done, JobStatus::Succeeded, Timestamp::now());
    finished.result = Some(encode_payload(&json!({"height": 1080})).expect("encodes"));
    finished.worker = Some(WorkerId::new("gpu-1", 42));
    store.record_outcomes(&[finished]).await.expect("recorded");
    store.close().await;
    (queued, done)
}

#[test]
fn tasks_and_task_show_read_the_job_store() {
    let ctl = Ctl::new();
    let store = TempStore::new();
    let url = store.url();
    let (queued, done) = runtime().block_on(seed_store(&url));
    let with_store = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        all.extend(["--store-url".to_owned(), url.clone()]);
        all
    };
    let run = |args: &[&str]| {
        let args = with_store(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl.ok(&args)
    };

    let rows: Value = serde_json::from_str(&run(&["tasks", "--json"])).expect("JSON");
    let rows = rows.as_array().expect("an array of records");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["id"], done.id.to_string(), "newest first");
    assert_eq!(rows[1]["id"], queued.id.to_string());
    assert_eq!(rows[1]["status"], "queued");

    let table = run(&["tasks"]);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with(&done.id.to_string()))
    );
    assert!(
        table.contains("video.transcode") && table.contains("succeeded"),
        "{table}"
    );

    let failed: Value =
        serde_json::from_str(&run(&["tasks", "--status", "failed", "--json"])).expect("JSON");
    assert_eq!(failed, json!([]));
    let recent: Value = serde_json::from_str(&run(&[
        "tasks", "--since", "10m", "--queue", "default", "--json",
    ]))
    .expect("JSON");
    assert_eq!(recent.as_array().map(Vec::len), Some(1), "{recent}");

    let id = done.id.to_string();
    let shown: Value = serde_json::from_str(&run(&["task", "show", &id, "--json"])).expect("JSON");
    assert_eq!(
        (
            &shown["id"],
            &shown["name"],
            &shown["queue"],
            &shown["status"]
        ),
        (
            &json!(id),
            &json!("video.transcode"),
            &json!("default"),
            &json!("succeeded")
        )
    );
    assert_eq!(shown["attempts"], 2);
    assert_eq!(shown["worker"], json!({"host": "gpu-1", "pid": 42}));
    assert_eq!(shown["result"], json!({"height": 1080}));
    assert!(
        shown["progress"].is_null() && shown["error"].is_null(),
        "{shown}"
    );

    let text = run(&["task", "show", &id]);
    assert!(text.starts_with(&format!("id:       {id}\n")), "{text}");
    assert!(text.contains("status:   succeeded\n"), "{text}");
    assert!(text.contains("worker:   gpu-1:42\n"), "{text}");
    assert!(text.contains(r#"result:   {"height":1080}"#), "{text}");

    let unknown = TaskId::new().to_string();
    let args = with_store(&["task", "show", &unknown]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = ctl.fails(&args);
    assert!(
        stderr.contains(&format!("no task {unknown} in the job store")),
        "{stderr}"
    );
    let args = with_store(&["task", "show", "not-a-uuid"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(ctl.fails(&args).contains("not a task id"));
    let args = with_store(&["tasks", "--status", "sleeping"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(ctl.fails(&args).contains("expected one of"));
}

#[test]
fn store_commands_need_a_store() {
    let ctl = Ctl::new();
    for args in [
        &["tasks"][..],
        &["task", "show", &TaskId::new().to_string()],
    ] {
        let stderr = ctl.fails(args);
        assert!(
            stderr.contains(
                "this command needs the job store: pass --store-url or set SPOOL_STORE_URL"
            ),
            "{stderr}"
        );
    }
}

#[test]
fn dead_retry_and_dead_purge_against_redis() {
    let ctl = Ctl::new();
    let rt = runtime();
    rt.block_on(async {
        let broker = ctl.broker().await;
        let q = QueueName::DEFAULT;
        let tasks: Vec<_> = (0..3)
            .map(|_| Envelope::new("t", q.clone(), vec![]))
            .collect();
        broker.enqueue(&tasks).await.expect("enqueued");
        let batch = broker
            .fetch(&q, "test", 3, Duration::ZERO)
            .await
            .expect("fetched");
        assert_eq!(batch.deliveries.len(), 3);
        for delivery in &batch.deliveries {
            let letter = DeadLetter {
                reason: DeadReason::AttemptsExhausted,
                error: "boom".into(),
                attempts: 3,
            };
            broker
                .dead_letter(&delivery.tag, &letter)
                .await
                .expect("dead-lettered");
        }
    });

    let listed = ctl.json(&["dead", "list", "default", "--json"]);
    let entries = listed.as_array().expect("an array of dead letters");
    assert_eq!(entries.len(), 3, "{listed}");
    let entry = entries[0]["entry_id"].as_str().expect("an entry id");

    let retried = ctl.json(&["dead", "retry", "default", entry, "--json"]);
    assert_eq!(retried, json!({"queue": "default", "requeued": 1}));
    let rows = ctl.json(&["queues", "--json"]);
    let default = queue(&rows, "default");
    assert_eq!(
        (&default["ready"], &default["dead"]),
        (&1.into(), &2.into())
    );

    let stderr = ctl.fails(&["dead", "purge", "default"]);
    assert!(stderr.contains("without --yes"), "{stderr}");
    assert_eq!(
        queue(&ctl.json(&["queues", "--json"]), "default")["dead"],
        2
    );

    let purged = ctl.ok(&["dead", "purge", "default", "--yes"]);
    assert_eq!(purged, "purged 2 dead letters from queue default\n");
    assert_eq!(
        ctl.ok(&["dead", "retry", "default"]),
        "requeued 0 dead letters to queue default\n"
    );
    assert_eq!(
        queue(&ctl.json(&["queues", "--json"]), "default")["dead"],
        0
    );
}

#[test]
fn revoke_against_redis() {
    let ctl = Ctl::new();
    let id = TaskId::new();
    let text = ctl.ok(&["revoke", &id.to_string()]);
    assert_eq!(text, format!("revoked {id}\n"));
    let other = TaskId::new();
    let json = ctl.json(&["revoke", &other.to_string(), "--ttl", "1h", "--json"]);
    assert_eq!(json, json!({"id": other.to_string(), "ttl_seconds": 3600}));
    let revoked = runtime().block_on(async { ctl.broker().await.revoked().await.expect("read") });
    assert!(
        revoked.contains(&id) && revoked.contains(&other),
        "{revoked:?}"
    );
    assert!(ctl.fails(&["revoke", "nope"]).contains("not a task id"));
}

#[test]
fn workers_against_redis() {
    let ctl = Ctl::new();
    assert_eq!(ctl.ok(&["workers"]), "no workers in the registry\n");
    let mut record = WorkerRecord::new("ctl-test-1-ab", "ctl-test", "node-a", 4242);
    record.queues = vec![QueueName::DEFAULT, QueueName::GPU];
    record.slots = 4;
    record.busy = 1;
    record.running = vec![TaskId::new()];
    record.processed = 7;
    record.started_at = Timestamp::from_millis(Timestamp::now().as_millis() - 90_000);
    let rt = runtime();
    rt.block_on(async {
        let broker = ctl.broker().await;
        broker
            .write_worker(&record, Duration::from_secs(60))
            .await
            .expect("written");
    });

    let rows = ctl.json(&["workers", "--json"]);
    let rows = rows.as_array().expect("an array of workers");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (&row["host"], &row["pid"]),
        (&json!("node-a"), &json!(4242))
    );
    assert_eq!(row["queues"], json!(["default", "gpu"]));
    assert_eq!(
        (&row["busy"], &row["slots"], &row["running"]),
        (&json!(1), &json!(4), &json!(1))
    );
    assert_eq!(
        (&row["processed"], &row["state"]),
        (&json!(7), &json!("running"))
    );

    let table = ctl.ok(&["workers"]);
    assert!(table.starts_with("HOST "), "{table}");
    let line = table.lines().nth(1).expect("a row");
    let cells: Vec<&str> = line
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells[..6],
        ["node-a", "4242", "default,gpu", "1/4", "1", "7"],
        "{table}"
    );
    assert!(
        cells[7].starts_with("1m 3") && cells[8] == "running",
        "{table}"
    );

    rt.block_on(async {
        let broker = ctl.broker().await;
        broker.remove_worker(&record.id).await.expect("removed");
    });
}

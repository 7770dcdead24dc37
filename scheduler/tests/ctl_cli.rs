//! Runs the built `spoolctl` against the real Redis at `SPOOL_REDIS_URL`
//! (else the local one), under a key prefix no other run uses. The job
//! store commands read a temporary SQLite file that the tests seed through
//! the library, since no worker runs here (`ctl_pause.rs` runs one).

mod ctl_support;

use std::time::Duration;

use serde_json::{Value, json};
use spool_broker::store::{Finished, JobStatus, JobStore, NewJob, WorkerId};
use spool_broker::{
    Broker, DeadLetter, DeadReason, Envelope, QueueName, TaskId, Timestamp, WorkerRecord,
    encode_payload,
};

use self::ctl_support::{Ctl, TempStore, queue, runtime};

#[test]
fn call_queues_and_purge_against_redis() {
    let ctl = Ctl::new();

    let ids = ctl.json(&["call", "--force", "spool.ping", "--count", "3", "--json"]);
    let ids = ids.as_array().expect("an array of ids");
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| id.as_str().is_some_and(|s| s.len() == 36)),
        "{ids:?}"
    );
    let text = ctl.ok(&[
        "call",
        "--force",
        "spool.echo",
        "--args",
        r#"{"value": 1}"#,
        "--priority",
        "high",
    ]);
    assert!(
        text.trim().parse::<TaskId>().is_ok(),
        "one id per line: {text}"
    );
    let later = ctl.ok(&[
        "call",
        "--force",
        "spool.ping",
        "--countdown",
        "1h",
        "--queue",
        "gpu",
    ]);
    assert_eq!(later.lines().count(), 1, "{later}");

    let rows = ctl.queues();
    assert_eq!(rows.as_array().map(Vec::len), Some(4), "{rows}");
    let default = queue(&rows, "default");
    assert_eq!(
        (
            &default["ready"],
            &default["ready_normal"],
            &default["ready_high"]
        ),
        (&json!(4), &json!(3), &json!(1)),
        "{rows}"
    );
    assert_eq!(
        (&default["backlog"], &default["pending"], &default["paused"]),
        (&json!(4), &json!(0), &json!(false)),
        "{rows}"
    );
    assert_eq!(default["enqueued_total"], 4, "{rows}");
    assert_eq!(default["completed_total"], 0, "{rows}");
    assert!(default["oldest_age_seconds"].is_f64(), "{rows}");
    assert_eq!(default["no_consumer"], true, "{rows}");
    assert!(default["rate_in"].is_null(), "not sampled: {rows}");
    let gpu = queue(&rows, "gpu");
    assert_eq!(
        (
            &gpu["ready"],
            &gpu["delayed"],
            &gpu["delayed_due"],
            &gpu["backlog"]
        ),
        (&json!(0), &json!(1), &json!(0), &json!(0)),
        "{rows}"
    );
    assert!(
        gpu["oldest_age_seconds"].is_null(),
        "nothing runnable: {rows}"
    );

    // Sampled (the default, 1 s): rates per second, zero on an idle queue.
    let sampled = ctl.json(&["queues", "--json", "--sample", "200ms"]);
    let default = queue(&sampled, "default");
    assert_eq!(
        (&default["rate_in"], &default["rate_out"]),
        (&json!(0.0), &json!(0.0))
    );
    let table = ctl.ok(&["queues"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "QUEUE",
            "BACKLOG",
            "IN-FLIGHT",
            "DELAYED",
            "DEAD",
            "OLDEST",
            "CONSUMERS",
            "IN/S",
            "OUT/S",
            "PAUSED",
            "FLAG"
        ],
        "{table}"
    );
    let default: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(default[..5], ["default", "4", "0", "0", "0"], "{table}");
    assert_eq!(
        default[default.len() - 5..],
        ["0", "0.0", "0.0", "no", "no-consumer"],
        "{table}"
    );
    assert!(
        lines[4].starts_with("gpu ") && lines[4].contains("  -  "),
        "no age without a runnable task: {table}"
    );

    let stderr = ctl.fails(&["queues", "--sample", "soon"]);
    assert!(
        stderr.contains("invalid value 'soon' for '--sample"),
        "{stderr}"
    );

    let refused = ctl.run(&["purge", "default"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let purged = ctl.json(&["purge", "default", "--yes", "--json"]);
    assert_eq!(purged, serde_json::json!({"queue": "default", "purged": 4}));
    let rows = ctl.queues();
    let default = queue(&rows, "default");
    assert_eq!(default["ready"], 0, "{rows}");
    assert_eq!(
        default["enqueued_total"], 0,
        "a purge restarts the counters: {rows}"
    );
}

#[test]
fn call_refuses_bad_input_before_enqueuing() {
    let ctl = Ctl::new();
    for (args, expected) in [
        (&["call", "x", "--count", "0"][..], "--count"),
        (
            &["call", "x", "--priority", "urgent"],
            "expected high, normal or low",
        ),
        (&["call", "x", "--countdown", "later"], "--countdown"),
        (&["call", "x", "--args", "[1]"], "must be a JSON object"),
        (&["call", "two words"], "invalid task name"),
        (&["call", "x", "--queue", "bad{name}"], "invalid queue name"),
    ] {
        let stderr = ctl.fails(args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert_eq!(queue(&ctl.queues(), "default")["enqueued_total"], 0);
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
    let store = JobStore::create(url).await.expect("the store opens");
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
    let stderr = ctl.fails(&["dead", "retry", "default", entry]);
    assert!(
        stderr.contains("1 of the entry ids given is not a dead letter of queue default"),
        "already requeued: {stderr}"
    );
    let stderr = ctl.fails(&["dead", "retry", "default", "not-an-id"]);
    assert!(stderr.contains("is not a dead-letter entry id"), "{stderr}");
    let rows = ctl.queues();
    let default = queue(&rows, "default");
    assert_eq!(
        (&default["ready"], &default["dead"]),
        (&1.into(), &2.into())
    );

    let stderr = ctl.fails(&["dead", "purge", "default"]);
    assert!(stderr.contains("without --yes"), "{stderr}");
    assert_eq!(queue(&ctl.queues(), "default")["dead"], 2);

    let purged = ctl.ok(&["dead", "purge", "default", "--yes"]);
    assert_eq!(purged, "purged 2 dead letters from queue default\n");
    assert_eq!(
        ctl.ok(&["dead", "retry", "default"]),
        "requeued 0 dead letters to queue default\n"
    );
    assert_eq!(queue(&ctl.queues(), "default")["dead"], 0);
}

#[test]
fn revoke_against_redis() {
    let ctl = Ctl::new();
    let id: TaskId = ctl
        .ok(&["call", "--force", "spool.ping"])
        .trim()
        .parse()
        .expect("an id");
    let text = ctl.ok(&["revoke", &id.to_string()]);
    assert_eq!(text, format!("revoked {id} (queued in default)\n"));
    let other = TaskId::new();
    let stderr = ctl.fails(&["revoke", &other.to_string()]);
    assert!(stderr.contains(&format!("no task {other}")), "{stderr}");
    let json = ctl.json(&[
        "revoke",
        &other.to_string(),
        "--ttl",
        "1h",
        "--force",
        "--json",
    ]);
    assert_eq!(
        json,
        json!({"id": other.to_string(), "ttl_seconds": 3600, "found": null})
    );
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

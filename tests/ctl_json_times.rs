//! One time format in all JSON: every `--json` output of `spoolctl` and
//! `spool-autoscaler`, run against real Redis, a real SQLite job store and
//! a live `spool-worker`, is walked, and every value that is a time (a key
//! ending `_at`, `at`, `last_seen`, or a string shaped like a date) must be
//! RFC 3339 in UTC with milliseconds; no number looks like epoch
//! milliseconds; and durations are `_seconds` numbers, never `_ms`, `_us`
//! or `_s` (docs/operations.md, "JSON conventions").
//!
//! Build the binaries first: `cargo build -p spool-scheduler -p
//! spool-worker-cli -p spool-autoscaler --bins`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use spool_broker::store::{Finished, JobStatus, JobStore};
use spool_broker::{Broker, DeadLetter, DeadReason, Envelope, QueueName, Timestamp};
use spool_tests::{TestRedis, bins, redis_url, wait_until};

/// Whether `key` names a time.
fn is_time_key(key: &str) -> bool {
    key == "at" || key.ends_with("_at") || key == "last_seen"
}

/// Whether `text` is shaped like a date-time (`2026-12-05T…`).
fn looks_like_a_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 11 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

/// Checks one time string: RFC 3339, UTC, with milliseconds.
fn check_time(path: &str, text: &str, problems: &mut Vec<String>) {
    let millis = text.len() == 24 && text.ends_with('Z') && text.as_bytes()[19] == b'.';
    if humantime::parse_rfc3339(text).is_err() || !millis {
        problems.push(format!(
            "{path} = {text:?} is not RFC 3339 with milliseconds in UTC"
        ));
    }
}

/// Walks `value`, collecting what breaks the conventions; returns how many
/// times it checked.
fn walk(path: &str, key: &str, value: &Value, problems: &mut Vec<String>) -> usize {
    for unit in ["_ms", "_us", "_s"] {
        if key.ends_with(unit) {
            problems.push(format!(
                "{path}: a duration must be `_seconds`, not `{unit}`"
            ));
        }
    }
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| walk(&format!("{path}.{k}"), k, v, problems))
            .sum(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| walk(&format!("{path}[{i}]"), key, v, problems))
            .sum(),
        Value::String(text) if is_time_key(key) || looks_like_a_date(text) => {
            check_time(path, text, problems);
            1
        }
        Value::Null => 0,
        Value::Number(n) => {
            let epoch_ms = n
                .as_u64()
                .is_some_and(|n| (1_000_000_000_000..4_000_000_000_000).contains(&n));
            if is_time_key(key) || epoch_ms {
                problems.push(format!("{path} = {n} is a number, not an RFC 3339 time"));
            }
            0
        }
        _ if is_time_key(key) => {
            problems.push(format!("{path} = {value} is not an RFC 3339 time"));
            0
        }
        _ => 0,
    }
}

/// Runs `command`, parses its stdout as JSON (one document, or one per
/// line), walks it, and returns how many times it held.
fn checked(what: &str, command: &mut Command, problems: &mut Vec<String>) -> usize {
    let stdout = bins::stdout_of(command);
    let documents: Vec<Value> = match serde_json::from_str(&stdout) {
        Ok(one) => vec![one],
        Err(_) => stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
            })
            .collect(),
    };
    documents.iter().map(|d| walk(what, "", d, problems)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_time_is_rfc3339_with_milliseconds() {
    let redis = TestRedis::new().await;
    let dir = std::env::temp_dir().join(format!(
        "spool-json-times-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store_url = format!("sqlite://{}", dir.join("jobs.db").display());
    let store = JobStore::create(&store_url).await.unwrap();

    // Something of everything: a live worker, a finished task, a queued and
    // a delayed one, a dead letter.
    let worker = bins::spawn_spool_worker(&redis_url(), &redis.prefix, "default");
    wait_until("a live worker", Duration::from_secs(20), || async {
        redis
            .broker
            .workers()
            .await
            .unwrap()
            .iter()
            .any(|w| w.is_live())
    })
    .await;
    let dead_queue = QueueName::new("times-dead").unwrap();
    let doomed = Envelope::new("spool.ping", dead_queue.clone(), Vec::new());
    redis
        .broker
        .enqueue(std::slice::from_ref(&doomed))
        .await
        .unwrap();
    let batch = redis
        .broker
        .fetch(&dead_queue, "test", 1, Duration::ZERO)
        .await
        .unwrap();
    let letter = DeadLetter {
        reason: DeadReason::AttemptsExhausted,
        error: "gave up".to_owned(),
        attempts: 1,
    };
    redis
        .broker
        .dead_letter(&batch.deliveries[0].tag, &letter)
        .await
        .unwrap();
    let mut done = Finished::from_envelope(&doomed, JobStatus::Dead, Timestamp::now());
    done.started_at = Some(doomed.created_at);
    store.record_outcomes(&[done]).await.unwrap();

    let spoolctl = |args: &[&str]| {
        let mut command = Command::new(bins::spoolctl());
        command
            .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
            .args(["--store-url", &store_url, "--json"])
            .args(args);
        command
    };
    let mut problems = Vec::new();
    let mut times = 0;
    let queued = bins::stdout_of(&mut spoolctl(&[
        "call",
        "spool.ping",
        "--queue",
        "idle",
        "--force",
    ]));
    let queued: Vec<String> = serde_json::from_str(&queued).unwrap();
    bins::stdout_of(&mut spoolctl(&[
        "call",
        "spool.ping",
        "--countdown",
        "1h",
        "--force",
    ]));
    for args in [
        &["queues", "--sample", "100ms"][..],
        &["workers"],
        &["inspect", "registered"],
        &["tasks"],
        &["task", "show", &queued[0]],
        &["task", "show", &doomed.id.to_string()],
        &["dead", "list", "times-dead"],
        &["dead", "show", "times-dead", &doomed.id.to_string()],
        &["pause", "idle"],
        &["resume", "idle"],
        &["revoke", &queued[0]],
        &["store", "migrate"],
    ] {
        times += checked(
            &format!("spoolctl {}", args.join(" ")),
            &mut spoolctl(args),
            &mut problems,
        );
    }

    // `top --once --json`: one frame, its times (the frame's own, the
    // running tasks' starts, the failures') as every other output's.
    let top_times = checked(
        "spoolctl top --once",
        &mut spoolctl(&["top", "--once"]),
        &mut problems,
    );
    assert!(top_times >= 1, "no time in top's frame");

    // The autoscaler: a dry tick, and a simulation's summary.
    let config = dir.join("autoscaler.toml");
    std::fs::write(
        &config,
        format!(
            "key_prefix = \"{}\"\nmetrics_addr = \"none\"\n[local]\nworker_bin = \"/nonexistent\"\n\
             [[pools]]\nname = \"cpu\"\nqueues = [\"default\", \"idle\"]\nconcurrency = 2\n",
            redis.prefix
        ),
    )
    .unwrap();
    let autoscaler = |args: &[&str]| {
        let mut command = Command::new(bins::spool_autoscaler());
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("SPOOL_")) {
            command.env_remove(name);
        }
        command.args(args);
        command
    };
    let config = config.display().to_string();
    let url = redis_url();
    times += checked(
        "spool-autoscaler --once --json",
        &mut autoscaler(&[
            "--config",
            &config,
            "--redis-url",
            &url,
            "--dry-run",
            "--once",
            "--json",
        ]),
        &mut problems,
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/autoscaler");
    checked(
        "spool-autoscaler simulate --json",
        &mut autoscaler(&[
            "simulate",
            "--profile",
            &examples.join("profile-bursty.toml").display().to_string(),
            "--policy",
            &examples.join("autoscaler.toml").display().to_string(),
            "--pool",
            "cpu",
            "--json",
            "--out",
            &dir.join("sim").display().to_string(),
        ]),
        &mut problems,
    );

    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Workers (started, last seen), tasks (created, started, finished),
    // dead letters and the tick's time were all seen.
    assert!(times >= 8, "only {times} times checked");

    bins::stop_warm(worker);
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
    redis.cleanup().await;
}

//! The `spool-worker` binary end to end, against a real Redis: prefork
//! recycling by task count and by memory, warm and cold shutdown, crash
//! restarts, the metrics endpoint, the hardware probe and the settings.
//! Each test isolates itself with a random key prefix and kills the
//! processes it started, however it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, Task, WorkerState};
use spool_worker::builtin::{Alloc, Echo, Fail, Ping, Sleep};
use support::{
    Deadline, Exposition, Records, TestRedis, free_port, http_get, run_to_end, scrape, wait_for,
};
use tokio::time::Instant;

/// Item 8: 100 tasks with `--max-tasks-per-child 10` leave at least 10
/// distinct child pids in the registry, and every task runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_recycle_after_max_tasks_and_lose_nothing() {
    let redis = TestRedis::new().await;
    let mut worker = redis.spawn(&[
        "--processes",
        "2",
        "--concurrency",
        "2",
        "--max-tasks-per-child",
        "10",
    ]);
    redis
        .client
        .enqueue_many((0..100).map(|i| Echo {
            value: serde_json::json!(i),
        }))
        .await
        .unwrap();

    let mut records = Records::default();
    let deadline = Deadline::new("100 tasks processed", Duration::from_secs(40));
    loop {
        records.poll(&redis).await;
        if redis.stats().await.is_drained() && records.processed() >= 100 {
            break;
        }
        deadline.tick().await;
    }

    assert_eq!(
        records.processed(),
        100,
        "each task ran exactly once: {records:#?}"
    );
    assert_eq!(records.succeeded(), 100);
    let pids = records.pids();
    assert!(pids.len() >= 10, "only {} child pids: {pids:?}", pids.len());
    assert!(
        !pids.contains(&worker.pid()),
        "children are separate processes"
    );
    for record in records.0.values() {
        assert!(
            record.processed <= 10,
            "a child ran more than its budget: {record:#?}"
        );
        assert_eq!(record.supervisor_pid, Some(worker.pid()));
    }
    let stats = redis.stats().await;
    assert_eq!((stats.pending, stats.dead), (0, 0));
    assert!(
        worker.try_status().is_none(),
        "the supervisor keeps running"
    );

    worker.signal(Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(10)).await.success());
    redis.cleanup().await;
}

/// Item 8: a child above `--max-memory-per-child` retires; its replacement
/// starts before it exits, and its task still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_above_its_memory_limit_is_replaced() {
    let redis = TestRedis::new().await;
    let mut worker = redis.spawn(&[
        "--processes",
        "1",
        "--concurrency",
        "2",
        "--max-memory-per-child",
        "96MiB",
    ]);
    let first = wait_for("the first child", Duration::from_secs(10), || async {
        redis.workers().await.into_iter().next()
    })
    .await;

    redis
        .client
        // Held long enough that the replacement is up before the old child
        // finishes it: a child takes a second or two to start on a loaded
        // 2-core machine (it probes FFmpeg's encoders first).
        .enqueue(Alloc {
            mb: 192,
            hold_ms: 5000,
        })
        .await
        .unwrap();
    redis
        .client
        .enqueue_many((0..5).map(|_| Ping {}))
        .await
        .unwrap();

    let mut records = Records::default();
    let deadline = Deadline::new(
        "the memory-hungry child replaced and every task done",
        Duration::from_secs(20),
    );
    loop {
        records.poll(&redis).await;
        let old_stopped = records
            .0
            .get(&first.id)
            .is_some_and(|old| old.state == WorkerState::Stopped);
        let replaced = records.0.values().any(|r| r.pid != first.pid);
        if old_stopped && replaced && records.processed() == 6 && redis.stats().await.is_drained() {
            break;
        }
        deadline.tick().await;
    }

    let old = &records.0[&first.id];
    assert_eq!(old.reason.as_deref(), Some("memory"), "{old:#?}");
    assert!(
        old.succeeded >= 1,
        "the alloc task finished on the retiring child: {old:#?}"
    );
    let new = records
        .0
        .values()
        .find(|r| r.pid != first.pid)
        .expect("a replacement");
    assert!(
        new.started_at <= old.last_seen,
        "the replacement started ({}) before the old child stopped ({})",
        new.started_at,
        old.last_seen
    );
    assert_eq!(records.succeeded(), 6);
    assert_eq!(redis.stats().await.dead, 0);

    worker.signal(Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(10)).await.success());
    redis.cleanup().await;
}

/// Item 8: SIGTERM is a warm shutdown: running tasks finish and are
/// acknowledged, then the supervisor exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_shutdown_finishes_in_flight_tasks() {
    let redis = TestRedis::new().await;
    let mut worker = redis.spawn(&["--processes", "2", "--concurrency", "2", "--prefetch", "2"]);
    wait_for("two children", Duration::from_secs(10), || async {
        (redis.workers().await.len() == 2).then_some(())
    })
    .await;

    let enqueued = Instant::now();
    redis
        .client
        .enqueue_many((0..4).map(|_| Sleep { ms: 2000 }))
        .await
        .unwrap();
    let mut records = Records::default();
    let deadline = Deadline::new("4 tasks running", Duration::from_secs(10));
    loop {
        records.poll(&redis).await;
        if records.busy() == 4 {
            break;
        }
        deadline.tick().await;
    }

    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", worker.logs());
    assert!(
        enqueued.elapsed() >= Duration::from_millis(2000),
        "the supervisor exited before its tasks could finish"
    );
    let stats = redis.stats().await;
    assert!(stats.is_drained(), "{stats:?}");
    let mut records = Records::default();
    records.poll(&redis).await;
    assert_eq!(records.succeeded(), 4, "{records:#?}");
    assert!(records.0.values().all(|r| r.state == WorkerState::Stopped));
    assert!(
        records
            .0
            .values()
            .all(|r| r.reason.as_deref() == Some("supervisor")),
        "stopped by their supervisor: {records:#?}"
    );
    redis.cleanup().await;
}

/// Item 8: a second signal is a cold shutdown; the tasks it interrupted stay
/// pending and another worker reclaims and completes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_shutdown_loses_nothing() {
    let redis = TestRedis::new().await;
    let args = [
        "--processes",
        "1",
        "--concurrency",
        "2",
        "--prefetch",
        "2",
        "--visibility-timeout",
        "2s",
    ];
    let mut first = redis.spawn(&args);
    redis
        .client
        .enqueue_many((0..2).map(|_| Sleep { ms: 2500 }))
        .await
        .unwrap();
    let mut records = Records::default();
    let deadline = Deadline::new("2 tasks running", Duration::from_secs(10));
    loop {
        records.poll(&redis).await;
        if records.busy() == 2 {
            break;
        }
        deadline.tick().await;
    }

    first.signal(Signal::SIGTERM);
    wait_for("the child stopping", Duration::from_secs(5), || async {
        let records = redis.workers().await;
        records
            .iter()
            .any(|r| r.state == WorkerState::Stopping)
            .then_some(())
    })
    .await;
    first.signal(Signal::SIGTERM);
    let status = first.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "{status:?}\n{}",
        first.logs()
    );
    let stats = redis.stats().await;
    assert_eq!(
        stats.pending, 2,
        "the interrupted tasks stay pending: {stats:?}"
    );

    let mut second = redis.spawn(&args);
    wait_for(
        "the reclaimed tasks done",
        Duration::from_secs(20),
        || async { redis.stats().await.is_drained().then_some(()) },
    )
    .await;
    let mut records = Records::default();
    let deadline = Deadline::new("the second worker's counts", Duration::from_secs(5));
    loop {
        records.poll(&redis).await;
        if records.succeeded() == 2 {
            break;
        }
        deadline.tick().await;
    }
    assert_eq!(redis.stats().await.dead, 0);

    second.signal(Signal::SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(10)).await.success());
    redis.cleanup().await;
}

/// A task type no worker knows, to produce a dead letter.
#[derive(Debug, Serialize, Deserialize)]
struct Unknown {}

impl Task for Unknown {
    const NAME: &'static str = "test.unknown";
    type Output = ();
}

/// Items 2 and 6: a crashed child is restarted and counted; its task is
/// reclaimed and completes; `/metrics` is scraped and parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_children_restart_and_metrics_are_served() {
    let redis = TestRedis::new().await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = redis.spawn(&[
        "--processes",
        "2",
        "--concurrency",
        "2",
        "--prefetch",
        "2",
        "--visibility-timeout",
        "2s",
        "--metrics-addr",
        &addr,
    ]);
    wait_for("two children", Duration::from_secs(10), || async {
        (redis.workers().await.len() == 2).then_some(())
    })
    .await;

    redis.client.enqueue(Sleep { ms: 1500 }).await.unwrap();
    let busy = wait_for(
        "the sleep task running",
        Duration::from_secs(10),
        || async { redis.workers().await.into_iter().find(|r| r.busy == 1) },
    )
    .await;
    support_kill(busy.pid);
    let restarted = wait_for(
        "the crashed child restarted",
        Duration::from_secs(10),
        || async {
            let text = scrape(port).await?;
            (Exposition::parse(&text).value("spool_child_restarts_total", &[]) == Some(1.0))
                .then_some(())
        },
    )
    .await;
    let () = restarted;
    wait_for("a replacement child", Duration::from_secs(10), || async {
        let live: Vec<_> = redis
            .workers()
            .await
            .into_iter()
            .filter(|r| r.is_live() && r.pid != busy.pid)
            .collect();
        (live.len() == 2).then_some(())
    })
    .await;

    wait_for(
        "the crashed child's record removed",
        Duration::from_secs(10),
        || async { (!redis.workers().await.iter().any(|r| r.pid == busy.pid)).then_some(()) },
    )
    .await;

    redis
        .client
        .enqueue_many((0..5).map(|_| Ping {}))
        .await
        .unwrap();
    redis.client.enqueue(Fail { times: 1 }).await.unwrap();
    redis.client.enqueue(Unknown {}).await.unwrap();

    let metrics = wait_for(
        "every outcome in the metrics",
        Duration::from_secs(20),
        || async {
            let metrics = Exposition::parse(&scrape(port).await?);
            let succeeded = |name: &str| {
                metrics.value(
                    "spool_tasks_total",
                    &[
                        ("queue", "default"),
                        ("name", name),
                        ("outcome", "succeeded"),
                    ],
                )
            };
            let done = succeeded("spool.ping") == Some(5.0)
                && succeeded("spool.fail") == Some(1.0)
                && succeeded("spool.sleep") == Some(1.0)
                && metrics.value("spool_dead_letters_total", &[("reason", "unknown_task")])
                    == Some(1.0);
            done.then_some(metrics)
        },
    )
    .await;

    for (family, kind) in [
        ("spool_tasks_total", "counter"),
        ("spool_task_duration_seconds", "histogram"),
        ("spool_task_retries_total", "counter"),
        ("spool_dead_letters_total", "counter"),
        ("spool_tasks_in_flight", "gauge"),
        ("spool_tasks_prefetched", "gauge"),
        ("spool_child_restarts_total", "counter"),
        ("spool_children", "gauge"),
    ] {
        assert_eq!(
            metrics.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let ping = [("queue", "default"), ("name", "spool.ping")];
    assert_eq!(
        metrics.value("spool_task_duration_seconds_count", &ping),
        Some(5.0)
    );
    assert_eq!(
        metrics.value(
            "spool_task_duration_seconds_bucket",
            &[("queue", "default"), ("name", "spool.ping"), ("le", "+Inf")]
        ),
        Some(5.0)
    );
    // spool.fail fails by attempt number, whichever child runs it.
    let retries = metrics
        .value(
            "spool_task_retries_total",
            &[("queue", "default"), ("name", "spool.fail")],
        )
        .unwrap_or(0.0);
    assert_eq!(retries, 1.0, "{retries} retries");
    assert_eq!(metrics.value("spool_children", &[]), Some(2.0));
    // Spool's own families, and the standard process collector's.
    assert!(
        metrics
            .samples
            .iter()
            .all(|s| s.name.starts_with("spool_") || s.name.starts_with("process_"))
    );
    assert!(
        metrics.value("spool_gpu_utilization_ratio", &[]).is_none(),
        "no GPU here, so no GPU metrics"
    );

    worker.signal(Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(10)).await.success());
    redis.cleanup().await;
}

/// `/healthz` answers while the supervisor runs, and `/readyz` turns ready
/// once a child serves: the probes Kubernetes uses (ops/k8s). The served
/// queue's own signals (read from Redis) are on `/metrics` beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_queue_signals_are_served_beside_the_metrics() {
    let redis = TestRedis::new().await;
    // Waits an hour in the delayed set: a signal no worker consumes.
    redis
        .client
        .enqueue(Ping {})
        .countdown(Duration::from_secs(3600))
        .await
        .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = redis.spawn(&["--processes", "1", "--metrics-addr", &addr]);
    let ready = wait_for("/readyz to say ready", Duration::from_secs(10), || async {
        http_get(port, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(ready.1, "ready\n");
    // A child serves: its heartbeat is in the registry.
    assert_eq!(redis.workers().await.len(), 1);
    assert_eq!(
        http_get(port, "/healthz").await,
        Some((200, "ok\n".to_owned()))
    );
    let (status, body) = http_get(port, "/nowhere").await.expect("an answer");
    assert_eq!(status, 404);
    assert!(body.contains("/readyz"), "{body}");

    let default = [("queue", "default")];
    let metrics = wait_for(
        "the queue's signals on /metrics",
        Duration::from_secs(15),
        || async {
            let metrics = Exposition::parse(&scrape(port).await?);
            (metrics.value("spool_queue_consumers", &default) >= Some(1.0)).then_some(metrics)
        },
    )
    .await;
    assert_eq!(metrics.value("spool_queue_delayed", &default), Some(1.0));
    assert_eq!(metrics.value("spool_queue_ready", &default), Some(0.0));
    assert_eq!(metrics.value("spool_queue_paused", &default), Some(0.0));
    assert_eq!(
        metrics.value("spool_queue_dead_letters", &default),
        Some(0.0)
    );
    assert!(
        metrics
            .value("spool_queue_enqueued_total", &default)
            .is_some()
    );

    worker.signal(Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(10)).await.success());
    redis.cleanup().await;
}

fn support_kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
}

/// The FFmpeg to probe in tests: `SPOOL_FFMPEG`, else the one setup.sh
/// installs, if present.
fn test_ffmpeg() -> Option<String> {
    if let Ok(path) = std::env::var("SPOOL_FFMPEG")
        && std::path::Path::new(&path).is_file()
    {
        return Some(path);
    }
    let home = std::env::var("HOME").ok()?;
    let path = format!("{home}/.spool/bin/ffmpeg");
    std::path::Path::new(&path).is_file().then_some(path)
}

/// Item 5: the probe runs here, reports "no GPU" cleanly, judges encoders by
/// a real trial encode, and the gpu queue is dropped with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_reports_what_this_host_can_do() {
    let ffmpeg = test_ffmpeg();
    let mut env = Vec::new();
    if let Some(path) = &ffmpeg {
        env.push(("SPOOL_FFMPEG", path.as_str()));
    }
    let out = run_to_end(&["--probe-only"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Logs into a pipe are plain text: colour is for terminals.
    assert!(!out.stderr.is_empty() && !out.stderr.contains(&0x1b));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the capabilities are JSON");

    let gpus = report["gpu"]["devices"]
        .as_array()
        .expect("a device list")
        .len();
    if gpus == 0 {
        let why = report["gpu"]["error"]
            .as_str()
            .expect("a reason for no GPU");
        assert!(!why.is_empty());
        assert_eq!(report["cuda"]["passed"], false);
    }
    match &ffmpeg {
        Some(_) => {
            assert!(report["ffmpeg"]["error"].is_null(), "{report:#}");
            let passed: Vec<&str> = report["ffmpeg"]["encoders"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e.as_str())
                .collect();
            assert!(!passed.is_empty(), "a software encoder passes: {report:#}");
            if gpus == 0 {
                assert!(
                    !passed.iter().any(|e| e.ends_with("_nvenc")),
                    "NVENC cannot pass without a GPU: {report:#}"
                );
            }
            assert!(report["ffmpeg"]["libvmaf"].is_boolean());
        }
        None => {
            // As the spool-tests suites: a missing FFmpeg fails the test
            // unless skipping was asked for.
            assert!(
                std::env::var_os("SPOOL_SKIP_FFMPEG").is_some(),
                "no FFmpeg here: run ops/scripts/setup.sh or set SPOOL_FFMPEG \
                 (SPOOL_SKIP_FFMPEG=1 skips the FFmpeg checks)"
            );
            eprintln!("no FFmpeg here and SPOOL_SKIP_FFMPEG set: skipping the FFmpeg checks");
            assert!(report["ffmpeg"]["error"].is_string());
        }
    }

    // A worker asked for the gpu queue serves it only with a GPU that
    // passed the self-test, and says why not.
    let redis = TestRedis::new().await;
    let mut worker = redis.spawn_probed(&["--processes", "0", "--queues", "default,gpu"], &env);
    let record = wait_for("the worker's record", Duration::from_secs(60), || async {
        redis.workers().await.into_iter().next()
    })
    .await;
    let cuda_passed = report["cuda"]["passed"] == true;
    assert_eq!(
        record.queues.contains(&QueueName::GPU),
        gpus > 0 && cuda_passed,
        "{record:#?}"
    );
    assert_eq!(record.capabilities.get("gpus"), Some(&gpus.to_string()));
    assert_eq!(
        record.pid,
        worker.pid(),
        "--processes 0 runs in the process itself"
    );
    assert_eq!(record.supervisor_pid, None);
    if gpus == 0 {
        assert!(
            worker.logs().contains("not serving the gpu queue"),
            "{}",
            worker.logs()
        );
    }
    worker.signal(Signal::SIGINT);
    assert!(worker.wait_exit(Duration::from_secs(10)).await.success());
    redis.cleanup().await;
}

/// Item 1: flags win over the environment, which wins over the file, which
/// wins over the defaults; `--help` shows every default; bad values name
/// their flag.
#[tokio::test]
async fn settings_merge_flags_env_file_and_defaults() {
    let dir = std::env::temp_dir().join(format!("spool-cli-settings-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("worker.toml");
    std::fs::write(
        &file,
        r#"
queues = ["analysis", "default"]
concurrency = 3
max-memory-per-child = "512MiB"
time_limit = "2h"
visibility_timeout = "45s"
force_gpu = true
"#,
    )
    .unwrap();
    let config = file.to_string_lossy().into_owned();
    let print = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--print-config"];
        all.extend_from_slice(args);
        run_to_end(&all, env)
    };

    let out = print(
        &["--config", &config, "--concurrency", "5"],
        &[
            ("SPOOL_TIME_LIMIT", "90m"),
            ("SPOOL_SOFT_TIME_LIMIT", "80m"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(settings["concurrency"], 5, "a flag beats the file");
    assert_eq!(
        settings["prefetch"], 20,
        "auto prefetch follows concurrency"
    );
    assert_eq!(
        settings["time_limit"], "1h 30m",
        "the environment beats the file"
    );
    assert_eq!(settings["soft_time_limit"], "1h 20m");
    assert_eq!(
        settings["queues"],
        serde_json::json!(["analysis", "default"]),
        "the file beats the default"
    );
    assert_eq!(settings["max_memory_per_child"], 512 * 1024 * 1024);
    assert_eq!(settings["visibility_timeout"], "45s");
    assert_eq!(settings["force_gpu"], true);
    assert_eq!(
        settings["redis_url"], "redis://127.0.0.1:6379/",
        "a default"
    );
    assert_eq!(settings["max_tasks_per_child"], serde_json::Value::Null);

    let out = print(&["--max-memory-per-child", "2 gallons"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-memory-per-child"));
    let out = print(&[], &[("SPOOL_VISIBILITY_TIMEOUT", "soon")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("$SPOOL_VISIBILITY_TIMEOUT"));
    std::fs::write(&file, "no_such_setting = 1\n").unwrap();
    let out = print(&["--config", &config], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_setting"));
    std::fs::remove_dir_all(&dir).unwrap();

    let help = run_to_end(&["--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--redis-url",
        "--store-url",
        "--key-prefix",
        "--queues",
        "--processes",
        "--concurrency",
        "--prefetch",
        "--max-tasks-per-child",
        "--max-memory-per-child",
        "--time-limit",
        "--soft-time-limit",
        "--visibility-timeout",
        "--metrics-addr",
        "--name",
        "--log-format",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing from --help"));
        assert!(
            line.contains("[default: "),
            "{flag} shows no default: {line}"
        );
        assert!(
            line.contains("[env: SPOOL_"),
            "{flag} shows no variable: {line}"
        );
    }
}

/// Item 4: records expire without heartbeats, the index is pruned, and a
/// record can be removed at once.
#[tokio::test]
async fn registry_records_expire_and_can_be_removed() {
    let redis = TestRedis::new().await;
    let mut record = spool_worker_cli::heartbeat::initial_record(
        "test-1-abcd",
        "test",
        vec![QueueName::DEFAULT],
        4,
        None,
        BTreeMap::from([("gpus".to_owned(), "0".to_owned())]),
    );
    redis
        .broker
        .write_worker(&record, Duration::from_millis(300))
        .await
        .unwrap();
    record.id = "test-2-abcd".into();
    redis
        .broker
        .write_worker(&record, Duration::from_secs(30))
        .await
        .unwrap();
    let ids: Vec<String> = redis.workers().await.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["test-1-abcd", "test-2-abcd"]);
    assert_eq!(redis.workers().await[0].capabilities["gpus"], "0");

    wait_for(
        "the first record to expire",
        Duration::from_secs(5),
        || async { (redis.workers().await.len() == 1).then_some(()) },
    )
    .await;
    let mut raw = redis::Client::open(support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let index: u64 = redis::cmd("ZCARD")
        .arg(format!("{}:{{@workers}}", redis.prefix))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(index, 1, "the index is pruned of expired records");

    redis.broker.remove_worker("test-2-abcd").await.unwrap();
    assert!(redis.workers().await.is_empty());
    redis.broker.remove_worker("never-there").await.unwrap();
    redis.cleanup().await;
}

/// Whether `pid` still runs (a zombie waiting to be reaped does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Item 2: children die with their supervisor, even when it is killed
/// while they are busy (`PR_SET_PDEATHSIG`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_die_with_their_supervisor() {
    let redis = TestRedis::new().await;
    // Prefetch 1: each child holds one task, so both get busy (a deeper
    // prefetch lets the first child claim both).
    let mut worker = redis.spawn(&["--processes", "2", "--concurrency", "1", "--prefetch", "1"]);
    let children = wait_for("two children", Duration::from_secs(10), || async {
        let pids: Vec<u32> = redis.workers().await.iter().map(|r| r.pid).collect();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    assert!(children.iter().all(|pid| running(*pid)));
    // Busy children: a warm stop would take 20 s; the death signal is now.
    redis
        .client
        .enqueue_many((0..2).map(|_| Sleep { ms: 20_000 }))
        .await
        .unwrap();
    let mut records = Records::default();
    let deadline = Deadline::new("2 tasks running", Duration::from_secs(10));
    loop {
        records.poll(&redis).await;
        if records.busy() == 2 {
            break;
        }
        deadline.tick().await;
    }

    worker.signal(Signal::SIGKILL);
    worker.wait_exit(Duration::from_secs(5)).await;
    wait_for(
        "the orphaned children to die",
        Duration::from_secs(5),
        || async { children.iter().all(|pid| !running(*pid)).then_some(()) },
    )
    .await;
    redis.cleanup().await;
}

#[tokio::test]
async fn finished_records_past_their_retention_are_pruned() {
    use spool_broker::store::{Finished, JobStatus, JobStore};
    use spool_broker::{Envelope, Timestamp};

    let redis = TestRedis::new().await;
    let dir = std::env::temp_dir().join(format!("spool-retention-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/jobs.db", dir.display());
    let store = JobStore::create(&url).await.unwrap();
    let record = |age: Duration| {
        let envelope = Envelope::new("spool.ping", QueueName::DEFAULT, Vec::new());
        let finished_at =
            Timestamp::from_millis(Timestamp::now().as_millis() - age.as_millis() as u64);
        Finished::from_envelope(&envelope, JobStatus::Succeeded, finished_at)
    };
    let (old, fresh) = (
        record(Duration::from_secs(7200)),
        record(Duration::from_secs(60)),
    );
    store
        .record_outcomes(&[old.clone(), fresh.clone()])
        .await
        .unwrap();

    let mut worker = redis.spawn(&[
        "--store-url",
        &url,
        "--store-retention",
        "1h",
        "--processes",
        "0",
    ]);
    wait_for(
        "the old record to be pruned",
        Duration::from_secs(20),
        || async { store.get(old.id).await.unwrap().is_none().then_some(()) },
    )
    .await;
    assert!(
        store.get(fresh.id).await.unwrap().is_some(),
        "a record within its retention was pruned"
    );
    worker.signal(Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(10)).await.success());
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    redis.cleanup().await;
}

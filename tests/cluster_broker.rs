//! Spool on a Redis Cluster: each test starts three masters on loopback
//! ports (`redis-server` + `redis-cli --cluster create`) and runs the
//! round trip, reclaim and dead-letter paths through the cluster client,
//! with the routed queues spread over different nodes; then the real
//! `spool-worker` and `spoolctl` binaries against it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Broker, Priority, QueueName, Task, TaskId};
use spool_tests::{RedisCluster, TestRedis, bins, short_lease_config, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Probe {
    label: String,
    /// How long the handler takes; `u64::MAX` hangs until cancelled.
    ms: u64,
}

impl Task for Probe {
    const NAME: &'static str = "test.cluster.probe";
    type Output = ();
}

/// Short leases (a killed worker's tasks come back within a second), on
/// every routed queue.
fn config(name: &str) -> WorkerConfig {
    WorkerConfig {
        queues: QueueName::ROUTED.to_vec(),
        ..short_lease_config(name)
    }
}

type Runs = Arc<Mutex<Vec<(String, QueueName, u32)>>>;

fn recording(
    runs: Runs,
) -> impl Fn(Probe, TaskContext) -> futures::future::BoxFuture<'static, Result<(), TaskError>>
+ Send
+ Sync {
    move |probe: Probe, ctx: TaskContext| {
        runs.lock()
            .unwrap()
            .push((probe.label.clone(), ctx.queue().clone(), ctx.attempt()));
        let cancelled = ctx.cancellation().clone();
        Box::pin(async move {
            if probe.ms == u64::MAX {
                // Hangs until revoked (or killed).
                cancelled.cancelled().await;
                return Err(TaskError::retry("cancelled"));
            }
            tokio::time::sleep(Duration::from_millis(probe.ms)).await;
            Ok(())
        })
    }
}

/// The node ports holding at least one of this test's keys: proof that
/// the queues really are spread over the cluster.
async fn nodes_holding(cluster: &RedisCluster, prefix: &str) -> BTreeSet<String> {
    let mut holding = BTreeSet::new();
    for url in cluster.node_urls() {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            holding.insert(url);
        }
    }
    holding
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routed_queue_and_priority_round_trips_on_a_cluster() {
    let cluster = RedisCluster::start(&[]);
    let redis = TestRedis::at(&cluster.url()).await;
    // One bulk enqueue interleaving all queues: the broker must cut its
    // pipelines per slot.
    let mut sent = Vec::new();
    for round in 0..3 {
        for queue in QueueName::ROUTED {
            for priority in Priority::ALL {
                let label = format!("{queue}/{priority}/{round}");
                sent.push((label, queue.clone(), priority));
            }
        }
    }
    let envelopes: Vec<_> = sent
        .iter()
        .map(|(label, queue, priority)| {
            let mut envelope = spool_broker::Envelope::for_task(&Probe {
                label: label.clone(),
                ms: 0,
            })
            .unwrap();
            envelope.queue = queue.clone();
            envelope.priority = *priority;
            envelope
        })
        .collect();
    redis.broker.enqueue(&envelopes).await.unwrap();
    let spread = nodes_holding(&cluster, &redis.prefix).await;
    assert!(
        spread.len() >= 2,
        "the routed queues should span nodes: {spread:?}"
    );
    for queue in QueueName::ROUTED {
        assert_eq!(redis.stats(&queue).await.ready_total(), 9, "{queue}");
    }

    let runs: Runs = Arc::default();
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config("cluster-a"))
            .register::<Probe, _>(recording(runs.clone())),
    );
    worker
        .wait_for("all 36 probes to succeed", Duration::from_secs(15), |c| {
            c.succeeded == 36
        })
        .await;
    let report = worker.stop().await;
    assert_eq!((report.succeeded, report.failed), (36, 0), "{report:?}");

    let mut got: Vec<String> = runs.lock().unwrap().iter().map(|r| r.0.clone()).collect();
    got.sort();
    let mut want: Vec<String> = sent.iter().map(|s| s.0.clone()).collect();
    want.sort();
    assert_eq!(got, want, "each probe ran exactly once");
    for queue in QueueName::ROUTED {
        let stats = redis.stats(&queue).await;
        assert!(stats.is_drained(), "{queue}: {stats:?}");
        for priority in Priority::ALL {
            assert_eq!(redis.xlen(&queue, priority).await, 0, "{queue}/{priority}");
        }
    }
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_tasks_are_reclaimed_on_a_cluster() {
    let cluster = RedisCluster::start(&[]);
    let redis = TestRedis::at(&cluster.url()).await;
    let client = redis.client();
    let mut ids: Vec<TaskId> = Vec::new();
    for queue in [QueueName::DEFAULT, QueueName::GPU] {
        for n in 0..2 {
            let id = client
                .enqueue(Probe {
                    label: format!("{queue}-{n}"),
                    ms: u64::MAX,
                })
                .queue(queue.clone())
                .await
                .unwrap();
            ids.push(id);
        }
    }
    let runs: Runs = Arc::default();
    let doomed = spawn_worker(
        Worker::new(redis.broker.clone(), config("doomed"))
            .register::<Probe, _>(recording(runs.clone())),
    );
    doomed
        .wait_for("4 runs to start", Duration::from_secs(10), |c| {
            c.started == 4
        })
        .await;
    doomed.kill();

    let finished = Arc::new(AtomicU32::new(0));
    let done = Arc::clone(&finished);
    let survivor_runs = Arc::clone(&runs);
    let survivor = spawn_worker(
        Worker::new(redis.broker.clone(), config("survivor")).register::<Probe, _>(
            move |probe: Probe, ctx: TaskContext| {
                survivor_runs.lock().unwrap().push((
                    probe.label,
                    ctx.queue().clone(),
                    ctx.attempt(),
                ));
                done.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, TaskError>(()) }
            },
        ),
    );
    survivor
        .wait_for(
            "the 4 abandoned tasks to succeed",
            Duration::from_secs(15),
            |c| c.succeeded == 4,
        )
        .await;
    assert_eq!(survivor.stop().await.succeeded, 4);
    assert_eq!(finished.load(Ordering::SeqCst), 4, "each ran once more");
    let runs = runs.lock().unwrap().clone();
    let second: Vec<_> = runs.iter().filter(|r| r.2 == 2).collect();
    assert_eq!(second.len(), 4, "every redelivery is attempt 2: {runs:?}");
    for queue in [QueueName::DEFAULT, QueueName::GPU] {
        assert!(redis.stats(&queue).await.is_drained(), "{queue}");
    }
    assert_eq!(ids.len(), 4);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_run_is_dead_lettered_and_revived_on_a_cluster() {
    let cluster = RedisCluster::start(&[]);
    let redis = TestRedis::at(&cluster.url()).await;
    let garbage: &[u8] = b"not msgpack at all";
    redis
        .xadd_raw(&QueueName::ANALYSIS, Priority::High, &[("e", garbage)])
        .await;
    #[derive(Debug, Serialize, Deserialize)]
    struct Orphan {
        path: String,
    }
    impl Task for Orphan {
        const NAME: &'static str = "test.cluster.orphan";
        type Output = ();
    }
    let orphan = redis
        .client()
        .enqueue(Orphan {
            path: "in/cat.mp4".into(),
        })
        .queue(QueueName::STREAMING)
        .await
        .unwrap();

    let runs: Runs = Arc::default();
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config("dead"))
            .register::<Probe, _>(recording(runs.clone())),
    );
    wait_until(
        "both entries to be dead-lettered",
        Duration::from_secs(10),
        || async {
            redis.stats(&QueueName::ANALYSIS).await.dead == 1
                && redis.stats(&QueueName::STREAMING).await.dead == 1
        },
    )
    .await;

    let malformed = redis.dead_letters(&QueueName::ANALYSIS).await;
    assert_eq!(malformed.len(), 1, "{malformed:?}");
    assert_eq!(malformed[0].reason, "malformed");
    assert_eq!(malformed[0].raw, garbage, "the bytes are kept");
    let unknown = redis.dead_letters(&QueueName::STREAMING).await;
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].reason, "unknown_task");
    assert_eq!(unknown[0].envelope.as_ref().map(|e| e.id), Some(orphan));
    assert_eq!(redis.stats(&QueueName::STREAMING).await.dead, 1);

    // Reviving moves the letter back into its stream, in the same slot;
    // it dies again (still no handler), so count the second letter.
    let revived = redis
        .broker
        .requeue_dead(&QueueName::STREAMING, None)
        .await
        .unwrap();
    assert_eq!(revived, 1);
    worker
        .wait_for(
            "the revived orphan to die again",
            Duration::from_secs(10),
            |c| c.dead_lettered == 3,
        )
        .await;
    assert_eq!(
        redis.broker.purge_dead(&QueueName::ANALYSIS).await.unwrap(),
        1
    );
    worker.stop().await;
    assert!(runs.lock().unwrap().is_empty(), "no handler ran");
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_revoke_reach_workers_on_a_cluster() {
    let cluster = RedisCluster::start(&[]);
    let redis = TestRedis::at(&cluster.url()).await;
    let runs: Runs = Arc::default();
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config("control"))
            .register::<Probe, _>(recording(runs.clone())),
    );
    // The paused index and each queue's flag sit in different slots.
    redis.broker.pause(&QueueName::GPU).await.unwrap();
    redis.broker.pause(&QueueName::ANALYSIS).await.unwrap();
    assert_eq!(
        redis.broker.paused().await.unwrap(),
        vec![QueueName::ANALYSIS, QueueName::GPU]
    );
    let held = redis
        .client()
        .enqueue(Probe {
            label: "held".into(),
            ms: 0,
        })
        .queue(QueueName::GPU)
        .await
        .unwrap();
    let free = redis
        .client()
        .enqueue(Probe {
            label: "free".into(),
            ms: 0,
        })
        .await
        .unwrap();
    worker
        .wait_for("the unpaused queue's task", Duration::from_secs(10), |c| {
            c.succeeded == 1
        })
        .await;
    assert_eq!(redis.stats(&QueueName::GPU).await.ready_total(), 1);
    redis.broker.resume(&QueueName::GPU).await.unwrap();
    worker
        .wait_for("the resumed queue's task", Duration::from_secs(10), |c| {
            c.succeeded == 2
        })
        .await;
    assert_eq!(
        redis.broker.paused().await.unwrap(),
        vec![QueueName::ANALYSIS]
    );

    // Revoke travels over pub/sub, which a cluster broadcasts to every
    // node: the running task is cancelled.
    let hung = redis
        .client()
        .enqueue(Probe {
            label: "hung".into(),
            ms: u64::MAX,
        })
        .await
        .unwrap();
    worker
        .wait_for("the hung task to start", Duration::from_secs(10), |c| {
            c.started == 3
        })
        .await;
    redis
        .broker
        .revoke(hung, Duration::from_secs(60))
        .await
        .unwrap();
    worker
        .wait_for("the revoked task to stop", Duration::from_secs(10), |c| {
            c.revoked == 1
        })
        .await;
    let report = worker.stop().await;
    assert_eq!((report.succeeded, report.revoked), (2, 1), "{report:?}");
    let labels: Vec<String> = runs.lock().unwrap().iter().map(|r| r.0.clone()).collect();
    assert_eq!(labels, ["free", "held", "hung"]);
    assert_ne!(held, free);
    redis.cleanup().await;
}

/// Runs `spoolctl` with `args` against the cluster, returning stdout.
fn spoolctl(url: &str, prefix: &str, args: &[&str]) -> String {
    bins::stdout_of(
        Command::new(bins::spoolctl())
            .args(["--redis-url", url, "--key-prefix", prefix])
            .args(args),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_worker_and_spoolctl_run_against_a_cluster() {
    let cluster = RedisCluster::start(&[]);
    let url = cluster.url();
    let redis = TestRedis::at(&url).await;
    let prefix = redis.prefix.clone();
    let worker = Command::new(bins::spool_worker())
        .env("SPOOL_REDIS_URL", &url)
        .env("SPOOL_KEY_PREFIX", &prefix)
        .env("SPOOL_QUEUES", "default,gpu")
        .args(["--no-video", "--no-probe", "--force-gpu"])
        .args(["--concurrency", "4", "--metrics-addr", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    spoolctl(
        &url,
        &prefix,
        &["call", "--force", "spool.echo", "--count", "3"],
    );
    spoolctl(
        &url,
        &prefix,
        &[
            "call",
            "--force",
            "spool.ping",
            "--queue",
            "gpu",
            "--count",
            "2",
        ],
    );
    spoolctl(
        &url,
        &prefix,
        &["call", "--force", "spool.nope", "--max-attempts", "1"],
    );
    wait_until(
        "the worker to finish 5 tasks and dead-letter one",
        Duration::from_secs(20),
        || async {
            let default = redis.stats(&QueueName::DEFAULT).await;
            let gpu = redis.stats(&QueueName::GPU).await;
            default.completed_total + gpu.completed_total == 6 && default.dead == 1
        },
    )
    .await;

    let queues: serde_json::Value =
        serde_json::from_str(&spoolctl(&url, &prefix, &["queues", "--json"])).unwrap();
    let rows = queues.as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["queue"] == name)
            .unwrap_or_else(|| panic!("no {name} row: {queues}"))
            .clone()
    };
    assert_eq!(row("default")["dead"], 1, "{queues}");
    assert_eq!(row("gpu")["backlog"], 0, "{queues}");
    let dead = spoolctl(&url, &prefix, &["dead", "list", "default"]);
    assert!(dead.contains("spool.nope"), "{dead}");
    let workers = spoolctl(&url, &prefix, &["workers", "--json"]);
    assert!(workers.contains("default"), "{workers}");

    bins::stop_warm(worker);
    redis.cleanup().await;
}

/// The scripts the paths above do not reach, each run on the cluster:
/// a script touching a key it did not declare, in another slot, fails
/// there ("Script attempted to access a non local key in a cluster node").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_lua_script_runs_on_a_cluster() {
    let cluster = RedisCluster::start(&[]);
    let redis = TestRedis::at(&cluster.url()).await;
    let broker = &redis.broker;

    // enqueue_unique / release_unique.
    let probe = Probe {
        label: "unique".into(),
        ms: 0,
    };
    let first = redis
        .client()
        .enqueue(probe.clone())
        .unique_key("thumb:42", Duration::from_secs(60))
        .queue(QueueName::ANALYSIS)
        .await
        .unwrap();
    let second = redis
        .client()
        .enqueue(probe)
        .unique_key("thumb:42", Duration::from_secs(60))
        .queue(QueueName::ANALYSIS)
        .await
        .unwrap();
    assert_eq!(first, second, "the duplicate gets the holder's id");
    broker
        .release_unique(&QueueName::ANALYSIS, "thumb:42", first)
        .await
        .unwrap();
    assert_eq!(redis.stats(&QueueName::ANALYSIS).await.ready_total(), 1);

    // rate_limit: two tokens, then a wait.
    let limit: spool_broker::RateLimit = "2/m".parse().unwrap();
    assert_eq!(
        broker.acquire_rate("video.transcode", limit).await.unwrap(),
        None
    );
    assert_eq!(
        broker.acquire_rate("video.transcode", limit).await.unwrap(),
        None
    );
    assert!(
        broker
            .acquire_rate("video.transcode", limit)
            .await
            .unwrap()
            .is_some()
    );

    // The beat scripts: lock, fence, tick, renew, release.
    let lock = broker
        .leader_lock("beat", "test-owner", Duration::from_secs(5))
        .unwrap();
    let token = lock.try_acquire().await.unwrap().expect("a free lock");
    assert!(lock.renew(token).await.unwrap());
    assert!(lock.fence_queue(token, &QueueName::GPU).await.unwrap());
    let tick = spool_broker::Envelope::new("spool.ping", QueueName::GPU, Vec::new());
    let at = spool_broker::Timestamp::now();
    assert_eq!(
        lock.enqueue_tick(token, "nightly", at, &tick)
            .await
            .unwrap(),
        spool_broker::TickOutcome::Enqueued
    );
    assert!(matches!(
        lock.enqueue_tick(token, "nightly", at, &tick)
            .await
            .unwrap(),
        spool_broker::TickOutcome::AlreadyEnqueued { .. }
    ));
    lock.advance_counter(token).await.unwrap();
    assert!(lock.release(token).await.unwrap());

    // purge: every key of the queue, in its slot.
    assert_eq!(broker.purge(&QueueName::GPU).await.unwrap(), 1);
    assert_eq!(broker.purge(&QueueName::ANALYSIS).await.unwrap(), 1);
    redis.cleanup().await;
}

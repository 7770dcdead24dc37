//! Redis itself: settings that could lose tasks are reported, and workers
//! and producers ride out a Redis crash and restart without losing a task.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Broker, QueueName, Task};
use spool_tests::{RedisServer, TestRedis, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    seq: u32,
}

impl Task for Job {
    const NAME: &'static str = "test.redis.job";
    type Output = ();
}

#[tokio::test]
async fn an_eviction_policy_that_could_drop_tasks_is_reported() {
    let lru = RedisServer::start(&["--maxmemory-policy", "allkeys-lru"]);
    let redis = TestRedis::at(&lru.url()).await;
    let warnings = redis.broker.server_warnings().await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("allkeys-lru") && warnings[0].contains("noeviction"));

    let safe = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let redis = TestRedis::at(&safe.url()).await;
    assert!(redis.broker.server_warnings().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_across_a_redis_crash_with_aof() {
    let mut server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let redis = TestRedis::at(&server.url()).await;
    let client = redis.client();
    client
        .enqueue_many((0..300).map(|seq| Job { seq }))
        .await
        .unwrap();

    let seen: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let record = Arc::clone(&seen);
    let config = WorkerConfig {
        concurrency: 4,
        prefetch: 16,
        poll_interval: Duration::from_millis(100),
        visibility_timeout: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(500),
        ..WorkerConfig::default()
    };
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config).register::<Job, _>(
            move |job: Job, _: TaskContext| {
                record.lock().unwrap().insert(job.seq);
                async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, TaskError>(())
                }
            },
        ),
    );
    worker
        .wait_for("a third done", Duration::from_secs(10), |c| {
            c.succeeded >= 100
        })
        .await;
    server.restart(); // SIGKILL, then start again from the AOF

    // Producers keep going once Redis is back (their first tries may fail).
    let mut enqueued = false;
    for _ in 0..100 {
        if client
            .enqueue_many((300..400).map(|seq| Job { seq }))
            .await
            .is_ok()
        {
            enqueued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(enqueued, "the client never reconnected");
    wait_until("every task to run", Duration::from_secs(30), || {
        let all = seen.lock().unwrap().len() == 400;
        async move { all }
    })
    .await;
    wait_until("the queue to drain", Duration::from_secs(30), || async {
        redis
            .broker
            .stats(&QueueName::DEFAULT)
            .await
            .is_ok_and(|s| s.is_drained())
    })
    .await;
    let report = worker.stop().await;
    assert!(report.succeeded >= 400, "{report:?}");
    assert_eq!(*seen.lock().unwrap(), (0..400).collect::<BTreeSet<_>>());
}

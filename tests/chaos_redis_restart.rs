//! Chaos (c): Redis is killed and restarted mid-run, with AOF and
//! `appendfsync always`: worker processes reconnect and no task is lost.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use spool_broker::{Broker, QueueName};
use spool_tests::chaos::{Figures, Fleet, fleet_args, runs};
use spool_tests::{RedisServer, TestRedis, wait_until};

#[path = "bin/chaos_tasks.rs"]
mod chaos_tasks;
use chaos_tasks::Count;

const TASKS: u32 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing() {
    let mut server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = server.url();
    let redis = TestRedis::at(&url).await;
    redis
        .client()
        .enqueue_many((0..TASKS).map(|seq| Count { seq, ms: 5 }))
        .await
        .unwrap();
    let args = fleet_args(&url, &redis.prefix, &[]);
    let fleet = Fleet::start(env!("CARGO_BIN_EXE_chaos-worker"), 3, &args);
    let started = Instant::now();
    wait_until(
        "a quarter of the tasks to run",
        Duration::from_secs(30),
        || async { runs(&url, &redis.prefix).await.len() >= (TASKS / 4) as usize },
    )
    .await;
    server.restart();
    wait_until(
        "the queue to drain after the restart",
        Duration::from_secs(60),
        || async {
            redis
                .broker
                .stats(&QueueName::DEFAULT)
                .await
                .is_ok_and(|s| s.is_drained())
        },
    )
    .await;
    let figures = Figures::from_runs(
        TASKS,
        0,
        &runs(&url, &redis.prefix).await,
        started.elapsed().as_secs_f64(),
    );
    figures.print("redis-restart");
    drop(fleet);
    assert_eq!(figures.lost, 0, "{figures:?}");
    let stats = redis.broker.stats(&QueueName::DEFAULT).await.unwrap();
    assert_eq!(stats.dead, 0, "tasks failed across the restart: {stats:?}");
}

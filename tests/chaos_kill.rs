//! Chaos (a): 5,000 tasks while workers are SIGKILLed about every 2 s and
//! restarted. Every task succeeds, no id is lost, and duplicate executions
//! stay within kills × prefetch.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use spool_broker::QueueName;
use spool_tests::chaos::{Figures, Fleet, fleet_args, jittered, runs};
use spool_tests::{TestRedis, redis_url};

#[path = "bin/chaos_tasks.rs"]
mod chaos_tasks;
use chaos_tasks::Count;

const TASKS: u32 = 5_000;
const PREFETCH: u32 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_workers_loses_nothing() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue_many((0..TASKS).map(|seq| Count { seq, ms: 30 }))
        .await
        .unwrap();
    let args = fleet_args(
        &redis_url(),
        &redis.prefix,
        &["--prefetch", "16", "--concurrency", "8"],
    );
    let mut fleet = Fleet::start(env!("CARGO_BIN_EXE_chaos-worker"), 3, &args);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut next_kill = started + jittered(Duration::from_secs(2));
    loop {
        let stats = redis.stats(&QueueName::DEFAULT).await;
        if stats.is_drained() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained after 2 minutes: {stats:?}"
        );
        if Instant::now() >= next_kill {
            fleet.kill_one();
            next_kill = Instant::now() + jittered(Duration::from_secs(2));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let figures = Figures::from_runs(
        TASKS,
        fleet.deaths,
        &runs(&redis_url(), &redis.prefix).await,
        started.elapsed().as_secs_f64(),
    );
    figures.print("kill");
    drop(fleet);
    assert!(
        figures.kills >= 2,
        "too few kills to mean anything: {figures:?}"
    );
    assert_eq!(figures.lost, 0, "{figures:?}");
    assert!(
        figures.duplicates <= figures.kills * PREFETCH,
        "{figures:?}"
    );
    assert_eq!(redis.stats(&QueueName::DEFAULT).await.dead, 0);
    redis.cleanup().await;
}

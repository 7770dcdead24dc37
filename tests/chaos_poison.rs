//! Chaos (d): a poison task that aborts every process that runs it ends in
//! the dead-letter stream after `max_deliveries`, while the other tasks
//! complete.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use spool_broker::{Broker, QueueName};
use spool_tests::chaos::{Figures, Fleet, fleet_args, runs};
use spool_tests::{TestRedis, redis_url};

#[path = "bin/chaos_tasks.rs"]
mod chaos_tasks;
use chaos_tasks::{Abort, Count};

const TASKS: u32 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_task_is_dead_lettered_and_the_rest_completes() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let poison = client.enqueue(Abort {}).max_attempts(10).await.unwrap();
    client
        .enqueue_many((0..TASKS).map(|seq| Count { seq, ms: 20 }))
        .await
        .unwrap();
    let args = fleet_args(
        &redis_url(),
        &redis.prefix,
        &[
            "--max-deliveries",
            "3",
            "--visibility-timeout",
            "1s",
            "--heartbeat-interval",
            "250ms",
        ],
    );
    // The test plays the supervisor: it restarts the workers the poison kills.
    let mut fleet = Fleet::start(env!("CARGO_BIN_EXE_chaos-worker"), 2, &args);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        fleet.replace_dead();
        let stats = redis.stats(&QueueName::DEFAULT).await;
        if stats.is_drained() && stats.dead == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled after a minute: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let figures = Figures::from_runs(
        TASKS,
        fleet.deaths,
        &runs(&redis_url(), &redis.prefix).await,
        started.elapsed().as_secs_f64(),
    );
    figures.print("poison");
    drop(fleet);
    let dead = redis
        .broker
        .dead_letters(&QueueName::DEFAULT, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.as_ref().map(|e| e.id), Some(poison));
    assert_eq!(dead[0].reason, "too_many_deliveries");
    assert_eq!(
        figures.kills, 3,
        "the poison killed one worker per allowed delivery: {figures:?}"
    );
    assert_eq!(figures.lost, 0, "{figures:?}");
    redis.cleanup().await;
}

//! The dead-letter admin API: list, requeue one or all, purge.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Broker, Priority, QueueName, Task};
use spool_tests::{TestRedis, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    n: u32,
}

impl Task for Flaky {
    const NAME: &'static str = "test.dead.flaky";
    type Output = u32;
}

#[tokio::test]
async fn dead_letters_are_requeued_as_fresh_tasks_then_purged() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let queue = QueueName::DEFAULT;
    client
        .enqueue_many((0..3).map(|n| Flaky { n }))
        .max_attempts(1)
        .priority(Priority::High)
        .await
        .unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let healthy = Arc::clone(&fixed);
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config).register::<Flaky, _>(
            move |task: Flaky, ctx: TaskContext| {
                let healthy = healthy.load(Ordering::SeqCst);
                async move {
                    if healthy {
                        // Attempt 1 died (max_attempts 1): the revived run
                        // is attempt 2, with a fresh budget of one attempt.
                        assert_eq!((ctx.attempt(), ctx.max_attempts()), (2, 2), "revived run");
                        Ok(task.n)
                    } else {
                        Err(TaskError::retry("the upstream is down"))
                    }
                }
            },
        ),
    );
    // Counters move when an outcome is decided; the dead letter is stored a
    // moment later, by the settler.
    spool_tests::wait_until("3 dead letters stored", Duration::from_secs(5), || async {
        redis.stats(&queue).await.dead == 3
    })
    .await;
    let dead = redis.broker.dead_letters(&queue, 10).await.unwrap();
    assert_eq!(dead.len(), 3);
    assert!(
        dead.iter()
            .all(|d| d.reason == "attempts_exhausted" && d.error == "the upstream is down")
    );

    // The fix is deployed: requeue one, then the rest.
    fixed.store(true, Ordering::SeqCst);
    let one = redis
        .broker
        .requeue_dead(&queue, Some(&[dead[0].entry_id.clone()]))
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert_eq!(
        redis
            .broker
            .requeue_dead(&queue, Some(&[dead[0].entry_id.clone()]))
            .await
            .unwrap(),
        0,
        "never twice"
    );
    worker
        .wait_for("the requeued task", Duration::from_secs(5), |c| {
            c.succeeded == 1
        })
        .await;
    assert_eq!(redis.broker.requeue_dead(&queue, None).await.unwrap(), 2);
    worker
        .wait_for("all requeued tasks", Duration::from_secs(5), |c| {
            c.succeeded == 3
        })
        .await;
    assert_eq!(redis.stats(&queue).await.dead, 0);

    // A new failure, purged.
    fixed.store(false, Ordering::SeqCst);
    client
        .enqueue(Flaky { n: 9 })
        .max_attempts(1)
        .await
        .unwrap();
    worker
        .wait_for("a 4th dead letter", Duration::from_secs(5), |c| {
            c.dead_lettered == 4
        })
        .await;
    worker.stop().await;
    assert_eq!(redis.broker.purge_dead(&queue).await.unwrap(), 1);
    let stats = redis.stats(&queue).await;
    assert!(stats.is_drained() && stats.dead == 0, "{stats:?}");
    redis.cleanup().await;
}

#[tokio::test]
async fn a_requeued_dead_letter_that_succeeds_is_recorded_as_succeeded() {
    use spool_broker::JobStatus;
    use spool_broker::store::JobStore;

    let redis = TestRedis::new().await;
    let dir = std::env::temp_dir().join(format!("spool-revive-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let store = JobStore::create(&format!("sqlite://{}/jobs.db", dir.display()))
        .await
        .unwrap();
    let id = redis
        .client()
        .enqueue(Flaky { n: 1 })
        .max_attempts(1)
        .await
        .unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let healthy = Arc::clone(&fixed);
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config)
            .with_store(store.clone())
            .register::<Flaky, _>(move |task: Flaky, _: TaskContext| {
                let healthy = healthy.load(Ordering::SeqCst);
                async move {
                    if healthy {
                        Ok(task.n)
                    } else {
                        Err(TaskError::retry("the upstream is down"))
                    }
                }
            }),
    );
    // The store and the dead-letter stream are written independently:
    // wait for both before reviving.
    spool_tests::wait_until(
        "the dead outcome to be stored and the letter written",
        Duration::from_secs(5),
        || async {
            store.status(id).await.unwrap() == Some(JobStatus::Dead)
                && redis.stats(&QueueName::DEFAULT).await.dead == 1
        },
    )
    .await;

    fixed.store(true, Ordering::SeqCst);
    assert_eq!(
        redis
            .broker
            .requeue_dead(&QueueName::DEFAULT, None)
            .await
            .unwrap(),
        1
    );
    worker
        .wait_for("the revived run", Duration::from_secs(5), |c| {
            c.succeeded == 1
        })
        .await;
    worker.stop().await;
    let record = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.attempts),
        (JobStatus::Succeeded, 2),
        "{record:?}"
    );
    assert_eq!(record.output::<u32>().unwrap(), Some(1));
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    redis.cleanup().await;
}

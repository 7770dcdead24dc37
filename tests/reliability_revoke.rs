//! Revocation: before a task starts, while it runs, and for workers that
//! join after the revocation was broadcast.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Broker, QueueName, Task};
use spool_tests::{TestRedis, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Encode {
    /// Whether the handler waits for cancellation instead of finishing.
    long: bool,
}

impl Task for Encode {
    const NAME: &'static str = "test.revoke.encode";
    type Output = ();
}

fn config() -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_millis(100),
        cancel_grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

#[derive(Default)]
struct Seen {
    started: AtomicU32,
    cancelled: AtomicBool,
}

fn handler(
    seen: Arc<Seen>,
) -> impl Fn(Encode, TaskContext) -> futures::future::BoxFuture<'static, Result<(), TaskError>>
+ Send
+ Sync {
    move |task: Encode, ctx: TaskContext| {
        let seen = Arc::clone(&seen);
        seen.started.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if task.long {
                ctx.cancellation().cancelled().await;
                seen.cancelled.store(true, Ordering::SeqCst);
                return Err(TaskError::retry("cancelled"));
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_task_revoked_before_it_starts_is_skipped() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let doomed = client.enqueue(Encode { long: false }).await.unwrap();
    client.enqueue(Encode { long: false }).await.unwrap();
    // Revoked before any worker listens: a joining worker loads the set.
    client.revoke(doomed).await.unwrap();
    let seen = Arc::new(Seen::default());
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config()).register::<Encode, _>(handler(seen.clone())),
    );
    let report = worker
        .wait_for("one revoked, one run", Duration::from_secs(5), |c| {
            c.revoked == 1 && c.succeeded == 1
        })
        .await;
    worker.stop().await;
    assert_eq!(seen.started.load(Ordering::SeqCst), 1, "{report:?}");
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    assert_eq!(redis.broker.revoked().await.unwrap(), vec![doomed]);
    redis.cleanup().await;
}

#[tokio::test]
async fn a_running_task_is_cancelled_when_revoked() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let seen = Arc::new(Seen::default());
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config()).register::<Encode, _>(handler(seen.clone())),
    );
    let id = client.enqueue(Encode { long: true }).await.unwrap();
    worker
        .wait_for("the run to start", Duration::from_secs(5), |c| {
            c.started == 1
        })
        .await;
    client.revoke(id).await.unwrap();
    let report = worker
        .wait_for("the run to be revoked", Duration::from_secs(5), |c| {
            c.revoked == 1
        })
        .await;
    worker.stop().await;
    assert!(
        seen.cancelled.load(Ordering::SeqCst),
        "the handler's token fired"
    );
    assert_eq!(
        (report.retried, report.failed),
        (0, 0),
        "a revoked run is not retried"
    );
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

#[tokio::test]
async fn a_run_that_ignores_cancellation_is_dropped_after_the_grace() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let worker = spawn_worker(
        Worker::new(
            redis.broker.clone(),
            WorkerConfig {
                cancel_grace: Duration::from_millis(200),
                ..config()
            },
        )
        .register::<Encode, _>(|_: Encode, _: TaskContext| async {
            // Deaf to cancellation.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, TaskError>(())
        }),
    );
    let id = client.enqueue(Encode { long: true }).await.unwrap();
    worker
        .wait_for("the run to start", Duration::from_secs(5), |c| {
            c.started == 1
        })
        .await;
    client.revoke(id).await.unwrap();
    worker
        .wait_for("the run to be dropped", Duration::from_secs(5), |c| {
            c.revoked == 1
        })
        .await;
    worker.stop().await;
    wait_until("the queue to drain", Duration::from_secs(5), || async {
        redis.stats(&QueueName::DEFAULT).await.is_drained()
    })
    .await;
    redis.cleanup().await;
}

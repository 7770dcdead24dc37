//! Rate limits per task name, shared by every worker (a token bucket in
//! Redis).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, RateLimit, Task, TaskOptions};
use spool_tests::{TestRedis, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CallApi {
    n: u32,
}

impl Task for CallApi {
    const NAME: &'static str = "test.rate.call-api";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            rate_limit: Some(RateLimit {
                limit: 5,
                period: Duration::from_secs(1),
            }),
            ..TaskOptions::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_bucket() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue_many((0..12).map(|n| CallApi { n }))
        .await
        .unwrap();
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let config = WorkerConfig {
        concurrency: 8,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let starts = Arc::clone(&starts);
            spawn_worker(
                Worker::new(redis.broker.clone(), config.clone()).register::<CallApi, _>(
                    move |_: CallApi, _: TaskContext| {
                        starts.lock().unwrap().push(Instant::now());
                        async { Ok::<_, TaskError>(()) }
                    },
                ),
            )
        })
        .collect();
    spool_tests::wait_until("12 calls", Duration::from_secs(10), || {
        let done = starts.lock().unwrap().len() == 12;
        async move { done }
    })
    .await;
    let mut deferred = 0;
    for worker in workers {
        deferred += worker.stop().await.deferred;
    }
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    // Five at once (the burst), then one per 200 ms across both workers.
    for (k, start) in starts.iter().enumerate().skip(5) {
        let earliest = Duration::from_millis(200) * (k as u32 - 4) - Duration::from_millis(30);
        let since = start.duration_since(starts[0]);
        assert!(
            since >= earliest,
            "call {k} started {since:?} after the first, before {earliest:?}"
        );
    }
    assert!(deferred > 0);
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

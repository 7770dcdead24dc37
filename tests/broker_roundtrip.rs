//! Typed round trips through real Redis on every routed queue and priority.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Priority, QueueName, Task};
use spool_tests::{TestRedis, shutdown_switch, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Probe {
    label: String,
    frames: Vec<u32>,
    ratio: f64,
}

impl Task for Probe {
    const NAME: &'static str = "test.probe";
    type Output = usize;
}

type Seen = Arc<Mutex<Vec<(Probe, QueueName, Priority, u32)>>>;

fn recorder(
    seen: Seen,
) -> impl Fn(Probe, TaskContext) -> std::future::Ready<Result<usize, TaskError>> + Send + Sync {
    move |probe: Probe, ctx: TaskContext| {
        let frames = probe.frames.len();
        seen.lock()
            .unwrap()
            .push((probe, ctx.queue().clone(), ctx.priority(), ctx.attempt()));
        std::future::ready(Ok(frames))
    }
}

#[tokio::test]
async fn every_routed_queue_and_priority_round_trips() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let mut sent = Vec::new();
    for queue in QueueName::ROUTED {
        for priority in Priority::ALL {
            let probe = Probe {
                label: format!("{queue}/{priority}"),
                frames: vec![1, 2, 3],
                ratio: 0.5,
            };
            client
                .enqueue(probe.clone())
                .queue(queue.clone())
                .priority(priority)
                .await
                .unwrap();
            sent.push((probe, queue.clone(), priority));
        }
    }

    let seen: Seen = Arc::default();
    let config = WorkerConfig {
        queues: QueueName::ROUTED.to_vec(),
        ..WorkerConfig::default()
    };
    let worker =
        Worker::new(redis.broker.clone(), config).register::<Probe, _>(recorder(seen.clone()));
    let counters = worker.counters();
    let (stop, shutdown) = shutdown_switch();
    let running = tokio::spawn(worker.run(shutdown));
    wait_until("all 12 probes to succeed", Duration::from_secs(10), || {
        let done = counters.snapshot().succeeded == 12;
        async move { done }
    })
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();

    let mut got: Vec<_> = seen.lock().unwrap().clone();
    got.sort_by(|a, b| a.0.label.cmp(&b.0.label));
    sent.sort_by(|a, b| a.0.label.cmp(&b.0.label));
    assert_eq!(got.len(), sent.len());
    for ((probe, queue, priority, attempt), (sent_probe, sent_queue, sent_priority)) in
        got.iter().zip(&sent)
    {
        assert_eq!(probe, sent_probe);
        assert_eq!(queue, sent_queue);
        assert_eq!(priority, sent_priority);
        assert_eq!(*attempt, 1);
    }
    for queue in QueueName::ROUTED {
        let stats = redis.stats(&queue).await;
        assert!(stats.is_drained(), "{queue}: {stats:?}");
        // Late ack deletes entries: stream memory follows the backlog.
        let mut raw = redis.raw();
        for level in ["high", "normal", "low"] {
            let len: usize = redis::AsyncCommands::xlen(&mut raw, redis.stream_key(&queue, level))
                .await
                .unwrap();
            assert_eq!(len, 0, "{queue}:{level} still holds entries");
        }
    }
    redis.cleanup().await;
}

#[tokio::test]
async fn higher_priorities_are_served_first() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    for priority in [Priority::Low, Priority::Normal, Priority::High] {
        for n in 0..3 {
            let probe = Probe {
                label: format!("{priority}-{n}"),
                frames: vec![],
                ratio: 0.0,
            };
            client.enqueue(probe).priority(priority).await.unwrap();
        }
    }
    let seen: Seen = Arc::default();
    let config = WorkerConfig {
        concurrency: 1,
        prefetch: 1,
        ..WorkerConfig::default()
    };
    let worker =
        Worker::new(redis.broker.clone(), config).register::<Probe, _>(recorder(seen.clone()));
    let counters = worker.counters();
    let (stop, shutdown) = shutdown_switch();
    let running = tokio::spawn(worker.run(shutdown));
    wait_until("all 9 probes", Duration::from_secs(10), || {
        let done = counters.snapshot().succeeded == 9;
        async move { done }
    })
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let order: Vec<Priority> = seen.lock().unwrap().iter().map(|s| s.2).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "served out of priority order");
    redis.cleanup().await;
}

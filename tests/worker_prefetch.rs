//! The prefetch bound, observed from Redis: a worker never holds more
//! unacknowledged entries than `prefetch`, and it does fill that bound.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, Task};
use spool_tests::{TestRedis, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nap {
    seq: u32,
}

impl Task for Nap {
    const NAME: &'static str = "test.prefetch.nap";
    type Output = u32;
}

async fn nap(task: Nap, _ctx: TaskContext) -> Result<u32, TaskError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(task.seq)
}

/// The most entries seen pending, in total and per consumer, over the run.
#[derive(Debug, Default)]
struct Peaks {
    total: u64,
    per_consumer: BTreeMap<String, u64>,
    samples: u64,
}

/// Samples `XPENDING` of the queue's three streams (atomically) about every
/// millisecond until `done` is set.
fn sample_pending(redis: Arc<TestRedis>, done: Arc<AtomicBool>) -> JoinHandle<Peaks> {
    tokio::spawn(async move {
        let mut peaks = Peaks::default();
        while !done.load(Ordering::Relaxed) {
            let pending = redis.pending_by_consumer(&QueueName::DEFAULT).await;
            peaks.total = peaks.total.max(pending.values().sum());
            for (consumer, count) in pending {
                let peak = peaks.per_consumer.entry(consumer).or_default();
                *peak = (*peak).max(count);
            }
            peaks.samples += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        peaks
    })
}

fn config(consumer: &str, concurrency: usize, prefetch: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        prefetch,
        poll_interval: Duration::from_millis(100),
        consumer_name: Some(consumer.to_owned()),
        ..WorkerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_never_holds_more_than_its_prefetch() {
    let redis = Arc::new(TestRedis::new().await);
    redis
        .client()
        .enqueue_many((0..60).map(|seq| Nap { seq }))
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_pending(Arc::clone(&redis), Arc::clone(&done));
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config("solo", 2, 5)).register::<Nap, _>(nap),
    );
    worker
        .wait_for("all 60 tasks to succeed", Duration::from_secs(10), |c| {
            c.succeeded >= 60
        })
        .await;
    done.store(true, Ordering::Relaxed);
    let peaks = sampler.await.unwrap();
    let report = worker.stop().await;

    assert_eq!(report.succeeded, 60, "{report:?}");
    assert_eq!(report.started, 60, "{report:?}");
    // 60 tasks of 20 ms two at a time take about 600 ms: the sampler ran
    // throughout, not once or twice.
    assert!(peaks.samples >= 50, "the sampler was starved: {peaks:?}");
    assert!(
        peaks.total <= 5,
        "more than 5 entries pending at once: {peaks:?}"
    );
    // The bound is used, not merely respected: with 60 tasks ready the
    // worker keeps 2 running and 3 waiting.
    assert_eq!(
        peaks.total, 5,
        "the prefetch bound was never reached: {peaks:?}"
    );
    assert_eq!(
        peaks.per_consumer.keys().collect::<Vec<_>>(),
        ["solo"],
        "{peaks:?}"
    );

    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "{stats:?}");
    Arc::into_inner(redis).unwrap().cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_each_stay_within_their_own_prefetch() {
    let redis = Arc::new(TestRedis::new().await);
    redis
        .client()
        .enqueue_many((0..60).map(|seq| Nap { seq }))
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_pending(Arc::clone(&redis), Arc::clone(&done));
    let first = spawn_worker(
        Worker::new(redis.broker.clone(), config("first", 1, 3)).register::<Nap, _>(nap),
    );
    let second = spawn_worker(
        Worker::new(redis.broker.clone(), config("second", 1, 3)).register::<Nap, _>(nap),
    );
    let (a, b) = (first.counters.clone(), second.counters.clone());
    spool_tests::wait_until("all 60 tasks to succeed", Duration::from_secs(10), || {
        let done = a.snapshot().succeeded + b.snapshot().succeeded >= 60;
        async move { done }
    })
    .await;
    done.store(true, Ordering::Relaxed);
    let peaks = sampler.await.unwrap();
    let (first, second) = (first.stop().await, second.stop().await);

    assert_eq!(
        first.succeeded + second.succeeded,
        60,
        "{first:?} {second:?}"
    );
    assert!(
        first.succeeded > 0 && second.succeeded > 0,
        "one worker did all the work: {first:?} {second:?}"
    );
    assert!(peaks.samples >= 50, "the sampler was starved: {peaks:?}");
    assert!(
        peaks.total <= 6,
        "more than 6 entries pending at once: {peaks:?}"
    );
    for consumer in ["first", "second"] {
        let peak = peaks.per_consumer.get(consumer).copied();
        assert!(
            peak.is_some_and(|p| p <= 3),
            "{consumer} held more than 3: {peaks:?}"
        );
        // Each consumer fills its own bound: one running, two waiting.
        assert_eq!(
            peak,
            Some(3),
            "{consumer} never reached its prefetch bound: {peaks:?}"
        );
    }
    assert_eq!(peaks.per_consumer.len(), 2, "{peaks:?}");

    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "{stats:?}");
    Arc::into_inner(redis).unwrap().cleanup().await;
}

#[tokio::test]
async fn an_idle_queue_does_not_hold_the_slots_another_queue_needs() {
    // "A new task ends the wait at once" (WorkerConfig::poll_interval) must
    // hold for every queue a worker serves, not only for the one whose
    // fetcher happens to be blocked in Redis.
    let redis = TestRedis::new().await;
    let poll_interval = Duration::from_secs(2);
    let config = WorkerConfig {
        queues: vec![QueueName::DEFAULT, QueueName::ANALYSIS],
        concurrency: 2,
        prefetch: 4,
        poll_interval,
        ..WorkerConfig::default()
    };
    let worker = spawn_worker(Worker::new(redis.broker.clone(), config).register::<Nap, _>(nap));
    // A fetcher's first fetch creates its queue's streams (and group): wait
    // until one queue is being waited on, then send a task to a queue whose
    // fetcher has not fetched yet, if any.
    let queues = [QueueName::DEFAULT, QueueName::ANALYSIS];
    let keys = queues.clone().map(|q| redis.stream_key(&q, "normal"));
    spool_tests::wait_until(
        "the worker to wait on a queue",
        Duration::from_secs(5),
        || async { redis.exists(&keys[0]).await || redis.exists(&keys[1]).await },
    )
    .await;
    let mut fetched = Vec::new();
    for (queue, key) in queues.iter().zip(&keys) {
        fetched.push((queue.clone(), redis.exists(key).await));
    }
    let target = fetched
        .iter()
        .find(|(_, exists)| !exists)
        .map_or(QueueName::ANALYSIS, |(q, _)| q.clone());

    let enqueued = tokio::time::Instant::now();
    redis
        .client()
        .enqueue(Nap { seq: 1 })
        .queue(target.clone())
        .await
        .unwrap();
    worker
        .wait_for("the task to run", Duration::from_secs(5), |c| {
            c.succeeded >= 1
        })
        .await;
    let latency = enqueued.elapsed();
    worker.stop().await;
    redis.cleanup().await;
    assert!(
        latency < Duration::from_secs(1),
        "a task on {target} waited {latency:?} (poll_interval {poll_interval:?}) while the worker idled; \
         fetched before it: {fetched:?}"
    );
}

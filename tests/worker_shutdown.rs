//! Warm shutdown and `max_tasks`: nothing in flight is lost, nothing
//! prefetched is stranded, nothing runs twice.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Priority, QueueName, Task, decode_payload};
use spool_tests::{TestRedis, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Encode {
    seq: u32,
    millis: u64,
}

impl Task for Encode {
    const NAME: &'static str = "test.shutdown.encode";
    type Output = u32;
}

/// Which tasks started, and which finished, by seq, across workers.
#[derive(Debug, Default)]
struct Log {
    started: Mutex<Vec<u32>>,
    finished: Mutex<Vec<u32>>,
}

fn encoder(
    log: Arc<Log>,
) -> impl Fn(
    Encode,
    TaskContext,
) -> std::pin::Pin<Box<dyn Future<Output = Result<u32, TaskError>> + Send>>
+ Send
+ Sync {
    move |task: Encode, _ctx: TaskContext| {
        let log = Arc::clone(&log);
        Box::pin(async move {
            log.started.lock().unwrap().push(task.seq);
            tokio::time::sleep(Duration::from_millis(task.millis)).await;
            log.finished.lock().unwrap().push(task.seq);
            Ok(task.seq)
        })
    }
}

fn config(concurrency: usize, prefetch: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        prefetch,
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

fn sorted(seqs: &Mutex<Vec<u32>>) -> Vec<u32> {
    let mut seqs = seqs.lock().unwrap().clone();
    seqs.sort_unstable();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_shutdown_finishes_running_tasks_and_requeues_prefetched_ones() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue_many((0..40).map(|seq| Encode { seq, millis: 200 }))
        .await
        .unwrap();
    let last_enqueued = redis
        .stream_entries(&QueueName::DEFAULT, Priority::Normal)
        .await
        .last()
        .unwrap()
        .0
        .clone();

    let log = Arc::new(Log::default());
    let first = spawn_worker(
        Worker::new(redis.broker.clone(), config(4, 16))
            .register::<Encode, _>(encoder(log.clone())),
    );
    first
        .wait_for("4 tasks to start", Duration::from_secs(5), |c| {
            c.started >= 4
        })
        .await;
    let report = first.stop().await;

    // The runs in flight finished (and were acknowledged), none was cut off.
    let started = sorted(&log.started);
    assert!(report.started >= 4, "{report:?}");
    assert_eq!(
        report.succeeded, report.started,
        "runs in flight were lost: {report:?}"
    );
    assert_eq!(
        sorted(&log.finished),
        started,
        "runs in flight were cut off"
    );
    assert_eq!(
        (report.failed, report.retried, report.dead_lettered),
        (0, 0, 0),
        "{report:?}"
    );
    // It had prefetched more than it ran (16 slots, 4 running): those went
    // back unstarted, within the prefetch bound.
    assert!(
        report.requeued >= 1,
        "nothing prefetched was requeued: {report:?}"
    );
    assert!(report.requeued + report.started <= 16, "{report:?}");

    // Nothing is left pending; the requeued tasks are back in the stream as
    // new entries, after everything enqueued before, and nothing is lost.
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert_eq!(stats.pending, 0, "{stats:?}");
    assert_eq!(stats.delayed, 0, "{stats:?}");
    assert_eq!(
        stats.ready_total() + report.succeeded,
        40,
        "{stats:?} {report:?}"
    );
    let queued = redis
        .stream_envelopes(&QueueName::DEFAULT, Priority::Normal)
        .await;
    let requeued: Vec<u32> = queued
        .iter()
        .filter(|(id, _)| stream_id(id) > stream_id(&last_enqueued))
        .map(|(_, e)| decode_payload::<Encode>(&e.payload).unwrap().seq)
        .collect();
    assert_eq!(
        requeued.len() as u64,
        report.requeued,
        "requeued: {requeued:?}"
    );
    let mut queued_seqs: Vec<u32> = queued
        .iter()
        .map(|(_, e)| decode_payload::<Encode>(&e.payload).unwrap().seq)
        .chain(started.iter().copied())
        .collect();
    queued_seqs.sort_unstable();
    assert_eq!(
        queued_seqs,
        (0..40).collect::<Vec<_>>(),
        "tasks lost or duplicated"
    );
    assert!(
        requeued.iter().all(|seq| !started.contains(seq)),
        "a started task was requeued"
    );

    // Another worker drains the rest: every task ran exactly once.
    let second = spawn_worker(
        Worker::new(redis.broker.clone(), config(12, 24))
            .register::<Encode, _>(encoder(log.clone())),
    );
    let rest = 40 - report.succeeded;
    second
        .wait_for("the rest to succeed", Duration::from_secs(5), |c| {
            c.succeeded >= rest
        })
        .await;
    let second = second.stop().await;
    assert_eq!(second.succeeded, rest, "{second:?}");
    assert_eq!(report.succeeded + second.succeeded, 40);
    assert_eq!(
        sorted(&log.started),
        (0..40).collect::<Vec<_>>(),
        "some task ran twice or never"
    );
    assert_eq!(sorted(&log.finished), (0..40).collect::<Vec<_>>());
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "{stats:?}");
    redis.cleanup().await;
}

/// A stream id as (ms, seq), to compare in order.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

#[tokio::test]
async fn max_tasks_runs_that_many_then_returns_by_itself() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue_many((0..25).map(|seq| Encode { seq, millis: 10 }))
        .await
        .unwrap();
    let log = Arc::new(Log::default());
    let config = WorkerConfig {
        max_tasks: Some(10),
        ..config(2, 4)
    };
    let worker =
        Worker::new(redis.broker.clone(), config).register::<Encode, _>(encoder(log.clone()));
    // No shutdown signal at all: it must return on its own.
    let report = tokio::time::timeout(Duration::from_secs(5), worker.run(std::future::pending()))
        .await
        .expect("a worker with max_tasks did not return by itself")
        .unwrap();

    assert_eq!((report.started, report.succeeded), (10, 10), "{report:?}");
    assert_eq!(report.requeued, 0, "{report:?}");
    let started = sorted(&log.started);
    assert_eq!(started.len(), 10);
    assert_eq!(
        started.iter().collect::<BTreeSet<_>>().len(),
        10,
        "a task ran twice: {started:?}"
    );
    assert_eq!(sorted(&log.finished), started);
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert_eq!(stats.ready, [0, 15, 0], "{stats:?}");
    assert_eq!((stats.pending, stats.delayed), (0, 0), "{stats:?}");
    // The 15 left are exactly the ones that did not run.
    let mut left: Vec<u32> = redis
        .stream_envelopes(&QueueName::DEFAULT, Priority::Normal)
        .await
        .iter()
        .map(|(_, e)| decode_payload::<Encode>(&e.payload).unwrap().seq)
        .collect();
    left.extend(&started);
    left.sort_unstable();
    assert_eq!(left, (0..25).collect::<Vec<_>>());
    redis.cleanup().await;
}

#[tokio::test]
async fn an_idle_worker_stops_within_its_poll_interval() {
    let redis = TestRedis::new().await;
    let log = Arc::new(Log::default());
    let running = spawn_worker(
        Worker::new(redis.broker.clone(), config(2, 8)).register::<Encode, _>(encoder(log)),
    );
    // Once its streams exist, its fetcher is blocked on the empty queue.
    let key = redis.stream_key(&QueueName::DEFAULT, "normal");
    spool_tests::wait_until(
        "the worker to wait on its queue",
        Duration::from_secs(5),
        || redis.exists(&key),
    )
    .await;
    let asked = tokio::time::Instant::now();
    let report = running.stop().await;
    // 100 ms poll interval; Redis times blocking reads out on its own
    // 100 ms tick, so allow a few of each.
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "stopping took {:?}",
        asked.elapsed()
    );
    assert_eq!(report, spool_worker::CounterSnapshot::default());
    redis.cleanup().await;
}

#[tokio::test]
async fn a_cold_shutdown_leaves_claimed_tasks_unacknowledged() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue_many((0..6).map(|seq| Encode { seq, millis: 400 }))
        .await
        .unwrap();
    let log = Arc::new(Log::default());
    let worker =
        Worker::new(redis.broker.clone(), config(2, 4)).register::<Encode, _>(encoder(log.clone()));
    let counters = worker.counters();
    let run = tokio::spawn(worker.run(std::future::pending()));
    spool_tests::wait_until("2 tasks to start", Duration::from_secs(5), || {
        let started = counters.snapshot().started >= 2;
        async move { started }
    })
    .await;
    // Dropping the run (here: aborting its task) is a cold shutdown.
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    // The runs in flight finish in the background, but nothing settles them:
    // their entries, and the prefetched ones, stay pending for redelivery.
    spool_tests::wait_until(
        "the orphaned runs to finish",
        Duration::from_secs(5),
        || {
            let finished = log.finished.lock().unwrap().len() >= 2;
            async move { finished }
        },
    )
    .await;
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert_eq!(stats.pending, 4, "{stats:?}");
    assert_eq!(stats.ready_total(), 2, "{stats:?}");
    assert_eq!(stats.delayed, 0, "{stats:?}");
    redis.cleanup().await;
}

/// Prefetched tasks go back once, even when the queue is otherwise empty
/// and a fetcher is still waiting on it as the shutdown begins: given back
/// too early, they would come straight back to that fetcher, to be given
/// back again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_shutdown_gives_prefetched_tasks_back_exactly_once() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue_many((0..6).map(|seq| Encode { seq, millis: 300 }))
        .await
        .unwrap();
    let log = Arc::new(Log::default());
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), config(1, 16))
            .register::<Encode, _>(encoder(log.clone())),
    );
    // All six fetched, one running: the fetchers now wait on an empty queue.
    let (r, q) = (&redis, &QueueName::DEFAULT);
    wait_until(
        "all six to be fetched",
        Duration::from_secs(5),
        || async move { r.stats(q).await.pending == 6 },
    )
    .await;
    worker
        .wait_for("one to start", Duration::from_secs(5), |c| c.started == 1)
        .await;
    let report = worker.stop().await;

    assert_eq!((report.started, report.succeeded), (1, 1), "{report:?}");
    assert_eq!(report.requeued, 5, "{report:?}");
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert_eq!((stats.ready_total(), stats.pending), (5, 0), "{stats:?}");
    assert_eq!(stats.enqueued_total, 6 + 5, "{stats:?}");
    redis.cleanup().await;
}

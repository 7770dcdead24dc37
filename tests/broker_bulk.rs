//! Bulk enqueue through the SDK, drained by a worker: ids, counts, stream
//! order, exactly-once processing and late-ack deletion at scale.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Priority, QueueName, Task, TaskId, decode_payload};
use spool_tests::{TestRedis, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    seq: u32,
}

impl Task for Item {
    const NAME: &'static str = "test.bulk.item";
    type Output = ();
}

const DEFAULT_COUNT: u32 = 10_000;
const ANALYSIS_COUNT: u32 = 500;

/// What the handler saw of one run.
#[derive(Debug, Clone)]
struct Run {
    seq: u32,
    id: TaskId,
    queue: QueueName,
    priority: Priority,
    attempt: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_enqueue_in_one_call_and_drain_exactly_once() {
    let redis = TestRedis::new().await;
    let client = redis.client();

    let ids = client
        .enqueue_many((0..DEFAULT_COUNT).map(|seq| Item { seq }))
        .await
        .unwrap();
    let analysis_ids = client
        .enqueue_many((DEFAULT_COUNT..DEFAULT_COUNT + ANALYSIS_COUNT).map(|seq| Item { seq }))
        .priority(Priority::High)
        .queue(QueueName::ANALYSIS)
        .await
        .unwrap();

    // One id per task, unique, and (UUIDv7 from one process) strictly
    // increasing in input order, across both calls.
    assert_eq!(ids.len(), DEFAULT_COUNT as usize);
    assert_eq!(analysis_ids.len(), ANALYSIS_COUNT as usize);
    let all_ids: Vec<TaskId> = ids.iter().chain(&analysis_ids).copied().collect();
    assert!(
        all_ids.windows(2).all(|w| w[0] < w[1]),
        "ids are not unique and increasing in input order"
    );

    let default_stats = redis.stats(&QueueName::DEFAULT).await;
    assert_eq!(
        default_stats.ready,
        [0, u64::from(DEFAULT_COUNT), 0],
        "{default_stats:?}"
    );
    assert_eq!(
        (
            default_stats.pending,
            default_stats.delayed,
            default_stats.dead
        ),
        (0, 0, 0)
    );
    let analysis_stats = redis.stats(&QueueName::ANALYSIS).await;
    assert_eq!(
        analysis_stats.ready,
        [u64::from(ANALYSIS_COUNT), 0, 0],
        "{analysis_stats:?}"
    );
    assert_eq!(
        (
            analysis_stats.pending,
            analysis_stats.delayed,
            analysis_stats.dead
        ),
        (0, 0, 0)
    );

    // The streams hold the tasks in input order (FIFO), each entry with the
    // id the SDK returned for it.
    for (queue, priority, expected_ids, first_seq) in [
        (QueueName::DEFAULT, Priority::Normal, &ids, 0),
        (
            QueueName::ANALYSIS,
            Priority::High,
            &analysis_ids,
            DEFAULT_COUNT,
        ),
    ] {
        let entries = redis.stream_envelopes(&queue, priority).await;
        assert_eq!(entries.len(), expected_ids.len(), "{queue}:{priority}");
        for (n, ((_, envelope), id)) in entries.iter().zip(expected_ids.iter()).enumerate() {
            let item: Item = decode_payload(&envelope.payload).unwrap();
            let n = u32::try_from(n).unwrap();
            assert_eq!(
                item.seq,
                first_seq + n,
                "{queue}:{priority} is out of input order at {n}"
            );
            assert_eq!(
                envelope.id, *id,
                "{queue}:{priority} entry {n} has another id"
            );
            assert_eq!((&envelope.queue, envelope.priority), (&queue, priority));
        }
    }

    let runs: Arc<Mutex<Vec<Run>>> = Arc::default();
    let config = WorkerConfig {
        queues: vec![QueueName::DEFAULT, QueueName::ANALYSIS],
        concurrency: 32,
        prefetch: 256,
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let seen = Arc::clone(&runs);
    let worker = Worker::new(redis.broker.clone(), config).register::<Item, _>(
        move |item: Item, ctx: TaskContext| {
            seen.lock().unwrap().push(Run {
                seq: item.seq,
                id: ctx.id(),
                queue: ctx.queue().clone(),
                priority: ctx.priority(),
                attempt: ctx.attempt(),
            });
            std::future::ready(Ok::<(), TaskError>(()))
        },
    );
    let worker = spawn_worker(worker);
    let total = u64::from(DEFAULT_COUNT + ANALYSIS_COUNT);
    worker
        .wait_for("every task to succeed", Duration::from_secs(30), |c| {
            c.succeeded >= total
        })
        .await;
    let report = worker.stop().await;
    assert_eq!(report.succeeded, total, "{report:?}");
    assert_eq!(report.started, total, "{report:?}");
    assert_eq!(
        (
            report.failed,
            report.retried,
            report.dead_lettered,
            report.expired
        ),
        (0, 0, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.requeued, 0, "{report:?}");

    // Every payload seen exactly once, with the id, queue and priority it
    // was enqueued with.
    let mut runs = runs.lock().unwrap().clone();
    runs.sort_by_key(|r| r.seq);
    assert_eq!(runs.len() as u64, total, "some tasks ran more than once");
    for (n, run) in runs.iter().enumerate() {
        let n = u32::try_from(n).unwrap();
        assert_eq!(run.seq, n, "seq {n} missing or duplicated");
        assert_eq!(run.id, all_ids[n as usize], "seq {n} ran with another id");
        assert_eq!(run.attempt, 1);
        let expected = if n < DEFAULT_COUNT {
            (QueueName::DEFAULT, Priority::Normal)
        } else {
            (QueueName::ANALYSIS, Priority::High)
        };
        assert_eq!((run.queue.clone(), run.priority), expected, "seq {n}");
    }

    for queue in [QueueName::DEFAULT, QueueName::ANALYSIS] {
        let stats = redis.stats(&queue).await;
        assert!(stats.is_drained(), "{queue}: {stats:?}");
        assert_eq!(stats.dead, 0, "{queue}: {stats:?}");
        // Late ack deletes entries: nothing is left behind in any stream.
        for priority in Priority::ALL {
            assert_eq!(
                redis.xlen(&queue, priority).await,
                0,
                "{queue}:{priority} still holds entries"
            );
        }
    }
    redis.cleanup().await;
}

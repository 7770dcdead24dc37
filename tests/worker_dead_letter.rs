//! What cannot run goes to the dead-letter stream, bytes intact, with its
//! reason, and the worker keeps serving.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{DeadLetterEntry, Priority, QueueName, Task, TaskId, Timestamp};
use spool_tests::{RunningWorker, TestRedis, spawn_worker};
use spool_worker::{CounterSnapshot, TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Good {
    n: u32,
}

impl Task for Good {
    const NAME: &'static str = "test.dead.good";
    type Output = u32;
}

async fn good(task: Good, _ctx: TaskContext) -> Result<u32, TaskError> {
    Ok(task.n)
}

/// A task no worker has a handler for.
#[derive(Debug, Serialize, Deserialize)]
struct Orphan {
    path: String,
}

impl Task for Orphan {
    const NAME: &'static str = "test.dead.orphan";
    type Output = ();
}

/// What the producer sends under "x.same"...
#[derive(Debug, Serialize, Deserialize)]
struct ProducerView {
    title: String,
}

impl Task for ProducerView {
    const NAME: &'static str = "x.same";
    type Output = ();
}

/// ...and what the worker expects under the same name.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerView {
    frames: u64,
    keyframe: bool,
}

impl Task for WorkerView {
    const NAME: &'static str = "x.same";
    type Output = ();
}

fn start_worker(redis: &TestRedis) -> RunningWorker {
    let config = WorkerConfig {
        concurrency: 2,
        prefetch: 4,
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(redis.broker.clone(), config)
        .register::<Good, _>(good)
        .register::<WorkerView, _>(|_: WorkerView, _ctx: TaskContext| async { Ok(()) });
    spawn_worker(worker)
}

/// Enqueues a good task after the bad one, waits for both outcomes, stops
/// the worker and checks that only the dead letter is left of the queue.
async fn finish(redis: &TestRedis, running: RunningWorker) -> (CounterSnapshot, DeadLetterEntry) {
    running
        .wait_for(
            "the bad entry to be dead-lettered",
            Duration::from_secs(5),
            |c| c.dead_lettered >= 1,
        )
        .await;
    redis.client().enqueue(Good { n: 7 }).await.unwrap();
    running
        .wait_for(
            "a good task after it to succeed",
            Duration::from_secs(5),
            |c| c.succeeded >= 1,
        )
        .await;
    let report = running.stop().await;
    assert_eq!(
        (report.dead_lettered, report.succeeded),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        (report.failed, report.retried, report.expired),
        (0, 0, 0),
        "{report:?}"
    );

    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "{stats:?}");
    assert_eq!(stats.dead, 1, "{stats:?}");
    for priority in Priority::ALL {
        assert_eq!(
            redis.xlen(&QueueName::DEFAULT, priority).await,
            0,
            "{priority} still holds entries"
        );
    }
    let mut dead = redis.dead_letters(&QueueName::DEFAULT).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    (report, dead.remove(0))
}

#[tokio::test]
async fn an_undecodable_entry_is_dead_lettered_as_malformed_with_its_bytes() {
    let redis = TestRedis::new().await;
    let before = Timestamp::now();
    let bytes: &[u8] = b"not msgpack";
    redis
        .xadd_raw(&QueueName::DEFAULT, Priority::Normal, &[("e", bytes)])
        .await;
    let (report, letter) = finish(&redis, start_worker(&redis)).await;

    assert_eq!(report.started, 1, "the malformed entry was run: {report:?}");
    assert_eq!(letter.reason, "malformed");
    assert_eq!(
        letter.raw, bytes,
        "the original bytes were not kept exactly"
    );
    assert!(letter.envelope.is_none());
    assert!(!letter.error.is_empty());
    assert_eq!(letter.attempts, 0);
    assert_eq!(letter.queue, QueueName::DEFAULT);
    assert!(letter.dead_at >= before, "{letter:?}");
    redis.cleanup().await;
}

#[tokio::test]
async fn binary_garbage_is_kept_byte_for_byte() {
    let redis = TestRedis::new().await;
    // Not UTF-8, with NULs and a MessagePack array header that lies.
    let bytes: &[u8] = &[0x93, 0x01, 0x00, 0xff, 0xfe, 0xc1, 0x00, 0x80];
    redis
        .xadd_raw(&QueueName::DEFAULT, Priority::High, &[("e", bytes)])
        .await;
    let (_, letter) = finish(&redis, start_worker(&redis)).await;
    assert_eq!(letter.reason, "malformed");
    assert_eq!(letter.raw, bytes);
    redis.cleanup().await;
}

#[tokio::test]
async fn an_entry_without_an_envelope_field_is_malformed() {
    let redis = TestRedis::new().await;
    let payload: &[u8] = b"{\"task\":\"celery-style\"}";
    redis
        .xadd_raw(&QueueName::DEFAULT, Priority::Normal, &[("body", payload)])
        .await;
    let (report, letter) = finish(&redis, start_worker(&redis)).await;
    assert_eq!(report.started, 1, "{report:?}");
    assert_eq!(letter.reason, "malformed");
    assert!(letter.error.contains("'e'"), "{:?}", letter.error);
    assert!(letter.envelope.is_none());
    // Every original field is kept, as a MessagePack array of names and values.
    let fields: Vec<serde_bytes::ByteBuf> = rmp_serde::from_slice(&letter.raw).unwrap();
    let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_slice()).collect();
    assert_eq!(fields, [&b"body"[..], payload]);
    redis.cleanup().await;
}

#[tokio::test]
async fn a_task_without_a_handler_is_dead_lettered_as_unknown() {
    let redis = TestRedis::new().await;
    let id: TaskId = redis
        .client()
        .enqueue(Orphan {
            path: "in/cat.mp4".into(),
        })
        .tenant("acme")
        .await
        .unwrap();
    let (report, letter) = finish(&redis, start_worker(&redis)).await;

    assert_eq!(report.started, 1, "only the good task runs: {report:?}");
    assert_eq!(letter.reason, "unknown_task");
    assert!(letter.error.contains(Orphan::NAME), "{:?}", letter.error);
    assert_eq!(letter.attempts, 1);
    let envelope = letter.envelope.expect("the envelope is kept and decodes");
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.name, Orphan::NAME);
    assert_eq!(envelope.tenant.as_deref(), Some("acme"));
    assert_eq!(envelope.encode().unwrap(), letter.raw);
    let orphan: Orphan = spool_broker::decode_payload(&envelope.payload).unwrap();
    assert_eq!(orphan.path, "in/cat.mp4");
    redis.cleanup().await;
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_is_dead_lettered_as_bad_payload() {
    let redis = TestRedis::new().await;
    let id = redis
        .client()
        .enqueue(ProducerView {
            title: "cat".into(),
        })
        .await
        .unwrap();
    let (report, letter) = finish(&redis, start_worker(&redis)).await;

    assert_eq!(
        report.started, 1,
        "the undecodable task was run: {report:?}"
    );
    assert_eq!(letter.reason, "bad_payload");
    assert!(!letter.error.is_empty());
    assert_eq!(letter.attempts, 1);
    let envelope = letter.envelope.expect("the envelope is kept and decodes");
    assert_eq!((envelope.id, envelope.name.as_str()), (id, "x.same"));
    let sent: ProducerView = spool_broker::decode_payload(&envelope.payload).unwrap();
    assert_eq!(sent.title, "cat");
    redis.cleanup().await;
}

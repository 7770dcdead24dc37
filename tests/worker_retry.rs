//! Retries with backoff, exhaustion into the dead-letter stream, final
//! failures, panics and time limits.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Backoff, Priority, QueueName, Task, TaskOptions, Timestamp};
use spool_tests::{RunningWorker, TestRedis, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};
use tokio::time::Instant;

fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        prefetch: 4,
        // Short, so a retry that falls due while a fetch blocks is promoted
        // soon, and shutdowns are quick.
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// When each attempt started (wall clock, ms: the clock retries are
/// scheduled with), in order.
type Attempts = Arc<Mutex<Vec<(u32, Timestamp)>>>;

/// Runs `worker` until its counters satisfy `done`, then shuts it down.
async fn run_until(
    worker: Worker<spool_broker::RedisBroker>,
    what: &str,
    done: impl Fn(&spool_worker::CounterSnapshot) -> bool,
) -> spool_worker::CounterSnapshot {
    let running = spawn_worker(worker);
    running.wait_for(what, Duration::from_secs(10), done).await;
    running.stop().await
}

/// The gaps between consecutive attempt starts, checking attempts are 1, 2, 3...
fn gaps(attempts: &Attempts, runs: usize) -> Vec<Duration> {
    let attempts = attempts.lock().unwrap().clone();
    let numbers: Vec<u32> = attempts.iter().map(|a| a.0).collect();
    let expected: Vec<u32> = (1..=u32::try_from(runs).unwrap()).collect();
    assert_eq!(numbers, expected, "attempts out of order or repeated");
    attempts
        .windows(2)
        .map(|w| w[1].1.saturating_since(w[0].1))
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
struct Flaky {
    succeed_on: u32,
}

impl Task for Flaky {
    const NAME: &'static str = "test.retry.flaky";
    type Output = u32;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 5,
            backoff: Backoff::fixed(Duration::from_millis(200)),
            ..TaskOptions::default()
        }
    }
}

fn flaky(
    attempts: Attempts,
) -> impl Fn(Flaky, TaskContext) -> std::future::Ready<Result<u32, TaskError>> + Send + Sync {
    move |task: Flaky, ctx: TaskContext| {
        attempts
            .lock()
            .unwrap()
            .push((ctx.attempt(), Timestamp::now()));
        std::future::ready(if ctx.attempt() < task.succeed_on {
            Err(TaskError::retry(format!(
                "not yet (attempt {})",
                ctx.attempt()
            )))
        } else {
            Ok(ctx.attempt())
        })
    }
}

#[tokio::test]
async fn fixed_backoff_spaces_attempts_until_success() {
    let redis = TestRedis::new().await;
    let id = redis
        .client()
        .enqueue(Flaky { succeed_on: 3 })
        .priority(Priority::High)
        .tenant("acme")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .await
        .unwrap();
    let attempts: Attempts = Arc::default();
    let contexts: Arc<Mutex<Vec<TaskContext>>> = Arc::default();
    let (recorded, seen) = (attempts.clone(), contexts.clone());
    let handler = flaky(recorded);
    let worker = Worker::new(redis.broker.clone(), config()).register::<Flaky, _>(
        move |task: Flaky, ctx: TaskContext| {
            seen.lock().unwrap().push(ctx.clone());
            handler(task, ctx)
        },
    );
    let report = run_until(worker, "the third attempt to succeed", |c| c.succeeded >= 1).await;

    assert_eq!(
        (report.retried, report.succeeded, report.started),
        (2, 1, 3),
        "{report:?}"
    );
    assert_eq!((report.failed, report.dead_lettered), (0, 0), "{report:?}");
    // Retries are scheduled at "now + 200 ms" in ms and promoted when the
    // ms clock reaches that, so in ms the gap cannot be under 200.
    for (n, gap) in gaps(&attempts, 3).into_iter().enumerate() {
        assert!(
            gap >= Duration::from_millis(200),
            "retry {} came after only {gap:?}",
            n + 1
        );
        assert!(
            gap < Duration::from_millis(1500),
            "retry {} took {gap:?}",
            n + 1
        );
    }
    // A retry is the same task: same id, creation time, routing and metadata.
    let contexts = contexts.lock().unwrap().clone();
    assert_eq!(contexts.len(), 3);
    for ctx in &contexts {
        assert_eq!(ctx.id(), id);
        assert_eq!(ctx.name(), Flaky::NAME);
        assert_eq!(ctx.created_at(), contexts[0].created_at());
        assert_eq!(
            (ctx.queue(), ctx.priority()),
            (&QueueName::DEFAULT, Priority::High)
        );
        assert_eq!(ctx.max_attempts(), 5);
        assert_eq!(ctx.tenant(), Some("acme"));
        assert_eq!(
            ctx.header("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert!(!ctx.is_cancelled());
    }
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained() && stats.dead == 0, "{stats:?}");
    assert!(
        redis.dead_letters(&QueueName::DEFAULT).await.is_empty(),
        "{id} was dead-lettered"
    );
    redis.cleanup().await;
}

#[derive(Debug, Serialize, Deserialize)]
struct Backing {
    succeed_on: u32,
}

impl Task for Backing {
    const NAME: &'static str = "test.retry.exponential";
    type Output = u32;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 5,
            backoff: Backoff {
                base: Duration::from_millis(100),
                factor: 2.0,
                max: Duration::from_secs(1),
                jitter: false,
            },
            ..TaskOptions::default()
        }
    }
}

#[tokio::test]
async fn exponential_backoff_grows_between_attempts() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue(Backing { succeed_on: 3 })
        .await
        .unwrap();
    let attempts: Attempts = Arc::default();
    let recorded = attempts.clone();
    let worker = Worker::new(redis.broker.clone(), config()).register::<Backing, _>(
        move |task: Backing, ctx: TaskContext| {
            recorded
                .lock()
                .unwrap()
                .push((ctx.attempt(), Timestamp::now()));
            let fail = ctx.attempt() < task.succeed_on;
            async move {
                if fail {
                    return Err(TaskError::retry("not yet"));
                }
                Ok(ctx.attempt())
            }
        },
    );
    let report = run_until(worker, "the third attempt to succeed", |c| c.succeeded >= 1).await;

    assert_eq!((report.retried, report.succeeded), (2, 1), "{report:?}");
    let gaps = gaps(&attempts, 3);
    assert!(
        gaps[0] >= Duration::from_millis(100),
        "first retry after only {:?}",
        gaps[0]
    );
    assert!(
        gaps[1] >= Duration::from_millis(200),
        "second retry after only {:?}",
        gaps[1]
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1300)),
        "retries took too long: {gaps:?}"
    );
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

#[derive(Debug, Serialize, Deserialize)]
struct Doomed {
    url: String,
}

impl Task for Doomed {
    const NAME: &'static str = "test.retry.doomed";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            backoff: Backoff::fixed(Duration::from_millis(50)),
            ..TaskOptions::default()
        }
    }
}

#[tokio::test]
async fn exhausted_retries_go_to_the_dead_letter_stream() {
    let redis = TestRedis::new().await;
    let url = "https://cdn.invalid/cat.mp4".to_owned();
    let id = redis
        .client()
        .enqueue(Doomed { url: url.clone() })
        .max_attempts(2)
        .await
        .unwrap();
    let attempts: Attempts = Arc::default();
    let recorded = attempts.clone();
    let worker = Worker::new(redis.broker.clone(), config()).register::<Doomed, _>(
        move |task: Doomed, ctx: TaskContext| {
            recorded
                .lock()
                .unwrap()
                .push((ctx.attempt(), Timestamp::now()));
            let message = format!(
                "{} unreachable on attempt {} of {}",
                task.url,
                ctx.attempt(),
                ctx.max_attempts()
            );
            std::future::ready(Err::<(), _>(TaskError::retry(message)))
        },
    );
    let report = run_until(worker, "the task to be dead-lettered", |c| {
        c.dead_lettered >= 1
    })
    .await;

    assert_eq!(
        (report.started, report.retried, report.dead_lettered),
        (2, 1, 1),
        "{report:?}"
    );
    assert_eq!((report.succeeded, report.failed), (0, 0), "{report:?}");
    gaps(&attempts, 2);
    let dead = redis.dead_letters(&QueueName::DEFAULT).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.reason, "attempts_exhausted");
    assert_eq!(letter.error, format!("{url} unreachable on attempt 2 of 2"));
    assert_eq!(letter.attempts, 2);
    assert_eq!(letter.queue, QueueName::DEFAULT);
    let envelope = letter
        .envelope
        .as_ref()
        .expect("the dead letter's envelope decodes");
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.name, Doomed::NAME);
    assert_eq!((envelope.attempt, envelope.max_attempts), (2, 2));
    let task: Doomed = spool_broker::decode_payload(&envelope.payload).unwrap();
    assert_eq!(task.url, url);

    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "{stats:?}");
    assert_eq!(stats.dead, 1, "{stats:?}");
    redis.cleanup().await;
}

#[derive(Debug, Serialize, Deserialize)]
struct Invalid;

impl Task for Invalid {
    const NAME: &'static str = "test.retry.invalid";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 5,
            backoff: Backoff::fixed(Duration::from_millis(10)),
            ..TaskOptions::default()
        }
    }
}

#[tokio::test]
async fn a_final_failure_is_not_retried_nor_dead_lettered() {
    let redis = TestRedis::new().await;
    redis.client().enqueue(Invalid).await.unwrap();
    let attempts: Attempts = Arc::default();
    let recorded = attempts.clone();
    let worker = Worker::new(redis.broker.clone(), config()).register::<Invalid, _>(
        move |_: Invalid, ctx: TaskContext| {
            recorded
                .lock()
                .unwrap()
                .push((ctx.attempt(), Timestamp::now()));
            std::future::ready(Err::<(), _>(TaskError::fail("the input is not a video")))
        },
    );
    let running = spawn_worker(worker);
    running
        .wait_for("the task to fail", Duration::from_secs(10), |c| {
            c.failed >= 1
        })
        .await;
    // Had it been scheduled again, it would be in the delayed set now.
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "{stats:?}");
    assert_eq!(stats.dead, 0, "{stats:?}");
    let report = running.stop().await;

    assert_eq!((report.started, report.failed), (1, 1), "{report:?}");
    assert_eq!(
        (report.retried, report.dead_lettered, report.succeeded),
        (0, 0, 0),
        "{report:?}"
    );
    gaps(&attempts, 1);
    assert!(redis.dead_letters(&QueueName::DEFAULT).await.is_empty());
    redis.cleanup().await;
}

#[derive(Debug, Serialize, Deserialize)]
struct Explosive {
    explode: bool,
}

impl Task for Explosive {
    const NAME: &'static str = "test.retry.explosive";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 2,
            backoff: Backoff::fixed(Duration::from_millis(50)),
            ..TaskOptions::default()
        }
    }
}

#[tokio::test]
async fn a_panicking_handler_is_retried_then_dead_lettered_and_the_worker_carries_on() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let id = client.enqueue(Explosive { explode: true }).await.unwrap();
    let worker = Worker::new(redis.broker.clone(), config()).register::<Explosive, _>(
        |task: Explosive, _ctx: TaskContext| async move {
            assert!(!task.explode, "kaboom: the codec blew up");
            Ok(())
        },
    );
    let running: RunningWorker = spawn_worker(worker);
    running
        .wait_for(
            "the panicking task to be dead-lettered",
            Duration::from_secs(10),
            |c| c.dead_lettered >= 1,
        )
        .await;
    // The same worker still serves tasks.
    client.enqueue(Explosive { explode: false }).await.unwrap();
    running
        .wait_for("a good task to succeed", Duration::from_secs(10), |c| {
            c.succeeded >= 1
        })
        .await;
    let report = running.stop().await;

    assert_eq!(
        (
            report.started,
            report.retried,
            report.dead_lettered,
            report.succeeded
        ),
        (3, 1, 1, 1),
        "{report:?}"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    let dead = redis.dead_letters(&QueueName::DEFAULT).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "attempts_exhausted");
    assert!(
        dead[0].error.contains("panicked") && dead[0].error.contains("kaboom: the codec blew up"),
        "{:?}",
        dead[0].error
    );
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].envelope.as_ref().map(|e| e.id), Some(id));
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "{stats:?}");
    redis.cleanup().await;
}

#[derive(Debug, Serialize, Deserialize)]
struct Sleepy;

impl Task for Sleepy {
    const NAME: &'static str = "test.retry.sleepy";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 5,
            backoff: Backoff::fixed(Duration::from_millis(10)),
            ..TaskOptions::default()
        }
    }
}

/// When the run started, and when (if ever) its cancellation token fired.
#[derive(Debug, Default)]
struct Watch {
    started: Mutex<Option<Instant>>,
    cancelled: Mutex<Option<Instant>>,
    finished: AtomicBool,
}

/// A handler that sleeps 10 s, with a helper it spawned (as a handler
/// spawns FFmpeg) that waits on the run's cancellation token.
fn sleepy(
    watch: Arc<Watch>,
) -> impl Fn(
    Sleepy,
    TaskContext,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>
+ Send
+ Sync {
    move |_: Sleepy, ctx: TaskContext| {
        let watch = Arc::clone(&watch);
        Box::pin(async move {
            *watch.started.lock().unwrap() = Some(Instant::now());
            let helper_watch = Arc::clone(&watch);
            let helper_ctx = ctx.clone();
            tokio::spawn(async move {
                helper_ctx.cancellation().cancelled().await;
                *helper_watch.cancelled.lock().unwrap() = Some(Instant::now());
            });
            tokio::time::sleep(Duration::from_secs(10)).await;
            watch.finished.store(true, Ordering::Relaxed);
            Ok(())
        })
    }
}

/// Checks a timed-out run: failed once, not retried, its token cancelled
/// no sooner than `limit` after it started, the queue drained.
async fn assert_timed_out(
    redis: &TestRedis,
    running: RunningWorker,
    watch: &Watch,
    limit: Duration,
) {
    running
        .wait_for("the run to time out", Duration::from_secs(5), |c| {
            c.failed >= 1
        })
        .await;
    wait_until(
        "the run's cancellation token to fire",
        Duration::from_secs(2),
        || {
            let fired = watch.cancelled.lock().unwrap().is_some();
            async move { fired }
        },
    )
    .await;
    let stats = redis.stats(&QueueName::DEFAULT).await;
    assert!(stats.is_drained(), "retried or left pending: {stats:?}");
    let report = running.stop().await;

    assert_eq!((report.started, report.failed), (1, 1), "{report:?}");
    assert_eq!(
        (report.retried, report.succeeded, report.dead_lettered),
        (0, 0, 0),
        "{report:?}"
    );
    assert!(
        !watch.finished.load(Ordering::Relaxed),
        "the handler ran to completion"
    );
    let started = watch.started.lock().unwrap().unwrap();
    let cancelled = watch.cancelled.lock().unwrap().unwrap();
    let ran = cancelled - started;
    assert!(
        ran >= limit,
        "stopped after {ran:?}, before its {limit:?} limit"
    );
    assert!(ran < Duration::from_secs(2), "stopped only after {ran:?}");
    assert!(redis.dead_letters(&QueueName::DEFAULT).await.is_empty());
}

#[tokio::test]
async fn a_task_past_its_time_limit_fails_without_retry_and_is_cancelled() {
    let begun = Instant::now();
    let redis = TestRedis::new().await;
    let limit = Duration::from_millis(100);
    redis
        .client()
        .enqueue(Sleepy)
        .time_limit(limit)
        .await
        .unwrap();
    let watch = Arc::new(Watch::default());
    let worker =
        Worker::new(redis.broker.clone(), config()).register::<Sleepy, _>(sleepy(watch.clone()));
    assert_timed_out(&redis, spawn_worker(worker), &watch, limit).await;
    // The 10 s handler did not hold up the worker's shutdown.
    assert!(
        begun.elapsed() < Duration::from_secs(4),
        "took {:?}",
        begun.elapsed()
    );
    redis.cleanup().await;
}

#[tokio::test]
async fn the_worker_time_limit_applies_to_tasks_without_their_own() {
    let begun = Instant::now();
    let redis = TestRedis::new().await;
    let limit = Duration::from_millis(150);
    redis.client().enqueue(Sleepy).await.unwrap();
    let watch = Arc::new(Watch::default());
    let config = WorkerConfig {
        time_limit: Some(limit),
        ..config()
    };
    let worker =
        Worker::new(redis.broker.clone(), config).register::<Sleepy, _>(sleepy(watch.clone()));
    assert_timed_out(&redis, spawn_worker(worker), &watch, limit).await;
    assert!(
        begun.elapsed() < Duration::from_secs(4),
        "took {:?}",
        begun.elapsed()
    );
    redis.cleanup().await;
}

#[tokio::test]
async fn retry_after_overrides_the_backoff() {
    let redis = TestRedis::new().await;
    // Flaky's own backoff is a fixed 200 ms; the handler asks for 400 ms.
    redis
        .client()
        .enqueue(Flaky { succeed_on: 2 })
        .await
        .unwrap();
    let attempts: Attempts = Arc::default();
    let recorded = attempts.clone();
    let worker = Worker::new(redis.broker.clone(), config()).register::<Flaky, _>(
        move |task: Flaky, ctx: TaskContext| {
            recorded
                .lock()
                .unwrap()
                .push((ctx.attempt(), Timestamp::now()));
            std::future::ready(if ctx.attempt() < task.succeed_on {
                Err(TaskError::retry_after(
                    "rate limited",
                    Duration::from_millis(400),
                ))
            } else {
                Ok(ctx.attempt())
            })
        },
    );
    let report = run_until(worker, "the retry to succeed", |c| c.succeeded >= 1).await;
    assert_eq!((report.retried, report.succeeded), (1, 1), "{report:?}");
    let gap = gaps(&attempts, 2)[0];
    assert!(
        gap >= Duration::from_millis(400),
        "retried after only {gap:?}"
    );
    assert!(gap < Duration::from_millis(1500), "retried after {gap:?}");
    redis.cleanup().await;
}

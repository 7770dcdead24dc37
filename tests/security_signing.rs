//! HMAC-signed envelopes: with a key, workers run only tasks signed with an
//! accepted key, and dead-letter unsigned and forged ones unrun, bytes
//! intact; retries, delays, unique tasks and requeued dead letters stay
//! signed, and so are workflows' nodes; keys rotate; a worker without a
//! key still runs signed tasks.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use spool_broker::{
    Backoff, Broker as _, DeadLetterEntry, Envelope, Priority, QueueName, RedisBroker, RedisConfig,
    SigningKeys, Task, TaskOptions, encode_payload,
};
use spool_sdk::Client;
use spool_tests::{RunningWorker, TestRedis, bins, redis_url, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

const KEY: &str = "signing-key-A-0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "signing-key-B-fedcba9876543210fedcba9876543210";
const OLD_KEY: &str = "signing-key-old-00112233445566778899aabbccddeeff";

/// A signed frame's header: 0xC1, the version, the 32-byte tag.
const FRAME_HEADER: usize = 34;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: u32,
}

impl Task for Work {
    const NAME: &'static str = "test.signing.work";
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            backoff: Backoff::fixed(Duration::from_millis(100)),
            ..TaskOptions::default()
        }
    }
}

/// The `n` of every run the handler saw, in order.
type Runs = Arc<Mutex<Vec<(u32, u32)>>>;

fn keys(key: &str) -> SigningKeys {
    SigningKeys::new(key).unwrap()
}

/// A broker on the test's prefix that signs and verifies with `signing`.
async fn broker(redis: &TestRedis, signing: Option<SigningKeys>) -> RedisBroker {
    RedisBroker::connect(RedisConfig {
        key_prefix: redis.prefix.clone(),
        signing,
        ..RedisConfig::from_url(redis_url())
    })
    .await
    .unwrap()
}

/// A worker on `broker` whose handler records each run's `n` and attempt,
/// and fails the first attempt of tasks with an odd `n` when `flaky`.
fn start_worker(broker: RedisBroker, runs: &Runs, flaky: bool) -> RunningWorker {
    let runs = Arc::clone(runs);
    let config = WorkerConfig {
        concurrency: 2,
        prefetch: 4,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let worker =
        Worker::new(broker, config).register::<Work, _>(move |task: Work, ctx: TaskContext| {
            runs.lock().unwrap().push((task.n, ctx.attempt()));
            let fail = flaky && task.n % 2 == 1 && ctx.attempt() == 1;
            async move {
                if fail {
                    Err(TaskError::retry("first attempts of odd tasks fail"))
                } else {
                    Ok(())
                }
            }
        });
    spawn_worker(worker)
}

fn ran(runs: &Runs) -> BTreeSet<u32> {
    runs.lock().unwrap().iter().map(|(n, _)| *n).collect()
}

/// The dead letters, waiting until there are `count`.
async fn dead_letters(redis: &TestRedis, count: usize) -> Vec<DeadLetterEntry> {
    wait_until(
        &format!("{count} dead letters"),
        Duration::from_secs(10),
        || async { redis.dead_letters(&QueueName::DEFAULT).await.len() >= count },
    )
    .await;
    redis.dead_letters(&QueueName::DEFAULT).await
}

/// The raw `e` bytes of the single entry an enqueue through `broker` put on
/// a queue no worker serves.
async fn wire_bytes(redis: &TestRedis, broker: &RedisBroker, n: u32) -> Vec<u8> {
    let side = QueueName::new("signing-side").unwrap();
    let mut envelope = Envelope::for_task(&Work { n }).unwrap();
    envelope.queue = side.clone();
    broker.enqueue(&[envelope]).await.unwrap();
    let mut entries = redis.stream_entries(&side, Priority::Normal).await;
    let (id, bytes) = entries.pop().unwrap();
    let _: () = redis
        .raw()
        .xdel(redis.stream_key(&side, "normal"), &[id])
        .await
        .unwrap();
    bytes
}

#[tokio::test]
async fn only_tasks_signed_with_the_key_run_and_the_rest_are_dead_lettered_intact() {
    let redis = TestRedis::new().await;
    let signed = broker(&redis, Some(keys(KEY))).await;
    let runs = Runs::default();
    let worker = start_worker(signed.clone(), &runs, false);

    Client::new(signed.clone())
        .enqueue(Work { n: 1 })
        .await
        .unwrap();
    worker
        .wait_for("the signed task", Duration::from_secs(10), |c| {
            c.succeeded >= 1
        })
        .await;

    // An attacker with write access to Redis but no key: a plain envelope
    // XADDed straight into the stream...
    let unsigned = Envelope::for_task(&Work { n: 666 })
        .unwrap()
        .encode()
        .unwrap();
    redis
        .xadd_raw(&QueueName::DEFAULT, Priority::High, &[("e", &unsigned)])
        .await;
    // ...a frame signed with a key the worker does not have...
    let forged = wire_bytes(&redis, &broker(&redis, Some(keys(OTHER_KEY))).await, 667).await;
    assert_eq!(forged[0], 0xC1);
    redis
        .xadd_raw(&QueueName::DEFAULT, Priority::Normal, &[("e", &forged)])
        .await;
    // ...and a genuine frame whose payload was swapped under its old tag.
    let genuine = wire_bytes(&redis, &signed, 5).await;
    let mut inner = Envelope::decode(&genuine[FRAME_HEADER..]).unwrap();
    assert_eq!(inner.name, Work::NAME);
    inner.payload = encode_payload(&Work { n: 668 }).unwrap();
    inner.queue = QueueName::DEFAULT;
    let mut tampered = genuine[..FRAME_HEADER].to_vec();
    tampered.extend(inner.encode().unwrap());
    redis
        .xadd_raw(&QueueName::DEFAULT, Priority::Low, &[("e", &tampered)])
        .await;

    let dead = dead_letters(&redis, 3).await;
    Client::new(signed).enqueue(Work { n: 2 }).await.unwrap();
    let report = worker
        .wait_for("a signed task after them", Duration::from_secs(10), |c| {
            c.succeeded >= 2
        })
        .await;
    let report_final = worker.stop().await;
    assert_eq!(report.dead_lettered, 3, "{report:?}");
    assert_eq!(report_final.started, 2, "{report_final:?}");
    assert_eq!(ran(&runs), BTreeSet::from([1, 2]), "forged tasks ran");

    let by_raw = |raw: &[u8]| {
        dead.iter()
            .find(|d| d.raw == raw)
            .unwrap_or_else(|| panic!("no dead letter holds these bytes: {dead:?}"))
    };
    let letter = by_raw(&unsigned);
    assert_eq!(letter.reason, "unsigned", "{letter:?}");
    assert!(
        letter.error.contains("not signed") && letter.error.contains("SPOOL_SIGNING_KEY_FILE"),
        "{letter:?}"
    );
    // What was injected is on show, for the operator.
    assert_eq!(letter.envelope.as_ref().unwrap().name, Work::NAME);
    for raw in [&forged, &tampered] {
        let letter = by_raw(raw);
        assert_eq!(letter.reason, "bad_signature", "{letter:?}");
        assert!(letter.error.contains("does not verify"), "{letter:?}");
    }
    assert!(redis.stats(&QueueName::DEFAULT).await.is_drained());
    redis.cleanup().await;
}

#[tokio::test]
async fn retried_delayed_and_unique_tasks_stay_signed() {
    let redis = TestRedis::new().await;
    let signed = broker(&redis, Some(keys(KEY))).await;
    let runs = Runs::default();
    let worker = start_worker(signed.clone(), &runs, true);
    let client = Client::new(signed);

    // n = 1 fails its first attempt: its retry goes through the delayed set.
    client.enqueue(Work { n: 1 }).await.unwrap();
    client
        .enqueue(Work { n: 2 })
        .countdown(Duration::from_millis(500))
        .await
        .unwrap();
    client
        .enqueue(Work { n: 4 })
        .unique(Duration::from_secs(30))
        .await
        .unwrap();
    client
        .enqueue(Work { n: 6 })
        .unique(Duration::from_secs(30))
        .countdown(Duration::from_millis(500))
        .await
        .unwrap();
    // While delayed, the members are frames too.
    let delayed_key = format!("{}:{{{}}}:delayed", redis.prefix, QueueName::DEFAULT);
    let members: Vec<Vec<u8>> = redis.raw().zrange(&delayed_key, 0, -1).await.unwrap();
    assert!(!members.is_empty(), "nothing delayed yet");
    assert!(
        members.iter().all(|m| m.get(1) == Some(&0xC1)),
        "unsigned delayed members"
    );

    let report = worker
        .wait_for("every task to succeed", Duration::from_secs(10), |c| {
            c.succeeded >= 4
        })
        .await;
    let report = {
        let stopped = worker.stop().await;
        assert_eq!(stopped.succeeded, 4, "{stopped:?}");
        report
    };
    assert_eq!(report.retried, 1, "{report:?}");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert!(runs.lock().unwrap().contains(&(1, 2)), "no second attempt");
    assert!(redis.dead_letters(&QueueName::DEFAULT).await.is_empty());
    redis.cleanup().await;
}

#[tokio::test]
async fn older_keys_are_accepted_while_the_new_one_signs() {
    let redis = TestRedis::new().await;
    let rotating = SigningKeys::new(KEY)
        .unwrap()
        .with_previous(OLD_KEY)
        .unwrap();
    let runs = Runs::default();
    // The worker is mid-rotation: it signs its retries with the new key.
    let worker = start_worker(broker(&redis, Some(rotating)).await, &runs, true);

    // A producer still on the old key, one already on the new key.
    let old = Client::new(broker(&redis, Some(keys(OLD_KEY))).await);
    let new = Client::new(broker(&redis, Some(keys(KEY))).await);
    old.enqueue(Work { n: 1 }).await.unwrap();
    new.enqueue(Work { n: 2 }).await.unwrap();
    let report = worker
        .wait_for("both tasks to succeed", Duration::from_secs(10), |c| {
            c.succeeded >= 2
        })
        .await;
    worker.stop().await;
    assert_eq!((report.retried, report.dead_lettered), (1, 0), "{report:?}");
    assert_eq!(ran(&runs), BTreeSet::from([1, 2]));

    // Rotation done: a worker with only the new key refuses the old one's
    // tasks.
    let runs = Runs::default();
    let worker = start_worker(broker(&redis, Some(keys(KEY))).await, &runs, false);
    old.enqueue(Work { n: 3 }).await.unwrap();
    new.enqueue(Work { n: 4 }).await.unwrap();
    let dead = dead_letters(&redis, 1).await;
    worker
        .wait_for("the new key's task", Duration::from_secs(10), |c| {
            c.succeeded >= 1
        })
        .await;
    worker.stop().await;
    assert_eq!(ran(&runs), BTreeSet::from([4]));
    assert_eq!(dead[0].reason, "bad_signature", "{dead:?}");
    redis.cleanup().await;
}

#[tokio::test]
async fn a_worker_without_a_key_runs_signed_tasks() {
    let redis = TestRedis::new().await;
    let runs = Runs::default();
    let worker = start_worker(broker(&redis, None).await, &runs, true);
    let client = Client::new(broker(&redis, Some(keys(KEY))).await);
    client.enqueue(Work { n: 1 }).await.unwrap();
    client
        .enqueue(Work { n: 2 })
        .countdown(Duration::from_millis(200))
        .await
        .unwrap();
    let report = worker
        .wait_for("both signed tasks", Duration::from_secs(10), |c| {
            c.succeeded >= 2
        })
        .await;
    worker.stop().await;
    assert_eq!((report.retried, report.dead_lettered), (1, 0), "{report:?}");
    assert_eq!(ran(&runs), BTreeSet::from([1, 2]));
    redis.cleanup().await;
}

/// A key file holding `KEY`, in a fresh directory.
fn key_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spool-signing-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("signing.keys");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    path
}

#[tokio::test]
async fn spoolctl_dead_retry_re_signs_authentic_dead_letters_only() {
    let redis = TestRedis::new().await;
    let signed = broker(&redis, Some(keys(KEY))).await;
    let runs = Runs::default();
    let healed = Arc::new(AtomicBool::new(false));
    let worker = {
        let runs = Arc::clone(&runs);
        let healed = Arc::clone(&healed);
        let config = WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(signed.clone(), config).register::<Work, _>(
            move |task: Work, ctx: TaskContext| {
                runs.lock().unwrap().push((task.n, ctx.attempt()));
                let ok = healed.load(Ordering::SeqCst);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err(TaskError::retry("broken until healed"))
                    }
                }
            },
        );
        spawn_worker(worker)
    };

    // A signed task that fails its only attempt, and an injected unsigned
    // one.
    Client::new(signed)
        .enqueue(Work { n: 1 })
        .max_attempts(1)
        .await
        .unwrap();
    let unsigned = Envelope::for_task(&Work { n: 666 })
        .unwrap()
        .encode()
        .unwrap();
    redis
        .xadd_raw(&QueueName::DEFAULT, Priority::Normal, &[("e", &unsigned)])
        .await;
    let dead = dead_letters(&redis, 2).await;
    assert!(dead.iter().any(|d| d.reason == "unsigned"), "{dead:?}");
    healed.store(true, Ordering::SeqCst);

    let keys_path = key_file();
    let out = Command::new(bins::workspace_bin("spoolctl", "spool-scheduler"))
        .env("SPOOL_REDIS_URL", redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .arg("--signing-key-file")
        .arg(&keys_path)
        .args(["dead", "retry", "default"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "spoolctl dead retry: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The authentic task runs again, re-signed for its next attempt; the
    // injected one is refused again rather than laundered.
    worker
        .wait_for("the retried task", Duration::from_secs(10), |c| {
            c.succeeded >= 1
        })
        .await;
    let dead = dead_letters(&redis, 1).await;
    worker.stop().await;
    assert_eq!(*runs.lock().unwrap(), vec![(1, 1), (1, 2)]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].reason.as_str(), &dead[0].raw),
        ("unsigned", &unsigned)
    );
    let _ = std::fs::remove_dir_all(keys_path.parent().unwrap());
    redis.cleanup().await;
}

/// A workflow's nodes are signed as plain tasks are: its roots (enqueued
/// by the submit) and the nodes its settlements ready (a join, then a
/// step after it) all run on a worker that verifies, none dead-lettered.
#[tokio::test]
async fn a_workflow_runs_signed() {
    let redis = TestRedis::new().await;
    let signed = broker(&redis, Some(keys(KEY))).await;
    let runs = Runs::default();
    let worker = start_worker(signed.clone(), &runs, false);
    let client = Client::new(signed);
    let mut wf = spool_sdk::workflow::Workflow::new();
    for n in 0..3 {
        wf.node(&format!("member-{n}"), Work { n });
    }
    wf.node("join", Work { n: 10 })
        .after(&["member-0", "member-1", "member-2"]);
    wf.node("last", Work { n: 11 }).after(&["join"]);
    let handle = client.submit_workflow(wf).await.unwrap();
    let status = handle.finished(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        status.state,
        spool_sdk::workflow::WorkflowState::Succeeded,
        "{status:?}"
    );
    assert_eq!(ran(&runs), BTreeSet::from([0, 1, 2, 10, 11]));
    assert!(redis.dead_letters(&QueueName::DEFAULT).await.is_empty());
    worker.stop().await;
    redis.cleanup().await;
}

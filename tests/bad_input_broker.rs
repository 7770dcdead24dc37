//! Bad input aimed at the broker: a Redis full under `noeviction`,
//! oversized envelopes and results.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use spool_broker::store::{JobStatus, JobStore};
use spool_broker::{
    Broker as _, DEFAULT_MAX_ENVELOPE_BYTES, DeadLetterEntry, Envelope, Error, Priority, QueueName,
    RedisBroker, RedisConfig, Task, encode_payload,
};
use spool_tests::{
    RedisServer, TestRedis, bins, redis_url, short_lease_config, spawn_worker, wait_until,
};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Blob {
    bytes: Vec<u8>,
}

impl Task for Blob {
    const NAME: &'static str = "test.full.blob";
    type Output = ();
}

/// Makes the server refuse every write that may grow memory, as a full
/// Redis under `noeviction` does.
async fn fill_up(redis: &TestRedis) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut redis.raw())
        .await
        .unwrap();
}

/// A backlog on a full Redis is drained: fetching claims, runs and
/// acknowledges it (the fetch script used to write its bookkeeping first,
/// which Redis refused, so every fetch failed with OOM and nothing ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_is_drained() {
    let server = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let redis = TestRedis::at(&server.url()).await;
    let queue = QueueName::DEFAULT;
    let ids = redis
        .client()
        .enqueue_many((0..200).map(|_| Blob {
            bytes: vec![7; 1024],
        }))
        .await
        .unwrap();
    // Some of them due later, so that promotion is refused too.
    redis
        .client()
        .enqueue(Blob { bytes: vec![] })
        .countdown(Duration::from_millis(300))
        .await
        .unwrap();
    fill_up(&redis).await;
    let refused = redis.client().enqueue(Blob { bytes: vec![] }).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("OOM")),
        "{refused:?}"
    );

    let worker = Worker::new(redis.broker.clone(), short_lease_config("full"))
        .register::<Blob, _>(|_: Blob, _ctx: TaskContext| async { Ok::<_, TaskError>(()) });
    let running = spawn_worker(worker);
    running
        .wait_for("the backlog to drain", Duration::from_secs(30), |c| {
            c.succeeded >= ids.len() as u64
        })
        .await;
    let report = running.stop().await;
    assert_eq!(report.succeeded, 200, "{report:?}");
    assert_eq!(redis.stats(&queue).await.ready_total(), 0);
    assert!(
        redis
            .pending_by_consumer(&queue)
            .await
            .values()
            .all(|&n| n == 0)
    );
}

/// A batch Redis takes in part says which tasks made it and why the others
/// did not, once: from the library and from `spoolctl call`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_enqueue_names_what_made_it() {
    let server = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let redis = TestRedis::at(&server.url()).await;
    let queue = QueueName::DEFAULT;
    let payload = encode_payload(&vec![7u8; 4096]).unwrap();
    let envelopes: Vec<Envelope> = (0..500)
        .map(|_| Envelope::new("test.full.blob", queue.clone(), payload.clone()))
        .collect();
    // Room for part of the batch only.
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut redis.raw())
        .await
        .unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 512 * 1024)
        .query_async(&mut redis.raw())
        .await
        .unwrap();
    let err = redis.broker.enqueue(&envelopes).await.unwrap_err();
    let Error::PartialEnqueue {
        enqueued, refused, ..
    } = &err
    else {
        panic!("not a partial enqueue: {err}");
    };
    assert!(!enqueued.is_empty() && *refused > 0, "{err}");
    assert_eq!(enqueued.len() + refused, 500);
    let stream = redis
        .stream_envelopes(&queue, spool_broker::Priority::Normal)
        .await;
    let in_stream: Vec<_> = stream.iter().map(|(_, e)| e.id).collect();
    assert_eq!(&in_stream, enqueued);
    assert!(err.to_string().contains("OOM"), "{err}");

    // The CLI: the ids that made it on stdout, one error line on stderr.
    let _: () = redis
        .raw()
        .del(redis.stream_keys(&queue).to_vec())
        .await
        .unwrap();
    let out = std::process::Command::new(bins::spoolctl())
        .args(["--redis-url", &server.url(), "--key-prefix", &redis.prefix])
        .args(["call", "--force", "test.full.blob", "--count", "500"])
        .args([
            "--args",
            &format!("{{\"bytes\": \"{}\"}}", "x".repeat(4096)),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let printed = stdout.lines().count();
    assert!(printed > 0 && printed < 500, "{printed} ids: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("enqueued {printed} of 500")),
        "{stderr}"
    );
    let stream = redis
        .stream_envelopes(&queue, spool_broker::Priority::Normal)
        .await;
    assert_eq!(stream.len(), printed);
}

/// A broker on the test's Redis and prefix with its own envelope limit.
async fn broker_with_limit(redis: &TestRedis, max_envelope_bytes: usize) -> RedisBroker {
    RedisBroker::connect(RedisConfig {
        key_prefix: redis.prefix.clone(),
        max_envelope_bytes,
        ..RedisConfig::from_url(redis_url())
    })
    .await
    .unwrap()
}

/// Waits until `queue` holds `count` dead letters, and returns them.
async fn dead_letters(redis: &TestRedis, queue: &QueueName, count: usize) -> Vec<DeadLetterEntry> {
    wait_until("the dead letters", Duration::from_secs(10), || async {
        redis.dead_letters(queue).await.len() >= count
    })
    .await;
    redis.dead_letters(queue).await
}

/// An envelope over the limit written straight into a stream (not through
/// a producer, which refuses it) is dead-lettered `oversized` with its
/// size and the limit, without being decoded or run; its bytes are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_envelope_is_dead_lettered_unread() {
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    let limit = 64 * 1024;
    let broker = broker_with_limit(&redis, limit).await;
    let big = Envelope::for_task(&Blob {
        bytes: vec![1; 2 * limit],
    })
    .unwrap();
    let bytes = big.encode().unwrap();
    redis
        .xadd_raw(&queue, Priority::Normal, &[("e", &bytes)])
        .await;
    let ran = Arc::new(AtomicU32::new(0));
    let runs = Arc::clone(&ran);
    let worker = Worker::new(broker, short_lease_config("oversized")).register::<Blob, _>(
        move |_: Blob, _ctx: TaskContext| {
            runs.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, TaskError>(()) }
        },
    );
    let running = spawn_worker(worker);
    let dead = dead_letters(&redis, &queue, 1).await;
    running.stop().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.reason, "oversized", "{letter:?}");
    assert!(
        letter.error.contains(&format!("{} bytes", bytes.len()))
            && letter.error.contains(&format!("limit of {limit} bytes")),
        "{}",
        letter.error
    );
    assert_eq!(letter.raw, bytes);
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    redis.cleanup().await;
}

/// A producer refuses an envelope over the limit before sending anything,
/// naming the task, its size and the limit; a batch holding one is refused
/// whole.
#[tokio::test]
async fn an_oversized_enqueue_is_refused_before_sending() {
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    let limit = 64 * 1024;
    let broker = broker_with_limit(&redis, limit).await;
    let client = spool_sdk::Client::new(broker.clone());
    let err = client
        .enqueue(Blob {
            bytes: vec![1; 2 * limit],
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test.full.blob") && err.contains(&format!("limit of {limit} bytes")),
        "{err}"
    );

    let small = Envelope::for_task(&Blob { bytes: vec![1; 16] }).unwrap();
    let big = Envelope::for_task(&Blob {
        bytes: vec![1; limit],
    })
    .unwrap();
    let err = broker.enqueue(&[small, big.clone()]).await.unwrap_err();
    let Error::Oversized { size, limit: l, .. } = &err else {
        panic!("not oversized: {err}");
    };
    assert_eq!((*size, *l), (big.encode().unwrap().len(), limit));
    assert_eq!(redis.stats(&queue).await.ready_total(), 0);

    // The default limit is 16 MiB: well above that is refused too.
    let err = redis
        .client()
        .enqueue(Blob {
            bytes: vec![1; DEFAULT_MAX_ENVELOPE_BYTES + 1],
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("over the limit of 16777216 bytes"), "{err}");
    assert_eq!(redis.stats(&queue).await.ready_total(), 0);
    redis.cleanup().await;
}

#[derive(Debug, Serialize, Deserialize)]
struct Inflate {
    bytes: usize,
}

impl Task for Inflate {
    const NAME: &'static str = "test.oversized.inflate";
    type Output = Vec<u8>;
}

/// A result over the worker's limit is not stored: the task is
/// dead-lettered `oversized` with the size, and its record in the job
/// store holds no result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_result_is_dead_lettered_not_stored() {
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    let dir = std::env::temp_dir().join(format!("spool-oversized-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let store = JobStore::create(&format!("sqlite://{}/jobs.db", dir.display()))
        .await
        .unwrap();
    let client = redis.client().with_store(store.clone());
    let fits = client.enqueue(Inflate { bytes: 100 }).await.unwrap();
    let too_big = client.enqueue(Inflate { bytes: 100_000 }).await.unwrap();
    let config = WorkerConfig {
        max_result_bytes: 64 * 1024,
        ..short_lease_config("big-results")
    };
    let worker = Worker::new(redis.broker.clone(), config)
        .with_store(store.clone())
        .register::<Inflate, _>(|task: Inflate, _ctx: TaskContext| async move {
            Ok::<_, TaskError>(vec![7u8; task.bytes])
        });
    let running = spawn_worker(worker);
    let dead = dead_letters(&redis, &queue, 1).await;
    running
        .wait_for("both outcomes", Duration::from_secs(10), |c| {
            c.succeeded + c.dead_lettered >= 2
        })
        .await;
    let report = running.stop().await;
    assert_eq!(
        (report.succeeded, report.dead_lettered),
        (1, 1),
        "{report:?}"
    );
    let letter = &dead[0];
    assert_eq!(letter.reason, "oversized", "{letter:?}");
    assert_eq!(letter.envelope.as_ref().unwrap().id, too_big);
    assert!(
        letter.error.contains("over the limit of 65536 bytes"),
        "{}",
        letter.error
    );
    let record = store.get(too_big).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Dead);
    assert!(record.result.is_none(), "{record:?}");
    let record = store.get(fits).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    redis.cleanup().await;
}

/// Something other than Redis on the Redis port (an HTTP server) is named
/// as such, URL redacted, instead of a parser's "Unexpected byte".
#[tokio::test]
async fn an_http_server_on_the_redis_port_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                let _ = socket.shutdown().await;
            });
        }
    });
    let url = format!("redis://spool:s3cret@127.0.0.1:{port}/");
    let err = RedisBroker::connect(RedisConfig {
        connect_timeout: Duration::from_secs(3),
        response_timeout: Duration::from_secs(3),
        ..RedisConfig::from_url(&url)
    })
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NotRedis { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!(
            "redis://***@127.0.0.1:{port}/ does not speak the Redis protocol (is another service \
             on that port?)"
        )),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    server.abort();
}

/// Runs a worker with no handlers on `broker` until `queue` holds `count`
/// dead letters, and returns them.
async fn dead_letter_with(
    redis: &TestRedis,
    broker: RedisBroker,
    queue: &QueueName,
    count: usize,
) -> Vec<DeadLetterEntry> {
    let running = spawn_worker(Worker::new(broker, short_lease_config("refuser")));
    let dead = dead_letters(redis, queue, count).await;
    running.stop().await;
    dead
}

/// An envelope allowing no attempt is refused at enqueue, and one written
/// straight into a stream is dead-lettered `malformed` for what it is, not
/// as "its worker died during the last allowed attempt".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_max_attempts_is_refused_and_dead_lettered_as_malformed() {
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    let mut envelope = Envelope::for_task(&Blob { bytes: vec![] }).unwrap();
    envelope.max_attempts = 0;
    let err = redis
        .broker
        .enqueue(std::slice::from_ref(&envelope))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidEnvelope { .. }), "{err:?}");
    assert!(
        err.to_string().contains("max_attempts must be at least 1"),
        "{err}"
    );
    assert_eq!(redis.stats(&queue).await.ready_total(), 0);

    redis
        .xadd_raw(
            &queue,
            Priority::Normal,
            &[("e", &envelope.encode().unwrap())],
        )
        .await;
    let dead = dead_letter_with(&redis, redis.broker.clone(), &queue, 1).await;
    assert_eq!(dead[0].reason, "malformed", "{dead:?}");
    assert_eq!(dead[0].error, "max_attempts must be at least 1");
    assert_eq!(dead[0].attempts, 0);
    redis.cleanup().await;
}

/// A frame whose signature verifies but whose payload is no envelope is
/// `malformed` "signed payload is not a Spool envelope", even when its
/// first bytes read like a large format version; only a real envelope of
/// a newer version is called one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_frame_around_garbage_is_called_garbage() {
    use hmac::{KeyInit as _, Mac as _};

    const KEY: &str = "0123456789abcdef0123456789abcdef-bad-input";
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    let sign = |payload: &[u8]| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
        mac.update(&[0xC1, 1]);
        mac.update(payload);
        let mut frame = vec![0xC1, 1];
        frame.extend_from_slice(&mac.finalize().into_bytes());
        frame.extend_from_slice(payload);
        frame
    };
    // A MessagePack array led by 103, then text: the shape of the garbage
    // once reported as "format version 103 is newer".
    let garbage = rmp_serde::to_vec(&(103u8, "garbage", 7u8)).unwrap();
    let mut newer = Envelope::for_task(&Blob { bytes: vec![] }).unwrap();
    newer.version = spool_broker::FORMAT_VERSION + 1;
    for payload in [
        garbage,
        b"not msgpack at all".to_vec(),
        newer.encode().unwrap(),
    ] {
        redis
            .xadd_raw(&queue, Priority::Normal, &[("e", &sign(&payload))])
            .await;
    }
    let broker = RedisBroker::connect(RedisConfig {
        key_prefix: redis.prefix.clone(),
        signing: Some(spool_broker::SigningKeys::new(KEY).unwrap()),
        ..RedisConfig::from_url(redis_url())
    })
    .await
    .unwrap();
    let dead = dead_letter_with(&redis, broker, &queue, 3).await;
    assert!(dead.iter().all(|d| d.reason == "malformed"), "{dead:?}");
    // Settled concurrently: in any order.
    let (newer, garbled): (Vec<&str>, Vec<&str>) = dead
        .iter()
        .map(|d| d.error.as_str())
        .partition(|e| e.contains("newer"));
    assert_eq!(garbled.len(), 2, "{dead:?}");
    for garbled in garbled {
        assert!(
            garbled.starts_with("signed payload is not a Spool envelope: "),
            "{garbled}"
        );
    }
    assert!(
        newer[0].contains("format version 2 is newer") && newer[0].contains("upgrade the worker"),
        "{}",
        newer[0]
    );
    redis.cleanup().await;
}

/// Delayed members whose score is no due time (`+inf`, `-inf`, negative,
/// past the year 9999) are dead-lettered `malformed` "due time is not a
/// finite time" with their envelope intact, instead of staying in the
/// delayed set forever (or being promoted as due); a sane one next to
/// them is promoted and delivered.
#[tokio::test]
async fn delayed_members_with_no_finite_due_time_are_dead_lettered() {
    let redis = TestRedis::new().await;
    let queue = QueueName::DEFAULT;
    let delayed = format!("{}:{{{queue}}}:delayed", redis.prefix);
    let member = |envelope: &Envelope| {
        let mut bytes = vec![b'1'];
        bytes.extend(envelope.encode().unwrap());
        bytes
    };
    let scores = ["+inf", "-inf", "1e300", "-5"];
    let timeless: Vec<Envelope> = scores
        .iter()
        .map(|_| Envelope::for_task(&Blob { bytes: vec![] }).unwrap())
        .collect();
    for (score, envelope) in scores.iter().zip(&timeless) {
        let _: () = redis::cmd("ZADD")
            .arg(&delayed)
            .arg(score)
            .arg(member(envelope))
            .query_async(&mut redis.raw())
            .await
            .unwrap();
    }
    // NaN is no score Redis takes at all.
    let nan: redis::RedisResult<()> = redis::cmd("ZADD")
        .arg(&delayed)
        .arg("nan")
        .arg("x")
        .query_async(&mut redis.raw())
        .await;
    assert!(nan.is_err());
    let sane = Envelope::for_task(&Blob { bytes: vec![1] }).unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(&delayed)
        .arg(1)
        .arg(member(&sane))
        .query_async(&mut redis.raw())
        .await
        .unwrap();

    let batch = redis
        .broker
        .fetch(&queue, "c", 10, Duration::ZERO)
        .await
        .unwrap();
    let fetched: Vec<_> = batch.deliveries.iter().map(|d| d.envelope.id).collect();
    assert_eq!(fetched, [sane.id]);
    assert!(batch.malformed.is_empty());
    let left: u64 = redis.raw().zcard(&delayed).await.unwrap();
    assert_eq!(left, 0);
    let dead = redis.dead_letters(&queue).await;
    assert_eq!(dead.len(), scores.len(), "{dead:?}");
    for letter in &dead {
        assert_eq!(letter.reason, "malformed");
        assert!(
            letter.error.starts_with("due time is not a finite time"),
            "{}",
            letter.error
        );
    }
    let mut buried: Vec<_> = dead
        .iter()
        .map(|d| d.envelope.as_ref().unwrap().id)
        .collect();
    let mut expected: Vec<_> = timeless.iter().map(|e| e.id).collect();
    buried.sort();
    expected.sort();
    assert_eq!(buried, expected);
    redis.cleanup().await;
}

/// A Redis user made for one test (random name), deleted when dropped.
struct AclUser {
    name: String,
    password: String,
}

impl AclUser {
    async fn create(redis: &TestRedis, rules: &[&str]) -> Self {
        // The user's credentials go into a redis:// URL; a cluster keeps
        // ACL users per node, so these tests run on a single server.
        assert!(
            redis_url().starts_with("redis://"),
            "the permission tests need a single Redis at a redis:// URL, not {}",
            redis_url()
        );
        let name = format!("spool-test-user-{:08x}", fastrand::u32(..));
        let password = format!("pw-{:016x}", fastrand::u64(..));
        let mut setuser = redis::cmd("ACL");
        setuser
            .arg("SETUSER")
            .arg(&name)
            .arg("on")
            .arg(format!(">{password}"));
        for rule in rules {
            setuser.arg(rule.replace("PREFIX", &redis.prefix));
        }
        let _: () = setuser.query_async(&mut redis.raw()).await.unwrap();
        Self { name, password }
    }

    async fn broker(&self, redis: &TestRedis) -> RedisBroker {
        let url = redis_url().replacen(
            "redis://",
            &format!("redis://{}:{}@", self.name, self.password),
            1,
        );
        RedisBroker::connect(RedisConfig {
            key_prefix: redis.prefix.clone(),
            ..RedisConfig::from_url(url)
        })
        .await
        .unwrap()
    }
}

impl Drop for AclUser {
    /// Deleted even when the test fails.
    fn drop(&mut self) {
        if let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
            let _: redis::RedisResult<i64> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.name)
                .query(&mut conn);
        }
    }
}

/// Runs a worker of the default queue on `broker` until it returns by
/// itself, which it must within 10 s.
async fn run_until_it_stops(
    broker: RedisBroker,
) -> spool_worker::Result<spool_worker::CounterSnapshot> {
    let worker = Worker::new(broker, short_lease_config("denied"))
        .register::<Blob, _>(|_: Blob, _ctx: TaskContext| async { Ok::<_, TaskError>(()) });
    tokio::time::timeout(Duration::from_secs(10), worker.run(std::future::pending()))
        .await
        .expect("the worker kept retrying a refused command")
}

/// A Redis user lacking a command the worker needs is caught at start-up,
/// the command named (`ACL DRYRUN`, where the user may run it): the worker
/// does not start. A user allowed everything passes the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_at_start_up() {
    let redis = TestRedis::new().await;
    let user = AclUser::create(&redis, &["~PREFIX:*", "&PREFIX:*", "+@all", "-xclaim"]).await;
    let broker = user.broker(&redis).await;
    let err = broker
        .check_permissions(&[QueueName::DEFAULT])
        .await
        .unwrap_err();
    let Error::Permission { command, detail } = &err else {
        panic!("not a permission error: {err:?}");
    };
    assert!(command.starts_with("XCLAIM (on "), "{command}");
    assert!(detail.contains("xclaim"), "{detail}");
    let stopped = run_until_it_stops(broker).await.unwrap_err();
    assert!(
        matches!(
            stopped,
            spool_worker::Error::Broker(Error::Permission { .. })
        ),
        "{stopped:?}"
    );
    assert!(
        stopped.to_string().contains("may not run XCLAIM"),
        "{stopped}"
    );
    drop(user);

    let allowed = AclUser::create(&redis, &["~PREFIX:*", "&PREFIX:*", "+@all"]).await;
    allowed
        .broker(&redis)
        .await
        .check_permissions(&[QueueName::DEFAULT, QueueName::GPU])
        .await
        .unwrap();
    drop(allowed);
    redis.cleanup().await;
}

/// A user who may not check its own permissions (no `ACL DRYRUN`) and
/// lacks a command that Spool's fetch script runs, or has it only on
/// other keys (a Redis 7 selector): the first fetch is refused, and the
/// worker stops with the error instead of logging "fetch failed;
/// retrying" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_fetch_stops_the_worker() {
    let redis = TestRedis::new().await;
    redis
        .client()
        .enqueue(Blob { bytes: vec![] })
        .await
        .unwrap();
    for (refusal, why) in [
        ("-xreadgroup", "can't run this command"),
        (
            "(~elsewhere:* +xreadgroup)",
            "can't access at least one of the keys",
        ),
    ] {
        let rules = [
            "~PREFIX:*",
            "&PREFIX:*",
            "+@all",
            "-acl",
            "-xreadgroup",
            refusal,
        ];
        let user = AclUser::create(&redis, &rules).await;
        let broker = user.broker(&redis).await;
        // The check cannot be made: skipped.
        broker
            .check_permissions(&[QueueName::DEFAULT])
            .await
            .unwrap();
        let stopped = run_until_it_stops(broker).await.unwrap_err();
        let spool_worker::Error::Broker(Error::Permission { command, detail }) = &stopped else {
            panic!("{refusal}: not a permission error: {stopped:?}");
        };
        assert!(command.contains("script"), "{refusal}: {command}");
        assert!(detail.contains(why), "{refusal}: {detail}");
        drop(user);
    }
    redis.cleanup().await;
}

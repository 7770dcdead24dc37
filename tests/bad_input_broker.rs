//! Bad input aimed at the broker: a Redis full under `noeviction`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use spool_broker::{Broker as _, Envelope, Error, QueueName, Task, encode_payload};
use spool_tests::{RedisServer, TestRedis, bins, short_lease_config, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker};

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
        .args(["call", "test.full.blob", "--count", "500"])
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

//! Bad input aimed at the control plane: what `spoolctl` shows of a Redis
//! holding keys it did not write.
#![allow(clippy::unwrap_used)]

use redis::AsyncCommands as _;
use spool_broker::{Priority, QueueName};
use spool_tests::{TestRedis, bins, redis_url};

/// Runs `spoolctl` with `args` under the test's prefix.
fn spoolctl(redis: &TestRedis, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(bins::spoolctl())
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A queue key of the wrong type spoils that queue's row only: the error
/// is in its row (text and JSON) and the other queues are listed.
#[tokio::test]
async fn one_bad_queue_key_does_not_hide_the_other_queues() {
    let redis = TestRedis::new().await;
    let gpu = QueueName::GPU;
    let _: () = redis
        .raw()
        .set(
            redis.stream_key(&gpu, Priority::Normal.as_str()),
            "not a stream",
        )
        .await
        .unwrap();
    spool_broker::Broker::enqueue(
        &redis.broker,
        &[spool_broker::Envelope::new("x", QueueName::DEFAULT, vec![])],
    )
    .await
    .unwrap();

    let (code, stdout, stderr) = spoolctl(&redis, &["queues", "--json", "--sample", "0s"]);
    assert_eq!(code, Some(0), "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["queue"] == name).unwrap().clone();
    assert!(
        row("gpu")["error"].as_str().unwrap().contains("WRONGTYPE"),
        "{stdout}"
    );
    assert_eq!(row("default")["backlog"], 1, "{stdout}");
    assert!(row("default").get("error").is_none(), "{stdout}");

    let (code, stdout, stderr) = spoolctl(&redis, &["queues", "--sample", "0s"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("default ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("queue gpu: ") && stdout.contains("WRONGTYPE"),
        "{stdout}"
    );
    redis.cleanup().await;
}

//! `spoolctl queues` lists every queue that holds tasks, whether or not a
//! worker serves it, and flags a backlog nobody consumes; on one Redis and
//! on a three-master Redis Cluster, where every master is scanned. Real
//! Redis, the real `spoolctl`.
//!
//! Build the binaries first: `cargo build -p spool-scheduler --bins`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;
use spool_broker::{Broker, Envelope, QueueName};
use spool_tests::{RedisCluster, TestRedis, bins, redis_url};

fn spoolctl(url: &str, prefix: &str, args: &[&str]) -> String {
    bins::stdout_of(
        Command::new(bins::spoolctl())
            .args(["--redis-url", url, "--key-prefix", prefix])
            .args(args),
    )
}

/// Enqueues tasks on queues no worker serves (one of them only delayed,
/// one only dead), then checks `queues` in JSON and as a table.
async fn unserved_queues_are_listed_and_flagged(redis: &TestRedis, url: &str) {
    let orphans: Vec<QueueName> = (0..6)
        .map(|i| QueueName::new(format!("orphans-{i}")).unwrap())
        .collect();
    for queue in &orphans {
        let task = Envelope::new("spool.ping", queue.clone(), Vec::new());
        redis.broker.enqueue(&[task]).await.unwrap();
    }
    let mut later = Envelope::new("spool.ping", QueueName::new("later").unwrap(), Vec::new());
    later.eta = Some(
        later
            .created_at
            .saturating_add(std::time::Duration::from_secs(3600)),
    );
    redis.broker.enqueue(&[later]).await.unwrap();

    let known = redis.broker.known_queues().await.unwrap();
    for queue in orphans.iter().chain([&QueueName::new("later").unwrap()]) {
        assert!(known.contains(queue), "{queue} not in {known:?}");
    }

    let rows: Value = serde_json::from_str(&spoolctl(
        url,
        &redis.prefix,
        &["queues", "--json", "--sample", "0s"],
    ))
    .unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["queue"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {rows}"))
            .clone()
    };
    for queue in &orphans {
        let r = row(queue.as_str());
        assert_eq!(
            (&r["backlog"], &r["consumers"]),
            (&Value::from(1), &Value::from(0))
        );
        assert_eq!(r["no_consumer"], true, "{r}");
    }
    let later = row("later");
    assert_eq!(
        (&later["delayed"], &later["no_consumer"]),
        (&Value::from(1), &Value::from(false))
    );
    assert_eq!(
        row("default")["no_consumer"],
        false,
        "an empty queue is not flagged"
    );

    let table = spoolctl(url, &redis.prefix, &["queues", "--sample", "0s"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header.last(), Some(&"FLAG"), "{table}");
    for queue in &orphans {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(queue.as_str()))
            .unwrap_or_else(|| panic!("{queue} not in the table: {table}"));
        assert!(line.ends_with("no-consumer"), "{table}");
    }
}

#[tokio::test]
async fn queues_lists_a_backlog_nobody_serves() {
    let redis = TestRedis::new().await;
    unserved_queues_are_listed_and_flagged(&redis, &redis_url()).await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_scans_every_master_of_a_cluster() {
    let cluster = RedisCluster::start(&[]);
    let url = cluster.url();
    let redis = TestRedis::at(&url).await;
    unserved_queues_are_listed_and_flagged(&redis, &url).await;
}

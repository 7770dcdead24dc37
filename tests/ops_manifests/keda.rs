//! KEDA's ScaledObjects: streams, consumer group, lag and load, against a real worker.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::StreamInfoGroupsReply;
use serde_json::Value as Json;
use spool_broker::{Priority, QueueName};
use spool_tests::{TestRedis, spawn_worker};
use spool_worker::{Worker, WorkerConfig};

use crate::containers::{containers, worker_containers};
use crate::files::{Object, find, k8s_objects, seq, text};
use crate::metrics::{exported_metrics, unknown_metrics};

/// A redis-streams trigger: (stream, consumer group, lagCount).
fn lag_triggers(scaled: &Object) -> Vec<(String, String, u64)> {
    seq(&scaled.doc["spec"]["triggers"])
        .iter()
        .filter(|t| t["type"].as_str().is_some_and(|t| t.starts_with("redis")))
        .map(|t| {
            let m = &t["metadata"];
            assert!(m["pendingEntriesCount"].is_null() && m["streamLength"].is_null());
            (
                text(&m["stream"]),
                text(&m["consumerGroup"]),
                text(&m["lagCount"]).parse().expect("lagCount mode"),
            )
        })
        .collect()
}

#[test]
fn keda_watches_every_stream_of_its_pools_and_the_exported_load() {
    let objects = k8s_objects();
    let known = exported_metrics();
    let workers = worker_containers(&objects);
    let exporter = containers(&objects)
        .into_iter()
        .find(|c| c.deployment == "spool-exporter")
        .expect("the queue exporter KEDA's Prometheus triggers read");
    assert!(
        exporter.argv.iter().any(|a| a == "--dry-run"),
        "the exporter must not act"
    );
    let exported: Json = serde_json::from_str(&exporter.run(&objects, "--print-config")).unwrap();
    let exported_queues: BTreeSet<&str> = exported["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["queues"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q.as_str().unwrap())
        })
        .collect();
    let scaled: Vec<&Object> = objects
        .iter()
        .filter(|o| o.kind() == "ScaledObject")
        .collect();
    assert_eq!(
        scaled.len(),
        workers.len(),
        "one ScaledObject per worker Deployment"
    );
    for so in scaled {
        let target = so.doc["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
        let worker = workers
            .iter()
            .find(|c| c.deployment == target)
            .unwrap_or_else(|| panic!("ScaledObject {}: no Deployment {target}", so.name()));
        let queues: Vec<&str> = worker
            .env_value("SPOOL_QUEUES")
            .unwrap()
            .split(',')
            .collect();
        let expected: BTreeSet<String> = queues
            .iter()
            .flat_map(|q| Priority::ALL.map(|p| format!("spool:{{{q}}}:{}", p.as_str())))
            .collect();
        let triggers = lag_triggers(so);
        let streams: BTreeSet<String> = triggers.iter().map(|t| t.0.clone()).collect();
        assert_eq!(streams, expected, "ScaledObject {}", so.name());
        assert!(
            triggers.iter().all(|t| t.1 == "spool" && t.2 > 0),
            "{triggers:?}"
        );
        for trigger in seq(&so.doc["spec"]["triggers"]) {
            if let Some(auth) = trigger["authenticationRef"]["name"].as_str() {
                find(&objects, "TriggerAuthentication", auth);
            }
        }
        // The Prometheus trigger: the whole pool's backlog and in-flight.
        let query = seq(&so.doc["spec"]["triggers"])
            .iter()
            .find(|t| t["type"].as_str() == Some("prometheus"))
            .map(|t| text(&t["metadata"]["query"]))
            .unwrap_or_else(|| panic!("ScaledObject {}: no prometheus trigger", so.name()));
        assert!(unknown_metrics(&query, &known).is_empty(), "{query}");
        for metric in [
            "spool_autoscaler_queue_backlog",
            "spool_autoscaler_queue_in_flight",
        ] {
            assert!(query.contains(metric), "{query}");
        }
        for queue in &queues {
            assert!(query.contains(queue), "{query} misses {queue}");
            assert!(
                exported_queues.contains(queue),
                "the exporter does not watch {queue}"
            );
        }
    }
}

/// KEDA's trigger names against a real worker's Redis keys: after a worker
/// has served the queues, every stream a trigger names exists with the
/// consumer group it names, and the lag Redis reports (what `lagCount`
/// reads) is the number of tasks waiting in that stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_streams_and_lag_match_a_real_worker() {
    let objects = k8s_objects();
    let triggers: Vec<(String, String, u64)> = objects
        .iter()
        .filter(|o| o.kind() == "ScaledObject")
        .flat_map(lag_triggers)
        .collect();
    let queues: BTreeSet<QueueName> = triggers
        .iter()
        .map(|(stream, _, _)| {
            let tag = stream.split_once('{').unwrap().1.split_once('}').unwrap().0;
            tag.parse().unwrap()
        })
        .collect();
    let redis = TestRedis::new().await;
    let client = redis.client();
    let sleep = || spool_worker::builtin::Sleep { ms: 0 };
    // Served and acknowledged (their entries deleted)...
    for queue in &queues {
        for priority in Priority::ALL {
            client
                .enqueue(sleep())
                .queue(queue.clone())
                .priority(priority)
                .await
                .unwrap();
        }
    }
    let worker = spawn_worker(
        Worker::new(
            redis.broker.clone(),
            WorkerConfig {
                queues: queues.iter().cloned().collect(),
                poll_interval: Duration::from_millis(50),
                ..WorkerConfig::default()
            },
        )
        .with_builtin_tasks(),
    );
    let served = (queues.len() * 3) as u64;
    worker
        .wait_for("every queue served", Duration::from_secs(10), |c| {
            c.succeeded >= served
        })
        .await;
    worker.stop().await;
    // ...then new work waits: 1 high, 2 normal, 3 low per queue.
    let waiting = |p: Priority| match p {
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    };
    for queue in &queues {
        for priority in Priority::ALL {
            for _ in 0..waiting(priority) {
                client
                    .enqueue(sleep())
                    .queue(queue.clone())
                    .priority(priority)
                    .await
                    .unwrap();
            }
        }
    }
    // The exporter, run once against them, reads the same backlog.
    let exporter = containers(&objects)
        .into_iter()
        .find(|c| c.deployment == "spool-exporter")
        .unwrap();
    let url = spool_tests::redis_url();
    let tick: Json = serde_json::from_str(&exporter.run_with(
        &objects,
        "--once",
        &[
            ("SPOOL_REDIS_URL", &url),
            ("SPOOL_KEY_PREFIX", &redis.prefix),
        ],
    ))
    .unwrap();
    assert_eq!(tick["dry_run"], true, "{tick}");
    let mut exported = BTreeSet::new();
    for pool in tick["pools"].as_array().unwrap() {
        for queue in pool["queues"].as_array().unwrap() {
            assert_eq!(queue["ready"], 6, "{queue}");
            assert_eq!(queue["dead_letters"], 0, "{queue}");
            exported.insert(
                queue["queue"]
                    .as_str()
                    .unwrap()
                    .parse::<QueueName>()
                    .unwrap(),
            );
        }
    }
    assert_eq!(exported, queues);
    let mut raw = redis.raw();
    for (stream, group, _) in &triggers {
        let key = stream.replacen("spool:", &format!("{}:", redis.prefix), 1);
        assert!(
            stream.starts_with("spool:"),
            "{stream}: not the default prefix"
        );
        let priority = Priority::ALL
            .into_iter()
            .find(|p| stream.ends_with(&format!(":{}", p.as_str())))
            .unwrap();
        let groups: StreamInfoGroupsReply = raw.xinfo_groups(&key).await.unwrap();
        let info = groups
            .groups
            .iter()
            .find(|g| &g.name == group)
            .unwrap_or_else(|| panic!("{key}: no consumer group {group}: {:?}", groups.groups));
        assert_eq!(info.pending, 0, "{key}");
        assert_eq!(
            info.lag,
            Some(waiting(priority)),
            "{key}: the lag KEDA reads"
        );
        let len: usize = raw.xlen(&key).await.unwrap();
        assert_eq!(len, waiting(priority), "{key}");
    }
    redis.cleanup().await;
}

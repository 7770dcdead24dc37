//! `spoolctl workflow show|list|cancel|retry`: the real binary against a
//! real Redis and a SQLite job store. The test plays the worker's part by
//! hand (fetch, settle, dispatch, ack, record), so each state is known.
//!
//! Build the binary first: `cargo build -p spool-scheduler --bins`.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::Duration;

use spool_broker::store::{JobStore, NodeRecordState, NodeTransition};
use spool_broker::workflow::{
    DynamicChildren, Edge, EdgePolicy, NodeName, NodeOutcome, NodeSettlement, NodeSpec,
    WorkflowSpec,
};
use spool_broker::{Broker, Envelope, QueueName, Timestamp, encode_payload};
use spool_tests::{TestRedis, bins, redis_url};

fn spoolctl(redis: &TestRedis, store: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(bins::spoolctl());
    command.args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix]);
    if let Some(url) = store {
        command.args(["--store-url", url]);
    }
    command
        .env_remove("SPOOL_STORE_URL")
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

fn name(s: &str) -> NodeName {
    s.parse().unwrap()
}

fn node(n: &str, parents: &[&str]) -> NodeSpec {
    NodeSpec {
        name: name(n),
        envelope: Envelope::new(format!("video.{n}"), QueueName::DEFAULT, vec![0x80]),
        parents: parents
            .iter()
            .map(|p| Edge {
                parent: name(p),
                policy: EdgePolicy::Fail,
            })
            .collect(),
    }
}

/// Takes the next task, records its start, settles it with `outcome`
/// (recording that too), dispatches and acks: what a worker does.
async fn run_next(redis: &TestRedis, store: &JobStore, outcome: NodeOutcome) -> String {
    let broker = &redis.broker;
    let batch = broker
        .fetch(&QueueName::DEFAULT, "w", 1, Duration::from_secs(10))
        .await
        .unwrap();
    let delivery = batch.deliveries.into_iter().next().expect("a task");
    let envelope = &delivery.envelope;
    let (workflow, node) = envelope.workflow_node().unwrap();
    let started =
        NodeTransition::for_envelope(envelope, NodeRecordState::Running, Timestamp::now());
    store
        .record_node_transitions(&[started.unwrap()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let settlement = NodeSettlement {
        workflow,
        node: node.clone(),
        task_id: envelope.id,
        outcome,
        attempts: envelope.attempt.max(1),
        error: (outcome != NodeOutcome::Succeeded).then(|| "encoder crashed".to_owned()),
        output: (outcome == NodeOutcome::Succeeded)
            .then(|| encode_payload(&serde_json::json!({"height": 720})).unwrap()),
        children: DynamicChildren::default(),
    };
    let settled = broker.settle_node(&settlement).await.unwrap();
    broker.dispatch_outbox(workflow).await.unwrap();
    broker
        .ack(std::slice::from_ref(&delivery.tag))
        .await
        .unwrap();
    store
        .record_node_transitions(&[NodeTransition::settled(
            envelope,
            &settlement,
            Timestamp::now(),
        )])
        .await
        .unwrap();
    if let spool_broker::workflow::Settled::Recorded {
        finished: Some(state),
        ..
    } = settled
    {
        // The end, and the nodes its failure cancelled on the way.
        store
            .record_workflow_finished(workflow, &state, Timestamp::now())
            .await
            .unwrap();
        let status = broker.workflow_status(workflow).await.unwrap().unwrap();
        store
            .sync_workflow(&status, Timestamp::now())
            .await
            .unwrap();
    }
    node.to_string()
}

#[tokio::test]
async fn show_list_retry_and_cancel_a_workflow() {
    let redis = TestRedis::new().await;
    let dir = std::env::temp_dir().join(format!("spool-ctl-wf-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let store_url = format!("sqlite://{}", dir.join("spool.db").display());
    let store = JobStore::create(&store_url).await.unwrap();
    let with_store = Some(store_url.as_str());

    let wf = WorkflowSpec {
        nodes: vec![
            node("probe", &[]),
            node("encode", &["probe"]),
            node("package", &["encode"]),
        ],
        ..WorkflowSpec::new()
    };
    let id = wf.id.to_string();
    redis.broker.submit_workflow(&wf).await.unwrap();
    store
        .record_workflow_submitted(&wf, Timestamp::now())
        .await
        .unwrap();

    // Live state alone: running (exit 6), the graph layered by depth.
    let out = spoolctl(&redis, None, &["workflow", "show", &id]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with(&format!("workflow {id}  running\n")),
        "{shown}"
    );
    let line = |l: &str| {
        shown
            .lines()
            .position(|x| x.contains(l))
            .unwrap_or(usize::MAX)
    };
    assert!(line("│ probe ") < line("│ encode "), "{shown}");
    assert!(line("│ encode ") < line("│ package "), "{shown}");
    assert!(shown.contains("│ queued "), "{shown}");
    assert!(shown.contains("│ ← probe "), "{shown}");
    assert!(shown.contains("(from redis)"), "{shown}");

    // probe succeeds; encode fails: the workflow fails at encode.
    assert_eq!(
        run_next(&redis, &store, NodeOutcome::Succeeded).await,
        "probe"
    );
    assert_eq!(
        run_next(&redis, &store, NodeOutcome::Failed).await,
        "encode"
    );

    let out = spoolctl(&redis, with_store, &["workflow", "show", &id, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let view = json(&out);
    assert_eq!(view["state"], "failed");
    assert_eq!(view["failed_node"], "encode");
    assert_eq!(view["source"], "redis+store");
    let created = view["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");
    assert!(view["duration_seconds"].as_f64().unwrap() > 0.0);
    let nodes = view["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["name"], "probe");
    assert_eq!(nodes[0]["state"], "succeeded");
    assert_eq!(nodes[0]["depth"], 0);
    assert_eq!(nodes[0]["attempts"], 1);
    assert!(nodes[0]["duration_seconds"].as_f64().unwrap() >= 0.02);
    assert_eq!(nodes[0]["output_summary"], r#"{"height":720}"#);
    assert!(nodes[0]["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(nodes[1]["state"], "failed");
    assert_eq!(nodes[1]["error"], "encoder crashed");
    assert_eq!(nodes[1]["parents"][0]["name"], "probe");
    assert_eq!(nodes[1]["parents"][0]["policy"], "fail");
    assert_eq!(
        (nodes[2]["state"].as_str(), nodes[2]["depth"].as_u64()),
        (Some("cancelled"), Some(2))
    );

    let out = spoolctl(&redis, with_store, &["workflow", "show", &id]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with(&format!("workflow {id}  failed at encode: encoder crashed")),
        "{shown}"
    );
    assert!(shown.contains("1 attempt · "), "{shown}");

    // The store lists it, by status.
    let out = spoolctl(
        &redis,
        with_store,
        &["workflow", "list", "--status", "failed", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = json(&out);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["nodes"], 3);
    assert_eq!(rows[0]["nodes_settled"], 3);
    assert_eq!(rows[0]["failed_node"], "encode");
    let out = spoolctl(
        &redis,
        with_store,
        &["workflow", "list", "--status", "running"],
    );
    assert_eq!(text(&out.stdout), "no workflows match\n");
    let out = spoolctl(&redis, None, &["workflow", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("needs the job store"),
        "{}",
        text(&out.stderr)
    );

    // Retry: encode and package run again, probe keeps its output.
    let out = spoolctl(&redis, with_store, &["workflow", "retry", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("retrying workflow {id}: 2 nodes to run again\n")
    );
    let out = spoolctl(&redis, with_store, &["workflow", "show", &id, "--json"]);
    assert_eq!(out.status.code(), Some(6));
    let view = json(&out);
    assert_eq!(view["runs"], 2);
    assert_eq!(view["nodes"][0]["state"], "succeeded");
    assert_eq!(view["nodes"][1]["state"], "queued");
    // Retrying a running workflow is refused.
    let out = spoolctl(&redis, with_store, &["workflow", "retry", &id]);
    assert_eq!(out.status.code(), Some(1));

    // encode starts; cancel stops the workflow.
    let batch = redis
        .broker
        .fetch(&QueueName::DEFAULT, "w", 1, Duration::from_secs(10))
        .await
        .unwrap();
    let encode = &batch.deliveries[0].envelope;
    store
        .record_node_transitions(&[NodeTransition::for_envelope(
            encode,
            NodeRecordState::Running,
            Timestamp::now(),
        )
        .unwrap()])
        .await
        .unwrap();
    let out = spoolctl(&redis, with_store, &["workflow", "show", &id]);
    assert!(
        text(&out.stdout).contains("│ running "),
        "{}",
        text(&out.stdout)
    );
    let out = spoolctl(&redis, with_store, &["workflow", "cancel", &id, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let done = json(&out);
    assert_eq!(
        (done["changed"].as_bool(), done["state"].as_str()),
        (Some(true), Some("cancelled"))
    );
    let out = spoolctl(&redis, with_store, &["workflow", "show", &id]);
    assert_eq!(out.status.code(), Some(4));
    let out = spoolctl(&redis, with_store, &["workflow", "cancel", &id]);
    assert_eq!(
        text(&out.stdout),
        format!("workflow {id} was not running (cancelled)\n")
    );
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(record.status.as_str(), "cancelled");

    // An unknown workflow, and a malformed id.
    let other = spool_broker::workflow::WorkflowId::new().to_string();
    let out = spoolctl(&redis, with_store, &["workflow", "show", &other]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("no workflow {other}")),
        "{}",
        text(&out.stderr)
    );
    let out = spoolctl(&redis, None, &["workflow", "show", "nope"]);
    assert_eq!(out.status.code(), Some(2));

    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    redis.cleanup().await;
}

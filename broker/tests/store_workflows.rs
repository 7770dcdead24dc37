//! Workflow records in the job store, on SQLite and PostgreSQL (see
//! `common/mod.rs`). Snapshots come from the in-memory broker, so the
//! records are checked against the broker's own view of a workflow.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use spool_broker::store::{
    JobStore, NodeRecordState, NodeTransition, WorkflowQuery, WorkflowRecordStatus,
};
use spool_broker::workflow::{
    DynamicChildren, Edge, EdgePolicy, NodeName, NodeOutcome, NodeSettlement, NodeSpec,
    WorkflowSpec, WorkflowState,
};
use spool_broker::{Broker, Envelope, MemoryBroker, QueueName, Timestamp, encode_payload};

store_suite!(
    a_submitted_workflow_records_every_node,
    transitions_move_nodes_forward_only,
    stale_runs_and_replays_change_nothing,
    a_node_started_before_its_readiness_is_recorded_was_queued_by_then,
    a_finished_workflow_keeps_its_end,
    sync_records_dynamic_children_cancels_and_retries,
    lists_filter_by_status_newest_first,
);

const T0: u64 = 1_750_000_000_000;

fn at(offset_ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn name(s: &str) -> NodeName {
    s.parse().unwrap()
}

fn node(n: &str, parents: &[(&str, EdgePolicy)]) -> NodeSpec {
    NodeSpec {
        name: name(n),
        envelope: Envelope::new(format!("video.{n}"), QueueName::DEFAULT, vec![0x80]),
        parents: parents
            .iter()
            .map(|(p, policy)| Edge {
                parent: name(p),
                policy: *policy,
            })
            .collect(),
    }
}

/// probe -> encode (fail edge) -> package (continue edge).
fn chain() -> WorkflowSpec {
    WorkflowSpec {
        nodes: vec![
            node("probe", &[]),
            node("encode", &[("probe", EdgePolicy::Fail)]),
            node("package", &[("encode", EdgePolicy::Continue)]),
        ],
        ..WorkflowSpec::new()
    }
}

fn envelope_of(spec: &WorkflowSpec, n: &str) -> Envelope {
    let mut envelope = spec
        .nodes
        .iter()
        .find(|s| s.name.as_str() == n)
        .unwrap()
        .envelope
        .clone();
    envelope.set_workflow_node(spec.id, &name(n));
    envelope
}

fn transition(
    spec: &WorkflowSpec,
    n: &str,
    state: NodeRecordState,
    attempts: u32,
    offset_ms: u64,
) -> NodeTransition {
    let mut envelope = envelope_of(spec, n);
    envelope.attempt = attempts;
    NodeTransition::for_envelope(&envelope, state, at(offset_ms)).unwrap()
}

async fn a_submitted_workflow_records_every_node(store: JobStore, _url: String) {
    let mut wf = chain();
    wf.deadline = Some(at(60_000));
    store.record_workflow_submitted(&wf, at(0)).await.unwrap();
    // Recording the submit again changes nothing.
    store.record_workflow_submitted(&wf, at(5)).await.unwrap();

    let record = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowRecordStatus::Running);
    assert_eq!((record.node_count, record.nodes_settled), (3, 0));
    assert_eq!(record.runs, 1);
    assert_eq!(record.created_at, at(0));
    assert_eq!(record.deadline, Some(at(60_000)));
    assert_eq!(record.finished_at, None);
    let names: Vec<&str> = record.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["probe", "encode", "package"]);
    let probe = &record.nodes[0];
    assert_eq!(probe.state, NodeRecordState::Queued);
    assert_eq!(probe.queued_at, Some(at(0)));
    assert_eq!(probe.task_id, wf.nodes[0].envelope.id);
    assert_eq!(probe.task, "video.probe");
    assert_eq!(probe.queue, QueueName::DEFAULT);
    assert!(probe.parents.is_empty());
    let package = &record.nodes[2];
    assert_eq!(package.state, NodeRecordState::Waiting);
    assert_eq!(package.queued_at, None);
    assert_eq!(package.parents, wf.nodes[2].parents);

    assert_eq!(
        store
            .workflow_of_task(wf.nodes[1].envelope.id)
            .await
            .unwrap(),
        Some((wf.id, name("encode")))
    );
    assert!(
        store
            .workflow(spool_broker::workflow::WorkflowId::new())
            .await
            .unwrap()
            .is_none()
    );
}

async fn transitions_move_nodes_forward_only(store: JobStore, _url: String) {
    let wf = chain();
    store.record_workflow_submitted(&wf, at(0)).await.unwrap();
    let mut done = transition(&wf, "probe", NodeRecordState::Succeeded, 2, 900);
    done.output = Some(encode_payload(&serde_json::json!({"height": 1080})).unwrap());
    // Out of order: the success, then the first attempt's start, its
    // retry's start, and a late "queued".
    store
        .record_node_transitions(&[
            done,
            transition(&wf, "probe", NodeRecordState::Running, 1, 100),
            transition(&wf, "probe", NodeRecordState::Running, 2, 500),
            transition(&wf, "probe", NodeRecordState::Queued, 0, 50),
        ])
        .await
        .unwrap();
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    let probe = &record.nodes[0];
    assert_eq!(probe.state, NodeRecordState::Succeeded);
    assert_eq!(probe.attempts, 2);
    assert_eq!(probe.queued_at, Some(at(0)), "the submit's time stays");
    assert_eq!(probe.finished_at, Some(at(900)));
    assert_eq!(probe.output_summary.as_deref(), Some(r#"{"height":1080}"#));
    assert!(probe.output_bytes.unwrap() > 5);
    assert_eq!(record.nodes_settled, 1);

    // In order, a node starts, fails and is retried by the worker.
    store
        .record_node_transitions(&[
            transition(&wf, "encode", NodeRecordState::Queued, 0, 1000),
            transition(&wf, "encode", NodeRecordState::Running, 1, 1100),
        ])
        .await
        .unwrap();
    let encode = store.workflow(wf.id).await.unwrap().unwrap().nodes[1].clone();
    assert_eq!(encode.state, NodeRecordState::Running);
    assert_eq!(
        (encode.queued_at, encode.started_at, encode.finished_at),
        (Some(at(1000)), Some(at(1100)), None)
    );
    let mut failed = transition(&wf, "encode", NodeRecordState::Failed, 1, 1500);
    failed.error = Some("encoder crashed".into());
    store.record_node_transitions(&[failed]).await.unwrap();
    let encode = store.workflow(wf.id).await.unwrap().unwrap().nodes[1].clone();
    assert_eq!(encode.state, NodeRecordState::Failed);
    assert_eq!(encode.started_at, Some(at(1100)));
    assert_eq!(encode.finished_at, Some(at(1500)));
    assert_eq!(encode.error.as_deref(), Some("encoder crashed"));
    assert_eq!(encode.output_bytes, None);
}

async fn stale_runs_and_replays_change_nothing(store: JobStore, _url: String) {
    let wf = chain();
    store.record_workflow_submitted(&wf, at(0)).await.unwrap();
    let done = transition(&wf, "probe", NodeRecordState::Succeeded, 1, 300);
    store
        .record_node_transitions(std::slice::from_ref(&done))
        .await
        .unwrap();
    let before = store.workflow(wf.id).await.unwrap().unwrap();

    // A replay, a redelivered run's late start, and a run of another task
    // id (one from before a retry of the workflow).
    let mut stranger = transition(&wf, "probe", NodeRecordState::Failed, 5, 400);
    stranger.task_id = spool_broker::TaskId::new();
    store
        .record_node_transitions(&[
            done,
            transition(&wf, "probe", NodeRecordState::Running, 1, 350),
            stranger,
        ])
        .await
        .unwrap();
    assert_eq!(store.workflow(wf.id).await.unwrap().unwrap(), before);
}

async fn a_node_started_before_its_readiness_is_recorded_was_queued_by_then(
    store: JobStore,
    _url: String,
) {
    let wf = chain();
    store.record_workflow_submitted(&wf, at(0)).await.unwrap();
    // A settlement readies (and enqueues) the child in Redis; the child's
    // worker records its start before the parent's settler records that
    // the child became ready.
    store
        .record_node_transitions(&[transition(&wf, "encode", NodeRecordState::Running, 1, 100)])
        .await
        .unwrap();
    store
        .record_nodes_ready(wf.id, &[name("encode")], at(103))
        .await
        .unwrap();
    let encode = store.workflow(wf.id).await.unwrap().unwrap().nodes[1].clone();
    assert_eq!(encode.state, NodeRecordState::Running);
    assert_eq!(
        (encode.queued_at, encode.started_at),
        (Some(at(100)), Some(at(100))),
        "never queued after it started"
    );

    // The same for a child added at run time: its start is recorded before
    // the settlement that added it.
    let child = spool_broker::workflow::DynamicNode {
        name: name("chunk-0"),
        envelope: Envelope::new("video.chunk", QueueName::DEFAULT, vec![0x80]),
    };
    let mut started = child.envelope.clone();
    started.set_workflow_node(wf.id, &child.name);
    store
        .record_node_transitions(&[NodeTransition::for_envelope(
            &started,
            NodeRecordState::Running,
            at(200),
        )
        .unwrap()])
        .await
        .unwrap();
    let children = DynamicChildren {
        nodes: vec![child],
        join: None,
        join_policy: EdgePolicy::Fail,
    };
    store
        .record_nodes_added(
            wf.id,
            &name("probe"),
            &children,
            &[name("chunk-0")],
            at(204),
        )
        .await
        .unwrap();
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    let chunk = record
        .nodes
        .iter()
        .find(|n| n.name.as_str() == "chunk-0")
        .unwrap();
    assert_eq!(
        (chunk.queued_at, chunk.started_at),
        (Some(at(200)), Some(at(200))),
        "never queued after it started: {chunk:#?}"
    );
}

async fn a_finished_workflow_keeps_its_end(store: JobStore, _url: String) {
    let wf = chain();
    store.record_workflow_submitted(&wf, at(0)).await.unwrap();
    let failed = WorkflowState::Failed {
        node: name("encode"),
        reason: "encoder crashed".into(),
    };
    store
        .record_workflow_finished(wf.id, &failed, at(2000))
        .await
        .unwrap();
    // A second, stale end (and a running "end") change nothing.
    store
        .record_workflow_finished(wf.id, &WorkflowState::Succeeded, at(3000))
        .await
        .unwrap();
    store
        .record_workflow_finished(wf.id, &WorkflowState::Running, at(3000))
        .await
        .unwrap();
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowRecordStatus::Failed);
    assert_eq!(record.failed_node.as_deref(), Some("encode"));
    assert_eq!(record.error.as_deref(), Some("encoder crashed"));
    assert_eq!(record.finished_at, Some(at(2000)));
}

/// The worker's part on the memory broker: fetch one task, settle it.
async fn settle_next(
    broker: &MemoryBroker,
    store: &JobStore,
    outcome: NodeOutcome,
    children: DynamicChildren,
) -> Envelope {
    let batch = broker
        .fetch(&QueueName::DEFAULT, "w", 1, Duration::from_secs(5))
        .await
        .unwrap();
    let delivery = batch.deliveries.into_iter().next().expect("a task");
    let (workflow, node) = delivery.envelope.workflow_node().unwrap();
    let settlement = NodeSettlement {
        workflow,
        node,
        task_id: delivery.envelope.id,
        outcome,
        attempts: delivery.envelope.attempt.max(1),
        error: (outcome != NodeOutcome::Succeeded).then(|| "it broke".to_owned()),
        output: (outcome == NodeOutcome::Succeeded).then(|| encode_payload(&7_u32).unwrap()),
        children,
    };
    broker.settle_node(&settlement).await.unwrap();
    broker.dispatch_outbox(workflow).await.unwrap();
    broker
        .ack(std::slice::from_ref(&delivery.tag))
        .await
        .unwrap();
    store
        .record_node_transitions(&[NodeTransition::settled(
            &delivery.envelope,
            &settlement,
            Timestamp::now(),
        )])
        .await
        .unwrap();
    delivery.envelope
}

async fn sync_records_dynamic_children_cancels_and_retries(store: JobStore, _url: String) {
    let broker = MemoryBroker::new();
    let wf = chain();
    broker.submit_workflow(&wf).await.unwrap();
    store
        .record_workflow_submitted(&wf, Timestamp::now())
        .await
        .unwrap();

    // probe adds two chunks and a join that takes over its dependents.
    let chunk = |n: &str| spool_broker::workflow::DynamicNode {
        name: name(n),
        envelope: Envelope::new("video.chunk", QueueName::DEFAULT, vec![0x80]),
    };
    let children = DynamicChildren {
        nodes: vec![chunk("chunk-0"), chunk("chunk-1")],
        join: Some(chunk("concat")),
        join_policy: EdgePolicy::Fail,
    };
    settle_next(&broker, &store, NodeOutcome::Succeeded, children).await;
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    store
        .sync_workflow(&status, Timestamp::now())
        .await
        .unwrap();
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(record.node_count, 6);
    let names: Vec<&str> = record.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.len(), 6);
    assert_eq!(&names[..3], ["probe", "encode", "package"]);
    for (node, live) in record.nodes.iter().zip(&status.nodes) {
        assert_eq!(node.name, live.name);
        assert_eq!(
            node.state,
            NodeRecordState::from(live.state),
            "{}",
            node.name
        );
        assert_eq!(node.parents, live.parents, "{}", node.name);
        assert_eq!(node.task_id, live.task_id);
    }
    let probe = &record.nodes[0];
    assert_eq!(
        probe.output_summary.as_deref(),
        Some("7"),
        "kept by the sync"
    );

    // One chunk fails: the join, and through it encode, are cancelled;
    // package still runs (a `continue` edge) and the workflow fails.
    let first = settle_next(
        &broker,
        &store,
        NodeOutcome::Failed,
        DynamicChildren::default(),
    )
    .await;
    settle_next(
        &broker,
        &store,
        NodeOutcome::Succeeded,
        DynamicChildren::default(),
    )
    .await;
    let package = settle_next(
        &broker,
        &store,
        NodeOutcome::Succeeded,
        DynamicChildren::default(),
    )
    .await;
    assert_eq!(package.workflow_node().unwrap().1.as_str(), "package");
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert!(status.state.is_finished(), "{:?}", status.state);
    store
        .record_workflow_finished(wf.id, &status.state, Timestamp::now())
        .await
        .unwrap();
    store
        .sync_workflow(&status, Timestamp::now())
        .await
        .unwrap();
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowRecordStatus::Failed);
    assert_eq!(record.nodes_settled, 6);
    let failed_chunk = first.workflow_node().unwrap().1;
    let failed = record
        .nodes
        .iter()
        .find(|n| n.name == failed_chunk)
        .unwrap();
    assert_eq!(failed.state, NodeRecordState::Failed);
    assert_eq!(failed.error.as_deref(), Some("it broke"));
    let concat = record
        .nodes
        .iter()
        .find(|n| n.name.as_str() == "concat")
        .unwrap();
    assert_eq!(concat.state, NodeRecordState::Cancelled);

    // A retry gives the failed and cancelled nodes new task ids: their
    // records start afresh, the succeeded ones keep theirs.
    broker.retry_workflow(wf.id).await.unwrap();
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    store
        .sync_workflow(&status, Timestamp::now())
        .await
        .unwrap();
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowRecordStatus::Running);
    assert_eq!((record.runs, record.finished_at), (2, None));
    let retried = record
        .nodes
        .iter()
        .find(|n| n.name == failed_chunk)
        .unwrap();
    assert_eq!(retried.state, NodeRecordState::Queued);
    assert_eq!(
        (retried.error.as_deref(), retried.finished_at),
        (None, None)
    );
    assert_ne!(retried.task_id, first.id);
    assert_eq!(record.nodes[0].state, NodeRecordState::Succeeded);
    // A late write of the old run changes nothing.
    let mut stale =
        NodeTransition::for_envelope(&first, NodeRecordState::Failed, Timestamp::now()).unwrap();
    stale.attempts = 9;
    store.record_node_transitions(&[stale]).await.unwrap();
    let again = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(again, record);

    // Cancelling: every unsettled node is cancelled.
    broker.cancel_workflow(wf.id).await.unwrap();
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    store
        .sync_workflow(&status, Timestamp::now())
        .await
        .unwrap();
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowRecordStatus::Cancelled);
    assert!(record.finished_at.is_some());
    assert_eq!(record.nodes_settled, 6);
}

async fn lists_filter_by_status_newest_first(store: JobStore, _url: String) {
    let mut ids = Vec::new();
    for i in 0..5_u64 {
        let wf = chain();
        store
            .record_workflow_submitted(&wf, at(i * 1000))
            .await
            .unwrap();
        ids.push(wf.id);
    }
    store
        .record_workflow_finished(ids[1], &WorkflowState::Succeeded, at(9000))
        .await
        .unwrap();
    store
        .record_workflow_finished(ids[3], &WorkflowState::Cancelled, at(9000))
        .await
        .unwrap();

    let all = store
        .list_workflows(&WorkflowQuery::default())
        .await
        .unwrap();
    let listed: Vec<_> = all.iter().map(|w| w.id).collect();
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(listed, newest_first);
    assert!(all.iter().all(|w| w.nodes.is_empty() && w.node_count == 3));

    let query = WorkflowQuery {
        statuses: vec![WorkflowRecordStatus::Running],
        limit: 2,
    };
    let running: Vec<_> = store
        .list_workflows(&query)
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(running, [ids[4], ids[2]]);

    let query = WorkflowQuery {
        statuses: vec![
            WorkflowRecordStatus::Succeeded,
            WorkflowRecordStatus::Cancelled,
        ],
        limit: 10,
    };
    let done = store.list_workflows(&query).await.unwrap();
    let statuses: Vec<_> = done.iter().map(|w| (w.id, w.status)).collect();
    assert_eq!(
        statuses,
        [
            (ids[3], WorkflowRecordStatus::Cancelled),
            (ids[1], WorkflowRecordStatus::Succeeded)
        ]
    );
}

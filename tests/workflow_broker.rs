//! Workflows at the broker level, written once and run on every transport:
//! the in-memory broker (`on_memory::`) and Redis at `SPOOL_REDIS_URL`
//! (`on_redis::`; the local Redis Cluster in `ops/scripts/test.sh`'s
//! cluster pass, where the nodes' queues lie in other slots than the
//! workflow's keys), the latter twice: as configured by default (on a
//! single server a ready node is enqueued by the script that readies it)
//! and with `atomic_workflow_enqueue` off (`on_redis_outbox::`: every
//! ready node through the outbox, as on a cluster). Each case plays the
//! worker's part by hand: fetch, settle, dispatch, ack; a crash is a step
//! left out. Where the two ways differ, a case follows what the settlement
//! says (`Settled::Recorded::outboxed`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use spool_broker::workflow::{
    DynamicChildren, DynamicNode, Edge, EdgePolicy, NodeName, NodeOutcome, NodeSettlement,
    NodeSpec, NodeState, Settled, WorkflowSpec, WorkflowState,
};
use spool_broker::{Broker, Delivery, Envelope, Error, QueueName, TaskId, Timestamp};
use tokio::time::Instant;

macro_rules! on_every_broker {
    ($($case:ident),* $(,)?) => {
        /// The in-memory broker: a fresh one per test.
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&spool_broker::MemoryBroker::new()).await;
                }
            )*
        }

        /// Redis at `SPOOL_REDIS_URL`, under a key prefix of the test's own.
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let redis = spool_tests::TestRedis::new().await;
                    super::$case(&redis.broker).await;
                    redis.cleanup().await;
                }
            )*
        }

        /// The same, every ready node through the outbox.
        mod on_redis_outbox {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let redis = spool_tests::TestRedis::with_config(|config| {
                        config.atomic_workflow_enqueue = false;
                    })
                    .await;
                    super::$case(&redis.broker).await;
                    redis.cleanup().await;
                }
            )*
        }
    };
}

on_every_broker!(
    a_chain_runs_in_order_and_children_read_their_parents,
    unit_outputs_and_empty_outputs_read_back_as_settled,
    parents_read_alike_before_and_after_the_first_failure,
    a_group_then_chord_joins_once,
    a_diamond_joins_after_both_branches,
    dynamic_children_run_before_the_join_and_the_dependents,
    dynamic_children_that_clash_fail_the_node_and_add_nothing,
    a_repeated_settlement_changes_nothing,
    a_crash_after_settling_leaves_the_child_for_the_sweeper,
    a_crash_after_enqueueing_does_not_double_the_child,
    the_last_two_parents_settled_at_once_enqueue_the_join_once,
    a_ten_thousand_wide_fan_out_enqueues_its_join_once,
    a_batch_of_settlements_across_workflows_settles_each_as_alone,
    a_fail_edge_cancels_dependents_and_fails_the_workflow,
    a_continue_edge_runs_the_child_and_fails_the_workflow,
    an_ignore_edge_runs_the_child_and_the_workflow_succeeds,
    retry_reruns_only_what_did_not_succeed,
    cancel_revokes_queued_nodes_and_settles_nothing_after,
    a_workflow_past_its_deadline_is_failed_by_the_sweeper,
    bad_workflows_are_refused_with_nothing_enqueued,
);

const A: QueueName = QueueName::DEFAULT;
/// A second queue, in another Cluster slot than `A`.
const B: QueueName = QueueName::GPU;

const PATIENCE: Duration = Duration::from_secs(20);

fn name(s: &str) -> NodeName {
    s.parse().unwrap()
}

/// On a single server (not the cluster pass) a workflow's roots are
/// enqueued by the submit and a ready node by the settlement that readies
/// it, in the same script: nothing is left for a dispatch. On a cluster,
/// or with `atomic_workflow_enqueue` off, they go through the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_single_server_readiness_and_enqueue_are_one_step() {
    let single = !spool_tests::redis_is_cluster();
    for atomic in [true, false] {
        let redis = spool_tests::TestRedis::with_config(|config| {
            config.atomic_workflow_enqueue = atomic;
        })
        .await;
        let broker = &redis.broker;
        let wf = spec(vec![
            node("a", A, &[]),
            node("b", B, &["a"]),
            node("c", B, &["a"]),
        ]);
        broker.submit_workflow(&wf).await.unwrap();
        let a = take(broker, &A, 1).await;
        let settled = broker
            .settle_node(&settlement(&a[0], NodeOutcome::Succeeded, None))
            .await
            .unwrap();
        let one_step = atomic && single;
        assert_eq!(
            outboxed(&settled),
            !one_step,
            "atomic {atomic}: {settled:?}"
        );
        if one_step {
            // In their stream before any dispatch, and only there.
            assert_eq!(nodes_of(&take(broker, &B, 2).await), ["b", "c"]);
            assert_eq!(broker.dispatch_outbox(wf.id).await.unwrap(), 0);
        } else {
            assert!(take(broker, &B, 0).await.is_empty());
            assert_eq!(broker.dispatch_outbox(wf.id).await.unwrap(), 2);
            assert_eq!(nodes_of(&take(broker, &B, 2).await), ["b", "c"]);
        }
        redis.cleanup().await;
    }
}

/// Whether a settlement left a ready node in the outbox (else it enqueued
/// what it readied itself).
fn outboxed(settled: &Settled) -> bool {
    matches!(settled, Settled::Recorded { outboxed: true, .. })
}

fn node(n: &str, queue: QueueName, parents: &[&str]) -> NodeSpec {
    node_with(n, queue, parents, EdgePolicy::Fail)
}

fn node_with(n: &str, queue: QueueName, parents: &[&str], policy: EdgePolicy) -> NodeSpec {
    NodeSpec {
        name: name(n),
        envelope: Envelope::new(format!("test.{n}"), queue, vec![0x80]),
        parents: parents
            .iter()
            .map(|p| Edge {
                parent: name(p),
                policy,
            })
            .collect(),
    }
}

fn spec(nodes: Vec<NodeSpec>) -> WorkflowSpec {
    WorkflowSpec {
        nodes,
        ..WorkflowSpec::new()
    }
}

/// Fetches exactly `n` deliveries from `queue` (waiting for them), and
/// checks that nothing more is there.
async fn take<B: Broker>(broker: &B, queue: &QueueName, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "waited for {n} tasks on {queue}, got {}",
            got.len()
        );
        let batch = broker
            .fetch(queue, "w", n - got.len(), Duration::from_millis(200))
            .await
            .unwrap();
        assert!(batch.malformed.is_empty());
        got.extend(batch.deliveries);
    }
    let more = broker.fetch(queue, "w", 100, Duration::ZERO).await.unwrap();
    assert!(
        more.is_empty(),
        "{} more tasks than expected on {queue}: {:?}",
        more.len(),
        more.deliveries
            .iter()
            .map(|d| &d.envelope.name)
            .collect::<Vec<_>>()
    );
    got
}

/// The names of the deliveries' nodes, sorted.
fn nodes_of(deliveries: &[Delivery]) -> Vec<String> {
    let mut names: Vec<String> = deliveries
        .iter()
        .map(|d| d.envelope.workflow_node().unwrap().1.to_string())
        .collect();
    names.sort();
    names
}

fn settlement(delivery: &Delivery, outcome: NodeOutcome, output: Option<&[u8]>) -> NodeSettlement {
    let (workflow, node) = delivery.envelope.workflow_node().unwrap();
    NodeSettlement {
        workflow,
        node,
        task_id: delivery.envelope.id,
        outcome,
        attempts: delivery.envelope.attempt,
        error: (outcome != NodeOutcome::Succeeded).then(|| "it broke".to_owned()),
        output: output.map(<[u8]>::to_vec),
        children: DynamicChildren::default(),
    }
}

/// The worker's part for one final outcome: settle, dispatch, ack.
async fn finish<B: Broker>(broker: &B, settled: NodeSettlement, delivery: &Delivery) -> Settled {
    let result = broker.settle_node(&settled).await.unwrap();
    broker.dispatch_outbox(settled.workflow).await.unwrap();
    broker
        .ack(std::slice::from_ref(&delivery.tag))
        .await
        .unwrap();
    result
}

async fn succeed<B: Broker>(broker: &B, delivery: &Delivery, output: &[u8]) -> Settled {
    finish(
        broker,
        settlement(delivery, NodeOutcome::Succeeded, Some(output)),
        delivery,
    )
    .await
}

async fn state<B: Broker>(broker: &B, wf: &WorkflowSpec) -> WorkflowState {
    broker.workflow_status(wf.id).await.unwrap().unwrap().state
}

async fn node_state<B: Broker>(broker: &B, wf: &WorkflowSpec, node: &str) -> NodeState {
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    status.node(node).unwrap().state
}

async fn a_chain_runs_in_order_and_children_read_their_parents<B: Broker>(broker: &B) {
    let wf = spec(vec![
        node("probe", A, &[]),
        node("encode", B, &["probe"]),
        node("package", A, &["encode"]),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    assert_eq!(state(broker, &wf).await, WorkflowState::Running);

    let probe = take(broker, &A, 1).await;
    assert_eq!(nodes_of(&probe), ["probe"]);
    // A root says so: its first delivery may start without a context read.
    assert!(probe[0].envelope.is_workflow_root());
    assert!(
        take(broker, &B, 0).await.is_empty(),
        "encode waits for probe"
    );
    let settled = succeed(broker, &probe[0], b"probed").await;
    // In the outbox, or enqueued already (a single Redis server).
    assert!(
        matches!(&settled, Settled::Recorded { ready, finished: None, .. } if *ready == [name("encode")]),
        "{settled:?}"
    );

    let encode = take(broker, &B, 1).await;
    assert!(!encode[0].envelope.is_workflow_root());
    let context = broker
        .node_context(wf.id, &name("encode"))
        .await
        .unwrap()
        .unwrap();
    assert!(context.should_run(encode[0].envelope.id));
    let parent = context.parent("probe").unwrap();
    assert_eq!(parent.state, NodeState::Succeeded);
    assert_eq!(parent.output.as_deref(), Some(&b"probed"[..]));
    succeed(broker, &encode[0], b"encoded").await;

    let package = take(broker, &A, 1).await;
    let settled = succeed(broker, &package[0], b"packaged").await;
    assert_eq!(
        settled,
        Settled::Recorded {
            ready: vec![],
            outboxed: false,
            finished: Some(WorkflowState::Succeeded)
        }
    );
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);
    assert!(status.finished_at.is_some());
    assert!(status.nodes.iter().all(|n| n.has_output && n.attempts == 1));
    assert_eq!(status.leaves().len(), 1);
    assert_eq!(status.node("encode").unwrap().queue, B);
}

/// A unit output (the encoded `()`, which Redis does not store), a
/// success settled without an output (read back as the unit output) and
/// an empty output all read back exactly, by the children and in the
/// status.
async fn unit_outputs_and_empty_outputs_read_back_as_settled<B: Broker>(broker: &B) {
    let unit = spool_broker::encode_payload(&()).unwrap();
    let wf = spec(vec![
        node("unit", A, &[]),
        node("none", A, &[]),
        node("empty", A, &[]),
        node("failed", A, &[]),
        node_with(
            "join",
            A,
            &["unit", "none", "empty", "failed"],
            EdgePolicy::Continue,
        ),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    let roots = take(broker, &A, 4).await;
    for delivery in &roots {
        let node = delivery.envelope.workflow_node().unwrap().1;
        let settled = match node.as_str() {
            "unit" => settlement(delivery, NodeOutcome::Succeeded, Some(&unit)),
            "none" => settlement(delivery, NodeOutcome::Succeeded, None),
            "empty" => settlement(delivery, NodeOutcome::Succeeded, Some(b"")),
            _ => settlement(delivery, NodeOutcome::Failed, None),
        };
        finish(broker, settled, delivery).await;
    }
    take(broker, &A, 1).await;
    let context = broker
        .node_context(wf.id, &name("join"))
        .await
        .unwrap()
        .unwrap();
    let output = |parent: &str| context.parent(parent).unwrap().output.clone();
    assert_eq!(output("unit"), Some(unit.clone()));
    assert_eq!(output("none"), Some(unit.clone()));
    assert_eq!(output("empty"), Some(Vec::new()));
    assert_eq!(output("failed"), None);
    assert_eq!(
        context.parent("failed").unwrap().error.as_deref(),
        Some("it broke")
    );
    let own = broker
        .node_context(wf.id, &name("unit"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.output, Some(unit));
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    for (node, has_output) in [
        ("unit", true),
        ("none", true),
        ("empty", true),
        ("failed", false),
        ("join", false),
    ] {
        assert_eq!(status.node(node).unwrap().has_output, has_output, "{node}");
    }
}

/// A node's parents read the same whether or not anything in the
/// workflow has failed or stored an output yet (Redis reads less before
/// either happens, see wf_context.lua): before, every parent succeeded
/// with the unit output; after a failure through an `ignore` edge, the
/// failed parent reads as failed, with its error, beside the others.
async fn parents_read_alike_before_and_after_the_first_failure<B: Broker>(broker: &B) {
    let unit = spool_broker::encode_payload(&()).unwrap();
    let wf = spec(vec![
        node("p0", A, &[]),
        node("p1", A, &[]),
        node("join", A, &["p0", "p1"]),
        node("late", A, &[]),
        node_with("after", A, &["join", "late"], EdgePolicy::Ignore),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    let roots = take(broker, &A, 3).await;
    let (late, parents): (Vec<_>, Vec<_>) = roots
        .iter()
        .partition(|d| d.envelope.workflow_node().unwrap().1.as_str() == "late");
    for delivery in parents {
        finish(
            broker,
            settlement(delivery, NodeOutcome::Succeeded, None),
            delivery,
        )
        .await;
    }
    let join = take(broker, &A, 1).await;
    let context = broker
        .node_context(wf.id, &name("join"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.parents.len(), 2);
    for parent in &context.parents {
        assert_eq!(parent.state, NodeState::Succeeded, "{}", parent.name);
        assert_eq!(parent.output.as_deref(), Some(&unit[..]), "{}", parent.name);
        assert_eq!(parent.error, None);
    }
    finish(
        broker,
        settlement(&join[0], NodeOutcome::Succeeded, None),
        &join[0],
    )
    .await;
    finish(
        broker,
        settlement(late[0], NodeOutcome::Failed, None),
        late[0],
    )
    .await;
    take(broker, &A, 1).await;
    let context = broker
        .node_context(wf.id, &name("after"))
        .await
        .unwrap()
        .unwrap();
    let join = context.parent("join").unwrap();
    assert_eq!(join.state, NodeState::Succeeded);
    assert_eq!(join.output.as_deref(), Some(&unit[..]));
    let late = context.parent("late").unwrap();
    assert_eq!(late.state, NodeState::Failed);
    assert_eq!(late.output, None);
    assert_eq!(late.error.as_deref(), Some("it broke"));
}

async fn a_group_then_chord_joins_once<B: Broker>(broker: &B) {
    let wf = spec(vec![
        node("c0", A, &[]),
        node("c1", B, &[]),
        node("c2", A, &[]),
        node("join", B, &["c0", "c1", "c2"]),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    let mut group = take(broker, &A, 2).await;
    group.extend(take(broker, &B, 1).await);
    assert_eq!(nodes_of(&group), ["c0", "c1", "c2"]);
    for (i, delivery) in group.iter().enumerate() {
        succeed(broker, delivery, &[i as u8]).await;
        if i < 2 {
            assert_eq!(node_state(broker, &wf, "join").await, NodeState::Waiting);
        }
    }
    let join = take(broker, &B, 1).await;
    let context = broker
        .node_context(wf.id, &name("join"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.parents.len(), 3);
    assert!(context.parents.iter().all(|p| p.output.is_some()));
    succeed(broker, &join[0], b"").await;
    assert_eq!(state(broker, &wf).await, WorkflowState::Succeeded);
}

async fn a_diamond_joins_after_both_branches<B: Broker>(broker: &B) {
    let wf = spec(vec![
        node("top", A, &[]),
        node("left", A, &["top"]),
        node("right", B, &["top"]),
        node("bottom", A, &["left", "right"]),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    succeed(broker, &take(broker, &A, 1).await[0], b"").await;
    let left = take(broker, &A, 1).await;
    let right = take(broker, &B, 1).await;
    succeed(broker, &left[0], b"").await;
    assert!(take(broker, &A, 0).await.is_empty());
    succeed(broker, &right[0], b"").await;
    let bottom = take(broker, &A, 1).await;
    assert_eq!(nodes_of(&bottom), ["bottom"]);
    succeed(broker, &bottom[0], b"").await;
    assert_eq!(state(broker, &wf).await, WorkflowState::Succeeded);
}

fn dynamic(nodes: &[&str], join: Option<&str>) -> DynamicChildren {
    let make = |n: &str| DynamicNode {
        name: name(n),
        envelope: Envelope::new(format!("test.{n}"), B, vec![0x80]),
    };
    DynamicChildren {
        nodes: nodes.iter().map(|n| make(n)).collect(),
        join: join.map(make),
        join_policy: EdgePolicy::Fail,
    }
}

async fn dynamic_children_run_before_the_join_and_the_dependents<B: Broker>(broker: &B) {
    let wf = spec(vec![node("split", A, &[]), node("package", A, &["split"])]);
    broker.submit_workflow(&wf).await.unwrap();
    let split = take(broker, &A, 1).await;
    let mut settled = settlement(&split[0], NodeOutcome::Succeeded, Some(b"3 chunks"));
    settled.children = dynamic(&["chunk-0", "chunk-1", "chunk-2"], Some("concat"));
    let result = finish(broker, settled.clone(), &split[0]).await;
    let Settled::Recorded { mut ready, .. } = result else {
        panic!("{result:?}")
    };
    ready.sort();
    assert_eq!(ready, [name("chunk-0"), name("chunk-1"), name("chunk-2")]);

    // A redelivered split offering another set of children adds nothing.
    let mut again = settled.clone();
    again.children = dynamic(&["chunk-x"], Some("concat-x"));
    assert_eq!(broker.settle_node(&again).await.unwrap(), Settled::Already);

    let chunks = take(broker, &B, 3).await;
    assert!(
        take(broker, &A, 0).await.is_empty(),
        "package waits for concat"
    );
    for chunk in &chunks {
        succeed(broker, chunk, b"chunk").await;
    }
    let concat = take(broker, &B, 1).await;
    assert_eq!(nodes_of(&concat), ["concat"]);
    let context = broker
        .node_context(wf.id, &name("concat"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.parents.len(), 3);
    assert!(
        take(broker, &A, 0).await.is_empty(),
        "package waits for concat"
    );
    succeed(broker, &concat[0], b"whole").await;
    let package = take(broker, &A, 1).await;
    let context = broker
        .node_context(wf.id, &name("package"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.parents[0].name, name("concat"));
    succeed(broker, &package[0], b"").await;

    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);
    assert_eq!(status.nodes.len(), 6);
    assert!(status.node("chunk-x").is_none());
}

async fn dynamic_children_that_clash_fail_the_node_and_add_nothing<B: Broker>(broker: &B) {
    let wf = spec(vec![node("split", A, &[]), node("package", A, &["split"])]);
    broker.submit_workflow(&wf).await.unwrap();
    let split = take(broker, &A, 1).await;
    let mut settled = settlement(&split[0], NodeOutcome::Succeeded, None);
    settled.children = dynamic(&["package"], None);
    finish(broker, settled, &split[0]).await;
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert_eq!(status.node("split").unwrap().state, NodeState::Failed);
    assert!(
        status
            .node("split")
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("name of a node"),
        "{status:?}"
    );
    assert_eq!(status.node("package").unwrap().state, NodeState::Cancelled);
    assert!(matches!(status.state, WorkflowState::Failed { .. }));
    assert!(take(broker, &B, 0).await.is_empty());

    // Children repeating a name among themselves, or too large to enqueue,
    // fail the node the same way: it settles, and adds nothing.
    let mut repeated = dynamic(&["x", "x"], None);
    let mut oversized = dynamic(&["big"], Some("after-big"));
    oversized.nodes[0].envelope.payload = vec![0; spool_broker::DEFAULT_MAX_ENVELOPE_BYTES + 1];
    for (what, children) in [("name", &mut repeated), ("bytes", &mut oversized)] {
        let wf = spec(vec![node("split", A, &[])]);
        broker.submit_workflow(&wf).await.unwrap();
        let split = take(broker, &A, 1).await;
        let mut settled = settlement(&split[0], NodeOutcome::Succeeded, None);
        settled.children = children.clone();
        let result = finish(broker, settled, &split[0]).await;
        assert!(
            matches!(&result, Settled::Recorded { ready, finished: Some(WorkflowState::Failed { .. }), .. } if ready.is_empty()),
            "{what}: {result:?}"
        );
        let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
        assert_eq!(status.nodes.len(), 1, "{what}");
        let error = status.node("split").unwrap().error.clone().unwrap();
        assert!(
            error.contains("refused") && error.contains(what),
            "{what}: {error}"
        );
    }
    assert!(take(broker, &B, 0).await.is_empty());

    // An outcome other than a success adds no children, whatever it carries.
    let wf = spec(vec![node("split", A, &[])]);
    broker.submit_workflow(&wf).await.unwrap();
    let split = take(broker, &A, 1).await;
    let mut settled = settlement(&split[0], NodeOutcome::Failed, None);
    settled.children = dynamic(&["y"], Some("after-y"));
    finish(broker, settled, &split[0]).await;
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert_eq!(status.nodes.len(), 1, "{status:?}");
    assert_eq!(status.node("split").unwrap().state, NodeState::Failed);
    assert!(take(broker, &B, 0).await.is_empty());
}

async fn a_repeated_settlement_changes_nothing<B: Broker>(broker: &B) {
    let wf = spec(vec![node("a", A, &[]), node("b", A, &["a"])]);
    broker.submit_workflow(&wf).await.unwrap();
    let a = take(broker, &A, 1).await;
    let settled = settlement(&a[0], NodeOutcome::Succeeded, Some(b"1"));
    let first = broker.settle_node(&settled).await.unwrap();
    // A redelivery settles again (a failure this time): nothing changes.
    let mut twice = settled.clone();
    twice.outcome = NodeOutcome::Failed;
    assert_eq!(broker.settle_node(&twice).await.unwrap(), Settled::Already);
    assert_eq!(
        broker.dispatch_outbox(wf.id).await.unwrap(),
        usize::from(outboxed(&first))
    );
    assert_eq!(broker.dispatch_outbox(wf.id).await.unwrap(), 0);
    broker.ack(&[a[0].tag.clone()]).await.unwrap();
    assert_eq!(nodes_of(&take(broker, &A, 1).await), ["b"]);
    assert_eq!(node_state(broker, &wf, "a").await, NodeState::Succeeded);
    // A task id that is not the node's settles nothing.
    let mut stranger = settled;
    stranger.task_id = TaskId::new();
    assert_eq!(
        broker.settle_node(&stranger).await.unwrap(),
        Settled::Unknown
    );
}

async fn a_crash_after_settling_leaves_the_child_for_the_sweeper<B: Broker>(broker: &B) {
    let wf = spec(vec![node("a", A, &[]), node("b", B, &["a"])]);
    broker.submit_workflow(&wf).await.unwrap();
    let a = take(broker, &A, 1).await;
    // Settled, then the worker dies: no dispatch, no ack.
    let settled = broker
        .settle_node(&settlement(&a[0], NodeOutcome::Succeeded, None))
        .await
        .unwrap();
    assert_eq!(node_state(broker, &wf, "b").await, NodeState::Queued);
    let b = if outboxed(&settled) {
        assert!(take(broker, &B, 0).await.is_empty());
        // A sweeper within the grace period leaves it to the settler...
        let report = broker
            .sweep_workflows(Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(report.redispatched, 0);
        // ... and past it enqueues it, once however many sweep.
        let sweeps =
            futures::future::join_all((0..4).map(|_| broker.sweep_workflows(Duration::ZERO))).await;
        let redispatched: usize = sweeps.into_iter().map(|r| r.unwrap().redispatched).sum();
        assert_eq!(redispatched, 1);
        take(broker, &B, 1).await
    } else {
        // Enqueued in the settlement's own step: nothing for a sweeper.
        let b = take(broker, &B, 1).await;
        let report = broker.sweep_workflows(Duration::ZERO).await.unwrap();
        assert_eq!(report.redispatched, 0);
        b
    };
    // The redelivered parent finds its node settled: no second run.
    let context = broker
        .node_context(wf.id, &name("a"))
        .await
        .unwrap()
        .unwrap();
    assert!(!context.should_run(a[0].envelope.id));
    succeed(broker, &b[0], b"").await;
    assert_eq!(state(broker, &wf).await, WorkflowState::Succeeded);
    // The finished workflow leaves the index.
    let report = broker.sweep_workflows(Duration::ZERO).await.unwrap();
    assert_eq!(report.dropped, 1);
}

async fn a_crash_after_enqueueing_does_not_double_the_child<B: Broker>(broker: &B) {
    let wf = spec(vec![node("a", A, &[]), node("b", B, &["a"])]);
    broker.submit_workflow(&wf).await.unwrap();
    let a = take(broker, &A, 1).await;
    let settled = broker
        .settle_node(&settlement(&a[0], NodeOutcome::Succeeded, None))
        .await
        .unwrap();
    // The first dispatch enqueues the child (unless the settlement did);
    // suppose it died before it removed the outbox entry: every later
    // dispatch finds the mark.
    assert_eq!(
        broker.dispatch_outbox(wf.id).await.unwrap(),
        usize::from(outboxed(&settled))
    );
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert_eq!(status.node("b").unwrap().state, NodeState::Queued);
    assert_eq!(broker.dispatch_outbox(wf.id).await.unwrap(), 0);
    let b = take(broker, &B, 1).await;
    assert_eq!(b[0].envelope.id, status.node("b").unwrap().task_id);
}

async fn the_last_two_parents_settled_at_once_enqueue_the_join_once<B: Broker>(broker: &B) {
    for _ in 0..10 {
        let wf = spec(vec![
            node("p0", A, &[]),
            node("p1", A, &[]),
            node("join", B, &["p0", "p1"]),
        ]);
        broker.submit_workflow(&wf).await.unwrap();
        let parents = take(broker, &A, 2).await;
        let (r0, r1) = tokio::join!(
            succeed(broker, &parents[0], b"0"),
            succeed(broker, &parents[1], b"1")
        );
        let readies: usize = [r0, r1]
            .iter()
            .map(|r| match r {
                Settled::Recorded { ready, .. } => ready.len(),
                other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(readies, 1);
        let join = take(broker, &B, 1).await;
        succeed(broker, &join[0], b"").await;
        assert_eq!(state(broker, &wf).await, WorkflowState::Succeeded);
    }
}

async fn a_ten_thousand_wide_fan_out_enqueues_its_join_once<B: Broker>(broker: &B) {
    const WIDTH: usize = 10_000;
    let mut nodes: Vec<NodeSpec> = (0..WIDTH).map(|i| node(&format!("n{i}"), A, &[])).collect();
    let names: Vec<String> = (0..WIDTH).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    nodes.push(node("join", B, &refs));
    let wf = WorkflowSpec {
        max_nodes: WIDTH + 1,
        ..spec(nodes)
    };
    broker.submit_workflow(&wf).await.unwrap();
    let mut deliveries = Vec::with_capacity(WIDTH);
    while deliveries.len() < WIDTH {
        let batch = broker
            .fetch(&A, "w", 1000, Duration::from_millis(200))
            .await
            .unwrap();
        deliveries.extend(batch.deliveries);
    }
    let (ready, in_outbox) = futures::stream::iter(deliveries.iter())
        .map(|d| async move {
            match broker
                .settle_node(&settlement(d, NodeOutcome::Succeeded, None))
                .await
                .unwrap()
            {
                Settled::Recorded {
                    ready, outboxed, ..
                } => (ready.len(), usize::from(outboxed)),
                other => panic!("{other:?}"),
            }
        })
        .buffer_unordered(32)
        .fold((0, 0), |(r, o), (n, m)| async move { (r + n, o + m) })
        .await;
    assert_eq!(ready, 1);
    let dispatched = futures::future::join_all((0..4).map(|_| broker.dispatch_outbox(wf.id))).await;
    assert_eq!(
        dispatched.into_iter().map(Result::unwrap).sum::<usize>(),
        in_outbox
    );
    let tags: Vec<_> = deliveries.iter().map(|d| d.tag.clone()).collect();
    broker.ack(&tags).await.unwrap();
    assert_eq!(nodes_of(&take(broker, &B, 1).await), ["join"]);
    assert!(take(broker, &A, 0).await.is_empty());
}

/// What a worker's settler does with a group of outcomes: one
/// `settle_nodes`, one `dispatch_outboxes`, one `node_contexts`, across
/// several workflows and more settlements of one workflow than one script
/// call takes; each settlement must come out as if it were alone.
async fn a_batch_of_settlements_across_workflows_settles_each_as_alone<B: Broker>(broker: &B) {
    const WIDTH: usize = 600;
    let mut fan = (0..WIDTH)
        .map(|i| node(&format!("p{i}"), A, &[]))
        .collect::<Vec<_>>();
    let names: Vec<String> = (0..WIDTH).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    fan.push(node("join", B, &refs));
    let fan = spec(fan);
    let chain = spec(vec![node("a", A, &[]), node("b", B, &["a"])]);
    let leaves = spec(vec![node("x", A, &[]), node("y", A, &[])]);
    for wf in [&fan, &chain, &leaves] {
        broker.submit_workflow(wf).await.unwrap();
    }
    let roots = take(broker, &A, WIDTH + 3).await;
    let in_wf = |wf: &WorkflowSpec| {
        let id = wf.id;
        roots
            .iter()
            .filter(move |d| d.envelope.workflow_node().unwrap().0 == id)
            .collect::<Vec<_>>()
    };
    let (fan_roots, chain_roots, leaf_roots) = (in_wf(&fan), in_wf(&chain), in_wf(&leaves));
    // The three workflows' settlements interleaved, a repeated one and a
    // stale one (a task id the node does not have) among them.
    let mut settlements = Vec::new();
    for (i, d) in fan_roots.iter().enumerate() {
        // Each parent's output is its own name.
        let output = d.envelope.workflow_node().unwrap().1.to_string();
        settlements.push(settlement(
            d,
            NodeOutcome::Succeeded,
            Some(output.as_bytes()),
        ));
        if i == 1 {
            settlements.push(settlement(
                chain_roots[0],
                NodeOutcome::Succeeded,
                Some(b"A"),
            ));
            settlements.push(settlement(leaf_roots[0], NodeOutcome::Succeeded, None));
        }
    }
    settlements.push(settlement(leaf_roots[1], NodeOutcome::Succeeded, None));
    settlements.push(settlement(
        fan_roots[0],
        NodeOutcome::Succeeded,
        Some(b"again"),
    ));
    let mut stale = settlement(fan_roots[1], NodeOutcome::Succeeded, None);
    stale.task_id = TaskId::new();
    settlements.push(stale);
    let refs: Vec<&NodeSettlement> = settlements.iter().collect();
    let settled: Vec<Settled> = broker
        .settle_nodes(&refs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(settled.len(), settlements.len());
    let mut readied = Vec::new();
    let mut finished = Vec::new();
    for (s, result) in settlements.iter().zip(&settled).take(settlements.len() - 2) {
        match result {
            Settled::Recorded {
                ready, finished: f, ..
            } => {
                readied.extend(ready.iter().map(|r| (s.workflow, r.to_string())));
                finished.extend(
                    f.iter()
                        .map(|f| (s.workflow, s.node.to_string(), f.clone())),
                );
            }
            other => panic!("{}: {other:?}", s.node),
        }
    }
    readied.sort();
    let mut expected = vec![(fan.id, "join".to_owned()), (chain.id, "b".to_owned())];
    expected.sort();
    assert_eq!(readied, expected, "each child readied once");
    // Only the settlement that ended a workflow says so.
    assert_eq!(
        finished,
        [(leaves.id, "y".to_owned(), WorkflowState::Succeeded)]
    );
    assert_eq!(settled[settled.len() - 2], Settled::Already);
    assert_eq!(settled[settled.len() - 1], Settled::Unknown);

    // One dispatch for every workflow touched (one of them twice): it
    // enqueues what the settlements left in the outboxes.
    let in_outbox = settled.iter().filter(|s| outboxed(s)).count();
    let enqueued = broker
        .dispatch_outboxes(&[fan.id, chain.id, leaves.id, fan.id])
        .await
        .unwrap();
    assert_eq!(enqueued, in_outbox);
    assert_eq!(
        broker.dispatch_outboxes(&[fan.id, chain.id]).await.unwrap(),
        0
    );
    let tags: Vec<_> = roots.iter().map(|d| d.tag.clone()).collect();
    broker.ack(&tags).await.unwrap();
    assert_eq!(nodes_of(&take(broker, &B, 2).await), ["b", "join"]);

    // Contexts read together, unknown nodes among them.
    let contexts = broker
        .node_contexts(&[
            (fan.id, name("join")),
            (chain.id, name("b")),
            (fan.id, name("nope")),
            (WorkflowSpec::new().id, name("b")),
        ])
        .await;
    let contexts: Vec<_> = contexts.into_iter().map(Result::unwrap).collect();
    let join = contexts[0].as_ref().unwrap();
    assert_eq!(join.state, NodeState::Queued);
    assert_eq!(join.parents.len(), WIDTH);
    for (i, parent) in join.parents.iter().enumerate() {
        assert_eq!(parent.name.as_str(), format!("p{i}"));
        assert_eq!(parent.state, NodeState::Succeeded);
        assert_eq!(
            parent.output.as_deref(),
            Some(parent.name.as_str().as_bytes())
        );
    }
    let b = contexts[1].as_ref().unwrap();
    assert_eq!(b.parents.len(), 1);
    assert_eq!(b.parents[0].output.as_deref(), Some(&b"A"[..]));
    assert!(contexts[2].is_none());
    assert!(contexts[3].is_none());
    assert_eq!(state(broker, &leaves).await, WorkflowState::Succeeded);
    assert_eq!(state(broker, &fan).await, WorkflowState::Running);
}

async fn a_fail_edge_cancels_dependents_and_fails_the_workflow<B: Broker>(broker: &B) {
    let wf = spec(vec![
        node("a", A, &[]),
        node("other", A, &[]),
        node("b", A, &["a"]),
        node("c", A, &["b"]),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    let roots = take(broker, &A, 2).await;
    let a = roots.iter().find(|d| d.envelope.name == "test.a").unwrap();
    let other = roots
        .iter()
        .find(|d| d.envelope.name == "test.other")
        .unwrap();
    finish(broker, settlement(a, NodeOutcome::DeadLettered, None), a).await;
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert_eq!(status.node("b").unwrap().state, NodeState::Cancelled);
    assert_eq!(status.node("c").unwrap().state, NodeState::Cancelled);
    // Still running: `other` has not settled.
    assert_eq!(status.state, WorkflowState::Running);
    let settled = succeed(broker, other, b"").await;
    let failed = WorkflowState::Failed {
        node: name("a"),
        reason: "it broke".into(),
    };
    assert_eq!(
        settled,
        Settled::Recorded {
            ready: vec![],
            outboxed: false,
            finished: Some(failed.clone())
        }
    );
    assert_eq!(state(broker, &wf).await, failed);
    assert!(take(broker, &A, 0).await.is_empty());
}

async fn a_continue_edge_runs_the_child_and_fails_the_workflow<B: Broker>(broker: &B) {
    let wf = spec(vec![
        node("a", A, &[]),
        node_with("b", A, &["a"], EdgePolicy::Continue),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    let a = take(broker, &A, 1).await;
    finish(broker, settlement(&a[0], NodeOutcome::Failed, None), &a[0]).await;
    let b = take(broker, &A, 1).await;
    let context = broker
        .node_context(wf.id, &name("b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.parents[0].state, NodeState::Failed);
    assert_eq!(context.parents[0].error.as_deref(), Some("it broke"));
    succeed(broker, &b[0], b"").await;
    assert!(
        matches!(state(broker, &wf).await, WorkflowState::Failed { node, .. } if node == name("a"))
    );
}

async fn an_ignore_edge_runs_the_child_and_the_workflow_succeeds<B: Broker>(broker: &B) {
    let wf = spec(vec![
        node("a", A, &[]),
        node_with("b", A, &["a"], EdgePolicy::Ignore),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    let a = take(broker, &A, 1).await;
    finish(broker, settlement(&a[0], NodeOutcome::Expired, None), &a[0]).await;
    let b = take(broker, &A, 1).await;
    succeed(broker, &b[0], b"").await;
    assert_eq!(state(broker, &wf).await, WorkflowState::Succeeded);
}

async fn retry_reruns_only_what_did_not_succeed<B: Broker>(broker: &B) {
    let wf = spec(vec![
        node("a", A, &[]),
        node("b", A, &["a"]),
        node("c", A, &["b"]),
    ]);
    broker.submit_workflow(&wf).await.unwrap();
    succeed(broker, &take(broker, &A, 1).await[0], b"a-out").await;
    let b = take(broker, &A, 1).await;
    finish(broker, settlement(&b[0], NodeOutcome::Failed, None), &b[0]).await;
    assert!(matches!(
        state(broker, &wf).await,
        WorkflowState::Failed { .. }
    ));
    let before = broker.workflow_status(wf.id).await.unwrap().unwrap();

    assert_eq!(broker.retry_workflow(wf.id).await.unwrap(), 2);
    let after = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert_eq!(after.state, WorkflowState::Running);
    assert_eq!(after.node("a").unwrap().state, NodeState::Succeeded);
    assert_eq!(
        after.node("a").unwrap().task_id,
        before.node("a").unwrap().task_id
    );
    assert_ne!(
        after.node("b").unwrap().task_id,
        before.node("b").unwrap().task_id
    );
    // A running workflow cannot be retried.
    assert!(matches!(
        broker.retry_workflow(wf.id).await,
        Err(Error::WorkflowConflict { .. })
    ));

    let b2 = take(broker, &A, 1).await;
    assert_eq!(b2[0].envelope.id, after.node("b").unwrap().task_id);
    // The old run's late settlement touches nothing.
    assert_eq!(
        broker
            .settle_node(&settlement(&b[0], NodeOutcome::Succeeded, None))
            .await
            .unwrap(),
        Settled::Unknown
    );
    let context = broker
        .node_context(wf.id, &name("b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.parents[0].output.as_deref(), Some(&b"a-out"[..]));
    succeed(broker, &b2[0], b"").await;
    succeed(broker, &take(broker, &A, 1).await[0], b"").await;
    assert_eq!(state(broker, &wf).await, WorkflowState::Succeeded);
}

async fn cancel_revokes_queued_nodes_and_settles_nothing_after<B: Broker>(broker: &B) {
    let wf = spec(vec![node("a", A, &[]), node("b", A, &["a"])]);
    broker.submit_workflow(&wf).await.unwrap();
    let a = take(broker, &A, 1).await;
    assert!(broker.cancel_workflow(wf.id).await.unwrap());
    assert!(!broker.cancel_workflow(wf.id).await.unwrap(), "once");
    assert!(broker.revoked().await.unwrap().contains(&a[0].envelope.id));
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Cancelled);
    assert_eq!(status.count(NodeState::Cancelled), 2);
    // The revoked run reports in: nothing changes, nothing is enqueued.
    let settled = finish(broker, settlement(&a[0], NodeOutcome::Revoked, None), &a[0]).await;
    assert_eq!(settled, Settled::Already);
    assert!(take(broker, &A, 0).await.is_empty());
    // Retry after a cancel reruns everything with new ids.
    assert_eq!(broker.retry_workflow(wf.id).await.unwrap(), 2);
    let a2 = take(broker, &A, 1).await;
    assert_ne!(a2[0].envelope.id, a[0].envelope.id);
}

async fn a_workflow_past_its_deadline_is_failed_by_the_sweeper<B: Broker>(broker: &B) {
    let wf = WorkflowSpec {
        deadline: Some(Timestamp::now().saturating_add(Duration::from_millis(300))),
        ..spec(vec![node("a", A, &[]), node("b", A, &["a"])])
    };
    broker.submit_workflow(&wf).await.unwrap();
    let a = take(broker, &A, 1).await;
    assert_eq!(
        broker
            .sweep_workflows(Duration::ZERO)
            .await
            .unwrap()
            .expired,
        0
    );
    spool_tests::wait_until("the deadline", PATIENCE, || async {
        Timestamp::now() > wf.deadline.unwrap()
    })
    .await;
    let report = broker.sweep_workflows(Duration::ZERO).await.unwrap();
    assert_eq!(report.expired, 1);
    let status = broker.workflow_status(wf.id).await.unwrap().unwrap();
    assert!(
        matches!(&status.state, WorkflowState::Failed { node, reason } if *node == name("a") && reason.contains("deadline")),
        "{status:?}"
    );
    assert_eq!(status.count(NodeState::Expired), 2);
    assert!(broker.revoked().await.unwrap().contains(&a[0].envelope.id));
    assert_eq!(
        broker
            .sweep_workflows(Duration::ZERO)
            .await
            .unwrap()
            .expired,
        0
    );
}

async fn bad_workflows_are_refused_with_nothing_enqueued<B: Broker>(broker: &B) {
    let cycle = spec(vec![
        node("a", A, &["c"]),
        node("b", A, &["a"]),
        node("c", A, &["b"]),
        node("root", A, &[]),
    ]);
    let unknown = spec(vec![node("a", A, &["ghost"])]);
    let duplicate = spec(vec![node("a", A, &[]), node("a", B, &[])]);
    let empty = spec(vec![]);
    let too_many = WorkflowSpec {
        max_nodes: 3,
        ..spec((0..4).map(|i| node(&format!("n{i}"), A, &[])).collect())
    };
    let mut oversized = spec(vec![node("ok", A, &[]), node("big", A, &["ok"])]);
    oversized.nodes[1].envelope.payload = vec![0; spool_broker::DEFAULT_MAX_ENVELOPE_BYTES + 1];
    let mut expected: HashMap<&str, &str> = HashMap::new();
    expected.insert("cycle", "cycle");
    expected.insert("unknown", "ghost");
    expected.insert("duplicate", "duplicate");
    expected.insert("empty", "no node");
    expected.insert("too_many", "over the limit of 3");
    for (what, wf) in [
        ("cycle", &cycle),
        ("unknown", &unknown),
        ("duplicate", &duplicate),
        ("empty", &empty),
        ("too_many", &too_many),
    ] {
        let error = broker.submit_workflow(wf).await.unwrap_err();
        assert!(
            matches!(error, Error::InvalidWorkflow(_)),
            "{what}: {error}"
        );
        assert!(
            error.to_string().contains(expected[what]),
            "{what}: {error}"
        );
        assert!(
            broker.workflow_status(wf.id).await.unwrap().is_none(),
            "{what}"
        );
    }
    let error = broker.submit_workflow(&oversized).await.unwrap_err();
    assert!(matches!(error, Error::Oversized { .. }), "{error}");
    assert!(
        broker
            .workflow_status(oversized.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(take(broker, &A, 0).await.is_empty());
    assert!(take(broker, &B, 0).await.is_empty());
    assert!("bad name".parse::<NodeName>().is_err());

    // The same id twice: the second is refused and changes nothing.
    let wf = spec(vec![node("a", A, &[])]);
    broker.submit_workflow(&wf).await.unwrap();
    assert!(matches!(
        broker.submit_workflow(&wf).await,
        Err(Error::WorkflowExists(id)) if id == wf.id
    ));
    assert_eq!(take(broker, &A, 1).await.len(), 1);
}

//! Workflows end to end: submitted with the SDK, run by real workers (two
//! of them, on two queues), on the in-memory broker and on Redis at
//! `SPOOL_REDIS_URL` (the Cluster in the cluster pass). Every handler
//! counts its runs, so a doubled or lost node shows.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use spool_broker::workflow::{EdgePolicy, NodeState, WorkflowState};
use spool_broker::{Broker, QueueName, Task, TaskOptions};
use spool_sdk::Client;
use spool_sdk::workflow::Workflow;
use spool_tests::{RunningWorker, short_lease_config, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

macro_rules! on_every_broker {
    ($($case:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(spool_broker::MemoryBroker::new()).await;
                }
            )*
        }

        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let redis = spool_tests::TestRedis::new().await;
                    super::$case(redis.broker.clone()).await;
                    redis.cleanup().await;
                }
            )*
        }
    };
}

on_every_broker!(
    a_video_pipeline_runs_each_node_once_with_typed_parents,
    a_failing_node_fails_the_workflow_and_retry_completes_it,
    cancel_stops_a_running_node,
    a_dead_lettered_or_revoked_node_fails_the_workflow_naming_it,
);

const PATIENCE: Duration = Duration::from_secs(30);

/// Runs per node name.
type Runs = Arc<Mutex<HashMap<String, u32>>>;

fn count(runs: &Runs, ctx: &TaskContext) {
    let node = ctx
        .node()
        .map_or_else(|| "?".to_owned(), ToString::to_string);
    *runs.lock().unwrap().entry(node).or_default() += 1;
}

#[derive(Serialize, Deserialize)]
struct Probe {
    chunks: u32,
}
impl Task for Probe {
    const NAME: &'static str = "test.wf.probe";
    type Output = u32;
}

#[derive(Serialize, Deserialize)]
struct Split;
impl Task for Split {
    const NAME: &'static str = "test.wf.split";
    type Output = ();
}

#[derive(Serialize, Deserialize)]
struct Chunk {
    index: u32,
}
impl Task for Chunk {
    const NAME: &'static str = "test.wf.chunk";
    type Output = u32;
    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::GPU,
            ..TaskOptions::default()
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Concat;
impl Task for Concat {
    const NAME: &'static str = "test.wf.concat";
    type Output = Vec<u32>;
}

#[derive(Serialize, Deserialize)]
struct Package;
impl Task for Package {
    const NAME: &'static str = "test.wf.package";
    type Output = String;
}

#[derive(Serialize, Deserialize)]
struct Flaky;
impl Task for Flaky {
    const NAME: &'static str = "test.wf.flaky";
    type Output = ();
}

/// A task no worker of this suite handles: dead-lettered.
#[derive(Serialize, Deserialize)]
struct Orphan;
impl Task for Orphan {
    const NAME: &'static str = "test.wf.orphan";
    type Output = ();
}

#[derive(Serialize, Deserialize)]
struct Hang;
impl Task for Hang {
    const NAME: &'static str = "test.wf.hang";
    type Output = ();
}

fn config(name: &str) -> WorkerConfig {
    WorkerConfig {
        queues: vec![QueueName::DEFAULT, QueueName::GPU],
        workflow_sweep_interval: Some(Duration::from_millis(200)),
        ..short_lease_config(name)
    }
}

/// A worker with every handler of this suite; `flaky_fails` says whether
/// `Flaky` fails (for good) now.
fn worker<B: Broker>(
    broker: B,
    name: &str,
    runs: &Runs,
    flaky_fails: &Arc<Mutex<bool>>,
) -> RunningWorker {
    let r = Arc::clone(runs);
    let probe = move |task: Probe, ctx: TaskContext| {
        count(&r, &ctx);
        async move { Ok::<_, TaskError>(task.chunks) }
    };
    let r = Arc::clone(runs);
    let split = move |_: Split, ctx: TaskContext| {
        count(&r, &ctx);
        async move {
            let chunks = ctx.parent::<Probe>("probe")?;
            for index in 0..chunks {
                ctx.add_child(&format!("chunk-{index}"), &Chunk { index })?;
            }
            ctx.join_children("concat", &Concat, EdgePolicy::Fail)?;
            Ok(())
        }
    };
    let r = Arc::clone(runs);
    let chunk = move |task: Chunk, ctx: TaskContext| {
        count(&r, &ctx);
        async move { Ok::<_, TaskError>(task.index * 10) }
    };
    let r = Arc::clone(runs);
    let concat = move |_: Concat, ctx: TaskContext| {
        count(&r, &ctx);
        async move {
            let mut all = Vec::new();
            for parent in ctx.parents() {
                all.push(ctx.parent::<Chunk>(parent.name.as_str())?);
            }
            all.sort_unstable();
            Ok(all)
        }
    };
    let r = Arc::clone(runs);
    let package = move |_: Package, ctx: TaskContext| {
        count(&r, &ctx);
        async move {
            let parts = ctx.parent::<Concat>("concat")?;
            Ok(format!("{} parts", parts.len()))
        }
    };
    let r = Arc::clone(runs);
    let fails = Arc::clone(flaky_fails);
    let flaky = move |_: Flaky, ctx: TaskContext| {
        count(&r, &ctx);
        let fail = *fails.lock().unwrap();
        async move {
            if fail {
                Err(TaskError::fail("not today"))
            } else {
                Ok(())
            }
        }
    };
    let r = Arc::clone(runs);
    let hang = move |_: Hang, ctx: TaskContext| {
        count(&r, &ctx);
        async move {
            ctx.cancellation().cancelled().await;
            Err::<(), _>(TaskError::retry("stopped"))
        }
    };
    spawn_worker(
        Worker::new(broker, config(name))
            .register::<Probe, _>(probe)
            .register::<Split, _>(split)
            .register::<Chunk, _>(chunk)
            .register::<Concat, _>(concat)
            .register::<Package, _>(package)
            .register::<Flaky, _>(flaky)
            .register::<Hang, _>(hang),
    )
}

fn runs_of(runs: &Runs) -> HashMap<String, u32> {
    runs.lock().unwrap().clone()
}

async fn a_video_pipeline_runs_each_node_once_with_typed_parents<B: Broker>(broker: B) {
    let runs = Runs::default();
    let fails = Arc::new(Mutex::new(false));
    let workers = [
        worker(broker.clone(), "w1", &runs, &fails),
        worker(broker.clone(), "w2", &runs, &fails),
    ];
    let client = Client::new(broker.clone());
    let mut wf = Workflow::new();
    wf.node("probe", Probe { chunks: 5 });
    wf.node("split", Split);
    wf.node("package", Package);
    wf.chain(&["probe", "split", "package"]);
    let handle = client.submit_workflow(wf).await.unwrap();
    let progress = tokio::spawn(handle.progress().collect::<Vec<_>>());
    let packaged: String = handle.wait::<Package>("package", PATIENCE).await.unwrap();
    assert_eq!(packaged, "5 parts");
    // Snapshots as nodes change, each different from the one before, the
    // last one finished.
    let snapshots: Vec<_> = tokio::time::timeout(PATIENCE, progress)
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(snapshots.last().unwrap().state.is_finished());
    for pair in snapshots.windows(2) {
        let states = |s: &spool_broker::workflow::WorkflowStatus| {
            s.nodes.iter().map(|n| n.state).collect::<Vec<_>>()
        };
        assert!(states(&pair[0]) != states(&pair[1]) || pair[1].state.is_finished());
    }
    let status = handle.finished(PATIENCE).await.unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);
    assert_eq!(status.nodes.len(), 3 + 5 + 1);
    let concat: Vec<u32> = handle.wait::<Concat>("concat", PATIENCE).await.unwrap();
    assert_eq!(concat, [0, 10, 20, 30, 40]);
    let runs = runs_of(&runs);
    assert_eq!(runs.len(), 9, "{runs:?}");
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    for w in workers {
        w.stop().await;
    }
}

async fn a_failing_node_fails_the_workflow_and_retry_completes_it<B: Broker>(broker: B) {
    let runs = Runs::default();
    let fails = Arc::new(Mutex::new(true));
    let w = worker(broker.clone(), "w1", &runs, &fails);
    let client = Client::new(broker.clone());
    let mut wf = Workflow::new();
    wf.node("probe", Probe { chunks: 1 });
    wf.node("flaky", Flaky).after(&["probe"]);
    wf.node("after", Probe { chunks: 0 }).after(&["flaky"]);
    let handle = client.submit_workflow(wf).await.unwrap();
    let error = handle.wait::<Probe>("after", PATIENCE).await.unwrap_err();
    assert!(
        matches!(
            error,
            spool_sdk::Error::NodeNotSucceeded {
                state: NodeState::Cancelled,
                ..
            }
        ),
        "{error}"
    );
    let status = handle.finished(PATIENCE).await.unwrap();
    assert!(
        matches!(&status.state, WorkflowState::Failed { node, reason } if node.as_str() == "flaky" && reason == "not today"),
        "{status:?}"
    );

    *fails.lock().unwrap() = false;
    assert_eq!(handle.retry().await.unwrap(), 2);
    let status = handle.finished(PATIENCE).await.unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded, "{status:?}");
    let runs = runs_of(&runs);
    assert_eq!(runs["probe"], 1, "the succeeded node kept its output");
    assert_eq!(runs["flaky"], 2);
    assert_eq!(runs["after"], 1);
    w.stop().await;
}

async fn cancel_stops_a_running_node<B: Broker>(broker: B) {
    let runs = Runs::default();
    let fails = Arc::new(Mutex::new(false));
    let w = worker(broker.clone(), "w1", &runs, &fails);
    let client = Client::new(broker.clone());
    let mut wf = Workflow::new();
    wf.node("hang", Hang);
    wf.node("package", Package).after(&["hang"]);
    let handle = client.submit_workflow(wf).await.unwrap();
    spool_tests::wait_until("the node to start", PATIENCE, || {
        let started = runs_of(&runs).contains_key("hang");
        async move { started }
    })
    .await;
    assert!(handle.cancel().await.unwrap());
    w.wait_for("the revoked run to end", PATIENCE, |c| c.revoked >= 1)
        .await;
    let status = handle.status().await.unwrap();
    assert_eq!(status.state, WorkflowState::Cancelled);
    assert_eq!(status.count(NodeState::Cancelled), 2);
    assert!(!runs_of(&runs).contains_key("package"));
    w.stop().await;
}

/// A node whose task is dead-lettered (no worker handles it), and one whose
/// task is revoked before it runs, each cancel their dependent and fail
/// their workflow, which names the node and its reason.
async fn a_dead_lettered_or_revoked_node_fails_the_workflow_naming_it<B: Broker>(broker: B) {
    let runs = Runs::default();
    let fails = Arc::new(Mutex::new(false));
    let client = Client::new(broker.clone());

    // Revoked while queued, before any worker runs.
    let mut wf = Workflow::new();
    wf.node("held", Probe { chunks: 1 });
    wf.node("after", Package).after(&["held"]);
    let revoked = client.submit_workflow(wf).await.unwrap();
    let held = revoked.status().await.unwrap().nodes[0].task_id;
    client.revoke(held).await.unwrap();

    let mut wf = Workflow::new();
    wf.node("orphan", Orphan);
    wf.node("after", Package).after(&["orphan"]);
    let orphaned = client.submit_workflow(wf).await.unwrap();

    let w = worker(broker.clone(), "w1", &runs, &fails);
    for (handle, node, state, reason) in [
        (&revoked, "held", NodeState::Revoked, "revoked"),
        (&orphaned, "orphan", NodeState::DeadLettered, "no handler"),
    ] {
        let status = handle.finished(PATIENCE).await.unwrap();
        assert!(
            matches!(&status.state, WorkflowState::Failed { node: failed, reason: why }
                if failed.as_str() == node && why.contains(reason)),
            "{status:?}"
        );
        assert_eq!(status.nodes[0].state, state, "{status:?}");
        assert_eq!(status.nodes[1].state, NodeState::Cancelled, "{status:?}");
    }
    assert!(runs_of(&runs).is_empty(), "{:?}", runs_of(&runs));
    w.stop().await;
}

//! Fault injection at every step boundary of settling a workflow node,
//! with real workers: a settle step that "crashes" (a fail point returns
//! an error where a SIGKILL would stop the worker) must lose no child and
//! double none. Each handler counts its runs, and the queues must be empty
//! at the end.
//!
//! The fail points (`spool_broker::workflow::fail_point`) are compiled in
//! by the `failpoints` feature this suite enables; `fail::FailScenario`
//! serializes the cases that share a process.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::workflow::WorkflowState;
use spool_broker::{Broker, QueueName, Task, TaskOptions};
use spool_sdk::Client;
use spool_sdk::workflow::Workflow;
use spool_tests::{short_lease_config, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

/// After `wf_settle.lua` recorded the outcome, before the outbox is
/// dispatched (the child is in the outbox only).
const AFTER_SETTLE: &str = "workflow-after-settle-before-dispatch";
/// After the child was enqueued, before its outbox entry is removed.
const AFTER_ENQUEUE: &str = "workflow-after-enqueue-before-outbox-removal";
/// After the dispatch, before the parent's delivery is acknowledged.
const AFTER_DISPATCH: &str = "workflow-after-dispatch-before-ack";

macro_rules! faults {
    ($($case:ident: $point:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::crash_at(spool_broker::MemoryBroker::new(), super::$point, true).await;
                }
            )*
        }

        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let redis = spool_tests::TestRedis::new().await;
                    // A single server enqueues ready nodes in the settle
                    // script: no dispatch, so its points are not reached.
                    let dispatches = spool_tests::redis_is_cluster();
                    super::crash_at(redis.broker.clone(), super::$point, dispatches).await;
                    redis.cleanup().await;
                }
            )*
        }

        /// Every ready node through the outbox, as on a cluster (on a
        /// single server by default the settle script enqueues it, and
        /// the points past the settle are not reached).
        mod on_redis_outbox {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let redis = spool_tests::TestRedis::with_config(|config| {
                        config.atomic_workflow_enqueue = false;
                    })
                    .await;
                    super::crash_at(redis.broker.clone(), super::$point, true).await;
                    redis.cleanup().await;
                }
            )*
        }
    };
}

faults!(
    a_crash_after_settling_before_dispatch_loses_no_child: AFTER_SETTLE,
    a_crash_after_enqueueing_before_the_outbox_removal_doubles_no_child: AFTER_ENQUEUE,
    a_crash_after_dispatch_before_the_ack_runs_no_parent_twice: AFTER_DISPATCH,
);

const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Step {
    value: u32,
}

impl Task for Step {
    const NAME: &'static str = "test.faults.step";
    type Output = u32;
}

#[derive(Serialize, Deserialize)]
struct Join;

impl Task for Join {
    const NAME: &'static str = "test.faults.join";
    type Output = u32;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::GPU,
            ..TaskOptions::default()
        }
    }
}

/// Submits a chain into a chord (`a → b → {c0, c1, c2} → join`) and runs
/// it with the fail point `point` returning an error the first two times
/// it is reached; every node must run exactly once. `dispatches` says
/// whether ready nodes go through the outbox (else the settle script
/// enqueues them, and the points after it are never reached).
async fn crash_at<B: Broker>(broker: B, point: &str, dispatches: bool) {
    let scenario = fail::FailScenario::setup();
    // The first two settlements crash at the point: one of a chain's
    // parent, one of a fan-in's.
    fail::cfg(point, "2*return(crashed)").unwrap();

    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let counted = Arc::clone(&runs);
    let step = move |task: Step, ctx: TaskContext| {
        let node = ctx.node().unwrap().to_string();
        *counted.lock().unwrap().entry(node).or_default() += 1;
        async move { Ok::<_, TaskError>(task.value) }
    };
    let counted = Arc::clone(&runs);
    let join = move |_: Join, ctx: TaskContext| {
        *counted.lock().unwrap().entry("join".into()).or_default() += 1;
        async move {
            let mut sum = 0;
            for parent in ctx.parents() {
                sum += ctx.parent::<Step>(parent.name.as_str())?;
            }
            Ok::<_, TaskError>(sum)
        }
    };
    let config = WorkerConfig {
        queues: vec![QueueName::DEFAULT, QueueName::GPU],
        // The sweeper and redeliveries both repair; the sweeper's grace
        // (10 s) leaves the repair here to redelivery, then to the sweeper.
        workflow_sweep_interval: Some(Duration::from_millis(500)),
        ..short_lease_config("faulty")
    };
    let worker = spawn_worker(
        Worker::new(broker.clone(), config)
            .register::<Step, _>(step)
            .register::<Join, _>(join),
    );

    let mut wf = Workflow::new();
    wf.node("a", Step { value: 1 });
    wf.node("b", Step { value: 2 });
    wf.chain(&["a", "b"]);
    for i in 0..3 {
        wf.node(&format!("c{i}"), Step { value: 10 + i });
    }
    wf.group(&["b"], &["c0", "c1", "c2"]);
    wf.node("join", Join);
    wf.chord(&["c0", "c1", "c2"], "join");
    let client = Client::new(broker.clone());
    let handle = client.submit_workflow(wf).await.unwrap();

    let sum: u32 = handle.wait::<Join>("join", PATIENCE).await.unwrap();
    assert_eq!(sum, 10 + 11 + 12);
    let status = handle.finished(PATIENCE).await.unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);

    // Every delivery settled (redelivered parents acknowledged unrun), and
    // nothing is left in the queues: no doubled child waits anywhere.
    for queue in [QueueName::DEFAULT, QueueName::GPU] {
        wait_until("the queues to drain", PATIENCE, || {
            let broker = broker.clone();
            let queue = queue.clone();
            async move { broker.stats(&queue).await.unwrap().is_drained() }
        })
        .await;
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 6, "{runs:?}");
    assert!(runs.values().all(|n| *n == 1), "a node ran twice: {runs:?}");
    let reached = point == AFTER_SETTLE || dispatches;
    // Both crashes happened: the fail point's two returns are used up (or,
    // with no dispatch step, it was never reached).
    assert_eq!(
        fail::eval(point, |_| ()).is_none(),
        reached,
        "the fail point {point} was reached twice: {reached} expected"
    );
    let report = worker.stop().await;
    if reached && point != AFTER_ENQUEUE {
        // The crashed parents were redelivered and acknowledged unrun.
        assert!(report.abandoned >= 1, "{report:?}");
    }
    scenario.teardown();
}

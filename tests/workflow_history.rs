//! Workflow history in the job store, written by real workers: workflows
//! submitted with the SDK on real Redis, run by workers recording to a
//! real SQLite file and a real PostgreSQL database. After each workflow
//! ends, the store holds its record (final state, failed node, runs) and
//! every node's (state, attempts, timings, output summary, error), also
//! once Redis has let the workflow go; every node's task has its record
//! (arguments redacted) from the submit on, before any worker runs it; and
//! `spoolctl workflow show --json` and `task show` read them. A cancel is
//! recorded by the worker that receives the revoked node, and counted once
//! in `spool_workflow_finished_total` by a real `spool-worker`'s sweeper.
//!
//! Build the binaries first: `cargo build -p spool-scheduler -p
//! spool-worker-cli --bins`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spool_broker::store::{
    JobStatus, JobStore, NodeRecord, NodeRecordState, WorkflowRecord, WorkflowRecordStatus,
};
use spool_broker::workflow::{EdgePolicy, WorkflowId, WorkflowState};
use spool_broker::{Backoff, Broker, RedisBroker, Task, TaskId, TaskOptions};
use spool_sdk::Client;
use spool_sdk::workflow::Workflow;
use spool_tests::metrics::{sample, scrape};
use spool_tests::{
    RunningWorker, TestRedis, bins, free_port, redis_url, short_lease_config, spawn_worker,
    wait_until,
};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

const PATIENCE: Duration = Duration::from_secs(30);

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let store = super::TestStore::sqlite().await;
                    let redis = spool_tests::TestRedis::new().await;
                    super::$case(&redis, &store).await;
                    redis.cleanup().await;
                    store.destroy().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(store) = super::TestStore::postgres().await else {
                        return;
                    };
                    let redis = spool_tests::TestRedis::new().await;
                    super::$case(&redis, &store).await;
                    redis.cleanup().await;
                    store.destroy().await;
                }
            )*
        }
    };
}

on_every_store!(
    a_chain_is_recorded_from_submit_to_its_end,
    a_failure_in_a_fan_out_records_the_cancelled_dependents,
    dynamic_children_are_recorded_with_their_tasks,
    a_retry_records_the_rerun_tasks_and_a_second_run,
    an_sdk_retry_records_the_rerun_tasks_too,
);

// ---------------------------------------------------------------- tasks

/// Returns ten times its value; `token` is a secret.
#[derive(Debug, Serialize, Deserialize)]
struct Step {
    value: u32,
    token: String,
}
impl Task for Step {
    const NAME: &'static str = "test.history.step";
    const SECRET_FIELDS: &'static [&'static str] = &["token"];
    type Output = u32;
}

fn step(value: u32) -> Step {
    Step {
        value,
        token: format!("secret-{value}"),
    }
}

/// Fails its first attempt (retryably), then succeeds.
#[derive(Debug, Serialize, Deserialize)]
struct Flaky;
impl Task for Flaky {
    const NAME: &'static str = "test.history.flaky";
    type Output = String;
    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            backoff: Backoff {
                base: Duration::from_millis(20),
                ..Backoff::default()
            },
            ..TaskOptions::default()
        }
    }
}

/// Fails for good while the worker's switch says so.
#[derive(Debug, Serialize, Deserialize)]
struct Broken;
impl Task for Broken {
    const NAME: &'static str = "test.history.broken";
    type Output = ();
}

/// Adds `parts` children and a join that takes over its dependents.
#[derive(Debug, Serialize, Deserialize)]
struct Split {
    parts: u32,
}
impl Task for Split {
    const NAME: &'static str = "test.history.split";
    type Output = u32;
}

/// A worker recording to `store` with every handler of this suite;
/// `Broken` fails while `broken` holds.
fn worker(redis: &TestRedis, store: &JobStore, broken: &Arc<AtomicBool>) -> RunningWorker {
    let broken = Arc::clone(broken);
    let config = WorkerConfig {
        workflow_sweep_interval: Some(Duration::from_millis(200)),
        ..short_lease_config(&format!("history-{:08x}", fastrand::u32(..)))
    };
    let worker = Worker::new(redis.broker.clone(), config)
        .with_store(store.clone())
        .register::<Step, _>(|task: Step, _ctx: TaskContext| async move {
            Ok::<_, TaskError>(task.value * 10)
        })
        .register::<Flaky, _>(|_: Flaky, ctx: TaskContext| async move {
            if ctx.attempt() == 1 {
                Err(TaskError::retry("warming up"))
            } else {
                Ok(format!("ready after {} attempts", ctx.attempt()))
            }
        })
        .register::<Broken, _>(move |_: Broken, _ctx: TaskContext| {
            let fail = broken.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(TaskError::fail("the input is corrupt"))
                } else {
                    Ok(())
                }
            }
        })
        .register::<Split, _>(|task: Split, ctx: TaskContext| async move {
            for part in 0..task.parts {
                ctx.add_child(&format!("part-{part}"), &step(100 + part))?;
            }
            ctx.join_children("merge", &step(7), EdgePolicy::Fail)?;
            Ok(task.parts)
        });
    spawn_worker(worker)
}

// ---------------------------------------------------------------- helpers

/// A job store of the test's own, deleted by [`TestStore::destroy`].
#[derive(Debug)]
struct TestStore {
    store: JobStore,
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Dir(PathBuf),
    Database { admin_url: String, name: String },
}

fn tag() -> String {
    format!("{}_{:08x}", std::process::id(), fastrand::u32(..))
}

impl TestStore {
    async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("spool-wf-history-{}", tag()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("jobs.db").display());
        let store = JobStore::create(&url).await.unwrap();
        Self {
            store,
            url,
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` when PostgreSQL is
    /// unreachable and `SPOOL_SKIP_POSTGRES=1`.
    async fn postgres() -> Option<Self> {
        let admin_url = std::env::var("SPOOL_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("spool_wf_history_{}", tag());
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        match JobStore::create(&url).await {
            Ok(store) => Some(Self {
                store,
                url,
                cleanup: Cleanup::Database { admin_url, name },
            }),
            Err(e) if std::env::var("SPOOL_SKIP_POSTGRES").is_ok_and(|v| v == "1") => {
                eprintln!("skipping: PostgreSQL unreachable at {admin_url}: {e}");
                None
            }
            Err(e) => panic!(
                "PostgreSQL is not reachable at {admin_url}: {e}\n\
                 Start it (SPOOL_WITH_POSTGRES=1 ops/scripts/setup.sh), point \
                 SPOOL_TEST_POSTGRES_URL at one, or set SPOOL_SKIP_POSTGRES=1."
            ),
        }
    }

    async fn destroy(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Database { admin_url, name } => {
                let _ = tokio::task::spawn_blocking(move || {
                    Command::new("psql")
                        .arg(&admin_url)
                        .args(["-q", "-c"])
                        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .status()
                })
                .await;
            }
        }
    }
}

/// `spoolctl --json ARGS` against the test's Redis, with the store when
/// `store` is given.
fn spoolctl(redis: &TestRedis, store: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(bins::spoolctl());
    command.env_remove("SPOOL_STORE_URL").args([
        "--redis-url",
        &redis_url(),
        "--key-prefix",
        &redis.prefix,
        "--json",
    ]);
    if let Some(url) = store {
        command.args(["--store-url", url]);
    }
    command.args(args).output().unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Waits until the store's record of `id` is finished with `status` and
/// every node it holds is settled, and returns it.
async fn finished_record(
    store: &JobStore,
    id: WorkflowId,
    status: WorkflowRecordStatus,
) -> WorkflowRecord {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let record = store.workflow(id).await.unwrap();
        if let Some(r) = &record
            && r.status == status
            && r.nodes.len() == r.node_count as usize
            && r.nodes.iter().all(|n| n.state.is_terminal())
        {
            return record.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the workflow's history to end {status}: {record:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn node<'a>(record: &'a WorkflowRecord, name: &str) -> &'a NodeRecord {
    record
        .nodes
        .iter()
        .find(|n| n.name.as_str() == name)
        .unwrap_or_else(|| panic!("no node {name} in {record:#?}"))
}

/// Checks a node that ran to success here: state, attempts and timings in
/// order.
fn assert_ran(node: &NodeRecord, attempts: u32) {
    assert_eq!(node.state, NodeRecordState::Succeeded, "{node:#?}");
    assert_eq!(node.attempts, attempts, "{node:#?}");
    let times = (node.queued_at, node.started_at, node.finished_at);
    let (Some(queued), Some(started), Some(finished)) = times else {
        panic!("a node that ran has every time: {node:#?}");
    };
    assert!(queued <= started && started <= finished, "{node:#?}");
    assert!(node.output_summary.is_some(), "{node:#?}");
}

/// Deletes the workflow's live state from Redis, as its expiry would.
async fn forget_in_redis(redis: &TestRedis, id: WorkflowId) {
    let mut raw = redis.raw();
    let keys: Vec<String> = raw
        .keys(format!("{}:{{wf:{id}}}:*", redis.prefix))
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the workflow's keys");
    for key in keys {
        let _: () = raw.del(key).await.unwrap();
    }
    assert!(redis.broker.workflow_status(id).await.unwrap().is_none());
}

fn client(redis: &TestRedis, store: &JobStore) -> Client<RedisBroker> {
    redis.client().with_store(store.clone())
}

// ---------------------------------------------------------------- cases

/// A chain with a retried middle node: every node's task is recorded
/// (arguments redacted) at submit, before any worker runs; afterwards each
/// node has its attempts and timings, and `spoolctl` reads the history
/// from the store alone once Redis has forgotten the workflow.
async fn a_chain_is_recorded_from_submit_to_its_end(redis: &TestRedis, store: &TestStore) {
    let mut wf = Workflow::new();
    wf.node("probe", step(1));
    wf.node("warm", Flaky);
    wf.node("last", step(3));
    wf.chain(&["probe", "warm", "last"]);
    let handle = client(redis, &store.store)
        .submit_workflow(wf)
        .await
        .unwrap();
    let id = handle.id();

    // Before any worker: the workflow, its nodes and their tasks.
    let record = store.store.workflow(id).await.unwrap().unwrap();
    assert_eq!(record.status, WorkflowRecordStatus::Running);
    assert_eq!(node(&record, "probe").state, NodeRecordState::Queued);
    assert_eq!(node(&record, "last").state, NodeRecordState::Waiting);
    let ids: Vec<TaskId> = record.nodes.iter().map(|n| n.task_id).collect();
    let live = handle.status().await.unwrap();
    assert_eq!(
        ids,
        live.nodes.iter().map(|n| n.task_id).collect::<Vec<_>>(),
        "the task ids the broker runs"
    );
    for (n, id) in record.nodes.iter().zip(&ids) {
        let task = store.store.get(*id).await.unwrap().unwrap();
        assert_eq!(task.status, JobStatus::Queued, "{}", n.name);
        assert_eq!(task.name, n.task);
    }
    let last_task = node(&record, "last").task_id.to_string();
    let shown = json_of(&spoolctl(
        redis,
        Some(&store.url),
        &["task", "show", &last_task],
    ));
    assert_eq!(shown["status"], "queued", "{shown}");
    assert_eq!(
        shown["args"],
        json!({"value": 3, "token": "***"}),
        "{shown}"
    );

    let broken = Arc::new(AtomicBool::new(false));
    let running = worker(redis, &store.store, &broken);
    assert_eq!(
        handle.finished(PATIENCE).await.unwrap().state,
        WorkflowState::Succeeded
    );
    // A stopping worker writes the history it has queued before it ends.
    running.stop().await;
    let record = finished_record(&store.store, id, WorkflowRecordStatus::Succeeded).await;
    assert_eq!(
        (record.node_count, record.nodes_settled, record.runs),
        (3, 3, 1)
    );
    assert!(record.finished_at.is_some() && record.failed_node.is_none());
    assert_ran(node(&record, "probe"), 1);
    assert_ran(node(&record, "warm"), 2);
    assert_ran(node(&record, "last"), 1);
    assert_eq!(node(&record, "probe").output_summary.as_deref(), Some("10"));
    assert_eq!(
        node(&record, "warm").output_summary.as_deref(),
        Some("\"ready after 2 attempts\"")
    );
    assert!(
        node(&record, "warm").started_at >= node(&record, "probe").finished_at,
        "in order"
    );
    let task = store.store.get(ids[1]).await.unwrap().unwrap();
    assert_eq!((task.status, task.attempts), (JobStatus::Succeeded, 2));

    // Redis forgets it: the store still answers.
    forget_in_redis(redis, id).await;
    let out = spoolctl(
        redis,
        Some(&store.url),
        &["workflow", "show", &id.to_string()],
    );
    let view = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{view}");
    assert_eq!(
        (view["source"].as_str(), view["state"].as_str()),
        (Some("store"), Some("succeeded"))
    );
    let nodes = view["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["state"], "succeeded", "{n}");
        assert!(
            n["started_at"].is_string() && n["finished_at"].is_string(),
            "{n}"
        );
    }
    assert_eq!(nodes[1]["attempts"], 2);
    let shown = json_of(&spoolctl(
        redis,
        Some(&store.url),
        &["task", "show", &last_task],
    ));
    assert_eq!(shown["status"], "succeeded", "{shown}");
}

/// A fan-out where one member fails for good: the store records the
/// failure (error, attempts), the dependents its `fail` edges cancelled,
/// and the workflow failed naming it.
async fn a_failure_in_a_fan_out_records_the_cancelled_dependents(
    redis: &TestRedis,
    store: &TestStore,
) {
    let mut wf = Workflow::new();
    wf.node("root", step(1));
    wf.node("ok-1", step(2));
    wf.node("bad", Broken);
    wf.node("ok-2", step(3));
    wf.node("after-bad", step(4)).after(&["bad"]);
    wf.node("join", step(5));
    wf.group(&["root"], &["ok-1", "bad", "ok-2"]);
    wf.chord(&["ok-1", "bad", "ok-2"], "join");
    let handle = client(redis, &store.store)
        .submit_workflow(wf)
        .await
        .unwrap();
    let id = handle.id();
    let broken = Arc::new(AtomicBool::new(true));
    let running = worker(redis, &store.store, &broken);
    let end = handle.finished(PATIENCE).await.unwrap();
    assert!(
        matches!(&end.state, WorkflowState::Failed { node, .. } if node.as_str() == "bad"),
        "{end:?}"
    );
    running.stop().await;
    let record = finished_record(&store.store, id, WorkflowRecordStatus::Failed).await;
    assert_eq!(record.failed_node.as_deref(), Some("bad"));
    assert!(
        record.error.is_some() && record.finished_at.is_some(),
        "{record:#?}"
    );
    assert_eq!((record.node_count, record.nodes_settled), (6, 6));
    for name in ["root", "ok-1", "ok-2"] {
        assert_ran(node(&record, name), 1);
    }
    let bad = node(&record, "bad");
    assert_eq!(
        (bad.state, bad.attempts),
        (NodeRecordState::Failed, 1),
        "{bad:#?}"
    );
    assert!(
        bad.error
            .as_deref()
            .unwrap()
            .contains("the input is corrupt"),
        "{bad:#?}"
    );
    assert!(
        bad.started_at.is_some() && bad.finished_at.is_some(),
        "{bad:#?}"
    );
    for name in ["after-bad", "join"] {
        let cancelled = node(&record, name);
        assert_eq!(
            cancelled.state,
            NodeRecordState::Cancelled,
            "{cancelled:#?}"
        );
        assert!(cancelled.started_at.is_none(), "never ran: {cancelled:#?}");
        let task = store.store.get(cancelled.task_id).await.unwrap().unwrap();
        assert_eq!(task.attempts, 0, "its task never ran");
    }

    let out = spoolctl(
        redis,
        Some(&store.url),
        &["workflow", "show", &id.to_string()],
    );
    let view = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{view}");
    assert_eq!(view["failed_node"], "bad");
    assert_eq!(view["counts"]["cancelled"], 2, "{view}");
}

/// A node that adds children and a join at run time: the store learns the
/// new nodes (with their parents, the spawner's dependent now after the
/// join) and each child's task record, arguments redacted.
async fn dynamic_children_are_recorded_with_their_tasks(redis: &TestRedis, store: &TestStore) {
    let mut wf = Workflow::new();
    wf.node("split", Split { parts: 3 });
    wf.node("after", step(9)).after(&["split"]);
    let handle = client(redis, &store.store)
        .submit_workflow(wf)
        .await
        .unwrap();
    let id = handle.id();
    let broken = Arc::new(AtomicBool::new(false));
    let running = worker(redis, &store.store, &broken);
    assert_eq!(
        handle.finished(PATIENCE).await.unwrap().state,
        WorkflowState::Succeeded
    );
    running.stop().await;
    let record = finished_record(&store.store, id, WorkflowRecordStatus::Succeeded).await;
    assert_eq!(
        (record.node_count, record.nodes_settled),
        (6, 6),
        "{record:#?}"
    );
    let names: Vec<&str> = record.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names[..2],
        ["split", "after"],
        "submitted first, children last"
    );
    for name in ["split", "part-0", "part-1", "part-2", "merge", "after"] {
        assert_ran(node(&record, name), 1);
    }
    let merge = node(&record, "merge");
    let parents: Vec<&str> = merge.parents.iter().map(|e| e.parent.as_str()).collect();
    assert_eq!(parents, ["part-0", "part-1", "part-2"]);
    let after = node(&record, "after");
    assert_eq!(after.parents[0].parent.as_str(), "merge", "{after:#?}");
    for part in 0..3_u32 {
        let child = node(&record, &format!("part-{part}"));
        assert_eq!(child.output_summary, Some((1000 + part * 10).to_string()));
        let task = store.store.get(child.task_id).await.unwrap().unwrap();
        assert_eq!(task.status, JobStatus::Succeeded);
        assert_eq!(
            task.args,
            Some(json!({"value": 100 + part, "token": "***"})),
            "recorded by the worker that added it, redacted"
        );
    }
}

/// `spoolctl workflow retry`: each rerun node's new task is recorded
/// (arguments copied) before it runs, the node records move to the new
/// tasks, and the second run's end is recorded with `runs` 2.
async fn a_retry_records_the_rerun_tasks_and_a_second_run(redis: &TestRedis, store: &TestStore) {
    retry_records_the_rerun_tasks(redis, store, RetryBy::Spoolctl).await;
}

/// The same through the SDK: `WorkflowHandle::retry` of a client with a
/// job store records the rerun tasks as `spoolctl workflow retry` does.
async fn an_sdk_retry_records_the_rerun_tasks_too(redis: &TestRedis, store: &TestStore) {
    retry_records_the_rerun_tasks(redis, store, RetryBy::Sdk).await;
}

/// Who retries the workflow.
#[derive(Clone, Copy, Debug)]
enum RetryBy {
    Spoolctl,
    Sdk,
}

async fn retry_records_the_rerun_tasks(redis: &TestRedis, store: &TestStore, by: RetryBy) {
    let mut wf = Workflow::new();
    wf.node("first", step(1));
    wf.node("bad", Broken);
    wf.node("then", step(2));
    wf.chain(&["first", "bad", "then"]);
    let handle = client(redis, &store.store)
        .submit_workflow(wf)
        .await
        .unwrap();
    let id = handle.id();
    let broken = Arc::new(AtomicBool::new(true));
    let running = worker(redis, &store.store, &broken);
    handle.finished(PATIENCE).await.unwrap();
    running.stop().await;
    let record = finished_record(&store.store, id, WorkflowRecordStatus::Failed).await;
    let (old_bad, old_then) = (node(&record, "bad").task_id, node(&record, "then").task_id);
    assert_eq!(node(&record, "then").state, NodeRecordState::Cancelled);

    match by {
        RetryBy::Spoolctl => {
            let out = spoolctl(
                redis,
                Some(&store.url),
                &["workflow", "retry", &id.to_string()],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        RetryBy::Sdk => assert_eq!(handle.retry().await.unwrap(), 2, "bad and then rerun"),
    }
    let record = store.store.workflow(id).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.runs),
        (WorkflowRecordStatus::Running, 2)
    );
    let (bad, then) = (node(&record, "bad"), node(&record, "then"));
    assert!(
        bad.task_id != old_bad && then.task_id != old_then,
        "{record:#?}"
    );
    assert_eq!(
        node(&record, "first").state,
        NodeRecordState::Succeeded,
        "kept"
    );
    assert_eq!(
        (bad.state, then.state),
        (NodeRecordState::Queued, NodeRecordState::Waiting)
    );
    for (rerun, was) in [(bad.task_id, old_bad), (then.task_id, old_then)] {
        let task = store.store.get(rerun).await.unwrap().unwrap();
        let old = store.store.get(was).await.unwrap().unwrap();
        assert_eq!((task.status, task.attempts), (JobStatus::Queued, 0));
        assert_eq!((&task.name, &task.args), (&old.name, &old.args));
    }
    let shown = json_of(&spoolctl(
        redis,
        Some(&store.url),
        &["task", "show", &then.task_id.to_string()],
    ));
    assert_eq!(
        shown["args"],
        json!({"value": 2, "token": "***"}),
        "{shown}"
    );

    broken.store(false, Ordering::SeqCst);
    let running = worker(redis, &store.store, &broken);
    wait_until("the second run's end", PATIENCE, || async {
        handle.status().await.unwrap().state == WorkflowState::Succeeded
    })
    .await;
    running.stop().await;
    let record = finished_record(&store.store, id, WorkflowRecordStatus::Succeeded).await;
    assert_eq!(record.runs, 2);
    assert_ran(node(&record, "bad"), 1);
    assert_ran(node(&record, "then"), 1);
    assert_eq!(
        store.store.get(old_bad).await.unwrap().unwrap().status,
        JobStatus::Failed,
        "the first run's record stays"
    );
}

// ---------------------------------------------------------------- cancel

/// A cancel from `spoolctl` (without the store): the broker's sweepers
/// count it once however many sweep at once; a real `spool-worker`
/// recording to the store receives the revoked node, records the node and
/// the workflow cancelled, and its `/metrics` counts the cancel once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_is_recorded_and_counted_once() {
    let redis = TestRedis::new().await;
    let store = TestStore::sqlite().await;

    // Four sweepers at once count one cancel once.
    let mut wf = Workflow::new();
    wf.node("idle", step(1));
    let idle = redis.client().submit_workflow(wf).await.unwrap();
    assert!(idle.cancel().await.unwrap());
    let sweeps =
        futures::future::join_all((0..4).map(|_| redis.broker.sweep_workflows(Duration::ZERO)))
            .await;
    let cancelled: usize = sweeps.into_iter().map(|s| s.unwrap().cancelled).sum();
    assert_eq!(cancelled, 1);
    assert_eq!(
        redis
            .broker
            .sweep_workflows(Duration::ZERO)
            .await
            .unwrap()
            .cancelled,
        0
    );

    // A real worker runs a long node; spoolctl cancels it.
    let mut wf = Workflow::new();
    wf.node("sleep", spool_worker::builtin::Sleep { ms: 120_000 });
    wf.node(
        "echo",
        spool_worker::builtin::Echo {
            value: json!("never"),
        },
    )
    .after(&["sleep"]);
    let handle = client(&redis, &store.store)
        .submit_workflow(wf)
        .await
        .unwrap();
    let id = handle.id();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = Command::new(bins::spool_worker())
        .env("SPOOL_REDIS_URL", redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_QUEUES", "default")
        .env("SPOOL_STORE_URL", &store.url)
        .args(["--no-video", "--no-probe", "--metrics-addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the node running, in the store", PATIENCE, || async {
        store.store.workflow(id).await.unwrap().is_some_and(|r| {
            let sleep = node(&r, "sleep");
            sleep.state == NodeRecordState::Running && sleep.started_at.is_some()
        })
    })
    .await;
    let out = spoolctl(&redis, None, &["workflow", "cancel", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let record = finished_record(&store.store, id, WorkflowRecordStatus::Cancelled).await;
    // The running node's run was stopped: cancelled, as Redis has it,
    // after its one attempt.
    let sleep = node(&record, "sleep");
    assert_eq!(
        (sleep.state, sleep.attempts),
        (NodeRecordState::Cancelled, 1),
        "{sleep:#?}"
    );
    assert!(
        sleep.started_at.is_some() && sleep.finished_at.is_some(),
        "{sleep:#?}"
    );
    assert!(sleep.output_summary.is_none(), "{sleep:#?}");
    assert_eq!(node(&record, "echo").state, NodeRecordState::Cancelled);
    assert!(record.finished_at.is_some());

    let counted = r#"spool_workflow_finished_total{outcome="cancelled"}"#;
    wait_until("the cancel counted", Duration::from_secs(60), || {
        let seen = scrape(&addr).and_then(|m| sample(&m, counted));
        async move { seen == Some(1.0) }
    })
    .await;
    // It has left the index: no later sweep, anywhere, counts it again.
    assert_eq!(
        redis
            .broker
            .sweep_workflows(Duration::ZERO)
            .await
            .unwrap()
            .cancelled,
        0
    );
    let metrics = scrape(&addr).unwrap();
    assert_eq!(sample(&metrics, counted), Some(1.0), "{metrics}");

    let _ = worker.kill();
    let _ = worker.wait();
    redis.cleanup().await;
    store.destroy().await;
}

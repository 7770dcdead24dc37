//! Phases (f) and (g) of `spool-bench`: workflows on the same Redis and in
//! the same run as the plain drain.
//!
//! - (f) a fan-out of `--wf-fanout` nodes (10,000) plus a node that joins
//!   them, submitted as one workflow and run by one worker process: nodes
//!   per second from submit to the workflow's end (the time its last
//!   settlement recorded in Redis), against the plain drain's tasks per
//!   second (goal: at least half). The bench does not poll the status of
//!   the 10,001 nodes while they run (each poll reads them all, holding
//!   Redis for a tenth of a second on a busy machine, which delayed the
//!   join's own settlement): the worker's observer says when the
//!   settlement that ended the workflow was recorded, and only then is
//!   the status read, once. It runs once per round, right after the
//!   round's drain, each time with a worker of its own.
//!   For comparison, each round then runs as many plain tasks (no
//!   workflow) the same way: enqueued in batches while a fresh worker
//!   runs them, timed from the first enqueue to the last acknowledgement.
//!   The plain drain (c) times a backlog enqueued beforehand, at its
//!   steady rate; this times what the fan-out's nodes would cost without
//!   their graph, with the same start and the same tail.
//! - (g) a chain of `--wf-chain` steps (1,000): the enqueue-to-start
//!   latency of each step, measured from the end of its parent's handler
//!   (which includes settling the parent, dispatching the step, fetching
//!   it and reading its parents' outputs) to the start of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use spool_broker::workflow::{NodeSettlement, Settled, WorkflowId, WorkflowState, WorkflowStatus};
use spool_broker::{RedisBroker, Task, Timestamp};
use spool_sdk::Client;
use spool_sdk::workflow::Workflow;
use spool_worker::{Observer, TaskContext, TaskError, Worker, WorkerConfig};

/// A fan-out member or its join: does nothing.
#[derive(Serialize, Deserialize)]
struct Leaf;

impl Task for Leaf {
    const NAME: &'static str = "bench.wf.leaf";
    type Output = ();
}

/// One step of the chain: notes when it ran.
#[derive(Serialize, Deserialize)]
struct Step {
    index: u32,
}

impl Task for Step {
    const NAME: &'static str = "bench.wf.step";
    type Output = ();
}

/// What one run of (f) measured.
pub struct Fanout {
    /// Nodes of the fan-out workflow (members plus the join).
    pub nodes: usize,
    /// Its nodes per second, submit to end.
    pub nodes_per_s: f64,
    /// How long `submit_workflow` took of that, in ms: building, writing
    /// and enqueueing the graph, before any node can run.
    pub submit_ms: f64,
    /// As many plain tasks per second, run the same way (see `plain`).
    pub plain_per_s: f64,
}

/// What (g) measured.
pub struct Chain {
    /// Steps of the chain.
    pub steps: usize,
    /// Enqueue-to-start latency of each step after the first, in µs.
    pub latency: Histogram<u64>,
}

/// Start and end of each step's handler, in µs since the phase began.
type Marks = Arc<Mutex<Vec<(u32, u64, u64)>>>;

/// Tells which workflows this worker's settlements ended, and how many
/// outcomes it has acknowledged.
#[derive(Default)]
struct Ends {
    ended: Mutex<Vec<WorkflowId>>,
    acknowledged: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Ends {
    /// Waits until `done` says so, checking after each event.
    async fn until(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let notified = self.notify.notified();
            if done(self) {
                return;
            }
            notified.await;
        }
    }

    /// Waits until a settlement ends `workflow`.
    async fn wait(&self, workflow: WorkflowId) {
        self.until(|ends| {
            ends.ended
                .lock()
                .is_ok_and(|ended| ended.contains(&workflow))
        })
        .await;
    }
}

impl Observer for Ends {
    fn settled(&self, count: usize) {
        self.acknowledged.fetch_add(count, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    fn workflow_node_settled(&self, settlement: &NodeSettlement, settled: &Settled) {
        if let Settled::Recorded {
            finished: Some(_), ..
        } = settled
        {
            if let Ok(mut ended) = self.ended.lock() {
                ended.push(settlement.workflow);
            }
            self.notify.notify_waiters();
        }
    }
}

fn worker(
    broker: &RedisBroker,
    concurrency: usize,
    prefetch: usize,
    marks: Marks,
    ends: Arc<Ends>,
) -> Worker<RedisBroker> {
    let config = WorkerConfig {
        concurrency,
        prefetch,
        ..WorkerConfig::default()
    };
    let epoch = Instant::now();
    Worker::new(broker.clone(), config)
        .observe(ends)
        .register::<Leaf, _>(move |_task: Leaf, _ctx: TaskContext| async { Ok::<_, TaskError>(()) })
        .register::<Step, _>(move |task: Step, _ctx: TaskContext| {
            let at = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            if let Ok(mut marks) = marks.lock() {
                marks.push((task.index, at, at));
            }
            async { Ok::<_, TaskError>(()) }
        })
}

/// A worker of `concurrency` slots and `prefetch`, running in the
/// background until [`Running::until_end`].
struct Running {
    ends: Arc<Ends>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<spool_worker::Result<spool_worker::CounterSnapshot>>,
}

impl Running {
    fn start(broker: &RedisBroker, (concurrency, prefetch): (usize, usize), marks: Marks) -> Self {
        let ends = Arc::new(Ends::default());
        let worker = worker(broker, concurrency, prefetch, marks, Arc::clone(&ends));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        Self { ends, stop, task }
    }

    /// Stops the worker, which must have run without error.
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }

    /// Waits until a settlement of this worker ends `handle`'s workflow,
    /// stops the worker, and returns the workflow's status, which must be
    /// a success.
    async fn until_end(
        self,
        handle: &spool_sdk::workflow::WorkflowHandle<RedisBroker>,
        what: &str,
    ) -> Result<WorkflowStatus> {
        tokio::time::timeout(Duration::from_secs(600), self.ends.wait(handle.id())).await?;
        let status = handle.finished(Duration::from_secs(600)).await?;
        self.stop().await?;
        if status.state != WorkflowState::Succeeded {
            bail!("the {what} workflow ended {}", status.state);
        }
        Ok(status)
    }
}

/// (f) once: a fan-out of `members` plus a join, run by one worker
/// process, then as many plain tasks enqueued `batch` at a time.
pub async fn fanout(
    broker: &RedisBroker,
    client: &Client<RedisBroker>,
    workers: (usize, usize),
    members: usize,
    batch: usize,
) -> Result<Fanout> {
    let running = Running::start(broker, workers, Marks::default());
    let mut wf = Workflow::new().max_nodes(members + 1);
    let names: Vec<String> = (0..members).map(|i| format!("leaf-{i}")).collect();
    for member in &names {
        wf.node(member, Leaf);
    }
    let parents: Vec<&str> = names.iter().map(String::as_str).collect();
    wf.node("join", Leaf).after(&parents);
    let started = Timestamp::now();
    let submitting = Instant::now();
    let handle = client.submit_workflow(wf).await?;
    let submit_ms = submitting.elapsed().as_secs_f64() * 1000.0;
    let status = running.until_end(&handle, "fan-out").await?;
    let ended = status.finished_at.unwrap_or_else(Timestamp::now);
    let elapsed_ms = ended.as_millis().saturating_sub(started.as_millis()).max(1);
    let nodes_per_s = (members + 1) as f64 * 1000.0 / elapsed_ms as f64;
    eprintln!(
        "workflow fan-out: {nodes_per_s:.0} nodes/s (submit {submit_ms:.0} ms of {elapsed_ms} ms)"
    );
    Ok(Fanout {
        nodes: members + 1,
        nodes_per_s,
        submit_ms,
        plain_per_s: plain(broker, client, workers, members + 1, batch).await?,
    })
}

/// (f) for comparison: `tasks` plain tasks, enqueued `batch` at a time
/// while a fresh worker runs them; tasks per second from the first enqueue
/// to the last acknowledgement.
async fn plain(
    broker: &RedisBroker,
    client: &Client<RedisBroker>,
    workers: (usize, usize),
    tasks: usize,
    batch: usize,
) -> Result<f64> {
    let running = Running::start(broker, workers, Marks::default());
    let started = Instant::now();
    let mut sent = 0;
    while sent < tasks {
        let count = batch.max(1).min(tasks - sent);
        client.enqueue_many((0..count).map(|_| Leaf)).await?;
        sent += count;
    }
    let ends = Arc::clone(&running.ends);
    let all_acknowledged = |ends: &Ends| ends.acknowledged.load(Ordering::Relaxed) >= tasks;
    tokio::time::timeout(Duration::from_secs(600), ends.until(all_acknowledged)).await?;
    let elapsed = started.elapsed();
    running.stop().await?;
    let per_s = tasks as f64 / elapsed.as_secs_f64().max(1e-6);
    eprintln!("plain tasks, same shape: {per_s:.0} tasks/s");
    Ok(per_s)
}

/// (g): a chain of `steps`, run by one worker process.
pub async fn chain(
    broker: &RedisBroker,
    client: &Client<RedisBroker>,
    workers: (usize, usize),
    steps: usize,
) -> Result<Chain> {
    let marks: Marks = Arc::new(Mutex::new(Vec::with_capacity(steps)));
    let running = Running::start(broker, workers, Arc::clone(&marks));
    let mut wf = Workflow::new().max_nodes(steps);
    let names: Vec<String> = (0..steps).map(|i| format!("step-{i}")).collect();
    for (i, step) in names.iter().enumerate() {
        wf.node(
            step,
            Step {
                index: u32::try_from(i).unwrap_or(u32::MAX),
            },
        );
    }
    let order: Vec<&str> = names.iter().map(String::as_str).collect();
    wf.chain(&order);
    let handle = client.submit_workflow(wf).await?;
    running.until_end(&handle, "chain").await?;
    let mut marks = marks
        .lock()
        .map_err(|_| anyhow::anyhow!("marks lock poisoned"))?
        .clone();
    marks.sort_unstable();
    if marks.len() != steps {
        bail!("the chain ran {} steps, expected {steps}", marks.len());
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for pair in marks.windows(2) {
        let (_, _, parent_end) = pair[0];
        let (_, child_start, _) = pair[1];
        latency.saturating_record(child_start.saturating_sub(parent_end).max(1));
    }
    Ok(Chain { steps, latency })
}

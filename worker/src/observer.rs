//! Hooks into the runtime's events, for metrics, registries and logs.

use std::sync::Arc;
use std::time::Duration;

use spool_broker::workflow::{NodeName, NodeSettlement, Settled, SweepReport, WorkflowId};
use spool_broker::{DeadReason, Envelope, QueueName, TaskId, Timestamp};

/// Which task an event is about.
#[derive(Debug, Clone, Copy)]
pub struct TaskInfo<'a> {
    /// The task's id.
    pub id: TaskId,
    /// Its wire name.
    pub name: &'a str,
    /// Its queue.
    pub queue: &'a QueueName,
    /// Which run this is, starting at 1.
    pub attempt: u32,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler succeeded.
    Succeeded,
    /// The handler failed for good (a final error or a time limit).
    Failed,
    /// The handler failed and the task was scheduled again.
    Retried,
    /// The task was moved to its dead-letter stream.
    DeadLettered(DeadReason),
    /// The task expired before it could start.
    Expired,
    /// The task was revoked, before or while running.
    Revoked,
    /// The task was given back to its queue unstarted (warm shutdown).
    Requeued,
    /// A rate limit put the task back until a token is free; it did not
    /// run and keeps its attempt number.
    Deferred,
    /// Another worker took the task over (this one's lease lapsed): the
    /// local run was stopped and its outcome left to the other worker.
    Abandoned,
}

impl Outcome {
    /// A short label for metrics: `succeeded`, `failed`, `retried`, `dead`,
    /// `expired`, `revoked`, `requeued`, `deferred` or `abandoned`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Retried => "retried",
            Self::DeadLettered(_) => "dead",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Requeued => "requeued",
            Self::Deferred => "deferred",
            Self::Abandoned => "abandoned",
        }
    }
}

/// Receives the runtime's events. Every method has an empty default; they
/// are called on the hot path, so keep them cheap and never block.
///
/// Register with [`Worker::observe`](crate::Worker::observe).
pub trait Observer: Send + Sync + 'static {
    /// `count` tasks of `queue` were fetched into the prefetch buffer.
    fn fetched(&self, queue: &QueueName, count: usize) {
        let _ = (queue, count);
    }

    /// A handler started.
    fn started(&self, task: &TaskInfo<'_>) {
        let _ = task;
    }

    /// A delivery reached its outcome; `ran_for` is the handler's run time
    /// (zero when it never ran).
    fn finished(&self, task: &TaskInfo<'_>, outcome: Outcome, ran_for: Duration) {
        let _ = (task, outcome, ran_for);
    }

    /// `count` outcomes were stored with the broker, freeing their prefetch
    /// slots.
    fn settled(&self, count: usize) {
        let _ = count;
    }

    /// An attempt of node `node` of `workflow` is starting at `at`: its
    /// handler was accepted and runs next (called right after
    /// [`Observer::started`]).
    fn workflow_node_running(
        &self,
        task: &TaskInfo<'_>,
        workflow: WorkflowId,
        node: &NodeName,
        at: Timestamp,
    ) {
        let _ = (task, workflow, node, at);
    }

    /// A workflow node's handler started; `waited` is how long since its
    /// task was enqueued (for a child, since its last parent settled and
    /// the outbox dispatched it), when the broker says (a Redis stream
    /// entry id carries its time, in milliseconds).
    fn workflow_node_started(&self, task: &TaskInfo<'_>, waited: Option<Duration>) {
        let _ = (task, waited);
    }

    /// A workflow node was settled by this worker: `settled` says whether
    /// it was recorded now, which nodes it made ready, and the workflow's
    /// end if it ended it.
    fn workflow_node_settled(&self, settlement: &NodeSettlement, settled: &Settled) {
        let _ = (settlement, settled);
    }

    /// A pass of this worker's workflow sweeper ended.
    fn workflow_swept(&self, report: &SweepReport) {
        let _ = report;
    }
}

/// The observers of one worker.
#[derive(Clone, Default)]
pub(crate) struct Observers(Vec<Arc<dyn Observer>>);

impl Observers {
    pub(crate) fn push(&mut self, observer: Arc<dyn Observer>) {
        self.0.push(observer);
    }

    pub(crate) fn extend(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    pub(crate) fn fetched(&self, queue: &QueueName, count: usize) {
        self.0.iter().for_each(|o| o.fetched(queue, count));
    }

    pub(crate) fn started(&self, task: &TaskInfo<'_>) {
        self.0.iter().for_each(|o| o.started(task));
    }

    pub(crate) fn finished(&self, task: &TaskInfo<'_>, outcome: Outcome, ran_for: Duration) {
        self.0
            .iter()
            .for_each(|o| o.finished(task, outcome, ran_for));
    }

    pub(crate) fn settled(&self, count: usize) {
        self.0.iter().for_each(|o| o.settled(count));
    }

    /// Tells the observers that `task`, a workflow node's (from
    /// `envelope`'s workflow header), starts at `at`; nothing for a plain
    /// task.
    pub(crate) fn workflow_node_running(
        &self,
        task: &TaskInfo<'_>,
        envelope: &Envelope,
        at: Timestamp,
    ) {
        if self.0.is_empty() {
            return;
        }
        if let Some((workflow, node)) = envelope.workflow_node() {
            self.0
                .iter()
                .for_each(|o| o.workflow_node_running(task, workflow, &node, at));
        }
    }

    pub(crate) fn workflow_node_started(&self, task: &TaskInfo<'_>, waited: Option<Duration>) {
        self.0
            .iter()
            .for_each(|o| o.workflow_node_started(task, waited));
    }

    pub(crate) fn workflow_node_settled(&self, settlement: &NodeSettlement, settled: &Settled) {
        self.0
            .iter()
            .for_each(|o| o.workflow_node_settled(settlement, settled));
    }

    pub(crate) fn workflow_swept(&self, report: &SweepReport) {
        self.0.iter().for_each(|o| o.workflow_swept(report));
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} observers", self.0.len())
    }
}

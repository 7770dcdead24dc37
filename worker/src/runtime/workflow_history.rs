//! Workflow history: the worker writes what its nodes do to the job store.
//!
//! Redis holds a workflow's live state; the store keeps its history for
//! `spoolctl workflow list|show` and dashboards once Redis lets a finished
//! workflow go (see `spool_broker::store::workflows`). This worker records,
//! for the nodes it runs:
//!
//! - a node's attempt starting (`running`, with its start time);
//! - a node settling (succeeded, failed, dead-lettered, revoked, expired;
//!   attempts, finish time, output summary, error);
//! - the nodes its settlement made ready (`waiting` becomes `queued`);
//! - the children a node added at run time: their task records (`queued`,
//!   arguments redacted) and their node records;
//! - the workflow's end when its settlement ended it (state, failed node,
//!   reason), with every node's final state, the dependents the failure
//!   policy cancelled included.
//!
//! The hooks ([`HistoryObserver`], an [`Observer`]) only queue an event;
//! one background writer batches them into the store, off the settle path:
//! the store is history, Redis is the truth, so a store that fails never
//! holds up or fails a settlement. A transient failure is retried a few
//! times, then the batch is dropped with a warning (counted in
//! [`HistoryWriter::failed_writes`]-style logs: each dropped write logs
//! once). Every write is idempotent and forward-only (the node record's
//! task id and revision guard it), so a redelivered node, a repeated
//! settlement or events arriving late never produce a second record or
//! move one back.
//!
//! Where the worker lacks what a write needs (a node that settled without
//! running here: revoked or expired before it started, or a cancelled
//! workflow's node), it reads the workflow's live state from the broker
//! and brings the records in line with it
//! ([`JobStore::sync_workflow`](spool_broker::store::JobStore::sync_workflow)).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use spool_broker::store::{NewJob, NodeRecordState, NodeTransition};
use spool_broker::workflow::{
    DynamicChildren, NodeName, NodeOutcome, NodeSettlement, Settled, WorkflowId, WorkflowState,
    WorkflowStatus,
};
use spool_broker::{Broker, QueueName, TaskId, Timestamp};
use tokio::sync::mpsc;
use tracing::warn;

use super::store::Store;
use crate::observer::{Observer, TaskInfo};

/// The most events written in one batch.
const BATCH: usize = 1024;

/// How many times a write that failed transiently is tried in all.
const TRIES: u32 = 4;

/// The first pause before trying a failed write again (doubled each time).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The most runs whose task name and queue are remembered between their
/// start and their settlement; past it the memory is cleared (a settlement
/// without them reads the live state instead).
const MAX_REMEMBERED: usize = 16_384;

/// Something that happened to a node, on its way to the writer.
#[derive(Debug)]
enum Event {
    /// An attempt started.
    Running(NodeTransition),
    /// A node was settled by this worker.
    Settled {
        settlement: Box<NodeSettlement>,
        settled: Settled,
        at: Timestamp,
    },
}

/// The hooks that feed the writer: registered as an observer of the
/// runtime when the worker has a job store.
#[derive(Debug)]
pub(crate) struct HistoryObserver {
    events: mpsc::UnboundedSender<Event>,
}

impl Observer for HistoryObserver {
    fn workflow_node_running(
        &self,
        task: &TaskInfo<'_>,
        workflow: WorkflowId,
        node: &NodeName,
        at: Timestamp,
    ) {
        let transition = NodeTransition {
            workflow,
            node: node.clone(),
            task_id: task.id,
            task: task.name.to_owned(),
            queue: task.queue.clone(),
            state: NodeRecordState::Running,
            attempts: task.attempt,
            at,
            output: None,
            error: None,
        };
        let _ = self.events.send(Event::Running(transition));
    }

    fn workflow_node_settled(&self, settlement: &NodeSettlement, settled: &Settled) {
        if matches!(settled, Settled::Unknown) {
            // A stale run (the node has another task id now) or a workflow
            // Redis no longer knows: nothing of it belongs in the history.
            return;
        }
        let _ = self.events.send(Event::Settled {
            settlement: Box::new(settlement.clone()),
            settled: settled.clone(),
            at: Timestamp::now(),
        });
    }
}

/// Starts the writer: returns the observer to register and the writer's
/// task, which ends once every observer clone is dropped and the events
/// left are written.
pub(crate) fn start<B: Broker>(
    broker: B,
    store: Store,
) -> (HistoryObserver, tokio::task::JoinHandle<()>) {
    let (events, received) = mpsc::unbounded_channel();
    let writer = HistoryWriter {
        broker,
        store,
        runs: HashMap::new(),
        finished_synced: HashSet::new(),
    };
    let task = tokio::spawn(writer.run(received));
    (HistoryObserver { events }, task)
}

/// What one batch of events writes, in this order.
#[derive(Default)]
struct Plan {
    /// Task records of dynamic children.
    tasks: Vec<NewJob>,
    /// Dynamic children's node records: the workflow, the spawner, the
    /// children, the nodes made ready, when.
    added: Vec<(
        WorkflowId,
        NodeName,
        DynamicChildren,
        Vec<NodeName>,
        Timestamp,
    )>,
    /// Node starts and settlements.
    transitions: Vec<NodeTransition>,
    /// Nodes made ready, per workflow.
    ready: Vec<(WorkflowId, Vec<NodeName>, Timestamp)>,
    /// Workflows ended by a settlement here.
    finished: Vec<(WorkflowId, WorkflowState, Timestamp)>,
    /// Workflows to bring in line with their live state.
    sync: Vec<WorkflowId>,
    /// Settlements to record once the live state is read.
    unresolved: Vec<Unresolved>,
}

/// A settlement the worker cannot record on its own: its task name and
/// queue (and, for one the broker had settled before, the node's state)
/// come from the live state.
struct Unresolved {
    /// The settlement as the worker saw it (no task name or queue).
    transition: NodeTransition,
    /// Whether the node's state is the live one rather than the
    /// settlement's: a cancel or the deadline settled it first.
    live_state: bool,
}

impl Unresolved {
    /// The transition to record, given the live state; `None` when the
    /// node has another task now (a retry) or is not settled.
    fn resolve(self, status: &WorkflowStatus) -> Option<NodeTransition> {
        let mut t = self.transition;
        let node = status.node(t.node.as_str())?;
        if node.task_id != t.task_id || !node.state.is_terminal() {
            return None;
        }
        t.task.clone_from(&node.task);
        t.queue = node.queue.clone();
        if self.live_state {
            t.state = node.state.into();
            t.error.clone_from(&node.error);
        }
        if t.state != NodeRecordState::Succeeded {
            t.output = None;
        }
        Some(t)
    }
}

impl Plan {
    fn sync(&mut self, workflow: WorkflowId) {
        if !self.sync.contains(&workflow) {
            self.sync.push(workflow);
        }
    }
}

struct HistoryWriter<B> {
    broker: B,
    store: Store,
    /// Task name and queue of the runs started here and not yet settled:
    /// a settlement carries neither.
    runs: HashMap<TaskId, (String, QueueName)>,
    /// Workflows synced after they finished: the later settlements of
    /// their revoked nodes (a cancel) have nothing new to say.
    finished_synced: HashSet<WorkflowId>,
}

impl<B: Broker> HistoryWriter<B> {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut batch = Vec::with_capacity(BATCH);
        while events.recv_many(&mut batch, BATCH).await > 0 {
            let plan = self.plan(batch.drain(..));
            self.write(plan).await;
        }
    }

    /// Turns events into writes.
    fn plan(&mut self, events: impl Iterator<Item = Event>) -> Plan {
        let mut plan = Plan::default();
        for event in events {
            match event {
                Event::Running(transition) => {
                    if self.runs.len() >= MAX_REMEMBERED {
                        self.runs.clear();
                    }
                    self.runs.insert(
                        transition.task_id,
                        (transition.task.clone(), transition.queue.clone()),
                    );
                    plan.transitions.push(transition);
                }
                Event::Settled {
                    settlement,
                    settled,
                    at,
                } => self.plan_settled(&mut plan, *settlement, settled, at),
            }
        }
        plan
    }

    fn plan_settled(
        &mut self,
        plan: &mut Plan,
        mut settlement: NodeSettlement,
        settled: Settled,
        at: Timestamp,
    ) {
        let workflow = settlement.workflow;
        let identity = self.runs.remove(&settlement.task_id);
        let succeeded = settlement.outcome == NodeOutcome::Succeeded;
        let recorded_now = matches!(settled, Settled::Recorded { .. });
        if let Settled::Recorded {
            ready, finished, ..
        } = settled
        {
            if succeeded && !settlement.children.is_empty() {
                plan.tasks.extend(
                    settlement
                        .children
                        .all()
                        .map(|child| NewJob::from_envelope(&child.envelope)),
                );
                plan.added.push((
                    workflow,
                    settlement.node.clone(),
                    std::mem::take(&mut settlement.children),
                    ready.clone(),
                    at,
                ));
            }
            if !ready.is_empty() {
                plan.ready.push((workflow, ready, at));
            }
            if !succeeded {
                // The failure policy may have cancelled dependents.
                plan.sync(workflow);
            }
            if let Some(state) = finished {
                self.finished_synced.remove(&workflow);
                plan.finished.push((workflow, state, at));
                plan.sync(workflow);
            }
        } else {
            // Settled before: by a cancel or the workflow's deadline (the
            // run was revoked, or finished just too late), or a repeat.
            // Whoever ended the workflow may have had no store; the live
            // state says how the node and the workflow ended.
            plan.sync(workflow);
        }
        let transition = NodeTransition {
            workflow,
            node: settlement.node,
            task_id: settlement.task_id,
            task: String::new(),
            queue: QueueName::DEFAULT,
            state: settlement.outcome.state().into(),
            attempts: settlement.attempts,
            at,
            output: settlement.output,
            error: settlement.error,
        };
        match identity {
            Some((task, queue)) if recorded_now => plan.transitions.push(NodeTransition {
                task,
                queue,
                ..transition
            }),
            // Not recorded now (the live state decides the node's state),
            // or never started here (revoked, expired or dead-lettered
            // before its handler ran: the live state has its task's name
            // and queue).
            _ => {
                plan.sync(workflow);
                plan.unresolved.push(Unresolved {
                    transition,
                    live_state: !recorded_now,
                });
            }
        }
    }

    /// Writes a plan; failures are logged and dropped.
    async fn write(&mut self, plan: Plan) {
        let store = &self.store;
        if !plan.tasks.is_empty() {
            patiently("record the tasks of dynamic children", || {
                store.record_child_tasks(&plan.tasks)
            })
            .await;
        }
        for (workflow, spawner, children, ready, at) in &plan.added {
            patiently("record the nodes of dynamic children", || {
                store.record_nodes_added(*workflow, spawner, children, ready, *at)
            })
            .await;
        }
        // Readiness before starts: a child's start in this batch came
        // after its parent's settlement.
        for (workflow, ready, at) in &plan.ready {
            patiently("record ready workflow nodes", || {
                store.record_nodes_ready(*workflow, ready, *at)
            })
            .await;
        }
        if !plan.transitions.is_empty() {
            patiently("record workflow node transitions", || {
                store.record_node_transitions(&plan.transitions)
            })
            .await;
        }
        for (workflow, state, at) in &plan.finished {
            patiently("record a finished workflow", || {
                store.record_workflow_finished(*workflow, state, *at)
            })
            .await;
        }
        let mut unresolved = plan.unresolved;
        for &workflow in &plan.sync {
            let status = match self.broker.workflow_status(workflow).await {
                Ok(Some(status)) => status,
                // Redis let it go: nothing live to bring the records to.
                Ok(None) => continue,
                Err(e) => {
                    warn!(%workflow, error = %e,
                        "cannot read a workflow's live state; its history misses what the \
                         worker did not see itself");
                    continue;
                }
            };
            let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut unresolved)
                .into_iter()
                .partition(|u| u.transition.workflow == workflow);
            unresolved = others;
            let resolved: Vec<NodeTransition> = mine
                .into_iter()
                .filter_map(|u| u.resolve(&status))
                .collect();
            if !resolved.is_empty() {
                patiently("record workflow node transitions", || {
                    store.record_node_transitions(&resolved)
                })
                .await;
            }
            if status.state.is_finished() && self.finished_synced.contains(&workflow) {
                // Synced since it finished: nothing new to bring.
                continue;
            }
            let synced = patiently("record a workflow's state", || {
                store.sync_workflow(&status, Timestamp::now())
            })
            .await;
            if synced && status.state.is_finished() {
                if self.finished_synced.len() >= MAX_REMEMBERED {
                    self.finished_synced.clear();
                }
                self.finished_synced.insert(workflow);
            }
        }
    }
}

/// Runs a store write, trying a transient failure again a few times with
/// backoff; says whether it was written. A write that cannot be made is
/// logged and dropped: the history misses it, the workflow does not.
async fn patiently<F, Fut>(what: &str, mut write: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = spool_broker::Result<()>>,
{
    let mut delay = FIRST_BACKOFF;
    for tried in 1..=TRIES {
        match write().await {
            Ok(()) => return true,
            Err(e) if e.is_transient() && tried < TRIES => {
                warn!(error = %e, "could not {what}; trying again in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                warn!(error = %e, "could not {what}; the workflow history misses it");
                return false;
            }
        }
    }
    false
}

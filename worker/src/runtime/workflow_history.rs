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
    NodeName, NodeOutcome, NodeSettlement, Settled, WorkflowId, WorkflowState,
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
    /// Node starts and settlements.
    transitions: Vec<NodeTransition>,
    /// Nodes made ready, per workflow.
    ready: Vec<(WorkflowId, Vec<NodeName>, Timestamp)>,
    /// Workflows ended by a settlement here.
    finished: Vec<(WorkflowId, WorkflowState, Timestamp)>,
    /// Workflows to bring in line with their live state.
    sync: Vec<WorkflowId>,
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
        settlement: NodeSettlement,
        settled: Settled,
        at: Timestamp,
    ) {
        let workflow = settlement.workflow;
        let identity = self.runs.remove(&settlement.task_id);
        let succeeded = settlement.outcome == NodeOutcome::Succeeded;
        let recorded_now = matches!(settled, Settled::Recorded { .. });
        if let Settled::Recorded { ready, finished } = settled {
            if succeeded && !settlement.children.is_empty() {
                plan.tasks.extend(
                    settlement
                        .children
                        .all()
                        .map(|child| NewJob::from_envelope(&child.envelope)),
                );
                // The store learns the children, and the spawner's
                // dependents' new parent (the join), from the live graph.
                plan.sync(workflow);
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
        } else if !succeeded && !self.finished_synced.contains(&workflow) {
            // Settled before: a node revoked by a cancel or expired by the
            // workflow's deadline. Whoever ended the workflow may have had
            // no store; the live state says how it ended.
            plan.sync(workflow);
        }
        match identity {
            Some((task, queue)) => plan.transitions.push(NodeTransition {
                workflow,
                node: settlement.node,
                task_id: settlement.task_id,
                task,
                queue,
                state: settlement.outcome.state().into(),
                attempts: settlement.attempts,
                at,
                output: settlement.output,
                error: settlement.error,
            }),
            // It never started here (revoked, expired or dead-lettered
            // before its handler ran): the live state has its outcome.
            None if recorded_now || !succeeded => plan.sync(workflow),
            None => {}
        }
    }

    /// Writes a plan; failures are logged and dropped.
    async fn write(&mut self, plan: Plan) {
        let store = &self.store;
        if !plan.tasks.is_empty() {
            patiently("record the tasks of dynamic children", || {
                store.record_enqueued(&plan.tasks)
            })
            .await;
        }
        if !plan.transitions.is_empty() {
            patiently("record workflow node transitions", || {
                store.record_node_transitions(&plan.transitions)
            })
            .await;
        }
        for (workflow, ready, at) in &plan.ready {
            patiently("record ready workflow nodes", || {
                store.record_nodes_ready(*workflow, ready, *at)
            })
            .await;
        }
        for (workflow, state, at) in &plan.finished {
            patiently("record a finished workflow", || {
                store.record_workflow_finished(*workflow, state, *at)
            })
            .await;
        }
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

//! Workflows in memory, with the semantics of `broker/lua/wf_*.lua`: the
//! same steps, each under the broker's workflow lock instead of in a
//! script.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{MutexGuard, PoisonError};
use std::time::Duration;

use crate::broker::Broker;
use crate::envelope::{DEFAULT_MAX_ENVELOPE_BYTES, Envelope, TaskId, Timestamp};
use crate::error::{Error, Result};
use crate::signing;
use crate::workflow::{
    DynamicChildren, Edge, EdgePolicy, NodeContext, NodeName, NodeOutcome, NodeSettlement,
    NodeState, NodeStatus, ParentResult, REVOKE_TTL, Settled, SweepReport, UNIT_OUTPUT, WorkflowId,
    WorkflowSpec, WorkflowState, WorkflowStatus,
};

use super::MemoryBroker;

/// Every workflow of a [`MemoryBroker`], and the deduplication marks of
/// enqueued nodes.
#[derive(Debug, Default)]
pub(super) struct Workflows {
    graphs: HashMap<WorkflowId, Graph>,
    /// The index of live workflows, by creation time.
    index: HashMap<WorkflowId, Timestamp>,
    /// Task ids of nodes enqueued already.
    enqueued: HashSet<TaskId>,
}

#[derive(Debug)]
struct Node {
    id: TaskId,
    envelope: Envelope,
    state: NodeState,
    parents: Vec<Edge>,
    children: Vec<(NodeName, EdgePolicy)>,
    pending: usize,
    output: Option<Vec<u8>>,
    error: Option<String>,
    attempts: u32,
}

#[derive(Debug)]
struct Graph {
    state: WorkflowState,
    created: Timestamp,
    finished: Option<Timestamp>,
    deadline: Option<Timestamp>,
    max_nodes: usize,
    order: Vec<NodeName>,
    nodes: HashMap<NodeName, Node>,
    settled: usize,
    failed: Option<(NodeName, String)>,
    /// Ready nodes not dispatched yet, with when they became ready.
    outbox: BTreeMap<NodeName, Timestamp>,
}

impl Graph {
    fn node(&mut self, name: &NodeName) -> Result<&mut Node> {
        self.nodes
            .get_mut(name)
            .ok_or_else(|| Error::Backend(format!("workflow node {name} is missing").into()))
    }

    fn add(&mut self, name: NodeName, envelope: Envelope, parents: Vec<Edge>) {
        let pending = parents.len();
        self.order.push(name.clone());
        self.nodes.insert(
            name,
            Node {
                id: envelope.id,
                envelope,
                state: NodeState::Waiting,
                parents,
                children: Vec::new(),
                pending,
                output: None,
                error: None,
                attempts: 0,
            },
        );
    }

    /// Why `children` cannot be added, if they cannot.
    fn refuse(&self, children: &DynamicChildren) -> Option<String> {
        let adding = children.all().count();
        if self.nodes.len() + adding > self.max_nodes {
            return Some(format!(
                "its {adding} dynamic children would take the workflow over its limit of {} nodes",
                self.max_nodes
            ));
        }
        children
            .all()
            .find(|c| self.nodes.contains_key(&c.name))
            .map(|c| {
                format!(
                    "dynamic child {} has the name of a node of the workflow",
                    c.name
                )
            })
    }

    /// Adds a node's dynamic children, as `wf_settle.lua` does.
    fn add_children(&mut self, workflow: WorkflowId, spawner: &NodeName, added: &DynamicChildren) {
        let prepared =
            |name: &NodeName, envelope: &Envelope| envelope.for_node(workflow, name, false);
        let fail_edge = |parent: &NodeName| Edge {
            parent: parent.clone(),
            policy: EdgePolicy::Fail,
        };
        let mut edges = Vec::new();
        for child in &added.nodes {
            self.add(
                child.name.clone(),
                prepared(&child.name, &child.envelope),
                vec![fail_edge(spawner)],
            );
            edges.push((child.name.clone(), EdgePolicy::Fail));
        }
        let old_children = self
            .nodes
            .get_mut(spawner)
            .map(|n| std::mem::take(&mut n.children))
            .unwrap_or_default();
        let spawner_children = if let Some(join) = &added.join {
            let envelope = prepared(&join.name, &join.envelope);
            if added.nodes.is_empty() {
                self.add(join.name.clone(), envelope, vec![fail_edge(spawner)]);
                edges.push((join.name.clone(), EdgePolicy::Fail));
            } else {
                let parents = added
                    .nodes
                    .iter()
                    .map(|c| Edge {
                        parent: c.name.clone(),
                        policy: added.join_policy,
                    })
                    .collect();
                self.add(join.name.clone(), envelope, parents);
                for child in &added.nodes {
                    if let Some(node) = self.nodes.get_mut(&child.name) {
                        node.children = vec![(join.name.clone(), added.join_policy)];
                    }
                }
            }
            // The join takes over the spawner's dependents.
            for (child, _) in &old_children {
                if let Some(node) = self.nodes.get_mut(child) {
                    for edge in &mut node.parents {
                        if edge.parent == *spawner {
                            edge.parent = join.name.clone();
                        }
                    }
                }
            }
            if let Some(node) = self.nodes.get_mut(&join.name) {
                node.children = old_children;
            }
            edges
        } else {
            edges.extend(old_children);
            edges
        };
        if let Some(node) = self.nodes.get_mut(spawner) {
            node.children = spawner_children;
        }
    }

    /// Frees or cancels the dependents of `settled`, transitively; returns
    /// how many nodes were cancelled and which became ready.
    fn propagate(&mut self, settled: NodeName, now: Timestamp) -> (usize, Vec<NodeName>) {
        let mut cancelled = 0;
        let mut ready = Vec::new();
        let mut work = vec![settled];
        while let Some(parent) = work.pop() {
            let Some(node) = self.nodes.get(&parent) else {
                continue;
            };
            let (parent_state, children) = (node.state, node.children.clone());
            let ok = parent_state == NodeState::Succeeded;
            let mut counts = !ok && children.is_empty();
            for (child, policy) in children {
                if !ok && policy != EdgePolicy::Ignore {
                    counts = true;
                }
                let Some(node) = self.nodes.get_mut(&child) else {
                    continue;
                };
                if node.state != NodeState::Waiting {
                    continue;
                }
                if ok || policy != EdgePolicy::Fail {
                    node.pending = node.pending.saturating_sub(1);
                    if node.pending == 0 {
                        node.state = NodeState::Queued;
                        self.outbox.insert(child.clone(), now);
                        ready.push(child);
                    }
                } else {
                    node.state = NodeState::Cancelled;
                    node.error = Some(format!("cancelled: parent {parent} {parent_state}"));
                    cancelled += 1;
                    work.push(child);
                }
            }
            if counts && self.failed.is_none() {
                let reason = self
                    .nodes
                    .get(&parent)
                    .and_then(|n| n.error.clone())
                    .unwrap_or_else(|| parent_state.to_string());
                self.failed = Some((parent, reason));
            }
        }
        (cancelled, ready)
    }

    /// Ends the workflow if every node is settled.
    fn finish_if_done(&mut self, now: Timestamp) -> Option<WorkflowState> {
        if self.settled < self.nodes.len() {
            return None;
        }
        self.state = match &self.failed {
            Some((node, reason)) => WorkflowState::Failed {
                node: node.clone(),
                reason: reason.clone(),
            },
            None => WorkflowState::Succeeded,
        };
        self.finished = Some(now);
        Some(self.state.clone())
    }

    /// Ends a running workflow early, as `wf_cancel.lua`; returns the task
    /// ids of its queued nodes.
    fn end(&mut self, deadline: bool, now: Timestamp) -> Vec<TaskId> {
        let (state, why) = if deadline {
            (NodeState::Expired, "the workflow deadline passed")
        } else {
            (NodeState::Cancelled, "the workflow was cancelled")
        };
        let mut queued = Vec::new();
        let mut first_open = None;
        for name in &self.order {
            let Some(node) = self.nodes.get_mut(name) else {
                continue;
            };
            if node.state.is_terminal() {
                continue;
            }
            if node.state == NodeState::Queued {
                queued.push(node.id);
            }
            first_open.get_or_insert_with(|| name.clone());
            node.state = state;
            node.error = Some(why.to_owned());
            self.settled += 1;
        }
        self.outbox.clear();
        self.finished = Some(now);
        self.state = if deadline {
            let (node, reason) = self.failed.clone().unwrap_or_else(|| {
                (
                    first_open.unwrap_or_else(|| NodeName::trusted(String::new())),
                    why.to_owned(),
                )
            });
            self.failed = Some((node.clone(), reason.clone()));
            WorkflowState::Failed { node, reason }
        } else {
            WorkflowState::Cancelled
        };
        queued
    }
}

impl MemoryBroker {
    fn workflows(&self) -> MutexGuard<'_, Workflows> {
        self.workflows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn wf_submit(&self, spec: &WorkflowSpec) -> Result<()> {
        spec.validate()?;
        let mut envelopes = Vec::with_capacity(spec.nodes.len());
        for node in &spec.nodes {
            let envelope = node
                .envelope
                .for_node(spec.id, &node.name, node.parents.is_empty());
            signing::check_for_enqueue(&envelope, None, DEFAULT_MAX_ENVELOPE_BYTES)?;
            envelopes.push(envelope);
        }
        let now = Timestamp::now();
        {
            let mut workflows = self.workflows();
            if workflows.graphs.contains_key(&spec.id) {
                return Err(Error::WorkflowExists(spec.id));
            }
            let mut graph = Graph {
                state: WorkflowState::Running,
                created: now,
                finished: None,
                deadline: spec.deadline,
                max_nodes: spec.max_nodes,
                order: Vec::new(),
                nodes: HashMap::new(),
                settled: 0,
                failed: None,
                outbox: BTreeMap::new(),
            };
            for (node, envelope) in spec.nodes.iter().zip(envelopes) {
                graph.add(node.name.clone(), envelope, node.parents.clone());
            }
            for node in &spec.nodes {
                for edge in &node.parents {
                    graph
                        .node(&edge.parent)?
                        .children
                        .push((node.name.clone(), edge.policy));
                }
                if node.parents.is_empty() {
                    graph.node(&node.name)?.state = NodeState::Queued;
                    graph.outbox.insert(node.name.clone(), now);
                }
            }
            workflows.graphs.insert(spec.id, graph);
            workflows.index.insert(spec.id, now);
        }
        // Written is submitted: roots left in the outbox by a failed
        // dispatch are the sweeper's.
        if let Err(e) = self.wf_dispatch(spec.id).await {
            tracing::warn!(workflow = %spec.id, error = %e, "cannot enqueue the workflow's roots yet; the sweeper will");
        }
        Ok(())
    }

    pub(super) async fn wf_settle(&self, settlement: &NodeSettlement) -> Result<Settled> {
        let settlement = &*settlement.admitted(|children| {
            for child in children.all() {
                // As stored and enqueued: with its workflow header, as the
                // Redis broker checks it.
                let envelope = child
                    .envelope
                    .for_node(settlement.workflow, &child.name, false);
                signing::check_for_enqueue(&envelope, None, DEFAULT_MAX_ENVELOPE_BYTES)?;
            }
            Ok(())
        });
        let now = Timestamp::now();
        let mut workflows = self.workflows();
        let Some(graph) = workflows.graphs.get_mut(&settlement.workflow) else {
            return Ok(Settled::Unknown);
        };
        match graph.nodes.get(&settlement.node) {
            Some(node) if node.id == settlement.task_id => {
                if node.state != NodeState::Queued {
                    return Ok(Settled::Already);
                }
            }
            _ => return Ok(Settled::Unknown),
        }
        let mut outcome = settlement.outcome;
        let mut error = settlement.error.clone();
        if outcome == NodeOutcome::Succeeded && !settlement.children.is_empty() {
            match graph.refuse(&settlement.children) {
                Some(refusal) => {
                    outcome = NodeOutcome::Failed;
                    error = Some(refusal);
                }
                None => {
                    graph.add_children(settlement.workflow, &settlement.node, &settlement.children);
                }
            }
        }
        let node = graph.node(&settlement.node)?;
        node.state = outcome.state();
        node.attempts = settlement.attempts;
        node.error = error.filter(|e| !e.is_empty());
        if outcome == NodeOutcome::Succeeded {
            node.output = Some(
                settlement
                    .output
                    .clone()
                    .unwrap_or_else(|| UNIT_OUTPUT.to_vec()),
            );
        }
        let (cancelled, ready) = graph.propagate(settlement.node.clone(), now);
        graph.settled += 1 + cancelled;
        let finished = graph.finish_if_done(now);
        Ok(Settled::Recorded {
            outboxed: !ready.is_empty(),
            ready,
            finished,
        })
    }

    pub(super) async fn wf_dispatch(&self, workflow: WorkflowId) -> Result<usize> {
        self.wf_dispatch_before(workflow, Timestamp::from_millis(u64::MAX / 2))
            .await
    }

    async fn wf_dispatch_before(&self, workflow: WorkflowId, cutoff: Timestamp) -> Result<usize> {
        let entries: Vec<(NodeName, Envelope)> = {
            let mut workflows = self.workflows();
            let Some(graph) = workflows.graphs.get_mut(&workflow) else {
                return Ok(0);
            };
            let names: Vec<NodeName> = graph
                .outbox
                .iter()
                .filter(|(_, at)| **at <= cutoff)
                .map(|(name, _)| name.clone())
                .collect();
            let mut entries = Vec::new();
            for name in names {
                match graph.nodes.get(&name) {
                    Some(node) if node.state == NodeState::Queued => {
                        let mut envelope = node.envelope.clone();
                        envelope.id = node.id;
                        entries.push((name, envelope));
                    }
                    _ => {
                        graph.outbox.remove(&name);
                    }
                }
            }
            entries
        };
        let mut enqueued = 0;
        for (_, envelope) in &entries {
            let fresh = self.workflows().enqueued.insert(envelope.id);
            if fresh {
                self.enqueue(std::slice::from_ref(envelope)).await?;
                enqueued += 1;
            }
        }
        crate::workflow::fail_point("workflow-after-enqueue-before-outbox-removal")?;
        if let Some(graph) = self.workflows().graphs.get_mut(&workflow) {
            for (name, _) in &entries {
                graph.outbox.remove(name);
            }
        }
        Ok(enqueued)
    }

    pub(super) async fn wf_context(
        &self,
        workflow: WorkflowId,
        node: &NodeName,
    ) -> Result<Option<NodeContext>> {
        let workflows = self.workflows();
        let Some(graph) = workflows.graphs.get(&workflow) else {
            return Ok(None);
        };
        let Some(this) = graph.nodes.get(node) else {
            return Ok(None);
        };
        let parents = this
            .parents
            .iter()
            .filter_map(|edge| {
                let parent = graph.nodes.get(&edge.parent)?;
                Some(ParentResult {
                    name: edge.parent.clone(),
                    state: parent.state,
                    output: parent.output.clone(),
                    error: parent.error.clone(),
                })
            })
            .collect();
        Ok(Some(NodeContext {
            state: this.state,
            task_id: this.id,
            output: this.output.clone(),
            error: this.error.clone(),
            parents,
        }))
    }

    pub(super) async fn wf_status(&self, workflow: WorkflowId) -> Result<Option<WorkflowStatus>> {
        let workflows = self.workflows();
        let Some(graph) = workflows.graphs.get(&workflow) else {
            return Ok(None);
        };
        let nodes = graph
            .order
            .iter()
            .filter_map(|name| {
                let node = graph.nodes.get(name)?;
                Some(NodeStatus {
                    name: name.clone(),
                    task_id: node.id,
                    task: node.envelope.name.clone(),
                    queue: node.envelope.queue.clone(),
                    state: node.state,
                    attempts: node.attempts,
                    has_output: node.output.is_some(),
                    error: node.error.clone(),
                    parents: node.parents.clone(),
                })
            })
            .collect();
        Ok(Some(WorkflowStatus {
            id: workflow,
            state: graph.state.clone(),
            created_at: graph.created,
            finished_at: graph.finished,
            deadline: graph.deadline,
            nodes,
        }))
    }

    async fn wf_end(&self, workflow: WorkflowId, deadline: bool) -> Result<bool> {
        let now = Timestamp::now();
        let queued = {
            let mut workflows = self.workflows();
            let Some(graph) = workflows.graphs.get_mut(&workflow) else {
                return Err(Error::UnknownWorkflow(workflow));
            };
            if graph.state.is_finished() || (deadline && graph.deadline.is_none_or(|d| d > now)) {
                return Ok(false);
            }
            let queued = graph.end(deadline, now);
            // A cancel stays in the index until a sweep drops and counts it.
            if deadline {
                workflows.index.remove(&workflow);
            }
            queued
        };
        for id in queued {
            self.revoke(id, REVOKE_TTL).await?;
        }
        Ok(true)
    }

    pub(super) async fn wf_cancel(&self, workflow: WorkflowId) -> Result<bool> {
        self.wf_end(workflow, false).await
    }

    pub(super) async fn wf_retry(&self, workflow: WorkflowId) -> Result<usize> {
        let now = Timestamp::now();
        let reset = {
            let mut workflows = self.workflows();
            let Some(graph) = workflows.graphs.get_mut(&workflow) else {
                return Err(Error::UnknownWorkflow(workflow));
            };
            if !graph.state.is_finished() {
                return Err(Error::WorkflowConflict {
                    id: workflow,
                    reason: "it is still running: cancel it, or wait for it to finish".into(),
                });
            }
            let mut reset = Vec::new();
            for name in &graph.order {
                if let Some(node) = graph.nodes.get_mut(name)
                    && node.state != NodeState::Succeeded
                {
                    node.state = NodeState::Waiting;
                    node.id = TaskId::new();
                    node.output = None;
                    node.error = None;
                    node.attempts = 0;
                    reset.push(name.clone());
                }
            }
            for name in &reset {
                let pending = graph.nodes.get(name).map_or(0, |node| {
                    node.parents
                        .iter()
                        .filter(|e| {
                            graph
                                .nodes
                                .get(&e.parent)
                                .is_none_or(|p| p.state != NodeState::Succeeded)
                        })
                        .count()
                });
                if let Some(node) = graph.nodes.get_mut(name) {
                    node.pending = pending;
                    if pending == 0 {
                        node.state = NodeState::Queued;
                        graph.outbox.insert(name.clone(), now);
                    }
                }
            }
            graph.settled -= reset.len();
            graph.state = WorkflowState::Running;
            graph.finished = None;
            graph.failed = None;
            workflows.index.insert(workflow, now);
            reset.len()
        };
        if let Err(e) = self.wf_dispatch(workflow).await {
            tracing::warn!(%workflow, error = %e, "cannot enqueue the retried nodes yet; the sweeper will");
        }
        Ok(reset)
    }

    pub(super) async fn wf_sweep(&self, grace: Duration) -> Result<SweepReport> {
        let now = Timestamp::now();
        let cutoff = Timestamp::from_millis(
            now.as_millis()
                .saturating_sub(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX)),
        );
        let mut report = SweepReport::default();
        let live: Vec<WorkflowId> = self.workflows().index.keys().copied().collect();
        for id in live {
            report.checked += 1;
            let (finished, cancelled, past_deadline, overdue) = {
                let workflows = self.workflows();
                match workflows.graphs.get(&id) {
                    None => (true, false, false, false),
                    Some(graph) => (
                        graph.state.is_finished(),
                        graph.state == WorkflowState::Cancelled,
                        graph.deadline.is_some_and(|d| d <= now),
                        graph.outbox.values().any(|at| *at <= cutoff),
                    ),
                }
            };
            if finished {
                // Only the sweep whose removal takes it out counts it.
                if self.workflows().index.remove(&id).is_some() {
                    report.dropped += 1;
                    if cancelled {
                        report.cancelled += 1;
                    }
                }
            } else if past_deadline {
                if self.wf_end(id, true).await? {
                    report.expired += 1;
                }
            } else if overdue {
                report.redispatched += self.wf_dispatch_before(id, cutoff).await?;
            }
        }
        Ok(report)
    }
}

//! The workflow types every transport shares.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::{Envelope, TaskId, Timestamp};
use crate::error::{Error, Result};
use crate::queue::QueueName;

use super::{MAX_NODE_NAME_LEN, WORKFLOW_HEADER, WORKFLOW_ROOT_HEADER};

/// A workflow's unique id: a UUIDv7, so ids sort by creation time, like
/// [`TaskId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(Uuid);

impl WorkflowId {
    /// A fresh id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    #[must_use]
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for WorkflowId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for WorkflowId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for WorkflowId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| Error::decode("workflow id", e))
    }
}

/// The name of a node, unique within its workflow: 1 to
/// [`MAX_NODE_NAME_LEN`] bytes of ASCII letters, digits and `_ - . :`
/// (so it can sit in a header, a Redis hash field and a terminal column
/// unescaped).
///
/// # Examples
///
/// ```
/// use spool_broker::workflow::NodeName;
///
/// let name: NodeName = "encode-720p".parse()?;
/// assert_eq!(name.as_str(), "encode-720p");
/// assert!("no spaces".parse::<NodeName>().is_err());
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Checks and wraps `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWorkflow`] naming what is wrong with it.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > MAX_NODE_NAME_LEN {
            Some("it is longer than 128 bytes")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            Some("only ASCII letters, digits and `_ - . :` are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidWorkflow(format!(
                "invalid node name {name:?}: {reason}"
            ))),
            None => Ok(Self(name)),
        }
    }

    /// A name read back from the broker, which only holds checked ones.
    pub(crate) fn trusted(name: String) -> Self {
        Self(name)
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = Error;

    fn try_from(name: String) -> Result<Self> {
        Self::new(name)
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> Self {
        name.0
    }
}

impl FromStr for NodeName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What a child does when its parent does not succeed (fails for good, is
/// dead-lettered, revoked, expires or is cancelled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgePolicy {
    /// The child is cancelled, and so are its own dependents through their
    /// edges' policies; the workflow ends failed naming the parent. The
    /// default.
    #[default]
    Fail,
    /// The child runs anyway and sees the parent's failure (its
    /// `ctx.parent` is an error); the workflow still ends failed naming
    /// the parent.
    Continue,
    /// The child runs anyway, and the parent's failure does not fail the
    /// workflow.
    Ignore,
}

impl EdgePolicy {
    /// The policy in a word: `fail`, `continue` or `ignore`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Continue => "continue",
            Self::Ignore => "ignore",
        }
    }

    /// The policy for a word from [`EdgePolicy::as_str`].
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Fail, Self::Continue, Self::Ignore]
            .into_iter()
            .find(|p| p.as_str() == code)
    }
}

impl fmt::Display for EdgePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An edge from a parent: the child runs after `parent` settles, as
/// `policy` says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Edge {
    /// The parent node.
    pub parent: NodeName,
    /// What the child does when the parent does not succeed.
    pub policy: EdgePolicy,
}

/// One node of a [`WorkflowSpec`]: a task, prepared as an envelope with its
/// own queue, priority, attempts and time limit, and its parents.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// The node's name, unique in the workflow.
    pub name: NodeName,
    /// The node's task. Its id is the node's task id; the broker adds the
    /// [`WORKFLOW_HEADER`] header when it enqueues it.
    pub envelope: Envelope,
    /// The nodes it runs after; none for a root.
    pub parents: Vec<Edge>,
}

/// A whole workflow as submitted: every node, its parents, and an optional
/// deadline. Checked by [`WorkflowSpec::validate`] before anything is
/// written.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSpec {
    /// The workflow's id.
    pub id: WorkflowId,
    /// The nodes, in any order.
    pub nodes: Vec<NodeSpec>,
    /// When unfinished nodes are expired and the workflow fails. Default:
    /// none.
    pub deadline: Option<Timestamp>,
    /// The most nodes the graph may hold, dynamic children included.
    /// Default: [`DEFAULT_MAX_NODES`](super::DEFAULT_MAX_NODES).
    pub max_nodes: usize,
}

impl WorkflowSpec {
    /// An empty workflow with a fresh id, no deadline and the default node
    /// limit.
    #[must_use]
    pub fn new() -> Self {
        Self {
            id: WorkflowId::new(),
            nodes: Vec::new(),
            deadline: None,
            max_nodes: super::DEFAULT_MAX_NODES,
        }
    }
}

impl Default for WorkflowSpec {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeState {
    /// Some parent has not settled yet.
    Waiting,
    /// Its parents settled and it is enqueued (or being enqueued from the
    /// outbox); it may be running. The broker does not track runs: the
    /// job store and task events do.
    Queued,
    /// It ran and succeeded.
    Succeeded,
    /// It failed on its last allowed attempt (or was stopped by its time
    /// limit).
    Failed,
    /// It was dead-lettered (bad payload, unknown task, too many
    /// deliveries...).
    DeadLettered,
    /// It was revoked.
    Revoked,
    /// It expired before it ran, or the workflow's deadline passed.
    Expired,
    /// It never ran: a parent's failure cancelled it, or the workflow was
    /// cancelled.
    Cancelled,
}

impl NodeState {
    /// Every state, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::Waiting,
        Self::Queued,
        Self::Succeeded,
        Self::Failed,
        Self::DeadLettered,
        Self::Revoked,
        Self::Expired,
        Self::Cancelled,
    ];

    /// The state in a word, as stored.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state for a word from [`NodeState::as_str`].
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == code)
    }

    /// Whether the node is settled for good (until a retry of the
    /// workflow).
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Waiting | Self::Queued)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a workflow stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[non_exhaustive]
pub enum WorkflowState {
    /// Some node is not settled yet.
    Running,
    /// Every node settled, and no failure counts against the workflow.
    Succeeded,
    /// Every node settled, and `node` failed first (under an edge policy
    /// other than `ignore`, or as a leaf), or the deadline passed.
    Failed {
        /// The node whose failure failed the workflow.
        node: NodeName,
        /// Why, in words.
        reason: String,
    },
    /// The workflow was cancelled.
    Cancelled,
}

impl WorkflowState {
    /// Whether the workflow is over (until it is retried).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        !matches!(self, Self::Running)
    }

    /// The state in a word: `running`, `succeeded`, `failed` or
    /// `cancelled`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { node, reason } => write!(f, "failed at {node}: {reason}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// One node as [`Broker::workflow_status`](crate::Broker::workflow_status)
/// sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub name: NodeName,
    /// Its current task id (a retry of the workflow gives rerun nodes a
    /// new one).
    pub task_id: TaskId,
    /// The task's wire name.
    pub task: String,
    /// The queue it runs on.
    pub queue: QueueName,
    /// Where it stands.
    pub state: NodeState,
    /// How many runs its settled outcome took (0 until it settles).
    pub attempts: u32,
    /// Whether its output is stored (a succeeded node's result).
    pub has_output: bool,
    /// Its error, for a node that did not succeed.
    pub error: Option<String>,
    /// Its parents.
    pub parents: Vec<Edge>,
}

/// A workflow and every node's state, read in one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStatus {
    /// The workflow.
    pub id: WorkflowId,
    /// How it stands.
    pub state: WorkflowState,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it finished, if it did.
    pub finished_at: Option<Timestamp>,
    /// Its deadline, if it has one.
    pub deadline: Option<Timestamp>,
    /// Every node, in submission order, dynamic children last.
    pub nodes: Vec<NodeStatus>,
}

impl WorkflowStatus {
    /// The node named `name`.
    #[must_use]
    pub fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }

    /// The nodes no other node depends on: the workflow's final nodes.
    #[must_use]
    pub fn leaves(&self) -> Vec<&NodeStatus> {
        self.nodes
            .iter()
            .filter(|n| {
                !self
                    .nodes
                    .iter()
                    .any(|m| m.parents.iter().any(|e| e.parent == n.name))
            })
            .collect()
    }

    /// How many nodes are in `state`.
    #[must_use]
    pub fn count(&self, state: NodeState) -> usize {
        self.nodes.iter().filter(|n| n.state == state).count()
    }
}

/// How a node's run ended for good: what the worker settles it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeOutcome {
    /// The handler succeeded.
    Succeeded,
    /// The handler failed on its last allowed attempt.
    Failed,
    /// The delivery was dead-lettered.
    DeadLettered,
    /// The task was revoked.
    Revoked,
    /// The task expired before it ran.
    Expired,
}

impl NodeOutcome {
    /// The node state this outcome leaves.
    #[must_use]
    pub const fn state(self) -> NodeState {
        match self {
            Self::Succeeded => NodeState::Succeeded,
            Self::Failed => NodeState::Failed,
            Self::DeadLettered => NodeState::DeadLettered,
            Self::Revoked => NodeState::Revoked,
            Self::Expired => NodeState::Expired,
        }
    }
}

/// A node added at run time by its parent (see [`DynamicChildren`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicNode {
    /// Its name, new in the workflow.
    pub name: NodeName,
    /// Its task.
    pub envelope: Envelope,
}

/// Children a running node adds to its workflow, committed by the
/// settlement of its success and only by it (a retried or redelivered run
/// never leaves a second set).
///
/// Each of `nodes` runs after the spawning node (with the default edge
/// policy, which cannot bite: they are only added when it succeeded). The
/// `join`, if any, runs after all of them with `join_policy`, and takes
/// over the spawning node's own dependents: they now run after the join
/// (with their edge policies unchanged). Without a join, the dependents
/// run as soon as the spawning node succeeds, beside the new children.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DynamicChildren {
    /// The new children.
    pub nodes: Vec<DynamicNode>,
    /// The node that joins them.
    pub join: Option<DynamicNode>,
    /// The policy of the edges from the children to the join.
    pub join_policy: EdgePolicy,
}

impl DynamicChildren {
    /// Whether nothing is added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.join.is_none()
    }

    /// The new nodes, join last.
    pub fn all(&self) -> impl Iterator<Item = &DynamicNode> {
        self.nodes.iter().chain(self.join.as_ref())
    }
}

/// The encoded unit value (MessagePack nil): the output of a task whose
/// output is `()`, and the output a success without one reads back as.
pub(crate) const UNIT_OUTPUT: &[u8] = &[0xc0];

/// What a worker reports when a node's task reaches a final outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSettlement {
    /// The workflow.
    pub workflow: WorkflowId,
    /// The node.
    pub node: NodeName,
    /// The task id of the run being settled: a run from before a retry of
    /// the workflow (whose node now has another id) settles nothing.
    pub task_id: TaskId,
    /// How it ended.
    pub outcome: NodeOutcome,
    /// How many runs it took.
    pub attempts: u32,
    /// The error, for an outcome other than success.
    pub error: Option<String>,
    /// The encoded output of a success. A success without one reads back
    /// as the unit output (the encoded `()`), as every broker stores it.
    pub output: Option<Vec<u8>>,
    /// Children to add, applied only with [`NodeOutcome::Succeeded`].
    pub children: DynamicChildren,
}

/// What [`Broker::settle_node`](crate::Broker::settle_node) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settled {
    /// The outcome was recorded now; `ready` are the nodes that became
    /// ready, and `finished` the workflow's end state if this settlement
    /// ended it.
    Recorded {
        /// Nodes that became ready: in the outbox, or enqueued already in
        /// this same step (see `outboxed`).
        ready: Vec<NodeName>,
        /// Whether any of `ready` waits in the outbox for a
        /// [`dispatch_outboxes`](crate::Broker::dispatch_outboxes); the
        /// others were added to their queues by this step itself (see
        /// [`RedisConfig::atomic_workflow_enqueue`](crate::RedisConfig::atomic_workflow_enqueue)).
        outboxed: bool,
        /// The workflow's state if it just finished.
        finished: Option<WorkflowState>,
    },
    /// The node had settled already (a redelivered or repeated
    /// settlement): nothing changed.
    Already,
    /// The workflow does not exist (it expired, or was never submitted),
    /// or the node's task id is not this one (a stale run from before a
    /// retry): nothing changed.
    Unknown,
}

/// What a node's handler needs before it runs, read in one round trip by
/// [`Broker::node_context`](crate::Broker::node_context).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeContext {
    /// The node's state.
    pub state: NodeState,
    /// The node's current task id.
    pub task_id: TaskId,
    /// The node's own encoded output, once it succeeded with one.
    pub output: Option<Vec<u8>>,
    /// The node's own error, once it settled without success.
    pub error: Option<String>,
    /// Each parent's result, in the order of its edges.
    pub parents: Vec<ParentResult>,
}

impl NodeContext {
    /// Whether a delivery of task `task_id` for this node should run: the
    /// node is not settled and the task is the node's current one.
    #[must_use]
    pub fn should_run(&self, task_id: TaskId) -> bool {
        !self.state.is_terminal() && self.task_id == task_id
    }

    /// The parent named `name`.
    #[must_use]
    pub fn parent(&self, name: &str) -> Option<&ParentResult> {
        self.parents.iter().find(|p| p.name.as_str() == name)
    }
}

/// A parent's result as its child sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentResult {
    /// The parent.
    pub name: NodeName,
    /// How it ended.
    pub state: NodeState,
    /// Its encoded output, if it succeeded with one.
    pub output: Option<Vec<u8>>,
    /// Its error, if it did not succeed.
    pub error: Option<String>,
}

/// What one [`Broker::sweep_workflows`](crate::Broker::sweep_workflows)
/// pass repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Live workflows looked at.
    pub checked: usize,
    /// Outbox entries dispatched by the sweeper (a settler died before it
    /// dispatched them, or failed to).
    pub redispatched: usize,
    /// Workflows failed because their deadline passed.
    pub expired: usize,
    /// Index entries dropped: finished workflows, and entries whose
    /// workflow was never written (a submit that died half-way).
    pub dropped: usize,
    /// Of those dropped, workflows a cancel ended: a cancel leaves its
    /// workflow in the index for the sweeper, and exactly one sweep (the
    /// one whose removal took it out) counts it, however many run at once.
    pub cancelled: usize,
}

impl Envelope {
    /// The workflow and node this task is a node of, from its
    /// [`WORKFLOW_HEADER`] header; `None` for a plain task (or an
    /// unreadable header).
    #[must_use]
    pub fn workflow_node(&self) -> Option<(WorkflowId, NodeName)> {
        let value = self.headers.get(WORKFLOW_HEADER)?;
        let (id, node) = value.split_once('/')?;
        Some((id.parse().ok()?, node.parse().ok()?))
    }

    /// Marks this envelope as node `node` of workflow `workflow`.
    pub fn set_workflow_node(&mut self, workflow: WorkflowId, node: &NodeName) {
        self.headers
            .insert(WORKFLOW_HEADER.to_owned(), format!("{workflow}/{node}"));
    }

    /// Whether this task is a workflow node without parents, as submitted:
    /// its first delivery needs no context read before it runs.
    #[must_use]
    pub fn is_workflow_root(&self) -> bool {
        self.headers.get(WORKFLOW_ROOT_HEADER).map(String::as_str) == Some("1")
    }

    /// The bytes of [`Self::for_node`]'s envelope, encoded without copying
    /// this one (a submit encodes every node's).
    pub(crate) fn encode_for_node(
        &self,
        workflow: WorkflowId,
        node: &NodeName,
        root: bool,
    ) -> crate::error::Result<Vec<u8>> {
        let value = format!("{workflow}/{node}");
        // In key order: the root mark's name extends the workflow header's.
        let headers = [
            (WORKFLOW_HEADER, value.as_str()),
            (WORKFLOW_ROOT_HEADER, "1"),
        ];
        self.encode_with_headers(if root { &headers } else { &headers[..1] })
    }

    /// The envelope node `node` of `workflow` is stored and enqueued
    /// with: this one with the [`WORKFLOW_HEADER`] header set, and marked a
    /// root when `root` (the node has no parents).
    pub(crate) fn for_node(&self, workflow: WorkflowId, node: &NodeName, root: bool) -> Self {
        let mut envelope = self.clone();
        envelope.set_workflow_node(workflow, node);
        if root {
            envelope
                .headers
                .insert(WORKFLOW_ROOT_HEADER.to_owned(), "1".to_owned());
        }
        envelope
    }
}

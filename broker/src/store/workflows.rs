//! Workflow history in the job store: one record per workflow and one per
//! node (migration 0003), next to the task records.
//!
//! Redis holds a workflow's live state ([`Broker::workflow_status`]); the
//! store keeps what happened, for `spoolctl workflow list|show` and
//! dashboards, after Redis has let a finished workflow go.
//!
//! # The recording API
//!
//! - [`JobStore::record_workflow_submitted`]: the producer, right after
//!   [`Broker::submit_workflow`] succeeded: the workflow and every node
//!   (roots `queued`, the others `waiting`), after recording every node's
//!   task with [`JobStore::record_enqueued`] (`queued`, even while the node
//!   waits: the node record says it waits).
//! - [`JobStore::record_node_transitions`]: the worker, as nodes move:
//!   [`NodeTransition::for_envelope`] when an attempt starts (`running`),
//!   [`NodeTransition::settled`] with the [`NodeSettlement`] it settles a
//!   node with (timings, attempts, output summary, error), and
//!   `queued` for the children a settlement made ready.
//! - [`JobStore::record_nodes_ready`]: the worker, for the nodes its
//!   settlement made ready (`waiting` becomes `queued`; nothing else moves).
//! - [`JobStore::record_rerun_tasks`]: `spoolctl workflow retry`, after the
//!   retry and before the sync: each rerun node's new task gets a record
//!   copied from its last run's.
//! - [`JobStore::record_workflow_finished`]: the worker whose settlement
//!   ended the workflow ([`Settled::Recorded`]'s `finished`), followed by
//!   [`JobStore::sync_workflow`], which also records the nodes that the
//!   failure cancelled on the way (a settlement reports only its own node
//!   and the ones it made ready).
//! - [`JobStore::sync_workflow`]: anyone holding a fresh
//!   [`WorkflowStatus`] (after a cancel, a retry, a settlement that added
//!   dynamic children, or `spoolctl workflow show`): brings the records in
//!   line with it, adding the nodes the store lacks.
//!
//! Every write is idempotent and order-tolerant, like the task records: a
//! node write applies only for the node's current task id (a run from
//! before a retry of the workflow changes nothing) and only if its
//! revision, `attempts * 4 + stage` (waiting 0, queued 1, running 2,
//! settled 3), is at least the stored one. Only [`JobStore::sync_workflow`]
//! replaces a node's task id (a retried node starts a fresh record).
//!
//! [`Broker::workflow_status`]: crate::Broker::workflow_status
//! [`JobStore::record_workflow_submitted`]: super::JobStore::record_workflow_submitted
//! [`JobStore::record_node_transitions`]: super::JobStore::record_node_transitions
//! [`JobStore::record_workflow_finished`]: super::JobStore::record_workflow_finished
//! [`JobStore::record_nodes_ready`]: super::JobStore::record_nodes_ready
//! [`JobStore::record_enqueued`]: super::JobStore::record_enqueued
//! [`JobStore::record_rerun_tasks`]: super::JobStore::record_rerun_tasks
//! [`JobStore::sync_workflow`]: super::JobStore::sync_workflow
//! [`Broker::submit_workflow`]: crate::Broker::submit_workflow
//! [`Settled::Recorded`]: crate::workflow::Settled::Recorded
//! [`WorkflowStatus`]: crate::workflow::WorkflowStatus

use std::fmt;
use std::str::FromStr;

use crate::envelope::{Envelope, TaskId, Timestamp};
use crate::error::{Error, Result};
use crate::queue::QueueName;
#[cfg(feature = "store")]
use crate::workflow::EdgePolicy;
use crate::workflow::{Edge, NodeName, NodeSettlement, NodeState, WorkflowId, WorkflowState};

/// The longest output summary kept in a node record, in characters: the
/// output as JSON, cut here. The whole output stays in the node's task
/// record.
pub const OUTPUT_SUMMARY_LEN: usize = 200;

/// The default number of workflows [`JobStore::list_workflows`] returns:
/// 50.
///
/// [`JobStore::list_workflows`]: super::JobStore::list_workflows
pub const DEFAULT_WORKFLOW_LIMIT: usize = 50;

/// Where a node stands in its record: the broker's [`NodeState`] plus
/// `running`, which only the worker sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NodeRecordState {
    /// Some parent has not settled yet.
    Waiting,
    /// Enqueued, not started.
    Queued,
    /// An attempt runs.
    Running,
    /// It succeeded.
    Succeeded,
    /// It failed for good.
    Failed,
    /// It was dead-lettered.
    DeadLettered,
    /// It was revoked.
    Revoked,
    /// It expired, or the workflow's deadline passed.
    Expired,
    /// It never ran: cancelled by a parent's failure or with the workflow.
    Cancelled,
}

impl NodeRecordState {
    /// Every state, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::Waiting,
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::DeadLettered,
        Self::Revoked,
        Self::Expired,
        Self::Cancelled,
    ];

    /// The state in a word, as stored (the broker's words, and `running`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the node is settled (until a retry of the workflow).
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Waiting | Self::Queued | Self::Running)
    }

    #[cfg(feature = "store")]
    /// The stage part of a revision: waiting 0, queued 1, running 2,
    /// settled 3.
    const fn stage(self) -> i64 {
        match self {
            Self::Waiting => 0,
            Self::Queued => 1,
            Self::Running => 2,
            _ => 3,
        }
    }
}

impl From<NodeState> for NodeRecordState {
    fn from(state: NodeState) -> Self {
        match state {
            NodeState::Waiting => Self::Waiting,
            NodeState::Queued => Self::Queued,
            NodeState::Succeeded => Self::Succeeded,
            NodeState::Failed => Self::Failed,
            NodeState::DeadLettered => Self::DeadLettered,
            NodeState::Revoked => Self::Revoked,
            NodeState::Expired => Self::Expired,
            // `NodeState` is non-exhaustive; what a later broker adds is
            // settled in its own words only once this enum learns it.
            _ => Self::Cancelled,
        }
    }
}

impl fmt::Display for NodeRecordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeRecordState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| Error::decode("node state", format!("unknown node state {s:?}")))
    }
}

/// How a workflow stands in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WorkflowRecordStatus {
    /// Some node is not settled.
    Running,
    /// It succeeded.
    Succeeded,
    /// It failed (see the record's `failed_node` and `error`).
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl WorkflowRecordStatus {
    /// Every status, in declaration order.
    pub const ALL: [Self; 4] = [
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The status in a word, as stored.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status of a broker's [`WorkflowState`].
    #[must_use]
    pub fn of(state: &WorkflowState) -> Self {
        match state {
            WorkflowState::Running => Self::Running,
            WorkflowState::Succeeded => Self::Succeeded,
            WorkflowState::Cancelled => Self::Cancelled,
            _ => Self::Failed,
        }
    }
}

impl fmt::Display for WorkflowRecordStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkflowRecordStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                Error::decode("workflow status", format!("unknown workflow status {s:?}"))
            })
    }
}

/// A node moving: written by [`JobStore::record_node_transitions`].
///
/// [`JobStore::record_node_transitions`]: super::JobStore::record_node_transitions
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTransition {
    /// The workflow.
    pub workflow: WorkflowId,
    /// The node.
    pub node: NodeName,
    /// The node's task id for this run; a write for another id than the
    /// record's changes nothing.
    pub task_id: TaskId,
    /// The task's wire name (for a record the store does not have yet).
    pub task: String,
    /// The task's queue (likewise).
    pub queue: QueueName,
    /// Where the node now stands.
    pub state: NodeRecordState,
    /// Runs so far: the attempt that starts for `running`, the runs the
    /// outcome took for a settled state, 0 before any run.
    pub attempts: u32,
    /// When it happened.
    pub at: Timestamp,
    /// The encoded output of a success (MessagePack); only its size and a
    /// summary are kept.
    pub output: Option<Vec<u8>>,
    /// What went wrong, for a settled state other than success.
    pub error: Option<String>,
}

impl NodeTransition {
    /// The transition of the workflow node `envelope` is (from its
    /// workflow header) to `state` at `at`, with `attempts` set to the
    /// envelope's attempt; `None` for a plain task.
    #[must_use]
    pub fn for_envelope(
        envelope: &Envelope,
        state: NodeRecordState,
        at: Timestamp,
    ) -> Option<Self> {
        let (workflow, node) = envelope.workflow_node()?;
        Some(Self {
            workflow,
            node,
            task_id: envelope.id,
            task: envelope.name.clone(),
            queue: envelope.queue.clone(),
            state,
            attempts: envelope.attempt,
            at,
            output: None,
            error: None,
        })
    }

    /// The transition a worker's settlement makes, for the node's task
    /// `envelope`: state, attempts, output and error from `settlement`.
    #[must_use]
    pub fn settled(envelope: &Envelope, settlement: &NodeSettlement, at: Timestamp) -> Self {
        Self {
            workflow: settlement.workflow,
            node: settlement.node.clone(),
            task_id: settlement.task_id,
            task: envelope.name.clone(),
            queue: envelope.queue.clone(),
            state: settlement.outcome.state().into(),
            attempts: settlement.attempts,
            at,
            output: settlement.output.clone(),
            error: settlement.error.clone(),
        }
    }

    #[cfg(feature = "store")]
    /// The revision of this write: `attempts * 4 + stage`.
    pub(crate) fn revision(&self) -> i64 {
        revision(self.attempts, self.state)
    }
}

#[cfg(feature = "store")]
pub(crate) fn revision(attempts: u32, state: NodeRecordState) -> i64 {
    i64::from(attempts) * 4 + state.stage()
}

/// Which workflows [`JobStore::list_workflows`] returns, newest first.
///
/// [`JobStore::list_workflows`]: super::JobStore::list_workflows
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowQuery {
    /// Only these statuses; all when empty. Default: empty.
    pub statuses: Vec<WorkflowRecordStatus>,
    /// At most this many. Default: [`DEFAULT_WORKFLOW_LIMIT`].
    pub limit: usize,
}

impl Default for WorkflowQuery {
    fn default() -> Self {
        Self {
            statuses: Vec::new(),
            limit: DEFAULT_WORKFLOW_LIMIT,
        }
    }
}

/// A workflow's record. [`JobStore::workflow`] fills `nodes`;
/// [`JobStore::list_workflows`] leaves it empty.
///
/// [`JobStore::workflow`]: super::JobStore::workflow
/// [`JobStore::list_workflows`]: super::JobStore::list_workflows
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRecord {
    /// The workflow.
    pub id: WorkflowId,
    /// How it stands.
    pub status: WorkflowRecordStatus,
    /// How many nodes it has (dynamic children included, once recorded).
    pub node_count: u32,
    /// How many of the recorded nodes are settled.
    pub nodes_settled: u32,
    /// The node whose failure failed it.
    pub failed_node: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// How many times it ran: 1, plus one per retry.
    pub runs: u32,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When it finished, if it did.
    pub finished_at: Option<Timestamp>,
    /// Its deadline, if any.
    pub deadline: Option<Timestamp>,
    /// Its nodes, in submission order, dynamic children last.
    pub nodes: Vec<NodeRecord>,
}

/// A node's record.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// The node.
    pub name: NodeName,
    /// Its current task id (the task record has its progress and output).
    pub task_id: TaskId,
    /// The task's wire name.
    pub task: String,
    /// Its queue.
    pub queue: QueueName,
    /// Its parents.
    pub parents: Vec<Edge>,
    /// Where it stands.
    pub state: NodeRecordState,
    /// Runs so far.
    pub attempts: u32,
    /// When it was enqueued.
    pub queued_at: Option<Timestamp>,
    /// When its last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it settled.
    pub finished_at: Option<Timestamp>,
    /// The size of its encoded output, in bytes.
    pub output_bytes: Option<u64>,
    /// Its output as JSON, cut at [`OUTPUT_SUMMARY_LEN`] characters.
    pub output_summary: Option<String>,
    /// Its error.
    pub error: Option<String>,
}

#[cfg(feature = "store")]
/// Parents as stored: `name:policy` words separated by spaces.
pub(crate) fn parents_text(parents: &[Edge]) -> String {
    let words: Vec<String> = parents
        .iter()
        .map(|e| format!("{}:{}", e.parent, e.policy))
        .collect();
    words.join(" ")
}

#[cfg(feature = "store")]
/// The parents a stored text lists; node names may hold `:`, the policy
/// follows the last one.
pub(crate) fn parse_parents(text: &str) -> Result<Vec<Edge>> {
    text.split_whitespace()
        .map(|word| {
            let bad = || Error::decode("node parents", format!("bad parent {word:?}"));
            let (name, policy) = word.rsplit_once(':').ok_or_else(bad)?;
            Ok(Edge {
                parent: NodeName::new(name).map_err(|_| bad())?,
                policy: EdgePolicy::from_code(policy).ok_or_else(bad)?,
            })
        })
        .collect()
}

#[cfg(feature = "store")]
/// The summary of an encoded output: its JSON, cut at
/// [`OUTPUT_SUMMARY_LEN`] characters (with `…`).
pub(crate) fn output_summary(output: &[u8]) -> String {
    let json = super::json::msgpack_to_json(output)
        .map_or_else(|_| "(undecodable)".to_owned(), |v| v.to_string());
    match json.char_indices().nth(OUTPUT_SUMMARY_LEN) {
        Some((cut, _)) => format!("{}…", &json[..cut]),
        None => json,
    }
}

#[cfg(all(test, feature = "store"))]
mod tests {
    use super::*;

    #[test]
    fn parents_round_trip_with_colons_in_names() {
        let parents = vec![
            Edge {
                parent: NodeName::new("encode:720p").unwrap(),
                policy: EdgePolicy::Continue,
            },
            Edge {
                parent: NodeName::new("probe").unwrap(),
                policy: EdgePolicy::Fail,
            },
        ];
        let text = parents_text(&parents);
        assert_eq!(text, "encode:720p:continue probe:fail");
        assert_eq!(parse_parents(&text).unwrap(), parents);
        assert!(parse_parents("").unwrap().is_empty());
        assert!(parse_parents("probe").is_err());
    }

    #[test]
    fn summaries_are_cut() {
        let long = "x".repeat(500);
        let summary = output_summary(&crate::encode_payload(&long).unwrap());
        assert_eq!(summary.chars().count(), OUTPUT_SUMMARY_LEN + 1);
        assert!(summary.ends_with('…'));
        let short = output_summary(&crate::encode_payload(&serde_json::json!({"a": 1})).unwrap());
        assert_eq!(short, r#"{"a":1}"#);
    }

    #[test]
    fn revisions_order_the_stages() {
        use NodeRecordState as S;
        assert!(revision(0, S::Queued) < revision(1, S::Running));
        assert!(revision(1, S::Running) < revision(1, S::Failed));
        assert!(revision(1, S::Failed) < revision(2, S::Running));
        assert!(revision(0, S::Cancelled) > revision(0, S::Queued));
        for state in NodeRecordState::ALL {
            assert_eq!(state.as_str().parse::<NodeRecordState>().unwrap(), state);
        }
    }
}

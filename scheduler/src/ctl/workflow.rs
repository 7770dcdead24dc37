//! `spoolctl workflow list|show|cancel|retry`.
//!
//! `show` reads a workflow's live state from Redis
//! ([`Broker::workflow_status`]) and, with a job store, its history (run
//! times, the `running` state, progress); either alone is enough. `list`
//! reads the store only. `cancel` and `retry` act on Redis and, with a
//! store, bring its records up to date.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use spool_broker::store::{
    JobStore, NodeRecord, NodeRecordState, WorkflowQuery, WorkflowRecord, WorkflowRecordStatus,
};
use spool_broker::workflow::{Edge, NodeStatus, WorkflowId, WorkflowState, WorkflowStatus};
use spool_broker::{Broker, Progress, TaskId, Timestamp};

use super::Report;
use super::workflow_graph::draw;
use crate::error::{Error, Result};
use crate::table::{Align, Table, truncate};

/// How many workflows `workflow list` shows unless told otherwise.
pub const DEFAULT_WORKFLOWS_LIMIT: usize = 20;

/// The most workflows `workflow list` shows.
pub const MAX_WORKFLOWS_LIMIT: usize = 1000;

/// Serializes a time as RFC 3339 with milliseconds.
fn rfc3339<S: serde::Serializer>(at: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.collect_str(at),
        None => s.serialize_none(),
    }
}

fn seconds(duration: Option<Duration>) -> Option<f64> {
    duration.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

fn between(from: Option<Timestamp>, to: Option<Timestamp>) -> Option<Duration> {
    Some(to?.saturating_since(from?))
}

/// A duration for people: `850ms`, `12.3s`, `4m 5s`.
pub(crate) fn short_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// One row of `workflow list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowRow {
    /// The workflow.
    pub id: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: &'static str,
    /// Its nodes.
    pub nodes: u32,
    /// Its settled nodes.
    pub nodes_settled: u32,
    /// The node that failed it.
    pub failed_node: Option<String>,
    /// Why.
    pub error: Option<String>,
    /// 1, plus one per retry.
    pub runs: u32,
    /// When it was submitted.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: Option<Timestamp>,
    /// When it finished.
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: Option<Timestamp>,
    /// From submit to its end, or to now while it runs.
    pub duration_seconds: Option<f64>,
}

/// `workflow list`: the store's workflows, newest first. JSON: an array
/// of [`WorkflowRow`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowsReport {
    /// The rows.
    pub rows: Vec<WorkflowRow>,
}

impl Serialize for WorkflowsReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.rows)
    }
}

impl Report for WorkflowsReport {
    fn to_text(&self) -> String {
        if self.rows.is_empty() {
            return "no workflows match\n".to_owned();
        }
        let mut table = Table::new([
            ("ID", Align::Left),
            ("STATUS", Align::Left),
            ("NODES", Align::Right),
            ("CREATED", Align::Left),
            ("DURATION", Align::Right),
            ("FAILED AT", Align::Left),
        ]);
        for row in &self.rows {
            table.row([
                row.id.clone(),
                row.status.to_owned(),
                format!("{}/{}", row.nodes_settled, row.nodes),
                row.created_at.map_or_else(String::new, |t| t.to_string()),
                row.duration_seconds
                    .map_or_else(String::new, |s| short_duration(Duration::from_secs_f64(s))),
                match (&row.failed_node, &row.error) {
                    (Some(node), Some(error)) => truncate(&format!("{node}: {error}"), 60),
                    (Some(node), None) => node.clone(),
                    _ => String::new(),
                },
            ]);
        }
        table.to_string()
    }
}

fn row(record: &WorkflowRecord, now: Timestamp) -> WorkflowRow {
    let end = record
        .finished_at
        .or((record.status == WorkflowRecordStatus::Running).then_some(now));
    WorkflowRow {
        id: record.id.to_string(),
        status: record.status.as_str(),
        nodes: record.node_count,
        nodes_settled: record.nodes_settled,
        failed_node: record.failed_node.clone(),
        error: record.error.clone(),
        runs: record.runs,
        created_at: Some(record.created_at),
        finished_at: record.finished_at,
        duration_seconds: seconds(between(Some(record.created_at), end)),
    }
}

/// The store's workflows with one of `statuses` (any when empty), newest
/// first, at most `limit`.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a limit of 0 or above
/// [`MAX_WORKFLOWS_LIMIT`]; [`Error::Broker`] when the store fails.
pub async fn workflow_list(
    store: &JobStore,
    statuses: &[WorkflowRecordStatus],
    limit: usize,
) -> Result<WorkflowsReport> {
    check_limit(limit)?;
    let query = WorkflowQuery {
        statuses: statuses.to_vec(),
        limit,
    };
    let now = Timestamp::now();
    let records = store.list_workflows(&query).await?;
    Ok(WorkflowsReport {
        rows: records.iter().map(|r| row(r, now)).collect(),
    })
}

/// Checks a `workflow list` limit before connecting.
///
/// # Errors
///
/// [`Error::InvalidInput`] for 0 or above [`MAX_WORKFLOWS_LIMIT`].
pub fn check_limit(limit: usize) -> Result<()> {
    if (1..=MAX_WORKFLOWS_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "--limit must be between 1 and {MAX_WORKFLOWS_LIMIT}, not {limit}"
        )))
    }
}

/// A parent edge in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParentJson {
    /// The parent node.
    pub name: String,
    /// `fail`, `continue` or `ignore`.
    pub policy: &'static str,
}

/// A node's progress in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressJson {
    /// Percent done.
    pub percent: f32,
    /// The stage it is in.
    pub stage: Option<String>,
    /// Its last message.
    pub message: Option<String>,
}

/// One node of `workflow show`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// The node.
    pub name: String,
    /// Its current task.
    pub task_id: String,
    /// The task's wire name.
    pub task: String,
    /// Its queue.
    pub queue: String,
    /// `waiting`, `queued`, `running`, `succeeded`, `failed`,
    /// `dead_lettered`, `revoked`, `expired` or `cancelled`.
    pub state: &'static str,
    /// Runs so far.
    pub attempts: u32,
    /// Its layer: 0 for roots, else one more than its deepest parent.
    pub depth: usize,
    /// Its parents.
    pub parents: Vec<ParentJson>,
    /// When it was enqueued (from the store).
    #[serde(serialize_with = "rfc3339")]
    pub queued_at: Option<Timestamp>,
    /// When its last attempt started (from the store).
    #[serde(serialize_with = "rfc3339")]
    pub started_at: Option<Timestamp>,
    /// When it settled (from the store).
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: Option<Timestamp>,
    /// Its run time: start to end, or to now while it runs.
    pub duration_seconds: Option<f64>,
    /// Its progress while it runs (from its task record).
    pub progress: Option<ProgressJson>,
    /// Its output as JSON, cut (from the store).
    pub output_summary: Option<String>,
    /// Its error.
    pub error: Option<String>,
}

/// `workflow show`: a workflow and its graph. JSON: this, times in RFC
/// 3339 with milliseconds, durations as `_seconds` numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowReport {
    /// The workflow.
    pub id: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: &'static str,
    /// The node that failed it.
    pub failed_node: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Where the view comes from: `redis`, `store` or `redis+store`.
    pub source: &'static str,
    /// When it was submitted.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: Option<Timestamp>,
    /// When it finished.
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: Option<Timestamp>,
    /// Its deadline.
    #[serde(serialize_with = "rfc3339")]
    pub deadline: Option<Timestamp>,
    /// From submit to its end, or to now while it runs.
    pub duration_seconds: Option<f64>,
    /// How many times it ran (from the store): 1, plus one per retry.
    pub runs: Option<u32>,
    /// Node counts by state.
    pub counts: HashMap<&'static str, usize>,
    /// Every node, in submission order.
    pub nodes: Vec<NodeView>,
}

impl WorkflowReport {
    /// The exit status `workflow show` ends with: 0 succeeded, 1 failed,
    /// 4 cancelled, 6 still running (2 stays clap's usage error).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self.state {
            "succeeded" => 0,
            "cancelled" => 4,
            "running" => 6,
            _ => 1,
        }
    }
}

impl Report for WorkflowReport {
    fn to_text(&self) -> String {
        draw(self, 100)
    }
}

/// The layer of each node: 0 for roots, else one more than its deepest
/// parent (parents unknown to the graph count as roots).
pub(crate) fn depths(nodes: &[(String, Vec<String>)]) -> Vec<usize> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i))
        .collect();
    // Kahn's order, without recursion: a 10,000-node chain must not
    // overflow the stack. The broker refuses cycles; a node on one in
    // damaged data keeps depth 0.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut unsettled: Vec<usize> = vec![0; nodes.len()];
    for (i, (_, parents)) in nodes.iter().enumerate() {
        for parent in parents {
            if let Some(&p) = index.get(parent.as_str()) {
                children[p].push(i);
                unsettled[i] += 1;
            }
        }
    }
    let mut depth = vec![0; nodes.len()];
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| unsettled[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &child in &children[i] {
            depth[child] = depth[child].max(depth[i] + 1);
            unsettled[child] -= 1;
            if unsettled[child] == 0 {
                ready.push(child);
            }
        }
    }
    depth
}

fn parents_json(parents: &[Edge]) -> Vec<ParentJson> {
    parents
        .iter()
        .map(|e| ParentJson {
            name: e.parent.to_string(),
            policy: e.policy.as_str(),
        })
        .collect()
}

fn progress_json(progress: &Progress) -> ProgressJson {
    ProgressJson {
        percent: progress.percent,
        stage: progress.stage.clone(),
        message: progress.message.clone(),
    }
}

/// A node seen live (with its record, if the store has one).
fn live_node(node: &NodeStatus, record: Option<&NodeRecord>, now: Timestamp) -> NodeView {
    let record = record.filter(|r| r.task_id == node.task_id);
    let mut state = NodeRecordState::from(node.state);
    // Redis does not track runs: the store knows a queued node started.
    if let Some(r) = record
        && state == NodeRecordState::Queued
        && r.state == NodeRecordState::Running
    {
        state = NodeRecordState::Running;
    }
    let mut view = NodeView {
        name: node.name.to_string(),
        task_id: node.task_id.to_string(),
        task: node.task.clone(),
        queue: node.queue.to_string(),
        state: state.as_str(),
        attempts: node.attempts.max(record.map_or(0, |r| r.attempts)),
        depth: 0,
        parents: parents_json(&node.parents),
        queued_at: None,
        started_at: None,
        finished_at: None,
        duration_seconds: None,
        progress: None,
        output_summary: None,
        error: node.error.clone(),
    };
    if let Some(r) = record {
        fill_times(&mut view, r, state, now);
        view.output_summary.clone_from(&r.output_summary);
    }
    view
}

fn fill_times(view: &mut NodeView, r: &NodeRecord, state: NodeRecordState, now: Timestamp) {
    view.queued_at = r.queued_at;
    view.started_at = r.started_at;
    view.finished_at = r.finished_at.filter(|_| state.is_terminal());
    let end = if state.is_terminal() {
        r.finished_at
    } else {
        Some(now)
    };
    view.duration_seconds = seconds(between(r.started_at, end));
}

fn stored_node(r: &NodeRecord, now: Timestamp) -> NodeView {
    let mut view = NodeView {
        name: r.name.to_string(),
        task_id: r.task_id.to_string(),
        task: r.task.clone(),
        queue: r.queue.to_string(),
        state: r.state.as_str(),
        attempts: r.attempts,
        depth: 0,
        parents: parents_json(&r.parents),
        queued_at: None,
        started_at: None,
        finished_at: None,
        duration_seconds: None,
        progress: None,
        output_summary: r.output_summary.clone(),
        error: r.error.clone(),
    };
    fill_times(&mut view, r, r.state, now);
    view
}

/// Builds the report of workflow `id` from its live state and its record
/// (`None` when neither is there); `progress` gives a running node's progress by task id.
fn report(
    id: WorkflowId,
    live: Option<&WorkflowStatus>,
    record: Option<&WorkflowRecord>,
    progress: &HashMap<TaskId, Progress>,
    now: Timestamp,
) -> Option<WorkflowReport> {
    let stored: HashMap<&str, &NodeRecord> = record
        .map(|r| r.nodes.iter().map(|n| (n.name.as_str(), n)).collect())
        .unwrap_or_default();
    let (state, failed_node, reason, created_at, finished_at, deadline, mut nodes) = match live {
        Some(live) => {
            let (failed_node, reason) = match &live.state {
                WorkflowState::Failed { node, reason } => {
                    (Some(node.to_string()), Some(reason.clone()))
                }
                _ => (None, None),
            };
            let nodes: Vec<NodeView> = live
                .nodes
                .iter()
                .map(|n| live_node(n, stored.get(n.name.as_str()).copied(), now))
                .collect();
            (
                live.state.as_str(),
                failed_node,
                reason,
                live.created_at,
                live.finished_at,
                live.deadline,
                nodes,
            )
        }
        None => {
            let r = record?;
            (
                r.status.as_str(),
                r.failed_node.clone(),
                r.error.clone(),
                r.created_at,
                r.finished_at,
                r.deadline,
                r.nodes.iter().map(|n| stored_node(n, now)).collect(),
            )
        }
    };
    let graph: Vec<(String, Vec<String>)> = nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                n.parents.iter().map(|p| p.name.clone()).collect(),
            )
        })
        .collect();
    for (node, depth) in nodes.iter_mut().zip(depths(&graph)) {
        node.depth = depth;
        if node.state == "running"
            && let Ok(task) = node.task_id.parse::<TaskId>()
            && let Some(p) = progress.get(&task)
        {
            node.progress = Some(progress_json(p));
        }
    }
    let mut counts = HashMap::new();
    for node in &nodes {
        *counts.entry(node.state).or_insert(0) += 1;
    }
    let end = finished_at.or((state == "running").then_some(now));
    Some(WorkflowReport {
        id: id.to_string(),
        state,
        failed_node,
        reason,
        source: match (live.is_some(), record.is_some()) {
            (true, true) => "redis+store",
            (true, false) => "redis",
            _ => "store",
        },
        created_at: Some(created_at),
        finished_at,
        deadline,
        duration_seconds: seconds(between(Some(created_at), end)),
        runs: record.map(|r| r.runs),
        counts,
        nodes,
    })
}

/// Workflow `id` as Redis (live) and the store (history, when given) see
/// it.
///
/// # Errors
///
/// [`Error::UnknownWorkflow`] when neither knows it; [`Error::Broker`]
/// when Redis or the store fails.
pub async fn workflow_show<B: Broker>(
    broker: &B,
    store: Option<&JobStore>,
    id: WorkflowId,
) -> Result<WorkflowReport> {
    let live = broker.workflow_status(id).await?;
    let record = match store {
        Some(store) => store.workflow(id).await?,
        None => None,
    };
    let mut progress = HashMap::new();
    if let Some(store) = store {
        let running: Vec<TaskId> = record
            .iter()
            .flat_map(|r| &r.nodes)
            .filter(|n| n.state == NodeRecordState::Running)
            .map(|n| n.task_id)
            .collect();
        for task in running {
            if let Some(p) = store.get(task).await?.and_then(|r| r.progress) {
                progress.insert(task, p);
            }
        }
    }
    report(
        id,
        live.as_ref(),
        record.as_ref(),
        &progress,
        Timestamp::now(),
    )
    .ok_or(Error::UnknownWorkflow(id))
}

/// What `workflow cancel` or `workflow retry` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowActionReport {
    /// The workflow.
    pub id: String,
    /// `cancel` or `retry`.
    pub action: &'static str,
    /// Whether it changed anything: cancel, the workflow was running;
    /// retry, some node was reset.
    pub changed: bool,
    /// For retry: how many nodes were reset to run again.
    pub nodes_reset: usize,
    /// The workflow's state afterwards.
    pub state: &'static str,
}

impl Report for WorkflowActionReport {
    fn to_text(&self) -> String {
        match (self.action, self.changed) {
            ("cancel", true) => format!("cancelled workflow {}\n", self.id),
            ("cancel", false) => {
                format!("workflow {} was not running ({})\n", self.id, self.state)
            }
            (_, true) => format!(
                "retrying workflow {}: {} node{} to run again\n",
                self.id,
                self.nodes_reset,
                if self.nodes_reset == 1 { "" } else { "s" }
            ),
            (_, false) => format!("workflow {} had nothing to retry\n", self.id),
        }
    }
}

/// Brings the store's records in line with the live state, if there is a
/// store. A failure here is the store's: the action itself was done.
async fn sync<B: Broker>(
    broker: &B,
    store: Option<&JobStore>,
    id: WorkflowId,
) -> Result<&'static str> {
    let Some(status) = broker.workflow_status(id).await? else {
        return Err(Error::UnknownWorkflow(id));
    };
    if let Some(store) = store {
        store.sync_workflow(&status, Timestamp::now()).await?;
    }
    Ok(status.state.as_str())
}

/// Cancels workflow `id`: its unsettled nodes are cancelled and its
/// queued and running tasks revoked (a running FFmpeg is stopped).
///
/// # Errors
///
/// [`Error::UnknownWorkflow`] when Redis does not know it (any more);
/// [`Error::Broker`] when Redis or the store fails.
pub async fn workflow_cancel<B: Broker>(
    broker: &B,
    store: Option<&JobStore>,
    id: WorkflowId,
) -> Result<WorkflowActionReport> {
    let changed = broker
        .cancel_workflow(id)
        .await
        .map_err(|e| unknown(e, id))?;
    let state = sync(broker, store, id).await?;
    Ok(WorkflowActionReport {
        id: id.to_string(),
        action: "cancel",
        changed,
        nodes_reset: 0,
        state,
    })
}

/// Retries finished workflow `id`: its failed and cancelled nodes run
/// again, its succeeded ones keep their outputs. With a store, each rerun
/// node's new task is recorded `queued` (copied from its last run's
/// record, arguments included) and the node records move to the new tasks.
///
/// # Errors
///
/// [`Error::UnknownWorkflow`] when Redis does not know it (any more);
/// [`Error::Broker`] while it runs, or when Redis or the store fails.
pub async fn workflow_retry<B: Broker>(
    broker: &B,
    store: Option<&JobStore>,
    id: WorkflowId,
) -> Result<WorkflowActionReport> {
    let reset = broker
        .retry_workflow(id)
        .await
        .map_err(|e| unknown(e, id))?;
    // The rerun nodes' new tasks get their records (copied from their
    // last runs', arguments included) before the node records move to them.
    if let (Some(store), Some(status)) = (store, broker.workflow_status(id).await?) {
        store.record_rerun_tasks(&status, Timestamp::now()).await?;
    }
    let state = sync(broker, store, id).await?;
    Ok(WorkflowActionReport {
        id: id.to_string(),
        action: "retry",
        changed: reset > 0,
        nodes_reset: reset,
        state,
    })
}

fn unknown(e: spool_broker::Error, id: WorkflowId) -> Error {
    match e {
        spool_broker::Error::UnknownWorkflow(_) => Error::UnknownWorkflow(id),
        other => Error::Broker(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        edges
            .iter()
            .map(|(n, ps)| {
                (
                    (*n).to_owned(),
                    ps.iter().map(|p| (*p).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn depth_is_the_longest_path_from_a_root() {
        let g = graph(&[
            ("package", &["encode", "probe"]),
            ("encode", &["probe"]),
            ("probe", &[]),
            ("orphan", &["gone"]),
        ]);
        assert_eq!(depths(&g), [2, 1, 0, 0]);
    }

    #[test]
    fn a_long_chain_does_not_overflow() {
        let names: Vec<String> = (0..20_000).map(|i| format!("n{i}")).collect();
        let g: Vec<(String, Vec<String>)> = names
            .iter()
            .enumerate()
            .rev()
            .map(|(i, n)| {
                (
                    n.clone(),
                    if i == 0 {
                        vec![]
                    } else {
                        vec![names[i - 1].clone()]
                    },
                )
            })
            .collect();
        let d = depths(&g);
        assert_eq!(d[0], 19_999);
        assert_eq!(d[19_999], 0);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(short_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(short_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(short_duration(Duration::from_secs(245)), "4m 5s");
    }
}

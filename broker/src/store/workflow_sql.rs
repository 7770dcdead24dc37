//! The job store's workflow writes and reads (see [`super::workflows`]).

use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::db_error::db_error;
use super::row::{attempt_code, millis, timestamp};
use super::workflows::{
    NodeRecord, NodeRecordState, NodeTransition, WorkflowQuery, WorkflowRecord,
    WorkflowRecordStatus, output_summary, parents_text, parse_parents, revision,
};
use super::{Inner, JobStore, NewJob};
use crate::envelope::{TaskId, Timestamp};
use crate::error::{Error, Result};
use crate::queue::QueueName;
use crate::workflow::{
    DynamicChildren, DynamicNode, Edge, EdgePolicy, NodeName, WorkflowId, WorkflowSpec,
    WorkflowState, WorkflowStatus,
};

/// Where nodes the store learns of from a transition alone (before any
/// sync) sort: after every submitted node.
const LATE_POSITION: i32 = 1 << 30;

const INSERT_WORKFLOW: &str = "INSERT INTO spool_workflows \
     (id, status, node_count, created_at, deadline) VALUES ($1, 'running', $2, $3, $4) \
     ON CONFLICT (id) DO NOTHING";

const INSERT_NODE: &str = "INSERT INTO spool_workflow_nodes \
     (workflow_id, name, position, task_id, task, queue, parents, state, attempts, revision, \
      queued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10) \
     ON CONFLICT (workflow_id, name) DO NOTHING";

/// A node's move: only for the node's current task id, and only forward
/// (revision at least the stored one), except that a write arriving after
/// a later one still fills the enqueue time and a start (no later than the
/// recorded end) the record lacks: a start reported after a snapshot of
/// the live state already settled the node.
const TRANSITION: &str = "INSERT INTO spool_workflow_nodes \
     (workflow_id, name, position, task_id, task, queue, state, attempts, revision, \
      queued_at, started_at, finished_at, output_bytes, output_summary, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (workflow_id, name) DO UPDATE SET \
     state = CASE WHEN excluded.revision >= spool_workflow_nodes.revision \
       THEN excluded.state ELSE spool_workflow_nodes.state END, \
     attempts = CASE WHEN excluded.revision >= spool_workflow_nodes.revision \
       THEN excluded.attempts ELSE spool_workflow_nodes.attempts END, \
     queued_at = CASE WHEN spool_workflow_nodes.queued_at IS NULL THEN excluded.queued_at \
       WHEN excluded.started_at < spool_workflow_nodes.queued_at THEN excluded.started_at \
       ELSE spool_workflow_nodes.queued_at END, \
     started_at = CASE WHEN excluded.revision >= spool_workflow_nodes.revision \
       THEN COALESCE(excluded.started_at, spool_workflow_nodes.started_at) \
       WHEN spool_workflow_nodes.started_at IS NULL AND excluded.started_at <= \
         COALESCE(spool_workflow_nodes.finished_at, excluded.started_at) \
       THEN excluded.started_at ELSE spool_workflow_nodes.started_at END, \
     finished_at = CASE WHEN excluded.revision >= spool_workflow_nodes.revision \
       THEN excluded.finished_at ELSE spool_workflow_nodes.finished_at END, \
     output_bytes = CASE WHEN excluded.revision >= spool_workflow_nodes.revision \
       THEN excluded.output_bytes ELSE spool_workflow_nodes.output_bytes END, \
     output_summary = CASE WHEN excluded.revision >= spool_workflow_nodes.revision \
       THEN excluded.output_summary ELSE spool_workflow_nodes.output_summary END, \
     error = CASE WHEN excluded.revision >= spool_workflow_nodes.revision \
       THEN excluded.error ELSE spool_workflow_nodes.error END, \
     revision = CASE WHEN excluded.revision >= spool_workflow_nodes.revision \
       THEN excluded.revision ELSE spool_workflow_nodes.revision END \
     WHERE spool_workflow_nodes.task_id = excluded.task_id";

/// A node as a status snapshot shows it: a new task id starts a fresh
/// record (a retried node); the same one moves forward only, and an
/// enqueue time the record lacks is the snapshot's, or its start if that
/// was earlier (a node is never queued after it started).
const SYNC_NODE: &str = "INSERT INTO spool_workflow_nodes \
     (workflow_id, name, position, task_id, task, queue, parents, state, attempts, revision, \
      queued_at, finished_at, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (workflow_id, name) DO UPDATE SET \
     position = excluded.position, \
     parents = excluded.parents, \
     state = excluded.state, \
     attempts = excluded.attempts, \
     revision = excluded.revision, \
     queued_at = CASE WHEN spool_workflow_nodes.task_id <> excluded.task_id \
       THEN excluded.queued_at \
       WHEN spool_workflow_nodes.queued_at IS NOT NULL THEN spool_workflow_nodes.queued_at \
       WHEN spool_workflow_nodes.started_at < excluded.queued_at \
       THEN spool_workflow_nodes.started_at \
       ELSE excluded.queued_at END, \
     started_at = CASE WHEN spool_workflow_nodes.task_id <> excluded.task_id \
       THEN NULL ELSE spool_workflow_nodes.started_at END, \
     finished_at = CASE WHEN spool_workflow_nodes.task_id <> excluded.task_id \
       THEN excluded.finished_at \
       ELSE COALESCE(spool_workflow_nodes.finished_at, excluded.finished_at) END, \
     output_bytes = CASE WHEN spool_workflow_nodes.task_id <> excluded.task_id \
       THEN NULL ELSE spool_workflow_nodes.output_bytes END, \
     output_summary = CASE WHEN spool_workflow_nodes.task_id <> excluded.task_id \
       THEN NULL ELSE spool_workflow_nodes.output_summary END, \
     error = excluded.error, \
     task_id = excluded.task_id \
     WHERE spool_workflow_nodes.task_id <> excluded.task_id \
     OR excluded.revision >= spool_workflow_nodes.revision";

const SYNC_WORKFLOW: &str = "INSERT INTO spool_workflows \
     (id, status, node_count, failed_node, error, created_at, finished_at, deadline) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (id) DO UPDATE SET \
     runs = spool_workflows.runs + CASE WHEN spool_workflows.status <> 'running' \
       AND excluded.status = 'running' THEN 1 ELSE 0 END, \
     status = excluded.status, \
     node_count = excluded.node_count, \
     failed_node = excluded.failed_node, \
     error = excluded.error, \
     finished_at = excluded.finished_at, \
     deadline = excluded.deadline";

/// Ends a running workflow's record; a finished one keeps its end.
const FINISH_WORKFLOW: &str = "UPDATE spool_workflows SET \
     status = $1, failed_node = $2, error = $3, finished_at = $4 \
     WHERE id = $5 AND status = 'running'";

/// A node its last parent's settlement made ready: `waiting` becomes
/// `queued`, and a record without an enqueue time gets this one, or its
/// start if that was earlier (a start recorded first keeps its state: the
/// node may start before the settler that readied it records so, and is
/// never queued after it started). A repeat changes nothing.
const NODE_READY: &str = "UPDATE spool_workflow_nodes SET \
     state = CASE WHEN state = 'waiting' THEN 'queued' ELSE state END, \
     revision = CASE WHEN state = 'waiting' THEN attempts * 4 + 1 ELSE revision END, \
     queued_at = COALESCE(queued_at, CASE WHEN started_at < $3 THEN started_at ELSE $3 END) \
     WHERE workflow_id = $1 AND name = $2 AND (state = 'waiting' OR queued_at IS NULL)";

/// A node added at run time, with its parents, after the nodes the store
/// has. A record a transition created first (no parents, sorted last)
/// gets its parents, place and enqueue time (or its start, if that was
/// earlier); anything else stays.
const NODE_ADDED: &str = "INSERT INTO spool_workflow_nodes \
     (workflow_id, name, position, task_id, task, queue, parents, state, attempts, revision, \
      queued_at) VALUES ($1, $2, \
      CAST((SELECT COUNT(*) FROM spool_workflow_nodes WHERE workflow_id = $1) AS INTEGER), \
      $3, $4, $5, $6, $7, 0, $8, $9) \
     ON CONFLICT (workflow_id, name) DO UPDATE SET \
     parents = excluded.parents, \
     position = CASE WHEN spool_workflow_nodes.position = $10 THEN excluded.position \
       ELSE spool_workflow_nodes.position END, \
     queued_at = COALESCE(spool_workflow_nodes.queued_at, \
       CASE WHEN spool_workflow_nodes.started_at < excluded.queued_at \
       THEN spool_workflow_nodes.started_at ELSE excluded.queued_at END) \
     WHERE spool_workflow_nodes.task_id = excluded.task_id";

/// The task record of a node rerun by a retry of its workflow (new task
/// id `$1`), copied from its previous run's record (`$2`): name, queue,
/// priority, tenant and arguments, `queued` with no attempts. A record
/// already there (a worker recorded the rerun's start first) only gets the
/// arguments it lacks.
const RERUN_TASK: &str = "INSERT INTO spool_jobs \
     (id, name, queue, priority, tenant, status, attempts, revision, created_at, args) \
     SELECT $1, name, queue, priority, tenant, 'queued', 0, 0, $3, args \
     FROM spool_jobs WHERE id = $2 \
     ON CONFLICT (id) DO UPDATE SET args = COALESCE(spool_jobs.args, excluded.args)";

/// A task's arguments, for a record written before the producer's (a
/// worker recorded a dynamic child's start or end first).
const TASK_ARGS: &str = "UPDATE spool_jobs SET args = $1 WHERE id = $2 AND args IS NULL";

const NODE_PARENTS: &str = "SELECT name, parents FROM spool_workflow_nodes WHERE workflow_id = $1";

const SET_PARENTS: &str =
    "UPDATE spool_workflow_nodes SET parents = $1 WHERE workflow_id = $2 AND name = $3";

const NODE_TASK_IDS: &str = "SELECT name, task_id FROM spool_workflow_nodes WHERE workflow_id = $1";

/// The columns `decode_workflow` reads, `w` being the workflow table.
const WORKFLOW_COLUMNS: &str = "w.id, w.status, w.node_count, w.failed_node, w.error, w.runs, \
     w.created_at, w.finished_at, w.deadline, \
     (SELECT COUNT(*) FROM spool_workflow_nodes n WHERE n.workflow_id = w.id \
      AND n.state NOT IN ('waiting', 'queued', 'running'))";

const NODES: &str = "SELECT name, task_id, task, queue, parents, state, attempts, queued_at, \
     started_at, finished_at, output_bytes, output_summary, error \
     FROM spool_workflow_nodes WHERE workflow_id = $1 ORDER BY position, name";

fn count_code(count: usize) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// The status, failed node and error columns of a broker state.
fn state_columns(state: &WorkflowState) -> (&'static str, Option<String>, Option<String>) {
    let status = WorkflowRecordStatus::of(state).as_str();
    match state {
        WorkflowState::Failed { node, reason } => {
            (status, Some(node.to_string()), Some(reason.clone()))
        }
        _ => (status, None, None),
    }
}

impl JobStore {
    /// Records a workflow just submitted with
    /// [`Broker::submit_workflow`](crate::Broker::submit_workflow): the
    /// workflow as `running`, its roots as `queued` and its other nodes as
    /// `waiting`, in one transaction. A workflow already recorded is left
    /// as it is.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] for a transient failure (retry it),
    /// [`Error::Store`] otherwise; nothing is written then.
    pub async fn record_workflow_submitted(
        &self,
        spec: &WorkflowSpec,
        at: Timestamp,
    ) -> Result<()> {
        let what = "record a submitted workflow";
        let id = *spec.id.as_uuid();
        write_tx!(self, "record a submitted workflow", |tx| {
            sqlx::query(INSERT_WORKFLOW)
                .bind(id)
                .bind(count_code(spec.nodes.len()))
                .bind(millis(at))
                .bind(spec.deadline.map(millis))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(what, e))?;
            for (position, node) in spec.nodes.iter().enumerate() {
                let state = if node.parents.is_empty() {
                    NodeRecordState::Queued
                } else {
                    NodeRecordState::Waiting
                };
                sqlx::query(INSERT_NODE)
                    .bind(id)
                    .bind(node.name.as_str())
                    .bind(count_code(position))
                    .bind(*node.envelope.id.as_uuid())
                    .bind(node.envelope.name.as_str())
                    .bind(node.envelope.queue.as_str())
                    .bind(parents_text(&node.parents))
                    .bind(state.as_str())
                    .bind(revision(0, state))
                    .bind((state == NodeRecordState::Queued).then(|| millis(at)))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
            }
        });
        Ok(())
    }

    /// Records nodes moving (started, settled, made ready), in one
    /// transaction. A write for a task id other than the node's current one,
    /// or older than what is stored, is ignored, so transitions may arrive
    /// in any order and more than once. A node the store does not know yet
    /// is created (without its parents until [`JobStore::sync_workflow`]).
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_workflow_submitted`].
    pub async fn record_node_transitions(&self, transitions: &[NodeTransition]) -> Result<()> {
        if transitions.is_empty() {
            return Ok(());
        }
        let what = "record node transitions";
        write_tx!(self, "record node transitions", |tx| {
            for t in transitions {
                let at = Some(millis(t.at));
                let (queued_at, started_at, finished_at) = match t.state {
                    NodeRecordState::Waiting => (None, None, None),
                    NodeRecordState::Queued => (at, None, None),
                    NodeRecordState::Running => (None, at, None),
                    _ => (None, None, at),
                };
                let output = t.output.as_deref().filter(|_| t.state.is_terminal());
                sqlx::query(TRANSITION)
                    .bind(*t.workflow.as_uuid())
                    .bind(t.node.as_str())
                    .bind(LATE_POSITION)
                    .bind(*t.task_id.as_uuid())
                    .bind(t.task.as_str())
                    .bind(t.queue.as_str())
                    .bind(t.state.as_str())
                    .bind(attempt_code(t.attempts))
                    .bind(t.revision())
                    .bind(queued_at)
                    .bind(started_at)
                    .bind(finished_at)
                    .bind(output.map(|o| i64::try_from(o.len()).unwrap_or(i64::MAX)))
                    .bind(output.map(output_summary))
                    .bind(t.error.as_deref())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
            }
        });
        Ok(())
    }

    /// Records that workflow `id` ended in `state` at `at`. A record
    /// already finished keeps its end (a repeated or stale call changes
    /// nothing); a retry reopens it through [`JobStore::sync_workflow`].
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_workflow_submitted`].
    pub async fn record_workflow_finished(
        &self,
        id: WorkflowId,
        state: &WorkflowState,
        at: Timestamp,
    ) -> Result<()> {
        if !state.is_finished() {
            return Ok(());
        }
        let what = "record a finished workflow";
        let (status, failed_node, error) = state_columns(state);
        write_tx!(self, "record a finished workflow", |tx| {
            sqlx::query(FINISH_WORKFLOW)
                .bind(status)
                .bind(failed_node)
                .bind(error)
                .bind(millis(at))
                .bind(*id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(what, e))?;
        });
        Ok(())
    }

    /// Records that the nodes `ready` of `workflow` became ready (their
    /// last parent settled) at `at`: each `waiting` record becomes `queued`.
    /// A node in any other state, or one the store has no record of (a
    /// dynamic child before [`JobStore::sync_workflow`]), is left alone, so
    /// repeats change nothing.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_workflow_submitted`].
    pub async fn record_nodes_ready(
        &self,
        workflow: WorkflowId,
        ready: &[NodeName],
        at: Timestamp,
    ) -> Result<()> {
        if ready.is_empty() {
            return Ok(());
        }
        let what = "record ready nodes";
        write_tx!(self, "record ready nodes", |tx| {
            for name in ready {
                sqlx::query(NODE_READY)
                    .bind(*workflow.as_uuid())
                    .bind(name.as_str())
                    .bind(millis(at))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
            }
        });
        Ok(())
    }

    /// Records the children node `spawner` of `workflow` added at run time,
    /// committed by its success settled at `at`: each child after the
    /// spawner, the join (if any) after the children, `queued` (with `at`
    /// as its enqueue time) if named in `ready`, else `waiting`; with a
    /// join, the spawner's dependents now run after the join. Their task
    /// records are [`JobStore::record_child_tasks`]'. A repeat changes
    /// nothing.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_workflow_submitted`].
    pub async fn record_nodes_added(
        &self,
        workflow: WorkflowId,
        spawner: &NodeName,
        children: &DynamicChildren,
        ready: &[NodeName],
        at: Timestamp,
    ) -> Result<()> {
        if children.is_empty() {
            return Ok(());
        }
        let from_spawner = vec![Edge {
            parent: spawner.clone(),
            policy: EdgePolicy::Fail,
        }];
        let into_join: Vec<Edge> = children
            .nodes
            .iter()
            .map(|child| Edge {
                parent: child.name.clone(),
                policy: children.join_policy,
            })
            .collect();
        let rows: Vec<(&DynamicNode, &[Edge])> = children
            .nodes
            .iter()
            .map(|child| (child, from_spawner.as_slice()))
            .chain(
                children
                    .join
                    .iter()
                    .map(|join| (join, into_join.as_slice())),
            )
            .collect();
        let names: Vec<&NodeName> = rows.iter().map(|(node, _)| &node.name).collect();
        let what = "record nodes added at run time";
        write_tx!(self, "record nodes added at run time", |tx| {
            // With a join, the spawner's dependents now run after it.
            if let Some(join) = &children.join {
                let nodes: Vec<(String, String)> = sqlx::query_as(NODE_PARENTS)
                    .bind(*workflow.as_uuid())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
                for (name, text) in nodes {
                    if names.iter().any(|n| n.as_str() == name) {
                        continue;
                    }
                    let mut parents = parse_parents(&text)?;
                    let mut moved = false;
                    for edge in parents.iter_mut().filter(|e| e.parent == *spawner) {
                        edge.parent = join.name.clone();
                        moved = true;
                    }
                    if moved {
                        sqlx::query(SET_PARENTS)
                            .bind(parents_text(&parents))
                            .bind(*workflow.as_uuid())
                            .bind(name.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| db_error(what, e))?;
                    }
                }
            }
            for (node, parents) in &rows {
                let state = if ready.contains(&node.name) {
                    NodeRecordState::Queued
                } else {
                    NodeRecordState::Waiting
                };
                sqlx::query(NODE_ADDED)
                    .bind(*workflow.as_uuid())
                    .bind(node.name.as_str())
                    .bind(*node.envelope.id.as_uuid())
                    .bind(node.envelope.name.as_str())
                    .bind(node.envelope.queue.as_str())
                    .bind(parents_text(parents))
                    .bind(state.as_str())
                    .bind(revision(0, state))
                    .bind((state == NodeRecordState::Queued).then(|| millis(at)))
                    .bind(LATE_POSITION)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
            }
        });
        Ok(())
    }

    /// Records the tasks of children added at run time, as
    /// [`JobStore::record_enqueued`] does, and gives a record a worker
    /// wrote first (the child ran before this write) its arguments.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_enqueued`].
    pub async fn record_child_tasks(&self, jobs: &[NewJob]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.record_enqueued(jobs).await?;
        let what = "record the arguments of dynamic children";
        write_tx!(self, "record the arguments of dynamic children", |tx| {
            for job in jobs {
                let Some(args) = &job.args else {
                    continue;
                };
                sqlx::query(TASK_ARGS)
                    .bind(args.to_string())
                    .bind(*job.id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
            }
        });
        Ok(())
    }

    /// Gives every node that a retry of its workflow reran (its task id in
    /// `status` differs from its record's) a task record for its new task
    /// id, copied from its previous run's (name, queue, priority, tenant,
    /// arguments), `queued` at `at`; returns how many it wrote. Call it
    /// after [`Broker::retry_workflow`](crate::Broker::retry_workflow) and
    /// before [`JobStore::sync_workflow`], which moves the node records to
    /// the new ids. Nodes without a previous task record get none.
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_workflow_submitted`].
    pub async fn record_rerun_tasks(
        &self,
        status: &WorkflowStatus,
        at: Timestamp,
    ) -> Result<usize> {
        let what = "record rerun node tasks";
        let id = *status.id.as_uuid();
        let mut written = 0;
        write_tx!(self, "record rerun node tasks", |tx| {
            let rows: Vec<(String, Uuid)> = sqlx::query_as(NODE_TASK_IDS)
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_error(what, e))?;
            for (name, old) in rows {
                let Some(node) = status.node(&name) else {
                    continue;
                };
                if *node.task_id.as_uuid() == old {
                    continue;
                }
                let done = sqlx::query(RERUN_TASK)
                    .bind(*node.task_id.as_uuid())
                    .bind(old)
                    .bind(millis(at))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
                written += usize::try_from(done.rows_affected()).unwrap_or(0);
            }
        });
        Ok(written)
    }

    /// Brings the records of a workflow in line with a fresh snapshot of
    /// its live state, `status`, taken at `at`: creates what is missing
    /// (dynamic children, or a workflow whose submit was never recorded),
    /// gives retried nodes (a new task id) a fresh record, moves the others
    /// forward (never back: a `queued` node the store saw start stays
    /// `running`), and sets the workflow's status (a retry counts a run).
    ///
    /// # Errors
    ///
    /// As [`JobStore::record_workflow_submitted`].
    pub async fn sync_workflow(&self, status: &WorkflowStatus, at: Timestamp) -> Result<()> {
        let what = "record a workflow's state";
        let id = *status.id.as_uuid();
        let (state, failed_node, error) = state_columns(&status.state);
        write_tx!(self, "record a workflow's state", |tx| {
            sqlx::query(SYNC_WORKFLOW)
                .bind(id)
                .bind(state)
                .bind(count_code(status.nodes.len()))
                .bind(failed_node)
                .bind(error)
                .bind(millis(status.created_at))
                .bind(status.finished_at.map(millis))
                .bind(status.deadline.map(millis))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(what, e))?;
            for (position, node) in status.nodes.iter().enumerate() {
                let state = NodeRecordState::from(node.state);
                let at = Some(millis(at));
                sqlx::query(SYNC_NODE)
                    .bind(id)
                    .bind(node.name.as_str())
                    .bind(count_code(position))
                    .bind(*node.task_id.as_uuid())
                    .bind(node.task.as_str())
                    .bind(node.queue.as_str())
                    .bind(parents_text(&node.parents))
                    .bind(state.as_str())
                    .bind(attempt_code(node.attempts))
                    .bind(revision(node.attempts, state))
                    .bind(at.filter(|_| state != NodeRecordState::Waiting))
                    .bind(at.filter(|_| state.is_terminal()))
                    .bind(node.error.as_deref())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(what, e))?;
            }
        });
        Ok(())
    }

    /// The workflows `query` asks for, newest first, without their nodes.
    ///
    /// # Errors
    ///
    /// [`Error::StoreUnavailable`] for a transient failure, [`Error::Store`]
    /// otherwise, [`Error::Decode`] for a row this build cannot read.
    pub async fn list_workflows(&self, query: &WorkflowQuery) -> Result<Vec<WorkflowRecord>> {
        let mut sql = format!("SELECT {WORKFLOW_COLUMNS} FROM spool_workflows w");
        let mut n = 0;
        if !query.statuses.is_empty() {
            let marks: Vec<String> = query
                .statuses
                .iter()
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            sql.push_str(&format!(" WHERE w.status IN ({})", marks.join(", ")));
        }
        sql.push_str(&format!(
            " ORDER BY w.created_at DESC, w.id DESC LIMIT ${}",
            n + 1
        ));
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        with_pool!(self, |pool| {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for status in &query.statuses {
                q = q.bind(status.as_str());
            }
            let rows = q
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(|e| db_error("list workflows", e))?;
            rows.iter().map(decode_workflow).collect()
        })
    }

    /// The record of workflow `id` with every node's, in submission order.
    ///
    /// # Errors
    ///
    /// As [`JobStore::list_workflows`].
    pub async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>> {
        let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM spool_workflows w WHERE w.id = $1");
        with_pool!(self, |pool| {
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(*id.as_uuid())
                .fetch_optional(pool)
                .await
                .map_err(|e| db_error("read a workflow", e))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut record = decode_workflow(&row)?;
            let rows = sqlx::query(NODES)
                .bind(*id.as_uuid())
                .fetch_all(pool)
                .await
                .map_err(|e| db_error("read a workflow's nodes", e))?;
            record.nodes = rows.iter().map(decode_node).collect::<Result<_>>()?;
            Ok(Some(record))
        })
    }

    /// The workflow node whose current task is `task`, if any: the way
    /// from a task record to its workflow.
    ///
    /// # Errors
    ///
    /// As [`JobStore::list_workflows`].
    pub async fn workflow_of_task(&self, task: TaskId) -> Result<Option<(WorkflowId, NodeName)>> {
        let sql = "SELECT workflow_id, name FROM spool_workflow_nodes WHERE task_id = $1";
        let row: Option<(Uuid, String)> = with_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(*task.as_uuid())
                .fetch_optional(pool)
                .await
                .map_err(|e| db_error("find a task's workflow", e))?
        });
        row.map(|(id, name)| Ok((WorkflowId::from(id), NodeName::new(name)?)))
            .transpose()
    }
}

fn decode_workflow<R>(row: &R) -> Result<WorkflowRecord>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let bad = |e: sqlx::Error| Error::decode("workflow record", e);
    let id: Uuid = row.try_get(0).map_err(bad)?;
    let status: String = row.try_get(1).map_err(bad)?;
    let node_count: i32 = row.try_get(2).map_err(bad)?;
    let runs: i32 = row.try_get(5).map_err(bad)?;
    let time = |i: usize| -> Result<Option<Timestamp>> {
        let millis: Option<i64> = row.try_get(i).map_err(bad)?;
        Ok(millis.map(timestamp))
    };
    let settled: i64 = row.try_get(9).map_err(bad)?;
    Ok(WorkflowRecord {
        id: WorkflowId::from(id),
        status: status.parse()?,
        node_count: u32::try_from(node_count).unwrap_or(0),
        nodes_settled: u32::try_from(settled).unwrap_or(0),
        failed_node: row.try_get(3).map_err(bad)?,
        error: row.try_get(4).map_err(bad)?,
        runs: u32::try_from(runs).unwrap_or(1),
        created_at: time(6)?.unwrap_or(Timestamp::from_millis(0)),
        finished_at: time(7)?,
        deadline: time(8)?,
        nodes: Vec::new(),
    })
}

fn decode_node<R>(row: &R) -> Result<NodeRecord>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let bad = |e: sqlx::Error| Error::decode("node record", e);
    let name: String = row.try_get(0).map_err(bad)?;
    let task_id: Uuid = row.try_get(1).map_err(bad)?;
    let queue: String = row.try_get(3).map_err(bad)?;
    let parents: String = row.try_get(4).map_err(bad)?;
    let state: String = row.try_get(5).map_err(bad)?;
    let attempts: i32 = row.try_get(6).map_err(bad)?;
    let time = |i: usize| -> Result<Option<Timestamp>> {
        let millis: Option<i64> = row.try_get(i).map_err(bad)?;
        Ok(millis.map(timestamp))
    };
    let output_bytes: Option<i64> = row.try_get(10).map_err(bad)?;
    Ok(NodeRecord {
        name: NodeName::new(name)?,
        task_id: TaskId::from(task_id),
        task: row.try_get(2).map_err(bad)?,
        queue: QueueName::new(queue)?,
        parents: parse_parents(&parents)?,
        state: state.parse()?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        queued_at: time(7)?,
        started_at: time(8)?,
        finished_at: time(9)?,
        output_bytes: output_bytes.and_then(|b| u64::try_from(b).ok()),
        output_summary: row.try_get(11).map_err(bad)?,
        error: row.try_get(12).map_err(bad)?,
    })
}

//! Workflows on Redis: the scripts of `broker/lua/wf_*.lua` and the steps
//! between them. The protocol is described in [`crate::workflow`].

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use redis::{Script, Value};

use super::claim::delayed_member;
use super::{RedisBroker, map_redis, millis};
use crate::broker::Broker;
use crate::envelope::{Envelope, TaskId, Timestamp};
use crate::error::{Error, Result};
use crate::signing;
use crate::workflow::{
    DEDUP_TTL, Edge, EdgePolicy, FINISHED_RETENTION, NodeContext, NodeName, NodeSettlement,
    NodeState, NodeStatus, ParentResult, REVOKE_TTL, Settled, SweepReport, WorkflowId,
    WorkflowSpec, WorkflowState, WorkflowStatus,
};

static SUBMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_submit.lua")));
static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_settle.lua")));
static OUTBOX: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_outbox.lua")));
static ENQUEUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_enqueue.lua")));
static CONTEXT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_context.lua")));
static STATUS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_status.lua")));
static CANCEL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_cancel.lua")));
static RETRY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_retry.lua")));
static SWEEP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/wf_sweep.lua")));

/// The most outbox entries one dispatch reads at a time.
const OUTBOX_PAGE: usize = 1000;

/// How many enqueue scripts one dispatch keeps in flight.
const DISPATCH_IN_FLIGHT: usize = 64;

/// How many index entries the sweeper reads at a time.
const SWEEP_PAGE: isize = 500;

/// The keys of one workflow, all under its hash tag `{wf:<id>}`, in the
/// order every `wf_*.lua` script takes them.
struct WorkflowKeys([String; 12]);

impl WorkflowKeys {
    fn new(prefix: &str, id: WorkflowId) -> Self {
        let base = format!("{prefix}:{{wf:{id}}}");
        Self(
            [
                "meta", "order", "state", "ids", "env", "parents", "children", "pending", "out",
                "err", "att", "outbox",
            ]
            .map(|name| format!("{base}:{name}")),
        )
    }

    fn invoke<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in &self.0 {
            invocation.key(key);
        }
        invocation
    }
}

fn unexpected(what: &str, value: &Value) -> Error {
    Error::Backend(format!("unexpected reply for {what}: {value:?}").into())
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    }
}

fn into_items(value: Value, what: &str) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(unexpected(what, &other)),
    }
}

/// Edges as the scripts store them: `name policy,name policy`.
fn encode_edges<'a>(edges: impl Iterator<Item = (&'a NodeName, EdgePolicy)>) -> String {
    let mut out = String::new();
    for (name, policy) in edges {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(name.as_str());
        out.push(' ');
        out.push_str(policy.as_str());
    }
    out
}

fn decode_edges(stored: &str) -> Vec<Edge> {
    stored
        .split(',')
        .filter_map(|edge| {
            let (parent, policy) = edge.split_once(' ')?;
            Some(Edge {
                parent: parent.parse().ok()?,
                policy: EdgePolicy::from_code(policy)?,
            })
        })
        .collect()
}

fn node_state(value: &Value, what: &str) -> Result<NodeState> {
    text(value)
        .and_then(|s| NodeState::from_code(&s))
        .ok_or_else(|| unexpected(what, value))
}

/// The envelope a node's task is stored with: the workflow header set.
fn node_envelope(workflow: WorkflowId, name: &NodeName, envelope: &Envelope) -> Envelope {
    let mut envelope = envelope.clone();
    envelope.set_workflow_node(workflow, name);
    envelope
}

fn workflow_state(state: &str, failed_node: &str, failed_reason: &str) -> WorkflowState {
    match state {
        "succeeded" => WorkflowState::Succeeded,
        "cancelled" => WorkflowState::Cancelled,
        "failed" => WorkflowState::Failed {
            node: failed_node
                .parse()
                .unwrap_or_else(|_| NodeName::trusted(failed_node.to_owned())),
            reason: failed_reason.to_owned(),
        },
        _ => WorkflowState::Running,
    }
}

impl RedisBroker {
    fn workflow_keys(&self, id: WorkflowId) -> WorkflowKeys {
        WorkflowKeys::new(&self.inner.config.key_prefix, id)
    }

    /// Every live workflow, scored by creation time: the sweeper's index.
    fn workflow_index(&self) -> String {
        format!("{}:workflows", self.inner.config.key_prefix)
    }

    /// The deduplication mark of a node's task, in its queue's slot.
    fn dedup_key(&self, envelope: &Envelope) -> String {
        format!(
            "{}:{{{}}}:wfdone:{}",
            self.inner.config.key_prefix, envelope.queue, envelope.id
        )
    }

    pub(super) async fn wf_submit(&self, spec: &WorkflowSpec) -> Result<()> {
        spec.validate()?;
        let envelopes: Vec<Envelope> = spec
            .nodes
            .iter()
            .map(|node| node_envelope(spec.id, &node.name, &node.envelope))
            .collect();
        for envelope in &envelopes {
            self.check_size(envelope)?;
        }
        let mut children: std::collections::HashMap<&str, Vec<(&NodeName, EdgePolicy)>> =
            std::collections::HashMap::new();
        for node in &spec.nodes {
            for edge in &node.parents {
                children
                    .entry(edge.parent.as_str())
                    .or_default()
                    .push((&node.name, edge.policy));
            }
        }
        let keys = self.workflow_keys(spec.id);
        let now = Timestamp::now();
        let mut invocation = keys.invoke(&SUBMIT);
        invocation
            .arg(now.as_millis())
            .arg(spec.deadline.map_or(0, Timestamp::as_millis))
            .arg(spec.max_nodes)
            .arg(spec.nodes.len());
        for (node, envelope) in spec.nodes.iter().zip(&envelopes) {
            let kids = children.get(node.name.as_str());
            invocation
                .arg(node.name.as_str())
                .arg(envelope.id.to_string())
                .arg(envelope.encode()?)
                .arg(encode_edges(
                    node.parents.iter().map(|e| (&e.parent, e.policy)),
                ))
                .arg(kids.map_or_else(String::new, |k| encode_edges(k.iter().copied())))
                .arg(node.parents.len());
        }
        // The index first: a submit that dies after it leaves an entry the
        // sweeper drops; one that wrote the graph is always indexed.
        let _: () = redis::cmd("ZADD")
            .arg(self.workflow_index())
            .arg(now.as_millis())
            .arg(spec.id.to_string())
            .query_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        let written: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        if written == 0 {
            return Err(Error::WorkflowExists(spec.id));
        }
        // Written is submitted: roots left in the outbox by a failed
        // dispatch are the sweeper's.
        if let Err(e) = self.wf_dispatch(spec.id).await {
            tracing::warn!(workflow = %spec.id, error = %e, "cannot enqueue the workflow's roots yet; the sweeper will");
        }
        Ok(())
    }

    pub(super) async fn wf_settle(&self, settlement: &NodeSettlement) -> Result<Settled> {
        let workflow = settlement.workflow;
        let settlement = settlement.admitted(|children| {
            for child in children.all() {
                self.check_size(&node_envelope(workflow, &child.name, &child.envelope))?;
            }
            Ok(())
        });
        let keys = self.workflow_keys(settlement.workflow);
        let mut invocation = keys.invoke(&SETTLE);
        let output = settlement.output.as_deref();
        invocation
            .arg(settlement.node.as_str())
            .arg(settlement.task_id.to_string())
            .arg(settlement.outcome.state().as_str())
            .arg(Timestamp::now().as_millis())
            .arg(settlement.attempts)
            .arg(settlement.error.as_deref().unwrap_or(""))
            .arg(u8::from(output.is_some()))
            .arg(output.unwrap_or_default())
            .arg(millis(FINISHED_RETENTION))
            .arg(settlement.children.nodes.len())
            .arg(u8::from(settlement.children.join.is_some()))
            .arg(settlement.children.join_policy.as_str());
        for child in settlement.children.all() {
            let envelope = node_envelope(settlement.workflow, &child.name, &child.envelope);
            invocation
                .arg(child.name.as_str())
                .arg(envelope.id.to_string())
                .arg(envelope.encode()?);
        }
        let reply = into_items(
            invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(map_redis)?,
            "wf_settle",
        )?;
        let mut items = reply.into_iter();
        let status = items.next().as_ref().and_then(text).unwrap_or_default();
        match status.as_str() {
            "unknown" => Ok(Settled::Unknown),
            "already" => Ok(Settled::Already),
            "recorded" => {
                let final_state = items.next().as_ref().and_then(text).unwrap_or_default();
                let failed_node = items.next().as_ref().and_then(text).unwrap_or_default();
                let failed_reason = items.next().as_ref().and_then(text).unwrap_or_default();
                let finished = (!final_state.is_empty())
                    .then(|| workflow_state(&final_state, &failed_node, &failed_reason));
                let ready = items
                    .filter_map(|v| text(&v).and_then(|s| s.parse().ok()))
                    .collect();
                Ok(Settled::Recorded { ready, finished })
            }
            other => Err(Error::Backend(
                format!("unexpected wf_settle status {other:?}").into(),
            )),
        }
    }

    pub(super) async fn wf_dispatch(&self, workflow: WorkflowId) -> Result<usize> {
        self.wf_dispatch_before(workflow, Timestamp::from_millis(u64::MAX / 2))
            .await
    }

    /// Dispatches the outbox entries added at or before `cutoff`.
    async fn wf_dispatch_before(&self, workflow: WorkflowId, cutoff: Timestamp) -> Result<usize> {
        let keys = self.workflow_keys(workflow);
        let mut enqueued = 0;
        loop {
            let reply = into_items(
                keys.invoke(&OUTBOX)
                    .arg(cutoff.as_millis())
                    .arg(OUTBOX_PAGE)
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(map_redis)?,
                "wf_outbox",
            )?;
            if reply.is_empty() {
                return Ok(enqueued);
            }
            let page = reply.len() / 3;
            let mut entries = Vec::with_capacity(page);
            let mut items = reply.into_iter();
            while let (Some(name), Some(id), Some(env)) = (items.next(), items.next(), items.next())
            {
                let name = text(&name).ok_or_else(|| unexpected("outbox node", &name))?;
                let id: TaskId = text(&id)
                    .ok_or_else(|| unexpected("outbox task id", &id))?
                    .parse()?;
                let env = bytes(env).ok_or_else(|| Error::Backend("outbox envelope".into()))?;
                let mut envelope = Envelope::decode(&env)?;
                envelope.id = id;
                entries.push((name, envelope));
            }
            let now = Timestamp::now();
            let mut sends = Vec::with_capacity(entries.len());
            for (_, envelope) in &entries {
                let (due, entry) = match envelope.eta {
                    Some(eta) if eta > now => {
                        (eta.as_millis(), delayed_member(envelope, self.signing())?)
                    }
                    _ => (0, signing::wire(envelope, self.signing(), None)?),
                };
                let queue_keys = self.keys(&envelope.queue);
                let mut invocation = ENQUEUE.prepare_invoke();
                invocation
                    .key(self.dedup_key(envelope))
                    .key(queue_keys.stream(envelope.priority))
                    .key(&queue_keys.delayed)
                    .arg(millis(DEDUP_TTL))
                    .arg(due)
                    .arg(entry);
                let mut conn = self.conn();
                sends.push(async move {
                    invocation
                        .invoke_async::<i64>(&mut conn)
                        .await
                        .map_err(map_redis)
                });
            }
            let results: Vec<i64> = stream::iter(sends)
                .buffered(DISPATCH_IN_FLIGHT)
                .try_collect()
                .await?;
            enqueued += results.iter().filter(|&&r| r == 1).count();
            crate::workflow::fail_point("workflow-after-enqueue-before-outbox-removal")?;
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&keys.0[11]);
            for (name, _) in &entries {
                zrem.arg(name);
            }
            let _: i64 = zrem
                .query_async(&mut self.conn())
                .await
                .map_err(map_redis)?;
            if page < OUTBOX_PAGE {
                return Ok(enqueued);
            }
        }
    }

    pub(super) async fn wf_context(
        &self,
        workflow: WorkflowId,
        node: &NodeName,
    ) -> Result<Option<NodeContext>> {
        let reply: Value = self
            .workflow_keys(workflow)
            .invoke(&CONTEXT)
            .arg(node.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        let items = match reply {
            Value::Nil | Value::Boolean(false) => return Ok(None),
            other => into_items(other, "wf_context")?,
        };
        let mut items = items.into_iter();
        let (Some(state), Some(id), Some(output), Some(error)) =
            (items.next(), items.next(), items.next(), items.next())
        else {
            return Err(Error::Backend("short wf_context reply".into()));
        };
        let state = node_state(&state, "node state")?;
        let task_id = text(&id)
            .ok_or_else(|| unexpected("node task id", &id))?
            .parse()?;
        let mut parents = Vec::new();
        while let (Some(name), Some(state), Some(output), Some(error)) =
            (items.next(), items.next(), items.next(), items.next())
        {
            let name: NodeName = text(&name)
                .ok_or_else(|| unexpected("parent name", &name))?
                .parse()?;
            parents.push(ParentResult {
                name,
                state: node_state(&state, "parent state")?,
                output: bytes(output),
                error: text(&error),
            });
        }
        Ok(Some(NodeContext {
            state,
            task_id,
            output: bytes(output),
            error: text(&error),
            parents,
        }))
    }

    pub(super) async fn wf_status(&self, workflow: WorkflowId) -> Result<Option<WorkflowStatus>> {
        let reply: Value = self
            .workflow_keys(workflow)
            .invoke(&STATUS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        let items = match reply {
            Value::Nil | Value::Boolean(false) => return Ok(None),
            other => into_items(other, "wf_status")?,
        };
        let mut items = items.into_iter();
        let mut head = Vec::with_capacity(6);
        for _ in 0..6 {
            head.push(items.next().as_ref().and_then(text).unwrap_or_default());
        }
        let stamp = |s: &str| s.parse::<u64>().ok().map(Timestamp::from_millis);
        let mut nodes = Vec::new();
        loop {
            let Some(name) = items.next() else { break };
            let mut field = || items.next().unwrap_or(Value::Nil);
            let (state, id, attempts, has_output, error, parents, env) = (
                field(),
                field(),
                field(),
                field(),
                field(),
                field(),
                field(),
            );
            let envelope = Envelope::decode(
                &bytes(env).ok_or_else(|| Error::Backend("node envelope missing".into()))?,
            )?;
            nodes.push(NodeStatus {
                name: text(&name)
                    .ok_or_else(|| unexpected("node name", &name))?
                    .parse()?,
                task_id: text(&id)
                    .ok_or_else(|| unexpected("node task id", &id))?
                    .parse()?,
                task: envelope.name,
                queue: envelope.queue,
                state: node_state(&state, "node state")?,
                attempts: text(&attempts).and_then(|a| a.parse().ok()).unwrap_or(0),
                has_output: matches!(has_output, Value::Int(1)),
                error: text(&error),
                parents: decode_edges(&text(&parents).unwrap_or_default()),
            });
        }
        Ok(Some(WorkflowStatus {
            id: workflow,
            state: workflow_state(&head[0], &head[4], &head[5]),
            created_at: stamp(&head[1]).unwrap_or(Timestamp::from_millis(0)),
            finished_at: stamp(&head[2]),
            deadline: stamp(&head[3]).filter(|d| d.as_millis() > 0),
            nodes,
        }))
    }

    /// Runs `wf_cancel.lua` (`mode` is `cancel` or `deadline`) and revokes
    /// the queued nodes it returns. Returns whether the workflow ended now.
    async fn wf_end(&self, workflow: WorkflowId, mode: &str) -> Result<bool> {
        let reply = into_items(
            self.workflow_keys(workflow)
                .invoke(&CANCEL)
                .arg(Timestamp::now().as_millis())
                .arg(millis(FINISHED_RETENTION))
                .arg(mode)
                .invoke_async(&mut self.conn())
                .await
                .map_err(map_redis)?,
            "wf_cancel",
        )?;
        let mut items = reply.into_iter();
        match items.next().as_ref().and_then(text).as_deref() {
            Some("unknown") => Err(Error::UnknownWorkflow(workflow)),
            Some("finished") => Ok(false),
            Some("ended") => {
                let ids: Vec<TaskId> = items
                    .filter_map(|v| text(&v).and_then(|s| s.parse().ok()))
                    .collect();
                futures_util::future::try_join_all(
                    ids.into_iter().map(|id| self.revoke(id, REVOKE_TTL)),
                )
                .await?;
                // A cancel stays in the index until a sweep drops it and
                // counts it (`SweepReport::cancelled`): no daemon sees a
                // cancel otherwise.
                if mode != "cancel" {
                    let _: i64 = redis::cmd("ZREM")
                        .arg(self.workflow_index())
                        .arg(workflow.to_string())
                        .query_async(&mut self.conn())
                        .await
                        .map_err(map_redis)?;
                }
                Ok(true)
            }
            other => Err(Error::Backend(
                format!("unexpected wf_cancel status {other:?}").into(),
            )),
        }
    }

    pub(super) async fn wf_cancel(&self, workflow: WorkflowId) -> Result<bool> {
        self.wf_end(workflow, "cancel").await
    }

    pub(super) async fn wf_retry(&self, workflow: WorkflowId) -> Result<usize> {
        let keys = self.workflow_keys(workflow);
        let total: Option<usize> = redis::cmd("LLEN")
            .arg(&keys.0[1])
            .query_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        let mut invocation = keys.invoke(&RETRY);
        invocation.arg(Timestamp::now().as_millis());
        for _ in 0..total.unwrap_or(0) {
            invocation.arg(TaskId::new().to_string());
        }
        let reply = into_items(
            invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(map_redis)?,
            "wf_retry",
        )?;
        let mut items = reply.into_iter();
        match items.next().as_ref().and_then(text).as_deref() {
            Some("unknown") => Err(Error::UnknownWorkflow(workflow)),
            Some("running") => Err(Error::WorkflowConflict {
                id: workflow,
                reason: "it is still running: cancel it, or wait for it to finish".into(),
            }),
            Some("retried") => {
                let reset = items
                    .next()
                    .as_ref()
                    .and_then(text)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let _: i64 = redis::cmd("ZADD")
                    .arg(self.workflow_index())
                    .arg(Timestamp::now().as_millis())
                    .arg(workflow.to_string())
                    .query_async(&mut self.conn())
                    .await
                    .map_err(map_redis)?;
                if let Err(e) = self.wf_dispatch(workflow).await {
                    tracing::warn!(%workflow, error = %e, "cannot enqueue the retried nodes yet; the sweeper will");
                }
                Ok(reset)
            }
            other => Err(Error::Backend(
                format!("unexpected wf_retry status {other:?}").into(),
            )),
        }
    }

    pub(super) async fn wf_sweep(&self, grace: Duration) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let index = self.workflow_index();
        let now = Timestamp::now();
        let cutoff =
            Timestamp::from_millis(now.as_millis().saturating_sub(grace.as_millis() as u64));
        let mut start: isize = 0;
        loop {
            let page: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(start)
                .arg(start + SWEEP_PAGE - 1)
                .arg("WITHSCORES")
                .query_async(&mut self.conn())
                .await
                .map_err(map_redis)?;
            let mut dropped = Vec::new();
            let mut removed_alone: isize = 0;
            for (member, created) in &page {
                let Ok(id) = member.parse::<WorkflowId>() else {
                    dropped.push(member.clone());
                    continue;
                };
                report.checked += 1;
                let verdict: String = self
                    .workflow_keys(id)
                    .invoke(&SWEEP)
                    .arg(now.as_millis())
                    .arg(cutoff.as_millis())
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(map_redis)?;
                match verdict.as_str() {
                    "gone" if (*created as u64) <= cutoff.as_millis() => {
                        dropped.push(member.clone());
                    }
                    "finished" => dropped.push(member.clone()),
                    "cancelled" => {
                        // Removed on its own: the sweep whose removal
                        // takes it out is the one that counts the cancel.
                        let removed: i64 = redis::cmd("ZREM")
                            .arg(&index)
                            .arg(member)
                            .query_async(&mut self.conn())
                            .await
                            .map_err(map_redis)?;
                        if removed > 0 {
                            report.cancelled += 1;
                            report.dropped += 1;
                            removed_alone += 1;
                        }
                    }
                    "deadline" if self.wf_end(id, "deadline").await? => report.expired += 1,
                    "outbox" => {
                        report.redispatched += self.wf_dispatch_before(id, cutoff).await?;
                    }
                    _ => {}
                }
            }
            if !dropped.is_empty() {
                report.dropped += dropped.len();
                let _: i64 = redis::cmd("ZREM")
                    .arg(&index)
                    .arg(&dropped)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(map_redis)?;
            }
            if (page.len() as isize) < SWEEP_PAGE {
                return Ok(report);
            }
            start += SWEEP_PAGE - dropped.len() as isize - removed_alone;
        }
    }
}

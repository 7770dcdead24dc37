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
    NodeState, NodeStatus, ParentResult, REVOKE_TTL, Settled, SweepReport, UNIT_OUTPUT, WorkflowId,
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

/// The most settlements of one workflow one `wf_settle.lua` call applies:
/// enough to make a call per node rare under load, few enough that one
/// call holds Redis for a millisecond or two at most.
const SETTLE_CHUNK: usize = 256;

/// The most nodes of one workflow one `wf_context.lua` call reads.
const CONTEXT_CHUNK: usize = 256;

/// The most tasks one `wf_enqueue.lua` call enqueues into one queue.
const ENQUEUE_CHUNK: usize = 256;

/// The keys of one workflow, all under its hash tag `{wf:<id>}`, in the
/// order every `wf_*.lua` script takes them.
struct WorkflowKeys([String; 13]);

impl WorkflowKeys {
    fn new(prefix: &str, id: WorkflowId) -> Self {
        let base = format!("{prefix}:{{wf:{id}}}");
        Self(
            [
                "meta", "order", "state", "ids", "env", "parents", "children", "pending", "out",
                "err", "att", "outbox", "route",
            ]
            .map(|name| format!("{base}:{name}")),
        )
    }

    fn outbox(&self) -> &str {
        &self.0[11]
    }

    /// A call of `script` on these keys, its arguments to follow.
    fn call<'a>(&self, script: &'a Script) -> ScriptCall<'a> {
        self.call_sized(script, 0, 0)
    }

    /// A call of `script` on these keys, with room for `args` more
    /// arguments of `bytes` bytes in all (a large call loads its script
    /// first, see [`LOAD_FIRST`]).
    fn call_sized<'a>(&self, script: &'a Script, args: usize, bytes: usize) -> ScriptCall<'a> {
        let mut cmd = redis::Cmd::with_capacity(3 + self.0.len() + args, 128 + bytes);
        cmd.arg("EVALSHA")
            .arg(script.get_hash())
            .arg(self.0.len())
            .arg(&self.0[..]);
        ScriptCall {
            script,
            cmd,
            large: bytes > LOAD_FIRST,
        }
    }
}

/// A call of a workflow script, built in one buffer.
/// `redis::ScriptInvocation` keeps each argument in a vector of its own and
/// copies them all into the command it sends: for a 10,000-node submit,
/// that took as long as encoding the graph.
struct ScriptCall<'a> {
    script: &'a Script,
    cmd: redis::Cmd,
    /// Whether the call is expected to take more than [`LOAD_FIRST`]
    /// bytes.
    large: bool,
}

/// Calls this large load their script before they run it: after a restart,
/// a call by hash alone is refused and sent again, which for a 10,000-node
/// submit meant sending and parsing 3 MB twice; loading costs one small
/// round trip.
const LOAD_FIRST: usize = 64 * 1024;

impl ScriptCall<'_> {
    fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    /// Runs the script by its hash, loading it first where the server does
    /// not know it (after a restart, say), as `ScriptInvocation` does, or
    /// where the call is large.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<T> {
        if self.large {
            self.script.load_async(conn).await?;
        }
        match self.cmd.query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load_async(conn).await?;
                self.cmd.query_async(conn).await
            }
            reply => reply,
        }
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

/// The positions of `workflows` grouped by workflow (in order of first
/// appearance), each group at most `chunk` long: one script call each.
fn by_workflow(
    workflows: impl Iterator<Item = WorkflowId>,
    chunk: usize,
) -> Vec<(WorkflowId, Vec<usize>)> {
    let mut open: std::collections::HashMap<WorkflowId, usize> = std::collections::HashMap::new();
    let mut groups: Vec<(WorkflowId, Vec<usize>)> = Vec::new();
    for (i, workflow) in workflows.enumerate() {
        match open.get(&workflow) {
            Some(&g) if groups[g].1.len() < chunk => groups[g].1.push(i),
            _ => {
                open.insert(workflow, groups.len());
                groups.push((workflow, vec![i]));
            }
        }
    }
    groups
}

/// An error for each member of a group whose call failed: the first gets
/// the error itself, the others a copy that is as transient as it.
fn copy_error(e: &Error) -> Error {
    let message = e.to_string();
    if e.is_transient() {
        Error::Connection(message.into())
    } else {
        Error::Backend(message.into())
    }
}

/// Puts each group's replies back at its members' positions (`n` in
/// all); a group whose call failed, or answered short, fails each member.
fn scatter<T>(
    n: usize,
    groups: &[(WorkflowId, Vec<usize>)],
    replies: Vec<Result<Vec<T>>>,
    what: &str,
) -> Vec<Result<T>> {
    let mut out: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
    for ((_, positions), reply) in groups.iter().zip(replies) {
        match reply {
            Ok(items) if items.len() == positions.len() => {
                for (&i, item) in positions.iter().zip(items) {
                    out[i] = Some(Ok(item));
                }
            }
            Ok(items) => {
                for &i in positions {
                    out[i] = Some(Err(Error::Backend(
                        format!("{what} answered {} of {}", items.len(), positions.len()).into(),
                    )));
                }
            }
            Err(e) => {
                for &i in positions.iter().skip(1) {
                    out[i] = Some(Err(copy_error(&e)));
                }
                if let Some(&first) = positions.first() {
                    out[first] = Some(Err(e));
                }
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Backend(format!("{what} gave no reply").into()))))
        .collect()
}

/// One settlement's reply of `wf_settle.lua`.
fn settled_of(reply: Value) -> Result<Settled> {
    if reply == Value::Int(0) {
        // Recorded, readying nothing, the workflow still running.
        return Ok(Settled::Recorded {
            ready: Vec::new(),
            outboxed: false,
            finished: None,
        });
    }
    let mut items = into_items(reply, "wf_settle")?.into_iter();
    let status = items.next().as_ref().and_then(text).unwrap_or_default();
    match status.as_str() {
        "unknown" => Ok(Settled::Unknown),
        "already" => Ok(Settled::Already),
        "recorded" => {
            let final_state = items.next().as_ref().and_then(text).unwrap_or_default();
            let failed_node = items.next().as_ref().and_then(text).unwrap_or_default();
            let failed_reason = items.next().as_ref().and_then(text).unwrap_or_default();
            let outboxed = items.next().as_ref().and_then(text).as_deref() == Some("1");
            let finished = (!final_state.is_empty())
                .then(|| workflow_state(&final_state, &failed_node, &failed_reason));
            let ready = items
                .filter_map(|v| text(&v).and_then(|s| s.parse().ok()))
                .collect();
            Ok(Settled::Recorded {
                ready,
                outboxed,
                finished,
            })
        }
        other => Err(Error::Backend(
            format!("unexpected wf_settle status {other:?}").into(),
        )),
    }
}

/// One node's reply of `wf_context.lua`.
fn context_of(reply: Value) -> Result<Option<NodeContext>> {
    let items = match reply {
        Value::Nil | Value::Boolean(false) => return Ok(None),
        other => into_items(other, "wf_context")?,
    };
    let mut items = items.into_iter();
    let (
        Some(state),
        Some(id),
        Some(output),
        Some(error),
        Some(edges),
        Some(states),
        Some(outputs),
        Some(errors),
    ) = (
        items.next(),
        items.next(),
        items.next(),
        items.next(),
        items.next(),
        items.next(),
        items.next(),
        items.next(),
    )
    else {
        return Err(Error::Backend("short wf_context reply".into()));
    };
    let state = node_state(&state, "node state")?;
    let task_id = text(&id)
        .ok_or_else(|| unexpected("node task id", &id))?
        .parse()?;
    let edges = text(&edges).unwrap_or_default();
    let states = text(&states).unwrap_or_default();
    let mut parents = Vec::new();
    if !edges.is_empty() {
        // '*': every parent succeeded (no node of the workflow has
        // settled otherwise), so their states were not read.
        let all_succeeded = states == "*";
        let mut states = states.split(',');
        for edge in edges.split(',') {
            let name = edge.split_once(' ').map_or(edge, |(name, _)| name);
            let state = if all_succeeded {
                NodeState::Succeeded
            } else {
                let code = states.next().unwrap_or_default();
                NodeState::from_code(code).ok_or_else(|| {
                    Error::Backend(format!("parent {name} has state {code:?}").into())
                })?
            };
            parents.push(ParentResult {
                name: name.parse()?,
                state,
                output: None,
                error: None,
            });
        }
    }
    for (at, value) in sparse(outputs, parents.len(), "wf_context outputs")? {
        parents[at].output = bytes(value);
    }
    for parent in &mut parents {
        parent.output = output_of(parent.state, parent.output.take());
    }
    for (at, value) in sparse(errors, parents.len(), "wf_context errors")? {
        parents[at].error = text(&value);
    }
    Ok(Some(NodeContext {
        state,
        task_id,
        output: output_of(state, bytes(output)),
        error: text(&error),
        parents,
    }))
}

/// A node's output as read: the stored one, or the unit output of a
/// succeeded node that stored none. A unit output (a fan-out's members'
/// mostly) is not stored: that saves a hash field per node, and its read
/// by every child.
fn output_of(state: NodeState, stored: Option<Vec<u8>>) -> Option<Vec<u8>> {
    stored.or_else(|| (state == NodeState::Succeeded).then(|| UNIT_OUTPUT.to_vec()))
}

/// A `{position, value, ...}` list of a script's reply (positions from
/// 1, each below `len`) as `(index, value)` pairs.
fn sparse(list: Value, len: usize, what: &str) -> Result<Vec<(usize, Value)>> {
    let mut items = into_items(list, what)?.into_iter();
    let mut out = Vec::new();
    while let (Some(at), Some(value)) = (items.next(), items.next()) {
        let index = match at {
            Value::Int(at) => usize::try_from(at).ok().and_then(|at| at.checked_sub(1)),
            _ => None,
        }
        .filter(|&index| index < len)
        .ok_or_else(|| unexpected(what, &at))?;
        out.push((index, value));
    }
    Ok(out)
}

fn node_state(value: &Value, what: &str) -> Result<NodeState> {
    text(value)
        .and_then(|s| NodeState::from_code(&s))
        .ok_or_else(|| unexpected(what, value))
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

    /// Where `wf_submit.lua` and `wf_settle.lua` add a node's task when it
    /// becomes ready, in the same atomic step (see
    /// [`RedisConfig::atomic_workflow_enqueue`](crate::RedisConfig::atomic_workflow_enqueue)):
    /// its stream, on a single server with unsigned envelopes and no ETA
    /// (the stored envelope is then the stream entry, byte for byte); else
    /// empty, and the node goes through the outbox.
    fn node_route(&self, envelope: &Envelope) -> String {
        if self.is_routed(envelope) {
            self.keys(&envelope.queue)
                .stream(envelope.priority)
                .to_owned()
        } else {
            String::new()
        }
    }

    /// Whether `envelope` is added to its stream by the script that readies
    /// its node (see [`Self::node_route`]).
    fn is_routed(&self, envelope: &Envelope) -> bool {
        self.inner.config.atomic_workflow_enqueue
            && !self.inner.commands.is_cluster()
            && self.signing().is_none()
            && envelope.eta.is_none()
    }

    /// The routes of `spec`'s nodes, as [`Self::node_route`] gives them:
    /// the distinct streams, and each node's position in them (`None` for
    /// no route). A fan-out's members share one.
    fn node_routes(&self, spec: &WorkflowSpec) -> (Vec<String>, Vec<Option<usize>>) {
        let mut streams: Vec<(&crate::QueueName, crate::Priority, String)> = Vec::new();
        let routed = spec
            .nodes
            .iter()
            .map(|node| {
                let envelope = &node.envelope;
                if !self.is_routed(envelope) {
                    return None;
                }
                let known = streams.iter().position(|(queue, priority, _)| {
                    **queue == envelope.queue && *priority == envelope.priority
                });
                Some(known.unwrap_or_else(|| {
                    let stream = self
                        .keys(&envelope.queue)
                        .stream(envelope.priority)
                        .to_owned();
                    streams.push((&envelope.queue, envelope.priority, stream));
                    streams.len() - 1
                }))
            })
            .collect();
        let streams = streams.into_iter().map(|(_, _, stream)| stream).collect();
        (streams, routed)
    }

    /// The deduplication mark of a node's task, in its queue's slot.
    fn dedup_key(&self, envelope: &Envelope) -> String {
        format!(
            "{}:{{{}}}:wfdone:{}",
            self.inner.config.key_prefix, envelope.queue, envelope.id
        )
    }

    pub(super) async fn wf_submit(&self, spec: &WorkflowSpec) -> Result<()> {
        let (streams, routed) = self.node_routes(spec);
        let routes: Vec<Option<&str>> = routed
            .iter()
            .map(|at| at.map(|at| streams[at].as_str()))
            .collect();
        let now = Timestamp::now();
        let call = self.submit_call(spec, &routes, now)?;
        // The index first: a submit that dies after it leaves an entry the
        // sweeper drops; one that wrote the graph is always indexed.
        let _: () = redis::cmd("ZADD")
            .arg(self.workflow_index())
            .arg(now.as_millis())
            .arg(spec.id.to_string())
            .query_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        let written: i64 = call.invoke(&mut self.conn()).await.map_err(map_redis)?;
        if written == 0 {
            return Err(Error::WorkflowExists(spec.id));
        }
        // Written is submitted: roots left in the outbox by a failed
        // dispatch are the sweeper's.
        if let Err(e) = self.wf_dispatch_roots(spec, &routes).await {
            tracing::warn!(workflow = %spec.id, error = %e, "cannot enqueue the workflow's roots yet; the sweeper will");
        }
        Ok(())
    }

    /// The `wf_submit.lua` call that writes `spec`, whose nodes have
    /// `routes`: the graph validated, every envelope encoded with its
    /// workflow headers and checked against the size limit, and laid out
    /// in the script's blocks.
    fn submit_call(
        &self,
        spec: &WorkflowSpec,
        routes: &[Option<&str>],
        now: Timestamp,
    ) -> Result<ScriptCall<'static>> {
        let children = spec.children()?;
        let signing = self.signing();
        let limit = self.inner.config.max_envelope_bytes;
        let mut envelopes = Vec::with_capacity(spec.nodes.len());
        for node in &spec.nodes {
            let root = node.parents.is_empty();
            let bytes = node.envelope.encode_for_node(spec.id, &node.name, root)?;
            signing::check_encoded_size(&node.envelope, bytes.len(), signing, limit)?;
            envelopes.push(bytes);
        }
        let parents: Vec<String> = spec
            .nodes
            .iter()
            .map(|node| encode_edges(node.parents.iter().map(|e| (&e.parent, e.policy))))
            .collect();
        let kids: Vec<String> = children
            .iter()
            .map(|of| encode_edges(of.iter().map(|&(c, policy)| (&spec.nodes[c].name, policy))))
            .collect();

        let n = spec.nodes.len();
        let is_root = |i: usize| spec.nodes[i].parents.is_empty();
        let count = |keep: &dyn Fn(usize) -> bool| (0..n).filter(|&i| keep(i)).count();
        let with_parents = count(&|i| !is_root(i));
        let routed_roots = count(&|i| is_root(i) && routes[i].is_some());
        let bytes: usize = envelopes.iter().map(Vec::len).sum::<usize>()
            + parents.iter().chain(&kids).map(String::len).sum::<usize>();
        let mut call = self
            .workflow_keys(spec.id)
            .call_sized(&SUBMIT, 14 + 8 * n, bytes + 128 * n);
        call.arg(now.as_millis())
            .arg(spec.deadline.map_or(0, Timestamp::as_millis))
            .arg(spec.max_nodes)
            .arg(n)
            // The blocks' lengths, in values, in the order they follow.
            .arg(n)
            .arg(2 * n)
            .arg(2 * n)
            .arg(2 * with_parents)
            .arg(2 * count(&|i| !kids[i].is_empty()))
            .arg(2 * with_parents)
            .arg(2 * n)
            .arg(2 * count(&|i| !is_root(i) && routes[i].is_some()))
            .arg(2 * (n - with_parents - routed_roots))
            .arg(routed_roots);
        let names = || spec.nodes.iter().map(|node| node.name.as_str());
        // order
        for name in names() {
            call.arg(name);
        }
        // ids
        for node in &spec.nodes {
            call.arg(node.name.as_str())
                .arg(node.envelope.id.to_string());
        }
        // env
        for (name, envelope) in names().zip(&envelopes) {
            call.arg(name).arg(envelope);
        }
        // parents, then children
        for edges in [&parents, &kids] {
            for (name, edges) in names().zip(edges).filter(|(_, e)| !e.is_empty()) {
                call.arg(name).arg(edges);
            }
        }
        // pending
        for node in spec.nodes.iter().filter(|node| !node.parents.is_empty()) {
            call.arg(node.name.as_str()).arg(node.parents.len());
        }
        // state
        for (i, name) in names().enumerate() {
            call.arg(name)
                .arg(if is_root(i) { "queued" } else { "waiting" });
        }
        // route, of the nodes that wait
        for (i, name) in names().enumerate() {
            if let (false, Some(route)) = (is_root(i), routes[i]) {
                call.arg(name).arg(route);
            }
        }
        // outbox, the roots without a route
        for (i, name) in names().enumerate() {
            if is_root(i) && routes[i].is_none() {
                call.arg(now.as_millis()).arg(name);
            }
        }
        // the roots with a route: stream and position
        for (i, route) in routes.iter().enumerate() {
            if let (true, Some(route)) = (is_root(i), route) {
                call.arg(*route).arg(i);
            }
        }
        Ok(call)
    }

    /// Dispatches a just-written workflow's roots without a route (the
    /// others are in their streams already) from the spec's envelopes, as
    /// [`Self::wf_dispatch`] would from its outbox (which `wf_submit.lua`
    /// filled with exactly these nodes, with these task ids), without
    /// reading the outbox back and decoding every envelope:
    /// enqueued each at most once ever (`wf_enqueue.lua`), then removed
    /// from the outbox. A root cancelled in between is enqueued all the
    /// same, as by a dispatch that read the outbox just before the cancel:
    /// its task is revoked and its node settled, so it never runs.
    async fn wf_dispatch_roots(&self, spec: &WorkflowSpec, routes: &[Option<&str>]) -> Result<()> {
        let roots: Vec<(&NodeName, Envelope)> = spec
            .nodes
            .iter()
            .zip(routes)
            .filter(|(node, route)| node.parents.is_empty() && route.is_none())
            .map(|(node, _)| {
                (
                    &node.name,
                    node.envelope.for_node(spec.id, &node.name, true),
                )
            })
            .collect();
        if roots.is_empty() {
            return Ok(());
        }
        let ready: Vec<&Envelope> = roots.iter().map(|(_, envelope)| envelope).collect();
        self.wf_enqueue(&ready).await?;
        crate::workflow::fail_point("workflow-after-enqueue-before-outbox-removal")?;
        self.wf_outbox_remove(roots.chunks(OUTBOX_PAGE).map(|page| {
            let names = page.iter().map(|(name, _)| name.as_str()).collect();
            (spec.id, names)
        }))
        .await
    }

    /// Removes dispatched entries from their workflows' outboxes: one
    /// `ZREM` per workflow and page, all in flight at once.
    async fn wf_outbox_remove<'a>(
        &self,
        pages: impl Iterator<Item = (WorkflowId, Vec<&'a str>)>,
    ) -> Result<()> {
        let removals: Vec<_> = pages
            .filter(|(_, names)| !names.is_empty())
            .map(|(workflow, names)| {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(self.workflow_keys(workflow).outbox()).arg(names);
                let mut conn = self.conn();
                async move { zrem.query_async::<i64>(&mut conn).await.map_err(map_redis) }
            })
            .collect();
        stream::iter(removals)
            .buffered(DISPATCH_IN_FLIGHT)
            .try_collect::<Vec<i64>>()
            .await?;
        Ok(())
    }

    pub(super) async fn wf_settle(&self, settlement: &NodeSettlement) -> Result<Settled> {
        self.wf_settle_many(&[settlement])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::Backend("wf_settle gave no reply".into())))
    }

    /// Settles `settlements` with one `wf_settle.lua` call per workflow
    /// (per [`SETTLE_CHUNK`] of its settlements), every call in flight at
    /// once; one result per settlement, in order.
    pub(super) async fn wf_settle_many(
        &self,
        settlements: &[&NodeSettlement],
    ) -> Vec<Result<Settled>> {
        let groups = by_workflow(settlements.iter().map(|s| s.workflow), SETTLE_CHUNK);
        // A workflow's chunks go one after another, workflows side by side:
        // a later settlement may repeat or supersede an earlier one of the
        // same node, and two calls in flight on a cluster connection may
        // reach the server out of order (a redirect is retried).
        let mut chunks_of: Vec<(WorkflowId, Vec<usize>)> = Vec::new();
        let mut slot: std::collections::HashMap<WorkflowId, usize> =
            std::collections::HashMap::new();
        for (g, (workflow, _)) in groups.iter().enumerate() {
            let at = *slot.entry(*workflow).or_insert_with(|| {
                chunks_of.push((*workflow, Vec::new()));
                chunks_of.len() - 1
            });
            chunks_of[at].1.push(g);
        }
        let calls: Vec<_> = chunks_of
            .into_iter()
            .map(|(workflow, chunks)| {
                let groups = &groups;
                async move {
                    let mut replies = Vec::with_capacity(chunks.len());
                    for g in chunks {
                        let chunk: Vec<&NodeSettlement> =
                            groups[g].1.iter().map(|&i| settlements[i]).collect();
                        replies.push((g, self.wf_settle_chunk(workflow, chunk).await));
                    }
                    replies
                }
            })
            .collect();
        let mut by_group: Vec<Option<Result<Vec<Settled>>>> =
            (0..groups.len()).map(|_| None).collect();
        let done: Vec<Vec<(usize, Result<Vec<Settled>>)>> = stream::iter(calls)
            .buffer_unordered(DISPATCH_IN_FLIGHT)
            .collect()
            .await;
        for (g, reply) in done.into_iter().flatten() {
            by_group[g] = Some(reply);
        }
        let replies: Vec<Result<Vec<Settled>>> = by_group
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Backend("wf_settle gave no reply".into()))))
            .collect();
        scatter(settlements.len(), &groups, replies, "wf_settle")
    }

    /// One `wf_settle.lua` call for settlements of one workflow.
    async fn wf_settle_chunk(
        &self,
        workflow: WorkflowId,
        settlements: Vec<&NodeSettlement>,
    ) -> Result<Vec<Settled>> {
        let keys = self.workflow_keys(workflow);
        let mut call = keys.call_sized(&SETTLE, 3 + 5 * settlements.len(), 96 * settlements.len());
        call.arg(Timestamp::now().as_millis())
            .arg(millis(FINISHED_RETENTION))
            .arg(settlements.len());
        let limit = self.inner.config.max_envelope_bytes;
        for settlement in settlements {
            // The children's envelopes, encoded once: to check their size
            // before the settlement is admitted, then as arguments.
            let mut envelopes = Vec::new();
            let settlement = settlement.admitted(|children| {
                for child in children.all() {
                    let bytes = child
                        .envelope
                        .encode_for_node(workflow, &child.name, false)?;
                    signing::check_encoded_size(
                        &child.envelope,
                        bytes.len(),
                        self.signing(),
                        limit,
                    )?;
                    envelopes.push(bytes);
                }
                Ok(())
            });
            // A unit output is not stored: reads give it back.
            let output = settlement
                .output
                .as_deref()
                .filter(|&output| output != UNIT_OUTPUT);
            let children = &settlement.children;
            let shape = if children.is_empty() {
                String::new()
            } else {
                format!(
                    "{} {} {}",
                    children.nodes.len(),
                    u8::from(children.join.is_some()),
                    children.join_policy.as_str()
                )
            };
            call.arg(settlement.node.as_str())
                .arg(settlement.task_id.to_string())
                .arg(settlement.outcome.state().as_str())
                .arg(settlement.attempts);
            let error = settlement.error.as_deref().unwrap_or("");
            // Most settlements have no error, no stored output and no
            // children: their last value says so, and nothing follows.
            if error.is_empty() && output.is_none() && shape.is_empty() {
                call.arg("");
                continue;
            }
            call.arg("1")
                .arg(error)
                .arg(u8::from(output.is_some()))
                .arg(output.unwrap_or_default())
                .arg(shape);
            // A refused settlement has no children left.
            for (child, envelope) in settlement.children.all().zip(&envelopes) {
                call.arg(child.name.as_str())
                    .arg(child.envelope.id.to_string())
                    .arg(envelope)
                    .arg(self.node_route(&child.envelope));
            }
        }
        let replies = into_items(
            call.invoke(&mut self.conn()).await.map_err(map_redis)?,
            "wf_settle",
        )?;
        replies.into_iter().map(settled_of).collect()
    }

    pub(super) async fn wf_dispatch(&self, workflow: WorkflowId) -> Result<usize> {
        self.wf_dispatch_many(&[workflow]).await
    }

    /// Dispatches the outboxes of `workflows` together: their entries are
    /// read with one call per workflow, enqueued with one `wf_enqueue.lua`
    /// call per queue (per [`ENQUEUE_CHUNK`]), and removed with one call
    /// per workflow, every call of a step in flight at once.
    pub(super) async fn wf_dispatch_many(&self, workflows: &[WorkflowId]) -> Result<usize> {
        self.wf_dispatch_before(workflows, Timestamp::from_millis(u64::MAX / 2))
            .await
    }

    /// Dispatches the outbox entries added at or before `cutoff`.
    async fn wf_dispatch_before(
        &self,
        workflows: &[WorkflowId],
        cutoff: Timestamp,
    ) -> Result<usize> {
        let mut enqueued = 0;
        let mut open: Vec<WorkflowId> = workflows.to_vec();
        open.sort_unstable();
        open.dedup();
        while !open.is_empty() {
            let reads: Vec<_> = open
                .iter()
                .map(|&workflow| self.wf_outbox_page(workflow, cutoff))
                .collect();
            let pages: Vec<Vec<(String, Envelope)>> = stream::iter(reads)
                .buffered(DISPATCH_IN_FLIGHT)
                .try_collect()
                .await?;
            let ready: Vec<&Envelope> = pages.iter().flatten().map(|(_, e)| e).collect();
            enqueued += self.wf_enqueue(&ready).await?;
            crate::workflow::fail_point("workflow-after-enqueue-before-outbox-removal")?;
            self.wf_outbox_remove(open.iter().zip(&pages).map(|(&workflow, page)| {
                let names = page.iter().map(|(name, _)| name.as_str()).collect();
                (workflow, names)
            }))
            .await?;
            // A full page may have more behind it.
            let mut full = Vec::new();
            for (&workflow, page) in open.iter().zip(&pages) {
                if page.len() >= OUTBOX_PAGE {
                    full.push(workflow);
                }
            }
            open = full;
        }
        Ok(enqueued)
    }

    /// Up to [`OUTBOX_PAGE`] entries of a workflow's outbox: each node and
    /// its task's envelope.
    async fn wf_outbox_page(
        &self,
        workflow: WorkflowId,
        cutoff: Timestamp,
    ) -> Result<Vec<(String, Envelope)>> {
        let reply = into_items(
            self.workflow_keys(workflow)
                .call(&OUTBOX)
                .arg(cutoff.as_millis())
                .arg(OUTBOX_PAGE)
                .invoke(&mut self.conn())
                .await
                .map_err(map_redis)?,
            "wf_outbox",
        )?;
        let mut entries = Vec::with_capacity(reply.len() / 3);
        let mut items = reply.into_iter();
        while let (Some(name), Some(id), Some(env)) = (items.next(), items.next(), items.next()) {
            let name = text(&name).ok_or_else(|| unexpected("outbox node", &name))?;
            let id: TaskId = text(&id)
                .ok_or_else(|| unexpected("outbox task id", &id))?
                .parse()?;
            let env = bytes(env).ok_or_else(|| Error::Backend("outbox envelope".into()))?;
            let mut envelope = Envelope::decode(&env)?;
            envelope.id = id;
            entries.push((name, envelope));
        }
        Ok(entries)
    }

    /// Enqueues `envelopes`, each at most once ever, with one
    /// `wf_enqueue.lua` call per queue (per [`ENQUEUE_CHUNK`] of its
    /// tasks), all in flight at once; returns how many were enqueued now.
    async fn wf_enqueue(&self, envelopes: &[&Envelope]) -> Result<usize> {
        let mut by_queue: Vec<(crate::QueueName, Vec<&Envelope>)> = Vec::new();
        for &envelope in envelopes {
            match by_queue
                .iter_mut()
                .find(|(queue, batch)| *queue == envelope.queue && batch.len() < ENQUEUE_CHUNK)
            {
                Some((_, batch)) => batch.push(envelope),
                None => by_queue.push((envelope.queue.clone(), vec![envelope])),
            }
        }
        let now = Timestamp::now();
        let mut calls = Vec::with_capacity(by_queue.len());
        for (queue, batch) in &by_queue {
            let queue_keys = self.keys(queue);
            let mut invocation = ENQUEUE.prepare_invoke();
            invocation.key(&queue_keys.delayed).arg(millis(DEDUP_TTL));
            for envelope in batch {
                let (due, entry) = match envelope.eta {
                    Some(eta) if eta > now => {
                        (eta.as_millis(), delayed_member(envelope, self.signing())?)
                    }
                    _ => (0, signing::wire(envelope, self.signing(), None)?),
                };
                invocation
                    .key(self.dedup_key(envelope))
                    .key(queue_keys.stream(envelope.priority))
                    .arg(due)
                    .arg(entry);
            }
            let mut conn = self.conn();
            calls.push(async move {
                invocation
                    .invoke_async::<usize>(&mut conn)
                    .await
                    .map_err(map_redis)
            });
        }
        let counts: Vec<usize> = stream::iter(calls)
            .buffered(DISPATCH_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(counts.into_iter().sum())
    }

    pub(super) async fn wf_context(
        &self,
        workflow: WorkflowId,
        node: &NodeName,
    ) -> Result<Option<NodeContext>> {
        self.wf_contexts(&[(workflow, node.clone())])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::Backend("wf_context gave no reply".into())))
    }

    /// The contexts of `nodes`, with one `wf_context.lua` call per
    /// workflow (per [`CONTEXT_CHUNK`] of its nodes), every call in flight
    /// at once; one result per node, in order.
    pub(super) async fn wf_contexts(
        &self,
        nodes: &[(WorkflowId, NodeName)],
    ) -> Vec<Result<Option<NodeContext>>> {
        let groups = by_workflow(nodes.iter().map(|(w, _)| *w), CONTEXT_CHUNK);
        let calls: Vec<_> = groups
            .iter()
            .map(|(workflow, positions)| {
                let mut call = self.workflow_keys(*workflow).call(&CONTEXT);
                for &i in positions {
                    call.arg(nodes[i].1.as_str());
                }
                let mut conn = self.conn();
                async move {
                    let replies = into_items(
                        call.invoke(&mut conn).await.map_err(map_redis)?,
                        "wf_context",
                    )?;
                    replies.into_iter().map(context_of).collect()
                }
            })
            .collect();
        let replies: Vec<Result<Vec<Option<NodeContext>>>> = stream::iter(calls)
            .buffered(DISPATCH_IN_FLIGHT)
            .collect()
            .await;
        scatter(nodes.len(), &groups, replies, "wf_context")
    }

    pub(super) async fn wf_status(&self, workflow: WorkflowId) -> Result<Option<WorkflowStatus>> {
        let reply: Value = self
            .workflow_keys(workflow)
            .call(&STATUS)
            .invoke(&mut self.conn())
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
            let state = node_state(&state, "node state")?;
            nodes.push(NodeStatus {
                name: text(&name)
                    .ok_or_else(|| unexpected("node name", &name))?
                    .parse()?,
                task_id: text(&id)
                    .ok_or_else(|| unexpected("node task id", &id))?
                    .parse()?,
                task: envelope.name,
                queue: envelope.queue,
                state,
                // wf_settle.lua leaves out the common counts: 1 for a
                // success, 0 for any other state.
                attempts: text(&attempts)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(u32::from(state == NodeState::Succeeded)),
                // A unit output is not stored (see `output_of`).
                has_output: matches!(has_output, Value::Int(1)) || state == NodeState::Succeeded,
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
                .call(&CANCEL)
                .arg(Timestamp::now().as_millis())
                .arg(millis(FINISHED_RETENTION))
                .arg(mode)
                .invoke(&mut self.conn())
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
        let mut call = keys.call(&RETRY);
        call.arg(Timestamp::now().as_millis());
        for _ in 0..total.unwrap_or(0) {
            call.arg(TaskId::new().to_string());
        }
        let reply = into_items(
            call.invoke(&mut self.conn()).await.map_err(map_redis)?,
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
                    .call(&SWEEP)
                    .arg(now.as_millis())
                    .arg(cutoff.as_millis())
                    .invoke(&mut self.conn())
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
                        report.redispatched += self.wf_dispatch_before(&[id], cutoff).await?;
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

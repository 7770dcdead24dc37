//! Workflows: directed acyclic graphs of tasks, with fan-out, fan-in and
//! children added at run time, settled as reliably as single tasks.
//!
//! # Model
//!
//! A workflow ([`WorkflowSpec`]) is a set of named nodes ([`NodeName`]);
//! each node is a task (an [`Envelope`](crate::Envelope) with its own
//! queue, priority, attempts and time limit) and lists its parents, each
//! edge with an [`EdgePolicy`]. A node becomes ready when every parent has
//! settled under its edge's policy: a parent that succeeded always counts;
//! one that did not (failed for good, dead-lettered, revoked, expired,
//! cancelled) cancels the child through a `fail` edge (the default, and
//! the cancellation spreads to the child's own dependents the same way)
//! and counts as settled through `continue` and `ignore` edges. The
//! workflow ends when every node is settled: `failed`, naming the first
//! node whose failure crossed a `fail` or `continue` edge (or that was a
//! leaf), else `succeeded`. Nothing waits forever.
//!
//! [`WorkflowSpec::validate`] refuses a cycle, an unknown parent, a
//! duplicate node name, an empty graph and a graph over
//! [`WorkflowSpec::max_nodes`] (default [`DEFAULT_MAX_NODES`], 10,000,
//! dynamic children included), before anything is written.
//!
//! A node's envelope carries its workflow and node name in the
//! [`WORKFLOW_HEADER`] header (`<workflow-id>/<node>`): a header, so
//! readers of envelope format 1 that know nothing of workflows still read
//! it.
//!
//! # Exactly-once readiness: one atomic step where Redis allows it, else idempotent steps
//!
//! On Redis, all of a workflow's keys share one hash tag,
//! `<prefix>:{wf:<id>}:…` (`meta`, `order`, `state`, `ids`, `env`,
//! `parents`, `children`, `pending`, `out`, `err`, `att`, `outbox`,
//! `route`), so every workflow script touches one Cluster slot.
//!
//! On a single server (the default,
//! [`RedisConfig::atomic_workflow_enqueue`](crate::RedisConfig::atomic_workflow_enqueue)),
//! with unsigned envelopes and no ETA, a node's **route** (its queue's
//! stream) is stored with it, and the script that makes the node ready
//! adds its stored envelope to that stream itself: `wf_submit.lua` for
//! the roots, `wf_settle.lua` for a child whose last parent it settles.
//! Readiness and enqueue are then one atomic step: there is no outbox
//! entry, no deduplication mark and no dispatch, so no crash can fall
//! between them, and a step costs Redis one script call instead of four
//! (settle, outbox read, enqueue, outbox removal). A single server lets
//! a script write keys of any slot; a cluster does not, and a signature
//! or an ETA needs the client, so those nodes (every node, on a cluster)
//! take the idempotent steps below. A retried node drops its route (its
//! stored envelope has its old task id) and goes through the outbox. The
//! parent's acknowledgement stays a step of its own (step 3), as below.
//!
//! Otherwise: A node's task still goes
//! to its own queue's slot (`<prefix>:{<queue>}:…`): forcing every queue
//! of a workflow onto one slot (as `BullMQ` flows must) would defeat
//! Cluster. On a cluster the parent's acknowledgement (queue slot) and
//! the child's readiness (workflow slot) therefore cannot be one atomic
//! script, and Spool settles a parent in idempotent steps instead, each
//! safe to repeat after a crash at any point:
//!
//! 1. **Settle** (`wf_settle.lua`, workflow slot), run by the worker
//!    *before* it acknowledges the parent's delivery. If the node is
//!    already settled, or the delivery's task id is not the node's current
//!    one, it changes nothing ([`Settled::Already`], [`Settled::Unknown`]).
//!    Otherwise, in one atomic step, it records the outcome (output,
//!    error, attempts), adds the dynamic children the run asked for (only
//!    on success), decrements the unsettled-parent counter of each child,
//!    applies the edge policies (cancelling through `fail` edges,
//!    transitively), puts every child whose counter reached zero in the
//!    workflow's **outbox** (marked `queued`), and ends the workflow when
//!    every node is settled. Readiness is decided in the same atomic step
//!    as the parent's outcome, so two workers settling the last two
//!    parents at the same instant make exactly one of them see the
//!    counter reach zero.
//! 2. **Dispatch**: each outbox entry is enqueued by `wf_enqueue.lua` on
//!    the target queue's slot, which sets `<prefix>:{<queue>}:wfdone:<task
//!    id>` with `SET NX` (kept [`DEDUP_TTL`], 7 days) and adds the task to
//!    the stream (or delayed set) only when that set succeeded. The
//!    child's task id is fixed when the node is written (at submit, or in
//!    the settlement that adds a dynamic child), so a repeated dispatch is
//!    deduplicated. Then the entry leaves the outbox.
//! 3. **Acknowledge** the parent's delivery (or dead-letter it).
//!
//! A worker takes each step for a whole group of outcomes at once, as it
//! acknowledges plain tasks: [`Broker::settle_nodes`](crate::Broker::settle_nodes)
//! runs `wf_settle.lua` once per workflow (per 256 of its nodes), applying
//! the group's settlements one after another inside that one atomic
//! script, each exactly as if it were alone (so readiness is still
//! decided by one counter per child: settling a parent of a 10,000-wide
//! join is O(1)). The script reads the nodes, their children and the
//! children's counters with one `HMGET` per hash, settles against those
//! values, and writes what changed with one `HSET` per hash at the end:
//! a script runs whole, so no reader sees the difference; [`Broker::dispatch_outboxes`](crate::Broker::dispatch_outboxes)
//! reads every touched outbox, enqueues the ready tasks with one
//! `wf_enqueue.lua` call per target queue (per 256 tasks, each task still
//! behind its own `SET NX` mark), then removes the entries. The fail
//! points `workflow-after-settle-before-dispatch`,
//! `workflow-after-enqueue-before-outbox-removal` and
//! `workflow-after-dispatch-before-ack` sit at the boundaries between
//! these batched steps. Likewise the worker reads the contexts of the
//! nodes it is about to run together
//! ([`Broker::node_contexts`](crate::Broker::node_contexts), one
//! `wf_context.lua` call per workflow), and a batch's context check is as
//! strong as one node's: a node runs only if it is unsettled and the
//! delivery's task id is its current one.
//!
//! A worker killed after step 1 leaves the entry in the outbox: the
//! sweeper (or the redelivered parent, which finds its node settled, skips
//! its handler, dispatches the outbox and acknowledges) enqueues it. One
//! killed after an enqueue but before the outbox removal makes the next
//! dispatch find the `wfdone` key and enqueue nothing. One killed before
//! the acknowledgement makes the parent be redelivered; its node is
//! settled, so it does not run again. Redis with AOF replays each script
//! whole or not at all. A workflow's live state is in Redis; the job store
//! holds its history.
//!
//! # Repair
//!
//! Every workflow is listed in `<prefix>:workflows` (a sorted set by
//! creation time), written just before the graph: an index entry with no
//! graph (a submit that died in between) is dropped after the sweep's
//! grace period. [`Broker::sweep_workflows`](crate::Broker::sweep_workflows),
//! safe on every worker at once since each of its steps is idempotent,
//! dispatches outboxes older than the grace period, fails workflows past
//! their deadline (expiring their unsettled nodes and revoking their
//! queued ones), and drops finished workflows from the index.
//!
//! # Lifetime
//!
//! A finished workflow's keys expire [`FINISHED_RETENTION`] (7 days) after
//! it finished; a retry makes them persistent again. Cancelling revokes
//! the queued nodes' tasks through the ordinary revoke path (a running
//! handler is cancelled, `FFmpeg` included) for [`REVOKE_TTL`].

mod types;
mod validate;

pub(crate) use self::types::UNIT_OUTPUT;
pub use self::types::{
    DynamicChildren, DynamicNode, Edge, EdgePolicy, NodeContext, NodeName, NodeOutcome,
    NodeSettlement, NodeSpec, NodeState, NodeStatus, ParentResult, Settled, SweepReport,
    WorkflowId, WorkflowSpec, WorkflowState, WorkflowStatus,
};

use std::time::Duration;

use crate::error::Result;

/// The envelope header naming a node's workflow and node:
/// `<workflow-id>/<node>`.
pub const WORKFLOW_HEADER: &str = "spool-workflow";

/// The envelope header (value `1`) of a node without parents: a worker
/// may start its first delivery without reading the node's context (there
/// are no parents' results to read, and a settled or stale run is refused
/// by the settle step all the same).
pub(crate) const WORKFLOW_ROOT_HEADER: &str = "spool-workflow-root";

/// The most nodes a workflow may hold unless its spec says otherwise:
/// 10,000. Each node costs a few hundred bytes of Redis memory plus its
/// envelope, and the status of a workflow is read in one reply, so a much
/// larger graph belongs in several workflows.
pub const DEFAULT_MAX_NODES: usize = 10_000;

/// The longest node name, in bytes.
pub const MAX_NODE_NAME_LEN: usize = 128;

/// How long the deduplication mark of an enqueued node is kept: 7 days,
/// longer than any outbox entry waits for a sweeper.
pub const DEDUP_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a finished workflow's state stays in Redis: 7 days.
pub const FINISHED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long cancelled nodes' tasks stay revoked: 1 day.
pub const REVOKE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The default age of an outbox entry before the sweeper dispatches it,
/// and of an index entry without a graph before it is dropped: 10 s, far
/// longer than a settler takes between its settle and its dispatch.
pub const DEFAULT_SWEEP_GRACE: Duration = Duration::from_secs(10);

/// Evaluates the named fail point: with the `failpoints` feature, a fail
/// point configured to `return` makes the step fail here as a crash would
/// stop it (an [`Error::Connection`](crate::Error::Connection)); without
/// the feature it compiles to nothing. Fault-injection tests use it at
/// every step boundary of settling a node.
///
/// # Errors
///
/// Only from a fail point configured by a test.
#[doc(hidden)]
#[inline]
pub fn fail_point(name: &str) -> Result<()> {
    #[cfg(feature = "failpoints")]
    if let Some(message) = fail::eval(name, |arg| arg.unwrap_or_else(|| name.to_owned())) {
        return Err(crate::Error::Connection(
            format!("fail point {name}: {message}").into(),
        ));
    }
    let _ = name;
    Ok(())
}

//! Workflows: a graph of typed tasks submitted in one call.
//!
//! A [`Workflow`] is built from named nodes, each a task with its own
//! queue, priority, attempts and time limit, and the nodes it runs after
//! ([`NodeBuilder::after`]); [`Workflow::chain`], [`Workflow::group`] and
//! [`Workflow::chord`] are sugar over those edges. [`Client::submit_workflow`]
//! checks the whole graph and writes it atomically, then returns a
//! [`WorkflowHandle`] to follow it. The guarantees (exactly-once
//! readiness, failure policies, repair) are described in
//! [`spool_broker::workflow`].
//!
//! ```no_run
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use spool_sdk::workflow::Workflow;
//! use spool_sdk::{Client, QueueName, Task};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Probe { input: String }
//! impl Task for Probe { const NAME: &'static str = "app.probe"; type Output = u32; }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Encode { height: u32 }
//! impl Task for Encode { const NAME: &'static str = "app.encode"; type Output = String; }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Package;
//! impl Task for Package { const NAME: &'static str = "app.package"; type Output = String; }
//!
//! # async fn demo() -> Result<(), spool_sdk::Error> {
//! let client = Client::connect("redis://127.0.0.1:6379/").await?;
//! let mut wf = Workflow::new();
//! wf.node("probe", Probe { input: "in.mp4".into() });
//! for height in [480, 720, 1080] {
//!     wf.node(&format!("encode-{height}"), Encode { height })
//!         .queue(QueueName::GPU)
//!         .after(&["probe"]);
//! }
//! wf.node("package", Package);
//! wf.chord(&["encode-480", "encode-720", "encode-1080"], "package");
//! let handle = client.submit_workflow(wf).await?;
//! let manifest: String = handle.wait::<Package>("package", Duration::from_secs(600)).await?;
//! # let _ = manifest; Ok(()) }
//! ```
//!
//! [`Client::submit_workflow`]: crate::Client::submit_workflow

mod handle;
#[cfg(feature = "store")]
mod record;

pub use self::handle::{WorkflowHandle, WorkflowProgress};
#[cfg(feature = "store")]
pub(crate) use self::record::record_submitted;
pub use spool_broker::workflow::{
    DEFAULT_MAX_NODES, Edge, EdgePolicy, NodeName, NodeState, NodeStatus, WorkflowId, WorkflowSpec,
    WorkflowState, WorkflowStatus,
};

use std::time::{Duration, SystemTime};

use spool_broker::workflow::NodeSpec;
use spool_broker::{Envelope, Priority, QueueName, RecordPolicy, Task, Timestamp};

use crate::error::{Error, Result};

/// A workflow being built: nodes and their edges. Mistakes (a bad node
/// name, a task that does not encode, an edge to a node never declared, a
/// cycle) are reported by [`Client::submit_workflow`], before anything is
/// written.
///
/// [`Client::submit_workflow`]: crate::Client::submit_workflow
#[derive(Debug, Clone)]
pub struct Workflow {
    spec: WorkflowSpec,
    /// The first mistake made while building, reported at submit.
    mistake: Option<String>,
    /// Each node's task type's record policy, in node order: what the
    /// job store records of its task at submit.
    records: Vec<RecordPolicy>,
}

impl Default for Workflow {
    fn default() -> Self {
        Self::new()
    }
}

impl Workflow {
    /// An empty workflow with a fresh id.
    #[must_use]
    pub fn new() -> Self {
        Self {
            spec: WorkflowSpec::new(),
            mistake: None,
            records: Vec::new(),
        }
    }

    /// The workflow's id.
    #[must_use]
    pub fn id(&self) -> WorkflowId {
        self.spec.id
    }

    /// Fails the workflow (expiring its unsettled nodes) if it has not
    /// finished by `at`. Each node's task also expires then.
    #[must_use]
    pub fn deadline(mut self, at: SystemTime) -> Self {
        self.spec.deadline = Some(Timestamp::from(at));
        self
    }

    /// Fails the workflow if it has not finished within `within` of now.
    #[must_use]
    pub fn deadline_in(self, within: Duration) -> Self {
        self.deadline(SystemTime::now() + within)
    }

    /// The most nodes the workflow may reach, dynamic children included.
    /// Default: [`DEFAULT_MAX_NODES`].
    #[must_use]
    pub fn max_nodes(mut self, max: usize) -> Self {
        self.spec.max_nodes = max;
        self
    }

    fn note(&mut self, mistake: String) {
        self.mistake.get_or_insert(mistake);
    }

    fn index_of(&mut self, name: &str) -> Option<usize> {
        let found = self.spec.nodes.iter().position(|n| n.name.as_str() == name);
        if found.is_none() {
            self.note(format!("no node {name:?} was declared before it was used"));
        }
        found
    }

    fn add_edge(&mut self, parent: &str, child: usize, policy: EdgePolicy) {
        match parent.parse::<NodeName>() {
            Ok(parent) => self.spec.nodes[child].parents.push(Edge { parent, policy }),
            Err(e) => self.note(e.to_string()),
        }
    }

    /// Adds node `name` running `task`, with the task type's options; the
    /// returned builder overrides them and adds parents.
    pub fn node<T: Task>(&mut self, name: &str, task: T) -> NodeBuilder<'_> {
        let envelope = match Envelope::for_task(&task) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.note(format!("node {name:?}: {e}"));
                Envelope::new(T::NAME, QueueName::DEFAULT, Vec::new())
            }
        };
        let name = match name.parse::<NodeName>() {
            Ok(name) => name,
            Err(e) => {
                self.note(e.to_string());
                // A placeholder that keeps the builder usable; the
                // mistake refuses the submit.
                NodeName::new(format!("invalid-{}", self.spec.nodes.len()))
                    .unwrap_or_else(|_| unreachable_name())
            }
        };
        self.spec.nodes.push(NodeSpec {
            name,
            envelope,
            parents: Vec::new(),
        });
        self.records.push(T::options().record);
        let index = self.spec.nodes.len() - 1;
        NodeBuilder {
            workflow: self,
            index,
        }
    }

    /// Sugar: each of `names` runs after the one before it.
    pub fn chain(&mut self, names: &[&str]) -> &mut Self {
        for pair in names.windows(2) {
            if let Some(child) = self.index_of(pair[1]) {
                self.add_edge(pair[0], child, EdgePolicy::Fail);
            }
        }
        self
    }

    /// Sugar (fan-out): every one of `members` runs after every one of
    /// `after` (none: they are roots, and run at once, in parallel).
    pub fn group(&mut self, after: &[&str], members: &[&str]) -> &mut Self {
        for member in members {
            if let Some(child) = self.index_of(member) {
                for parent in after {
                    self.add_edge(parent, child, EdgePolicy::Fail);
                }
            }
        }
        self
    }

    /// Sugar (fan-in): `callback` runs after all of `members`.
    pub fn chord(&mut self, members: &[&str], callback: &str) -> &mut Self {
        if let Some(child) = self.index_of(callback) {
            for member in members {
                self.add_edge(member, child, EdgePolicy::Fail);
            }
        }
        self
    }

    /// The workflow as the broker takes it.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] with [`spool_broker::Error::InvalidWorkflow`] for
    /// a mistake made while building or a graph that does not validate.
    pub fn into_spec(self) -> Result<WorkflowSpec> {
        let (spec, _) = self.into_parts()?;
        spec.validate()?;
        Ok(spec)
    }

    /// The workflow as the broker takes it, with each node's record
    /// policy (in node order). Not validated here: every broker validates
    /// a graph before it writes any of it, and a 10,000-node graph is not
    /// worth checking twice.
    pub(crate) fn into_parts(self) -> Result<(WorkflowSpec, Vec<RecordPolicy>)> {
        if let Some(mistake) = self.mistake {
            return Err(Error::Broker(spool_broker::Error::InvalidWorkflow(mistake)));
        }
        let mut spec = self.spec;
        // A node's task is worth nothing after the workflow's deadline.
        if let Some(deadline) = spec.deadline {
            for node in &mut spec.nodes {
                let expires = node
                    .envelope
                    .expires_at
                    .map_or(deadline, |e| e.min(deadline));
                node.envelope.expires_at = Some(expires);
            }
        }
        Ok((spec, self.records))
    }
}

/// Opens the workflow's `submit` span and writes its trace context into
/// every node's headers, so that each node's run (dynamic children and
/// reruns included) is its child; hold the span until the workflow is
/// written. A disabled span, and nothing written, without the `otel`
/// feature or span export.
pub(crate) fn trace_submit(spec: &mut WorkflowSpec) -> tracing::Span {
    #[cfg(feature = "otel")]
    {
        let span = spool_broker::trace_context::workflow_span(spec);
        spool_broker::trace_context::inject_into_workflow(&span, spec);
        span
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = spec;
        tracing::Span::none()
    }
}

/// A name that always parses, for placeholders.
fn unreachable_name() -> NodeName {
    NodeName::new("invalid").unwrap_or_else(|_| unreachable_name())
}

/// Overrides of one node's options, and its parents. Every method takes
/// effect at once: dropping the builder keeps what was set, so it need not
/// be used to the end.
#[derive(Debug)]
pub struct NodeBuilder<'a> {
    workflow: &'a mut Workflow,
    index: usize,
}

impl NodeBuilder<'_> {
    fn envelope(&mut self) -> &mut Envelope {
        &mut self.workflow.spec.nodes[self.index].envelope
    }

    /// The queue the node's task goes to.
    pub fn queue(mut self, queue: QueueName) -> Self {
        self.envelope().queue = queue;
        self
    }

    /// Its priority in that queue.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.envelope().priority = priority;
        self
    }

    /// How many runs it may take before it is dead-lettered.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.envelope().max_attempts = attempts;
        self
    }

    /// A hard limit on one run.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.envelope().time_limit_ms = Some(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The tenant the task is accounted to.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.envelope().tenant = Some(tenant.into());
        self
    }

    /// Runs after every node of `parents`, each through a `fail` edge (the
    /// default policy: a parent that does not succeed cancels this node).
    pub fn after(self, parents: &[&str]) -> Self {
        parents.iter().fold(self, |node, parent| {
            node.after_with(parent, EdgePolicy::Fail)
        })
    }

    /// Runs after `parent`, through an edge with `policy`.
    pub fn after_with(self, parent: &str, policy: EdgePolicy) -> Self {
        let index = self.index;
        self.workflow.add_edge(parent, index, policy);
        self
    }
}

//! What a workflow node's handler sees of its workflow: its parents'
//! results, typed, and the children it may add.

use std::sync::{Mutex, PoisonError};

use spool_broker::workflow::{
    DynamicChildren, DynamicNode, EdgePolicy, NodeName, NodeState, ParentResult, WorkflowId,
};
use spool_broker::{Envelope, Task};

use crate::handler::{TaskContext, TaskError};

/// One run of a workflow node: loaded before the handler starts.
#[derive(Debug)]
pub(crate) struct NodeRun {
    workflow: WorkflowId,
    node: NodeName,
    parents: Vec<ParentResult>,
    /// What the handler adds; committed only by the settlement of its
    /// success.
    children: Mutex<DynamicChildren>,
}

impl NodeRun {
    pub(crate) fn new(workflow: WorkflowId, node: NodeName, parents: Vec<ParentResult>) -> Self {
        Self {
            workflow,
            node,
            parents,
            children: Mutex::default(),
        }
    }

    /// The children the handler added (taken: a run settles once).
    pub(crate) fn take_children(&self) -> DynamicChildren {
        std::mem::take(&mut *self.children.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn children(&self) -> std::sync::MutexGuard<'_, DynamicChildren> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn not_in_workflow() -> TaskError {
    TaskError::fail("this task is not a workflow node")
}

/// A child added by the node that `ctx` runs; it keeps the trace context
/// of that node's headers (the workflow's root span), so it runs in the
/// workflow's trace as a child of its root, like every other node.
fn dynamic_node<T: Task>(
    ctx: &TaskContext,
    name: &str,
    task: &T,
) -> Result<DynamicNode, TaskError> {
    let name: NodeName = name.parse().map_err(TaskError::fail)?;
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut envelope = Envelope::for_task(task).map_err(TaskError::fail)?;
    #[cfg(feature = "otel")]
    spool_broker::trace_context::carry_over(ctx.headers(), &mut envelope.headers);
    #[cfg(not(feature = "otel"))]
    let _ = ctx;
    Ok(DynamicNode { name, envelope })
}

/// Workflows: a node's parents and dynamic children.
impl TaskContext {
    /// The workflow this task is a node of, if it is one.
    #[must_use]
    pub fn workflow(&self) -> Option<WorkflowId> {
        self.node_run().map(|run| run.workflow)
    }

    /// The node this task is, in its workflow.
    #[must_use]
    pub fn node(&self) -> Option<&NodeName> {
        self.node_run().map(|run| &run.node)
    }

    /// Every parent's result, in the order of the node's edges (empty
    /// outside a workflow).
    #[must_use]
    pub fn parents(&self) -> &[ParentResult] {
        self.node_run().map_or(&[], |run| &run.parents)
    }

    /// The output of parent `name`, typed as its task type `T` says: no
    /// JSON plumbing in the handler.
    ///
    /// # Examples
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use spool_broker::Task;
    /// # use spool_worker::{TaskContext, TaskError};
    /// # #[derive(Serialize, Deserialize)] struct Probe;
    /// # impl Task for Probe { const NAME: &'static str = "x.probe"; type Output = u32; }
    /// # #[derive(Serialize, Deserialize)] struct Encode;
    /// # impl Task for Encode { const NAME: &'static str = "x.encode"; type Output = (); }
    /// async fn encode(_task: Encode, ctx: TaskContext) -> Result<(), TaskError> {
    ///     let frames: u32 = ctx.parent::<Probe>("probe")?;
    ///     # let _ = frames;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`TaskError::fail`] when the task is not a workflow node, `name`
    /// is not one of its parents, the parent did not succeed (through a
    /// `continue` or `ignore` edge: the error names its state and error),
    /// or its output does not decode as `T::Output`.
    pub fn parent<T: Task>(&self, name: &str) -> Result<T::Output, TaskError> {
        let run = self.node_run().ok_or_else(not_in_workflow)?;
        let parent = run
            .parents
            .iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| TaskError::fail(format!("{name:?} is not a parent of this node")))?;
        if parent.state != NodeState::Succeeded {
            return Err(TaskError::fail(format!(
                "parent {name} {}: {}",
                parent.state,
                parent.error.as_deref().unwrap_or("no error recorded")
            )));
        }
        let output = parent
            .output
            .as_deref()
            .ok_or_else(|| TaskError::fail(format!("parent {name} stored no output")))?;
        spool_broker::decode_payload(output).map_err(|e| {
            TaskError::fail(format!(
                "the output of parent {name} is not a {}: {e}",
                std::any::type_name::<T::Output>()
            ))
        })
    }

    /// Adds a child node running `task` after this one, to this node's
    /// workflow. Children are committed only if this run succeeds; a run
    /// that fails, is retried or redelivered leaves none behind.
    ///
    /// # Errors
    ///
    /// A [`TaskError::fail`] outside a workflow, for an invalid node name,
    /// or a task that cannot be encoded. A name already in the workflow
    /// fails the node when it settles.
    pub fn add_child<T: Task>(&self, name: &str, task: &T) -> Result<(), TaskError> {
        let run = self.node_run().ok_or_else(not_in_workflow)?;
        run.children().nodes.push(dynamic_node(self, name, task)?);
        Ok(())
    }

    /// Sets the node that joins the children added with
    /// [`add_child`](Self::add_child): it runs after all of them, through
    /// edges with `policy`, and this node's own dependents run after it.
    ///
    /// # Errors
    ///
    /// As [`add_child`](Self::add_child).
    pub fn join_children<T: Task>(
        &self,
        name: &str,
        task: &T,
        policy: EdgePolicy,
    ) -> Result<(), TaskError> {
        let run = self.node_run().ok_or_else(not_in_workflow)?;
        let mut children = run.children();
        children.join = Some(dynamic_node(self, name, task)?);
        children.join_policy = policy;
        Ok(())
    }
}

//! Checking a workflow before anything of it is written.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};

use super::types::{DynamicChildren, EdgePolicy, NodeOutcome, NodeSettlement, WorkflowSpec};

fn invalid(message: String) -> Error {
    Error::InvalidWorkflow(message)
}

impl WorkflowSpec {
    /// Checks the graph: not empty, at most [`WorkflowSpec::max_nodes`]
    /// nodes, unique node names and task ids, known parents, no node its
    /// own parent or twice another's, every task allowing an attempt, and
    /// no cycle. Every broker calls it at submit time, before writing
    /// anything.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWorkflow`] naming the first problem found (for a
    /// cycle, the nodes on it).
    pub fn validate(&self) -> Result<()> {
        self.children().map(drop)
    }

    /// Validates the graph as [`Self::validate`] does and returns each
    /// node's children (by position in [`Self::nodes`]) with the policy of
    /// the edge to each, in the order the children are listed: a broker
    /// needs them to store the graph, and finds them here without a second
    /// pass by name.
    pub(crate) fn children(&self) -> Result<Vec<Vec<(usize, EdgePolicy)>>> {
        if self.nodes.is_empty() {
            return Err(invalid("the workflow has no node".into()));
        }
        if self.nodes.len() > self.max_nodes {
            return Err(invalid(format!(
                "the workflow has {} nodes, over the limit of {}",
                self.nodes.len(),
                self.max_nodes
            )));
        }
        let mut index = HashMap::with_capacity(self.nodes.len());
        let mut ids = HashSet::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            if index.insert(node.name.as_str(), i).is_some() {
                return Err(invalid(format!("duplicate node name {:?}", node.name)));
            }
            if !ids.insert(node.envelope.id) {
                return Err(invalid(format!(
                    "node {:?} reuses task id {}",
                    node.name, node.envelope.id
                )));
            }
            if node.envelope.max_attempts == 0 {
                return Err(invalid(format!(
                    "node {:?}: max_attempts must be at least 1",
                    node.name
                )));
            }
        }
        let mut children: Vec<Vec<(usize, EdgePolicy)>> = vec![Vec::new(); self.nodes.len()];
        let mut pending = vec![0usize; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            let mut seen = HashSet::new();
            for edge in &node.parents {
                let Some(&p) = index.get(edge.parent.as_str()) else {
                    return Err(invalid(format!(
                        "node {:?} runs after {:?}, which is not in the workflow",
                        node.name, edge.parent
                    )));
                };
                if p == i {
                    return Err(invalid(format!("node {:?} is its own parent", node.name)));
                }
                if !seen.insert(p) {
                    return Err(invalid(format!(
                        "node {:?} lists parent {:?} twice",
                        node.name, edge.parent
                    )));
                }
                children[p].push((i, edge.policy));
                pending[i] += 1;
            }
        }
        // Kahn's algorithm: whatever is never freed lies on or after a cycle.
        let mut ready: Vec<usize> = (0..self.nodes.len()).filter(|&i| pending[i] == 0).collect();
        let mut done = 0;
        while let Some(i) = ready.pop() {
            done += 1;
            for &(c, _) in &children[i] {
                pending[c] -= 1;
                if pending[c] == 0 {
                    ready.push(c);
                }
            }
        }
        if done < self.nodes.len() {
            let stuck: Vec<&str> = self
                .nodes
                .iter()
                .zip(&pending)
                .filter(|(_, left)| **left > 0)
                .map(|(n, _)| n.name.as_str())
                .take(10)
                .collect();
            return Err(invalid(format!(
                "the workflow has a cycle through (or after) {}",
                stuck.join(", ")
            )));
        }
        Ok(children)
    }
}

impl NodeSettlement {
    /// This settlement as the broker applies it: a success whose dynamic
    /// children are refused by `check` (or by [`DynamicChildren::validate`])
    /// becomes a failure naming why, without children, so the node settles
    /// (and nothing waits on a run that would add them again). Any other
    /// outcome adds no children, and is given without them. `check` is
    /// called only for a success with children.
    pub(crate) fn admitted(
        &self,
        check: impl FnOnce(&DynamicChildren) -> Result<()>,
    ) -> std::borrow::Cow<'_, Self> {
        if self.children.is_empty() {
            return std::borrow::Cow::Borrowed(self);
        }
        if self.outcome != NodeOutcome::Succeeded {
            return std::borrow::Cow::Owned(Self {
                children: DynamicChildren::default(),
                ..self.clone()
            });
        }
        match self
            .children
            .validate()
            .and_then(|()| check(&self.children))
        {
            Ok(()) => std::borrow::Cow::Borrowed(self),
            Err(e) => std::borrow::Cow::Owned(Self {
                outcome: NodeOutcome::Failed,
                error: Some(format!("its dynamic children were refused: {e}")),
                output: None,
                children: DynamicChildren::default(),
                ..self.clone()
            }),
        }
    }
}

impl DynamicChildren {
    /// Checks the new nodes among themselves: unique names and task ids,
    /// each task allowing an attempt. Whether a name is new in the
    /// workflow, and whether the workflow stays within its node limit, the
    /// broker checks in the settlement itself.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWorkflow`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        for node in self.all() {
            if !names.insert(node.name.as_str()) {
                return Err(invalid(format!(
                    "duplicate dynamic node name {:?}",
                    node.name
                )));
            }
            if !ids.insert(node.envelope.id) {
                return Err(invalid(format!(
                    "dynamic node {:?} reuses task id {}",
                    node.name, node.envelope.id
                )));
            }
            if node.envelope.max_attempts == 0 {
                return Err(invalid(format!(
                    "dynamic node {:?}: max_attempts must be at least 1",
                    node.name
                )));
            }
        }
        Ok(())
    }
}

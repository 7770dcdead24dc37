//! Reading workflow nodes' contexts in batches (group fetch).
//!
//! Every workflow node reads its context (its state, task id and parents'
//! results) before its handler starts. Reads from every running task meet
//! here: the first read when none is in flight starts a reader that takes
//! whatever has gathered and reads it with one
//! [`Broker::node_contexts`] call (one script call per workflow), then
//! whatever gathered meanwhile, until none is left. Under load a read
//! costs a fraction of a round trip; alone it costs one, as before.

use std::sync::{Arc, Mutex, PoisonError};

use spool_broker::workflow::{NodeContext, NodeName, WorkflowId};
use spool_broker::{Broker, Error, Result};
use tokio::sync::oneshot;

/// The most nodes one reader call asks for.
const READ_BATCH: usize = 4096;

/// A read waiting for its context.
type Waiting = (
    (WorkflowId, NodeName),
    oneshot::Sender<Result<Option<NodeContext>>>,
);

#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// Whether a reader is running (it will take what is waiting).
    reading: bool,
}

/// The worker's context reads, batched.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeContexts {
    queue: Arc<Mutex<Queue>>,
}

impl NodeContexts {
    /// The context of `node` of `workflow`, as
    /// [`Broker::node_context`] reads it, read together with the others
    /// waiting now.
    pub(crate) async fn read<B: Broker>(
        &self,
        broker: &B,
        workflow: WorkflowId,
        node: NodeName,
    ) -> Result<Option<NodeContext>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push(((workflow, node), tx));
            !std::mem::replace(&mut queue.reading, true)
        };
        if start {
            // Its own task: a read whose task is dropped must not strand
            // the others waiting on the reader.
            tokio::spawn(read_all(broker.clone(), Arc::clone(&self.queue)));
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::Backend("the context reader stopped".into())))
    }
}

/// Reads what is waiting, batch after batch, until nothing is.
async fn read_all<B: Broker>(broker: B, queue: Arc<Mutex<Queue>>) {
    loop {
        let batch: Vec<Waiting> = {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.waiting.is_empty() {
                queue.reading = false;
                return;
            }
            let take = queue.waiting.len().min(READ_BATCH);
            queue.waiting.drain(..take).collect()
        };
        let (nodes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let contexts = broker.node_contexts(&nodes).await;
        for (reply, context) in replies.into_iter().zip(contexts) {
            // A reader gone (its task dropped) needs no answer.
            let _ = reply.send(context);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spool_broker::workflow::{NodeSpec, NodeState, WorkflowSpec};
    use spool_broker::{Envelope, MemoryBroker, QueueName};

    use super::*;

    #[tokio::test]
    async fn concurrent_reads_each_get_their_own_context() {
        let broker = MemoryBroker::new();
        let mut spec = WorkflowSpec::new();
        let names: Vec<NodeName> = (0..50).map(|i| format!("n{i}").parse().unwrap()).collect();
        for name in &names {
            spec.nodes.push(NodeSpec {
                name: name.clone(),
                envelope: Envelope::new("t", QueueName::DEFAULT, vec![0x80]),
                parents: Vec::new(),
            });
        }
        broker.submit_workflow(&spec).await.unwrap();
        let contexts = NodeContexts::default();
        let reads = names.iter().map(|name| {
            let (contexts, broker) = (contexts.clone(), broker.clone());
            let name = name.clone();
            async move { contexts.read(&broker, spec.id, name).await }
        });
        let read = futures_util::future::join_all(reads).await;
        let status = broker.workflow_status(spec.id).await.unwrap().unwrap();
        for (name, context) in names.iter().zip(read) {
            let context = context.unwrap().unwrap();
            let node = status.nodes.iter().find(|n| &n.name == name).unwrap();
            assert_eq!(context.task_id, node.task_id, "{name}");
            assert_eq!(context.state, NodeState::Queued);
        }
        // An unknown node reads as none, and the reader is free again.
        let unknown = contexts
            .read(&broker, spec.id, "nope".parse().unwrap())
            .await
            .unwrap();
        assert!(unknown.is_none());
        assert!(!contexts.queue.lock().unwrap().reading);
    }
}

//! Following a submitted workflow.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use spool_broker::workflow::{NodeName, NodeState, WorkflowId, WorkflowStatus};
use spool_broker::{Broker, Task};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How often a handle polls the broker while it waits, at first; it backs
/// off to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(20);
/// The slowest poll while waiting.
const MAX_POLL: Duration = Duration::from_millis(500);

/// The states of a workflow's nodes as they change, until it finishes: each
/// item a new snapshot.
pub type WorkflowProgress = Pin<Box<dyn Stream<Item = Result<WorkflowStatus>> + Send>>;

/// A submitted workflow: its status, typed outputs, progress, cancel and
/// retry. Cheap to clone.
#[derive(Clone)]
pub struct WorkflowHandle<B> {
    broker: B,
    id: WorkflowId,
    /// The client's job store: a retry records its rerun tasks there.
    #[cfg(feature = "store")]
    store: Option<spool_broker::store::JobStore>,
}

impl<B> fmt::Debug for WorkflowHandle<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<B: Broker> WorkflowHandle<B> {
    pub(crate) fn new(broker: B, id: WorkflowId) -> Self {
        Self {
            broker,
            id,
            #[cfg(feature = "store")]
            store: None,
        }
    }

    /// This handle, recording what [`retry`](Self::retry) reruns in `store`.
    #[cfg(feature = "store")]
    pub(crate) fn with_store(mut self, store: Option<spool_broker::store::JobStore>) -> Self {
        self.store = store;
        self
    }

    /// The workflow's id.
    #[must_use]
    pub fn id(&self) -> WorkflowId {
        self.id
    }

    /// The workflow's state and every node's, in one snapshot.
    ///
    /// # Errors
    ///
    /// [`spool_broker::Error::UnknownWorkflow`] once it is gone from the
    /// broker (finished longer ago than its retention), or when the broker
    /// fails.
    pub async fn status(&self) -> Result<WorkflowStatus> {
        self.broker
            .workflow_status(self.id)
            .await?
            .ok_or(Error::Broker(spool_broker::Error::UnknownWorkflow(self.id)))
    }

    /// Waits until the workflow finishes (succeeded, failed or cancelled)
    /// and returns its final status.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after `timeout`; otherwise as
    /// [`status`](Self::status).
    pub async fn finished(&self, timeout: Duration) -> Result<WorkflowStatus> {
        let deadline = Instant::now() + timeout;
        let mut poll = FIRST_POLL;
        loop {
            let status = self.status().await?;
            if status.state.is_finished() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(timeout));
            }
            tokio::time::sleep_until((Instant::now() + poll).min(deadline)).await;
            poll = (poll * 2).min(MAX_POLL);
        }
    }

    /// Waits for node `node` (a final node, typically) to settle and
    /// returns its output, typed as its task type `T` says.
    ///
    /// # Errors
    ///
    /// [`Error::NodeNotSucceeded`] when the node settled without success
    /// (its own failure, or cancelled by a parent's); [`Error::Timeout`]
    /// after `timeout`; [`spool_broker::Error::Decode`] when the output is
    /// not a `T::Output`; otherwise as [`status`](Self::status).
    pub async fn wait<T: Task>(&self, node: &str, timeout: Duration) -> Result<T::Output> {
        let name: NodeName = node.parse()?;
        let deadline = Instant::now() + timeout;
        let mut poll = FIRST_POLL;
        loop {
            let context = self
                .broker
                .node_context(self.id, &name)
                .await?
                .ok_or_else(|| {
                    Error::Broker(spool_broker::Error::InvalidWorkflow(format!(
                        "workflow {} has no node {node:?}",
                        self.id
                    )))
                })?;
            match context.state {
                NodeState::Succeeded => {
                    let output = context.output.unwrap_or_default();
                    return Ok(spool_broker::decode_payload(&output)?);
                }
                state if state.is_terminal() => {
                    return Err(Error::NodeNotSucceeded {
                        node: name,
                        state,
                        error: context.error,
                    });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(timeout));
            }
            tokio::time::sleep_until((Instant::now() + poll).min(deadline)).await;
            poll = (poll * 2).min(MAX_POLL);
        }
    }

    /// The workflow's progress across nodes: a snapshot now, then one each
    /// time a node changes state, ending after the snapshot in which the
    /// workflow finished. It polls the broker (every 20 ms at first, backing
    /// off to 500 ms while nothing changes).
    ///
    /// # Errors
    ///
    /// The stream yields the broker's error and ends when a read fails.
    #[must_use]
    pub fn progress(&self) -> WorkflowProgress {
        struct Polling<B> {
            handle: WorkflowHandle<B>,
            last: Option<Vec<NodeState>>,
            done: bool,
            poll: Duration,
        }
        let start = Polling {
            handle: self.clone(),
            last: None,
            done: false,
            poll: FIRST_POLL,
        };
        Box::pin(futures_util::stream::unfold(start, |mut s| async move {
            if s.done {
                return None;
            }
            loop {
                match s.handle.status().await {
                    Err(e) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    Ok(status) => {
                        let states: Vec<NodeState> = status.nodes.iter().map(|n| n.state).collect();
                        let finished = status.state.is_finished();
                        if s.last.as_ref() != Some(&states) || finished {
                            s.last = Some(states);
                            s.done = finished;
                            s.poll = FIRST_POLL;
                            return Some((Ok(status), s));
                        }
                    }
                }
                tokio::time::sleep(s.poll).await;
                s.poll = (s.poll * 2).min(MAX_POLL);
            }
        }))
    }

    /// Cancels the workflow: unsettled nodes are cancelled and queued or
    /// running ones revoked (a running handler is stopped). Returns whether
    /// it was still running.
    ///
    /// # Errors
    ///
    /// When the workflow is unknown or the broker fails.
    pub async fn cancel(&self) -> Result<bool> {
        Ok(self.broker.cancel_workflow(self.id).await?)
    }

    /// Reruns a finished workflow's nodes that did not succeed; succeeded
    /// nodes keep their outputs. Returns how many nodes run again.
    ///
    /// # Errors
    ///
    /// [`spool_broker::Error::WorkflowConflict`] while it runs, or when the
    /// workflow is unknown or the broker fails. With a job store
    /// ([`Client::with_store`](crate::Client::with_store)),
    /// [`Error::NotRecorded`] when the rerun tasks could not be recorded:
    /// they run all the same.
    pub async fn retry(&self) -> Result<usize> {
        let reset = self.broker.retry_workflow(self.id).await?;
        // The rerun nodes' new tasks get their records (copied from their
        // last runs', arguments included), then the workflow's record its
        // new run, as `spoolctl workflow retry` does.
        #[cfg(feature = "store")]
        if let Some(store) = &self.store
            && reset > 0
            && let Some(status) = self.broker.workflow_status(self.id).await?
        {
            let now = spool_broker::Timestamp::now();
            let recorded = match store.record_rerun_tasks(&status, now).await {
                Ok(_) => store.sync_workflow(&status, now).await,
                Err(e) => Err(e),
            };
            recorded.map_err(|source| Error::NotRecorded {
                ids: status.nodes.iter().map(|n| n.task_id).collect(),
                source,
            })?;
        }
        Ok(reset)
    }
}

//! What the job store records of a submitted workflow.

use spool_broker::store::{JobStore, NewJob};
use spool_broker::workflow::WorkflowSpec;
use spool_broker::{RecordPolicy, Timestamp};

/// Records a workflow just submitted: first every node's task, as
/// `queued` with its arguments (secret fields redacted, as every producer
/// path records them: [`NewJob::from_envelope`]) where its task type's
/// policy `records` (in node order) allows, then the workflow and its node
/// records (roots `queued`, the others `waiting`).
///
/// A node's task record is `queued` from the submit even while the node
/// waits on its parents: the task exists, with its id and arguments, and
/// runs once they settle; the node record says whether it waits. So
/// `spoolctl task show` answers for a node's task before it runs. Both
/// writes leave what is already recorded as it is, so a repeat (or a
/// worker that recorded a root's start first) changes nothing.
///
/// # Errors
///
/// As [`JobStore::record_enqueued`] and
/// [`JobStore::record_workflow_submitted`].
pub(crate) async fn record_submitted(
    store: &JobStore,
    spec: &WorkflowSpec,
    records: &[RecordPolicy],
) -> spool_broker::Result<()> {
    let at = Timestamp::now();
    let jobs: Vec<NewJob> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let policy = records.get(i).copied().unwrap_or_default();
            (NewJob::from_envelope(&node.envelope), policy)
        })
        .filter(|(job, policy)| policy.records(job.status()))
        .map(|(job, _)| job)
        .collect();
    if !jobs.is_empty() {
        store.record_enqueued(&jobs).await?;
    }
    store.record_workflow_submitted(spec, at).await
}

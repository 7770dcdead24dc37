//! Settling deliveries with the broker: the late acknowledgement.
//!
//! Outcomes from every running task meet in one channel; the settler takes
//! whatever has gathered and acknowledges it in one pipelined round trip
//! (group commit), so acks cost a fraction of a round trip each under load
//! and add no delay when idle. A delivery's prefetch permit is released only
//! once its outcome is stored, which is what bounds unacknowledged entries.
//!
//! A workflow node's final outcome is carried out in three steps, in this
//! order (see `spool_broker::workflow`): settle the node (its outcome and
//! its children's readiness, atomically), dispatch the workflow's outbox,
//! then acknowledge or dead-letter the delivery. Each step is taken for
//! the whole group at once (one call settles every node of the group, one
//! dispatches every outbox it touched), like the acknowledgements. A step
//! that fails leaves the delivery unacknowledged: it is redelivered, finds
//! its node settled, and repeats the remaining steps without running again.

use std::collections::HashSet;
use std::time::Duration;

use spool_broker::store::Finished;
use spool_broker::workflow::{self, NodeSettlement, Settled, WorkflowId};
use spool_broker::{Broker, DeliveryTag, Envelope, TaskEvent, TaskId};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::lease::Leases;
use super::outcome::{self, Action, Verdict};
use super::store::Store;
use super::store_gate::{self, StoreGate};
use super::trace::TaskTrace;
use crate::observer::Observers;

/// The most outcomes settled in one round trip.
const SETTLE_BATCH: usize = 4096;

/// How long to keep retrying a settlement while the broker is unreachable;
/// past it the entry stays pending and is redelivered later (at least once).
const SETTLE_PATIENCE: Duration = Duration::from_secs(30);

/// One outcome on its way to the broker.
#[derive(Debug)]
pub(crate) struct Settlement {
    pub(crate) tag: DeliveryTag,
    pub(crate) action: Action,
    /// What the job store records of this outcome, before the broker hears
    /// of it.
    pub(crate) record: Option<Box<Finished>>,
    /// The unique lock the task holds, released with a final outcome.
    pub(crate) unique: Option<UniqueLock>,
    /// The task's trace, for the `settle` span under it.
    pub(crate) trace: TaskTrace,
    /// For a workflow node's final outcome: how to settle the node first.
    pub(crate) node: Option<Box<NodeStep>>,
    /// The delivery's prefetch slot, freed when this is dropped: after the
    /// broker has the outcome.
    #[expect(dead_code, reason = "held only to be dropped at the right time")]
    pub(crate) permit: OwnedSemaphorePermit,
}

/// What settling a workflow node takes, before its delivery is
/// acknowledged.
#[derive(Debug)]
pub(crate) struct NodeStep {
    pub(crate) workflow: WorkflowId,
    /// The node's outcome; `None` for a delivery acknowledged unrun because
    /// its node had settled already (only the outbox is dispatched then).
    pub(crate) settlement: Option<NodeSettlement>,
}

impl NodeStep {
    /// The step a verdict on `envelope` calls for: `None` unless the task
    /// is a workflow node and the verdict is final. `node` is the run's
    /// node, holding the children the handler added.
    pub(crate) fn of(
        envelope: &Envelope,
        verdict: &Verdict,
        node: Option<&crate::workflow::NodeRun>,
    ) -> Option<Box<Self>> {
        if !verdict.action.is_final() {
            return None;
        }
        let (workflow, name) = envelope.workflow_node()?;
        let settlement = outcome::node_outcome(verdict.outcome).map(|outcome| NodeSettlement {
            workflow,
            node: name,
            task_id: envelope.id,
            outcome,
            attempts: envelope.attempt,
            error: verdict.error.clone(),
            output: verdict.output.clone(),
            children: match (outcome, node) {
                (workflow::NodeOutcome::Succeeded, Some(run)) => run.take_children(),
                _ => workflow::DynamicChildren::default(),
            },
        });
        Some(Box::new(Self {
            workflow,
            settlement,
        }))
    }
}

/// A unique key held by a task.
#[derive(Debug)]
pub(crate) struct UniqueLock {
    pub(crate) key: String,
    pub(crate) holder: TaskId,
}

/// Settles outcomes until every sender is gone.
pub(crate) async fn run<B: Broker>(
    broker: B,
    store: Option<Store>,
    mut outcomes: mpsc::UnboundedReceiver<Settlement>,
    observers: Observers,
    leases: Leases,
    (gate, stop): (StoreGate, CancellationToken),
) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    let mut acks = Vec::with_capacity(SETTLE_BATCH);
    while outcomes.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
        // The traced tasks' `settle` spans cover the whole group commit;
        // they end when this group is settled.
        let _settle_spans =
            super::trace::settle_spans(batch.iter().map(|s| (&s.trace, s.tag.queue(), &s.action)));
        // Late ack means: the outcome is stored before the broker forgets
        // the task. One batched write for the whole group.
        let records: Vec<Finished> = batch
            .iter_mut()
            .filter_map(|s| s.record.take().map(|record| *record))
            .collect();
        if let Some(store) = &store
            && !records.is_empty()
            && !store_gate::record_outcomes(store, &records, &gate, &stop).await
        {
            // Never acknowledge what the store has not got: left unsettled,
            // with their leases let go, these tasks are redelivered.
            leases.release(batch.iter().map(|s| &s.tag));
            observers.settled(batch.len());
            batch.clear();
            continue;
        }
        let held = settle_nodes(&broker, &batch, &observers).await;
        for (i, settlement) in batch.iter().enumerate() {
            if held.contains(&i) {
                continue;
            }
            match &settlement.action {
                Action::Ack => acks.push(settlement.tag.clone()),
                Action::Retry(next) => {
                    patiently("retry", || broker.retry(&settlement.tag, next)).await;
                }
                Action::DeadLetter(letter) => {
                    patiently("dead-letter", || {
                        broker.dead_letter(&settlement.tag, letter)
                    })
                    .await;
                }
                Action::Requeue => {
                    patiently("requeue", || broker.requeue(&settlement.tag)).await;
                }
                Action::Abandon => {}
            }
        }
        if !acks.is_empty() {
            patiently("ack", || broker.ack(&acks)).await;
            acks.clear();
        }
        for (i, settlement) in batch.iter().enumerate() {
            if let Some(lock) = settlement
                .unique
                .as_ref()
                .filter(|_| settlement.action.is_final() && !held.contains(&i))
            {
                let queue = settlement.tag.queue();
                patiently("release the unique key of", || {
                    broker.release_unique(queue, &lock.key, lock.holder)
                })
                .await;
            }
        }
        // Wake whoever waits on these tasks: their records are stored.
        let finished: Vec<TaskEvent> = records
            .iter()
            .filter(|r| r.status.is_finished())
            .map(|r| TaskEvent::Finished {
                id: r.id,
                status: r.status,
            })
            .collect();
        if let Err(e) = broker.publish_events(&finished).await {
            warn!(error = %e, "could not announce {} finished tasks", finished.len());
        }
        leases.release(batch.iter().map(|s| &s.tag));
        observers.settled(batch.len());
        // Dropping the settlements releases their prefetch permits.
        batch.clear();
    }
}

/// Settles the batch's workflow nodes, then dispatches their workflows'
/// outboxes; returns the positions of the settlements whose steps failed,
/// which must not be acknowledged now. Each step is one broker call for
/// the whole batch ([`Broker::settle_nodes`], then
/// [`Broker::dispatch_outboxes`]): on Redis a script call per workflow
/// for each, not per node.
async fn settle_nodes<B: Broker>(
    broker: &B,
    batch: &[Settlement],
    observers: &Observers,
) -> HashSet<usize> {
    let steps: Vec<(usize, &NodeStep)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.node.as_deref().map(|step| (i, step)))
        .collect();
    let mut held = HashSet::new();
    if steps.is_empty() {
        return held;
    }
    let settlements: Vec<&NodeSettlement> = steps
        .iter()
        .filter_map(|(_, step)| step.settlement.as_ref())
        .collect();
    let mut results = settle_patiently(broker, &settlements).await.into_iter();
    // Each step says whether its workflow's outbox may hold something:
    // not when its settlement was recorded now and put nothing there (it
    // readied nothing, as a fan-in's parents whose siblings still run, or
    // enqueued what it readied itself), which saves the dispatch.
    let mut workflows = Vec::new();
    for (i, step) in &steps {
        let dispatch = match &step.settlement {
            None => true,
            Some(settlement) => match results.next().flatten() {
                None => {
                    held.insert(*i);
                    continue;
                }
                Some(settled) => {
                    observers.workflow_node_settled(settlement, &settled);
                    if workflow::fail_point("workflow-after-settle-before-dispatch").is_err() {
                        held.insert(*i);
                        continue;
                    }
                    !matches!(
                        settled,
                        Settled::Recorded {
                            outboxed: false,
                            ..
                        }
                    )
                }
            },
        };
        if dispatch && !workflows.contains(&step.workflow) {
            workflows.push(step.workflow);
        }
    }
    if workflows.is_empty() {
        return held;
    }
    let dispatched = patiently("dispatch the workflow outboxes of", || async {
        broker.dispatch_outboxes(&workflows).await.map(|_| ())
    })
    .await;
    for id in &workflows {
        if !dispatched || workflow::fail_point("workflow-after-dispatch-before-ack").is_err() {
            held.extend(
                steps
                    .iter()
                    .filter(|(_, step)| step.workflow == *id)
                    .map(|(i, _)| *i),
            );
        }
    }
    held
}

/// Settles `settlements` with [`Broker::settle_nodes`], retrying those
/// that failed transiently with backoff for up to [`SETTLE_PATIENCE`];
/// `None` for each that could not be settled.
async fn settle_patiently<B: Broker>(
    broker: &B,
    settlements: &[&NodeSettlement],
) -> Vec<Option<Settled>> {
    let mut results: Vec<Option<Settled>> = vec![None; settlements.len()];
    let mut open: Vec<usize> = (0..settlements.len()).collect();
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    while !open.is_empty() {
        let asked: Vec<&NodeSettlement> = open.iter().map(|&i| settlements[i]).collect();
        let replies = broker.settle_nodes(&asked).await;
        let mut again = Vec::new();
        let mut last_error = None;
        for (&i, reply) in open.iter().zip(replies) {
            match reply {
                Ok(settled) => results[i] = Some(settled),
                Err(e) if e.is_transient() && started.elapsed() < SETTLE_PATIENCE => {
                    again.push(i);
                    last_error = Some(e);
                }
                Err(e) => {
                    error!(error = %e, "could not settle the workflow nodes of tasks; they stay pending and will be redelivered");
                }
            }
        }
        if let Some(e) = last_error {
            warn!(error = %e, "could not settle the workflow nodes of {} tasks, retrying in {delay:?}", again.len());
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        open = again;
    }
    results
}

/// Runs a broker or store operation, retrying transient failures with
/// backoff for up to [`SETTLE_PATIENCE`]; says whether it succeeded.
async fn patiently<F, Fut>(what: &str, mut operation: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = spool_broker::Result<()>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match operation().await {
            Ok(()) => return true,
            Err(e) if e.is_transient() && started.elapsed() < SETTLE_PATIENCE => {
                warn!(error = %e, "could not {what} tasks, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                error!(error = %e, "could not {what} tasks; they stay pending and will be redelivered");
                return false;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use spool_broker::{DeadLetter, DeadReason, Envelope, MemoryBroker, QueueName, Timestamp};
    use tokio::sync::Semaphore;

    use super::*;

    const Q: QueueName = QueueName::DEFAULT;

    fn unique(key: &str) -> Envelope {
        let mut envelope = Envelope::new(key, Q, vec![0x80]);
        envelope.unique_key = Some(key.to_owned());
        envelope
    }

    #[tokio::test(start_paused = true)]
    async fn every_action_reaches_the_broker_before_its_slot_is_freed() {
        let broker = MemoryBroker::new();
        let ttl = Duration::from_secs(3600);
        let (acked, retried) = (unique("acked"), unique("retried"));
        broker.enqueue_unique(&acked, ttl).await.unwrap();
        broker.enqueue_unique(&retried, ttl).await.unwrap();
        let others = ["dead", "requeued", "abandoned"].map(|n| Envelope::new(n, Q, vec![0x80]));
        broker.enqueue(&others).await.unwrap();
        let batch = broker.fetch(&Q, "c", 10, Duration::ZERO).await.unwrap();
        assert_eq!(batch.deliveries.len(), 5);

        let next = retried.next_attempt(Timestamp::now().saturating_add(ttl));
        let letter = DeadLetter {
            reason: DeadReason::BadPayload,
            error: "bad".into(),
            attempts: 1,
        };
        let actions = [
            Action::Ack,
            Action::Retry(Box::new(next)),
            Action::DeadLetter(letter),
            Action::Requeue,
            Action::Abandon,
        ];
        let slots = Arc::new(Semaphore::new(5));
        let (tx, rx) = mpsc::unbounded_channel();
        let leases = Leases::default();
        let settler = tokio::spawn(run(
            broker.clone(),
            None,
            rx,
            Observers::default(),
            leases.clone(),
            (StoreGate::default(), CancellationToken::new()),
        ));
        for (delivery, action) in batch.deliveries.into_iter().zip(actions) {
            let unique = delivery.envelope.unique_key.clone().map(|key| UniqueLock {
                key,
                holder: delivery.envelope.id,
            });
            let settlement = Settlement {
                tag: delivery.tag,
                action,
                record: None,
                unique,
                trace: TaskTrace::default(),
                node: None,
                permit: Arc::clone(&slots).try_acquire_owned().unwrap(),
            };
            tx.send(settlement).unwrap();
        }
        // Until settled, the slots stay taken.
        assert_eq!(slots.available_permits(), 0);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), settler)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(slots.available_permits(), 5);

        let stats = broker.stats(&Q).await.unwrap();
        assert_eq!(
            (stats.ready, stats.pending, stats.delayed, stats.dead),
            ([0, 1, 0], 1, 1, 1),
            "{stats:?}"
        );
        // A final outcome releases the unique key; a retry keeps it.
        assert_eq!(
            broker.enqueue_unique(&unique("acked"), ttl).await.unwrap(),
            None
        );
        assert_eq!(
            broker
                .enqueue_unique(&unique("retried"), ttl)
                .await
                .unwrap(),
            Some(retried.id)
        );
    }
}

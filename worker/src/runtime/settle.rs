//! Settling deliveries with the broker: the late acknowledgement.
//!
//! Outcomes from every running task meet in one channel; the settler takes
//! whatever has gathered and acknowledges it in one pipelined round trip
//! (group commit), so acks cost a fraction of a round trip each under load
//! and add no delay when idle. A delivery's prefetch permit is released only
//! once its outcome is stored, which is what bounds unacknowledged entries.

use std::time::Duration;

use spool_broker::store::Finished;
use spool_broker::{Broker, DeadLetter, DeliveryTag, Envelope, TaskEvent, TaskId};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::lease::Leases;
use super::store::Store;
use super::store_gate::{self, StoreGate};
use crate::observer::Observers;

/// The most outcomes settled in one round trip.
const SETTLE_BATCH: usize = 4096;

/// How long to keep retrying a settlement while the broker is unreachable;
/// past it the entry stays pending and is redelivered later (at least once).
const SETTLE_PATIENCE: Duration = Duration::from_secs(30);

/// What to tell the broker about one delivery.
#[derive(Debug)]
pub(crate) enum Action {
    /// Done (succeeded, failed for good, or expired): acknowledge and delete.
    Ack,
    /// Schedule this next attempt.
    Retry(Box<Envelope>),
    /// Move to the dead-letter stream.
    DeadLetter(DeadLetter),
    /// Give back unstarted.
    Requeue,
    /// Nothing: another worker holds the entry now.
    Abandon,
}

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
    /// The delivery's prefetch slot, freed when this is dropped: after the
    /// broker has the outcome.
    #[expect(dead_code, reason = "held only to be dropped at the right time")]
    pub(crate) permit: OwnedSemaphorePermit,
}

/// A unique key held by a task.
#[derive(Debug)]
pub(crate) struct UniqueLock {
    pub(crate) key: String,
    pub(crate) holder: TaskId,
}

impl Action {
    /// Whether the task is done with this outcome (no further run).
    fn is_final(&self) -> bool {
        matches!(self, Self::Ack | Self::DeadLetter(_))
    }
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
        for settlement in &batch {
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
        for settlement in &batch {
            if let Some(lock) = settlement
                .unique
                .as_ref()
                .filter(|_| settlement.action.is_final())
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

//! Leases: what this worker holds, renewed while it lives.
//!
//! Every fetched entry stays pending in Redis under this worker's consumer
//! name until settled. Renewing resets its idle time, so only the entries of
//! a worker that stopped renewing (it died) ever pass the visibility timeout
//! and get reclaimed. A task running ten times the visibility timeout is
//! therefore never redelivered while its worker lives: the trap Celery users
//! know, where long tasks re-run every visibility timeout, does not exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use spool_broker::{Broker, DeliveryTag, TaskId};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::running::{CancelReason, Running};

/// The entries this worker holds, with the task each carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Leases {
    held: Arc<Mutex<HashMap<DeliveryTag, TaskId>>>,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, HashMap<DeliveryTag, TaskId>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn hold(&self, entries: impl IntoIterator<Item = (DeliveryTag, TaskId)>) {
        self.lock().extend(entries);
    }

    pub(crate) fn release<'a>(&self, tags: impl IntoIterator<Item = &'a DeliveryTag>) {
        let mut held = self.lock();
        for tag in tags {
            held.remove(tag);
        }
    }

    fn snapshot(&self) -> Vec<DeliveryTag> {
        self.lock().keys().cloned().collect()
    }

    fn task_of(&self, tag: &DeliveryTag) -> Option<TaskId> {
        self.lock().get(tag).copied()
    }
}

/// Renews the leases every `interval` until `stop` fires.
pub(crate) async fn keep<B: Broker>(
    broker: B,
    consumer: Arc<str>,
    leases: Leases,
    running: Running,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let held = leases.snapshot();
        if held.is_empty() {
            continue;
        }
        match broker.renew(&consumer, &held).await {
            Ok(lost) => {
                debug!(renewed = held.len() - lost.len(), "leases renewed");
                for tag in lost {
                    // Settled between the snapshot and now: not lost.
                    let Some(task) = leases.task_of(&tag) else {
                        continue;
                    };
                    warn!(%task, entry = tag.entry_id(),
                        "lease lost: another worker reclaimed this task; cancelling the local run");
                    running.cancel(task, CancelReason::LeaseLost);
                    leases.release([&tag]);
                }
            }
            Err(e) => warn!(error = %e, "could not renew leases; retrying next beat"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spool_broker::{Envelope, MemoryBroker, QueueName, ReclaimRequest};

    use super::*;
    use crate::runtime::running::RunControl;

    const Q: QueueName = QueueName::DEFAULT;

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_over_cancels_only_its_run() {
        let broker = MemoryBroker::new();
        let tasks = ["first", "second"].map(|n| Envelope::new(n, Q, vec![0x80]));
        broker.enqueue(&tasks).await.unwrap();
        let batch = broker.fetch(&Q, "a", 10, Duration::ZERO).await.unwrap();
        let (leases, running) = (Leases::default(), Running::default());
        leases.hold(
            batch
                .deliveries
                .iter()
                .map(|d| (d.tag.clone(), d.envelope.id)),
        );
        let controls: Vec<RunControl> = batch
            .deliveries
            .iter()
            .map(|_| RunControl::default())
            .collect();
        let _guards: Vec<_> = batch
            .deliveries
            .iter()
            .zip(&controls)
            .map(|(d, control)| running.enter(d.envelope.id, control.clone()))
            .collect();
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(keep(
            broker.clone(),
            "a".into(),
            leases.clone(),
            running.clone(),
            Duration::from_secs(1),
            stop.clone(),
        ));

        // Another worker takes the first over, as if `a` had looked dead.
        let request = ReclaimRequest {
            min_idle: Duration::ZERO,
            max: 1,
            suspect_at: 10,
            alone: false,
        };
        let taken = broker.reclaim(&Q, "b", request).await.unwrap();
        assert_eq!(taken.batch.deliveries[0].envelope.name, "first");
        tokio::time::timeout(Duration::from_secs(10), controls[0].token().cancelled())
            .await
            .unwrap();
        assert_eq!(controls[0].reason(), Some(CancelReason::LeaseLost));
        assert_eq!(leases.snapshot(), [batch.deliveries[1].tag.clone()]);

        // The other stays held, beat after beat (virtual time).
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(controls[1].reason(), None);
        assert_eq!(leases.snapshot(), [batch.deliveries[1].tag.clone()]);
        stop.cancel();
        keeper.await.unwrap();
    }
}

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

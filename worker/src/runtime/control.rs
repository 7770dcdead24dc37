//! The control channel: revocations broadcast to every worker.
//!
//! Each worker keeps the set of revoked ids locally, so checking a task
//! before it runs costs no round trip. The set is loaded when the worker
//! (re)subscribes and every `RESYNC` after, so a message missed while the
//! subscription was down is caught up on.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use spool_broker::{Broker, ControlMessage, ControlStream, TaskId};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::running::{CancelReason, Running};

/// How often the revoked set is reloaded in full.
const RESYNC: Duration = Duration::from_secs(30);

/// The ids revoked, as this worker knows them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Revoked {
    ids: Arc<RwLock<HashSet<TaskId>>>,
}

impl Revoked {
    pub(crate) fn contains(&self, id: TaskId) -> bool {
        self.ids
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }

    fn insert(&self, id: TaskId) {
        self.ids
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
    }

    pub(crate) fn replace(&self, ids: Vec<TaskId>) {
        *self.ids.write().unwrap_or_else(PoisonError::into_inner) = ids.into_iter().collect();
    }
}

/// Follows the control channel until `stop` fires, resubscribing with
/// backoff when the subscription breaks.
pub(crate) async fn follow<B: Broker>(
    broker: B,
    mut subscription: Option<ControlStream>,
    revoked: Revoked,
    running: Running,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let subscribed = match subscription.take() {
            Some(messages) => Ok(messages),
            None => tokio::select! {
                () = stop.cancelled() => return,
                subscribed = broker.control() => subscribed,
            },
        };
        let mut messages = match subscribed {
            Ok(messages) => messages,
            Err(e) => {
                failures += 1;
                let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
                warn!(error = %e, "cannot subscribe to the control channel; retrying in {delay:?}");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        if failures > 0 {
            info!("subscribed to the control channel again");
            failures = 0;
        }
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                // The first tick is immediate: load what was missed.
                _ = resync.tick() => match broker.revoked().await {
                    Ok(ids) => revoked.replace(ids),
                    Err(e) => warn!(error = %e, "cannot load the revoked tasks"),
                },
                message = messages.next() => match message {
                    Some(ControlMessage::Revoke { id }) => {
                        revoked.insert(id);
                        if running.cancel(id, CancelReason::Revoked) {
                            info!(task = %id, "revoked while running; cancelling");
                        }
                    }
                    Some(_) => {}
                    None => {
                        warn!("the control channel closed; subscribing again");
                        break;
                    }
                },
            }
        }
    }
}

//! The control channel: revocations and queue pauses broadcast to every
//! worker.
//!
//! Each worker keeps the set of revoked ids and the set of paused queues
//! locally, so checking a task before it runs costs no round trip. Both are
//! loaded when the worker (re)subscribes and every `RESYNC` after, so a
//! message missed while the subscription was down is caught up on.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use spool_broker::{Broker, ControlMessage, ControlStream, QueueName, TaskId};
use tokio::sync::watch;
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

/// The queues paused, as this worker knows them; fetchers wait on it.
#[derive(Debug, Clone)]
pub(crate) struct Paused {
    queues: Arc<watch::Sender<BTreeSet<QueueName>>>,
}

impl Default for Paused {
    fn default() -> Self {
        Self {
            queues: Arc::new(watch::Sender::new(BTreeSet::new())),
        }
    }
}

impl Paused {
    pub(crate) fn contains(&self, queue: &QueueName) -> bool {
        self.queues.borrow().contains(queue)
    }

    fn insert(&self, queue: QueueName) -> bool {
        self.queues.send_if_modified(|queues| queues.insert(queue))
    }

    fn remove(&self, queue: &QueueName) -> bool {
        self.queues.send_if_modified(|queues| queues.remove(queue))
    }

    /// Replaces the whole set (a reload); logs the queues that changed.
    pub(crate) fn replace(&self, queues: Vec<QueueName>) {
        let queues: BTreeSet<QueueName> = queues.into_iter().collect();
        self.queues.send_if_modified(|known| {
            if *known == queues {
                return false;
            }
            for queue in queues.difference(known) {
                info!(queue = %queue, "queue paused");
            }
            for queue in known.difference(&queues) {
                info!(queue = %queue, "queue resumed");
            }
            *known = queues;
            true
        });
    }

    /// Returns once `queue` is not paused.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub(crate) async fn resumed(&self, queue: &QueueName) {
        let mut changes = self.queues.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = changes.wait_for(|paused| !paused.contains(queue)).await;
    }
}

/// Follows the control channel until `stop` fires, resubscribing with
/// backoff when the subscription breaks.
pub(crate) async fn follow<B: Broker>(
    broker: B,
    mut subscription: Option<ControlStream>,
    known: (Revoked, Paused),
    running: Running,
    stop: CancellationToken,
) {
    let (revoked, paused) = known;
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
                _ = resync.tick() => {
                    match broker.revoked().await {
                        Ok(ids) => revoked.replace(ids),
                        Err(e) => warn!(error = %e, "cannot load the revoked tasks"),
                    }
                    match broker.paused().await {
                        Ok(queues) => paused.replace(queues),
                        Err(e) => warn!(error = %e, "cannot load the paused queues"),
                    }
                }
                message = messages.next() => match message {
                    Some(ControlMessage::Revoke { id }) => {
                        revoked.insert(id);
                        if running.cancel(id, CancelReason::Revoked) {
                            info!(task = %id, "revoked while running; cancelling");
                        }
                    }
                    Some(ControlMessage::Pause { queue }) => {
                        if paused.insert(queue.clone()) {
                            info!(queue = %queue, "queue paused");
                        }
                    }
                    Some(ControlMessage::Resume { queue }) => {
                        if paused.remove(&queue) {
                            info!(queue = %queue, "queue resumed");
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spool_broker::MemoryBroker;

    use super::*;

    #[tokio::test]
    async fn pauses_and_resumes_on_the_channel_reach_the_fetchers() {
        let broker = MemoryBroker::new();
        broker.pause(&QueueName::GPU).await.unwrap();
        let (revoked, paused) = (Revoked::default(), Paused::default());
        let stop = CancellationToken::new();
        let subscription = broker.control().await.unwrap();
        let following = tokio::spawn(follow(
            broker.clone(),
            Some(subscription),
            (revoked, paused.clone()),
            Running::default(),
            stop.clone(),
        ));
        let limit = Duration::from_secs(5);
        // The first resync loads the pause made before the worker listened.
        let loaded = async {
            while !paused.contains(&QueueName::GPU) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(limit, loaded).await.unwrap();

        broker.pause(&QueueName::DEFAULT).await.unwrap();
        let mut changes = paused.queues.subscribe();
        tokio::time::timeout(limit, changes.wait_for(|p| p.contains(&QueueName::DEFAULT)))
            .await
            .unwrap()
            .unwrap();
        let waiting = {
            let paused = paused.clone();
            tokio::spawn(async move { paused.resumed(&QueueName::DEFAULT).await })
        };
        broker.resume(&QueueName::DEFAULT).await.unwrap();
        tokio::time::timeout(limit, waiting).await.unwrap().unwrap();
        assert!(paused.contains(&QueueName::GPU));
        assert!(!paused.contains(&QueueName::DEFAULT));

        // A full reload replaces the set.
        paused.replace(vec![QueueName::STREAMING]);
        assert!(!paused.contains(&QueueName::GPU) && paused.contains(&QueueName::STREAMING));
        stop.cancel();
        following.await.unwrap();
    }
}

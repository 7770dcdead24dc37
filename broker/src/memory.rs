//! The in-memory transport: [`RedisBroker`](crate::RedisBroker)'s semantics
//! inside one process, for tests and examples.

use std::collections::VecDeque;
use std::fmt;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{Stream, stream};
use tokio::sync::broadcast;

use crate::broker::{
    Broker, ControlMessage, ControlStream, DeadLetter, DeadLetterEntry, Delivery, DeliveryTag,
    FetchBatch, Malformed, QueueStats, ReclaimRequest, Reclaimed, TaskEvent, TaskEvents, TaskPlace,
};
use crate::envelope::{DEFAULT_MAX_ENVELOPE_BYTES, Envelope, TaskId, Timestamp};
use crate::error::Result;
use crate::queue::{Priority, QueueName};
use crate::signing;
use crate::task::RateLimit;
use crate::workflow::{
    NodeContext, NodeName, NodeSettlement, Settled, SweepReport, WorkflowId, WorkflowSpec,
    WorkflowStatus,
};

use self::state::{Ids, Pending, QueueState, State, id_order};

mod state;
mod workflow;

/// The most due delayed tasks promoted by one fetch, as `RedisConfig`'s
/// default `promote_batch`.
const PROMOTE_BATCH: usize = 1000;

/// A broker that keeps every queue in this process's memory, with the same
/// semantics as [`RedisBroker`](crate::RedisBroker): three priority streams,
/// a pending list, a delayed set and a dead-letter list per queue. Entries
/// are stored encoded, so malformed data behaves as it would in Redis.
///
/// Cloning is cheap: clones share the same queues. Nothing survives the
/// process.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_broker::{Broker, Envelope, MemoryBroker, QueueName};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_broker::Result<()> {
/// let broker = MemoryBroker::new();
/// broker.enqueue(&[Envelope::new("spool.ping", QueueName::DEFAULT, vec![])]).await?;
///
/// let batch = broker.fetch(&QueueName::DEFAULT, "worker-1", 10, Duration::ZERO).await?;
/// assert_eq!(batch.deliveries.len(), 1);
/// assert_eq!(batch.deliveries[0].envelope.name, "spool.ping");
///
/// let tags: Vec<_> = batch.deliveries.iter().map(|d| d.tag.clone()).collect();
/// broker.ack(&tags).await?;
/// assert!(broker.stats(&QueueName::DEFAULT).await?.is_drained());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    control: broadcast::Sender<ControlMessage>,
    events: broadcast::Sender<TaskEvent>,
    workflows: Arc<Mutex<workflow::Workflows>>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            control: broadcast::channel(1024).0,
            events: broadcast::channel(4096).0,
            workflows: Arc::default(),
        }
    }
}

impl MemoryBroker {
    /// An empty broker.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` as they are to a ready stream of `queue`, bypassing
    /// [`Envelope::encode`]: lets tests put entries that are not valid
    /// envelopes (another producer's, a newer format's) in front of a worker,
    /// which must then dead-letter them.
    pub fn push_raw(&self, queue: &QueueName, priority: Priority, bytes: Vec<u8>) {
        let mut state = self.lock();
        let (q, ids) = state.queue(queue);
        q.push(priority, ids.next(), bytes);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No operation leaves the state half-updated, so a panic elsewhere
        // (a failed test assertion) does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the entry of `tag` from pending, as `XACK` + `XDEL` do, and
    /// hands its bytes to `then`; does nothing if it is no longer pending
    /// (another outcome settled it first).
    fn settle(&self, tag: &DeliveryTag, then: impl FnOnce(&mut QueueState, &mut Ids, Vec<u8>)) {
        let mut state = self.lock();
        let State { queues, ids, .. } = &mut *state;
        if let Some(q) = queues.get_mut(&tag.queue)
            && let Some(pending) = q.pending.remove(&tag.entry_id)
        {
            then(q, ids, pending.bytes);
        }
    }
}

/// Decodes a claimed entry into the batch, as the Redis transport does.
fn hand_out(batch: &mut FetchBatch, tag: DeliveryTag, bytes: &[u8], deliveries: u32) {
    match signing::admit(None, DEFAULT_MAX_ENVELOPE_BYTES, bytes) {
        Ok(envelope) => batch.deliveries.push(Delivery {
            tag,
            envelope,
            deliveries,
        }),
        Err(refused) => batch.malformed.push(Malformed {
            tag,
            reason: refused.reason,
            error: refused.error,
        }),
    }
}

/// A broadcast receiver as a stream of the messages `keep` accepts, as a
/// pub/sub subscription would be: messages missed by a lagging subscriber
/// are skipped, and the stream ends when the broker is dropped.
fn follow<T, F>(rx: broadcast::Receiver<T>, keep: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Clone + Send + 'static,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    Box::pin(stream::unfold((rx, keep), |(mut rx, keep)| async move {
        loop {
            match rx.recv().await {
                Ok(message) if keep(&message) => return Some((message, (rx, keep))),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }))
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("queues", &self.lock().queues.len())
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// Promotes due delayed tasks and claims up to `max` ready ones, highest
    /// priority first; also says when the next delayed task falls due.
    /// Claims nothing from a paused queue.
    fn claim_ready(&self, queue: &QueueName, consumer: &str, max: usize) -> Claimed {
        let now = Timestamp::now().as_millis();
        let mut state = self.lock();
        let (q, ids) = state.queue(queue);
        q.seen(consumer);
        if q.paused {
            return Claimed {
                batch: FetchBatch::default(),
                next_due: None,
            };
        }

        for _ in 0..PROMOTE_BATCH {
            let Some(due) = q.delayed.first_entry().filter(|e| e.key().0 <= now) else {
                break;
            };
            let (priority, bytes) = due.remove();
            q.push(priority, ids.next(), bytes);
        }

        let mut batch = FetchBatch::default();
        let want = max.max(1);
        // One claim, one instant, as in Redis where one script claims them
        // all: entries claimed together lapse together.
        let claimed_at = Instant::now();
        for priority in Priority::ALL {
            while batch.len() < want {
                let Some((entry_id, bytes)) = q.ready[priority.index()].pop_front() else {
                    break;
                };
                let tag = DeliveryTag {
                    queue: queue.clone(),
                    priority,
                    entry_id: entry_id.clone(),
                };
                hand_out(&mut batch, tag, &bytes, 1);
                let pending = Pending {
                    bytes,
                    priority,
                    consumer: consumer.to_owned(),
                    since: claimed_at,
                    deliveries: 1,
                };
                q.pending.insert(entry_id, pending);
            }
        }
        let next_due = q
            .delayed
            .first_key_value()
            .map(|(&(due, _), _)| Timestamp::from_millis(due));
        Claimed { batch, next_due }
    }
}

/// What one claim found.
struct Claimed {
    batch: FetchBatch,
    /// When the next delayed task falls due; none on a paused queue, whose
    /// delayed tasks wait for its resume.
    next_due: Option<Timestamp>,
}

impl Broker for MemoryBroker {
    async fn enqueue(&self, envelopes: &[Envelope]) -> Result<()> {
        // Encode everything first so a failure enqueues nothing.
        let encoded = envelopes
            .iter()
            .map(|e| {
                signing::check_for_enqueue(e, None, DEFAULT_MAX_ENVELOPE_BYTES)?;
                Ok((e, e.encode()?))
            })
            .collect::<Result<Vec<_>>>()?;
        let now = Timestamp::now();
        let mut state = self.lock();
        for (envelope, bytes) in encoded {
            let (q, ids) = state.queue(&envelope.queue);
            match envelope.eta {
                Some(eta) if eta > now => q.delay(ids, eta, envelope.priority, bytes),
                _ => q.push(envelope.priority, ids.next(), bytes),
            }
        }
        Ok(())
    }

    async fn enqueue_unique(&self, envelope: &Envelope, ttl: Duration) -> Result<Option<TaskId>> {
        let Some(unique_key) = &envelope.unique_key else {
            return Err(crate::Error::Config(
                "enqueue_unique needs an envelope with a unique key".into(),
            ));
        };
        signing::check_for_enqueue(envelope, None, DEFAULT_MAX_ENVELOPE_BYTES)?;
        let now = Timestamp::now();
        let lock = (envelope.queue.clone(), unique_key.clone());
        {
            let mut state = self.lock();
            if let Some((holder, until)) = state.unique.get(&lock)
                && *until > now
            {
                return Ok(Some(*holder));
            }
            state
                .unique
                .insert(lock, (envelope.id, now.saturating_add(ttl)));
        }
        self.enqueue(std::slice::from_ref(envelope)).await?;
        Ok(None)
    }

    async fn release_unique(&self, queue: &QueueName, key: &str, holder: TaskId) -> Result<()> {
        let lock = (queue.clone(), key.to_owned());
        let mut state = self.lock();
        if state.unique.get(&lock).is_some_and(|(id, _)| *id == holder) {
            state.unique.remove(&lock);
        }
        Ok(())
    }

    async fn acquire_rate(&self, name: &str, limit: RateLimit) -> Result<Option<Duration>> {
        let now = Timestamp::now().as_millis();
        let capacity = f64::from(limit.limit);
        let per_ms = capacity / (limit.period.as_secs_f64() * 1000.0).max(1.0);
        let mut state = self.lock();
        let (tokens, at) = state
            .rates
            .entry(name.to_owned())
            .or_insert((capacity, now));
        let refilled = (*tokens + now.saturating_sub(*at) as f64 * per_ms).min(capacity);
        *at = now.max(*at);
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            return Ok(None);
        }
        *tokens = refilled;
        let wait_ms = ((1.0 - refilled) / per_ms).ceil();
        Ok(Some(Duration::from_millis(wait_ms as u64)))
    }

    async fn fetch(
        &self,
        queue: &QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<FetchBatch> {
        let start = tokio::time::Instant::now();
        loop {
            let notify = Arc::clone(&self.lock().queue(queue).0.notify);
            // Register before claiming, so an entry pushed after the claim
            // still wakes us; one pushed before it is claimed.
            let mut notified = pin!(notify.notified());
            notified.as_mut().enable();
            let claimed = self.claim_ready(queue, consumer, max);
            let left = wait.saturating_sub(start.elapsed());
            let limit = match claimed.next_due {
                Some(due) => left.min(due.saturating_since(Timestamp::now())),
                // Paused: wait as on an empty queue (a resume wakes us).
                None => left,
            };
            if !claimed.batch.is_empty() || limit.is_zero() {
                return Ok(claimed.batch);
            }
            // Woken or timed out, either way: look again.
            let _ = tokio::time::timeout(limit, notified).await;
        }
    }

    async fn reclaim(
        &self,
        queue: &QueueName,
        consumer: &str,
        request: ReclaimRequest,
    ) -> Result<Reclaimed> {
        let mut state = self.lock();
        let mut reclaimed = Reclaimed::default();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(reclaimed);
        };
        let mut stale: Vec<(Priority, (u64, u64), String, u32)> = q
            .pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= request.min_idle)
            .map(|(id, p)| (p.priority, id_order(id), id.clone(), p.deliveries))
            .collect();
        stale.sort();
        let is_suspect = |deliveries: u32| deliveries + 1 >= request.suspect_at;
        let mut claimed = Vec::new();
        // A suspect goes alone, to a worker that holds nothing else.
        let suspect = stale
            .iter()
            .find(|s| is_suspect(s.3))
            .filter(|_| request.alone);
        if let Some((_, _, entry_id, _)) = suspect {
            claimed.push(entry_id.clone());
        } else {
            for (_, _, entry_id, deliveries) in stale {
                if is_suspect(deliveries) {
                    reclaimed.suspects_waiting += 1;
                } else if claimed.len() < request.max.max(1) {
                    claimed.push(entry_id);
                }
            }
        }
        let claimed_at = Instant::now();
        for entry_id in claimed {
            if let Some(pending) = q.pending.get_mut(&entry_id) {
                pending.consumer = consumer.to_owned();
                pending.since = claimed_at;
                pending.deliveries += 1;
                let tag = DeliveryTag {
                    queue: queue.clone(),
                    priority: pending.priority,
                    entry_id,
                };
                hand_out(
                    &mut reclaimed.batch,
                    tag,
                    &pending.bytes,
                    pending.deliveries,
                );
            }
        }
        Ok(reclaimed)
    }

    async fn renew(&self, consumer: &str, tags: &[DeliveryTag]) -> Result<Vec<DeliveryTag>> {
        let mut state = self.lock();
        let mut lost = Vec::new();
        for tag in tags {
            let held = state
                .queues
                .get_mut(&tag.queue)
                .and_then(|q| q.pending.get_mut(&tag.entry_id))
                .filter(|p| p.consumer == consumer);
            match held {
                Some(pending) => pending.since = Instant::now(),
                None => lost.push(tag.clone()),
            }
        }
        Ok(lost)
    }

    async fn ack(&self, tags: &[DeliveryTag]) -> Result<()> {
        for tag in tags {
            self.settle(tag, |_, _, _| {});
        }
        Ok(())
    }

    async fn retry(&self, tag: &DeliveryTag, next: &Envelope) -> Result<()> {
        let bytes = next.encode()?;
        let due = next.eta.unwrap_or_else(Timestamp::now);
        self.settle(tag, |q, ids, _| q.delay(ids, due, next.priority, bytes));
        Ok(())
    }

    async fn dead_letter(&self, tag: &DeliveryTag, letter: &DeadLetter) -> Result<()> {
        self.settle(tag, |q, ids, raw| {
            q.dead.push(DeadLetterEntry {
                entry_id: ids.next(),
                queue: tag.queue.clone(),
                envelope: Envelope::decode(&raw).ok(),
                raw,
                reason: letter.reason.as_str().to_owned(),
                error: letter.error.clone(),
                attempts: letter.attempts,
                dead_at: Timestamp::now(),
            });
        });
        Ok(())
    }

    async fn requeue(&self, tag: &DeliveryTag) -> Result<()> {
        self.settle(tag, |q, ids, bytes| {
            q.push(tag.priority, ids.next(), bytes);
        });
        Ok(())
    }

    async fn revoke(&self, id: TaskId, ttl: Duration) -> Result<()> {
        let until = Timestamp::now().saturating_add(ttl);
        self.lock().revoked.insert(id, until);
        // No subscriber is fine: nobody runs the task now.
        let _ = self.control.send(ControlMessage::Revoke { id });
        Ok(())
    }

    async fn find_task(&self, queue: &QueueName, id: TaskId) -> Result<Option<TaskPlace>> {
        let holds = |bytes: &[u8]| crate::envelope::holds_task(bytes, id);
        let state = self.lock();
        let Some(q) = state.queues.get(queue) else {
            return Ok(None);
        };
        let queued = q.ready.iter().flatten().any(|(_, bytes)| holds(bytes))
            || q.pending.values().any(|pending| holds(&pending.bytes));
        Ok(if queued {
            Some(TaskPlace::Queued)
        } else if q.delayed.values().any(|(_, bytes)| holds(bytes)) {
            Some(TaskPlace::Delayed)
        } else if q.dead.iter().any(|letter| holds(&letter.raw)) {
            Some(TaskPlace::Dead)
        } else {
            None
        })
    }

    async fn revoked(&self) -> Result<Vec<TaskId>> {
        let now = Timestamp::now();
        let mut state = self.lock();
        state.revoked.retain(|_, until| *until > now);
        Ok(state.revoked.keys().copied().collect())
    }

    async fn control(&self) -> Result<ControlStream> {
        // A slow subscriber may miss some: it reloads `revoked`.
        Ok(follow(self.control.subscribe(), |_| true))
    }

    async fn publish_events(&self, events: &[TaskEvent]) -> Result<()> {
        for event in events {
            // No subscriber is fine: nobody is waiting.
            let _ = self.events.send(event.clone());
        }
        Ok(())
    }

    async fn task_events(&self, id: TaskId) -> Result<TaskEvents> {
        Ok(follow(self.events.subscribe(), move |event: &TaskEvent| {
            event.id() == id
        }))
    }

    async fn server_warnings(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map_or_else(QueueStats::default, QueueState::stats))
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        self.lock().queue(queue).0.paused = true;
        // No subscriber is fine: no worker runs.
        let _ = self.control.send(ControlMessage::Pause {
            queue: queue.clone(),
        });
        Ok(())
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        {
            let mut state = self.lock();
            let q = state.queue(queue).0;
            q.paused = false;
            // Fetches waiting on the paused queue look again.
            q.notify.notify_waiters();
        }
        let _ = self.control.send(ControlMessage::Resume {
            queue: queue.clone(),
        });
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        let state = self.lock();
        let mut paused: Vec<QueueName> = state
            .queues
            .iter()
            .filter(|(_, q)| q.paused)
            .map(|(name, _)| name.clone())
            .collect();
        paused.sort();
        Ok(paused)
    }

    async fn known_queues(&self) -> Result<Vec<QueueName>> {
        let state = self.lock();
        let mut known: Vec<QueueName> = state
            .queues
            .iter()
            .filter(|(_, q)| q.added > 0 || !q.delayed.is_empty() || !q.dead.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        known.sort();
        Ok(known)
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64> {
        let stats = self.stats(queue).await?;
        if let Some(q) = self.lock().queues.get_mut(queue) {
            // Keep the queue's `notify` (fetches may be waiting on it), its
            // pause and its consumers (the workers serving it still do, as
            // Redis keeps its consumers' set); forget the streams' counter, as
            // deleting the streams does in Redis.
            q.ready.iter_mut().for_each(VecDeque::clear);
            q.pending.clear();
            q.delayed.clear();
            q.dead.clear();
            q.added = 0;
        }
        Ok(stats.ready_total() + stats.pending + stats.delayed + stats.dead)
    }

    async fn requeue_dead(&self, queue: &QueueName, entry_ids: Option<&[String]>) -> Result<u64> {
        let mut state = self.lock();
        let (q, ids) = state.queue(queue);
        let wanted = |d: &DeadLetterEntry| entry_ids.is_none_or(|ids| ids.contains(&d.entry_id));
        // Every next run is built before any letter leaves the dead list.
        let revived = q
            .dead
            .iter()
            .filter(|d| wanted(d))
            .map(|letter| signing::revive(letter, None))
            .collect::<Result<Vec<_>>>()?;
        q.dead.retain(|d| !wanted(d));
        let count = u64::try_from(revived.len()).unwrap_or(u64::MAX);
        for (priority, bytes) in revived {
            q.push(priority, ids.next(), bytes);
        }
        Ok(count)
    }

    async fn purge_dead(&self, queue: &QueueName) -> Result<u64> {
        let mut state = self.lock();
        let dead = state
            .queues
            .get_mut(queue)
            .map(|q| std::mem::take(&mut q.dead));
        Ok(dead.map_or(0, |d| u64::try_from(d.len()).unwrap_or(u64::MAX)))
    }

    async fn dead_letters(&self, queue: &QueueName, limit: usize) -> Result<Vec<DeadLetterEntry>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map_or_else(Vec::new, |q| q.dead.iter().take(limit).cloned().collect()))
    }

    async fn submit_workflow(&self, spec: &WorkflowSpec) -> Result<()> {
        self.wf_submit(spec).await
    }

    async fn settle_node(&self, settlement: &NodeSettlement) -> Result<Settled> {
        self.wf_settle(settlement).await
    }

    async fn dispatch_outbox(&self, workflow: WorkflowId) -> Result<usize> {
        self.wf_dispatch(workflow).await
    }

    async fn node_context(
        &self,
        workflow: WorkflowId,
        node: &NodeName,
    ) -> Result<Option<NodeContext>> {
        self.wf_context(workflow, node).await
    }

    async fn workflow_status(&self, workflow: WorkflowId) -> Result<Option<WorkflowStatus>> {
        self.wf_status(workflow).await
    }

    async fn cancel_workflow(&self, workflow: WorkflowId) -> Result<bool> {
        self.wf_cancel(workflow).await
    }

    async fn retry_workflow(&self, workflow: WorkflowId) -> Result<usize> {
        self.wf_retry(workflow).await
    }

    async fn sweep_workflows(&self, grace: Duration) -> Result<SweepReport> {
        self.wf_sweep(grace).await
    }
}

#[cfg(test)]
mod tests;

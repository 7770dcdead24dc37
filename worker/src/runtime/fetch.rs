//! Fetching: one loop per queue, bounded by the prefetch semaphore.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spool_broker::{Broker, Delivery, FetchBatch, QueueName, ReclaimRequest, TaskId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::control::Paused;
use super::lease::Leases;
use super::outcome::Verdict;
use super::settle::Settlement;
use super::store_gate::StoreGate;
use crate::observer::{Observers, TaskInfo};

/// The delivery count from which a reclaimed task is a suspect: it was in
/// two workers that died, and may be what kills them. Suspects run alone.
const SUSPECT_AT: u32 = 3;

/// A fetched task and the prefetch slot it occupies until settled.
pub(crate) type Claimed = (Delivery, OwnedSemaphorePermit);

/// Everything one fetch loop needs.
pub(crate) struct Fetcher<B> {
    pub(crate) broker: B,
    pub(crate) queue: QueueName,
    pub(crate) consumer: Arc<str>,
    pub(crate) prefetch: Arc<Semaphore>,
    pub(crate) poll_interval: Duration,
    /// The prefetch bound: all the semaphore's permits.
    pub(crate) prefetch_size: usize,
    /// The most slots one claim fills: the worker's concurrency.
    pub(crate) claim_size: usize,
    /// The lease this worker's tasks are held under: entries idle longer
    /// belong to dead workers and are reclaimed.
    pub(crate) visibility_timeout: Duration,
    /// The entries held, whose leases the keeper renews.
    pub(crate) leases: Leases,
    /// The most slots held while waiting on an empty queue, when other
    /// queues share the prefetch bound.
    pub(crate) fair_share: Option<usize>,
    /// Tasks this worker may still fetch, when `max_tasks` is set.
    pub(crate) budget: Option<Arc<AtomicU64>>,
    /// While the queue is in it, nothing is fetched or reclaimed from it.
    pub(crate) paused: Paused,
    /// Closed while outcomes cannot be recorded: no new work meanwhile.
    pub(crate) store_gate: StoreGate,
    pub(crate) observers: Observers,
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: mpsc::Sender<Vec<Claimed>>,
    pub(crate) settle: mpsc::UnboundedSender<Settlement>,
    /// Where an error no retry can fix (a missing permission) is left for
    /// `Worker::run` to return, after `stop` is fired.
    pub(crate) fatal: Fatal,
}

/// The first error that stops the worker, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fatal(Arc<std::sync::Mutex<Option<spool_broker::Error>>>);

impl Fatal {
    /// Keeps `error` unless one is kept already.
    pub(crate) fn set(&self, error: spool_broker::Error) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(error);
    }

    /// The error kept, if any.
    pub(crate) fn take(&self) -> Option<spool_broker::Error> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl<B: Broker> Fetcher<B> {
    /// Fetches until stopped or out of budget.
    pub(crate) async fn run(self) {
        let mut failures = 0u32;
        // Look for abandoned entries at start (a crashed predecessor's), then
        // every half visibility timeout.
        let reclaim_every = self.visibility_timeout / 2;
        let mut next_reclaim = tokio::time::Instant::now();
        let mut suspects_waiting = false;
        loop {
            if self.paused.contains(&self.queue) {
                info!(queue = %self.queue, "queue paused: not fetching it until it is resumed");
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = self.paused.resumed(&self.queue) => {}
                }
                info!(queue = %self.queue, "queue resumed: fetching it again");
                continue;
            }
            if !self.store_gate.is_open() {
                warn!(queue = %self.queue,
                    "the job store cannot record outcomes: not fetching until it takes writes again");
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = self.store_gate.opened() => {}
                }
                info!(queue = %self.queue, "the job store is back: fetching again");
                continue;
            }
            if std::mem::take(&mut suspects_waiting) {
                match self.run_suspect_alone().await {
                    Some(more) => suspects_waiting = more,
                    None => return,
                }
            }
            let permit = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                permit = Arc::clone(&self.prefetch).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => return,
                },
            };
            // Paused, or the store gone, while this waited for a slot.
            if self.paused.contains(&self.queue) || !self.store_gate.is_open() {
                continue;
            }
            let Some(mut permit) = self.reserve_budget(self.widen(permit)) else {
                info!(queue = %self.queue, "task budget spent; no more fetching");
                return;
            };
            let reserved = permit.num_permits();
            let reclaiming = tokio::time::Instant::now() >= next_reclaim;
            if reclaiming {
                next_reclaim = tokio::time::Instant::now() + reclaim_every;
            }
            // Not cancel safe, so never raced against `stop`: it returns
            // within `poll_interval`, which bounds how long a stop waits.
            let batch = match self.claim(&mut permit, reclaiming).await {
                Ok((batch, suspects)) => {
                    suspects_waiting = suspects;
                    batch
                }
                Err(e) if e.is_fatal() => {
                    // Retrying cannot help (a permission the Redis user
                    // lacks): stop the worker, naming it, rather than log
                    // the same refusal forever.
                    drop(permit);
                    error!(queue = %self.queue, error = %e, "fetch refused; stopping the worker");
                    self.fatal.set(e);
                    self.stop.cancel();
                    return;
                }
                Err(e) => {
                    drop(permit);
                    self.refund_budget(reserved);
                    failures += 1;
                    let delay = reconnect_delay(failures);
                    warn!(queue = %self.queue, error = %e, "fetch failed; retrying in {delay:?}");
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            if failures > 0 {
                info!(queue = %self.queue, "fetching again after {failures} failed attempts");
                failures = 0;
            }
            self.refund_budget(reserved.saturating_sub(batch.len()));
            if !self.hand_over(batch, permit).await {
                return;
            }
        }
    }

    /// Passes a claimed batch on, each entry with one slot of `permit`:
    /// malformed, unsigned or forged entries to the settler (dead letters,
    /// with their reason), tasks to the
    /// dispatcher. Slots left over go back. `false` when the worker is
    /// going down.
    async fn hand_over(&self, batch: FetchBatch, mut permit: OwnedSemaphorePermit) -> bool {
        if batch.is_empty() {
            return true;
        }
        self.observers.fetched(&self.queue, batch.len());
        let held = batch
            .deliveries
            .iter()
            .map(|d| (d.tag.clone(), d.envelope.id));
        let malformed = batch.malformed.iter().map(|m| (m.tag.clone(), TaskId::NIL));
        self.leases.hold(held.chain(malformed));
        for malformed in batch.malformed {
            let Some(slot) = permit.split(1) else { break };
            error!(queue = %self.queue, entry = malformed.tag.entry_id(),
                reason = %malformed.reason, error = %malformed.error,
                "entry refused before running (undecodable or not authentic); moved to the dead-letter stream");
            let unknown = TaskInfo {
                id: TaskId::NIL,
                name: "",
                queue: &self.queue,
                attempt: 0,
            };
            let verdict = Verdict::refused(malformed.reason, malformed.error);
            self.observers
                .finished(&unknown, verdict.outcome, Duration::ZERO);
            let settlement = Settlement {
                tag: malformed.tag,
                action: verdict.action,
                record: None,
                unique: None,
                trace: super::trace::TaskTrace::default(),
                node: None,
                permit: slot,
            };
            // The settler outlives every fetcher; a send error means the
            // worker is going down, and the entry stays pending.
            let _ = self.settle.send(settlement);
        }
        let claimed: Vec<Claimed> = batch
            .deliveries
            .into_iter()
            .filter_map(|delivery| permit.split(1).map(|slot| (delivery, slot)))
            .collect();
        drop(permit);
        claimed.is_empty() || self.tasks.send(claimed).await.is_ok()
    }

    /// Takes one suspect and runs it with nothing else held: waits until
    /// every prefetch slot is free (what runs finishes and is settled),
    /// claims the suspect, and keeps the other slots until it is settled.
    /// Returns whether more suspects wait, or `None` when stopping.
    async fn run_suspect_alone(&self) -> Option<bool> {
        let all = u32::try_from(self.prefetch_size).unwrap_or(u32::MAX);
        info!(queue = %self.queue, "a task was in two workers that died: draining to run it alone");
        let mut permits = tokio::select! {
            () = self.stop.cancelled() => return None,
            permits = Arc::clone(&self.prefetch).acquire_many_owned(all) => permits.ok()?,
        };
        let request = ReclaimRequest {
            min_idle: self.visibility_timeout,
            max: 1,
            suspect_at: SUSPECT_AT,
            alone: true,
        };
        let reclaimed = match self
            .broker
            .reclaim(&self.queue, &self.consumer, request)
            .await
        {
            Ok(reclaimed) => reclaimed,
            Err(e) => {
                warn!(queue = %self.queue, error = %e, "reclaiming a suspect failed");
                return Some(true);
            }
        };
        let Some(slot) = permits.split(1) else {
            return Some(false);
        };
        if let Some(suspect) = reclaimed.batch.deliveries.first() {
            warn!(queue = %self.queue, task = %suspect.envelope.id, deliveries = suspect.deliveries,
                "running a suspect task alone");
        }
        let alone = !reclaimed.batch.is_empty();
        if !self.hand_over(reclaimed.batch, slot).await {
            return None;
        }
        if alone {
            // One more free slot means the suspect's came back: it is settled.
            let _settled = Arc::clone(&self.prefetch).acquire_owned().await;
        }
        drop(permits);
        Some(reclaimed.suspects_waiting > 0)
    }

    /// Claims for the slots `permit` holds: abandoned entries first when
    /// `reclaiming`, then new ones.
    async fn claim(
        &self,
        permit: &mut OwnedSemaphorePermit,
        reclaiming: bool,
    ) -> spool_broker::Result<(FetchBatch, bool)> {
        if reclaiming {
            let request = ReclaimRequest {
                min_idle: self.visibility_timeout,
                max: permit.num_permits(),
                suspect_at: SUSPECT_AT,
                alone: false,
            };
            let reclaimed = self
                .broker
                .reclaim(&self.queue, &self.consumer, request)
                .await?;
            let suspects = reclaimed.suspects_waiting > 0;
            if !reclaimed.batch.is_empty() {
                warn!(queue = %self.queue, count = reclaimed.batch.len(),
                    "reclaimed tasks whose worker stopped renewing its lease");
                return Ok((reclaimed.batch, suspects));
            }
            if suspects {
                return Ok((FetchBatch::default(), true));
            }
        }
        Ok((self.fetch(permit).await?, false))
    }

    /// Fetches for the slots `permit` holds. When other queues share the
    /// prefetch bound, an empty queue is waited on with a fair share of the
    /// slots only, so the other queues' fetchers are not starved meanwhile.
    async fn fetch(&self, permit: &mut OwnedSemaphorePermit) -> spool_broker::Result<FetchBatch> {
        let Some(share) = self.fair_share else {
            let slots = permit.num_permits();
            return self
                .broker
                .fetch(&self.queue, &self.consumer, slots, self.poll_interval)
                .await;
        };
        let batch = self
            .broker
            .fetch(
                &self.queue,
                &self.consumer,
                permit.num_permits(),
                Duration::ZERO,
            )
            .await?;
        if !batch.is_empty() {
            return Ok(batch);
        }
        if permit.num_permits() > share {
            drop(permit.split(permit.num_permits() - share));
        }
        let slots = permit.num_permits();
        self.broker
            .fetch(&self.queue, &self.consumer, slots, self.poll_interval)
            .await
    }

    /// Grows a one-slot permit with the slots free right now, up to
    /// `claim_size` in all. More could not start at once anyway; and with
    /// claims of that size the next one runs in Redis while the worker
    /// starts this one, instead of the two taking turns over one large
    /// claim (see docs/benchmarks.md, "2026-12-07 (sixth session)").
    fn widen(&self, mut permit: OwnedSemaphorePermit) -> OwnedSemaphorePermit {
        let wanted = self.claim_size.saturating_sub(permit.num_permits());
        let free = self.prefetch.available_permits().min(wanted);
        let free = u32::try_from(free).unwrap_or(u32::MAX);
        if free > 0
            && let Ok(more) = Arc::clone(&self.prefetch).try_acquire_many_owned(free)
        {
            permit.merge(more);
        }
        permit
    }

    /// Shrinks the permit to the remaining task budget and takes that much
    /// from it; `None` when the budget is spent.
    fn reserve_budget(&self, mut permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let Some(budget) = &self.budget else {
            return Some(permit);
        };
        let wanted = permit.num_permits() as u64;
        let left = budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left > 0).then(|| left.saturating_sub(wanted))
            })
            .ok()?;
        let reserved = usize::try_from(left.min(wanted)).unwrap_or(usize::MAX);
        if reserved < permit.num_permits() {
            drop(permit.split(permit.num_permits() - reserved));
        }
        Some(permit)
    }

    /// Returns budget reserved for slots that a fetch did not fill.
    fn refund_budget(&self, unused: usize) {
        if let Some(budget) = &self.budget {
            budget.fetch_add(unused as u64, Ordering::AcqRel);
        }
    }
}

/// The pause before fetching again after `failures` failures in a row:
/// 100 ms doubling to 5 s, so a Redis restart is neither hammered nor waited
/// out long.
fn reconnect_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_millis(100 * (1 << exponent)).min(Duration::from_secs(5))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spool_broker::{DeadReason, Envelope, MemoryBroker, Priority};

    use super::*;
    use crate::runtime::outcome::Action;

    const Q: QueueName = QueueName::DEFAULT;
    const LIMIT: Duration = Duration::from_secs(10);

    struct Channels {
        tasks: mpsc::Receiver<Vec<Claimed>>,
        settle: mpsc::UnboundedReceiver<Settlement>,
        prefetch: Arc<Semaphore>,
        stop: CancellationToken,
    }

    fn fetcher(broker: &MemoryBroker, budget: Option<u64>) -> (Fetcher<MemoryBroker>, Channels) {
        let prefetch = Arc::new(Semaphore::new(4));
        let (tasks_tx, tasks) = mpsc::channel(4);
        let (settle_tx, settle) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let fetcher = Fetcher {
            broker: broker.clone(),
            queue: Q,
            consumer: "c".into(),
            prefetch: Arc::clone(&prefetch),
            poll_interval: Duration::from_millis(100),
            prefetch_size: 4,
            claim_size: 4,
            visibility_timeout: Duration::from_secs(60),
            leases: Leases::default(),
            fair_share: None,
            budget: budget.map(|n| Arc::new(AtomicU64::new(n))),
            paused: Paused::default(),
            store_gate: StoreGate::default(),
            observers: Observers::default(),
            stop: stop.clone(),
            tasks: tasks_tx,
            settle: settle_tx,
            fatal: Fatal::default(),
        };
        let channels = Channels {
            tasks,
            settle,
            prefetch,
            stop,
        };
        (fetcher, channels)
    }

    #[tokio::test(start_paused = true)]
    async fn refused_entries_are_dead_lettered_and_tasks_dispatched() {
        let broker = MemoryBroker::new();
        broker.push_raw(&Q, Priority::High, b"garbage".to_vec());
        let task = Envelope::new("t", Q, vec![0x80]);
        broker.enqueue(std::slice::from_ref(&task)).await.unwrap();
        let (fetcher, mut channels) = fetcher(&broker, None);
        let running = tokio::spawn(fetcher.run());

        let refused = tokio::time::timeout(LIMIT, channels.settle.recv())
            .await
            .unwrap()
            .unwrap();
        let Action::DeadLetter(letter) = &refused.action else {
            panic!("{:?}", refused.action)
        };
        assert_eq!((letter.reason, letter.attempts), (DeadReason::Malformed, 0));
        assert!(refused.record.is_none() && refused.unique.is_none());
        let claimed = tokio::time::timeout(LIMIT, channels.tasks.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].0.envelope, task);
        channels.stop.cancel();
        tokio::time::timeout(LIMIT, running).await.unwrap().unwrap();
        // Each holds one prefetch slot until it is settled.
        assert_eq!(channels.prefetch.available_permits(), 2);
        drop((refused, claimed));
        assert_eq!(channels.prefetch.available_permits(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_fills_at_most_claim_size_slots() {
        let broker = MemoryBroker::new();
        let tasks = ["a", "b", "c", "d"].map(|n| Envelope::new(n, Q, vec![0x80]));
        broker.enqueue(&tasks).await.unwrap();
        let (mut fetcher, mut channels) = fetcher(&broker, None);
        fetcher.claim_size = 3;
        let running = tokio::spawn(fetcher.run());
        let mut batches = Vec::new();
        while batches.iter().map(Vec::len).sum::<usize>() < tasks.len() {
            let batch = tokio::time::timeout(LIMIT, channels.tasks.recv())
                .await
                .unwrap()
                .unwrap();
            batches.push(batch);
        }
        // Every slot was free, yet the first claim took three, the next one
        // the fourth task.
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
        channels.stop.cancel();
        tokio::time::timeout(LIMIT, running).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn fetching_stops_when_the_task_budget_is_spent() {
        let broker = MemoryBroker::new();
        let tasks = ["a", "b", "c"].map(|n| Envelope::new(n, Q, vec![0x80]));
        broker.enqueue(&tasks).await.unwrap();
        let (fetcher, mut channels) = fetcher(&broker, Some(2));
        // It returns by itself, without being stopped.
        tokio::time::timeout(LIMIT, fetcher.run()).await.unwrap();
        let mut names = Vec::new();
        while let Ok(batch) = channels.tasks.try_recv() {
            names.extend(batch.into_iter().map(|(d, _)| d.envelope.name));
        }
        assert_eq!(names, ["a", "b"]);
        assert_eq!(broker.stats(&Q).await.unwrap().ready_total(), 1);
    }
}

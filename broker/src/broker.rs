//! The transport-neutral broker contract and the types it passes around.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::envelope::{Envelope, TaskId, Timestamp};
use crate::error::Result;
use crate::job::{JobStatus, Progress};
use crate::queue::{Priority, QueueName};
use crate::task::RateLimit;
use crate::workflow::{
    NodeContext, NodeName, NodeSettlement, Settled, SweepReport, WorkflowId, WorkflowSpec,
    WorkflowStatus,
};

pub use self::stats::{ACTIVE_CONSUMER_WINDOW, QueueStats};

mod stats;

/// Where a fetched task sits in the broker until it is settled. Opaque to
/// callers; hand it back to [`Broker::ack`], [`Broker::retry`],
/// [`Broker::dead_letter`] or [`Broker::requeue`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DeliveryTag {
    pub(crate) queue: QueueName,
    pub(crate) priority: Priority,
    pub(crate) entry_id: String,
}

impl DeliveryTag {
    /// The queue the task was fetched from.
    #[must_use]
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// The priority stream it was fetched from.
    #[must_use]
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The broker's id for this entry (a Redis stream id such as
    /// `1732500000000-0`).
    #[must_use]
    pub fn entry_id(&self) -> &str {
        &self.entry_id
    }
}

impl fmt::Debug for DeliveryTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.queue, self.priority, self.entry_id)
    }
}

/// A task handed to one consumer, which now owes the broker an outcome.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Where to settle it.
    pub tag: DeliveryTag,
    /// The decoded envelope.
    pub envelope: Envelope,
    /// How many times the broker has handed out this entry, this time
    /// included.
    pub deliveries: u32,
}

/// An entry that must not run: its bytes are not a valid envelope, or
/// (with signing configured) they are not signed, or their signature does
/// not verify. The consumer must dead-letter it with [`Malformed::reason`];
/// it is never dropped silently nor redelivered forever.
#[derive(Debug, Clone)]
pub struct Malformed {
    /// Where to settle it.
    pub tag: DeliveryTag,
    /// The reason to dead-letter it with: [`DeadReason::Malformed`],
    /// [`DeadReason::Unsigned`], [`DeadReason::BadSignature`] or
    /// [`DeadReason::Oversized`].
    pub reason: DeadReason,
    /// Why it was refused, in words that say what to do.
    pub error: String,
}

/// The result of one [`Broker::fetch`].
#[derive(Debug, Default)]
pub struct FetchBatch {
    /// Decoded tasks, highest priority first.
    pub deliveries: Vec<Delivery>,
    /// Entries that must be dead-lettered.
    pub malformed: Vec<Malformed>,
}

impl FetchBatch {
    /// How many entries were claimed, malformed ones included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.deliveries.len() + self.malformed.len()
    }

    /// Whether nothing was claimed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What to reclaim; see [`Broker::reclaim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimRequest {
    /// Entries idle this long belong to a dead worker.
    pub min_idle: Duration,
    /// The most entries to claim.
    pub max: usize,
    /// The delivery count (this claim included) from which an entry is a
    /// suspect: it was in that many workers that died, and may be what
    /// kills them.
    pub suspect_at: u32,
    /// The caller holds no other task, so it may take one suspect, alone.
    pub alone: bool,
}

/// The result of [`Broker::reclaim`].
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// What was claimed: one suspect alone, or ordinary entries.
    pub batch: FetchBatch,
    /// Suspects left waiting for a worker that holds nothing else.
    pub suspects_waiting: usize,
}

/// Why a task was moved to its queue's dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadReason {
    /// The entry is not a valid envelope.
    Malformed,
    /// No handler is registered for the task's name.
    UnknownTask,
    /// The payload does not decode as the handler's task type.
    BadPayload,
    /// The task failed on its last allowed attempt.
    AttemptsExhausted,
    /// The entry was delivered more often than allowed without an outcome
    /// (its workers keep dying).
    TooManyDeliveries,
    /// The broker requires signed envelopes and the entry is not signed.
    Unsigned,
    /// The entry is signed, but its signature does not verify with any
    /// accepted key (forged, altered, or signed with an unknown key).
    BadSignature,
    /// The entry (or the result its run produced) is larger than the
    /// configured limit; the error gives both sizes.
    Oversized,
}

impl DeadReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::Malformed,
        Self::UnknownTask,
        Self::BadPayload,
        Self::AttemptsExhausted,
        Self::TooManyDeliveries,
        Self::Unsigned,
        Self::BadSignature,
        Self::Oversized,
    ];

    /// The short code stored with the dead letter.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownTask => "unknown_task",
            Self::BadPayload => "bad_payload",
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::TooManyDeliveries => "too_many_deliveries",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::Oversized => "oversized",
        }
    }

    /// The reason for a code from [`DeadReason::as_str`].
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == code)
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to record when dead-lettering a delivery.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The category.
    pub reason: DeadReason,
    /// The error in words (a decode error, the handler's last error).
    pub error: String,
    /// How many runs were made.
    pub attempts: u32,
}

/// A task resting in a dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetterEntry {
    /// The dead-letter entry's own id.
    pub entry_id: String,
    /// The queue it died in.
    pub queue: QueueName,
    /// The envelope, when the original bytes decode as one (for a signed
    /// frame, the envelope inside it). Not necessarily authentic: an entry
    /// dead-lettered as `unsigned` or `bad_signature` shows what was
    /// injected.
    pub envelope: Option<Envelope>,
    /// The original envelope bytes, kept exactly (a signed frame
    /// included); for an entry that had no envelope field, all its fields
    /// as a MessagePack array of alternating names and values.
    pub raw: Vec<u8>,
    /// The reason code ([`DeadReason::as_str`], or a newer one).
    pub reason: String,
    /// The error in words.
    pub error: String,
    /// How many runs were made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub dead_at: Timestamp,
}

impl DeadLetterEntry {
    /// The envelope of the next run, when the dead letter holds one: it
    /// keeps counting attempts (so the job store, which orders writes by
    /// attempt, records it over the dead outcome) and gets a fresh budget
    /// of as many attempts as the task had. This is what
    /// [`Broker::requeue_dead`] sends back, and what the job store records
    /// for it.
    #[must_use]
    pub fn next_run(&self) -> Option<Envelope> {
        self.envelope.as_ref().map(|envelope| {
            let budget = envelope.max_attempts.max(1);
            Envelope {
                max_attempts: envelope.attempt.saturating_add(budget),
                ..envelope.next_attempt(None)
            }
        })
    }
}

/// Where [`Broker::find_task`] found a task in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskPlace {
    /// In a priority stream: ready, or running (fetched and not settled).
    Queued,
    /// In the delayed set, not due yet.
    Delayed,
    /// In the dead-letter stream.
    Dead,
}

impl TaskPlace {
    /// The place in a word: `queued`, `delayed` or `dead`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delayed => "delayed",
            Self::Dead => "dead",
        }
    }
}

impl fmt::Display for TaskPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message every worker receives on the control channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ControlMessage {
    /// Stop the task with this id: skip it if it has not started, cancel
    /// its run if it has.
    Revoke {
        /// The task.
        id: TaskId,
    },
    /// Stop fetching this queue (see [`Broker::pause`]).
    Pause {
        /// The queue.
        queue: QueueName,
    },
    /// Fetch this queue again (see [`Broker::resume`]).
    Resume {
        /// The queue.
        queue: QueueName,
    },
}

/// The control channel as seen by one subscriber. It ends when the
/// subscription breaks: subscribe again, and reload what may have been
/// missed meanwhile (see [`Broker::revoked`] and [`Broker::paused`]).
pub type ControlStream = Pin<Box<dyn Stream<Item = ControlMessage> + Send>>;

/// News about one task, for whoever waits on it (a `TaskHandle`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TaskEvent {
    /// The handler reported progress.
    Progress {
        /// The task.
        id: TaskId,
        /// The attempt reporting it.
        attempt: u32,
        /// How far it got.
        progress: Progress,
    },
    /// The task reached a final outcome, and its record is stored.
    Finished {
        /// The task.
        id: TaskId,
        /// How it ended.
        status: JobStatus,
    },
}

impl TaskEvent {
    /// The task the event is about.
    #[must_use]
    pub fn id(&self) -> TaskId {
        match self {
            Self::Progress { id, .. } | Self::Finished { id, .. } => *id,
        }
    }
}

/// One task's events as seen by one subscriber.
pub type TaskEvents = Pin<Box<dyn Stream<Item = TaskEvent> + Send>>;

/// A message broker with Spool's delivery semantics: at-least-once, late
/// acknowledgement, three priorities per queue, delayed tasks and
/// dead letters.
///
/// [`RedisBroker`](crate::RedisBroker) is the production transport;
/// [`MemoryBroker`](crate::MemoryBroker) has the same semantics inside one
/// process, for unit tests and examples. Workers and clients are generic over
/// this trait.
pub trait Broker: Clone + Send + Sync + 'static {
    /// Enqueues tasks: those whose `eta` is in the future go to their queue's
    /// delayed set, the others straight to their priority stream.
    ///
    /// # Errors
    ///
    /// [`Error::Connection`](crate::Error::Connection) or
    /// [`Error::Backend`](crate::Error::Backend) when the broker fails; some
    /// of the tasks may have been enqueued then.
    fn enqueue(&self, envelopes: &[Envelope]) -> impl Future<Output = Result<()>> + Send;

    /// Enqueues `envelope` unless a task holding its `unique_key` is queued
    /// or running; the key is held for at most `ttl`, and released earlier
    /// when its task reaches a final outcome. Returns the id of the task
    /// that holds the key when this one was not enqueued.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) if the envelope has no
    /// unique key; otherwise when the broker fails.
    fn enqueue_unique(
        &self,
        envelope: &Envelope,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<TaskId>>> + Send;

    /// Releases the unique key `key` of `queue` if task `holder` still holds
    /// it (it may have expired and been taken by a newer task).
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn release_unique(
        &self,
        queue: &QueueName,
        key: &str,
        holder: TaskId,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Takes a token from the shared bucket of task `name`: `None` when the
    /// task may start now, else how long until a token is free.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn acquire_rate(
        &self,
        name: &str,
        limit: RateLimit,
    ) -> impl Future<Output = Result<Option<Duration>>> + Send;

    /// Claims up to `max` tasks of `queue` for `consumer`, highest priority
    /// first, promoting delayed tasks that are due. When none is ready it
    /// waits up to `wait` for one to arrive (less if a delayed task falls due
    /// sooner) and returns what it claimed, possibly nothing.
    ///
    /// Never more than `max` entries are claimed, so a consumer that fetches
    /// only for free slots never holds more than its prefetch bound. A
    /// paused queue ([`Broker::pause`]) yields nothing: the fetch waits as on
    /// an empty queue, and gives back anything a wait claimed after the
    /// pause.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: entries claimed by a fetch whose future is dropped
    /// stay pending for `consumer` until they are reclaimed. Let it finish:
    /// it returns within `wait`.
    fn fetch(
        &self,
        queue: &QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<FetchBatch>> + Send;

    /// Claims tasks of `queue` whose lease lapsed: entries idle for at least
    /// the visibility timeout, whose worker died. Each [`Delivery`] says how
    /// many times its entry has been delivered.
    ///
    /// Suspects (see [`ReclaimRequest::suspect_at`]) are claimed only when
    /// [`ReclaimRequest::alone`] is set, and then alone.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`Broker::fetch`].
    fn reclaim(
        &self,
        queue: &QueueName,
        consumer: &str,
        request: ReclaimRequest,
    ) -> impl Future<Output = Result<Reclaimed>> + Send;

    /// Renews `consumer`'s leases on `tags` (a heartbeat): their idle time
    /// restarts, so they are not reclaimed while this worker lives. Returns
    /// the tags the consumer no longer holds (reclaimed by another worker
    /// after this one looked dead, or settled meanwhile).
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn renew(
        &self,
        consumer: &str,
        tags: &[DeliveryTag],
    ) -> impl Future<Output = Result<Vec<DeliveryTag>>> + Send;

    /// Acknowledges finished deliveries and removes their entries.
    ///
    /// # Errors
    ///
    /// When the broker fails; unacknowledged entries are redelivered later.
    fn ack(&self, tags: &[DeliveryTag]) -> impl Future<Output = Result<()>> + Send;

    /// Settles a delivery by scheduling `next` (its next attempt) at
    /// `next.eta`: the negative acknowledgement with a retry delay.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn retry(&self, tag: &DeliveryTag, next: &Envelope) -> impl Future<Output = Result<()>> + Send;

    /// Settles a delivery by moving it, bytes intact, to its queue's
    /// dead-letter stream with the reason.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn dead_letter(
        &self,
        tag: &DeliveryTag,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Gives an unstarted delivery back to its stream for any consumer.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn requeue(&self, tag: &DeliveryTag) -> impl Future<Output = Result<()>> + Send;

    /// Revokes a task for `ttl` (long enough to outlive its queueing):
    /// workers skip it if it has not started and cancel its run if it has.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn revoke(&self, id: TaskId, ttl: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Looks for task `id` in `queue`: its priority streams (ready or
    /// running), its delayed set and its dead letters, in that order. It
    /// reads every entry of the queue (filtered server-side where it can),
    /// so it is for operators' commands, not hot paths.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn find_task(
        &self,
        queue: &QueueName,
        id: TaskId,
    ) -> impl Future<Output = Result<Option<TaskPlace>>> + Send;

    /// Checks that the broker's credentials allow everything a worker of
    /// `queues` does, so that a missing permission stops a worker at
    /// start-up, named, instead of failing every fetch. The default (and
    /// the in-memory broker) has nothing to check.
    ///
    /// # Errors
    ///
    /// [`Error::Permission`](crate::Error::Permission) naming what is
    /// missing; otherwise when the broker fails.
    fn check_permissions(&self, queues: &[QueueName]) -> impl Future<Output = Result<()>> + Send {
        let _ = queues;
        async { Ok(()) }
    }

    /// The tasks revoked and not yet forgotten, for a worker (re)joining the
    /// control channel.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn revoked(&self) -> impl Future<Output = Result<Vec<TaskId>>> + Send;

    /// Subscribes to the control channel every worker listens to.
    ///
    /// # Errors
    ///
    /// When the subscription cannot be made.
    fn control(&self) -> impl Future<Output = Result<ControlStream>> + Send;

    /// Publishes task events to their watchers (fire and forget: nobody may
    /// be watching).
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn publish_events(&self, events: &[TaskEvent]) -> impl Future<Output = Result<()>> + Send;

    /// Subscribes to one task's events. Events published before the
    /// subscription are not replayed: check the job store after
    /// subscribing.
    ///
    /// # Errors
    ///
    /// When the subscription cannot be made.
    fn task_events(&self, id: TaskId) -> impl Future<Output = Result<TaskEvents>> + Send;

    /// Checks the server for settings that could lose tasks (an eviction
    /// policy other than `noeviction`, say) and returns a warning for each.
    ///
    /// # Errors
    ///
    /// When the broker cannot be reached.
    fn server_warnings(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Reads a queue's counts and signals ([`QueueStats`]) in one
    /// consistent snapshot.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn stats(&self, queue: &QueueName) -> impl Future<Output = Result<QueueStats>> + Send;

    /// Pauses a queue: from now on no fetch claims its tasks and its delayed
    /// tasks are not promoted, until [`Broker::resume`]. Tasks already
    /// fetched are not affected here (workers hear of the pause on the
    /// control channel and give back what they have not started); nothing
    /// is lost. Pausing a paused queue changes nothing.
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
    /// broker.enqueue(&[Envelope::new("spool.ping", QueueName::GPU, vec![])]).await?;
    /// broker.pause(&QueueName::GPU).await?;
    /// assert_eq!(broker.paused().await?, [QueueName::GPU]);
    /// let batch = broker.fetch(&QueueName::GPU, "w", 10, Duration::ZERO).await?;
    /// assert!(batch.is_empty() && broker.stats(&QueueName::GPU).await?.paused);
    ///
    /// broker.resume(&QueueName::GPU).await?;
    /// let batch = broker.fetch(&QueueName::GPU, "w", 10, Duration::ZERO).await?;
    /// assert_eq!(batch.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn pause(&self, queue: &QueueName) -> impl Future<Output = Result<()>> + Send;

    /// Resumes a paused queue: fetches claim its tasks again, and due
    /// delayed tasks are promoted. Resuming a queue that is not paused
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn resume(&self, queue: &QueueName) -> impl Future<Output = Result<()>> + Send;

    /// The paused queues, sorted by name, for a worker (re)joining the
    /// control channel and for inspection.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn paused(&self) -> impl Future<Output = Result<Vec<QueueName>>> + Send;

    /// Every queue that holds keys of tasks (a priority stream, delayed
    /// tasks or dead letters), sorted by name, whether or not any worker
    /// serves it: what `spoolctl queues` lists, so that a backlog nobody
    /// consumes is seen. On Redis this `SCAN`s the key prefix (every master
    /// of a cluster); it never blocks the server, but it reads every key
    /// name, so it is for inspection, not for hot paths.
    ///
    /// The default knows no queue: a broker that cannot list its keys.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn known_queues(&self) -> impl Future<Output = Result<Vec<QueueName>>> + Send {
        std::future::ready(Ok(Vec::new()))
    }

    /// Deletes every task of a queue, whatever its state (ready, running,
    /// delayed, dead), and returns how many there were.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn purge(&self, queue: &QueueName) -> impl Future<Output = Result<u64>> + Send;

    /// Moves dead letters back to their queue for another round of
    /// attempts: those with the given dead-letter entry ids, or all of them
    /// when `entry_ids` is `None`. Each keeps its id and its attempt count
    /// (so the job store records the new run over the dead outcome) and
    /// gets a fresh budget of as many attempts as it had. Entries that are not valid envelopes go
    /// back as they are (a fixed worker may read them now). With signing
    /// keys, only dead letters whose signature verifies are revived and
    /// signed again; the others go back as they are, and a signing worker
    /// refuses them again. Returns how many
    /// were requeued; one already requeued or purged by someone else is
    /// skipped, never doubled.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn requeue_dead(
        &self,
        queue: &QueueName,
        entry_ids: Option<&[String]>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes a queue's dead letters and returns how many there were.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn purge_dead(&self, queue: &QueueName) -> impl Future<Output = Result<u64>> + Send;

    /// Lists up to `limit` dead letters of a queue, oldest first.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn dead_letters(
        &self,
        queue: &QueueName,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetterEntry>>> + Send;

    /// Submits a workflow: checks it ([`WorkflowSpec::validate`], the
    /// envelopes' sizes), writes its whole graph atomically and enqueues
    /// its roots. All of it exists afterwards, or none of it and an error.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWorkflow`](crate::Error::InvalidWorkflow) or
    /// [`Error::Oversized`](crate::Error::Oversized) with nothing written;
    /// [`Error::WorkflowExists`](crate::Error::WorkflowExists) if its id is
    /// taken; otherwise when the broker fails before the graph is written.
    /// Once it is written the submit succeeds: roots that could not be
    /// enqueued at once wait in the outbox for the sweeper.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: dropped after the graph was written, the
    /// roots wait in the outbox and the sweeper enqueues them.
    fn submit_workflow(&self, spec: &WorkflowSpec) -> impl Future<Output = Result<()>> + Send;

    /// Records how a node's task ended, adds the children it asked for,
    /// and moves the children that became ready to the outbox, in one
    /// atomic step (see the [`workflow`](crate::workflow) module). Call it
    /// before acknowledging the node's delivery, then
    /// [`Broker::dispatch_outbox`]. Repeating it changes nothing.
    ///
    /// Dynamic children that cannot be added (a repeated or taken name,
    /// an oversized task, more nodes than the workflow's limit) make the
    /// node fail, naming why, rather than the call: the node settles
    /// either way.
    ///
    /// # Errors
    ///
    /// When the broker fails (the outcome may or may not be recorded:
    /// repeat it).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the step is atomic and idempotent.
    fn settle_node(
        &self,
        settlement: &NodeSettlement,
    ) -> impl Future<Output = Result<Settled>> + Send;

    /// Settles several nodes, of one workflow or of many, each exactly as
    /// [`Broker::settle_node`] settles it, in as few round trips as the
    /// broker allows (on Redis, one script call per workflow, all in
    /// flight at once): what a worker's settler does with a batch of
    /// outcomes. One result per settlement, in order; a failed one may or
    /// may not be recorded (repeat it).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: each settlement is atomic and idempotent.
    fn settle_nodes(
        &self,
        settlements: &[&NodeSettlement],
    ) -> impl Future<Output = Vec<Result<Settled>>> + Send {
        async move {
            let mut settled = Vec::with_capacity(settlements.len());
            for settlement in settlements {
                settled.push(self.settle_node(settlement).await);
            }
            settled
        }
    }

    /// Enqueues what waits in a workflow's outbox, each task at most once
    /// ever (deduplicated by task id in its queue), and empties the
    /// outbox. Returns how many tasks were enqueued by this call.
    ///
    /// # Errors
    ///
    /// When the broker fails; what was not dispatched stays in the outbox.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: every step is idempotent.
    fn dispatch_outbox(&self, workflow: WorkflowId) -> impl Future<Output = Result<usize>> + Send;

    /// Dispatches the outboxes of several workflows together, as
    /// [`Broker::dispatch_outbox`] dispatches each, in as few round trips
    /// as the broker allows. Returns how many tasks were enqueued.
    ///
    /// # Errors
    ///
    /// When the broker fails; what was not dispatched stays in the
    /// outboxes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: every step is idempotent.
    fn dispatch_outboxes(
        &self,
        workflows: &[WorkflowId],
    ) -> impl Future<Output = Result<usize>> + Send {
        async move {
            let mut enqueued = 0;
            for &workflow in workflows {
                enqueued += self.dispatch_outbox(workflow).await?;
            }
            Ok(enqueued)
        }
    }

    /// A node's state, current task id and parents' results, in one round
    /// trip: what a worker reads before running a node. `None` when the
    /// workflow or the node is unknown.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn node_context(
        &self,
        workflow: WorkflowId,
        node: &NodeName,
    ) -> impl Future<Output = Result<Option<NodeContext>>> + Send;

    /// The contexts of several nodes, of one workflow or of many, each as
    /// [`Broker::node_context`] reads it, in as few round trips as the
    /// broker allows (on Redis, one script call per workflow, all in
    /// flight at once): what a worker reads for the nodes it is about to
    /// run. One result per node, in order.
    fn node_contexts(
        &self,
        nodes: &[(WorkflowId, NodeName)],
    ) -> impl Future<Output = Vec<Result<Option<NodeContext>>>> + Send {
        async move {
            let mut contexts = Vec::with_capacity(nodes.len());
            for (workflow, node) in nodes {
                contexts.push(self.node_context(*workflow, node).await);
            }
            contexts
        }
    }

    /// A workflow's state and every node's, in one snapshot; `None` when
    /// it is unknown.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    fn workflow_status(
        &self,
        workflow: WorkflowId,
    ) -> impl Future<Output = Result<Option<WorkflowStatus>>> + Send;

    /// Cancels a running workflow: its unsettled nodes are cancelled, its
    /// outbox emptied, and its queued nodes' tasks revoked (a running one
    /// is stopped). Returns whether it was running.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorkflow`](crate::Error::UnknownWorkflow), or when
    /// the broker fails.
    ///
    /// # Cancel safety
    ///
    /// Dropped between the cancellation and the revocations, the tasks of
    /// queued nodes may still run; their settlements change nothing.
    fn cancel_workflow(&self, workflow: WorkflowId) -> impl Future<Output = Result<bool>> + Send;

    /// Reruns a finished workflow's failed, dead-lettered, revoked,
    /// expired and cancelled nodes, each with a new task id; succeeded
    /// nodes keep their outputs. Returns how many nodes were reset.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownWorkflow`](crate::Error::UnknownWorkflow),
    /// [`Error::WorkflowConflict`](crate::Error::WorkflowConflict) while it
    /// is running, or when the broker fails before the reset. Ready nodes
    /// that cannot be enqueued at once wait in the outbox for the sweeper.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: dropped after the reset, the ready nodes
    /// wait in the outbox for the sweeper.
    fn retry_workflow(&self, workflow: WorkflowId) -> impl Future<Output = Result<usize>> + Send;

    /// One repair pass over the live workflows: dispatches outboxes older
    /// than `grace`, fails workflows past their deadline, drops finished
    /// workflows (and index entries without a graph older than `grace`)
    /// from the index. Idempotent, and safe on every worker at once.
    ///
    /// # Errors
    ///
    /// When the broker fails; the next pass picks up where it stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: every step is idempotent.
    fn sweep_workflows(&self, grace: Duration) -> impl Future<Output = Result<SweepReport>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_parses_back_from_its_code() {
        for reason in DeadReason::ALL {
            assert_eq!(DeadReason::from_code(reason.as_str()), Some(reason));
        }
        assert_eq!(
            DeadReason::from_code("unsigned"),
            Some(DeadReason::Unsigned)
        );
        assert_eq!(
            DeadReason::from_code("bad_signature"),
            Some(DeadReason::BadSignature)
        );
        assert_eq!(DeadReason::from_code("nope"), None);
    }
}

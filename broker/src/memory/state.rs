//! The in-memory broker's state: queues as Redis would hold them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::broker::{ACTIVE_CONSUMER_WINDOW, DeadLetterEntry, QueueStats};
use crate::envelope::{TaskId, Timestamp};
use crate::queue::{Priority, QueueName};

#[derive(Default)]
pub(super) struct State {
    pub(super) queues: HashMap<QueueName, QueueState>,
    pub(super) ids: Ids,
    /// Revoked task ids, until when they are remembered.
    pub(super) revoked: HashMap<TaskId, Timestamp>,
    /// Unique locks by (queue, key): the holder and until when.
    pub(super) unique: HashMap<(QueueName, String), (TaskId, Timestamp)>,
    /// Rate-limit buckets by task name: tokens left and when last refilled.
    pub(super) rates: HashMap<String, (f64, u64)>,
}

impl State {
    /// The queue, created on first use as Redis creates streams, and the id
    /// generator, borrowed together.
    pub(super) fn queue(&mut self, name: &QueueName) -> (&mut QueueState, &mut Ids) {
        (self.queues.entry(name.clone()).or_default(), &mut self.ids)
    }
}

/// Generates Redis-style entry ids: `<ms>-<seq>`, strictly increasing even
/// if the clock goes back, as `XADD *` does.
#[derive(Default)]
pub(super) struct Ids {
    pub(super) ms: u64,
    pub(super) seq: u64,
    /// Orders delayed tasks due at the same millisecond by insertion.
    pub(super) inserted: u64,
}

impl Ids {
    pub(super) fn next(&mut self) -> String {
        let now = Timestamp::now().as_millis();
        if now > self.ms {
            (self.ms, self.seq) = (now, 0);
        } else {
            self.seq += 1;
        }
        format!("{}-{}", self.ms, self.seq)
    }
}

/// An entry held by a consumer, as in a Redis pending entries list.
pub(super) struct Pending {
    pub(super) bytes: Vec<u8>,
    pub(super) priority: Priority,
    pub(super) consumer: String,
    /// When it was last claimed or renewed: its idle time starts here.
    pub(super) since: Instant,
    pub(super) deliveries: u32,
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) ready: [VecDeque<(String, Vec<u8>)>; 3],
    /// Entries ever pushed to the ready streams, as Redis' `entries-added`.
    pub(super) added: u64,
    /// When each consumer last fetched here.
    pub(super) consumers: HashMap<String, Instant>,
    /// While set, fetches neither promote nor claim.
    pub(super) paused: bool,
    /// Claimed and not yet settled, by entry id. Entry ids are unique per
    /// broker, so a tag (which also names the priority) finds its entry.
    pub(super) pending: HashMap<String, Pending>,
    /// Keyed by (due ms, insertion order).
    pub(super) delayed: BTreeMap<(u64, u64), (Priority, Vec<u8>)>,
    pub(super) dead: Vec<DeadLetterEntry>,
    /// Woken whenever an entry lands in a ready stream, or in the delayed
    /// set (a waiting fetch then shortens its wait to the new due time).
    pub(super) notify: Arc<Notify>,
}

impl QueueState {
    pub(super) fn push(&mut self, priority: Priority, id: String, bytes: Vec<u8>) {
        self.ready[priority.index()].push_back((id, bytes));
        self.added += 1;
        self.notify.notify_waiters();
    }

    pub(super) fn seen(&mut self, consumer: &str) {
        match self.consumers.get_mut(consumer) {
            Some(at) => *at = Instant::now(),
            None => {
                self.consumers.insert(consumer.to_owned(), Instant::now());
            }
        }
    }

    /// Consumers that fetched within [`ACTIVE_CONSUMER_WINDOW`] or hold
    /// pending entries, as `stats.lua` counts them.
    fn active_consumers(&self) -> usize {
        let fetching = self
            .consumers
            .iter()
            .filter(|(_, at)| at.elapsed() < ACTIVE_CONSUMER_WINDOW)
            .map(|(name, _)| name.as_str());
        let holding = self.pending.values().map(|p| p.consumer.as_str());
        fetching.chain(holding).collect::<HashSet<_>>().len()
    }

    pub(super) fn stats(&self) -> QueueStats {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let now = Timestamp::now().as_millis();
        let ready = self.ready.each_ref().map(|s| count(s.len()));
        let pending = count(self.pending.len());
        let oldest_ready = self
            .ready
            .iter()
            .filter_map(|s| s.front())
            .map(|(id, _)| id_order(id).0)
            .min();
        let oldest_due = self
            .delayed
            .first_key_value()
            .map(|(&(due, _), _)| due)
            .filter(|&due| due <= now);
        let oldest_age = oldest_ready
            .into_iter()
            .chain(oldest_due)
            .min()
            .map(|since| Duration::from_millis(now.saturating_sub(since)));
        let in_streams = ready.iter().sum::<u64>() + pending;
        QueueStats {
            ready,
            pending,
            delayed: count(self.delayed.len()),
            dead: count(self.dead.len()),
            delayed_due: count(self.delayed.range(..=(now, u64::MAX)).count()),
            oldest_age,
            consumers: count(self.active_consumers()),
            enqueued_total: self.added,
            completed_total: self.added.saturating_sub(in_streams),
            paused: self.paused,
        }
    }

    pub(super) fn delay(
        &mut self,
        ids: &mut Ids,
        due: Timestamp,
        priority: Priority,
        bytes: Vec<u8>,
    ) {
        ids.inserted += 1;
        self.delayed
            .insert((due.as_millis(), ids.inserted), (priority, bytes));
        self.notify.notify_waiters();
    }
}

/// Orders entry ids (`<ms>-<seq>`) numerically, as Redis does.
pub(super) fn id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

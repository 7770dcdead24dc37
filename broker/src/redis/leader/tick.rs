//! The fenced, idempotent enqueue of a periodic tick, and the per-queue
//! keys it keeps: the queue's copy of the newest fencing token, and each
//! entry's last enqueued tick.

use std::sync::LazyLock;

use redis::{AsyncCommands, Script};

use super::{FencingToken, LeaderLock, valid_name};
use crate::envelope::{Envelope, Timestamp};
use crate::error::{Error, Result};
use crate::queue::QueueName;
use crate::redis::{RedisBroker, map_redis};
use crate::signing;

static FENCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/beat_fence.lua")));
static ENQUEUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/beat_enqueue.lua")));

/// What came of [`LeaderLock::enqueue_tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TickOutcome {
    /// The tick is in its stream now.
    Enqueued,
    /// A tick of the entry at or after this one was enqueued before, by this
    /// leader or another: nothing was enqueued.
    AlreadyEnqueued {
        /// The scheduled time of the entry's last enqueued tick.
        last: Timestamp,
    },
    /// A newer leader has used the queue: nothing was enqueued, and the
    /// caller must stop acting as the leader.
    Fenced {
        /// The newest token the queue has seen.
        newer: FencingToken,
    },
}

impl RedisBroker {
    /// The scheduled time of the last enqueued tick of `entry` on `queue`,
    /// if any: where a new leader resumes.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid entry name, connection errors
    /// otherwise.
    pub async fn last_tick(&self, queue: &QueueName, entry: &str) -> Result<Option<Timestamp>> {
        let key = self.tick_key(queue, entry)?;
        let last: Option<u64> = self.conn().get(key).await.map_err(map_redis)?;
        Ok(last.map(Timestamp::from_millis))
    }

    /// `spool:{queue}:<what>`, in the queue's hash slot as in `keys.rs`.
    fn queue_scoped(&self, queue: &QueueName, what: &str) -> String {
        format!("{}:{{{queue}}}:{what}", self.inner.config.key_prefix)
    }

    fn tick_key(&self, queue: &QueueName, entry: &str) -> Result<String> {
        if !valid_name(entry) {
            return Err(Error::Config(format!(
                "entry name {entry:?} must be non-empty, printable, without braces or whitespace"
            )));
        }
        Ok(self.queue_scoped(queue, &format!("beat:{entry}")))
    }
}

impl LeaderLock {
    /// Marks `queue` as used by the leader with `token`: from now on it
    /// refuses [`enqueue_tick`](Self::enqueue_tick) from older tokens. A new
    /// leader calls this for each of its queues before its first tick.
    /// Returns `false` if a newer token was used there already: the caller
    /// is a stale leader (or Redis lost the counter, see
    /// [`advance_counter`](Self::advance_counter)).
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub async fn fence_queue(&self, token: FencingToken, queue: &QueueName) -> Result<bool> {
        let fresh: i64 = FENCE
            .key(self.fence_key(queue))
            .arg(token.0)
            .invoke_async(&mut self.broker.conn())
            .await
            .map_err(map_redis)?;
        Ok(fresh == 1)
    }

    /// The newest token used on `queue`, if any.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub async fn queue_token(&self, queue: &QueueName) -> Result<Option<FencingToken>> {
        let token: Option<u64> = self
            .broker
            .conn()
            .get(self.fence_key(queue))
            .await
            .map_err(map_redis)?;
        Ok(token.map(FencingToken))
    }

    /// Enqueues `envelope` as the tick of `entry` scheduled at `scheduled`,
    /// unless the queue has seen a newer token than `token` (a newer leader
    /// took over), or the entry's last enqueued tick is at or after
    /// `scheduled`. Both checks and the append to the envelope's priority
    /// stream are one atomic script on the queue's slot.
    ///
    /// The envelope goes to its queue and priority ready to run, encoded as
    /// every other enqueue encodes it (signed, when the broker has signing
    /// keys).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid entry name, or an envelope with a
    /// future ETA or a unique key (a tick is enqueued ready, and unique
    /// tasks take their own lock); encoding and connection errors
    /// otherwise. After a connection error the tick may or may not have
    /// been enqueued: retrying is safe, as a repeat is recognised.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the same way: the tick is enqueued once or not at all.
    pub async fn enqueue_tick(
        &self,
        token: FencingToken,
        entry: &str,
        scheduled: Timestamp,
        envelope: &Envelope,
    ) -> Result<TickOutcome> {
        let tick_key = self.broker.tick_key(&envelope.queue, entry)?;
        if envelope.eta.is_some_and(|eta| eta > Timestamp::now()) {
            return Err(Error::Config(
                "a tick is enqueued ready to run: its envelope must not have a future ETA".into(),
            ));
        }
        if envelope.unique_key.is_some() {
            return Err(Error::Config(
                "a tick's envelope cannot carry a unique key".into(),
            ));
        }
        let keys = self.broker.keys(&envelope.queue);
        let (code, value): (i64, u64) = ENQUEUE
            .key(self.fence_key(&envelope.queue))
            .key(tick_key)
            .key(keys.stream(envelope.priority))
            .arg(token.0)
            .arg(scheduled.as_millis())
            .arg(signing::wire(envelope, self.broker.signing(), None)?)
            .invoke_async(&mut self.broker.conn())
            .await
            .map_err(map_redis)?;
        Ok(match code {
            1 => TickOutcome::Enqueued,
            0 => TickOutcome::AlreadyEnqueued {
                last: Timestamp::from_millis(value),
            },
            _ => TickOutcome::Fenced {
                newer: FencingToken(value),
            },
        })
    }

    /// The queue's copy of the newest token of this lock used on it.
    fn fence_key(&self, queue: &QueueName) -> String {
        self.broker
            .queue_scoped(queue, &format!("fence:{}", self.name))
    }
}

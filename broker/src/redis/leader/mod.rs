//! A leader lock with fencing tokens, and fenced, idempotent enqueues of
//! periodic ticks: what lets several `spool-beat` replicas run while each
//! tick is enqueued exactly once. [`LeaderLock`]'s documentation describes
//! the keys and the guarantee.

mod tick;

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

pub use self::tick::TickOutcome;

use super::{RedisBroker, map_redis, millis};
use crate::error::{Error, Result};

static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/beat_acquire.lua")));
static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/beat_renew.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/beat_release.lua")));
static ADVANCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/beat_advance.lua")));

/// A fencing token: drawn from a counter each time a [`LeaderLock`] is
/// taken, so a later leader always holds a larger token than an earlier one.
///
/// # Examples
///
/// ```
/// use spool_broker::FencingToken;
///
/// assert!(FencingToken::new(7) > FencingToken::new(6));
/// assert_eq!(FencingToken::new(7).get(), 7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The token numbered `value`.
    #[must_use]
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// Its number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who holds a [`LeaderLock`] now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockHolder {
    /// The holder's owner id.
    pub owner: String,
    /// The token it took the lock with.
    pub token: FencingToken,
    /// How long its lease lasts unless renewed.
    pub expires_in: Duration,
}

/// A leader lock in Redis with fencing tokens: at most one holder at a time
/// per lock name, for a lease that the holder renews.
///
/// Made by [`RedisBroker::leader_lock`]. Every replica builds one with its
/// own owner id and calls [`try_acquire`](Self::try_acquire) until it gets
/// a token; the leader then calls [`renew`](Self::renew) well within the
/// lease, and [`release`](Self::release) when it stops, so a standby takes
/// over at once. Writes that must not come from a stale leader go through
/// [`enqueue_tick`](Self::enqueue_tick), which the queue refuses once a
/// newer token has been used there.
///
/// # Keys
///
/// | key | type | holds |
/// | --- | --- | --- |
/// | `spool:{@leader}:<lock>` | string, `PX` lease | `<token>:<owner>` of the current leader |
/// | `spool:{@leader}:<lock>:fence` | string (counter) | the last fencing token handed out; never expires |
/// | `spool:{<queue>}:fence:<lock>` | string | the newest token any leader of `<lock>` used on the queue |
/// | `spool:{<queue>}:beat:<entry>` | string | the scheduled time (ms) of the entry's last enqueued tick |
///
/// # The guarantee, and why it holds on a Redis Cluster
///
/// The lock and its counter share the hash tag `{@leader}`, so taking the
/// lock and drawing a new token (`INCR`) is one script. A queue's stream
/// lives on the queue's slot, which on a cluster differs from the lock's,
/// and a script may only touch keys of one slot. So the enqueue script
/// cannot read the lock. Instead, each queue keeps a **copy** of the newest
/// token used on it, in its own slot, and the enqueue script (one slot: the
/// copy, the entry's last tick and the stream) does three things atomically:
///
/// 1. refuses a token older than the copy (classic fencing: the resource
///    remembers the newest token and rejects older ones), else raises the
///    copy to the caller's token;
/// 2. refuses a tick whose scheduled time is not after the entry's last
///    enqueued tick (idempotence), else records it;
/// 3. appends the envelope to the priority stream.
///
/// Hence, for every entry:
///
/// - **At most once per tick, always.** The last-tick record only moves
///   forward, and it moves in the same script as the `XADD`. Whatever the
///   leases, clocks or pauses, no two scripts enqueue the same (entry,
///   scheduled time), nor a tick older than one already enqueued.
/// - **Stale leaders are refused** on every queue a newer leader has
///   touched. A new leader touches each of its queues right after taking
///   the lock ([`LeaderLock::fence_queue`]), so from then on a paused,
///   partitioned or slow former leader cannot enqueue there. In the short
///   window before that, both may enqueue, and point 2 still makes each
///   tick happen once.
/// - What is *not* promised by the lock alone: that a tick happens at all.
///   That is the scheduler's job (it catches up on missed ticks by its
///   policy), and the lease bounds how long a dead leader delays it.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use spool_broker::RedisBroker;
///
/// # async fn demo() -> spool_broker::Result<()> {
/// let broker = RedisBroker::connect_url("redis://127.0.0.1:6379/").await?;
/// let lock = broker.leader_lock("beat", "host-a:4242", Duration::from_secs(10))?;
/// if let Some(token) = lock.try_acquire().await? {
///     // Lead, renewing every few seconds…
///     assert!(lock.renew(token).await?);
///     lock.release(token).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LeaderLock {
    broker: RedisBroker,
    name: String,
    owner: String,
    lease: Duration,
    key: String,
    counter: String,
}

impl RedisBroker {
    /// The leader lock `name` (such as `beat`), as seen by the replica
    /// `owner`, with leases of `lease`.
    ///
    /// `owner` must be unique to the replica (host, process id and a random
    /// part, say): a holder recognises its own lock by it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty name or one with braces or
    /// whitespace, an empty owner, or a lease under a millisecond.
    pub fn leader_lock(
        &self,
        name: &str,
        owner: impl Into<String>,
        lease: Duration,
    ) -> Result<LeaderLock> {
        if !valid_name(name) {
            return Err(Error::Config(format!(
                "lock name {name:?} must be non-empty, printable, without braces or whitespace"
            )));
        }
        let owner = owner.into();
        if owner.is_empty() {
            return Err(Error::Config("a lock owner id must not be empty".into()));
        }
        if lease < Duration::from_millis(1) {
            return Err(Error::Config(
                "a leader lock needs a lease of at least 1 ms".into(),
            ));
        }
        let key = format!("{}:{{@leader}}:{name}", self.inner.config.key_prefix);
        Ok(LeaderLock {
            broker: self.clone(),
            name: name.to_owned(),
            owner,
            lease,
            counter: format!("{key}:fence"),
            key,
        })
    }
}

impl LeaderLock {
    /// The lock's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This replica's owner id.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How long a lease lasts.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Takes the lock if nobody holds it, with a new fencing token, or
    /// extends the lease if this owner holds it already (keeping its token).
    /// Returns `None` while another owner holds it.
    ///
    /// The lease runs from when Redis ran the command: a caller that counts
    /// it from before the call never overestimates it.
    ///
    /// # Errors
    ///
    /// Connection errors; then the caller does not know whether it holds
    /// the lock and must not act as the leader.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave the lock taken by this owner; the next
    /// call, or the lease running out, settles it.
    pub async fn try_acquire(&self) -> Result<Option<FencingToken>> {
        let (token, _ms_left): (u64, i64) = ACQUIRE
            .key(&self.key)
            .key(&self.counter)
            .arg(&self.owner)
            .arg(millis(self.lease))
            .invoke_async(&mut self.broker.conn())
            .await
            .map_err(map_redis)?;
        Ok((token > 0).then_some(FencingToken(token)))
    }

    /// Extends the lease if this owner still holds the lock with `token`.
    /// Returns `false` if it does not (the lease ran out, or another owner
    /// took the lock since): the caller must stop leading.
    ///
    /// # Errors
    ///
    /// Connection errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the renewal happened or it did not.
    pub async fn renew(&self, token: FencingToken) -> Result<bool> {
        let renewed: i64 = RENEW
            .key(&self.key)
            .arg(self.value(token))
            .arg(millis(self.lease))
            .invoke_async(&mut self.broker.conn())
            .await
            .map_err(map_redis)?;
        Ok(renewed == 1)
    }

    /// Gives the lock up if this owner holds it with `token`, so that a
    /// standby can take it at once. Returns whether it did.
    ///
    /// # Errors
    ///
    /// Connection errors; the lease then runs out by itself.
    pub async fn release(&self, token: FencingToken) -> Result<bool> {
        let released: i64 = RELEASE
            .key(&self.key)
            .arg(self.value(token))
            .invoke_async(&mut self.broker.conn())
            .await
            .map_err(map_redis)?;
        Ok(released == 1)
    }

    /// Who holds the lock now, if anyone.
    ///
    /// # Errors
    ///
    /// Connection errors, or [`Error::Backend`] if the lock holds a value
    /// that this format does not describe.
    pub async fn holder(&self) -> Result<Option<LockHolder>> {
        let mut pipe = redis::pipe();
        pipe.get(&self.key).pttl(&self.key);
        let (value, ttl_ms): (Option<String>, i64) = pipe
            .query_async(&mut self.broker.conn())
            .await
            .map_err(map_redis)?;
        let Some(value) = value else {
            return Ok(None);
        };
        let parsed = value
            .split_once(':')
            .and_then(|(token, owner)| Some((token.parse().ok()?, owner)));
        let Some((token, owner)) = parsed else {
            return Err(Error::Backend(
                format!("leader lock {} holds an unreadable value", self.name).into(),
            ));
        };
        Ok(Some(LockHolder {
            owner: owner.to_owned(),
            token: FencingToken(token),
            expires_in: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
        }))
    }

    /// Makes sure the next token drawn is larger than `seen`, a token found
    /// on a queue. Only needed when Redis lost the lock's counter but kept
    /// a queue's copy (partial data loss): new tokens would otherwise be
    /// refused there for good. Raising the counter is always safe.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub async fn advance_counter(&self, seen: FencingToken) -> Result<()> {
        let _: u64 = ADVANCE
            .key(&self.counter)
            .arg(seen.0)
            .invoke_async(&mut self.broker.conn())
            .await
            .map_err(map_redis)?;
        Ok(())
    }

    /// The lock's value while this owner holds it with `token`.
    fn value(&self, token: FencingToken) -> String {
        format!("{}:{}", token.0, self.owner)
    }
}

/// A lock or entry name usable inside a key: non-empty, printable, and
/// without braces (which would steal the hash tag) or whitespace.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '{' && c != '}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_braces_or_spaces_are_invalid() {
        assert!(valid_name("beat"));
        assert!(valid_name("nightly-report:v2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("x{y}"));
        assert!(!valid_name("tab\there"));
    }

    #[test]
    fn tokens_order_by_number() {
        assert!(FencingToken::new(2) > FencingToken::new(1));
        assert_eq!(FencingToken::new(9).to_string(), "9");
    }
}

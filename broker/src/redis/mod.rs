//! The Redis Streams transport.

mod acl;
mod claim;
mod config;
mod conn;
mod keys;
mod leader;
mod pause;
mod registry;
mod reply;
mod scripts;
mod tls;
mod workflow;

pub use self::config::RedisConfig;
pub use self::leader::{FencingToken, LeaderLock, LockHolder, TickOutcome};
pub use self::tls::{ClientCertificate, TlsConfig};

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::Poll;
use std::time::Duration;

use deadpool_redis::PoolError;
use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};
use redis::{AsyncCommands, RedisError, Value};

use self::claim::delayed_member;
use self::config::redact_url;
use self::conn::{Commands, Connections, WaitPool};
use self::keys::QueueKeys;
use self::reply::Claim;
use self::scripts::{Scripts, on_streams};
use crate::broker::{
    ACTIVE_CONSUMER_WINDOW, Broker, ControlMessage, ControlStream, DeadLetter, DeadLetterEntry,
    DeliveryTag, FetchBatch, QueueStats, ReclaimRequest, Reclaimed, TaskEvent, TaskEvents,
    TaskPlace,
};
use crate::envelope::{Envelope, TaskId, Timestamp};
use crate::error::{Error, Result};
use crate::queue::{Priority, QueueName};
use crate::signing;
use crate::task::RateLimit;
use crate::workflow::{
    NodeContext, NodeName, NodeSettlement, Settled, SweepReport, WorkflowId, WorkflowSpec,
    WorkflowStatus,
};

/// The consumer group every worker of a queue joins.
const GROUP: &str = "spool";

/// The most commands in one pipeline sent by `enqueue`. Bulk enqueues are cut
/// into pipelines this size, and the next is encoded while Redis runs the
/// one before.
const ENQUEUE_CHUNK: usize = 256;

/// How many of a bulk enqueue's pipelines may be in flight at once.
const ENQUEUE_IN_FLIGHT: usize = 4;

struct Inner {
    /// Opens pub/sub subscriptions: one client per node to try in turn.
    pubsub: Vec<redis::Client>,
    /// Shared by every non-blocking command: requests from all tasks are
    /// pipelined on it, and it reconnects by itself.
    commands: Commands,
    /// Exclusive connections for blocking reads, which would stall a shared one.
    waits: WaitPool,
    config: RedisConfig,
    scripts: Scripts,
    keys: RwLock<HashMap<QueueName, Arc<QueueKeys>>>,
}

/// Spool's broker on Redis Streams: one stream per queue and priority, a
/// delayed sorted set and a dead-letter stream per queue, one consumer group
/// per stream, late acknowledgement with `XACK` + `XDEL`.
///
/// Cloning is cheap: clones share one connection pool.
///
/// # Examples
///
/// ```no_run
/// use spool_broker::{Broker, Envelope, QueueName, RedisBroker};
///
/// # async fn demo() -> spool_broker::Result<()> {
/// let broker = RedisBroker::connect_url("redis://127.0.0.1:6379/").await?;
/// broker.enqueue(&[Envelope::new("spool.ping", QueueName::DEFAULT, vec![])]).await?;
/// let stats = broker.stats(&QueueName::DEFAULT).await?;
/// println!("{} ready", stats.ready_total());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &redact_url(&self.inner.config.url))
            .field("key_prefix", &self.inner.config.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Connects with the default configuration for `url`.
    ///
    /// # Errors
    ///
    /// See [`RedisBroker::connect`].
    pub async fn connect_url(url: impl Into<String>) -> Result<Self> {
        Self::connect(RedisConfig::from_url(url)).await
    }

    /// Builds the connection pool and checks that Redis answers.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid URL or key prefix,
    /// [`Error::Connection`] when Redis does not answer a `PING`.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        if !keys::valid_prefix(&config.key_prefix) {
            return Err(Error::Config(format!(
                "key prefix {:?} must be non-empty, without braces or spaces",
                config.key_prefix
            )));
        }
        let Connections {
            commands,
            waits,
            pubsub,
        } = Connections::open(&config).await?;
        let broker = Self {
            inner: Arc::new(Inner {
                pubsub,
                commands,
                waits,
                config,
                scripts: Scripts::new(),
                keys: RwLock::new(HashMap::new()),
            }),
        };
        let _: () = redis::cmd("PING")
            .query_async(&mut broker.conn())
            .await
            .map_err(|e| conn::map_connect(e, &broker.inner.config.url))?;
        Ok(broker)
    }

    /// The configuration this broker was built with.
    #[must_use]
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Ids of revoked tasks, scored by when the revocation may be forgotten.
    fn revoked_key(&self) -> String {
        format!("{}:revoked", self.inner.config.key_prefix)
    }

    /// The pub/sub channel every worker listens to.
    fn control_channel(&self) -> String {
        format!("{}:control", self.inner.config.key_prefix)
    }

    /// The pub/sub channel of one task's events.
    fn task_channel(&self, id: TaskId) -> String {
        format!("{}:task:{id}", self.inner.config.key_prefix)
    }

    /// Subscribes to a pub/sub channel on a connection of its own, and
    /// decodes its messages; one that does not decode is skipped (a newer
    /// publisher's, say). The stream ends when the connection breaks.
    async fn subscribe<T>(&self, channel: String) -> Result<Pin<Box<dyn Stream<Item = T> + Send>>>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        // In a cluster any node will do: a classic PUBLISH reaches every
        // node's subscribers. Try them in turn.
        let mut failure = Error::Config("no Redis node to subscribe on".into());
        let mut connected = None;
        for client in &self.inner.pubsub {
            match client.get_async_pubsub().await {
                Ok(pubsub) => {
                    connected = Some(pubsub);
                    break;
                }
                Err(e) => failure = map_redis(e),
            }
        }
        let Some(mut pubsub) = connected else {
            return Err(failure);
        };
        pubsub.subscribe(channel).await.map_err(map_redis)?;
        let messages = pubsub.into_on_message().filter_map(|message| async move {
            rmp_serde::from_slice(message.get_payload_bytes()).ok()
        });
        Ok(Box::pin(messages))
    }

    /// Sends independent commands: in one pipeline on a single server; on
    /// a cluster one by one, all in flight at once, since their keys (and
    /// `PUBLISH` channels, which the cluster client routes like keys) may
    /// lie in different slots.
    async fn send_all(&self, commands: Vec<redis::Cmd>) -> Result<()> {
        if self.inner.commands.is_cluster() {
            let sent = commands.into_iter().map(|command| {
                let mut conn = self.conn();
                async move { command.query_async::<()>(&mut conn).await }
            });
            futures_util::future::try_join_all(sent)
                .await
                .map_err(map_redis)?;
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for command in commands {
            pipe.add_command(command).ignore();
        }
        pipe.query_async(&mut self.conn()).await.map_err(map_redis)
    }

    /// Refuses an envelope allowing no attempt, or larger than
    /// `max_envelope_bytes` on the wire.
    fn check_size(&self, envelope: &Envelope) -> Result<()> {
        signing::check_for_enqueue(
            envelope,
            self.signing(),
            self.inner.config.max_envelope_bytes,
        )
    }

    /// How fetched entries are checked before they are decoded.
    fn admission(&self) -> reply::Admission<'_> {
        reply::Admission {
            signing: self.signing(),
            max_bytes: self.inner.config.max_envelope_bytes,
        }
    }

    /// The shared connection (a cheap handle clone).
    fn conn(&self) -> Commands {
        self.inner.commands.clone()
    }

    fn keys(&self, queue: &QueueName) -> Arc<QueueKeys> {
        let cached = self
            .inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .cloned();
        if let Some(keys) = cached {
            return keys;
        }
        let keys = Arc::new(QueueKeys::new(&self.inner.config.key_prefix, queue));
        self.inner
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.clone(), Arc::clone(&keys));
        keys
    }
}

/// What a bulk enqueue's pipelines did, envelope by envelope.
#[derive(Default)]
struct EnqueueTally {
    enqueued: Vec<TaskId>,
    refused: usize,
    first_refusal: Option<Error>,
}

impl EnqueueTally {
    /// Adds one pipeline's replies. A pipeline that failed as a whole (the
    /// connection broke) ends the enqueue: what it did is unknown.
    fn add(
        &mut self,
        (chunk, replies): (
            &[Envelope],
            redis::RedisResult<Vec<redis::RedisResult<Value>>>,
        ),
    ) -> Result<()> {
        let replies = match replies {
            Ok(replies) => replies,
            Err(e) if self.enqueued.is_empty() => return Err(map_redis(e)),
            Err(e) => {
                return Err(Error::PartialEnqueue {
                    enqueued: std::mem::take(&mut self.enqueued),
                    refused: 0,
                    source: Box::new(map_redis(e)),
                });
            }
        };
        for (envelope, reply) in chunk.iter().zip(replies) {
            match reply {
                Ok(_) => self.enqueued.push(envelope.id),
                Err(e) => {
                    self.refused += 1;
                    self.first_refusal.get_or_insert_with(|| map_redis(e));
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self.first_refusal {
            None => Ok(()),
            // Nothing made it: the refusal says it all.
            Some(refusal) if self.enqueued.is_empty() => Err(refusal),
            Some(refusal) => Err(Error::PartialEnqueue {
                enqueued: self.enqueued,
                refused: self.refused,
                source: Box::new(refusal),
            }),
        }
    }
}

/// Encodes a pub/sub message, as [`RedisBroker::subscribe`] decodes it.
fn encode_message<T: serde::Serialize>(what: &'static str, message: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec(message).map_err(|e| Error::encode(what, e))
}

fn map_redis(e: RedisError) -> Error {
    if let Some(denied) = permission_error(&e) {
        return denied;
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        Error::Connection(Box::new(e))
    } else {
        Error::Backend(Box::new(e))
    }
}

/// A refusal by Redis' ACLs, whether of a command sent (`NOPERM`) or of
/// one a script ran for the caller (`ERR The user executing the script
/// can't run this command`, or `can't access at least one of the keys`
/// where a rule grants the command on other keys only):
/// [`Error::Permission`], which no retry fixes.
fn permission_error(e: &RedisError) -> Option<Error> {
    let detail = e.detail().unwrap_or_default();
    let noperm = e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm);
    let in_script = detail.contains("user executing the script can't")
        || detail.contains("no permissions to access");
    if !noperm && !in_script {
        return None;
    }
    // "... no permissions to run the 'xadd' command" names it.
    let named = detail
        .split_once("to run the '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(command, _)| command.to_ascii_uppercase());
    let command = match named {
        Some(command) => command,
        None if detail.contains("script") => {
            "a command inside one of Spool's Lua scripts".to_owned()
        }
        None => "a command on Spool's keys or channels".to_owned(),
    };
    Some(Error::Permission {
        command,
        detail: format!("{} {detail}", e.code().unwrap_or("NOPERM")),
    })
}

fn map_pool(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => map_redis(e),
        PoolError::Closed => Error::Closed,
        PoolError::Timeout(kind) => {
            Error::Connection(format!("timed out waiting for a Redis connection ({kind:?})").into())
        }
        other => Error::Connection(other.to_string().into()),
    }
}

/// Orders stream ids (`<ms>-<seq>`) numerically, as Redis does.
fn stream_id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn millis(duration: Duration) -> usize {
    usize::try_from(duration.as_millis()).unwrap_or(usize::MAX)
}

impl Broker for RedisBroker {
    async fn enqueue(&self, envelopes: &[Envelope]) -> Result<()> {
        // Every envelope checked before any is sent: an oversized one
        // refuses the whole batch, never half of it.
        for envelope in envelopes {
            self.check_size(envelope)?;
        }
        let now = Timestamp::now();
        // Futures are first polled in push order, so pipelines reach the
        // connection in input order; encoding the next overlaps with Redis
        // running the ones in flight.
        let mut in_flight = FuturesOrdered::new();
        // A cluster pipeline must stay in one slot, that is one queue: cut
        // at every change of queue there (runs keep each queue's order).
        let cluster = self.inner.commands.is_cluster();
        let runs = envelopes.chunk_by(|a, b| !cluster || a.queue == b.queue);
        let mut tally = EnqueueTally::default();
        for chunk in runs.flat_map(|run| run.chunks(ENQUEUE_CHUNK)) {
            let pipe = self.enqueue_pipeline(chunk, now)?;
            if in_flight.len() == ENQUEUE_IN_FLIGHT
                && let Some(sent) = in_flight.next().await
            {
                tally.add(sent)?;
            }
            let mut conn = self.conn();
            in_flight.push_back(async move {
                let replies = pipe
                    .query_async::<Vec<redis::RedisResult<Value>>>(&mut conn)
                    .await;
                (chunk, replies)
            });
            // Poll once now, so this pipeline is written before the next one
            // is encoded rather than after.
            if let Poll::Ready(Some(sent)) = futures_util::poll!(in_flight.next()) {
                tally.add(sent)?;
            }
        }
        while let Some(sent) = in_flight.next().await {
            tally.add(sent)?;
        }
        tally.finish()
    }

    async fn enqueue_unique(&self, envelope: &Envelope, ttl: Duration) -> Result<Option<TaskId>> {
        let Some(unique_key) = &envelope.unique_key else {
            return Err(Error::Config(
                "enqueue_unique needs an envelope with a unique key".into(),
            ));
        };
        self.check_size(envelope)?;
        let keys = self.keys(&envelope.queue);
        let (due, entry) = match envelope.eta {
            Some(eta) if eta > Timestamp::now() => {
                (eta.as_millis(), delayed_member(envelope, self.signing())?)
            }
            _ => (0, signing::wire(envelope, self.signing(), None)?),
        };
        let holder: Option<String> = self
            .inner
            .scripts
            .enqueue_unique
            .key(keys.unique(unique_key))
            .key(keys.stream(envelope.priority))
            .key(&keys.delayed)
            .arg(envelope.id.to_string())
            .arg(millis(ttl).max(1))
            .arg(due)
            .arg(entry)
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        holder.map(|id| id.parse()).transpose()
    }

    async fn release_unique(&self, queue: &QueueName, key: &str, holder: TaskId) -> Result<()> {
        let keys = self.keys(queue);
        let _: i64 = self
            .inner
            .scripts
            .release_unique
            .key(keys.unique(key))
            .arg(holder.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        Ok(())
    }

    async fn acquire_rate(&self, name: &str, limit: RateLimit) -> Result<Option<Duration>> {
        let wait_ms: u64 = self
            .inner
            .scripts
            .rate_limit
            .key(format!("{}:rate:{name}", self.inner.config.key_prefix))
            .arg(limit.limit)
            .arg(millis(limit.period).max(1))
            .arg(Timestamp::now().as_millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    async fn fetch(
        &self,
        queue: &QueueName,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<FetchBatch> {
        let max = max.max(1);
        let keys = self.keys(queue);
        let (batch, claim) = self.claim_ready(queue, &keys, consumer, max).await?;
        let idle = match claim {
            Claim::Claimed => return Ok(batch),
            Claim::Idle(idle) => idle,
            Claim::Paused => {
                // Nothing is ready on a paused queue: wait as on an empty
                // one, so that a caller unaware of the pause does not spin.
                tokio::time::sleep(wait).await;
                return Ok(batch);
            }
        };
        let until_due = idle
            .next_due
            .map(|due| due.saturating_since(Timestamp::now()));
        let due_first = until_due.is_some_and(|until_due| until_due < wait);
        let wait = until_due.map_or(wait, |until_due| wait.min(until_due));
        // `BLOCK 0` would wait forever: a zero wait returns at once instead.
        if wait < Duration::from_millis(1) {
            return Ok(batch);
        }
        if max >= Priority::ALL.len() {
            let batch = self
                .claim_blocking(queue, &keys, consumer, max, wait)
                .await?;
            if !batch.is_empty() || !due_first {
                return Ok(batch);
            }
            // The wait ended because a delayed task fell due: promote and
            // claim it now, as a waiting fetch with fewer slots does, rather
            // than hand the caller nothing.
            Ok(self.claim_ready(queue, &keys, consumer, max).await?.0)
        } else {
            self.wait_then_claim(queue, &keys, consumer, max, wait, &idle)
                .await
        }
    }

    async fn reclaim(
        &self,
        queue: &QueueName,
        consumer: &str,
        request: ReclaimRequest,
    ) -> Result<Reclaimed> {
        let keys = self.keys(queue);
        let mut invocation = on_streams(&self.inner.scripts.reclaim, &keys);
        invocation
            .arg(GROUP)
            .arg(consumer)
            .arg(millis(request.min_idle))
            .arg(request.max.max(1))
            .arg(request.suspect_at)
            .arg(u8::from(request.alone));
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        reply::reclaimed(queue, self.admission(), reply)
    }

    async fn renew(&self, consumer: &str, tags: &[DeliveryTag]) -> Result<Vec<DeliveryTag>> {
        let mut by_stream: HashMap<(&QueueName, Priority), Vec<&DeliveryTag>> = HashMap::new();
        for tag in tags {
            by_stream
                .entry((&tag.queue, tag.priority))
                .or_default()
                .push(tag);
        }
        let mut lost = Vec::new();
        for ((queue, priority), mut held) in by_stream {
            held.sort_by_key(|tag| stream_id_order(&tag.entry_id));
            let keys = self.keys(queue);
            let mut invocation = self.inner.scripts.renew.key(keys.stream(priority));
            invocation.arg(GROUP).arg(consumer);
            for tag in &held {
                invocation.arg(&tag.entry_id);
            }
            let reply: Value = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(map_redis)?;
            let gone = reply::ids(reply)?;
            lost.extend(
                held.into_iter()
                    .filter(|tag| gone.contains(&tag.entry_id))
                    .cloned(),
            );
        }
        Ok(lost)
    }

    async fn ack(&self, tags: &[DeliveryTag]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        // Each stream's ids next to each other.
        let mut sorted: Vec<&DeliveryTag> = tags.iter().collect();
        sorted.sort_unstable_by(|a, b| (&a.queue, a.priority).cmp(&(&b.queue, b.priority)));
        // One script per stream (XACK and XDEL of its ids together), all
        // in flight at once: a script, unlike MULTI, runs on a Redis out of
        // memory, and acknowledging is what frees it.
        let streams = sorted
            .chunk_by(|a, b| (&a.queue, a.priority) == (&b.queue, b.priority))
            .filter_map(|stream| {
                let first = stream.first()?;
                let keys = self.keys(&first.queue);
                let mut invocation = self.inner.scripts.ack.key(keys.stream(first.priority));
                invocation.arg(GROUP);
                for tag in stream {
                    invocation.arg(&tag.entry_id);
                }
                let mut conn = self.conn();
                Some(async move {
                    invocation
                        .invoke_async::<i64>(&mut conn)
                        .await
                        .map_err(map_redis)
                })
            });
        futures_util::future::try_join_all(streams).await?;
        Ok(())
    }

    async fn retry(&self, tag: &DeliveryTag, next: &Envelope) -> Result<()> {
        let keys = self.keys(&tag.queue);
        let due = next.eta.unwrap_or_else(Timestamp::now);
        let mut conn = self.conn();
        let _: i64 = self
            .inner
            .scripts
            .retry
            .key(keys.stream(tag.priority))
            .key(&keys.delayed)
            .arg(GROUP)
            .arg(&tag.entry_id)
            .arg(due.as_millis())
            .arg(delayed_member(next, self.signing())?)
            .invoke_async(&mut conn)
            .await
            .map_err(map_redis)?;
        Ok(())
    }

    async fn dead_letter(&self, tag: &DeliveryTag, letter: &DeadLetter) -> Result<()> {
        let keys = self.keys(&tag.queue);
        let mut conn = self.conn();
        let _: Value = self
            .inner
            .scripts
            .dead_letter
            .key(keys.stream(tag.priority))
            .key(&keys.dead)
            .arg(GROUP)
            .arg(&tag.entry_id)
            .arg(letter.reason.as_str())
            .arg(&letter.error)
            .arg(letter.attempts)
            .arg(Timestamp::now().as_millis())
            .invoke_async(&mut conn)
            .await
            .map_err(map_redis)?;
        Ok(())
    }

    async fn requeue(&self, tag: &DeliveryTag) -> Result<()> {
        let keys = self.keys(&tag.queue);
        let mut conn = self.conn();
        let _: i64 = self
            .inner
            .scripts
            .requeue
            .key(keys.stream(tag.priority))
            .arg(GROUP)
            .arg(&tag.entry_id)
            .invoke_async(&mut conn)
            .await
            .map_err(map_redis)?;
        Ok(())
    }

    async fn revoke(&self, id: TaskId, ttl: Duration) -> Result<()> {
        let until = Timestamp::now().saturating_add(ttl).as_millis();
        let message = encode_message("control message", &ControlMessage::Revoke { id })?;
        self.send_all(vec![
            redis::Cmd::zadd(self.revoked_key(), id.to_string(), until),
            redis::Cmd::publish(self.control_channel(), message),
        ])
        .await
    }

    async fn find_task(&self, queue: &QueueName, id: TaskId) -> Result<Option<TaskPlace>> {
        const PAGE: usize = 1000;
        let keys = self.keys(queue);
        let needle = crate::envelope::id_needle(id);
        let places = keys
            .streams
            .iter()
            .map(|stream| (stream.as_str(), "stream", TaskPlace::Queued))
            .chain([
                (keys.delayed.as_str(), "zset", TaskPlace::Delayed),
                (keys.dead.as_str(), "stream", TaskPlace::Dead),
            ]);
        for (key, kind, place) in places {
            let mut start = if kind == "stream" { "-" } else { "0" }.to_owned();
            loop {
                let reply: Vec<Value> = self
                    .inner
                    .scripts
                    .find
                    .key(key)
                    .arg(kind)
                    .arg(&needle[..])
                    .arg(&start)
                    .arg(PAGE)
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(map_redis)?;
                let mut reply = reply.into_iter();
                let next = reply.next();
                let found = reply.any(|value| match value {
                    Value::BulkString(bytes) => crate::envelope::holds_task(&bytes, id),
                    _ => false,
                });
                if found {
                    return Ok(Some(place));
                }
                match next {
                    Some(Value::BulkString(next)) => {
                        start = String::from_utf8_lossy(&next).into_owned();
                    }
                    _ => break,
                }
            }
        }
        Ok(None)
    }

    async fn check_permissions(&self, queues: &[QueueName]) -> Result<()> {
        RedisBroker::check_permissions(self, queues).await
    }

    async fn revoked(&self) -> Result<Vec<TaskId>> {
        let now = Timestamp::now().as_millis();
        let key = self.revoked_key();
        let mut pipe = redis::pipe();
        // Forget revocations whose time is up, then list the rest.
        pipe.zrembyscore(&key, "-inf", now).ignore();
        pipe.zrangebyscore(&key, now, "+inf");
        let (ids,): (Vec<String>,) = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    async fn control(&self) -> Result<ControlStream> {
        self.subscribe(self.control_channel()).await
    }

    async fn publish_events(&self, events: &[TaskEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let publishes = events
            .iter()
            .map(|event| {
                let payload = encode_message("task event", event)?;
                Ok(redis::Cmd::publish(self.task_channel(event.id()), payload))
            })
            .collect::<Result<Vec<_>>>()?;
        self.send_all(publishes).await
    }

    async fn task_events(&self, id: TaskId) -> Result<TaskEvents> {
        self.subscribe(self.task_channel(id)).await
    }

    async fn server_warnings(&self) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        // Server-wide questions go to one node: in a cluster every node is
        // configured alike, and a fanned-out reply would not parse.
        let policy: redis::RedisResult<Vec<String>> = self
            .conn()
            .query_one_node(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
            .await;
        match policy {
            Ok(pair) => match pair.get(1).map(String::as_str) {
                Some("noeviction") => {}
                Some(other) => warnings.push(format!(
                    "Redis maxmemory-policy is {other:?}: under memory pressure Redis will                      DELETE queued tasks. Set `maxmemory-policy noeviction`."
                )),
                None => {}
            },
            Err(e) if e.is_io_error() || e.is_connection_dropped() => return Err(map_redis(e)),
            Err(_) => warnings.push(
                "cannot read Redis' maxmemory-policy (CONFIG is not allowed for this user):                  make sure it is noeviction, or queued tasks may be deleted"
                    .to_owned(),
            ),
        }
        let info: String = self
            .conn()
            .query_one_node(redis::cmd("INFO").arg("server"))
            .await
            .map_err(map_redis)?;
        if let Some(version) = info.lines().find_map(|l| l.strip_prefix("redis_version:")) {
            let mut parts = version
                .trim()
                .split('.')
                .map(|p| p.parse::<u32>().unwrap_or(0));
            let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            if (major, minor) < (6, 2) {
                warnings.push(format!(
                    "Redis {version} is older than 6.2, which Spool needs (XAUTOCLAIM, ZRANGE BYSCORE)"
                ));
            }
        }
        Ok(warnings)
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let keys = self.keys(queue);
        let mut invocation = on_streams(&self.inner.scripts.stats, &keys);
        invocation
            .key(&keys.delayed)
            .key(&keys.dead)
            .key(&keys.paused)
            .key(&keys.consumers)
            .arg(GROUP)
            .arg(Timestamp::now().as_millis())
            .arg(millis(ACTIVE_CONSUMER_WINDOW));
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        reply::queue_stats(reply)
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        self.set_paused(queue, true).await
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        self.set_paused(queue, false).await
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        self.paused_queues().await
    }

    async fn known_queues(&self) -> Result<Vec<QueueName>> {
        let prefix = &self.inner.config.key_prefix;
        let names = self
            .conn()
            .scan_every_master(&keys::queue_key_pattern(prefix))
            .await
            .map_err(map_redis)?;
        let mut known: Vec<QueueName> = names
            .iter()
            .filter_map(|key| keys::queue_holding(prefix, key))
            .collect();
        known.sort();
        known.dedup();
        Ok(known)
    }

    async fn purge(&self, queue: &QueueName) -> Result<u64> {
        let keys = self.keys(queue);
        let mut invocation = on_streams(&self.inner.scripts.purge, &keys);
        invocation.key(&keys.delayed).key(&keys.dead);
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)
    }

    async fn requeue_dead(&self, queue: &QueueName, entry_ids: Option<&[String]>) -> Result<u64> {
        const PAGE: usize = 500;
        let keys = self.keys(queue);
        let mut requeued = 0;
        let mut after = "-".to_owned();
        loop {
            let page = match entry_ids {
                Some(ids) => {
                    let mut found = Vec::with_capacity(ids.len());
                    for id in ids {
                        let reply: Value = self
                            .conn()
                            .xrange(&keys.dead, id, id)
                            .await
                            .map_err(map_redis)?;
                        found.extend(reply::dead_letters(queue, reply)?);
                    }
                    found
                }
                None => {
                    let reply: Value = self
                        .conn()
                        .xrange_count(&keys.dead, &after, "+", PAGE)
                        .await
                        .map_err(map_redis)?;
                    reply::dead_letters(queue, reply)?
                }
            };
            let full_page = page.len() == PAGE;
            for letter in &page {
                let (priority, bytes) = signing::revive(letter, self.signing())?;
                let moved: i64 = self
                    .inner
                    .scripts
                    .requeue_dead
                    .key(&keys.dead)
                    .key(keys.stream(priority))
                    .arg(&letter.entry_id)
                    .arg(bytes)
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(map_redis)?;
                requeued += u64::try_from(moved).unwrap_or(0);
            }
            match page.last() {
                Some(last) if entry_ids.is_none() && full_page => {
                    after = format!("({}", last.entry_id)
                }
                _ => return Ok(requeued),
            }
        }
    }

    async fn purge_dead(&self, queue: &QueueName) -> Result<u64> {
        let keys = self.keys(queue);
        let mut pipe = redis::pipe();
        pipe.atomic().xlen(&keys.dead).del(&keys.dead).ignore();
        let (count,): (u64,) = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        Ok(count)
    }

    async fn dead_letters(&self, queue: &QueueName, limit: usize) -> Result<Vec<DeadLetterEntry>> {
        let keys = self.keys(queue);
        let mut conn = self.conn();
        let reply: Value = conn
            .xrange_count(&keys.dead, "-", "+", limit)
            .await
            .map_err(map_redis)?;
        reply::dead_letters(queue, reply)
    }

    async fn submit_workflow(&self, spec: &WorkflowSpec) -> Result<()> {
        self.wf_submit(spec).await
    }

    async fn settle_node(&self, settlement: &NodeSettlement) -> Result<Settled> {
        self.wf_settle(settlement).await
    }

    async fn settle_nodes(&self, settlements: &[&NodeSettlement]) -> Vec<Result<Settled>> {
        self.wf_settle_many(settlements).await
    }

    async fn dispatch_outbox(&self, workflow: WorkflowId) -> Result<usize> {
        self.wf_dispatch(workflow).await
    }

    async fn dispatch_outboxes(&self, workflows: &[WorkflowId]) -> Result<usize> {
        self.wf_dispatch_many(workflows).await
    }

    async fn node_contexts(
        &self,
        nodes: &[(WorkflowId, NodeName)],
    ) -> Vec<Result<Option<NodeContext>>> {
        self.wf_contexts(nodes).await
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

//! Building enqueue pipelines and claiming entries: the inherent halves of
//! `enqueue` and `fetch`.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::StreamReadOptions;
use redis::{AsyncCommands, Value};

use super::keys::QueueKeys;
use super::reply::{self, Claim, Idle};
use super::scripts::on_streams;
use super::{GROUP, RedisBroker, map_pool, map_redis, millis};
use crate::broker::{Broker as _, FetchBatch};
use crate::envelope::{Envelope, Timestamp};
use crate::error::Result;
use crate::queue::{Priority, QueueName};
use crate::signing::{self, SigningKeys};

impl RedisBroker {
    /// One pipeline enqueueing `envelopes`: due ones `XADD`ed to their
    /// stream, later ones `ZADD`ed to their queue's delayed set. Its replies
    /// come back one per envelope, errors included, so that a batch Redis
    /// refuses in part says which tasks made it.
    pub(crate) fn enqueue_pipeline(
        &self,
        envelopes: &[Envelope],
        now: Timestamp,
    ) -> Result<redis::Pipeline> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut keys: Option<Arc<QueueKeys>> = None;
        let signing = self.signing();
        for envelope in envelopes {
            // Bulk enqueues mostly target one queue: look its keys up once.
            let keys = match &keys {
                Some(k) if k.queue == envelope.queue => Arc::clone(k),
                _ => keys.insert(self.keys(&envelope.queue)).clone(),
            };
            match envelope.eta {
                Some(eta) if eta > now => {
                    pipe.zadd(
                        &keys.delayed,
                        delayed_member(envelope, signing)?,
                        eta.as_millis(),
                    );
                }
                _ => {
                    pipe.xadd(
                        keys.stream(envelope.priority),
                        "*",
                        &[("e", signing::wire(envelope, signing, None)?)],
                    );
                }
            }
        }
        Ok(pipe)
    }

    /// Promotes due delayed tasks and claims ready ones, highest priority
    /// first, all in one script; says where the streams stand if it found
    /// nothing, or that the queue is paused.
    pub(crate) async fn claim_ready(
        &self,
        queue: &QueueName,
        keys: &QueueKeys,
        consumer: &str,
        max: usize,
    ) -> Result<(FetchBatch, Claim)> {
        let mut invocation = on_streams(&self.inner.scripts.fetch, keys);
        invocation
            .key(&keys.delayed)
            .key(&keys.paused)
            .key(&keys.consumers)
            .key(&keys.dead)
            .arg(GROUP)
            .arg(consumer)
            .arg(max)
            .arg(Timestamp::now().as_millis())
            .arg(self.inner.config.promote_batch);
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        reply::fetch_batch(queue, self.admission(), reply)
    }

    /// Waits for and claims new entries in one blocking `XREADGROUP`. Its
    /// count applies per stream, so a third of `max` each keeps the total
    /// within `max`.
    pub(crate) async fn claim_blocking(
        &self,
        queue: &QueueName,
        keys: &QueueKeys,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<FetchBatch> {
        let options = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(max / Priority::ALL.len())
            .block(millis(wait));
        let mut conn = self.inner.waits.get().await.map_err(map_pool)?;
        let reply: redis::RedisResult<Value> = conn
            .xread_options(&keys.streams, &[">", ">", ">"], &options)
            .await;
        drop(conn);
        let batch = match reply {
            Ok(reply) => reply::read_group(queue, &keys.streams, self.admission(), reply)?,
            // The group vanished (Redis restarted without persistence): the
            // next fetch's script recreates it.
            Err(e) if e.code() == Some("NOGROUP") => return Ok(FetchBatch::default()),
            Err(e) => return Err(map_redis(e)),
        };
        if batch.is_empty() {
            return Ok(batch);
        }
        // A plain XREADGROUP cannot check the paused flag, and the queue may
        // have been paused while it waited: a task enqueued after the pause
        // must not start. Anything claimed then goes back, unstarted.
        let paused: bool = self.conn().exists(&keys.paused).await.map_err(map_redis)?;
        if !paused {
            return Ok(batch);
        }
        let tags = batch.deliveries.iter().map(|d| &d.tag);
        for tag in tags.chain(batch.malformed.iter().map(|m| &m.tag)) {
            self.requeue(tag).await?;
        }
        Ok(FetchBatch::default())
    }

    /// With fewer free slots than streams, waits without claiming (an
    /// `XREAD` from where each stream stood), then claims exactly.
    pub(crate) async fn wait_then_claim(
        &self,
        queue: &QueueName,
        keys: &QueueKeys,
        consumer: &str,
        max: usize,
        wait: Duration,
        idle: &Idle,
    ) -> Result<FetchBatch> {
        let started = tokio::time::Instant::now();
        let options = StreamReadOptions::default().block(millis(wait)).count(1);
        let mut conn = self.inner.waits.get().await.map_err(map_pool)?;
        let _: Value = conn
            .xread_options(&keys.streams, &idle.last_ids, &options)
            .await
            .map_err(map_redis)?;
        drop(conn);
        let (batch, claim) = self.claim_ready(queue, keys, consumer, max).await?;
        if matches!(claim, Claim::Paused) {
            // Paused while waiting: wait out the rest, as on an empty queue.
            tokio::time::sleep(wait.saturating_sub(started.elapsed())).await;
        }
        Ok(batch)
    }
}

/// A delayed-set member: the priority digit, then the envelope as the
/// stream will hold it (signed with `signing`, if set); `fetch.lua` moves
/// what follows the digit into the stream as it is.
pub(crate) fn delayed_member(
    envelope: &Envelope,
    signing: Option<&SigningKeys>,
) -> Result<Vec<u8>> {
    // `index` is at most 2: the digit is one of '0', '1', '2'.
    let digit = b'0' + envelope.priority.index() as u8;
    signing::wire(envelope, signing, Some(digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delayed_members_lead_with_the_priority_digit() {
        let mut e = Envelope::new("x", QueueName::DEFAULT, vec![]);
        e.priority = Priority::Low;
        let member = delayed_member(&e, None).unwrap();
        assert_eq!(member[0], b'2');
        assert_eq!(Envelope::decode(&member[1..]).unwrap(), e);
    }
}

//! Pausing queues: a flag per queue, in its slot, that the fetch script
//! obeys; an index of the paused queues; and the news on the control
//! channel, so running workers stop fetching at once.

use redis::AsyncCommands;

use super::{RedisBroker, encode_message, map_redis};
use crate::broker::ControlMessage;
use crate::envelope::Timestamp;
use crate::error::Result;
use crate::queue::QueueName;

impl RedisBroker {
    /// The names of the paused queues: an index for `Broker::paused`; each
    /// queue's own flag (in its slot) is what fetches check.
    fn paused_key(&self) -> String {
        format!("{}:paused", self.inner.config.key_prefix)
    }

    /// Sets or clears `queue`'s flag, then its place in the index, then
    /// tells the workers; one round trip, in that order, so a fetch obeys
    /// the flag before any worker hears of it.
    pub(crate) async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<()> {
        let keys = self.keys(queue);
        let message = if paused {
            ControlMessage::Pause {
                queue: queue.clone(),
            }
        } else {
            ControlMessage::Resume {
                queue: queue.clone(),
            }
        };
        let message = encode_message("control message", &message)?;
        let mut pipe = redis::pipe();
        if paused {
            pipe.set(&keys.paused, Timestamp::now().as_millis())
                .ignore();
            pipe.sadd(self.paused_key(), queue.as_str()).ignore();
        } else {
            pipe.del(&keys.paused).ignore();
            pipe.srem(self.paused_key(), queue.as_str()).ignore();
        }
        pipe.publish(self.control_channel(), message).ignore();
        pipe.query_async(&mut self.conn()).await.map_err(map_redis)
    }

    /// The paused queues, sorted: those of the index whose flag is set,
    /// whatever a pause or resume cut short left in the index.
    pub(crate) async fn paused_queues(&self) -> Result<Vec<QueueName>> {
        let names: Vec<String> = self
            .conn()
            .smembers(self.paused_key())
            .await
            .map_err(map_redis)?;
        let mut queues: Vec<QueueName> = names
            .into_iter()
            .filter_map(|name| QueueName::new(name).ok())
            .collect();
        if queues.is_empty() {
            return Ok(queues);
        }
        let mut pipe = redis::pipe();
        for queue in &queues {
            pipe.exists(&self.keys(queue).paused);
        }
        let flags: Vec<bool> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        let mut flags = flags.into_iter();
        queues.retain(|_| flags.next().unwrap_or(false));
        queues.sort();
        Ok(queues)
    }
}

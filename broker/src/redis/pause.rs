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
    /// tells the workers, in that order.
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
        // The flag first, alone: it lives in the queue's slot, the index
        // elsewhere (Redis Cluster). A fetch obeys the flag before any
        // worker hears the news.
        if paused {
            let _: () = self
                .conn()
                .set(&keys.paused, Timestamp::now().as_millis())
                .await
                .map_err(map_redis)?;
        } else {
            let _: () = self.conn().del(&keys.paused).await.map_err(map_redis)?;
        }
        let index = if paused {
            redis::Cmd::sadd(self.paused_key(), queue.as_str())
        } else {
            redis::Cmd::srem(self.paused_key(), queue.as_str())
        };
        self.send_all(vec![
            index,
            redis::Cmd::publish(self.control_channel(), message),
        ])
        .await
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
        // One EXISTS each: the flags sit in as many slots as queues.
        let checks = queues.iter().map(|queue| {
            let key = self.keys(queue).paused.clone();
            let mut conn = self.conn();
            async move { conn.exists::<_, bool>(key).await.map_err(map_redis) }
        });
        let flags = futures_util::future::try_join_all(checks).await?;
        let mut flags = flags.into_iter();
        queues.retain(|_| flags.next().unwrap_or(false));
        queues.sort();
        Ok(queues)
    }
}

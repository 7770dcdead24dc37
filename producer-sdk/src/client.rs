//! The [`Client`].

use std::time::Duration;

use spool_broker::{Broker, RedisBroker, RedisConfig, Task, TaskId};

use crate::enqueue::{Enqueue, EnqueueMany};
use crate::error::Result;

/// A handle for enqueueing tasks; cheap to clone and share.
///
/// `Client` is generic over the broker so tests and examples can run on a
/// [`MemoryBroker`](spool_broker::MemoryBroker); production code uses the
/// default, [`RedisBroker`].
#[derive(Debug, Clone)]
pub struct Client<B = RedisBroker> {
    broker: B,
}

impl Client<RedisBroker> {
    /// Connects to the Redis at `url` (`redis://`, `rediss://` for TLS,
    /// credentials in the URL for AUTH/ACL).
    ///
    /// # Errors
    ///
    /// When the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::new(RedisBroker::connect_url(url).await?))
    }

    /// Connects with a full [`RedisConfig`] (key prefix, pool size, timeouts).
    ///
    /// # Errors
    ///
    /// When the configuration is invalid or Redis does not answer.
    pub async fn connect_with(config: RedisConfig) -> Result<Self> {
        Ok(Self::new(RedisBroker::connect(config).await?))
    }
}

impl<B: Broker> Client<B> {
    /// A client over an existing broker.
    pub fn new(broker: B) -> Self {
        Self { broker }
    }

    /// The broker underneath, for inspection.
    pub fn broker(&self) -> &B {
        &self.broker
    }

    /// Revokes a task: workers skip it if it has not started, and cancel its
    /// run if it has (its handler's cancellation token fires; FFmpeg is
    /// stopped). Remembered for 24 hours; see [`Client::revoke_for`].
    ///
    /// # Errors
    ///
    /// When the broker fails.
    pub async fn revoke(&self, id: TaskId) -> Result<()> {
        self.revoke_for(id, Duration::from_secs(24 * 3600)).await
    }

    /// Revokes a task, remembering the revocation for `ttl`: long enough
    /// for the task to leave its queue.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    pub async fn revoke_for(&self, id: TaskId, ttl: Duration) -> Result<()> {
        Ok(self.broker.revoke(id, ttl).await?)
    }

    /// Starts enqueueing `task`; set overrides on the returned builder, then
    /// `.await` it for the task's id.
    ///
    /// # Examples
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// use spool_sdk::{Client, MemoryBroker, Task};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Ping;
    /// impl Task for Ping {
    ///     const NAME: &'static str = "spool.ping";
    ///     type Output = ();
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), spool_sdk::Error> {
    /// let client = Client::new(MemoryBroker::new());
    /// let id = client.enqueue(Ping).max_attempts(5).await?;
    /// # let _ = id; Ok(()) }
    /// ```
    pub fn enqueue<T: Task>(&self, task: T) -> Enqueue<'_, B, T> {
        Enqueue::new(self, task)
    }

    /// Starts enqueueing many tasks of one type in pipelined round trips; the
    /// builder's overrides apply to each. `.await` it for the ids, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// use spool_sdk::{Client, MemoryBroker, Priority, Task};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Thumb { second: u32 }
    /// impl Task for Thumb {
    ///     const NAME: &'static str = "app.thumb";
    ///     type Output = ();
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), spool_sdk::Error> {
    /// let client = Client::new(MemoryBroker::new());
    /// let ids = client
    ///     .enqueue_many((0..10).map(|second| Thumb { second }))
    ///     .priority(Priority::Low)
    ///     .await?;
    /// assert_eq!(ids.len(), 10);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_many<T, I>(&self, tasks: I) -> EnqueueMany<'_, B, T>
    where
        T: Task,
        I: IntoIterator<Item = T>,
    {
        EnqueueMany::new(self, tasks.into_iter().collect())
    }
}

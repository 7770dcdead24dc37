//! The [`Client`].

use std::time::Duration;

#[cfg(feature = "store")]
use spool_broker::store::JobStore;
use spool_broker::{Broker, RedisBroker, RedisConfig, Task, TaskId};

use crate::enqueue::{Enqueue, EnqueueMany};
#[cfg(feature = "store")]
use crate::error::Error;
use crate::error::Result;
#[cfg(feature = "store")]
use crate::handle::TaskHandle;

/// A handle for enqueueing tasks; cheap to clone and share.
///
/// `Client` is generic over the broker so tests and examples can run on a
/// [`MemoryBroker`](spool_broker::MemoryBroker); production code uses the
/// default, [`RedisBroker`].
#[cfg_attr(
    feature = "store",
    doc = "
With a job store ([`Client::with_store`]), it also records what it enqueues
and hands out [`TaskHandle`]s to follow tasks to their outcome."
)]
#[derive(Debug, Clone)]
pub struct Client<B = RedisBroker> {
    broker: B,
    #[cfg(feature = "store")]
    store: Option<JobStore>,
}

impl Client<RedisBroker> {
    /// Connects to the Redis at `url` (`redis://`, `rediss://` for TLS,
    /// `redis+cluster://host:port,host:port/` for a Redis Cluster;
    /// credentials in the URL for AUTH/ACL).
    ///
    /// # Errors
    ///
    /// When the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::new(RedisBroker::connect_url(url).await?))
    }

    /// Connects with a full [`RedisConfig`] (key prefix, pool size, timeouts,
    /// signing keys).
    ///
    /// Where workers require signed tasks, give the client the same key
    /// file as [`RedisConfig::signing`]: every envelope it enqueues is then
    /// signed with HMAC-SHA256, and workers dead-letter unsigned ones.
    ///
    /// ```no_run
    /// use spool_sdk::{Client, RedisConfig, SigningKeys};
    ///
    /// # async fn demo() -> Result<(), spool_sdk::Error> {
    /// let client = Client::connect_with(RedisConfig {
    ///     signing: Some(SigningKeys::from_file("/etc/spool/signing.keys")?),
    ///     ..RedisConfig::from_url("redis://127.0.0.1:6379/")
    /// })
    /// .await?;
    /// # let _ = client; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// When the configuration is invalid or Redis does not answer.
    pub async fn connect_with(config: RedisConfig) -> Result<Self> {
        Ok(Self::new(RedisBroker::connect(config).await?))
    }

    /// Connects to the Redis at `redis_url` and to the job store at
    /// `store_url` (`sqlite://spool.db`, `postgres://…`; created and
    /// migrated on first use): the client records what it enqueues, and
    /// [`Client::task`] follows tasks.
    ///
    /// # Errors
    ///
    /// When either URL is invalid, or Redis or the database does not
    /// answer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), spool_sdk::Error> {
    /// let client =
    ///     spool_sdk::Client::connect_with_store("redis://127.0.0.1:6379/", "sqlite://spool.db")
    ///         .await?;
    /// # let _ = client; Ok(()) }
    /// ```
    #[cfg(feature = "store")]
    pub async fn connect_with_store(redis_url: &str, store_url: &str) -> Result<Self> {
        let broker = RedisBroker::connect_url(redis_url).await?;
        let store = JobStore::connect(store_url).await?;
        Ok(Self::new(broker).with_store(store))
    }
}

impl<B: Broker> Client<B> {
    /// A client over an existing broker.
    pub fn new(broker: B) -> Self {
        Self {
            broker,
            #[cfg(feature = "store")]
            store: None,
        }
    }

    /// The broker underneath, for inspection.
    pub fn broker(&self) -> &B {
        &self.broker
    }

    /// Submits a workflow: checks the whole graph (cycles, unknown
    /// parents, duplicate names, size, each task's size), writes it
    /// atomically and enqueues its roots; all of it exists afterwards, or
    /// none of it and an error. See [`crate::workflow`].
    ///
    /// # Errors
    ///
    /// [`Error::Broker`](crate::Error::Broker) with
    /// [`spool_broker::Error::InvalidWorkflow`] or
    /// [`spool_broker::Error::Oversized`] when it is refused (nothing is
    /// enqueued), or when the broker fails; with a job store,
    /// [`Error::NotRecorded`] when the workflow was submitted but its record
    /// could not be written (it runs all the same: do not submit it again).
    pub async fn submit_workflow(
        &self,
        workflow: crate::workflow::Workflow,
    ) -> Result<crate::workflow::WorkflowHandle<B>> {
        let (mut spec, records) = workflow.into_parts()?;
        #[cfg(not(feature = "store"))]
        let _ = records;
        // Ends (is exported) when the workflow is written and recorded.
        let _submit = crate::workflow::trace_submit(&mut spec);
        self.broker.submit_workflow(&spec).await?;
        // Its history and its nodes' task records, once it exists: a
        // failure here leaves it running, and unrecorded until a sync
        // (`spoolctl workflow show` reads Redis).
        #[cfg(feature = "store")]
        if let Some(store) = &self.store {
            crate::workflow::record_submitted(store, &spec, &records)
                .await
                .map_err(|source| Error::NotRecorded {
                    ids: spec.nodes.iter().map(|n| n.envelope.id).collect(),
                    source,
                })?;
        }
        Ok(self.workflow(spec.id))
    }

    /// A handle on the workflow `id`, submitted earlier (by any client).
    #[must_use]
    pub fn workflow(&self, id: crate::workflow::WorkflowId) -> crate::workflow::WorkflowHandle<B> {
        let handle = crate::workflow::WorkflowHandle::new(self.broker.clone(), id);
        #[cfg(feature = "store")]
        let handle = handle.with_store(self.store.clone());
        handle
    }

    /// This client with a job store: from now on, [`enqueue`](Self::enqueue)
    /// and [`enqueue_many`](Self::enqueue_many) record the tasks as
    /// `queued` (or `scheduled`, with an ETA) before they return, as the
    /// task type's [`RecordPolicy`](spool_broker::RecordPolicy) allows, and
    /// [`task`](Self::task) hands out handles. The store is shared by the
    /// client's clones.
    ///
    /// Use the store the workers record to, so that handles see outcomes.
    #[cfg(feature = "store")]
    #[must_use]
    pub fn with_store(mut self, store: JobStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The job store, if the client has one.
    #[cfg(feature = "store")]
    pub fn store(&self) -> Option<&JobStore> {
        self.store.as_ref()
    }

    /// A handle on the task `id`, whose output is a `T::Output`: its
    /// status, its progress, and [`wait`](TaskHandle::wait) for its
    /// outcome. Nothing is read yet; the task need not exist.
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] when the client has no job store.
    ///
    /// # Examples
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// use spool_sdk::{Client, JobStatus, JobStore, MemoryBroker, Task};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Probe { path: String }
    /// impl Task for Probe {
    ///     const NAME: &'static str = "video.probe";
    ///     type Output = u32;
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), spool_sdk::Error> {
    /// let store = JobStore::connect("sqlite::memory:").await?;
    /// let client = Client::new(MemoryBroker::new()).with_store(store);
    /// let id = client.enqueue(Probe { path: "cat.mp4".into() }).await?;
    ///
    /// let handle = client.task::<Probe>(id)?;
    /// assert_eq!(handle.status().await?, Some(JobStatus::Queued));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "store")]
    pub fn task<T: Task>(&self, id: TaskId) -> Result<TaskHandle<T, B>> {
        let store = self.store.clone().ok_or(Error::NoStore)?;
        Ok(TaskHandle::new(id, self.broker.clone(), store))
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

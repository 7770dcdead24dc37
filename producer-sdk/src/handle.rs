//! [`TaskHandle`]: follow one task to its outcome.
//!
//! A handle reads the job store for where a task is, and listens to the
//! broker's task events (a Redis pub/sub channel per task) to learn, without
//! polling, when it reports progress or finishes.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt, stream};
use spool_broker::store::{JobRecord, JobStore};
use spool_broker::{
    Broker, JobStatus, Progress, Task, TaskEvent, TaskEvents, TaskId, decode_payload,
};

use crate::error::{Error, Result};

/// MessagePack's nil: what an output with nothing in it, such as `()`,
/// encodes to. A succeeded task may store it, or no result at all.
const NIL: &[u8] = &[0xc0];

/// The first pause before subscribing again to a task's events after the
/// subscription broke.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(50);

/// The longest pause between attempts to subscribe again.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// The progress reports of one task; see [`TaskHandle::progress`].
pub type ProgressStream = Pin<Box<dyn Stream<Item = Progress> + Send>>;

/// A handle on one task, from [`Client::task`](crate::Client::task): its
/// status and record, its progress as it runs, and its typed output once
/// it finishes.
///
/// Cheap to clone: the broker and the job store are shared handles.
///
/// A handle learns about the task from the job store, so it sees what the
/// workers record: with a task type whose
/// [`RecordPolicy`](spool_broker::RecordPolicy) is `Off` (or
/// `FailuresOnly`, for a success), [`wait`](Self::wait) cannot see the
/// outcome and runs into its timeout.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use futures_util::StreamExt;
/// # use serde::{Deserialize, Serialize};
/// use spool_sdk::{Client, Task};
///
/// #[derive(Serialize, Deserialize)]
/// struct Transcode { input: String }
/// #[derive(Serialize, Deserialize)]
/// struct Rendition { path: String, bytes: u64 }
/// impl Task for Transcode {
///     const NAME: &'static str = "app.transcode";
///     type Output = Rendition;
/// }
///
/// # async fn demo() -> Result<(), spool_sdk::Error> {
/// let client =
///     Client::connect_with_store("redis://127.0.0.1:6379/", "sqlite://spool.db").await?;
/// let id = client.enqueue(Transcode { input: "uploads/cat.mp4".into() }).await?;
/// let handle = client.task::<Transcode>(id)?;
///
/// let mut progress = handle.progress().await?;
/// tokio::spawn(async move {
///     while let Some(report) = progress.next().await {
///         println!("{:.0}%", report.percent);
///     }
/// });
///
/// let rendition = handle.wait(Duration::from_secs(600)).await?;
/// println!("{} ({} bytes)", rendition.path, rendition.bytes);
/// # Ok(()) }
/// ```
pub struct TaskHandle<T, B> {
    id: TaskId,
    broker: B,
    store: JobStore,
    _task: PhantomData<fn() -> T>,
}

impl<T, B: Clone> Clone for TaskHandle<T, B> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            broker: self.broker.clone(),
            store: self.store.clone(),
            _task: PhantomData,
        }
    }
}

impl<T, B> fmt::Debug for TaskHandle<T, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("task", &std::any::type_name::<T>())
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl<T: Task, B: Broker> TaskHandle<T, B> {
    pub(crate) fn new(id: TaskId, broker: B, store: JobStore) -> Self {
        Self {
            id,
            broker,
            store,
            _task: PhantomData,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Where the task is now, as recorded; `None` when nothing is recorded
    /// (yet: a client without a store enqueued it and no worker has started
    /// it, or never: its policy records nothing, or it was pruned).
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the job store fails.
    pub async fn status(&self) -> Result<Option<JobStatus>> {
        Ok(self.store.status(self.id).await?)
    }

    /// The task's whole record (status, attempts, worker, latest progress,
    /// times, result, error), or `None` as for [`status`](Self::status).
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the job store fails.
    pub async fn record(&self) -> Result<Option<JobRecord>> {
        Ok(self.store.get(self.id).await?)
    }

    /// Waits up to `timeout` for the task to finish, and returns its output.
    ///
    /// It subscribes to the task's events, then reads the job store once (a
    /// task that finished earlier returns at once), then sleeps until the
    /// worker announces the task's final outcome: no polling. Retries are
    /// waited through; only a final outcome ends the wait. Should the
    /// subscription break (Redis restarting, say), it subscribes again,
    /// pausing longer each time it keeps failing, and reads the store again
    /// to catch an outcome missed meanwhile.
    ///
    /// # Errors
    ///
    /// - [`Error::Timeout`] when the task has not finished within
    ///   `timeout`;
    /// - [`Error::TaskFailed`] when it ended without output (`failed`,
    ///   `dead`, `revoked`, `expired`), with the recorded error;
    /// - [`Error::NotFound`] when a worker announced the outcome but the
    ///   record is gone (pruned);
    /// - [`Error::Broker`] when the broker or the job store fails, or the
    ///   stored output does not decode as a `T::Output`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future (in a `select!`, say) only drops its
    /// subscription, and a later `wait` starts afresh.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # use serde::{Deserialize, Serialize};
    /// use spool_sdk::{Client, Error, JobStore, MemoryBroker, Task};
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
    /// // No worker runs here, so the wait times out.
    /// let handle = client.task::<Probe>(id)?;
    /// match handle.wait(Duration::from_millis(20)).await {
    ///     Err(Error::Timeout(after)) => assert_eq!(after, Duration::from_millis(20)),
    ///     other => panic!("expected a timeout, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, timeout: Duration) -> Result<T::Output> {
        match tokio::time::timeout(timeout, self.finished()).await {
            Ok(record) => output::<T>(record?),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// The task's progress reports from now on, as its handler makes them
    /// (throttled by the worker), ending when the task finishes. Reports
    /// made before the call are not replayed: the latest one is in
    /// [`record`](Self::record). Empty when the task has already finished.
    ///
    /// A retry's reports follow the failed attempt's, starting over. Should
    /// the subscription break, the stream subscribes again (reports made
    /// meanwhile are lost), and ends if the task finished meanwhile or the
    /// broker refuses for good. Bound it with a timeout of your own: the
    /// stream does not end while the task is waiting in its queue.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the subscription cannot be made or the job
    /// store fails.
    pub async fn progress(&self) -> Result<ProgressStream> {
        let events = self.broker.task_events(self.id).await?;
        if self.finished_record().await?.is_some() {
            return Ok(Box::pin(stream::empty()));
        }
        let watch = Watch {
            handle: self.clone(),
            events: Some(events),
            retry: Retry::default(),
        };
        Ok(Box::pin(stream::unfold(watch, Watch::next_progress)))
    }

    /// The task's record if it has finished.
    async fn finished_record(&self) -> Result<Option<JobRecord>> {
        Ok(self
            .store
            .get(self.id)
            .await?
            .filter(|record| record.status.is_finished()))
    }

    /// Waits, without limit, for the task's final record.
    async fn finished(&self) -> Result<JobRecord> {
        // Subscribed first, then read: an outcome recorded before the
        // subscription is in the store, one recorded after it comes as an
        // event.
        let mut events = self.broker.task_events(self.id).await?;
        let mut retry = Retry::default();
        let mut resubscribed = false;
        loop {
            match self.finished_record().await {
                Ok(Some(record)) => return Ok(record),
                Ok(None) => {}
                // Once the wait is under way, ride out a database restart
                // as a Redis one.
                Err(Error::Broker(e)) if resubscribed && e.is_transient() => {
                    events = retry.resubscribe(&self.broker, self.id).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            while let Some(event) = events.next().await {
                retry.reset();
                if let TaskEvent::Finished { .. } = event {
                    match self.store.get(self.id).await? {
                        Some(record) if record.status.is_finished() => return Ok(record),
                        // Sent back to run again since: wait on.
                        Some(_) => {}
                        None => return Err(Error::NotFound(self.id)),
                    }
                }
            }
            // The subscription broke: subscribe again, then read the store
            // for what happened meanwhile.
            events = retry.resubscribe(&self.broker, self.id).await?;
            resubscribed = true;
        }
    }
}

/// Decodes a finished record into the task's output, or its failure.
fn output<T: Task>(record: JobRecord) -> Result<T::Output> {
    match record.status {
        JobStatus::Succeeded => match record.output::<T::Output>()? {
            Some(output) => Ok(output),
            None => Ok(decode_payload(NIL)?),
        },
        status => Err(Error::TaskFailed {
            status,
            error: record.error,
        }),
    }
}

/// Pauses between attempts to subscribe again, doubling while they fail.
#[derive(Debug)]
struct Retry {
    pause: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            pause: RESUBSCRIBE_MIN,
        }
    }
}

impl Retry {
    /// Back to the shortest pause: the subscription worked.
    fn reset(&mut self) {
        self.pause = RESUBSCRIBE_MIN;
    }

    /// Sleeps for the pause, then doubles it.
    async fn pause(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(RESUBSCRIBE_MAX);
    }

    /// Subscribes to a task's events again, retrying transient failures.
    async fn resubscribe<B: Broker>(&mut self, broker: &B, id: TaskId) -> Result<TaskEvents> {
        loop {
            self.pause().await;
            match broker.task_events(id).await {
                Ok(events) => return Ok(events),
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The state of a [`ProgressStream`].
struct Watch<T, B> {
    handle: TaskHandle<T, B>,
    /// `None` after the subscription broke.
    events: Option<TaskEvents>,
    retry: Retry,
}

impl<T: Task, B: Broker> Watch<T, B> {
    /// The next progress report, or `None` when the task has finished.
    async fn next_progress(mut self) -> Option<(Progress, Self)> {
        loop {
            let Some(events) = self.events.as_mut() else {
                let events = self
                    .retry
                    .resubscribe(&self.handle.broker, self.handle.id)
                    .await
                    .ok()?;
                // Finished while the subscription was down?
                match self.handle.finished_record().await {
                    Ok(Some(_)) => return None,
                    Ok(None) => self.events = Some(events),
                    // Subscribe and read again after the next pause.
                    Err(Error::Broker(e)) if e.is_transient() => {}
                    Err(_) => return None,
                }
                continue;
            };
            match events.next().await {
                Some(TaskEvent::Progress { progress, .. }) => {
                    self.retry.reset();
                    return Some((progress, self));
                }
                Some(TaskEvent::Finished { .. }) => return None,
                Some(_) => self.retry.reset(),
                None => self.events = None,
            }
        }
    }
}

#[cfg(test)]
mod tests;

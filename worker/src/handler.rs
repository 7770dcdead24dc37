//! Handlers: the code that runs tasks.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use spool_broker::{
    Backoff, Envelope, Priority, Progress, QueueName, RateLimit, RecordPolicy, Task, TaskId,
    Timestamp,
};
use tokio_util::sync::CancellationToken;

use crate::runtime::ProgressSink;

/// Runs one task type. Implemented for every
/// `Fn(T, TaskContext) -> impl Future<Output = Result<T::Output, TaskError>>`,
/// and by hand for handlers that carry state (a client, a config).
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use spool_worker::{Handler, TaskContext, TaskError};
/// use spool_broker::Task;
///
/// #[derive(Serialize, Deserialize)]
/// struct Add { a: i64, b: i64 }
/// impl Task for Add {
///     const NAME: &'static str = "math.add";
///     type Output = i64;
/// }
///
/// #[derive(Clone)]
/// struct Adder { offset: i64 }
///
/// impl Handler<Add> for Adder {
///     async fn call(&self, task: Add, _ctx: TaskContext) -> Result<i64, TaskError> {
///         Ok(task.a + task.b + self.offset)
///     }
/// }
/// ```
pub trait Handler<T: Task>: Send + Sync + 'static {
    /// Runs the task. Return [`TaskError::retry`] (or any error, with `?`)
    /// to have it retried with backoff, [`TaskError::fail`] to fail it for
    /// good.
    fn call(
        &self,
        task: T,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<T::Output, TaskError>> + Send;
}

impl<T, F, Fut> Handler<T> for F
where
    T: Task,
    F: Fn(T, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T::Output, TaskError>> + Send,
{
    fn call(
        &self,
        task: T,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<T::Output, TaskError>> + Send {
        self(task, ctx)
    }
}

/// Why a run did not succeed, and whether to try again.
///
/// Any `std::error::Error` converts into a retryable `TaskError`, so `?`
/// works in handlers (as in Sidekiq, errors are retried unless said
/// otherwise).
pub struct TaskError {
    kind: TaskErrorKind,
    message: String,
}

/// Whether a failed run should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// Retry after the task's backoff, or after the given delay.
    Retry(Option<Duration>),
    /// Do not retry.
    Fail,
}

impl TaskError {
    /// A failure worth retrying after the task's backoff.
    pub fn retry(error: impl fmt::Display) -> Self {
        Self {
            kind: TaskErrorKind::Retry(None),
            message: error.to_string(),
        }
    }

    /// A failure worth retrying after `delay` (a rate limit's reset, say).
    pub fn retry_after(error: impl fmt::Display, delay: Duration) -> Self {
        Self {
            kind: TaskErrorKind::Retry(Some(delay)),
            message: error.to_string(),
        }
    }

    /// A failure that retrying cannot fix (bad input, say).
    pub fn fail(error: impl fmt::Display) -> Self {
        Self {
            kind: TaskErrorKind::Fail,
            message: error.to_string(),
        }
    }

    /// Whether and when to retry.
    #[must_use]
    pub fn kind(&self) -> TaskErrorKind {
        self.kind
    }

    /// The error in words.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(error: E) -> Self {
        // Keep the causes: "open input: No such file or directory".
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self {
            kind: TaskErrorKind::Retry(None),
            message,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

/// What a handler knows about the run it is in.
#[derive(Clone)]
pub struct TaskContext {
    envelope: Arc<Envelope>,
    cancel: CancellationToken,
    progress: Option<ProgressSink>,
    /// The workflow node this run is, if it is one.
    node: Option<Arc<crate::workflow::NodeRun>>,
}

impl TaskContext {
    /// A context for `envelope` (its payload is not kept).
    #[must_use]
    pub fn new(mut envelope: Envelope, cancel: CancellationToken) -> Self {
        envelope.payload = Vec::new();
        Self {
            envelope: Arc::new(envelope),
            cancel,
            progress: None,
            node: None,
        }
    }

    pub(crate) fn with_node(mut self, run: Option<Arc<crate::workflow::NodeRun>>) -> Self {
        self.node = run;
        self
    }

    /// Every header of the task's envelope.
    #[cfg(feature = "otel")]
    pub(crate) fn headers(&self) -> &std::collections::BTreeMap<String, String> {
        &self.envelope.headers
    }

    pub(crate) fn node_run(&self) -> Option<&crate::workflow::NodeRun> {
        self.node.as_deref()
    }

    pub(crate) fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }

    /// Reports how far the run got, to the job store and to whoever waits
    /// on the task (`TaskHandle::progress`). Reports are throttled: one is
    /// dropped if it comes within a second of the last and moved the
    /// percent by less than a point. Never blocks.
    pub fn progress(&self, progress: Progress) {
        if let Some(sink) = &self.progress {
            sink.report(progress);
        }
    }

    /// The task's id.
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.envelope.id
    }

    /// The task's wire name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.envelope.name
    }

    /// The queue it came from.
    #[must_use]
    pub fn queue(&self) -> &QueueName {
        &self.envelope.queue
    }

    /// The priority it was enqueued with.
    #[must_use]
    pub fn priority(&self) -> Priority {
        self.envelope.priority
    }

    /// Which run this is, starting at 1.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.envelope.attempt
    }

    /// How many runs are allowed in all.
    #[must_use]
    pub fn max_attempts(&self) -> u32 {
        self.envelope.max_attempts
    }

    /// When the task was enqueued.
    #[must_use]
    pub fn created_at(&self) -> Timestamp {
        self.envelope.created_at
    }

    /// The tenant it is accounted to.
    #[must_use]
    pub fn tenant(&self) -> Option<&str> {
        self.envelope.tenant.as_deref()
    }

    /// A header set by the producer.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.envelope.headers.get(name).map(String::as_str)
    }

    /// Fires when the run must stop early (revocation, a soft time limit,
    /// a cold shutdown). Long handlers should select on it and clean up.
    #[must_use]
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the run has been asked to stop.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("id", &self.envelope.id)
            .field("name", &self.envelope.name)
            .field("queue", &self.envelope.queue)
            .field("attempt", &self.envelope.attempt)
            .finish_non_exhaustive()
    }
}

/// A run's future with the task type erased: resolves to the encoded output.
pub(crate) type ErasedRun = BoxFuture<'static, Result<Vec<u8>, TaskError>>;

/// A handler with its task type erased, so one map holds them all.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Decodes the payload and starts the run.
    fn start(&self, payload: &[u8], ctx: TaskContext) -> Result<ErasedRun, spool_broker::Error>;

    /// The retry delays of this task type.
    fn backoff(&self) -> &Backoff;

    /// How often tasks of this type may start, across all workers.
    fn rate_limit(&self) -> Option<RateLimit>;

    /// What the job store records of this task type.
    fn record_policy(&self) -> RecordPolicy;
}

struct Typed<T, H> {
    handler: Arc<H>,
    backoff: Backoff,
    rate_limit: Option<RateLimit>,
    record: RecordPolicy,
    _task: PhantomData<fn(T)>,
}

impl<T: Task, H: Handler<T>> ErasedHandler for Typed<T, H> {
    fn start(&self, payload: &[u8], ctx: TaskContext) -> Result<ErasedRun, spool_broker::Error> {
        let task: T = spool_broker::decode_payload(payload)?;
        let handler = Arc::clone(&self.handler);
        Ok(Box::pin(async move {
            let output = handler.call(task, ctx).await?;
            spool_broker::encode_payload(&output)
                .map_err(|e| TaskError::fail(format!("the output cannot be encoded: {e}")))
        }))
    }

    fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    fn record_policy(&self) -> RecordPolicy {
        self.record
    }
}

/// The handlers of a worker, by task name.
#[derive(Default, Clone)]
pub(crate) struct Handlers {
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    /// Task types this worker has no handler for but others do: put back
    /// after the delay instead of dead-lettered as unknown.
    left_for_others: HashMap<String, Duration>,
}

impl Handlers {
    pub(crate) fn insert<T: Task, H: Handler<T>>(&mut self, handler: H) {
        let options = T::options();
        let typed = Typed::<T, H> {
            handler: Arc::new(handler),
            backoff: options.backoff,
            rate_limit: options.rate_limit,
            record: options.record,
            _task: PhantomData,
        };
        self.handlers.insert(T::NAME, Arc::new(typed));
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn ErasedHandler>> {
        self.handlers.get(name)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.handlers.keys().copied()
    }

    /// Leaves tasks named `name` (without a handler here) for other
    /// workers, putting each back after `delay`.
    pub(crate) fn leave_for_others(&mut self, name: &str, delay: Duration) {
        self.left_for_others.insert(name.to_owned(), delay);
    }

    /// How long to put back a task of `name` this worker leaves for others.
    pub(crate) fn left_for_others(&self, name: &str) -> Option<Duration> {
        self.left_for_others.get(name).copied()
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

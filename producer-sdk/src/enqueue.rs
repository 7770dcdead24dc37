//! The enqueue builders.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use spool_broker::{Broker, Envelope, Priority, QueueName, Task, TaskId, Timestamp};
use tracing::Instrument as _;

use crate::client::Client;
use crate::error::{Error, Result};

/// Per-call changes to a task type's default options.
#[derive(Debug, Default, Clone)]
struct Overrides {
    queue: Option<QueueName>,
    priority: Option<Priority>,
    eta: Option<When>,
    expires: Option<When>,
    max_attempts: Option<u32>,
    time_limit: Option<Duration>,
    tenant: Option<String>,
    headers: Vec<(String, String)>,
    unique: Option<Unique>,
}

/// A unique enqueue: the key (derived from the payload when not given) and
/// how long it is held at most.
#[derive(Debug, Clone)]
struct Unique {
    key: Option<String>,
    ttl: Duration,
}

/// A point in time given either way round.
#[derive(Debug, Clone, Copy)]
enum When {
    After(Duration),
    At(SystemTime),
}

impl When {
    fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Self::After(delay) => now.saturating_add(delay),
            Self::At(at) => Timestamp::from(at),
        }
    }
}

impl Overrides {
    fn envelope<T: Task>(&self, task: &T) -> Result<Envelope> {
        // The SDK's own task types are checked before they reach a queue.
        crate::video::validate_any(task)?;
        let mut envelope = Envelope::for_task(task)?;
        let now = envelope.created_at;
        if let Some(queue) = &self.queue {
            envelope.queue = queue.clone();
        }
        if let Some(priority) = self.priority {
            envelope.priority = priority;
        }
        if let Some(eta) = self.eta {
            envelope.eta = Some(eta.resolve(now));
        }
        if let Some(expires) = self.expires {
            envelope.expires_at = Some(expires.resolve(now));
        }
        if let Some(max_attempts) = self.max_attempts {
            if max_attempts == 0 {
                return Err(Error::InvalidOption(
                    "max_attempts must be at least 1".to_owned(),
                ));
            }
            envelope.max_attempts = max_attempts;
        }
        if let Some(limit) = self.time_limit {
            envelope.time_limit_ms = Some(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        }
        envelope.tenant.clone_from(&self.tenant);
        if let Some(unique) = &self.unique {
            let key = unique.key.clone().unwrap_or_else(|| {
                // The same task with the same arguments is the same work.
                let digest = xxhash_rust::xxh3::xxh3_64(&envelope.payload);
                format!("{}:{digest:016x}", envelope.name)
            });
            envelope.unique_key = Some(key);
        }
        envelope.headers.extend(self.headers.iter().cloned());
        if let (Some(eta), Some(expires)) = (envelope.eta, envelope.expires_at)
            && expires <= eta
        {
            return Err(Error::InvalidOption(format!(
                "the task would expire ({expires}) before it is due ({eta})"
            )));
        }
        Ok(envelope)
    }
}

impl Overrides {
    /// The `publish` span of `count` tasks of type `T` (one span for a
    /// bulk enqueue); a disabled one without the `otel` feature.
    // `T` names the queue only when spans are recorded.
    #[cfg_attr(not(feature = "otel"), allow(clippy::extra_unused_type_parameters))]
    fn publish_span<T: Task>(&self, count: usize) -> tracing::Span {
        #[cfg(feature = "otel")]
        {
            let queue = self.queue.clone().unwrap_or_else(|| T::options().queue);
            spool_broker::trace_context::publish_span(&queue, count)
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = count;
            tracing::Span::none()
        }
    }
}

/// Writes the trace context of `span` (the `publish` span) into each of
/// `envelopes`' headers, unless the caller gave a `traceparent` of its own.
#[cfg(feature = "otel")]
fn inject(span: &tracing::Span, envelopes: &mut [Envelope]) {
    spool_broker::trace_context::inject_into(span, envelopes);
}

/// Without the `otel` feature, no trace context.
#[cfg(not(feature = "otel"))]
fn inject(_span: &tracing::Span, _envelopes: &mut [Envelope]) {}

/// Enqueues one envelope, through the unique lock when asked; returns the
/// id of the task that will run.
async fn enqueue_one<B: Broker>(
    broker: &B,
    envelope: &Envelope,
    unique: Option<&Unique>,
) -> Result<TaskId> {
    match unique {
        Some(unique) => Ok(broker
            .enqueue_unique(envelope, unique.ttl)
            .await?
            .unwrap_or(envelope.id)),
        None => {
            broker.enqueue(std::slice::from_ref(envelope)).await?;
            Ok(envelope.id)
        }
    }
}

/// Records freshly enqueued tasks in the client's job store, if it has one
/// and the task type's policy records them: one batched write.
#[cfg(feature = "store")]
async fn record_enqueued<B: Broker, T: Task>(
    client: &Client<B>,
    envelopes: &[&Envelope],
) -> Result<()> {
    use spool_broker::store::NewJob;

    let Some(store) = client.store() else {
        return Ok(());
    };
    let policy = T::options().record;
    let jobs: Vec<NewJob> = envelopes
        .iter()
        .map(|envelope| NewJob::from_envelope(envelope))
        .filter(|job| policy.records(job.status()))
        .collect();
    if jobs.is_empty() {
        return Ok(());
    }
    store
        .record_enqueued(&jobs)
        .await
        .map_err(|source| Error::NotRecorded {
            ids: jobs.iter().map(|job| job.id).collect(),
            source,
        })
}

/// Without the job store, nothing is recorded.
#[cfg(not(feature = "store"))]
#[allow(
    clippy::extra_unused_type_parameters,
    reason = "the same signature as with the store"
)]
async fn record_enqueued<B: Broker, T: Task>(
    _client: &Client<B>,
    _envelopes: &[&Envelope],
) -> Result<()> {
    Ok(())
}

/// Generates the override setters shared by both builders.
macro_rules! override_setters {
    () => {
        /// Routes the task to another queue than its type's default.
        pub fn queue(mut self, queue: QueueName) -> Self {
            self.overrides.queue = Some(queue);
            self
        }

        /// Sets the priority within the queue.
        pub fn priority(mut self, priority: Priority) -> Self {
            self.overrides.priority = Some(priority);
            self
        }

        /// Runs the task no sooner than `delay` from now.
        pub fn countdown(mut self, delay: Duration) -> Self {
            self.overrides.eta = Some(When::After(delay));
            self
        }

        /// Runs the task no sooner than `at`.
        pub fn eta(mut self, at: SystemTime) -> Self {
            self.overrides.eta = Some(When::At(at));
            self
        }

        /// Skips the task if it has not started within `ttl` from now.
        pub fn expires(mut self, ttl: Duration) -> Self {
            self.overrides.expires = Some(When::After(ttl));
            self
        }

        /// Skips the task if it has not started by `at`.
        pub fn expires_at(mut self, at: SystemTime) -> Self {
            self.overrides.expires = Some(When::At(at));
            self
        }

        /// Sets how many runs are allowed in all, the first included.
        pub fn max_attempts(mut self, attempts: u32) -> Self {
            self.overrides.max_attempts = Some(attempts);
            self
        }

        /// Sets a hard limit on each run.
        pub fn time_limit(mut self, limit: Duration) -> Self {
            self.overrides.time_limit = Some(limit);
            self
        }

        /// Accounts the task to a tenant.
        pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
            self.overrides.tenant = Some(tenant.into());
            self
        }

        /// Enqueues the task only if no identical one (same name and
        /// arguments) is queued or running; otherwise `.await` returns the
        /// existing task's id. The key is held until the task reaches a final
        /// outcome, or for `ttl` at most.
        pub fn unique(mut self, ttl: Duration) -> Self {
            self.overrides.unique = Some(Unique { key: None, ttl });
            self
        }

        /// As [`unique`](Self::unique), with a key of your own (a video id,
        /// say) instead of one derived from the arguments.
        pub fn unique_key(mut self, key: impl Into<String>, ttl: Duration) -> Self {
            self.overrides.unique = Some(Unique {
                key: Some(key.into()),
                ttl,
            });
            self
        }

        /// Adds a header, such as a W3C `traceparent`.
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.overrides.headers.push((name.into(), value.into()));
            self
        }
    };
}

/// Enqueues one task; created by [`Client::enqueue`]. `.await` it.
///
/// # Errors
///
/// Awaiting fails with [`Error::InvalidOption`] for contradictory options
/// (zero attempts, an expiry before the ETA) and [`Error::Broker`] when the
/// task cannot be encoded or the broker fails. With a job store, it fails
/// with [`Error::NotRecorded`] when the task was enqueued but could not be
/// recorded (a unique enqueue that found its duplicate records nothing).
#[must_use = "an enqueue does nothing until awaited"]
pub struct Enqueue<'a, B, T> {
    client: &'a Client<B>,
    task: T,
    overrides: Overrides,
}

impl<'a, B: Broker, T: Task> Enqueue<'a, B, T> {
    pub(crate) fn new(client: &'a Client<B>, task: T) -> Self {
        Self {
            client,
            task,
            overrides: Overrides::default(),
        }
    }

    override_setters!();
}

impl<B, T> fmt::Debug for Enqueue<'_, B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enqueue")
            .field("task", &std::any::type_name::<T>())
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

impl<'a, B: Broker, T: Task> IntoFuture for Enqueue<'a, B, T> {
    type Output = Result<TaskId>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        let span = self.overrides.publish_span::<T>(1);
        let publish = span.clone();
        let future = async move {
            let mut envelope = self.overrides.envelope(&self.task)?;
            inject(&publish, std::slice::from_mut(&mut envelope));
            let id = enqueue_one(
                self.client.broker(),
                &envelope,
                self.overrides.unique.as_ref(),
            )
            .await?;
            // A unique duplicate is the existing task: already recorded.
            if id == envelope.id {
                record_enqueued::<B, T>(self.client, &[&envelope]).await?;
            }
            Ok(id)
        };
        Box::pin(future.instrument(span))
    }
}

/// Enqueues many tasks of one type in pipelined round trips; created by
/// [`Client::enqueue_many`]. `.await` it for the ids, in input order.
///
/// # Errors
///
/// As for [`Enqueue`]; when the broker fails midway, some tasks may have
/// been enqueued. The tasks are recorded in one batch after they are all
/// enqueued.
#[must_use = "an enqueue does nothing until awaited"]
pub struct EnqueueMany<'a, B, T> {
    client: &'a Client<B>,
    tasks: Vec<T>,
    overrides: Overrides,
    _task: PhantomData<fn() -> T>,
}

impl<'a, B: Broker, T: Task> EnqueueMany<'a, B, T> {
    pub(crate) fn new(client: &'a Client<B>, tasks: Vec<T>) -> Self {
        Self {
            client,
            tasks,
            overrides: Overrides::default(),
            _task: PhantomData,
        }
    }

    override_setters!();
}

impl<B, T> fmt::Debug for EnqueueMany<'_, B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnqueueMany")
            .field("task", &std::any::type_name::<T>())
            .field("count", &self.tasks.len())
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

impl<'a, B: Broker, T: Task> IntoFuture for EnqueueMany<'a, B, T> {
    type Output = Result<Vec<TaskId>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        let span = self.overrides.publish_span::<T>(self.tasks.len());
        let publish = span.clone();
        let future = async move {
            let mut envelopes = self
                .tasks
                .iter()
                .map(|task| self.overrides.envelope(task))
                .collect::<Result<Vec<_>>>()?;
            inject(&publish, &mut envelopes);
            let broker = self.client.broker();
            if let Some(unique) = &self.overrides.unique {
                // Each needs its own lock check: no pipelined fast path.
                let mut ids = Vec::with_capacity(envelopes.len());
                let mut fresh = Vec::with_capacity(envelopes.len());
                for envelope in &envelopes {
                    match enqueue_one(broker, envelope, Some(unique)).await {
                        Ok(id) => {
                            if id == envelope.id {
                                fresh.push(envelope);
                            }
                            ids.push(id);
                        }
                        Err(e) => {
                            // Record those that did go in; the broker's
                            // error is the one to report.
                            let _ = record_enqueued::<B, T>(self.client, &fresh).await;
                            return Err(e);
                        }
                    }
                }
                record_enqueued::<B, T>(self.client, &fresh).await?;
                return Ok(ids);
            }
            broker.enqueue(&envelopes).await?;
            let all: Vec<&Envelope> = envelopes.iter().collect();
            record_enqueued::<B, T>(self.client, &all).await?;
            Ok(envelopes.iter().map(|e| e.id).collect())
        };
        Box::pin(future.instrument(span))
    }
}

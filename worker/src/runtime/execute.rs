//! Running one delivery and deciding its outcome.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use spool_broker::{DeadLetter, DeadReason, Delivery, Envelope, Timestamp};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info_span, warn};

use super::settle::Action;
use crate::counters::{Count, Counters};
use crate::handler::{Registry, TaskContext, TaskErrorKind};

/// What the runtime needs to run tasks, shared by all of them.
pub(crate) struct Executor {
    pub(crate) registry: Registry,
    pub(crate) counters: Counters,
    pub(crate) default_time_limit: Option<Duration>,
}

/// How a run ended.
enum RunEnd {
    Succeeded,
    Error {
        kind: TaskErrorKind,
        message: String,
    },
    TimedOut(Duration),
    Panicked(String),
}

impl Executor {
    /// Runs a delivery inside its task span and returns what to tell the
    /// broker.
    pub(crate) async fn execute(self: Arc<Self>, delivery: Delivery) -> Action {
        let envelope = delivery.envelope;
        let span = info_span!(
            "task",
            name = %envelope.name,
            id = %envelope.id,
            queue = %envelope.queue,
            attempt = envelope.attempt,
        );
        self.decide(envelope).instrument(span).await
    }

    async fn decide(&self, mut envelope: Envelope) -> Action {
        if envelope.is_expired_at(Timestamp::now()) {
            debug!("expired before it could start; skipped");
            self.counters.add(Count::Expired);
            return Action::Ack;
        }
        let Some(handler) = self.registry.get(&envelope.name) else {
            return self.dead(
                &envelope,
                DeadReason::UnknownTask,
                format!(
                    "no handler is registered for task {:?} on this worker",
                    envelope.name
                ),
            );
        };
        let payload = std::mem::take(&mut envelope.payload);
        let ctx = TaskContext::new(envelope.clone(), CancellationToken::new());
        let run = match handler.start(&payload, ctx.clone()) {
            Ok(run) => run,
            Err(e) => {
                envelope.payload = payload;
                return self.dead(&envelope, DeadReason::BadPayload, e.to_string());
            }
        };
        self.counters.add(Count::Started);
        let limit = envelope.time_limit().or(self.default_time_limit);
        let guarded = AssertUnwindSafe(run).catch_unwind();
        let result = match limit {
            Some(limit) => match tokio::time::timeout(limit, guarded).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    // Tell whatever the handler spawned (FFmpeg, say) to stop.
                    ctx.cancellation().cancel();
                    envelope.payload = payload;
                    return self.outcome(&envelope, handler.backoff(), RunEnd::TimedOut(limit));
                }
            },
            None => guarded.await,
        };
        let end = match result {
            Ok(Ok(_output)) => RunEnd::Succeeded,
            Ok(Err(e)) => RunEnd::Error {
                kind: e.kind(),
                message: e.message().to_owned(),
            },
            Err(panic) => RunEnd::Panicked(panic_message(panic.as_ref())),
        };
        envelope.payload = payload;
        self.outcome(&envelope, handler.backoff(), end)
    }

    fn outcome(&self, envelope: &Envelope, backoff: &spool_broker::Backoff, end: RunEnd) -> Action {
        let (retry_after, message) = match end {
            RunEnd::Succeeded => {
                debug!("succeeded");
                self.counters.add(Count::Succeeded);
                return Action::Ack;
            }
            RunEnd::TimedOut(limit) => {
                warn!("exceeded its time limit of {limit:?}; failed without retry");
                self.counters.add(Count::Failed);
                return Action::Ack;
            }
            RunEnd::Error {
                kind: TaskErrorKind::Fail,
                message,
            } => {
                warn!(error = %message, "failed; not retried");
                self.counters.add(Count::Failed);
                return Action::Ack;
            }
            RunEnd::Error {
                kind: TaskErrorKind::Retry(after),
                message,
            } => (after, message),
            RunEnd::Panicked(message) => (None, format!("the handler panicked: {message}")),
        };
        if envelope.is_last_attempt() {
            return self.dead(envelope, DeadReason::AttemptsExhausted, message);
        }
        let delay = retry_after.unwrap_or_else(|| backoff.delay(envelope.attempt));
        warn!(error = %message, "failed; retrying in {delay:?}");
        self.counters.add(Count::Retried);
        let eta = Timestamp::now().saturating_add(delay);
        Action::Retry(Box::new(envelope.next_attempt(eta)))
    }

    fn dead(&self, envelope: &Envelope, reason: DeadReason, error: String) -> Action {
        error!(%reason, %error, "moved to the dead-letter stream");
        self.counters.add(Count::DeadLettered);
        Action::DeadLetter(DeadLetter {
            reason,
            error,
            attempts: envelope.attempt,
        })
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

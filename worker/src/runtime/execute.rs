//! Running one delivery and deciding its outcome.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use spool_broker::{Backoff, DeadLetter, DeadReason, Delivery, Envelope, Timestamp};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info_span, warn};

use super::settle::Action;
use crate::handler::{Registry, TaskContext, TaskErrorKind};
use crate::observer::{Observers, Outcome, TaskInfo};

/// What the runtime needs to run tasks, shared by all of them.
pub(crate) struct Executor {
    pub(crate) registry: Registry,
    pub(crate) observers: Observers,
    pub(crate) default_time_limit: Option<Duration>,
}

/// How a handler's run ended.
enum RunEnd {
    Succeeded,
    Error { kind: TaskErrorKind, message: String },
    TimedOut(Duration),
    Panicked(String),
}

impl Executor {
    /// Runs a delivery inside its task span and returns what to tell the
    /// broker.
    pub(crate) async fn execute(self: Arc<Self>, delivery: Delivery) -> Action {
        let mut envelope = delivery.envelope;
        let span = info_span!(
            "task",
            name = %envelope.name,
            id = %envelope.id,
            queue = %envelope.queue,
            attempt = envelope.attempt,
        );
        async {
            let started = Instant::now();
            let (action, outcome, ran) = self.decide(&mut envelope).await;
            let info = TaskInfo {
                id: envelope.id,
                name: &envelope.name,
                queue: &envelope.queue,
                attempt: envelope.attempt,
            };
            let ran_for = if ran { started.elapsed() } else { Duration::ZERO };
            self.observers.finished(&info, outcome, ran_for);
            action
        }
        .instrument(span)
        .await
    }

    /// Decides and, when it should run, runs the task; says whether the
    /// handler ran.
    async fn decide(&self, envelope: &mut Envelope) -> (Action, Outcome, bool) {
        if envelope.is_expired_at(Timestamp::now()) {
            debug!("expired before it could start; skipped");
            return (Action::Ack, Outcome::Expired, false);
        }
        let Some(handler) = self.registry.get(&envelope.name) else {
            let error = format!(
                "no handler is registered for task {:?} on this worker",
                envelope.name
            );
            return (dead(envelope, DeadReason::UnknownTask, error), dead_outcome(DeadReason::UnknownTask), false);
        };
        let payload = std::mem::take(&mut envelope.payload);
        let ctx = TaskContext::new(envelope.clone(), CancellationToken::new());
        let started = handler.start(&payload, ctx.clone());
        envelope.payload = payload;
        let run = match started {
            Ok(run) => run,
            Err(e) => {
                let reason = DeadReason::BadPayload;
                return (dead(envelope, reason, e.to_string()), dead_outcome(reason), false);
            }
        };
        self.observers.started(&TaskInfo {
            id: envelope.id,
            name: &envelope.name,
            queue: &envelope.queue,
            attempt: envelope.attempt,
        });
        let guarded = AssertUnwindSafe(run).catch_unwind();
        let end = match envelope.time_limit().or(self.default_time_limit) {
            Some(limit) => match tokio::time::timeout(limit, guarded).await {
                Ok(result) => RunEnd::from(result),
                Err(_elapsed) => {
                    // Tell whatever the handler spawned (FFmpeg, say) to stop.
                    ctx.cancellation().cancel();
                    RunEnd::TimedOut(limit)
                }
            },
            None => RunEnd::from(guarded.await),
        };
        let (action, outcome) = conclude(envelope, handler.backoff(), end);
        (action, outcome, true)
    }
}

impl RunEnd {
    fn from(result: std::thread::Result<Result<Vec<u8>, crate::TaskError>>) -> Self {
        match result {
            Ok(Ok(_output)) => Self::Succeeded,
            Ok(Err(e)) => Self::Error {
                kind: e.kind(),
                message: e.message().to_owned(),
            },
            Err(panic) => Self::Panicked(panic_message(panic.as_ref())),
        }
    }
}

/// Turns how a run ended into what to tell the broker.
fn conclude(envelope: &Envelope, backoff: &Backoff, end: RunEnd) -> (Action, Outcome) {
    let (retry_after, message) = match end {
        RunEnd::Succeeded => {
            debug!("succeeded");
            return (Action::Ack, Outcome::Succeeded);
        }
        RunEnd::TimedOut(limit) => {
            warn!("exceeded its time limit of {limit:?}; failed without retry");
            return (Action::Ack, Outcome::Failed);
        }
        RunEnd::Error {
            kind: TaskErrorKind::Fail,
            message,
        } => {
            warn!(error = %message, "failed; not retried");
            return (Action::Ack, Outcome::Failed);
        }
        RunEnd::Error {
            kind: TaskErrorKind::Retry(after),
            message,
        } => (after, message),
        RunEnd::Panicked(message) => (None, format!("the handler panicked: {message}")),
    };
    if envelope.is_last_attempt() {
        let reason = DeadReason::AttemptsExhausted;
        return (dead(envelope, reason, message), dead_outcome(reason));
    }
    let delay = retry_after.unwrap_or_else(|| backoff.delay(envelope.attempt));
    warn!(error = %message, "failed; retrying in {delay:?}");
    let eta = Timestamp::now().saturating_add(delay);
    (Action::Retry(Box::new(envelope.next_attempt(eta))), Outcome::Retried)
}

fn dead(envelope: &Envelope, reason: DeadReason, error: String) -> Action {
    error!(%reason, %error, "moved to the dead-letter stream");
    Action::DeadLetter(DeadLetter {
        reason,
        error,
        attempts: envelope.attempt,
    })
}

fn dead_outcome(reason: DeadReason) -> Outcome {
    Outcome::DeadLettered(reason)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

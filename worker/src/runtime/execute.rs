//! Running one delivery and deciding its outcome.

use std::future::pending;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use spool_broker::{
    Backoff, Broker, DeadLetter, DeadReason, Delivery, Envelope, RateLimit, Timestamp,
};
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::control::Revoked;
use super::running::{CancelReason, RunControl, Running};
use super::settle::Action;
use crate::handler::{ErasedRun, Registry, TaskContext, TaskErrorKind};
use crate::observer::{Observers, Outcome, TaskInfo};

/// The worker-wide limits on runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) time_limit: Option<Duration>,
    pub(crate) soft_time_limit: Option<Duration>,
    pub(crate) cancel_grace: Duration,
    pub(crate) max_deliveries: u32,
}

/// What the runtime needs to run tasks, shared by all of them.
pub(crate) struct Executor<B> {
    pub(crate) broker: B,
    pub(crate) registry: Registry,
    pub(crate) observers: Observers,
    pub(crate) limits: Limits,
    pub(crate) revoked: Revoked,
    pub(crate) running: Running,
}

/// How a handler's run ended.
enum RunEnd {
    Succeeded,
    Error {
        kind: TaskErrorKind,
        message: String,
    },
    TimedOut(Duration),
    Panicked(String),
    /// Stopped by a revocation or because another worker took the task over.
    Cancelled(CancelReason),
}

impl<B: Broker> Executor<B> {
    /// Runs a delivery inside its task span and returns what to tell the
    /// broker.
    pub(crate) async fn execute(self: Arc<Self>, delivery: Delivery) -> Action {
        let Delivery {
            mut envelope,
            deliveries,
            ..
        } = delivery;
        // A redelivery (its worker died mid-run) counts as an attempt: the
        // handler sees how many runs this really is.
        envelope.attempt = envelope
            .attempt
            .saturating_add(deliveries.saturating_sub(1));
        let span = info_span!(
            "task",
            name = %envelope.name,
            id = %envelope.id,
            queue = %envelope.queue,
            attempt = envelope.attempt,
        );
        async {
            let started = Instant::now();
            let (action, outcome, ran) = self.decide(&mut envelope, deliveries).await;
            let info = TaskInfo {
                id: envelope.id,
                name: &envelope.name,
                queue: &envelope.queue,
                attempt: envelope.attempt,
            };
            let ran_for = if ran {
                started.elapsed()
            } else {
                Duration::ZERO
            };
            self.observers.finished(&info, outcome, ran_for);
            action
        }
        .instrument(span)
        .await
    }

    /// Decides and, when it should run, runs the task; says whether the
    /// handler ran.
    async fn decide(&self, envelope: &mut Envelope, deliveries: u32) -> (Action, Outcome, bool) {
        if deliveries > self.limits.max_deliveries {
            let error = format!(
                "delivered {deliveries} times without an outcome: its workers keep dying \
                 (max_deliveries is {})",
                self.limits.max_deliveries
            );
            return dead(envelope, DeadReason::TooManyDeliveries, error);
        }
        if envelope.attempt > envelope.max_attempts {
            let error = "its worker died during the last allowed attempt".to_owned();
            return dead(envelope, DeadReason::AttemptsExhausted, error);
        }
        if self.revoked.contains(envelope.id) {
            info!("revoked before it started; skipped");
            return (Action::Ack, Outcome::Revoked, false);
        }
        if envelope.is_expired_at(Timestamp::now()) {
            debug!("expired before it could start; skipped");
            return (Action::Ack, Outcome::Expired, false);
        }
        let Some(handler) = self.registry.get(&envelope.name) else {
            let error = format!(
                "no handler is registered for task {:?} on this worker",
                envelope.name
            );
            return dead(envelope, DeadReason::UnknownTask, error);
        };
        if let Some(limit) = handler.rate_limit()
            && let Some(wait) = self.take_rate_token(&envelope.name, limit).await
        {
            debug!("rate limited; deferred by {wait:?}");
            let deferred = Envelope {
                eta: Some(Timestamp::now().saturating_add(wait)),
                ..envelope.clone()
            };
            return (Action::Retry(Box::new(deferred)), Outcome::Deferred, false);
        }
        let control = RunControl::default();
        let payload = std::mem::take(&mut envelope.payload);
        let ctx = TaskContext::new(envelope.clone(), control.token().clone());
        let started = handler.start(&payload, ctx);
        envelope.payload = payload;
        let run = match started {
            Ok(run) => run,
            Err(e) => return dead(envelope, DeadReason::BadPayload, e.to_string()),
        };
        let _registered = self.running.enter(envelope.id, control.clone());
        // A revocation that arrived since the check above is caught now.
        if self.revoked.contains(envelope.id) {
            control.cancel(CancelReason::Revoked);
        }
        self.observers.started(&TaskInfo {
            id: envelope.id,
            name: &envelope.name,
            queue: &envelope.queue,
            attempt: envelope.attempt,
        });
        let hard = envelope.time_limit().or(self.limits.time_limit);
        let end = supervise(run, &control, hard, self.limits).await;
        let (action, outcome) = conclude(envelope, handler.backoff(), end);
        (action, outcome, true)
    }
}

impl<B: Broker> Executor<B> {
    /// `None` when a task of `name` may start now, else how long to wait.
    /// When the bucket cannot be reached, waits a second rather than risk
    /// overrunning the limit.
    async fn take_rate_token(&self, name: &str, limit: RateLimit) -> Option<Duration> {
        match self.broker.acquire_rate(name, limit).await {
            Ok(wait) => wait,
            Err(e) => {
                warn!(error = %e, "cannot check the rate limit; deferring by 1 s");
                Some(Duration::from_secs(1))
            }
        }
    }
}

/// Drives a run to its end: cancels it at the soft limit, gives a
/// cancelled run `cancel_grace` to wind down, and drops it at the hard limit
/// or when the grace is over.
async fn supervise(
    run: ErasedRun,
    control: &RunControl,
    hard_limit: Option<Duration>,
    limits: Limits,
) -> RunEnd {
    let started = Instant::now();
    let hard = hard_limit.map(|limit| started + limit);
    let soft = limits.soft_time_limit.map(|limit| started + limit);
    let mut grace_until = None;
    let mut run = std::pin::pin!(AssertUnwindSafe(run).catch_unwind());
    loop {
        let soft_pending = soft.filter(|_| control.reason().is_none());
        tokio::select! {
            result = &mut run => {
                let end = RunEnd::from(result);
                return match control.reason() {
                    // Work finished despite the request to stop is still done.
                    _ if matches!(end, RunEnd::Succeeded) => end,
                    Some(CancelReason::SoftTimeLimit) => {
                        RunEnd::TimedOut(limits.soft_time_limit.unwrap_or_default())
                    }
                    Some(reason) => RunEnd::Cancelled(reason),
                    None => end,
                };
            }
            () = at(soft_pending) => {
                warn!("reached its soft time limit; asking it to stop");
                control.cancel(CancelReason::SoftTimeLimit);
            }
            () = control.token().cancelled(), if grace_until.is_none() => {
                grace_until = Some(Instant::now() + limits.cancel_grace);
            }
            () = at(grace_until) => {
                warn!("did not stop within {:?} of being cancelled; dropped", limits.cancel_grace);
                return match control.reason() {
                    Some(CancelReason::SoftTimeLimit) | None => {
                        RunEnd::TimedOut(limits.soft_time_limit.unwrap_or_default())
                    }
                    Some(reason) => RunEnd::Cancelled(reason),
                };
            }
            () = at(hard) => {
                // Tell whatever the handler spawned (FFmpeg, say) to stop.
                control.cancel(CancelReason::SoftTimeLimit);
                return RunEnd::TimedOut(hard_limit.unwrap_or_default());
            }
        }
    }
}

/// Completes at `deadline`, or never without one.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => pending().await,
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
        RunEnd::Cancelled(CancelReason::Revoked) => {
            info!("revoked while running; stopped");
            return (Action::Ack, Outcome::Revoked);
        }
        RunEnd::Cancelled(CancelReason::LeaseLost | CancelReason::SoftTimeLimit) => {
            // Another worker holds the task now: its outcome is theirs to tell.
            return (Action::Abandon, Outcome::Abandoned);
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
        let (action, outcome, _) = dead(envelope, DeadReason::AttemptsExhausted, message);
        return (action, outcome);
    }
    let delay = retry_after.unwrap_or_else(|| backoff.delay(envelope.attempt));
    warn!(error = %message, "failed; retrying in {delay:?}");
    let eta = Timestamp::now().saturating_add(delay);
    (
        Action::Retry(Box::new(envelope.next_attempt(eta))),
        Outcome::Retried,
    )
}

fn dead(envelope: &Envelope, reason: DeadReason, error: String) -> (Action, Outcome, bool) {
    error!(%reason, %error, "moved to the dead-letter stream");
    let letter = DeadLetter {
        reason,
        error,
        attempts: envelope.attempt,
    };
    (
        Action::DeadLetter(letter),
        Outcome::DeadLettered(reason),
        false,
    )
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

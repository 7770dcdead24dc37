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

use spool_broker::store::{Finished, Started, WorkerId};
use spool_broker::{JobStatus, RecordPolicy};
use tokio::sync::mpsc;

use super::control::Revoked;
use super::report::{Note, ProgressSink};
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

/// Where runs report beyond the broker.
pub(crate) struct Reporting {
    /// Background notes: run starts and progress.
    pub(crate) notes: mpsc::UnboundedSender<Note>,
    /// This process, as the job store records it.
    pub(crate) worker: WorkerId,
    /// Whether a job store records what happens.
    pub(crate) recording: bool,
}

/// What the runtime needs to run tasks, shared by all of them.
pub(crate) struct Executor<B> {
    pub(crate) broker: B,
    pub(crate) registry: Registry,
    pub(crate) observers: Observers,
    pub(crate) limits: Limits,
    pub(crate) revoked: Revoked,
    pub(crate) running: Running,
    pub(crate) reporting: Reporting,
}

/// What became of a delivery.
struct Decision {
    action: Action,
    outcome: Outcome,
    /// When the handler started, if it ran.
    started_at: Option<Timestamp>,
    /// The encoded output of a success.
    output: Option<Vec<u8>>,
    /// What went wrong.
    error: Option<String>,
    /// What the job store records of this task type.
    policy: RecordPolicy,
}

impl Decision {
    fn new(action: Action, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            started_at: None,
            output: None,
            error: None,
            policy: RecordPolicy::Full,
        }
    }

    fn with_error(mut self, error: String) -> Self {
        self.error = Some(error);
        self
    }
}

/// How a handler's run ended.
enum RunEnd {
    Succeeded(Vec<u8>),
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
    /// broker, and what to record in the job store before that.
    pub(crate) async fn execute(
        self: Arc<Self>,
        delivery: Delivery,
    ) -> (Action, Option<Box<Finished>>) {
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
            let mut decision = self.decide(&mut envelope, deliveries).await;
            let info = TaskInfo {
                id: envelope.id,
                name: &envelope.name,
                queue: &envelope.queue,
                attempt: envelope.attempt,
            };
            let ran_for = match decision.started_at {
                Some(_) => started.elapsed(),
                None => Duration::ZERO,
            };
            self.observers.finished(&info, decision.outcome, ran_for);
            let record = self.record_of(&envelope, &mut decision);
            (decision.action, record)
        }
        .instrument(span)
        .await
    }

    /// The job-store record of a decision, when a store records it.
    /// (It takes the decision's output and error: nothing else needs them.)
    fn record_of(&self, envelope: &Envelope, decision: &mut Decision) -> Option<Box<Finished>> {
        if !self.reporting.recording {
            return None;
        }
        let status = match decision.outcome {
            Outcome::Succeeded => JobStatus::Succeeded,
            Outcome::Failed => JobStatus::Failed,
            Outcome::Retried => JobStatus::Retrying,
            Outcome::DeadLettered(_) => JobStatus::Dead,
            Outcome::Expired => JobStatus::Expired,
            Outcome::Revoked => JobStatus::Revoked,
            // Not an outcome of the task: it runs again elsewhere or later.
            _ => return None,
        };
        if !decision.policy.records_attempt(status, envelope.attempt) {
            return None;
        }
        let mut record = Finished::from_envelope(envelope, status, Timestamp::now());
        record.result = decision.output.take();
        record.error = decision.error.take();
        record.started_at = decision.started_at;
        record.worker = Some(self.reporting.worker.clone());
        Some(Box::new(record))
    }

    /// Decides and, when it should run, runs the task; says whether the
    /// handler ran.
    async fn decide(&self, envelope: &mut Envelope, deliveries: u32) -> Decision {
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
            return Decision::new(Action::Ack, Outcome::Revoked);
        }
        if envelope.is_expired_at(Timestamp::now()) {
            debug!("expired before it could start; skipped");
            return Decision::new(Action::Ack, Outcome::Expired);
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
            return Decision::new(Action::Retry(Box::new(deferred)), Outcome::Deferred);
        }
        let control = RunControl::default();
        let payload = std::mem::take(&mut envelope.payload);
        let policy = handler.record_policy();
        let progress = ProgressSink::new(&self.reporting.notes, envelope.id, envelope.attempt);
        let ctx =
            TaskContext::new(envelope.clone(), control.token().clone()).with_progress(progress);
        let started = handler.start(&payload, ctx);
        envelope.payload = payload;
        let run = match started {
            Ok(run) => run,
            Err(e) => return dead(envelope, DeadReason::BadPayload, e.to_string()),
        };
        let started_at = Timestamp::now();
        if self.reporting.recording && policy.records_attempt(JobStatus::Running, envelope.attempt)
        {
            let started = Started::from_envelope(envelope, &self.reporting.worker, started_at);
            let _ = self.reporting.notes.send(Note::Started(Box::new(started)));
        }
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
        let mut decision = conclude(envelope, handler.backoff(), end);
        decision.started_at = Some(started_at);
        decision.policy = policy;
        decision
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
                    _ if matches!(end, RunEnd::Succeeded(_)) => end,
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
            Ok(Ok(output)) => Self::Succeeded(output),
            Ok(Err(e)) => Self::Error {
                kind: e.kind(),
                message: e.message().to_owned(),
            },
            Err(panic) => Self::Panicked(panic_message(panic.as_ref())),
        }
    }
}

/// Turns how a run ended into what to tell the broker.
fn conclude(envelope: &Envelope, backoff: &Backoff, end: RunEnd) -> Decision {
    let (retry_after, message) = match end {
        RunEnd::Succeeded(output) => {
            debug!("succeeded");
            let mut decision = Decision::new(Action::Ack, Outcome::Succeeded);
            decision.output = Some(output);
            return decision;
        }
        RunEnd::TimedOut(limit) => {
            let error = format!("exceeded its time limit of {limit:?}");
            warn!("{error}; failed without retry");
            return Decision::new(Action::Ack, Outcome::Failed).with_error(error);
        }
        RunEnd::Cancelled(CancelReason::Revoked) => {
            info!("revoked while running; stopped");
            return Decision::new(Action::Ack, Outcome::Revoked)
                .with_error("revoked while running".to_owned());
        }
        RunEnd::Cancelled(CancelReason::LeaseLost | CancelReason::SoftTimeLimit) => {
            // Another worker holds the task now: its outcome is theirs to tell.
            return Decision::new(Action::Abandon, Outcome::Abandoned);
        }
        RunEnd::Error {
            kind: TaskErrorKind::Fail,
            message,
        } => {
            warn!(error = %message, "failed; not retried");
            return Decision::new(Action::Ack, Outcome::Failed).with_error(message);
        }
        RunEnd::Error {
            kind: TaskErrorKind::Retry(after),
            message,
        } => (after, message),
        RunEnd::Panicked(message) => (None, format!("the handler panicked: {message}")),
    };
    if envelope.is_last_attempt() {
        return dead(envelope, DeadReason::AttemptsExhausted, message);
    }
    let delay = retry_after.unwrap_or_else(|| backoff.delay(envelope.attempt));
    warn!(error = %message, "failed; retrying in {delay:?}");
    let eta = Timestamp::now().saturating_add(delay);
    let next = Box::new(envelope.next_attempt(eta));
    Decision::new(Action::Retry(next), Outcome::Retried).with_error(message)
}

fn dead(envelope: &Envelope, reason: DeadReason, error: String) -> Decision {
    error!(%reason, %error, "moved to the dead-letter stream");
    let letter = DeadLetter {
        reason,
        error: error.clone(),
        attempts: envelope.attempt,
    };
    Decision::new(Action::DeadLetter(letter), Outcome::DeadLettered(reason)).with_error(error)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

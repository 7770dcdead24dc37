//! What may become of a delivery, and the attempt rules: the one place the
//! runtime decides it. The fetchers (entries refused before they could be
//! read), the executor (the checks before a run, and how the run ended) and
//! the dispatcher (tasks given back unstarted) all take their [`Verdict`]
//! from here; the settler carries out its [`Action`].
//!
//! A delivery is
//! - acknowledged: it succeeded, failed for good, was revoked or expired;
//! - retried: scheduled again as its next attempt after a delay (the
//!   handler's, else the task type's backoff with jitter), or deferred by a
//!   rate limit as the same attempt;
//! - dead-lettered, with its reason, once no attempt is left or it cannot
//!   run at all;
//! - requeued: given back unstarted, for any worker;
//! - abandoned: left pending, for the worker that took it over or that
//!   reclaims it after this one's lease lapses.
//!
//! A workflow node's final verdict (acknowledged or dead-lettered) also
//! settles its node ([`node_outcome`]); retries, deferrals, requeues and
//! abandons do not. A delivery of a node that is settled already is
//! acknowledged unrun ([`Verdict::settled_before`]).
//!
//! The next attempt's number is [`Envelope::next_attempt`]'s, which the
//! broker shares when it revives dead letters; the other attempt rules live
//! here only.

use std::time::Duration;

use spool_broker::workflow::NodeOutcome;
use spool_broker::{Backoff, DeadLetter, DeadReason, Envelope, Timestamp};
use tracing::{debug, error, info, warn};

use super::running::CancelReason;
use crate::handler::TaskErrorKind;
use crate::observer::Outcome;

/// What to tell the broker about one delivery.
#[derive(Debug)]
pub(crate) enum Action {
    /// Done (succeeded, failed for good, revoked or expired): acknowledge
    /// and delete.
    Ack,
    /// Schedule this envelope: the next attempt, or the same one deferred.
    Retry(Box<Envelope>),
    /// Move to the dead-letter stream.
    DeadLetter(DeadLetter),
    /// Give back unstarted.
    Requeue,
    /// Nothing: the entry stays pending, for another worker.
    Abandon,
}

impl Action {
    /// Whether the task is done with this outcome (no further run).
    pub(crate) fn is_final(&self) -> bool {
        matches!(self, Self::Ack | Self::DeadLetter(_))
    }
}

/// How a handler's run ended.
#[derive(Debug)]
pub(crate) enum RunEnd {
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

/// What becomes of one delivery.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// What the broker is told.
    pub(crate) action: Action,
    /// What the observers hear (and, for a task's outcome, the job store).
    pub(crate) outcome: Outcome,
    /// The encoded output of a success.
    pub(crate) output: Option<Vec<u8>>,
    /// What went wrong.
    pub(crate) error: Option<String>,
}

impl Verdict {
    fn new(action: Action, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            output: None,
            error: None,
        }
    }

    fn with_error(mut self, error: String) -> Self {
        self.error = Some(error);
        self
    }

    /// The handler succeeded with `output`.
    pub(crate) fn succeeded(output: Vec<u8>) -> Self {
        let mut verdict = Self::new(Action::Ack, Outcome::Succeeded);
        verdict.output = Some(output);
        verdict
    }

    /// The task failed for good.
    pub(crate) fn failed(error: String) -> Self {
        Self::new(Action::Ack, Outcome::Failed).with_error(error)
    }

    /// The task was revoked; `error` says so when it was running.
    pub(crate) fn revoked(error: Option<String>) -> Self {
        let mut verdict = Self::new(Action::Ack, Outcome::Revoked);
        verdict.error = error;
        verdict
    }

    /// The task expired before it could start.
    pub(crate) fn expired() -> Self {
        Self::new(Action::Ack, Outcome::Expired)
    }

    /// The task is dead-lettered after `attempts` runs.
    pub(crate) fn dead(reason: DeadReason, error: String, attempts: u32) -> Self {
        error!(%reason, %error, "moved to the dead-letter stream");
        let letter = DeadLetter {
            reason,
            error: error.clone(),
            attempts,
        };
        Self::new(Action::DeadLetter(letter), Outcome::DeadLettered(reason)).with_error(error)
    }

    /// An entry refused before it could be read (undecodable, unsigned or
    /// forged): dead-lettered, never run.
    pub(crate) fn refused(reason: DeadReason, error: String) -> Self {
        let letter = DeadLetter {
            reason,
            error: error.clone(),
            attempts: 0,
        };
        Self::new(Action::DeadLetter(letter), Outcome::DeadLettered(reason)).with_error(error)
    }

    /// Given back unstarted (the worker stops, or the queue was paused).
    pub(crate) fn requeued() -> Self {
        Self::new(Action::Requeue, Outcome::Requeued)
    }

    /// Another worker holds the task now: its outcome is theirs to tell.
    pub(crate) fn abandoned() -> Self {
        Self::new(Action::Abandon, Outcome::Abandoned)
    }

    /// A delivery of a workflow node that is settled already (a
    /// redelivery after its worker died between settling and
    /// acknowledging, a run from before a retry of the workflow, or a
    /// workflow that is gone): acknowledged without running, and without
    /// a record, since the outcome is the earlier run's.
    pub(crate) fn settled_before() -> Self {
        info!("its workflow node is settled already; acknowledged without running");
        Self::new(Action::Ack, Outcome::Abandoned)
    }

    /// Puts the task back for `wait`, the same attempt later: a rate limit,
    /// or a task this worker leaves for others.
    pub(crate) fn deferred(envelope: &Envelope, wait: Duration, now: Timestamp) -> Self {
        let deferred = Envelope {
            eta: Some(now.saturating_add(wait)),
            ..envelope.clone()
        };
        Self::new(Action::Retry(Box::new(deferred)), Outcome::Deferred)
    }

    /// A run that failed in a way worth retrying: its next attempt, after
    /// `asked` or else the backoff's delay; dead-lettered if it was the
    /// last attempt allowed.
    pub(crate) fn retry(
        envelope: &Envelope,
        backoff: &Backoff,
        asked: Option<Duration>,
        error: String,
        now: Timestamp,
    ) -> Self {
        if is_last(envelope.attempt, envelope.max_attempts) {
            return Self::dead(DeadReason::AttemptsExhausted, error, envelope.attempt);
        }
        let delay = retry_delay(backoff, envelope.attempt, asked);
        warn!(%error, "failed; retrying in {delay:?}");
        let next = envelope.next_attempt(now.saturating_add(delay));
        Self::new(Action::Retry(Box::new(next)), Outcome::Retried).with_error(error)
    }
}

/// How a final verdict settles a workflow node; `None` for outcomes that
/// are not a node's (retried, deferred, requeued, abandoned).
pub(crate) fn node_outcome(outcome: Outcome) -> Option<NodeOutcome> {
    match outcome {
        Outcome::Succeeded => Some(NodeOutcome::Succeeded),
        Outcome::Failed => Some(NodeOutcome::Failed),
        Outcome::DeadLettered(_) => Some(NodeOutcome::DeadLettered),
        Outcome::Revoked => Some(NodeOutcome::Revoked),
        Outcome::Expired => Some(NodeOutcome::Expired),
        Outcome::Retried | Outcome::Requeued | Outcome::Deferred | Outcome::Abandoned => None,
    }
}

/// The attempt a delivery is: its envelope's, plus one for every earlier
/// delivery that got no outcome (its worker died mid-run), so the handler
/// sees how many runs this really is.
pub(crate) fn attempt_of(attempt: u32, deliveries: u32) -> u32 {
    attempt.saturating_add(deliveries.saturating_sub(1))
}

/// Whether run `attempt` is the last of `max_attempts`: a failure then is
/// final.
pub(crate) fn is_last(attempt: u32, max_attempts: u32) -> bool {
    attempt >= max_attempts
}

/// Whether run `attempt` is past the `max_attempts` allowed: the last one
/// ran already, and its worker died.
pub(crate) fn is_past_the_last(attempt: u32, max_attempts: u32) -> bool {
    attempt > max_attempts
}

/// How long to wait before retrying after run `attempt` failed: what the
/// handler asked for, else the task type's backoff for that retry (with its
/// jitter).
pub(crate) fn retry_delay(backoff: &Backoff, attempt: u32, asked: Option<Duration>) -> Duration {
    asked.unwrap_or_else(|| backoff.delay(attempt))
}

/// What becomes of a delivery before its handler is looked up, in this
/// order: dead-lettered when delivered more than `max_deliveries` times or
/// past its last attempt, acknowledged when `revoked` or expired at `now`.
/// `None` lets it go on. `envelope.attempt` is already the delivery's
/// ([`attempt_of`]).
pub(crate) fn before_run(
    envelope: &Envelope,
    deliveries: u32,
    max_deliveries: u32,
    revoked: bool,
    now: Timestamp,
) -> Option<Verdict> {
    if envelope.max_attempts == 0 {
        // Written by something other than Spool's producers, which refuse
        // it: no run is allowed, and none was made.
        return Some(Verdict::refused(
            DeadReason::Malformed,
            "max_attempts must be at least 1".to_owned(),
        ));
    }
    if deliveries > max_deliveries {
        let error = format!(
            "delivered {deliveries} times without an outcome: its workers keep dying \
             (max_deliveries is {max_deliveries})"
        );
        return Some(Verdict::dead(
            DeadReason::TooManyDeliveries,
            error,
            envelope.attempt,
        ));
    }
    if is_past_the_last(envelope.attempt, envelope.max_attempts) {
        let error = "its worker died during the last allowed attempt".to_owned();
        return Some(Verdict::dead(
            DeadReason::AttemptsExhausted,
            error,
            envelope.attempt,
        ));
    }
    if revoked {
        info!("revoked before it started; skipped");
        return Some(Verdict::revoked(None));
    }
    if envelope.is_expired_at(now) {
        debug!("expired before it could start; skipped");
        return Some(Verdict::expired());
    }
    None
}

/// What becomes of a delivery whose handler ran and ended with `end`. A
/// success whose encoded output exceeds `max_result_bytes` is dead-lettered
/// `oversized`: it would run to the same size again, and storing it would
/// put that much in the job store and every watcher's reply.
pub(crate) fn after_run(
    envelope: &Envelope,
    backoff: &Backoff,
    end: RunEnd,
    max_result_bytes: usize,
    now: Timestamp,
) -> Verdict {
    let (asked, error) = match end {
        RunEnd::Succeeded(output) if output.len() > max_result_bytes => {
            let error = format!(
                "its result is {} bytes, over the limit of {max_result_bytes} bytes \
                 (max_result_bytes): not stored; return large data by reference (a path or URL)",
                output.len()
            );
            return Verdict::dead(DeadReason::Oversized, error, envelope.attempt);
        }
        RunEnd::Succeeded(output) => {
            debug!("succeeded");
            return Verdict::succeeded(output);
        }
        RunEnd::TimedOut(limit) => {
            let error = format!("exceeded its time limit of {limit:?}");
            warn!("{error}; failed without retry");
            return Verdict::failed(error);
        }
        RunEnd::Cancelled(CancelReason::Revoked) => {
            info!("revoked while running; stopped");
            return Verdict::revoked(Some("revoked while running".to_owned()));
        }
        RunEnd::Cancelled(CancelReason::LeaseLost | CancelReason::SoftTimeLimit) => {
            return Verdict::abandoned();
        }
        RunEnd::Error {
            kind: TaskErrorKind::Fail,
            message,
        } => {
            warn!(error = %message, "failed; not retried");
            return Verdict::failed(message);
        }
        RunEnd::Error {
            kind: TaskErrorKind::Retry(after),
            message,
        } => (after, message),
        RunEnd::Panicked(message) => (None, format!("the handler panicked: {message}")),
    };
    Verdict::retry(envelope, backoff, asked, error, now)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spool_broker::QueueName;

    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_750_000_000_000);

    fn envelope(attempt: u32, max_attempts: u32) -> Envelope {
        let mut envelope = Envelope::new("test.outcome", QueueName::DEFAULT, vec![0x80]);
        envelope.attempt = attempt;
        envelope.max_attempts = max_attempts;
        envelope
    }

    fn letter(verdict: &Verdict) -> &DeadLetter {
        match &verdict.action {
            Action::DeadLetter(letter) => letter,
            other => panic!("not a dead letter: {other:?}"),
        }
    }

    fn next(verdict: &Verdict) -> &Envelope {
        match &verdict.action {
            Action::Retry(next) => next,
            other => panic!("not a retry: {other:?}"),
        }
    }

    fn next_eta(verdict: &Verdict) -> Timestamp {
        next(verdict).eta.unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_redelivery_counts_as_an_attempt() {
        assert_eq!(attempt_of(1, 1), 1);
        assert_eq!(attempt_of(1, 3), 3);
        assert_eq!(attempt_of(2, 0), 2);
        assert_eq!(attempt_of(u32::MAX, 5), u32::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_run_out_at_max_attempts() {
        assert!(!is_last(1, 3) && !is_last(2, 3));
        assert!(is_last(3, 3) && is_last(4, 3));
        assert!(is_last(1, 1) && is_last(1, 0));
        assert!(!is_past_the_last(3, 3));
        assert!(is_past_the_last(4, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_handlers_delay_wins_over_the_backoff() {
        let fixed = Backoff::fixed(ms(50));
        assert_eq!(retry_delay(&fixed, 1, None), ms(50));
        assert_eq!(retry_delay(&fixed, 9, None), ms(50));
        assert_eq!(retry_delay(&fixed, 1, Some(ms(7))), ms(7));
        let growing = Backoff {
            jitter: false,
            ..Backoff::default()
        };
        let delays = [1, 2, 3, 11, 40].map(|attempt| retry_delay(&growing, attempt, None));
        let secs = [1, 2, 4, 600, 600].map(Duration::from_secs);
        assert_eq!(delays, secs);
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_keeps_each_delay_in_the_upper_half() {
        let jittered = Backoff::default();
        let plain = Backoff {
            jitter: false,
            ..jittered
        };
        for attempt in 1..=12 {
            let upper = retry_delay(&plain, attempt, None);
            let delays: Vec<Duration> = (0..50)
                .map(|_| retry_delay(&jittered, attempt, None))
                .collect();
            for delay in &delays {
                assert!(
                    *delay <= upper && *delay >= upper / 2,
                    "{delay:?} vs {upper:?}"
                );
            }
            // Tasks that failed together do not all retry together.
            assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_is_the_next_attempt_after_its_delay() {
        let failed = envelope(1, 3);
        let verdict = Verdict::retry(&failed, &Backoff::fixed(ms(200)), None, "boom".into(), NOW);
        assert_eq!(verdict.outcome, Outcome::Retried);
        assert_eq!(verdict.error.as_deref(), Some("boom"));
        let next = next(&verdict);
        assert_eq!(
            (next.id, next.attempt, next.max_attempts),
            (failed.id, 2, 3)
        );
        assert_eq!(next.eta, Some(NOW.saturating_add(ms(200))));
        assert!(!verdict.action.is_final());

        let asked = Verdict::retry(&failed, &Backoff::default(), Some(ms(5)), "x".into(), NOW);
        assert_eq!(next_eta(&asked), NOW.saturating_add(ms(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_on_the_last_attempt_is_dead_lettered() {
        let last = envelope(3, 3);
        let verdict = Verdict::retry(&last, &Backoff::default(), None, "boom".into(), NOW);
        assert_eq!(
            verdict.outcome,
            Outcome::DeadLettered(DeadReason::AttemptsExhausted)
        );
        let letter = letter(&verdict);
        assert_eq!(
            (letter.reason, &letter.error[..], letter.attempts),
            (DeadReason::AttemptsExhausted, "boom", 3)
        );
        assert!(verdict.action.is_final());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferral_keeps_the_attempt() {
        let limited = envelope(2, 3);
        let verdict = Verdict::deferred(&limited, ms(300), NOW);
        assert_eq!(verdict.outcome, Outcome::Deferred);
        let later = next(&verdict);
        assert_eq!(later.attempt, 2);
        assert_eq!(later.eta, Some(NOW.saturating_add(ms(300))));
        assert_eq!(
            Envelope {
                eta: None,
                ..later.clone()
            },
            limited
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_checks_before_a_run_come_in_order() {
        let fine = envelope(1, 3);
        assert!(before_run(&fine, 1, 5, false, NOW).is_none());

        // No attempt allowed is not a worker that died: it is malformed,
        // whatever else holds.
        let verdict = before_run(&envelope(1, 0), 9, 5, true, NOW).unwrap();
        let refused = self::letter(&verdict);
        assert_eq!(
            (refused.reason, &refused.error[..], refused.attempts),
            (DeadReason::Malformed, "max_attempts must be at least 1", 0)
        );

        // Too many deliveries comes first, even before a revocation.
        let verdict = before_run(&envelope(4, 3), 6, 5, true, NOW).unwrap();
        let letter = letter(&verdict);
        assert_eq!(
            (letter.reason, letter.attempts),
            (DeadReason::TooManyDeliveries, 4)
        );
        assert!(
            letter.error.contains("delivered 6 times"),
            "{}",
            letter.error
        );

        let verdict = before_run(&envelope(4, 3), 2, 5, true, NOW).unwrap();
        let letter = self::letter(&verdict);
        assert_eq!(
            (letter.reason, letter.attempts),
            (DeadReason::AttemptsExhausted, 4)
        );

        let verdict = before_run(&fine, 5, 5, true, NOW).unwrap();
        assert!(matches!(verdict.action, Action::Ack));
        assert_eq!((verdict.outcome, verdict.error), (Outcome::Revoked, None));

        let mut expired = envelope(3, 3);
        expired.expires_at = Some(Timestamp::from_millis(NOW.as_millis() - 1));
        let verdict = before_run(&expired, 1, 5, false, NOW).unwrap();
        assert!(matches!(verdict.action, Action::Ack));
        assert_eq!(verdict.outcome, Outcome::Expired);
        // Expiring at this very instant is not expired yet.
        expired.expires_at = Some(NOW);
        assert!(before_run(&expired, 1, 5, false, NOW).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn how_a_run_ended_decides_its_outcome() {
        let running = envelope(1, 3);
        let backoff = Backoff::fixed(ms(10));
        let after = |end| after_run(&running, &backoff, end, 4, NOW);

        let verdict = after(RunEnd::Succeeded(vec![1, 2]));
        assert!(matches!(verdict.action, Action::Ack));
        assert_eq!(
            (verdict.outcome, verdict.output, verdict.error),
            (Outcome::Succeeded, Some(vec![1, 2]), None)
        );

        // A result over the limit (4 bytes here) is not stored.
        let verdict = after(RunEnd::Succeeded(vec![0; 5]));
        let oversized = letter(&verdict);
        assert_eq!(
            (oversized.reason, oversized.attempts),
            (DeadReason::Oversized, 1)
        );
        assert!(oversized.error.contains("5 bytes"), "{}", oversized.error);
        assert!(
            oversized.error.contains("limit of 4 bytes"),
            "{}",
            oversized.error
        );
        assert!(verdict.output.is_none() && verdict.action.is_final());

        let verdict = after(RunEnd::TimedOut(Duration::from_secs(5)));
        assert!(matches!(verdict.action, Action::Ack));
        assert_eq!(verdict.outcome, Outcome::Failed);
        assert_eq!(
            verdict.error.as_deref(),
            Some("exceeded its time limit of 5s")
        );

        let verdict = after(RunEnd::Error {
            kind: TaskErrorKind::Fail,
            message: "bad input".into(),
        });
        assert!(matches!(verdict.action, Action::Ack));
        assert_eq!(
            (verdict.outcome, verdict.error.as_deref()),
            (Outcome::Failed, Some("bad input"))
        );

        let verdict = after(RunEnd::Cancelled(CancelReason::Revoked));
        assert!(matches!(verdict.action, Action::Ack));
        assert_eq!(verdict.outcome, Outcome::Revoked);
        assert!(verdict.error.is_some());

        for reason in [CancelReason::LeaseLost, CancelReason::SoftTimeLimit] {
            let verdict = after(RunEnd::Cancelled(reason));
            assert!(matches!(verdict.action, Action::Abandon));
            assert_eq!((verdict.outcome, verdict.error), (Outcome::Abandoned, None));
            assert!(!verdict.action.is_final());
        }

        let verdict = after(RunEnd::Error {
            kind: TaskErrorKind::Retry(Some(ms(99))),
            message: "later".into(),
        });
        assert_eq!(next_eta(&verdict), NOW.saturating_add(ms(99)));
        assert_eq!(next(&verdict).attempt, 2);

        let verdict = after(RunEnd::Panicked("oops".into()));
        assert_eq!(verdict.outcome, Outcome::Retried);
        assert_eq!(next_eta(&verdict), NOW.saturating_add(ms(10)));
        assert_eq!(verdict.error.as_deref(), Some("the handler panicked: oops"));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_requeued_and_abandoned_entries() {
        let verdict = Verdict::refused(DeadReason::BadSignature, "forged".into());
        let letter = letter(&verdict);
        assert_eq!(
            (letter.reason, &letter.error[..], letter.attempts),
            (DeadReason::BadSignature, "forged", 0)
        );
        assert_eq!(
            verdict.outcome,
            Outcome::DeadLettered(DeadReason::BadSignature)
        );

        let verdict = Verdict::requeued();
        assert!(matches!(verdict.action, Action::Requeue));
        assert_eq!(verdict.outcome, Outcome::Requeued);
        assert!(!verdict.action.is_final());

        let verdict = Verdict::abandoned();
        assert!(matches!(verdict.action, Action::Abandon));
        assert!(Verdict::expired().action.is_final());
    }
}

//! Running one delivery and deciding its outcome.

use std::future::pending;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use spool_broker::{Broker, DeadReason, Delivery, Envelope, RateLimit, Timestamp};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use spool_broker::store::{Finished, Started, WorkerId};
use spool_broker::{JobStatus, RecordPolicy};
use tokio::sync::mpsc;

use super::contexts::NodeContexts;
use super::control::Revoked;
use super::outcome::{self, Action, RunEnd, Verdict};
use super::report::{Note, ProgressSink};
use super::running::{CancelReason, RunControl, Running};
use super::settle::NodeStep;
use super::trace::{self, TaskTrace};
use crate::handler::{ErasedRun, Handlers, TaskContext};
use crate::observer::{Observers, Outcome, TaskInfo};

/// The worker-wide limits on runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) time_limit: Option<Duration>,
    pub(crate) soft_time_limit: Option<Duration>,
    pub(crate) cancel_grace: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) max_result_bytes: usize,
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
    /// Workflow nodes' context reads, batched across running tasks.
    pub(crate) contexts: NodeContexts,
    pub(crate) handlers: Handlers,
    pub(crate) observers: Observers,
    pub(crate) limits: Limits,
    pub(crate) revoked: Revoked,
    pub(crate) running: Running,
    pub(crate) reporting: Reporting,
}

/// What became of a delivery, with what the job store records of it.
struct Decision {
    verdict: Verdict,
    /// When the handler started, if it ran.
    started_at: Option<Timestamp>,
    /// What the job store records of this task type.
    policy: RecordPolicy,
    /// The workflow node this run was, if it ran as one.
    node: Option<Arc<crate::workflow::NodeRun>>,
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            started_at: None,
            policy: RecordPolicy::Full,
            node: None,
        }
    }
}

impl<B: Broker> Executor<B> {
    /// [`execute_traced`](Self::execute_traced) without the trace.
    #[cfg(test)]
    pub(crate) async fn execute(
        self: Arc<Self>,
        delivery: Delivery,
    ) -> (Action, Option<Box<Finished>>, Option<Box<NodeStep>>) {
        let (action, record, node, _) = self.execute_traced(delivery).await;
        (action, record, node)
    }

    /// Runs a delivery inside its task span and returns what to tell the
    /// broker, what to record in the job store before that, for a
    /// workflow node's final outcome how to settle the node, and what the
    /// settlement's span needs.
    pub(crate) async fn execute_traced(
        self: Arc<Self>,
        delivery: Delivery,
    ) -> (
        Action,
        Option<Box<Finished>>,
        Option<Box<NodeStep>>,
        TaskTrace,
    ) {
        // When the task was enqueued, from its stream entry id
        // (`<millis>-<seq>`), for the workflow node latency.
        let enqueued_ms = delivery
            .tag
            .entry_id()
            .split_once('-')
            .and_then(|(ms, _)| ms.parse::<u64>().ok());
        let Delivery {
            mut envelope,
            deliveries,
            ..
        } = delivery;
        envelope.attempt = outcome::attempt_of(envelope.attempt, deliveries);
        let span = trace::task_span(&envelope);
        let recorded = span.clone();
        async {
            let started = Instant::now();
            let mut decision = self.decide(&mut envelope, deliveries).await;
            let info = TaskInfo {
                id: envelope.id,
                name: &envelope.name,
                queue: &envelope.queue,
                attempt: envelope.attempt,
            };
            if let (Some(started_at), Some(_)) = (decision.started_at, &decision.node) {
                let waited = enqueued_ms
                    .map(|ms| Duration::from_millis(started_at.as_millis().saturating_sub(ms)));
                self.observers.workflow_node_started(&info, waited);
            }
            let ran_for = match decision.started_at {
                Some(_) => started.elapsed(),
                None => Duration::ZERO,
            };
            self.observers
                .finished(&info, decision.verdict.outcome, ran_for);
            let trace = trace::record_outcome(
                &recorded,
                decision.verdict.outcome,
                decision.verdict.error.as_deref(),
            );
            let node = NodeStep::of(&envelope, &decision.verdict, decision.node.as_deref());
            let record = self.record_of(&envelope, &mut decision);
            (decision.verdict.action, record, node, trace)
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
        let status = match decision.verdict.outcome {
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
        record.result = decision.verdict.output.take();
        record.error = decision.verdict.error.take();
        record.started_at = decision.started_at;
        record.worker = Some(self.reporting.worker.clone());
        Some(Box::new(record))
    }

    /// Decides and, when it should run, runs the task; says whether the
    /// handler ran.
    async fn decide(&self, envelope: &mut Envelope, deliveries: u32) -> Decision {
        let revoked = self.revoked.contains(envelope.id);
        let max_deliveries = self.limits.max_deliveries;
        let now = Timestamp::now();
        if let Some(verdict) =
            outcome::before_run(envelope, deliveries, max_deliveries, revoked, now)
        {
            return verdict.into();
        }
        let Some(handler) = self.handlers.get(&envelope.name) else {
            if let Some(delay) = self.handlers.left_for_others(&envelope.name) {
                info!("no handler here; left for other workers, back in {delay:?}");
                return Verdict::deferred(envelope, delay, Timestamp::now()).into();
            }
            let error = format!(
                "no handler is registered for task {:?} on this worker",
                envelope.name
            );
            return Verdict::dead(DeadReason::UnknownTask, error, envelope.attempt).into();
        };
        if let Some(limit) = handler.rate_limit()
            && let Some(wait) = self.take_rate_token(&envelope.name, limit).await
        {
            debug!("rate limited; deferred by {wait:?}");
            return Verdict::deferred(envelope, wait, Timestamp::now()).into();
        }
        let node = match self.node_run(envelope, deliveries).await {
            Ok(node) => node,
            Err(verdict) => return verdict.into(),
        };
        let control = RunControl::default();
        let payload = std::mem::take(&mut envelope.payload);
        let policy = handler.record_policy();
        let progress = ProgressSink::new(&self.reporting.notes, envelope.id, envelope.attempt);
        let ctx = TaskContext::new(envelope.clone(), control.token().clone())
            .with_progress(progress)
            .with_node(node.clone());
        let started = handler.start(&payload, ctx);
        envelope.payload = payload;
        let run = match started {
            Ok(run) => run,
            Err(e) => {
                let error = e.to_string();
                return Verdict::dead(DeadReason::BadPayload, error, envelope.attempt).into();
            }
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
        let info = TaskInfo {
            id: envelope.id,
            name: &envelope.name,
            queue: &envelope.queue,
            attempt: envelope.attempt,
        };
        self.observers.started(&info);
        self.observers
            .workflow_node_running(&info, envelope, started_at);
        let hard = envelope.time_limit().or(self.limits.time_limit);
        let end = supervise(run, &control, hard, self.limits).await;
        let verdict = outcome::after_run(
            envelope,
            handler.backoff(),
            end,
            self.limits.max_result_bytes,
            Timestamp::now(),
        );
        Decision {
            verdict,
            started_at: Some(started_at),
            policy,
            node,
        }
    }

    /// For a workflow node, its parents' results (read with those of the
    /// other nodes starting now: a round trip at most), or the
    /// verdict that it must not run: settled already, or its state cannot
    /// be read now (then it is put back for a second).
    ///
    /// A node without parents on its first delivery reads nothing: it has
    /// no parents' results, it cannot have run before, and should its
    /// workflow have been cancelled in between (its revocation still on
    /// the way), the settle step refuses its outcome as it refuses any
    /// settled node's.
    async fn node_run(
        &self,
        envelope: &Envelope,
        deliveries: u32,
    ) -> Result<Option<Arc<crate::workflow::NodeRun>>, Verdict> {
        let Some((workflow, node)) = envelope.workflow_node() else {
            return Ok(None);
        };
        if deliveries <= 1 && envelope.is_workflow_root() {
            return Ok(Some(Arc::new(crate::workflow::NodeRun::new(
                workflow,
                node,
                Vec::new(),
            ))));
        }
        match self
            .contexts
            .read(&self.broker, workflow, node.clone())
            .await
        {
            Ok(Some(context)) if context.should_run(envelope.id) => Ok(Some(Arc::new(
                crate::workflow::NodeRun::new(workflow, node, context.parents),
            ))),
            Ok(_) => Err(Verdict::settled_before()),
            Err(e) => {
                warn!(error = %e, "cannot read its workflow node; deferring by 1 s");
                Err(Verdict::deferred(
                    envelope,
                    Duration::from_secs(1),
                    Timestamp::now(),
                ))
            }
        }
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

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde::{Deserialize, Serialize};
    use spool_broker::{Backoff, MemoryBroker, QueueName, Task, TaskOptions};

    use super::*;
    use crate::TaskError;

    /// What the test handler does.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize)]
    enum Act {
        Succeed,
        Fail,
        Retry,
        Panic,
        /// Sleeps an hour, or until cancelled when it heeds cancellation.
        Hang {
            heeds: bool,
        },
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Job {
        act: Act,
    }

    impl Task for Job {
        const NAME: &'static str = "test.execute.job";
        type Output = u32;

        fn options() -> TaskOptions {
            TaskOptions {
                max_attempts: 2,
                backoff: Backoff::fixed(Duration::from_secs(30)),
                ..TaskOptions::default()
            }
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Limited;

    impl Task for Limited {
        const NAME: &'static str = "test.execute.limited";
        type Output = ();

        fn options() -> TaskOptions {
            TaskOptions {
                rate_limit: Some(RateLimit {
                    limit: 1,
                    period: Duration::from_secs(3600),
                }),
                ..TaskOptions::default()
            }
        }
    }

    const LIMITS: Limits = Limits {
        time_limit: None,
        soft_time_limit: None,
        cancel_grace: Duration::from_secs(5),
        max_deliveries: 4,
        max_result_bytes: 1024,
    };

    struct Setup {
        broker: MemoryBroker,
        executor: Arc<Executor<MemoryBroker>>,
        /// The attempt each run saw.
        runs: Arc<std::sync::Mutex<Vec<u32>>>,
        notes: mpsc::UnboundedReceiver<Note>,
    }

    fn setup(limits: Limits) -> Setup {
        let broker = MemoryBroker::new();
        let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut handlers = Handlers::default();
        let seen = Arc::clone(&runs);
        handlers.insert::<Job, _>(move |job: Job, ctx: TaskContext| {
            seen.lock().unwrap().push(ctx.attempt());
            async move {
                match job.act {
                    Act::Succeed => Ok(7),
                    Act::Fail => Err(TaskError::fail("bad input")),
                    Act::Retry => Err(TaskError::retry("flaky")),
                    Act::Panic => panic!("oops"),
                    Act::Hang { heeds } => {
                        let hour = tokio::time::sleep(Duration::from_secs(3600));
                        if heeds {
                            tokio::select! {
                                () = hour => {}
                                () = ctx.cancellation().cancelled() => {}
                            }
                            Err(TaskError::retry("stopped"))
                        } else {
                            hour.await;
                            Ok(0)
                        }
                    }
                }
            }
        });
        let limited = Arc::new(AtomicU32::new(0));
        handlers.insert::<Limited, _>(move |_: Limited, _ctx: TaskContext| {
            limited.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        });
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let executor = Arc::new(Executor {
            broker: broker.clone(),
            contexts: NodeContexts::default(),
            handlers,
            observers: Observers::default(),
            limits,
            revoked: Revoked::default(),
            running: Running::default(),
            reporting: Reporting {
                notes: notes_tx,
                worker: WorkerId::new("test-host", 1),
                recording: true,
            },
        });
        Setup {
            broker,
            executor,
            runs,
            notes,
        }
    }

    impl Setup {
        /// Enqueues `envelope` and fetches it back: a real delivery.
        async fn deliver(&self, envelope: &Envelope) -> Delivery {
            self.broker
                .enqueue(std::slice::from_ref(envelope))
                .await
                .unwrap();
            let mut batch = self
                .broker
                .fetch(&envelope.queue, "c", 1, Duration::ZERO)
                .await
                .unwrap();
            batch.deliveries.remove(0)
        }

        async fn run(&self, envelope: &Envelope) -> (Action, Option<Box<Finished>>) {
            let delivery = self.deliver(envelope).await;
            let (action, record, _) = Arc::clone(&self.executor).execute(delivery).await;
            (action, record)
        }

        fn runs(&self) -> Vec<u32> {
            self.runs.lock().unwrap().clone()
        }
    }

    fn job(act: Act) -> Envelope {
        Envelope::for_task(&Job { act }).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_is_acknowledged_and_recorded_with_its_output() {
        let mut setup = setup(LIMITS);
        let envelope = job(Act::Succeed);
        let (action, record) = setup.run(&envelope).await;
        assert!(matches!(action, Action::Ack));
        let record = record.unwrap();
        assert_eq!(
            (record.id, record.status),
            (envelope.id, JobStatus::Succeeded)
        );
        assert_eq!(
            spool_broker::decode_payload::<u32>(&record.result.unwrap()).unwrap(),
            7
        );
        assert!(record.started_at.is_some() && record.error.is_none());
        assert!(matches!(setup.notes.try_recv(), Ok(Note::Started(_))));
        assert_eq!(setup.runs(), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_failure_schedules_the_next_attempt_then_dead_letters() {
        let setup = setup(LIMITS);
        let envelope = job(Act::Retry);
        let before = Timestamp::now();
        let (action, record) = setup.run(&envelope).await;
        let Action::Retry(next) = action else {
            panic!("not retried: {action:?}")
        };
        assert_eq!((next.id, next.attempt), (envelope.id, 2));
        // The task type's backoff: 30 s.
        let eta = next.eta.unwrap();
        assert!(
            eta >= before.saturating_add(Duration::from_secs(30)),
            "{eta}"
        );
        assert!(eta <= Timestamp::now().saturating_add(Duration::from_secs(30)));
        let record = record.unwrap();
        assert_eq!(
            (record.status, record.error.as_deref()),
            (JobStatus::Retrying, Some("flaky"))
        );

        // The second of two attempts (run now) fails for good.
        let now = Envelope { eta: None, ..*next };
        let (action, record) = setup.run(&now).await;
        let Action::DeadLetter(letter) = action else {
            panic!("not dead-lettered: {action:?}")
        };
        assert_eq!(
            (letter.reason, letter.attempts),
            (DeadReason::AttemptsExhausted, 2)
        );
        assert_eq!(record.unwrap().status, JobStatus::Dead);
        assert_eq!(setup.runs(), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_failure_and_a_panic() {
        let setup = setup(LIMITS);
        let (action, record) = setup.run(&job(Act::Fail)).await;
        assert!(matches!(action, Action::Ack));
        assert_eq!(record.unwrap().status, JobStatus::Failed);

        let (action, record) = setup.run(&job(Act::Panic)).await;
        assert!(matches!(action, Action::Retry(_)), "{action:?}");
        let error = record.unwrap().error.unwrap();
        assert_eq!(error, "the handler panicked: oops");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_past_its_time_limit_fails_without_retry() {
        // The hour the handler sleeps passes at once under paused time; the
        // limit stops it after 10 s of it.
        let limits = Limits {
            time_limit: Some(Duration::from_secs(10)),
            ..LIMITS
        };
        let setup = setup(limits);
        let started = Instant::now();
        let (action, record) = setup.run(&job(Act::Hang { heeds: false })).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(matches!(action, Action::Ack));
        let record = record.unwrap();
        assert_eq!(record.status, JobStatus::Failed);
        assert_eq!(
            record.error.as_deref(),
            Some("exceeded its time limit of 10s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_soft_limit_asks_first_and_drops_after_the_grace() {
        let limits = Limits {
            soft_time_limit: Some(Duration::from_secs(10)),
            cancel_grace: Duration::from_secs(5),
            ..LIMITS
        };
        let setup = setup(limits);
        let started = Instant::now();
        // A handler that heeds the request stops at the soft limit...
        let (action, record) = setup.run(&job(Act::Hang { heeds: true })).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(matches!(action, Action::Ack));
        assert_eq!(record.unwrap().status, JobStatus::Failed);
        // ...one that does not is dropped when the grace is over.
        let started = Instant::now();
        let (action, _) = setup.run(&job(Act::Hang { heeds: false })).await;
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert!(matches!(action, Action::Ack));
    }

    #[tokio::test(start_paused = true)]
    async fn a_redelivery_runs_as_a_later_attempt_until_none_is_left() {
        let setup = setup(LIMITS);
        let envelope = job(Act::Succeed);
        // Its worker died once: this is its second (and last) attempt.
        let mut delivery = setup.deliver(&envelope).await;
        delivery.deliveries = 2;
        let (action, _, _) = Arc::clone(&setup.executor).execute(delivery).await;
        assert!(matches!(action, Action::Ack));
        assert_eq!(setup.runs(), [2]);

        // Twice: the last allowed attempt is spent.
        let mut delivery = setup.deliver(&envelope).await;
        delivery.deliveries = 3;
        let (action, record, _) = Arc::clone(&setup.executor).execute(delivery).await;
        let Action::DeadLetter(letter) = action else {
            panic!("{action:?}")
        };
        assert_eq!(
            (letter.reason, letter.attempts),
            (DeadReason::AttemptsExhausted, 3)
        );
        assert_eq!(record.unwrap().status, JobStatus::Dead);

        // More than max_deliveries, whatever the attempts.
        let mut many = job(Act::Succeed);
        many.max_attempts = 100;
        let mut delivery = setup.deliver(&many).await;
        delivery.deliveries = 5;
        let (action, _, _) = Arc::clone(&setup.executor).execute(delivery).await;
        let Action::DeadLetter(letter) = action else {
            panic!("{action:?}")
        };
        assert_eq!(letter.reason, DeadReason::TooManyDeliveries);
        assert_eq!(setup.runs(), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn what_cannot_or_need_not_run_does_not() {
        let setup = setup(LIMITS);
        let revoked = job(Act::Succeed);
        setup.executor.revoked.replace(vec![revoked.id]);
        let (action, record) = setup.run(&revoked).await;
        assert!(matches!(action, Action::Ack));
        assert_eq!(record.unwrap().status, JobStatus::Revoked);

        let mut expired = job(Act::Succeed);
        expired.expires_at = Some(Timestamp::from_millis(1));
        let (action, record) = setup.run(&expired).await;
        assert!(matches!(action, Action::Ack));
        assert_eq!(record.unwrap().status, JobStatus::Expired);

        let unknown = Envelope::new("test.execute.nobody", QueueName::DEFAULT, vec![0x80]);
        let (action, _) = setup.run(&unknown).await;
        let Action::DeadLetter(letter) = action else {
            panic!("{action:?}")
        };
        assert_eq!(letter.reason, DeadReason::UnknownTask);

        let garbled = Envelope::new(Job::NAME, QueueName::DEFAULT, b"not a job".to_vec());
        let (action, _) = setup.run(&garbled).await;
        let Action::DeadLetter(letter) = action else {
            panic!("{action:?}")
        };
        assert_eq!(letter.reason, DeadReason::BadPayload);
        assert!(setup.runs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_task_is_deferred_as_the_same_attempt() {
        let setup = setup(LIMITS);
        let first = Envelope::for_task(&Limited).unwrap();
        let (action, _) = setup.run(&first).await;
        assert!(matches!(action, Action::Ack));
        let second = Envelope::for_task(&Limited).unwrap();
        let (action, record) = setup.run(&second).await;
        let Action::Retry(later) = action else {
            panic!("{action:?}")
        };
        assert_eq!((later.id, later.attempt), (second.id, 1));
        assert!(later.eta.unwrap() > Timestamp::now().saturating_add(Duration::from_secs(3000)));
        // Deferred is no outcome of the task: nothing is recorded.
        assert!(record.is_none());
    }
}

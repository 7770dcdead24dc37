//! The worker runtime: fetch, dispatch, run, settle.
//!
//! ```text
//!  fetchers (one per queue) --batches--> dispatcher --spawn--> runs
//!        ^  prefetch permits                                    |
//!        '------------- settler (group-committed acks) <--------'
//! ```

mod contexts;
mod control;
mod execute;
mod fetch;
mod lease;
mod outcome;
mod report;
mod running;
mod settle;
mod store;
mod store_gate;
mod trace;
#[cfg(feature = "store")]
mod workflow_history;

pub(crate) use self::report::ProgressSink;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use spool_broker::store::WorkerId;
use spool_broker::{Broker, Task};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, info, info_span, warn};

use self::control::{Paused, Revoked};
use self::execute::{Executor, Limits, Reporting};
use self::fetch::{Claimed, Fatal, Fetcher};
use self::lease::Leases;
use self::outcome::Verdict;
use self::running::Running;
use self::settle::{Settlement, UniqueLock};
use self::store::Store;
use self::store_gate::StoreGate;
use self::trace::TaskTrace;
use crate::Result;
use crate::config::WorkerConfig;
use crate::counters::{CounterSnapshot, Counters};
use crate::handler::{Handler, Handlers};
use crate::observer::{Observer, Observers, TaskInfo};

/// How long a stopping worker waits for its workflow history writes.
#[cfg(feature = "store")]
const HISTORY_PATIENCE: Duration = Duration::from_secs(10);

/// Fetches tasks from a broker and runs them with registered handlers.
///
/// Delivery is at least once with late acknowledgement: a task is
/// acknowledged only after its outcome (success, final failure, scheduled
/// retry or dead letter) is stored. At most `prefetch` tasks are held
/// unacknowledged and at most `concurrency` run at once.
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use spool_broker::{MemoryBroker, Task};
/// use spool_sdk::Client;
/// use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greet { name: String }
/// impl Task for Greet {
///     const NAME: &'static str = "demo.greet";
///     type Output = String;
/// }
///
/// async fn greet(task: Greet, _ctx: TaskContext) -> Result<String, TaskError> {
///     Ok(format!("hello, {}", task.name))
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = MemoryBroker::new();
/// Client::new(broker.clone()).enqueue(Greet { name: "Ada".into() }).await?;
///
/// let worker = Worker::new(broker, WorkerConfig::default()).register::<Greet, _>(greet);
/// let counters = worker.counters();
/// let report = worker
///     .run(async move {
///         while counters.snapshot().succeeded < 1 {
///             tokio::task::yield_now().await;
///         }
///     })
///     .await?;
/// assert_eq!(report.succeeded, 1);
/// # Ok(()) }
/// ```
pub struct Worker<B> {
    broker: B,
    config: WorkerConfig,
    handlers: Handlers,
    counters: Counters,
    observers: Observers,
    store: Option<Store>,
}

impl<B: Broker> Worker<B> {
    /// A worker over `broker` with no handlers yet.
    pub fn new(broker: B, config: WorkerConfig) -> Self {
        Self {
            broker,
            config,
            handlers: Handlers::default(),
            counters: Counters::default(),
            observers: Observers::default(),
            store: None,
        }
    }

    /// Registers the handler of task type `T`, replacing any earlier one.
    #[must_use]
    pub fn register<T: Task, H: Handler<T>>(mut self, handler: H) -> Self {
        self.handlers.insert::<T, H>(handler);
        self
    }

    /// Leaves tasks named `names` for other workers: a worker that cannot
    /// serve a task type others serve (video tasks without a usable FFmpeg)
    /// puts each one it fetches back, as the same attempt, `delay` later,
    /// instead of dead-lettering it as `unknown_task`. A handler registered
    /// for a name takes precedence.
    #[must_use]
    pub fn leave_for_others(mut self, names: &[&str], delay: Duration) -> Self {
        for name in names {
            self.handlers.leave_for_others(name, delay);
        }
        self
    }

    /// Records every task's life in `store`: its start, its progress, and its
    /// outcome, which is committed before the task is acknowledged. What is
    /// recorded of each task type follows its [`TaskOptions::record`]
    /// policy.
    ///
    /// [`TaskOptions::record`]: spool_broker::TaskOptions::record
    #[cfg(feature = "store")]
    #[must_use]
    pub fn with_store(mut self, store: spool_broker::store::JobStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds an observer of the runtime's events (metrics, the worker registry's heartbeat).
    #[must_use]
    pub fn observe(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// The names of the task types this worker has a handler for, sorted:
    /// what it tells the worker registry it serves. Names it only leaves
    /// for others ([`leave_for_others`](Self::leave_for_others)) are not
    /// among them.
    #[must_use]
    pub fn task_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.handlers.names().collect();
        names.sort_unstable();
        names
    }

    /// The worker's live counters; read them while it runs.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// Runs until `shutdown` completes (or, with `max_tasks`, until that
    /// many tasks are done), then shuts down warmly: no more fetching,
    /// prefetched tasks not yet started are given back to their queue,
    /// running tasks finish and every outcome is acknowledged.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) for an unusable
    /// configuration. [`Error::Broker`](crate::Error::Broker) with
    /// [`spool_broker::Error::Permission`] when the broker's credentials
    /// lack a permission the worker needs: checked before anything is
    /// fetched ([`Broker::check_permissions`]), and met later if a
    /// command is refused all the same (the worker then stops warmly).
    /// Other broker failures while running are logged and ridden out with
    /// backoff, not returned.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future is a cold shutdown: fetching and acknowledging
    /// stop at once; runs already started finish in the background but
    /// their tasks stay unacknowledged and are redelivered.
    pub async fn run<S>(self, shutdown: S) -> Result<CounterSnapshot>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        self.config.validate()?;
        match self.broker.check_permissions(&self.config.queues).await {
            Err(e) if e.is_fatal() => return Err(e.into()),
            // Unreachable for now: the fetchers ride that out.
            Err(e) => warn!(error = %e, "cannot check the broker's permissions"),
            Ok(()) => {}
        }
        let consumer: Arc<str> = self.config.consumer_name().into();
        let span = info_span!("worker", consumer = %consumer);
        let fatal = Fatal::default();
        let report = self
            .serve(consumer, shutdown, fatal.clone())
            .instrument(span)
            .await;
        match fatal.take() {
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }

    async fn serve<S>(self, consumer: Arc<str>, shutdown: S, fatal: Fatal) -> CounterSnapshot
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let config = self.config;
        info!(
            queues = ?config.queues,
            concurrency = config.concurrency,
            prefetch = config.prefetch,
            tasks = ?self.handlers.names().collect::<Vec<_>>(),
            "worker started",
        );

        match self.broker.server_warnings().await {
            Ok(warnings) => {
                for warning in warnings {
                    warn!("{warning}");
                }
            }
            Err(e) => warn!(error = %e, "cannot check the broker's settings"),
        }

        let stop = CancellationToken::new();
        let watcher = {
            let stop = stop.clone();
            AbortOnDropHandle::new(tokio::spawn(async move {
                tokio::select! {
                    () = shutdown => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            }))
        };

        let mut observers = Observers::default();
        observers.push(Arc::new(self.counters.clone()));
        observers.extend(self.observers);
        // Workflow history: nodes' starts and settlements, to the store.
        #[cfg(feature = "store")]
        let history = self.store.clone().map(|store| {
            let (observer, writer) = workflow_history::start(self.broker.clone(), store);
            observers.push(Arc::new(observer));
            AbortOnDropHandle::new(writer)
        });
        let leases = Leases::default();
        let running = Running::default();
        let revoked = Revoked::default();
        let paused = Paused::default();
        // Subscribe, then load the sets, both before the first fetch: a task
        // revoked (a queue paused) while no worker listened is not run (not
        // fetched), and no message from now on is missed.
        let subscription = match self.broker.control().await {
            Ok(messages) => Some(messages),
            Err(e) => {
                warn!(error = %e, "cannot subscribe to the control channel yet; retrying");
                None
            }
        };
        match self.broker.revoked().await {
            Ok(ids) => revoked.replace(ids),
            Err(e) => warn!(error = %e, "cannot load the revoked tasks; they load on reconnect"),
        }
        match self.broker.paused().await {
            Ok(queues) => paused.replace(queues),
            // The fetch itself refuses a paused queue meanwhile.
            Err(e) => warn!(error = %e, "cannot load the paused queues; they load on reconnect"),
        }
        // Leases and revocations matter until the last run is settled, not
        // just until fetching stops.
        let settled = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(
            lease::keep(
                self.broker.clone(),
                Arc::clone(&consumer),
                leases.clone(),
                running.clone(),
                config.heartbeat_interval,
                settled.clone(),
            )
            .in_current_span(),
        );
        background.spawn(
            control::follow(
                self.broker.clone(),
                subscription,
                (revoked.clone(), paused.clone()),
                running.clone(),
                settled.clone(),
            )
            .in_current_span(),
        );

        if let Some(interval) = config.workflow_sweep_interval {
            background.spawn(
                sweep_workflows(
                    self.broker.clone(),
                    interval,
                    settled.clone(),
                    observers.clone(),
                )
                .in_current_span(),
            );
        }

        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let reporter = AbortOnDropHandle::new(tokio::spawn(
            report::keep(self.broker.clone(), self.store.clone(), notes_rx).in_current_span(),
        ));

        let prefetch = Arc::new(Semaphore::new(config.prefetch));
        // Closed by the settler while outcomes cannot be recorded: the
        // fetchers take no new work until the store is back.
        let store_gate = StoreGate::default();
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let settler = AbortOnDropHandle::new(tokio::spawn(
            settle::run(
                self.broker.clone(),
                self.store.clone(),
                settle_rx,
                observers.clone(),
                leases.clone(),
                (store_gate.clone(), stop.clone()),
            )
            .in_current_span(),
        ));
        let (tasks_tx, tasks_rx) = mpsc::channel(config.queues.len() * 4);
        let budget = config.max_tasks.map(|n| Arc::new(AtomicU64::new(n)));
        let mut fetchers = JoinSet::new();
        for queue in &config.queues {
            let fetcher = Fetcher {
                broker: self.broker.clone(),
                queue: queue.clone(),
                consumer: Arc::clone(&consumer),
                prefetch: Arc::clone(&prefetch),
                prefetch_size: config.prefetch,
                claim_size: config.concurrency,
                poll_interval: config.poll_interval,
                visibility_timeout: config.visibility_timeout,
                leases: leases.clone(),
                fair_share: (config.queues.len() > 1)
                    .then(|| (config.prefetch / config.queues.len()).max(1)),
                budget: budget.clone(),
                paused: paused.clone(),
                store_gate: store_gate.clone(),
                observers: observers.clone(),
                stop: stop.clone(),
                tasks: tasks_tx.clone(),
                settle: settle_tx.clone(),
                fatal: fatal.clone(),
            };
            fetchers.spawn(fetcher.run().in_current_span());
        }
        // Only fetchers hold senders now: the channel closes when they end.
        drop(tasks_tx);

        let executor = Arc::new(Executor {
            broker: self.broker.clone(),
            contexts: contexts::NodeContexts::default(),
            handlers: self.handlers,
            observers: observers.clone(),
            limits: Limits {
                time_limit: config.time_limit,
                soft_time_limit: config.soft_time_limit,
                cancel_grace: config.cancel_grace,
                max_deliveries: config.max_deliveries,
                max_result_bytes: config.max_result_bytes,
            },
            revoked,
            running,
            reporting: Reporting {
                notes: notes_tx,
                worker: WorkerId::new(
                    gethostname::gethostname().to_string_lossy(),
                    std::process::id(),
                ),
                recording: self.store.is_some(),
            },
        });
        let dispatcher = Dispatcher {
            executor,
            running: Arc::new(Semaphore::new(config.concurrency)),
            concurrency: config.concurrency,
            paused,
            settle: settle_tx,
            observers: observers.clone(),
            stop: stop.clone(),
        };
        dispatcher.run(tasks_rx).await;

        // Every run has finished and dropped its sender: the settler drains
        // what is left, then ends.
        if settler.await.is_err() {
            warn!("the settler panicked; unsettled tasks will be redelivered");
        }
        // The executor (and with it the last note sender) is gone: the
        // reporter writes what is left, then ends.
        let _ = reporter.await;
        stop.cancel();
        settled.cancel();
        let _ = watcher.await;
        fetchers.join_all().await;
        background.join_all().await;
        // The last observers go: the history writer writes what is left.
        drop(observers);
        #[cfg(feature = "store")]
        if let Some(writer) = history
            && tokio::time::timeout(HISTORY_PATIENCE, writer)
                .await
                .is_err()
        {
            warn!("stopping with workflow history unwritten: the job store was too slow");
        }
        let report = self.counters.snapshot();
        info!(?report, "worker stopped");
        report
    }
}

impl<B> std::fmt::Debug for Worker<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

/// Runs the workflow sweeper every `interval` until `done`: idempotent,
/// so every worker may run it.
async fn sweep_workflows<B: Broker>(
    broker: B,
    interval: Duration,
    done: CancellationToken,
    observers: Observers,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match broker
            .sweep_workflows(spool_broker::workflow::DEFAULT_SWEEP_GRACE)
            .await
        {
            Ok(report) if report.redispatched > 0 || report.expired > 0 => {
                observers.workflow_swept(&report);
                info!(
                    redispatched = report.redispatched,
                    expired = report.expired,
                    "the workflow sweeper repaired workflows"
                );
            }
            Ok(report) => observers.workflow_swept(&report),
            Err(e) => warn!(error = %e, "the workflow sweep failed; the next one retries"),
        }
    }
}

/// Hands fetched tasks to runs, at most `concurrency` at once.
struct Dispatcher<B> {
    executor: Arc<Executor<B>>,
    running: Arc<Semaphore>,
    concurrency: usize,
    /// A task of a queue paused since it was fetched goes back unstarted.
    paused: Paused,
    settle: mpsc::UnboundedSender<Settlement>,
    observers: Observers,
    stop: CancellationToken,
}

impl<B: Broker> Dispatcher<B> {
    async fn run(self, mut batches: mpsc::Receiver<Vec<Claimed>>) {
        let mut unstarted: Vec<Claimed> = Vec::new();
        'dispatch: while let Some(batch) = batches.recv().await {
            let mut claimed = batch.into_iter();
            while let Some((delivery, slot)) = claimed.next() {
                let run_slot = tokio::select! {
                    biased;
                    () = self.stop.cancelled() => {
                        unstarted.push((delivery, slot));
                        unstarted.extend(claimed);
                        break 'dispatch;
                    }
                    run_slot = Arc::clone(&self.running).acquire_owned() => match run_slot {
                        Ok(run_slot) => run_slot,
                        Err(_closed) => break 'dispatch,
                    },
                };
                if self.paused.contains(delivery.tag.queue()) {
                    self.requeue(std::iter::once((delivery, slot)));
                    continue;
                }
                let executor = Arc::clone(&self.executor);
                let settle = self.settle.clone();
                tokio::spawn(async move {
                    let tag = delivery.tag.clone();
                    let unique = delivery.envelope.unique_key.clone().map(|key| UniqueLock {
                        key,
                        holder: delivery.envelope.id,
                    });
                    let (action, record, node, trace) = executor.execute_traced(delivery).await;
                    drop(run_slot);
                    let _ = settle.send(Settlement {
                        tag,
                        action,
                        record,
                        unique,
                        trace,
                        node,
                        permit: slot,
                    });
                });
            }
        }
        // Stopping: whatever the fetchers still deliver goes back unstarted,
        // but only once they have all returned. Given back while one still
        // waits on its queue, a task would come straight back to it.
        while let Some(batch) = batches.recv().await {
            unstarted.extend(batch);
        }
        self.requeue(unstarted);
        // Wait for the runs in flight: each holds one of these permits.
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        let _ = self.running.acquire_many(all).await;
    }

    fn requeue(&self, claimed: impl IntoIterator<Item = Claimed>) {
        for (delivery, permit) in claimed {
            let envelope = &delivery.envelope;
            let info = TaskInfo {
                id: envelope.id,
                name: &envelope.name,
                queue: &envelope.queue,
                attempt: envelope.attempt,
            };
            let verdict = Verdict::requeued();
            self.observers
                .finished(&info, verdict.outcome, Duration::ZERO);
            let _ = self.settle.send(Settlement {
                tag: delivery.tag,
                action: verdict.action,
                record: None,
                unique: None,
                trace: TaskTrace::default(),
                node: None,
                permit,
            });
        }
    }
}

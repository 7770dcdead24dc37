//! One worker process: a child of a supervisor, or (`--processes 0`) the
//! only process.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use spool_broker::store::JobStore;
use spool_broker::{QueueName, RedisBroker, WorkerState};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::protocol::{ChildMessage, ChildSpec};
use super::{cold_exit_status, resident_bytes};
use crate::cli::Settings;
use crate::heartbeat::{Heartbeat, initial_record};
use crate::metrics::{self, MetricsHub, TaskMetrics};
use spool_video::WithVideoTasks;
use spool_video::probe::GpuTelemetry;
use spool_worker::Observer;
use spool_worker::Worker;

use crate::{Error, Result};

/// How often a child checks its resident memory.
const MEMORY_CHECK: Duration = Duration::from_millis(500);

/// How often a child reports its metrics to the supervisor.
const METRICS_REPORT: Duration = Duration::from_secs(1);

/// Spawns `task` inside the current span (the child's pid and slot).
fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(task.in_current_span())
}

/// Runs as a supervisor's child.
pub(super) fn run_child(spec: ChildSpec) -> Result<ExitCode> {
    die_with_parent(spec.supervisor_pid)?;
    let runtime = runtime()?;
    let span = info_span!("child", pid = std::process::id(), slot = spec.slot);
    let status = StatusPipe::start(&runtime);
    let options = Serve {
        queues: spec.settings.queues.clone(),
        settings: spec.settings,
        capabilities: spec.capabilities,
        supervisor_pid: Some(spec.supervisor_pid),
        status: Some(status.clone()),
        telemetry: None,
    };
    let result = runtime.block_on(serve(options).instrument(span));
    runtime.block_on(status.close());
    // The stdin reader thread may still be blocked reading: do not wait.
    runtime.shutdown_background();
    result
}

/// Runs the only worker, in this process (`--processes 0`).
pub(super) fn run_inline(
    settings: Settings,
    capabilities: BTreeMap<String, String>,
    telemetry: Option<GpuTelemetry>,
) -> Result<ExitCode> {
    let runtime = runtime()?;
    let options = Serve {
        queues: settings.queues.clone(),
        settings,
        capabilities,
        supervisor_pid: None,
        status: None,
        telemetry,
    };
    let result = runtime.block_on(serve(options));
    runtime.shutdown_background();
    result
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spool-worker")
        .build()
        .map_err(|e| Error::Config(format!("cannot start the tokio runtime: {e}")))
}

/// Asks the kernel to kill this process when its parent dies, then checks
/// that the parent is still the supervisor (it may have died before).
#[cfg(target_os = "linux")]
fn die_with_parent(supervisor: u32) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| Error::Config(format!("prctl(PR_SET_PDEATHSIG): {e}")))?;
    let parent = nix::unistd::getppid().as_raw();
    if u32::try_from(parent).ok() != Some(supervisor) {
        return Err(Error::Config(format!(
            "the supervisor (pid {supervisor}) is gone; not starting"
        )));
    }
    Ok(())
}

/// Elsewhere the child relies on its stdin closing when the supervisor
/// dies.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_supervisor: u32) -> Result<()> {
    Ok(())
}

/// The status pipe to the supervisor: protocol lines on stdout, written by
/// one task in order.
#[derive(Debug, Clone)]
struct StatusPipe {
    tx: mpsc::UnboundedSender<ChildMessage>,
    writer: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl StatusPipe {
    fn start(runtime: &tokio::runtime::Runtime) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<ChildMessage>();
        let writer = runtime.spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(message) = rx.recv().await {
                let line = message.to_line();
                if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err()
                {
                    // The supervisor is gone; the death signal follows.
                    return;
                }
            }
        });
        Self {
            tx,
            writer: Arc::new(std::sync::Mutex::new(Some(writer))),
        }
    }

    fn send(&self, message: ChildMessage) {
        let _ = self.tx.send(message);
    }

    /// Writes what is queued, then stops the writer.
    async fn close(self) {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(self.tx);
        if let Some(writer) = writer {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
    }
}

/// Fires once the worker has fetched its task budget (`max_tasks`), so the
/// supervisor can start the replacement while the last tasks still run.
#[derive(Debug)]
struct BudgetWatch {
    left: AtomicU64,
    spent: Notify,
    fired: AtomicBool,
}

impl Observer for BudgetWatch {
    fn fetched(&self, _queue: &QueueName, count: usize) {
        let count = count as u64;
        let before = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                Some(left.saturating_sub(count))
            })
            .unwrap_or(0);
        if before > 0 && before <= count && !self.fired.swap(true, Ordering::AcqRel) {
            self.spent.notify_one();
        }
    }
}

/// Everything one worker process needs.
struct Serve {
    settings: Settings,
    queues: Vec<QueueName>,
    capabilities: BTreeMap<String, String>,
    supervisor_pid: Option<u32>,
    status: Option<StatusPipe>,
    telemetry: Option<GpuTelemetry>,
}

/// Why a worker process is stopping.
#[derive(Debug)]
enum Stop {
    /// A signal or the supervisor's `stop`: warm shutdown.
    Shutdown(&'static str),
    /// Recycling (`max-tasks`, `memory`).
    Retire(&'static str),
}

async fn serve(options: Serve) -> Result<ExitCode> {
    let Serve {
        settings,
        queues,
        capabilities,
        supervisor_pid,
        status,
        telemetry,
    } = options;
    // Signals are handled from the start: a SIGTERM that lands while the
    // worker is still starting is a warm shutdown once it has started, not
    // a death by signal (a second one still stops it at once).
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<Stop>();
    spawn_signal_handler(stop_tx.clone())?;
    let broker = RedisBroker::connect(settings.redis_config()?).await?;
    let pid = std::process::id();
    let id = format!("{}-{pid}-{:04x}", settings.name, fastrand::u16(..));
    let served = queues.clone();
    let worker_config = settings.worker_config(queues.clone(), id.clone());
    worker_config.validate()?;
    // Broken video settings stop the start; without video, video tasks
    // are left for other workers.
    let video = crate::cli::video_tasks(&settings, &capabilities).await?;

    let metrics = TaskMetrics::new();
    let heartbeat = Heartbeat::new(
        broker.clone(),
        initial_record(
            &id,
            &settings.name,
            queues,
            settings.concurrency,
            supervisor_pid,
            capabilities,
        ),
        settings.heartbeat_interval(),
    );
    let stop = CancellationToken::new();
    let helpers = CancellationToken::new();

    // Metrics: served here when there is no supervisor, else reported to it.
    let mut server = None;
    let readiness = spool_cli_common::Readiness::not_yet("starting");
    if status.is_none()
        && let Some(addr) = settings.metrics_addr
    {
        let hub = Arc::new(MetricsHub::new(Some(Arc::clone(&metrics)), telemetry)?);
        spawn(metrics::queues::sample(
            broker.clone(),
            served,
            hub.queues(),
            metrics::queues::SAMPLE_INTERVAL,
            helpers.clone(),
        ));
        server = Some(metrics::serve(addr, hub, readiness.clone()).await?.1);
    }
    let reporter = status.clone().map(|status| {
        let metrics = Arc::clone(&metrics);
        let helpers = helpers.clone();
        spawn(async move {
            let mut last = None;
            loop {
                tokio::select! {
                    () = helpers.cancelled() => return,
                    () = tokio::time::sleep(METRICS_REPORT) => {}
                }
                let (increments, gauges) = metrics.take();
                if !increments.is_empty() || last != Some(gauges) {
                    last = Some(gauges);
                    status.send(ChildMessage::Metrics { increments, gauges });
                }
            }
        })
    });

    let mut worker = Worker::new(broker.clone(), worker_config)
        .with_builtin_tasks()
        .observe(Arc::clone(&metrics) as Arc<dyn Observer>)
        .observe(heartbeat.observer() as Arc<dyn Observer>);
    worker = match &video {
        Some(video) => worker.with_video_tasks(video),
        None => worker.leave_video_tasks(spool_video::LEAVE_DELAY),
    };
    if settings.connection.store_url != "none" {
        // Only an existing store opens (`spoolctl store migrate` creates
        // it): a mistyped URL fails the start instead of making a new one.
        let store = JobStore::connect(&settings.connection.store_url).await?;
        if let Some(retention) = settings.store_retention {
            spawn(prune_forever(store.clone(), retention, helpers.clone()));
        }
        worker = worker.with_store(store);
    }
    // Written before the first heartbeat: `spoolctl call` checks a task's
    // name against what the live workers serve.
    heartbeat.set_tasks(worker.task_names());
    if let Some(max) = settings.max_tasks_per_child {
        let watch = Arc::new(BudgetWatch {
            left: AtomicU64::new(max),
            spent: Notify::new(),
            fired: AtomicBool::new(false),
        });
        worker = worker.observe(Arc::clone(&watch) as Arc<dyn Observer>);
        let (tx, helpers) = (stop_tx.clone(), helpers.clone());
        spawn(async move {
            tokio::select! {
                () = watch.spent.notified() => { let _ = tx.send(Stop::Retire("max-tasks")); }
                () = helpers.cancelled() => {}
            }
        });
    }
    if let Some(limit) = settings.max_memory_per_child {
        let (tx, helpers) = (stop_tx.clone(), helpers.clone());
        spawn(async move {
            loop {
                tokio::select! {
                    () = helpers.cancelled() => return,
                    () = tokio::time::sleep(MEMORY_CHECK) => {}
                }
                if let Some(rss) = resident_bytes()
                    && rss > limit
                {
                    warn!(
                        rss_mib = rss >> 20,
                        limit_mib = limit >> 20,
                        "resident memory above --max-memory-per-child; recycling"
                    );
                    let _ = tx.send(Stop::Retire("memory"));
                    return;
                }
            }
        });
    }
    if status.is_some() {
        watch_stdin(stop_tx.clone());
    }
    drop(stop_tx);

    // Turns the first stop request into a warm shutdown.
    let stopper = {
        let (stop, heartbeat, status) = (stop.clone(), Arc::clone(&heartbeat), status.clone());
        spawn(async move {
            let mut announced = false;
            while let Some(request) = stop_rx.recv().await {
                match request {
                    Stop::Retire(reason) if !announced => {
                        announced = true;
                        info!(
                            reason,
                            "retiring: no more fetching; finishing the tasks held"
                        );
                        heartbeat.set_state(WorkerState::Retiring, reason);
                        if let Some(status) = &status {
                            status.send(ChildMessage::Retiring {
                                reason: reason.to_owned(),
                            });
                        }
                        // A spent task budget stops fetching by itself, and
                        // what was prefetched still runs.
                        if reason != "max-tasks" {
                            stop.cancel();
                        }
                    }
                    Stop::Retire(_) => {}
                    Stop::Shutdown(reason) => {
                        if !announced {
                            announced = true;
                            info!(
                                reason,
                                "warm shutdown: no more fetching; finishing the tasks held"
                            );
                            heartbeat.set_state(WorkerState::Stopping, reason);
                        }
                        stop.cancel();
                    }
                }
            }
        })
    };

    let beating = spawn(Arc::clone(&heartbeat).run(helpers.clone()));
    if let Some(status) = &status {
        status.send(ChildMessage::Ready { id: id.clone() });
    }
    readiness.set_ready();
    info!(worker = %id, "serving");
    let report = worker.run(stop.clone().cancelled_owned()).await;
    readiness.set_not_ready("stopping");

    helpers.cancel();
    stopper.abort();
    let _ = beating.await;
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    if let Some(status) = &status {
        let (increments, gauges) = metrics.take();
        status.send(ChildMessage::Metrics { increments, gauges });
    }
    heartbeat.finish().await;
    if let Some(server) = server {
        server.abort();
    }
    match report {
        Ok(report) => {
            info!(?report, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            error!(error = %e, "the worker failed");
            Err(e.into())
        }
    }
}

/// First SIGTERM or SIGINT: warm shutdown. Second: cold, exit now.
/// How often finished records past their retention are pruned. Every
/// child prunes: deleting what is already gone costs a cheap query.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Prunes finished records older than `retention`, in batches, until
/// `stop` fires.
async fn prune_forever(store: JobStore, retention: Duration, stop: CancellationToken) {
    loop {
        match store.prune(retention, 5_000).await {
            Ok(0) => {}
            Ok(pruned) => info!(
                pruned,
                "pruned finished job records older than {retention:?}"
            ),
            Err(e) => warn!(error = %e, "could not prune the job store"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

fn spawn_signal_handler(tx: mpsc::UnboundedSender<Stop>) -> Result<()> {
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| Error::Config(format!("cannot handle signals: {e}")))
    };
    let mut term = listen(SignalKind::terminate())?;
    let mut int = listen(SignalKind::interrupt())?;
    spawn(async move {
        let mut seen = 0;
        loop {
            let number = tokio::select! {
                Some(()) = term.recv() => libc_signal::SIGTERM,
                Some(()) = int.recv() => libc_signal::SIGINT,
                else => return,
            };
            seen += 1;
            if seen == 1 {
                let _ = tx.send(Stop::Shutdown("signal"));
            } else {
                warn!(
                    "second signal: cold shutdown; unacknowledged tasks stay pending and will be reclaimed"
                );
                std::process::exit(i32::from(cold_exit_status(number)));
            }
        }
    });
    Ok(())
}

/// Signal numbers, without unsafe libc calls.
mod libc_signal {
    pub(super) const SIGTERM: i32 = nix::sys::signal::Signal::SIGTERM as i32;
    pub(super) const SIGINT: i32 = nix::sys::signal::Signal::SIGINT as i32;
}

/// Reads the supervisor's commands on stdin: `stop`, or end of file (the
/// supervisor is gone), is a warm shutdown. Not counted as a signal, so a
/// service manager's SIGTERM to the whole group stays a warm shutdown.
fn watch_stdin(tx: mpsc::UnboundedSender<Stop>) {
    let spawned = std::thread::Builder::new()
        .name("spool-child-stdin".to_owned())
        .spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line {
                    Ok(line) if line.trim() == "stop" => {
                        let _ = tx.send(Stop::Shutdown("supervisor"));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Stop::Shutdown("supervisor gone"));
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot watch stdin for the supervisor's commands");
    }
}

//! The supervisor: keeps `--processes` children running, replaces retiring
//! ones early and crashed ones with backoff, serves `/metrics`, and turns
//! signals into warm or cold shutdowns.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use spool_broker::RedisBroker;
use spool_cli_common::Readiness;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, warn};

use super::cold_exit_status;
use super::protocol::{ChildMessage, ChildSpec};
use crate::cli::{CHILD_SPEC_ENV, Settings};
use crate::metrics::{self, MetricsHub};
use crate::{Error, Result};
use spool_video::probe::GpuTelemetry;

/// The first restart delay after a crash; it doubles per crash in a row.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// The longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A child that lived this long resets its slot's backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How long a cold shutdown waits for killed children to be reaped.
const COLD_GRACE: Duration = Duration::from_secs(1);

/// The delay before restarting after `failures` crashes in a row.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// Runs the supervisor until a shutdown.
pub(super) fn run(
    settings: Settings,
    capabilities: BTreeMap<String, String>,
    telemetry: Option<GpuTelemetry>,
) -> Result<ExitCode> {
    // One thread: children are forked from it, and PR_SET_PDEATHSIG fires
    // when the thread that forked a child ends, so it must live as long as
    // the supervisor.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the tokio runtime: {e}")))?;
    let result = runtime.block_on(async move {
        let supervisor = Supervisor::start(settings, capabilities, telemetry).await?;
        supervisor.run().await
    });
    runtime.shutdown_background();
    result
}

/// What the supervisor hears about its children.
#[derive(Debug)]
enum Event {
    Message(u32, ChildMessage),
    Exited(u32, std::io::Result<ExitStatus>),
}

/// One of the `--processes` places a child fills.
#[derive(Debug, Default)]
struct Slot {
    pid: Option<u32>,
    failures: u32,
    restart_at: Option<Instant>,
}

/// A running child.
#[derive(Debug)]
struct Child {
    slot: Option<usize>,
    id: Option<String>,
    stdin: Option<ChildStdin>,
    started: Instant,
}

struct Supervisor {
    settings: Settings,
    capabilities: BTreeMap<String, String>,
    exe: PathBuf,
    broker: RedisBroker,
    hub: Arc<MetricsHub>,
    slots: Vec<Slot>,
    children: HashMap<u32, Child>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    stopping: bool,
    clean: bool,
    /// `/readyz`: ready while at least one child serves.
    readiness: Readiness,
    /// Stops the queue signals' sampling when the supervisor ends.
    _sampling: DropGuard,
}

impl Supervisor {
    async fn start(
        settings: Settings,
        capabilities: BTreeMap<String, String>,
        telemetry: Option<GpuTelemetry>,
    ) -> Result<Self> {
        // Fail fast on what every child would fail on.
        settings
            .worker_config(settings.queues.clone(), "check".to_owned())
            .validate()?;
        let broker = RedisBroker::connect(settings.redis_config()?).await?;
        let exe = std::env::current_exe()
            .map_err(|e| Error::Config(format!("cannot find this program to run children: {e}")))?;
        let hub = Arc::new(MetricsHub::new(None, telemetry)?);
        let readiness = Readiness::not_yet("no child is serving yet");
        let sampling = CancellationToken::new();
        if let Some(addr) = settings.metrics_addr {
            tokio::spawn(metrics::queues::sample(
                broker.clone(),
                settings.queues.clone(),
                hub.queues(),
                metrics::queues::SAMPLE_INTERVAL,
                sampling.clone(),
            ));
            metrics::serve(addr, Arc::clone(&hub), readiness.clone()).await?;
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let slots = (0..settings.processes).map(|_| Slot::default()).collect();
        Ok(Self {
            settings,
            capabilities,
            exe,
            broker,
            hub,
            readiness,
            _sampling: sampling.drop_guard(),
            slots,
            children: HashMap::new(),
            events_tx,
            events,
            stopping: false,
            clean: true,
        })
    }

    async fn run(mut self) -> Result<ExitCode> {
        let listen = |kind: SignalKind| {
            signal(kind).map_err(|e| Error::Config(format!("cannot handle signals: {e}")))
        };
        let mut term = listen(SignalKind::terminate())?;
        let mut int = listen(SignalKind::interrupt())?;
        for slot in 0..self.slots.len() {
            self.spawn(slot);
        }
        loop {
            if self.stopping && self.children.is_empty() {
                info!("all children stopped; exiting");
                return Ok(if self.clean {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            let next_restart = self
                .slots
                .iter()
                .filter_map(|s| s.restart_at)
                .min()
                .filter(|_| !self.stopping);
            let signal = tokio::select! {
                Some(event) = self.events.recv() => {
                    self.handle(event);
                    continue;
                }
                () = sleep_until(next_restart) => {
                    self.restart_due();
                    continue;
                }
                Some(()) = term.recv() => Signal::SIGTERM,
                Some(()) = int.recv() => Signal::SIGINT,
            };
            if self.stopping {
                return Ok(self.cold(signal).await);
            }
            self.warm(signal).await;
        }
    }

    /// Starts a child in `slot`; a failure to start counts as a crash.
    fn spawn(&mut self, slot: usize) {
        let mut spec_settings = self.settings.clone();
        spec_settings.metrics_addr = None;
        let spec = ChildSpec {
            settings: spec_settings,
            capabilities: self.capabilities.clone(),
            supervisor_pid: std::process::id(),
            slot,
        };
        match self.start_child(&spec) {
            Ok(pid) => {
                debug!(pid, slot, "child started");
                self.slots[slot].pid = Some(pid);
                self.slots[slot].restart_at = None;
            }
            Err(e) => {
                error!(slot, error = %e, "cannot start a child");
                self.schedule_restart(slot);
            }
        }
        self.hub.set_children(self.children.len());
    }

    fn start_child(&mut self, spec: &ChildSpec) -> std::io::Result<u32> {
        let json = serde_json::to_string(spec).map_err(std::io::Error::other)?;
        let mut child = Command::new(&self.exe)
            .arg("--child")
            .env(CHILD_SPEC_ENV, json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a terminal's Ctrl-C reaches only the
            // supervisor, which decides what the children do.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the child exited at once"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            if let Some(stdout) = stdout {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match ChildMessage::parse(&line) {
                        Some(message) => {
                            let _ = events.send(Event::Message(pid, message));
                        }
                        // A handler's own output: pass it through (and
                        // never die of a closed stdout).
                        None => {
                            let _ = writeln!(std::io::stdout().lock(), "{line}");
                        }
                    }
                }
            }
            let status = child.wait().await;
            if kill_process_group(pid) {
                warn!(pid, "killed the processes the dead child left running");
            }
            let _ = events.send(Event::Exited(pid, status));
        });
        self.children.insert(
            pid,
            Child {
                slot: Some(spec.slot),
                id: None,
                stdin,
                started: Instant::now(),
            },
        );
        Ok(pid)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Message(pid, ChildMessage::Ready { id }) => {
                info!(pid, worker = %id, "child ready");
                if let Some(child) = self.children.get_mut(&pid) {
                    child.id = Some(id);
                }
                self.update_readiness();
            }
            Event::Message(pid, ChildMessage::Retiring { reason }) => self.retiring(pid, &reason),
            Event::Message(pid, ChildMessage::Metrics { increments, gauges }) => {
                self.hub.push(pid, increments, gauges);
            }
            Event::Exited(pid, status) => {
                self.exited(pid, status);
                self.update_readiness();
            }
        }
    }

    /// Ready while a child that said it serves is alive and not stopping.
    fn update_readiness(&self) {
        if self.stopping {
            self.readiness.set_not_ready("stopping");
        } else if self.children.values().any(|child| child.id.is_some()) {
            self.readiness.set_ready();
        } else {
            self.readiness
                .set_not_ready("no child is serving (starting or restarting)");
        }
    }

    /// A child stopped fetching to recycle itself: start its replacement
    /// now, while it finishes.
    fn retiring(&mut self, pid: u32, reason: &str) {
        let Some(child) = self.children.get_mut(&pid) else {
            return;
        };
        let Some(slot) = child.slot.take() else {
            return;
        };
        self.slots[slot].pid = None;
        if self.stopping {
            return;
        }
        info!(
            pid,
            slot, reason, "child retiring; starting its replacement"
        );
        self.spawn(slot);
    }

    fn exited(&mut self, pid: u32, status: std::io::Result<ExitStatus>) {
        let Some(child) = self.children.remove(&pid) else {
            return;
        };
        self.hub.child_exited(pid);
        self.hub.set_children(self.children.len());
        let lived = child.started.elapsed();
        let ok = matches!(&status, Ok(s) if s.success());
        let described = match &status {
            Ok(s) => describe(*s),
            Err(e) => format!("unknown status ({e})"),
        };
        if let Some(slot) = child.slot {
            self.slots[slot].pid = None;
        }
        if ok {
            info!(pid, "child exited cleanly");
            // A child that ended on its own (its task budget spent) without
            // saying so first is replaced now.
            if let Some(slot) = child.slot
                && !self.stopping
            {
                self.spawn(slot);
            }
            return;
        }
        if let Some(id) = child.id {
            let broker = self.broker.clone();
            tokio::spawn(async move {
                if let Err(e) = broker.remove_worker(&id).await {
                    debug!(worker = %id, error = %e, "cannot remove a dead child's record");
                }
            });
        }
        if self.stopping {
            warn!(pid, status = %described, "child ended badly during shutdown; its unacknowledged tasks will be reclaimed");
            self.clean = false;
            return;
        }
        let Some(slot) = child.slot else {
            warn!(pid, status = %described, "retiring child ended badly; its unacknowledged tasks will be reclaimed");
            return;
        };
        if lived >= STABLE_AFTER {
            self.slots[slot].failures = 0;
        }
        self.hub.child_restarted();
        let delay = self.schedule_restart(slot);
        warn!(pid, slot, status = %described, "child crashed; restarting in {delay:?}; its unacknowledged tasks will be reclaimed");
    }

    fn schedule_restart(&mut self, slot: usize) -> Duration {
        let slot = &mut self.slots[slot];
        slot.failures = slot.failures.saturating_add(1);
        let delay = backoff(slot.failures);
        slot.restart_at = Some(Instant::now() + delay);
        delay
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].restart_at.is_some_and(|at| at <= now))
            .collect();
        for slot in due {
            self.slots[slot].restart_at = None;
            self.spawn(slot);
        }
    }

    /// First signal: tell every child to stop, then wait for them.
    async fn warm(&mut self, signal: Signal) {
        self.stopping = true;
        self.update_readiness();
        info!(
            %signal,
            children = self.children.len(),
            "warm shutdown: children finish their tasks; signal again for a cold shutdown"
        );
        for slot in &mut self.slots {
            slot.restart_at = None;
        }
        for (pid, child) in &mut self.children {
            if let Some(mut stdin) = child.stdin.take() {
                let sent = tokio::time::timeout(Duration::from_secs(1), async {
                    stdin.write_all(b"stop\n").await?;
                    stdin.flush().await
                })
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    debug!(pid, "cannot tell the child to stop; closing its stdin");
                }
                // Dropping stdin closes it, which also means stop.
            }
        }
    }

    /// Second signal: kill the children now; their unacknowledged tasks
    /// stay pending for other workers to reclaim.
    async fn cold(&mut self, signal: Signal) -> ExitCode {
        warn!(
            %signal,
            children = self.children.len(),
            "cold shutdown: killing the children; their unacknowledged tasks stay pending and will be reclaimed"
        );
        for pid in self.children.keys() {
            kill_process_group(*pid);
        }
        let ids: Vec<String> = self
            .children
            .values()
            .filter_map(|c| c.id.clone())
            .collect();
        let deadline = Instant::now() + COLD_GRACE;
        while !self.children.is_empty() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Exited(pid, _))) => {
                    self.children.remove(&pid);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let broker = self.broker.clone();
        let _ = tokio::time::timeout(COLD_GRACE, async move {
            for id in ids {
                let _ = broker.remove_worker(&id).await;
            }
        })
        .await;
        ExitCode::from(cold_exit_status(signal as i32))
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Kills what is left of a child's process group: the child itself in a
/// cold shutdown, and afterwards any FFmpeg it started. FFmpeg joins its
/// child's group, so when a child dies without stopping its encodes (a
/// SIGKILL, the OOM killer, a crash) they would run on as orphans.
///
/// After the child is reaped the group id stays reserved while any member
/// lives, so this cannot reach a stranger's group. Returns whether the
/// group still had members.
fn kill_process_group(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    match killpg(Pid::from_raw(raw), Signal::SIGKILL) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => {
            warn!(pgid, error = %e, "cannot kill the child's process group");
            false
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(signal) => format!("killed by {signal}"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(8), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
    }
}

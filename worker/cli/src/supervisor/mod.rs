//! The prefork model: a supervisor process runs `--processes` children,
//! each a tokio runtime serving tasks with `--concurrency` slots.
//!
//! ```text
//!  spool-worker (supervisor: probe, /metrics, signals, restarts)
//!    ├── spool-worker --child   (Worker, registry heartbeat, RSS watch)
//!    ├── spool-worker --child
//!    └── ...                    status lines on stdout ─► supervisor
//! ```
//!
//! - **Children** are the supervisor's own binary run again with a hidden
//!   `--child` flag and a [`ChildSpec`] in their environment (see
//!   [`protocol`]). Each sets `PR_SET_PDEATHSIG` to `SIGKILL`, so it dies
//!   with its supervisor, however the supervisor ends; the supervisor
//!   forks from its single runtime thread, the thread that death signal is
//!   tied to. Children run in their own process group, so a terminal's
//!   Ctrl-C reaches the supervisor only and is not counted twice. The
//!   FFmpeg a child starts joins that group, and once the child is gone
//!   the supervisor kills whatever is left in it: a child killed
//!   mid-encode (SIGKILL, the OOM killer, a crash) leaves no orphan
//!   encode behind.
//! - **Recycling.** A child that has fetched `--max-tasks-per-child` tasks,
//!   or whose resident memory (read from `/proc/self/status` every 500 ms)
//!   is above `--max-memory-per-child`, stops fetching and says `retiring`
//!   on its status pipe. The supervisor starts its replacement at once, so
//!   capacity never dips, while the old child finishes its runs,
//!   acknowledges them and exits 0.
//! - **Crashes.** A child that exits otherwise (non-zero, killed) is
//!   restarted after a backoff doubling from 100 ms to 10 s (reset once a
//!   child lived 10 s), counted in `spool_child_restarts_total`; its
//!   registry record is removed, and its unacknowledged tasks are reclaimed
//!   by the runtime's lease protocol once their visibility timeout passes.
//! - **Shutdown.** The first SIGTERM or SIGINT is a warm shutdown: each
//!   child is told `stop` (stop fetching, finish, acknowledge, exit 0) and
//!   the supervisor exits 0 when all have. A second signal is a cold one:
//!   children are killed at once and the supervisor exits with 128 + the
//!   signal's number; their unacknowledged tasks stay pending and other
//!   workers reclaim them. A child run on its own handles signals the same
//!   way.
//! - `--processes 0` runs one worker in the supervisor's process instead,
//!   for debugging or under another supervisor (systemd, Kubernetes): the
//!   task and memory limits then make it exit 0, to be restarted from
//!   outside.

mod child;
mod pool;
pub mod protocol;

use std::process::ExitCode;

use tracing::{info, warn};

pub use self::protocol::{ChildMessage, ChildSpec};
use crate::cli::{Invocation, Settings};
use crate::{Error, Result};
use spool_video::probe::{self, Capabilities, GpuTelemetry, ProbeOptions};

/// The exit status of a worker stopped by a second signal (a cold
/// shutdown): 128 + the signal's number, as a shell reports a process
/// killed by it.
#[must_use]
pub fn cold_exit_status(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

/// Runs what the command line asked for, to completion.
///
/// # Errors
///
/// [`Error::Config`] for settings that cannot work (a queue list left
/// empty by the probe, an address in use), [`Error::Broker`] when Redis
/// cannot be reached at start.
pub fn run(invocation: Invocation) -> Result<ExitCode> {
    match invocation {
        Invocation::PrintConfig(settings) => {
            // Passwords stay out of what is printed; the keys never are in.
            let text = serde_json::to_string_pretty(&settings.redacted())
                .map_err(|e| Error::Config(format!("cannot print the settings: {e}")))?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Invocation::Probe(settings) => {
            let (capabilities, _telemetry) = run_probe(&settings, true);
            let text = serde_json::to_string_pretty(&capabilities)
                .map_err(|e| Error::Config(format!("cannot print the capabilities: {e}")))?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Invocation::Child(spec) => child::run_child(*spec),
        Invocation::Run(settings) => {
            let (capabilities, telemetry) = run_probe(&settings, !settings.no_probe);
            let (queues, dropped) =
                probe::select_queues(&settings.queues, &capabilities, settings.force_gpu);
            if let Some(why) = &dropped {
                warn!("not serving the gpu queue: {why}; pass --force-gpu to serve it anyway");
            } else if settings.force_gpu && !capabilities.gpu_ready() {
                warn!(
                    "serving the gpu queue without a GPU that passed the self-test (--force-gpu)"
                );
            }
            if queues.is_empty() {
                return Err(Error::Config(format!(
                    "no queue left to serve: the gpu queue was dropped ({})",
                    dropped.unwrap_or_default()
                )));
            }
            let served = Settings { queues, ..settings };
            info!(
                version = env!("CARGO_PKG_VERSION"),
                queues = ?served.queues.iter().map(spool_broker::QueueName::as_str).collect::<Vec<_>>(),
                processes = served.processes,
                concurrency = served.concurrency,
                prefetch = served.prefetch,
                store = %spool_broker::RedisConfig::redact(&served.connection.store_url),
                signing = served.connection.signing_key_file.is_some(),
                "spool-worker starting",
            );
            if served.processes > 0 {
                // Each child would fail on broken video settings: refuse
                // once, here, before any starts.
                refuse_broken_video(&served, &capabilities.labels())?;
            }
            if served.processes == 0 {
                child::run_inline(served, capabilities.labels(), telemetry)
            } else {
                pool::run(served, capabilities.labels(), telemetry)
            }
        }
    }
}

/// Fails when video settings were given and cannot work, as a child
/// would at its start (`cli::video_tasks`).
fn refuse_broken_video(
    settings: &Settings,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the tokio runtime: {e}")))?;
    runtime.block_on(crate::cli::video_tasks(settings, labels))?;
    Ok(())
}

/// Probes the hardware (or not) and logs the summary.
fn run_probe(settings: &Settings, enabled: bool) -> (Capabilities, Option<GpuTelemetry>) {
    if !enabled {
        info!("hardware probe skipped (--no-probe)");
        return (Capabilities::default(), None);
    }
    let (capabilities, telemetry) = probe::probe(&ProbeOptions::new(settings.ffmpeg.as_deref()));
    for line in capabilities.summary().lines() {
        info!("probe: {line}");
    }
    (capabilities, telemetry)
}

/// This process's resident memory in bytes (`VmRSS` in
/// `/proc/self/status`); `None` where that cannot be read.
#[must_use]
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read() {
        if cfg!(target_os = "linux") {
            let rss = resident_bytes().expect("Linux has /proc/self/status");
            assert!(rss > 1 << 20, "{rss}");
        }
        assert_eq!(cold_exit_status(15), 143);
    }
}

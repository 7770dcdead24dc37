//! Running FFmpeg: typed arguments in, progress events and a summary out.
//!
//! Every video task drives FFmpeg through [`FfmpegRunner::run`]. It spawns
//! FFmpeg with ffmpeg-sidecar (never through a shell), reads its stderr on
//! a blocking thread, turns its stats lines into [`RunProgress`] (output
//! time against the expected duration, fps, speed, ETA), and keeps its
//! error lines so a failure carries FFmpeg's own words.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use spool_video::{FfmpegArgs, FfmpegRunner, Input, Output, RunOptions, StageBand};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), spool_video::VideoError> {
//! let runner = FfmpegRunner::new("/usr/local/bin/ffmpeg");
//! // Paths come from `Roots` (absolute, inside the roots); option values
//! // are built from typed task fields, never copied from user strings.
//! let args = FfmpegArgs::new()
//!     .input(Input::file("/srv/uploads/cat.mp4"))
//!     .filter_complex("[0:v]scale=-2:720[v]")
//!     .output(
//!         Output::file("/srv/encodes/cat-720p.mp4")
//!             .map("[v]")
//!             .map("0:a:0?")
//!             .option("-c:v", "libx264")
//!             .option("-crf", 23)
//!             .option("-c:a", "aac"),
//!     );
//! let options = RunOptions::new(StageBand::PROCESSING.named("encode 720p"), CancellationToken::new())
//!     .duration(Duration::from_secs(10))
//!     .clean("/srv/encodes/cat-720p.mp4");
//! let summary = runner
//!     .run(&args, options, |progress| println!("{:.0}% at {:?}x", progress.percent, progress.speed))
//!     .await?;
//! println!("done in {:?}", summary.elapsed);
//! # Ok(()) }
//! ```
//!
//! # Cancellation
//!
//! When the [`RunOptions::cancel`] token fires (a revocation or a soft
//! time limit), the runner writes `q` to FFmpeg's stdin, FFmpeg's own
//! graceful stop, waits up to the kill grace, then kills it. If the future
//! is dropped instead (the worker's hard time limit), a guard kills and
//! reaps FFmpeg on the spot. Either way the paths in
//! [`RunOptions::outputs_to_clean`] are removed: no partial output and no
//! orphan FFmpeg survive a stopped run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::FfmpegEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn};

pub use super::args::{FfmpegArgs, Input, Output, escape_filter_value};
use super::ffmpeg_log::{LogState, Tracker};
use super::progress::{RunProgress, StageBand};
use super::{FFMPEG_HINT, VideoError};

/// How one run is reported and stopped.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// The media time the run will write, for percent and ETA (the
    /// probed input duration, usually). `None`: the first input's duration
    /// as FFmpeg reads it, if it has one.
    pub duration_hint: Option<Duration>,
    /// The frames the run will write, when known: percent also follows
    /// the frame count, which keeps moving while an encoder's lookahead
    /// holds packets back (FFmpeg then prints `time=N/A`).
    pub frames_hint: Option<u64>,
    /// The band of the task's percent scale this run moves through.
    pub stage: StageBand,
    /// Fires to stop FFmpeg (gracefully, then by force).
    pub cancel: CancellationToken,
    /// Files (or directories, removed with everything in them) deleted
    /// when the run fails, is cancelled or is dropped. Only ever
    /// worker-generated paths inside the output root.
    pub outputs_to_clean: Vec<PathBuf>,
}

impl RunOptions {
    /// A run in `stage`, stopped by `cancel`.
    #[must_use]
    pub fn new(stage: StageBand, cancel: CancellationToken) -> Self {
        Self {
            duration_hint: None,
            frames_hint: None,
            stage,
            cancel,
            outputs_to_clean: Vec::new(),
        }
    }

    /// Sets the expected duration.
    #[must_use]
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration_hint = Some(duration);
        self
    }

    /// Sets the expected frame count.
    #[must_use]
    pub fn frames(mut self, frames: u64) -> Self {
        self.frames_hint = Some(frames);
        self
    }

    /// Adds a path to remove if the run does not succeed.
    #[must_use]
    pub fn clean(mut self, path: impl Into<PathBuf>) -> Self {
        self.outputs_to_clean.push(path.into());
        self
    }
}

/// What a successful run did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunSummary {
    /// FFmpeg's process id (gone by now).
    pub pid: u32,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// FFmpeg's CPU time, user plus system, over all its threads: the
    /// kernel's count for the process, read when it was reaped (`wait4`),
    /// so exact whatever else the machine runs. Zero off Unix.
    pub cpu: Duration,
    /// The media time written, from FFmpeg's last stats line.
    pub out_time: Duration,
    /// Frames written.
    pub frames: u64,
    /// The last speed reported, as a multiple of real time.
    pub speed: Option<f32>,
    /// The last frames per second reported.
    pub fps: Option<f32>,
    /// Warnings FFmpeg logged (at most a few), without log prefixes.
    pub warnings: Vec<String>,
    /// Whether FFmpeg logged a write that hit a full disk, though it
    /// exited cleanly (some muxers go on after a failed segment write).
    pub no_space: bool,
}

/// Runs FFmpeg commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfmpegRunner {
    ffmpeg: PathBuf,
    kill_grace: Duration,
    stats_period: Duration,
}

impl FfmpegRunner {
    /// A runner for the FFmpeg at `ffmpeg`, with a 5 s kill grace and
    /// stats every 500 ms.
    #[must_use]
    pub fn new(ffmpeg: impl Into<PathBuf>) -> Self {
        Self {
            ffmpeg: ffmpeg.into(),
            kill_grace: Duration::from_secs(5),
            stats_period: Duration::from_millis(500),
        }
    }

    /// Sets how long FFmpeg gets to quit after `q` before it is killed.
    #[must_use]
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Sets how often FFmpeg prints its stats (`-stats_period`).
    #[must_use]
    pub fn stats_period(mut self, period: Duration) -> Self {
        self.stats_period = period.max(Duration::from_millis(50));
        self
    }

    /// The FFmpeg binary.
    #[must_use]
    pub fn ffmpeg(&self) -> &Path {
        &self.ffmpeg
    }

    /// Every argument FFmpeg gets for `args`, after the program name: what
    /// [`run`](Self::run) executes (also for benchmarks and logs).
    #[must_use]
    pub fn command_line(&self, args: &FfmpegArgs) -> Vec<OsString> {
        let mut line: Vec<OsString> = vec![
            "-loglevel".into(),
            "level+info".into(),
            "-hide_banner".into(),
            "-y".into(),
            "-stats_period".into(),
            format!("{:.3}", self.stats_period.as_secs_f64()).into(),
        ];
        line.extend(args.to_args());
        line
    }

    /// Runs FFmpeg to completion, reporting progress to `on_progress`.
    ///
    /// # Errors
    ///
    /// - [`VideoError::Ffmpeg`] when FFmpeg exits with an error, carrying
    ///   its first error lines;
    /// - [`VideoError::NoSpace`] when FFmpeg failed writing to a full disk
    ///   (naming the first output);
    /// - [`VideoError::Format`] when FFmpeg refused an input's format;
    /// - [`VideoError::Cancelled`] when `options.cancel` fired;
    /// - [`VideoError::Missing`] when FFmpeg cannot be started;
    /// - [`VideoError::InvalidTask`] for relative paths or no input/output.
    ///
    /// On any error the paths in `options.outputs_to_clean` are removed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills FFmpeg, reaps it and removes the paths in
    /// `options.outputs_to_clean` before the drop returns.
    pub async fn run(
        &self,
        args: &FfmpegArgs,
        options: RunOptions,
        mut on_progress: impl FnMut(RunProgress),
    ) -> Result<RunSummary, VideoError> {
        let RunOptions {
            duration_hint,
            frames_hint,
            stage,
            cancel,
            outputs_to_clean,
        } = options;
        if let Err(e) = args.validate() {
            remove_all(&outputs_to_clean);
            return Err(e);
        }
        let line = self.command_line(args);
        let mut command = FfmpegCommand::new_with_path(&self.ffmpeg);
        // The sidecar's constructor already set `-loglevel level+info`.
        command.args(line.iter().skip(2));
        // FFmpeg dies with this process, however it dies.
        crate::spawner::die_with_parent(command.as_inner_mut());
        let started = Instant::now();
        let spawned = crate::spawner::on_spawner(
            move || command.spawn(),
            |spawned| {
                // This run was dropped while FFmpeg started: stop it.
                if let Ok(mut child) = spawned {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            },
        )
        .await;
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                remove_all(&outputs_to_clean);
                return Err(e);
            }
        };
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                remove_all(&outputs_to_clean);
                return Err(if e.kind() == std::io::ErrorKind::NotFound {
                    VideoError::Missing {
                        what: "ffmpeg",
                        detail: format!("{} does not exist", self.ffmpeg.display()),
                        hint: FFMPEG_HINT,
                    }
                } else {
                    VideoError::io(format!("cannot start {}", self.ffmpeg.display()), e)
                });
            }
        };
        let mut guard = ChildGuard {
            child: Some(child),
            outputs: outputs_to_clean,
            succeeded: false,
        };
        let pid = guard.pid();
        let span = info_span!("ffmpeg", pid, stage = %stage.name);
        debug!(parent: &span, command = ?line, "FFmpeg started");
        let mut events = guard.events()?;

        let mut log = LogState::default();
        let mut tracker = Tracker::new(stage.clone(), duration_hint, frames_hint, started);
        let mut last: Option<RunProgress> = None;
        let mut quit_sent = false;
        let mut kill_at: Option<Instant> = None;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        if let FfmpegEvent::ParsedDuration(input) = &event
                            && input.input_index == 0
                        {
                            tracker.learn_duration(input.duration);
                        }
                        if let Some(stats) = log.handle(event) {
                            let progress = tracker.update(&stats, Instant::now());
                            on_progress(progress.clone());
                            last = Some(progress);
                        }
                    }
                    // Its stderr closed: FFmpeg is exiting.
                    None => break,
                },
                () = cancel.cancelled(), if !quit_sent => {
                    debug!(parent: &span, "cancelled: asking FFmpeg to quit");
                    quit_sent = true;
                    guard.quit();
                    kill_at = Some(Instant::now() + self.kill_grace);
                }
                () = sleep_until(kill_at) => {
                    warn!(parent: &span, "FFmpeg did not quit within {:?}; killing it", self.kill_grace);
                    guard.kill();
                    kill_at = None;
                }
            }
        }
        let (status, cpu) = guard.wait_exit(&cancel, self.kill_grace).await?;
        let elapsed = started.elapsed();
        if cancel.is_cancelled() {
            debug!(parent: &span, %status, "FFmpeg stopped after a cancellation");
            return Err(VideoError::Cancelled);
        }
        if !status.success() {
            let message = log.failure_message();
            debug!(parent: &span, %status, %message, "FFmpeg failed");
            if log.no_space || crate::error::says_no_space(&message) {
                let written = args.output_paths();
                return Err(VideoError::NoSpace {
                    path: written
                        .first()
                        .map_or_else(PathBuf::new, |p| p.to_path_buf()),
                });
            }
            if crate::formats::not_allowed(&message) {
                let inputs: Vec<String> = args
                    .input_paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(VideoError::Format {
                    path: inputs.join(" or "),
                    format: None,
                });
            }
            return Err(VideoError::Ffmpeg {
                status: status.to_string(),
                message,
            });
        }
        guard.succeeded = true;
        let (out_time, frames, speed, fps) = match &last {
            Some(p) => (p.out_time, p.frame, p.speed, p.fps),
            None => (Duration::ZERO, 0, None, None),
        };
        debug!(parent: &span, ?elapsed, frames, "FFmpeg finished");
        Ok(RunSummary {
            pid,
            elapsed,
            cpu: cpu.0,
            out_time,
            frames,
            speed,
            fps,
            no_space: log.no_space,
            warnings: log.warnings,
        })
    }
}

/// Completes at `deadline`, or never without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Owns the FFmpeg process: kills and reaps it, and removes partial
/// outputs, unless the run succeeded.
struct ChildGuard {
    child: Option<FfmpegChild>,
    outputs: Vec<PathBuf>,
    succeeded: bool,
}

impl ChildGuard {
    fn pid(&mut self) -> u32 {
        self.child.as_mut().map_or(0, |c| c.as_inner().id())
    }

    /// Starts the thread that reads FFmpeg's events (blocking reads) and
    /// forwards them; the channel closes when FFmpeg's stderr does.
    fn events(&mut self) -> Result<mpsc::UnboundedReceiver<FfmpegEvent>, VideoError> {
        let child = self.child.as_mut().ok_or(VideoError::Cancelled)?;
        let iter = child.iter().map_err(|e| {
            VideoError::io(
                "cannot read FFmpeg's output",
                std::io::Error::other(e.to_string()),
            )
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("spool-ffmpeg-events".to_owned())
            .spawn(move || {
                for event in iter {
                    if tx.send(event).is_err() {
                        // The run was dropped; keep draining so FFmpeg
                        // never blocks on a full pipe while it is killed.
                        continue;
                    }
                }
            })
            .map_err(|e| VideoError::io("cannot start the FFmpeg reader thread", e))?;
        Ok(rx)
    }

    /// Asks FFmpeg to stop: `q` on its stdin.
    fn quit(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Err(e) = child.quit()
        {
            // Its stdin is closed: it is exiting already, or the kill
            // after the grace will do.
            debug!(error = %e, "cannot write q to FFmpeg");
        }
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }

    /// Waits for FFmpeg to exit (its stderr is closed, so it is on its
    /// way), killing it if a cancellation's grace runs out.
    async fn wait_exit(
        &mut self,
        cancel: &CancellationToken,
        grace: Duration,
    ) -> Result<(std::process::ExitStatus, crate::spawner::ChildCpu), VideoError> {
        let mut kill_at = cancel.is_cancelled().then(|| Instant::now() + grace);
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(VideoError::Cancelled);
            };
            // Reaped with its rusage (`wait4`), not std's `try_wait`, which
            // would drop the CPU time.
            match crate::spawner::reap(child.as_inner_mut()) {
                Ok(Some(reaped)) => {
                    // Reaped: nothing left for the guard to kill (and its
                    // pid must not be signalled again).
                    self.child = None;
                    return Ok(reaped);
                }
                Ok(None) => {}
                Err(e) => {
                    // Gone (reaped elsewhere): nothing to kill either.
                    self.child = None;
                    return Err(VideoError::io("cannot wait for FFmpeg", e));
                }
            }
            if kill_at.is_none() && cancel.is_cancelled() {
                self.quit();
                kill_at = Some(Instant::now() + grace);
            }
            if kill_at.is_some_and(|at| Instant::now() >= at) {
                self.kill();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Still running (the future was dropped): kill and reap it now,
            // so it neither outlives the task nor lingers as a zombie.
            let inner = child.as_inner_mut();
            if matches!(inner.try_wait(), Ok(None)) {
                let _ = inner.kill();
            }
            let _ = inner.wait();
        }
        if !self.succeeded {
            remove_all(&self.outputs);
        }
    }
}

/// Removes files and directories, quietly: what is missing is fine.
fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        let removed = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(_) => Ok(()),
        };
        if let Err(e) = removed {
            warn!(path = %path.display(), error = %e, "cannot remove a partial output");
        }
    }
}

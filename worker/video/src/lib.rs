//! `spool-video`: Spool's video tasks, `video.transcode`, `video.analyze`
//! and `video.package`, driving FFmpeg as a subprocess, and the hardware
//! [`probe`] (FFmpeg's encoders, NVML, CUDA) that decides what a host can
//! serve.
//!
//! The task types themselves are plain serde types in
//! [`spool_sdk::video`], so an app enqueues them without compiling any of
//! this crate.
//!
//! ```text
//!  task (spool_sdk::video) ─► handler ─► Roots (confine paths)
//!                                    ├─► Ffprobe (probe the input)
//!                                    ├─► FfmpegRunner (one FFmpeg run: progress, cancel, cleanup)
//!                                    └─► Ffprobe (validate the output)
//! ```
//!
//! - [`runner`]: the FFmpeg runner every task shares; typed arguments,
//!   progress, graceful stop then kill, partial outputs removed.
//! - [`paths`]: task paths confined to the configured roots.
//! - [`formats`]: the demuxers a user input may be read with; playlists
//!   and concat lists refused.
//! - [`publish`]: outputs written to a file of the run's own and renamed
//!   into place when whole and valid.
//! - [`media`]: ffprobe, typed.
//! - [`encoder`]: the encoder for a codec, from the probe's trial encodes,
//!   with per-encoder presets and rate control, and software fallback.
//! - [`storage`]: `s3://`, `gs://` and `az://` inputs and outputs: the
//!   allow-list, a bounded scratch directory, downloads and multipart
//!   uploads through `object_store`.
//! - [`targeted`]: quality-targeted ladders: sample encodes, the CRF
//!   pick, and the achieved VMAF of a package's CRF rungs.
//! - [`chunk`]: chunked encoding (`video.split`, `video.encode_chunk`,
//!   `video.encode_audio`, `video.join`): split at keyframes or scene
//!   cuts, chunks on any worker, a validated stream-copy join.
//! - [`progress`]: stage bands (probing 0–5 %, processing 5–95 %,
//!   validating 95–100 %) onto the task's progress reports.
//!
//! Register them on a worker with [`WithVideoTasks::with_video_tasks`]:
//!
//! ```no_run
//! use spool_video::{VideoConfig, VideoTasks, WithVideoTasks};
//! use spool_worker::{Worker, WorkerConfig};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let broker = spool_broker::RedisBroker::connect_url("redis://127.0.0.1:6379/").await?;
//! // Probes FFmpeg (trial encodes, libvmaf): blocking, a few seconds.
//! let video = VideoTasks::new(VideoConfig {
//!     input_roots: vec!["/srv/uploads".into()],
//!     output_root: "/srv/encodes".into(),
//!     ..VideoConfig::default()
//! })?;
//! Worker::new(broker, WorkerConfig::default())
//!     .with_video_tasks(&video)
//!     .run(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await?;
//! # Ok(()) }
//! ```

// Library crates: every public item documented, and nothing `pub` that the
// crate does not export.
#![warn(missing_docs, unreachable_pub)]

mod analyze;
pub mod args;
pub mod chunk;
mod clip;
mod config;
pub mod encoder;
mod error;
mod ffmpeg_log;
pub mod formats;
pub mod ladder;
pub mod manifest;
pub mod media;
pub mod package;
pub mod paths;
pub mod probe;
pub mod progress;
pub mod publish;
pub mod runner;
pub mod scores;
mod spawner;
pub mod storage;
pub mod targeted;
mod tee;
mod trace;
mod transcode;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spool_broker::{Broker, Task as _};
use spool_sdk::video::{Analyze, CrfPick, Package, SampleEncode, Transcode};

pub use self::analyze::AnalyzeHandler;
pub use self::clip::TestClip;
pub use self::config::{FFMPEG_ENV, FFPROBE_ENV, VideoConfig};
pub use self::error::{FFMPEG_HINT, FFPROBE_HINT, LIBVMAF_HINT, VideoError};
pub use self::media::{Ffprobe, MediaInfo, VideoStream};
pub use self::package::PackageHandler;
pub use self::paths::Roots;
pub use self::progress::{Reporter, RunProgress, StageBand};
pub use self::runner::{
    FfmpegArgs, FfmpegRunner, Input, Output, RunOptions, RunSummary, escape_filter_value,
};
pub use self::scores::{PSNR_CAP, pool};
pub use self::tee::TeeSlave;
pub use self::transcode::TranscodeHandler;
use spool_worker::Worker;

use crate::probe::FfmpegReport;

/// What every video handler shares: the configuration, FFmpeg's runner and
/// capabilities, ffprobe and the roots. Cheap to clone.
///
/// # Examples
///
/// ```no_run
/// use spool_video::{VideoConfig, VideoTasks};
///
/// # fn demo() -> Result<(), spool_video::VideoError> {
/// let video = VideoTasks::new(VideoConfig::default())?;
/// println!("encoders: {:?}, libvmaf: {}", video.encoders(), video.report().libvmaf);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct VideoTasks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: VideoConfig,
    runner: FfmpegRunner,
    ffprobe: Option<Ffprobe>,
    roots: Roots,
    storage: storage::ObjectStorage,
    report: FfmpegReport,
}

impl VideoTasks {
    /// Locates FFmpeg and ffprobe, probes FFmpeg (a one-frame trial encode
    /// per candidate encoder, libvmaf) and prepares the roots. Blocking:
    /// the probe takes a few seconds.
    ///
    /// # Errors
    ///
    /// [`VideoError::Missing`] when no FFmpeg is found or it cannot run;
    /// [`VideoError::Io`] when a root cannot be resolved or created.
    pub fn new(config: VideoConfig) -> Result<Self, VideoError> {
        let ffmpeg = config.locate_ffmpeg().ok_or_else(|| VideoError::Missing {
            what: "ffmpeg",
            detail: "not configured, SPOOL_FFMPEG is unset and no ffmpeg is on PATH".to_owned(),
            hint: FFMPEG_HINT,
        })?;
        let report = crate::probe::probe_ffmpeg(&ffmpeg);
        Self::with_report(config, report)
    }

    /// Like [`VideoTasks::new`], with the capabilities of an FFmpeg probed
    /// already (the supervisor's probe, in `spool-worker`).
    ///
    /// # Errors
    ///
    /// [`VideoError::Missing`] when the report has no usable FFmpeg;
    /// [`VideoError::Io`] when a root cannot be resolved or created;
    /// [`VideoError::Config`] for an allow-list entry that is no object
    /// URL.
    pub fn with_report(config: VideoConfig, report: FfmpegReport) -> Result<Self, VideoError> {
        let Some(ffmpeg) = report.path.clone() else {
            return Err(VideoError::Missing {
                what: "ffmpeg",
                detail: report
                    .error
                    .clone()
                    .unwrap_or_else(|| "the probe found none".to_owned()),
                hint: FFMPEG_HINT,
            });
        };
        if let Some(error) = &report.error {
            return Err(VideoError::Missing {
                what: "ffmpeg",
                detail: format!("{} is unusable: {error}", ffmpeg.display()),
                hint: FFMPEG_HINT,
            });
        }
        let roots = Roots::new(&config.input_roots, &config.output_root)?;
        let storage = storage::ObjectStorage::new(config.storage.clone())?;
        let ffprobe = config.locate_ffprobe(Some(&ffmpeg)).map(Ffprobe::new);
        let runner = FfmpegRunner::new(ffmpeg)
            .kill_grace(config.kill_grace)
            .stats_period(config.progress_interval);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                runner,
                ffprobe,
                roots,
                storage,
                report,
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &VideoConfig {
        &self.inner.config
    }

    /// The FFmpeg runner.
    #[must_use]
    pub fn runner(&self) -> &FfmpegRunner {
        &self.inner.runner
    }

    /// The roots task paths are confined to.
    #[must_use]
    pub fn roots(&self) -> &Roots {
        &self.inner.roots
    }

    /// The object storage: allow-list, stores, transfers.
    #[must_use]
    pub fn storage(&self) -> &storage::ObjectStorage {
        &self.inner.storage
    }

    /// What the probe found about FFmpeg.
    #[must_use]
    pub fn report(&self) -> &FfmpegReport {
        &self.inner.report
    }

    /// ffprobe.
    ///
    /// # Errors
    ///
    /// [`VideoError::Missing`], naming what to install, when none was
    /// found.
    pub fn ffprobe(&self) -> Result<&Ffprobe, VideoError> {
        self.inner
            .ffprobe
            .as_ref()
            .ok_or_else(|| VideoError::Missing {
                what: "ffprobe",
                detail: format!(
                    "none beside {}, in ${FFPROBE_ENV} or on PATH",
                    self.inner.runner.ffmpeg().display()
                ),
                hint: FFPROBE_HINT,
            })
    }

    /// The encoders to choose from, best first within a codec: the
    /// configured override, else those that passed the trial encode.
    #[must_use]
    pub fn encoders(&self) -> Vec<String> {
        self.inner
            .config
            .encoders_override
            .clone()
            .unwrap_or_else(|| self.inner.report.encoders.clone())
    }

    /// The FFmpeg binary.
    #[must_use]
    pub fn ffmpeg(&self) -> &Path {
        self.inner.runner.ffmpeg()
    }
}

/// The wire names of the video tasks.
pub const TASK_NAMES: [&str; 5] = [
    Transcode::NAME,
    Analyze::NAME,
    Package::NAME,
    SampleEncode::NAME,
    CrfPick::NAME,
];

/// How long a worker without video tasks puts back a video task it
/// fetched, for a worker with them: 30 s, long enough not to spin on a
/// queue only it serves, short next to an encode.
pub const LEAVE_DELAY: Duration = Duration::from_secs(30);

/// Registers the video tasks on a [`Worker`], as a builder step.
pub trait WithVideoTasks: Sized {
    /// Registers the video tasks: `video.transcode` and `video.analyze`
    /// (and `video.package`, `video.sample_encode` and `video.crf_pick`). Serve the queues they route to (`default`,
    /// `analysis`, `streaming`, and `gpu` for hardware encodes).
    #[must_use]
    fn with_video_tasks(self, tasks: &VideoTasks) -> Self;

    /// For a worker that cannot serve the video tasks (`--no-video`, no
    /// FFmpeg) but shares queues with workers that do: each video task it
    /// fetches is put back `delay` later, as the same attempt, instead of
    /// dead-lettered as `unknown_task` ([`LEAVE_DELAY`] is a good delay).
    #[must_use]
    fn leave_video_tasks(self, delay: Duration) -> Self;
}

impl<B: Broker> WithVideoTasks for Worker<B> {
    fn with_video_tasks(self, tasks: &VideoTasks) -> Self {
        let worker = self
            .register::<Transcode, _>(TranscodeHandler::new(tasks))
            .register::<Analyze, _>(AnalyzeHandler::new(tasks))
            .register::<Package, _>(PackageHandler::new(tasks))
            .register::<SampleEncode, _>(targeted::SampleEncodeHandler::new(tasks))
            .register::<CrfPick, _>(targeted::CrfPickHandler);
        chunk::register(worker, tasks)
    }

    fn leave_video_tasks(self, delay: Duration) -> Self {
        self.leave_for_others(&TASK_NAMES, delay)
            .leave_for_others(&chunk::TASK_NAMES, delay)
    }
}

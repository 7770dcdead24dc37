//! The video tasks a `spool-worker` process serves.
//!
//! A worker that cannot serve them must not take them: when the video
//! settings were given (`--ffmpeg`, `--ffprobe`, `--input-root`,
//! `--output-root`, or their environment variables) and cannot work, the
//! worker refuses to start, naming what is wrong; when they were left at
//! their defaults and no usable FFmpeg is found, or with `--no-video`, it
//! starts without them and leaves every video task it fetches for other
//! workers (put back, as the same attempt, 30 s later) instead of
//! dead-lettering it as `unknown_task`.

use std::collections::BTreeMap;
use std::path::Path;

use super::Settings;
use crate::error::{Error, Result};
use spool_video::probe::{FfmpegReport, locate_ffmpeg};
use spool_video::storage::StorageConfig;
use spool_video::{VideoConfig, VideoTasks};

/// The default input root, `--input-root`'s.
const DEFAULT_INPUT_ROOT: &str = ".";

/// The default output root, `--output-root`'s.
const DEFAULT_OUTPUT_ROOT: &str = "spool-output";

/// Whether `settings` ask for the video tasks in particular: an FFmpeg,
/// an ffprobe or roots other than the defaults.
#[must_use]
pub fn video_configured(settings: &Settings) -> bool {
    settings.ffmpeg.is_some()
        || settings.ffprobe.is_some()
        || settings
            .input_roots
            .iter()
            .map(|r| r.as_path())
            .ne([Path::new(DEFAULT_INPUT_ROOT)])
        || settings.output_root != Path::new(DEFAULT_OUTPUT_ROOT)
        || !settings.allowed_buckets.is_empty()
}

/// The video tasks a worker process serves with `settings`: `None` with
/// `--no-video`, or when the video settings are the defaults and no
/// usable FFmpeg is found (logged as a warning: the worker then leaves
/// video tasks for others). Reuses the supervisor's FFmpeg probe when its
/// `capabilities` labels carry one, and probes FFmpeg (blocking, off the
/// runtime's threads) otherwise: without trial encodes under
/// `--no-probe`.
///
/// # Errors
///
/// [`Error::Config`] when video settings were given and cannot work (an
/// FFmpeg that does not run, a missing input root, an output root that
/// cannot be created or written): the worker must not start.
pub async fn video_tasks(
    settings: &Settings,
    capabilities: &BTreeMap<String, String>,
) -> Result<Option<VideoTasks>> {
    if settings.no_video {
        tracing::info!("video tasks not served (--no-video); left for other workers");
        return Ok(None);
    }
    let config = VideoConfig {
        ffmpeg: locate_ffmpeg(settings.ffmpeg.as_deref()),
        ffprobe: settings.ffprobe.clone(),
        input_roots: settings.input_roots.clone(),
        output_root: settings.output_root.clone(),
        scratch_dir: settings.scratch_dir.clone(),
        storage: StorageConfig {
            allowed_buckets: settings.allowed_buckets.clone(),
            scratch_limit: settings.scratch_limit,
            ..StorageConfig::default()
        },
        ..VideoConfig::default()
    };
    let probed = config
        .ffmpeg
        .clone()
        .and_then(|path| FfmpegReport::from_labels(path, capabilities));
    let skip_trials = settings.no_probe;
    let built = tokio::task::spawn_blocking(move || match (probed, &config.ffmpeg) {
        (Some(report), _) => VideoTasks::with_report(config, report),
        // Trial encodes take seconds per process: with --no-probe a child
        // (and its replacement) starts at once, on software encoders.
        (None, Some(ffmpeg)) if skip_trials => {
            let report = spool_video::probe::probe_listing(ffmpeg);
            VideoTasks::with_report(config, report)
        }
        (None, _) => VideoTasks::new(config),
    })
    .await;
    let error = match built {
        Ok(Ok(tasks)) => {
            let ffprobe = tasks
                .ffprobe()
                .map(|p| p.path().display().to_string())
                .unwrap_or_else(|e| e.to_string());
            tracing::info!(
                ffmpeg = %tasks.ffmpeg().display(),
                ffprobe,
                encoders = %tasks.encoders().join(","),
                libvmaf = tasks.report().libvmaf,
                output_root = %tasks.roots().output_root().display(),
                allowed_buckets = %tasks.storage().allowed(),
                "serving the video tasks"
            );
            return Ok(Some(tasks));
        }
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("the FFmpeg probe failed: {e}"),
    };
    if video_configured(settings) {
        return Err(Error::Config(format!(
            "video tasks cannot be served: {error}; fix --ffmpeg, --ffprobe, --input-root, \
             --output-root and --allow-bucket, or pass --no-video"
        )));
    }
    tracing::warn!("video tasks disabled: {error}; video tasks are left for other workers");
    Ok(None)
}

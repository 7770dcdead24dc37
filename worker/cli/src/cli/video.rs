//! The video tasks a `spool-worker` process serves.

use std::collections::BTreeMap;

use super::Settings;
use spool_video::probe::{FfmpegReport, locate_ffmpeg};
use spool_video::{VideoConfig, VideoTasks};

/// The video tasks a worker process serves with `settings`, or `None`
/// with `--no-video` or when FFmpeg is unusable (logged as a warning).
/// Reuses the supervisor's FFmpeg probe when its `capabilities` labels
/// carry one, and probes FFmpeg (blocking, off the runtime's threads)
/// otherwise: without trial encodes under `--no-probe`.
pub async fn video_tasks(
    settings: &Settings,
    capabilities: &BTreeMap<String, String>,
) -> Option<spool_video::VideoTasks> {
    if settings.no_video {
        tracing::info!("video tasks not served (--no-video)");
        return None;
    }
    let config = VideoConfig {
        ffmpeg: locate_ffmpeg(settings.ffmpeg.as_deref()),
        ffprobe: settings.ffprobe.clone(),
        input_roots: settings.input_roots.clone(),
        output_root: settings.output_root.clone(),
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
    match built {
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
                "serving the video tasks"
            );
            Some(tasks)
        }
        Ok(Err(e)) => {
            tracing::warn!("video tasks disabled: {e}");
            None
        }
        Err(e) => {
            tracing::warn!("video tasks disabled: the FFmpeg probe failed: {e}");
            None
        }
    }
}

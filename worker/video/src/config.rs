//! How a worker runs its video tasks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::probe::locate_ffmpeg;
use crate::storage::StorageConfig;

/// The environment variable naming ffprobe, when it is not beside FFmpeg.
pub const FFPROBE_ENV: &str = "SPOOL_FFPROBE";

/// The environment variable naming FFmpeg.
pub const FFMPEG_ENV: &str = "SPOOL_FFMPEG";

/// Configuration of the video tasks.
///
/// # Examples
///
/// ```
/// use std::path::PathBuf;
/// use spool_video::VideoConfig;
///
/// let config = VideoConfig {
///     input_roots: vec![PathBuf::from("/srv/uploads")],
///     output_root: PathBuf::from("/srv/encodes"),
///     ..VideoConfig::default()
/// };
/// assert_eq!(config.kill_grace.as_secs(), 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    /// The FFmpeg to run. Default: `None`, which means `SPOOL_FFMPEG`, then
    /// the first `ffmpeg` on `PATH`.
    pub ffmpeg: Option<PathBuf>,
    /// The ffprobe to run. Default: `None`, which means the `ffprobe`
    /// beside FFmpeg, then `SPOOL_FFPROBE`, then the first on `PATH`.
    pub ffprobe: Option<PathBuf>,
    /// Directories tasks may read from (the output root is readable too,
    /// so one task can read what another wrote). A relative input path is
    /// looked up in each, in order. Default: the current directory.
    pub input_roots: Vec<PathBuf>,
    /// The directory tasks write into; created if missing. Default:
    /// `spool-output` in the current directory.
    pub output_root: PathBuf,
    /// Where per-run scratch files go (analysis logs, downloads from and
    /// outputs for object storage). Default: `None`, the system's
    /// temporary directory.
    pub scratch_dir: Option<PathBuf>,
    /// Object storage: the buckets tasks may use, the scratch limit,
    /// retries and uploads. Default: [`StorageConfig::default`], which
    /// allows no bucket.
    pub storage: StorageConfig,
    /// How long FFmpeg gets to stop after it is asked to quit (`q` on its
    /// stdin) before it is killed. Default: 5 s.
    pub kill_grace: Duration,
    /// How often FFmpeg reports its progress (`-stats_period`); the task's
    /// reports are throttled further by the runtime. Default: 500 ms.
    pub progress_interval: Duration,
    /// How far an output's duration may be from the expected one.
    /// Default: 0.5 s, plus [`duration_tolerance_ratio`](Self::duration_tolerance_ratio)
    /// of the expected duration.
    pub duration_tolerance: Duration,
    /// The part of the expected duration added to the tolerance (encoders
    /// and containers round to frames and audio packets). Default: 0.02.
    pub duration_tolerance_ratio: f64,
    /// Use these encoders instead of those that passed the probe's trial
    /// encode, best first, as if the probe had found them (tests force a
    /// hardware encoder this way to exercise the fallback). Default: `None`.
    pub encoders_override: Option<Vec<String>>,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            ffmpeg: None,
            ffprobe: None,
            input_roots: vec![PathBuf::from(".")],
            output_root: PathBuf::from("spool-output"),
            scratch_dir: None,
            storage: StorageConfig::default(),
            kill_grace: Duration::from_secs(5),
            progress_interval: Duration::from_millis(500),
            duration_tolerance: Duration::from_millis(500),
            duration_tolerance_ratio: 0.02,
            encoders_override: None,
        }
    }
}

impl VideoConfig {
    /// The FFmpeg to run: [`ffmpeg`](Self::ffmpeg), `SPOOL_FFMPEG`, then
    /// `PATH`.
    #[must_use]
    pub fn locate_ffmpeg(&self) -> Option<PathBuf> {
        match &self.ffmpeg {
            Some(path) => Some(path.clone()),
            None => {
                let from_env = std::env::var_os(FFMPEG_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from);
                locate_ffmpeg(from_env.as_deref())
            }
        }
    }

    /// The ffprobe to run: [`ffprobe`](Self::ffprobe), the one beside
    /// `ffmpeg`, `SPOOL_FFPROBE`, then `PATH`.
    #[must_use]
    pub fn locate_ffprobe(&self, ffmpeg: Option<&Path>) -> Option<PathBuf> {
        if let Some(path) = &self.ffprobe {
            return Some(path.clone());
        }
        if let Some(beside) = ffmpeg.and_then(ffprobe_beside) {
            return Some(beside);
        }
        if let Some(from_env) = std::env::var_os(FFPROBE_ENV).filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(from_env));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("ffprobe"))
            .find(|candidate| candidate.is_file())
    }

    /// The tolerance for an output of `expected` duration.
    #[must_use]
    pub fn tolerance_for(&self, expected: Duration) -> Duration {
        let ratio = self.duration_tolerance_ratio.clamp(0.0, 1.0);
        self.duration_tolerance + expected.mul_f64(ratio)
    }
}

/// An `ffprobe` in the directory of `ffmpeg`, or of the file it links to.
fn ffprobe_beside(ffmpeg: &Path) -> Option<PathBuf> {
    let named = ffmpeg.parent().map(|dir| dir.join("ffprobe"));
    let resolved = std::fs::canonicalize(ffmpeg)
        .ok()
        .and_then(|real| real.parent().map(|dir| dir.join("ffprobe")));
    [named, resolved]
        .into_iter()
        .flatten()
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_tolerance() {
        let config = VideoConfig::default();
        assert_eq!(config.output_root, PathBuf::from("spool-output"));
        let tolerance = config.tolerance_for(Duration::from_secs(10));
        assert_eq!(tolerance, Duration::from_millis(700));
    }

    #[test]
    fn an_explicit_ffprobe_wins() {
        let config = VideoConfig {
            ffprobe: Some(PathBuf::from("/opt/ff/ffprobe")),
            ..VideoConfig::default()
        };
        assert_eq!(
            config.locate_ffprobe(Some(Path::new("/usr/bin/ffmpeg"))),
            Some(PathBuf::from("/opt/ff/ffprobe"))
        );
    }
}

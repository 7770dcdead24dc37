//! Progress of a video task: stage bands mapped onto one 0–100 % scale.
//!
//! Every video task goes through the same stages, each owning a band of the
//! percent scale: probing the input (0–5 %), processing it with FFmpeg
//! (5–95 %), validating what was written (95–100 %). FFmpeg's own progress
//! (output time against the probed duration) moves the percent through the
//! processing band, so a caller sees one steady number.

use std::borrow::Cow;
use std::time::Duration;

use spool_broker::Progress;

use spool_worker::TaskContext;

/// A stage and the part of the percent scale it covers.
///
/// # Examples
///
/// ```
/// use spool_video::StageBand;
///
/// assert_eq!(StageBand::PROCESSING.at(0.5), 50.0);
/// // A task with two FFmpeg runs splits the processing band.
/// let [first, second] = StageBand::PROCESSING.split(["encode", "package"]);
/// assert_eq!((first.start, first.end, second.end), (5.0, 50.0, 95.0));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StageBand {
    /// The stage's name, reported as `Progress::stage`.
    pub name: Cow<'static, str>,
    /// The percent at the stage's start.
    pub start: f32,
    /// The percent at its end.
    pub end: f32,
}

impl StageBand {
    /// Reading the input with ffprobe: 0–5 %.
    pub const PROBING: Self = Self::fixed("probing", 0.0, 5.0);
    /// The FFmpeg run: 5–95 %.
    pub const PROCESSING: Self = Self::fixed("processing", 5.0, 95.0);
    /// Checking the output: 95–100 %.
    pub const VALIDATING: Self = Self::fixed("validating", 95.0, 100.0);
    /// Downloading inputs from object storage, after probing begins:
    /// 0–5 %.
    pub const DOWNLOADING: Self = Self::fixed("download", 0.0, 5.0);
    /// Uploading outputs to object storage, after validation: 95–100 %.
    pub const UPLOADING: Self = Self::fixed("upload", 95.0, 100.0);

    const fn fixed(name: &'static str, start: f32, end: f32) -> Self {
        Self {
            name: Cow::Borrowed(name),
            start,
            end,
        }
    }

    /// A band named `name` from `start` to `end` percent.
    #[must_use]
    pub fn new(name: impl Into<Cow<'static, str>>, start: f32, end: f32) -> Self {
        Self {
            name: name.into(),
            start,
            end,
        }
    }

    /// The same band under another name (`"encode 720p"`).
    #[must_use]
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The percent at `fraction` (0 to 1, clamped) of the band.
    #[must_use]
    pub fn at(&self, fraction: f64) -> f32 {
        #[allow(clippy::cast_possible_truncation)]
        let fraction = fraction.clamp(0.0, 1.0) as f32;
        self.start + (self.end - self.start) * fraction
    }

    /// `N` equal consecutive bands covering this one, named `names`.
    #[must_use]
    pub fn split<const N: usize>(&self, names: [&'static str; N]) -> [Self; N] {
        #[allow(clippy::cast_precision_loss)]
        let step = (self.end - self.start) / N.max(1) as f32;
        let mut index = 0.0_f32;
        names.map(|name| {
            let band = Self::new(
                name,
                self.start + step * index,
                self.start + step * (index + 1.0),
            );
            index += 1.0;
            band
        })
    }

    /// A report that the stage begins.
    #[must_use]
    pub fn begin(&self) -> Progress {
        Progress {
            stage: Some(self.name.to_string()),
            ..Progress::percent(self.start)
        }
    }
}

/// How far one FFmpeg run got, as the runner reads it from FFmpeg.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunProgress {
    /// The stage the run belongs to.
    pub stage: Cow<'static, str>,
    /// The task's percent: the run's fraction mapped into its band.
    pub percent: f32,
    /// The fraction of the run done (output time over the expected
    /// duration), when the duration is known.
    pub fraction: Option<f64>,
    /// Media time written so far.
    pub out_time: Duration,
    /// Frames written so far.
    pub frame: u64,
    /// Frames per second FFmpeg processes.
    pub fps: Option<f32>,
    /// Speed as a multiple of real time.
    pub speed: Option<f32>,
    /// Seconds left at the current speed, when the duration is known.
    pub eta_seconds: Option<f32>,
}

impl RunProgress {
    /// The report for the job store and the SDK's progress stream.
    #[must_use]
    pub fn to_progress(&self) -> Progress {
        Progress {
            percent: self.percent,
            stage: Some(self.stage.to_string()),
            message: None,
            fps: self.fps,
            eta_seconds: self.eta_seconds,
            speed: self.speed,
        }
    }
}

/// Reports a task's stages and runs through its [`TaskContext`] (which
/// throttles what reaches the store and the stream).
#[derive(Debug, Clone)]
pub struct Reporter {
    ctx: TaskContext,
}

impl Reporter {
    /// A reporter for the run `ctx` belongs to.
    #[must_use]
    pub fn new(ctx: &TaskContext) -> Self {
        Self { ctx: ctx.clone() }
    }

    /// Reports that `band` begins.
    pub fn stage(&self, band: &StageBand) {
        self.ctx.progress(band.begin());
    }

    /// The token that fires when the run is revoked or hits its soft time
    /// limit.
    #[must_use]
    pub fn cancellation(&self) -> &tokio_util::sync::CancellationToken {
        self.ctx.cancellation()
    }

    /// Reports `progress` as it is (a transfer's bytes, rate and ETA).
    pub fn progress(&self, progress: Progress) {
        self.ctx.progress(progress);
    }

    /// Reports an FFmpeg run's progress.
    pub fn run(&self, progress: &RunProgress) {
        self.ctx.progress(progress.to_progress());
    }

    /// Reports 100 %, with a closing message.
    pub fn done(&self, message: impl Into<String>) {
        self.ctx.progress(Progress {
            stage: Some("done".to_owned()),
            message: Some(message.into()),
            ..Progress::percent(100.0)
        });
    }
}

/// Seconds in `time`, FFmpeg's `HH:MM:SS.ss` (negative times, which FFmpeg
/// prints before the first frame, are 0); `None` for `N/A` or garbage.
#[must_use]
pub fn parse_ffmpeg_time(time: &str) -> Option<Duration> {
    let time = time.trim();
    if time.starts_with('-') {
        return Some(Duration::ZERO);
    }
    let mut seconds = 0.0_f64;
    for part in time.split(':') {
        let value: f64 = part.parse().ok()?;
        if !value.is_finite() || value < 0.0 {
            return None;
        }
        seconds = seconds * 60.0 + value;
    }
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_map_fractions() {
        assert_eq!(StageBand::PROBING.at(1.0), 5.0);
        assert_eq!(StageBand::PROCESSING.at(0.0), 5.0);
        assert_eq!(StageBand::PROCESSING.at(2.0), 95.0);
        assert_eq!(StageBand::VALIDATING.at(0.5), 97.5);
        let [a, b, c] = StageBand::new("x", 0.0, 90.0).split(["a", "b", "c"]);
        assert_eq!((a.end, b.start, b.end, c.end), (30.0, 30.0, 60.0, 90.0));
        assert_eq!(c.name, "c");
        assert_eq!(
            StageBand::PROCESSING.begin().stage.as_deref(),
            Some("processing")
        );
    }

    #[test]
    fn ffmpeg_times_parse() {
        assert_eq!(
            parse_ffmpeg_time("00:01:02.50"),
            Some(Duration::from_millis(62_500))
        );
        assert_eq!(parse_ffmpeg_time("-577014:32:22.77"), Some(Duration::ZERO));
        assert_eq!(parse_ffmpeg_time("N/A"), None);
        assert_eq!(parse_ffmpeg_time("3.2"), Some(Duration::from_millis(3200)));
    }
}

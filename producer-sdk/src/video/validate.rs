//! What a video task may ask for: checked on enqueue and by the worker
//! before FFmpeg runs.

use std::any::Any;

use spool_broker::Task;

use super::{Analyze, Audio, Package, RateControl, Size, Transcode};
use crate::error::{Error, Result};

/// The bounds [`Transcode::validate`], [`Analyze::validate`] and
/// [`Package::validate`] check.
pub mod limits {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::super::Rendition;

    /// The largest frame side, in pixels (16K; FFmpeg's encoders stop
    /// around there).
    pub const MAX_DIMENSION: u32 = 16_384;
    /// The highest frame rate, in frames per second.
    pub const MAX_FPS: f64 = 1_000.0;
    /// The video bitrates a task may ask for, in kb/s (1 kb/s to 500 Mb/s).
    pub const VIDEO_KBPS: std::ops::RangeInclusive<u32> = 1..=500_000;
    /// The AAC bitrates a task may ask for, in kb/s.
    pub const AUDIO_KBPS: std::ops::RangeInclusive<u32> = 8..=1_024;
    /// libvmaf threads an analysis may ask for. More than a host's cores
    /// only adds contention; 64 covers the largest analysis hosts (FFmpeg
    /// adds its own threads on top: 2,000 asked for ran 2,016).
    pub const MAX_ANALYSIS_THREADS: u16 = 64;
    /// The largest subsampling step (score one frame in this many).
    pub const MAX_SUBSAMPLE: u16 = 1_000;
    /// The most rungs in a package's ladder.
    pub const MAX_RUNGS: usize = 10;
    /// The longest rendition name (names make file names).
    pub const MAX_NAME_LEN: usize = 32;
    /// The smallest rendition height, in pixels.
    pub const MIN_RUNG_HEIGHT: u32 = 16;
    /// The tallest rendition height, in pixels (8K).
    pub const MAX_RUNG_HEIGHT: u32 = 4_320;
    /// The shortest segment a package may ask for.
    pub const MIN_SEGMENT: Duration = Duration::from_millis(500);
    /// The longest segment a package may ask for.
    pub const MAX_SEGMENT: Duration = Duration::from_secs(60);

    /// Checks a package's ladder: a segment duration from [`MIN_SEGMENT`]
    /// to [`MAX_SEGMENT`]; AAC in [`AUDIO_KBPS`]; 1 to [`MAX_RUNGS`] rungs
    /// with unique names (1 to [`MAX_NAME_LEN`] of `A-Z a-z 0-9 _ -`), unique
    /// even heights from [`MIN_RUNG_HEIGHT`] to [`MAX_RUNG_HEIGHT`] and
    /// video bitrates in [`VIDEO_KBPS`]. `audio_kbps` is the package's one
    /// audio bitrate, if it sets one for every rung.
    ///
    /// # Errors
    ///
    /// The reason, naming the rung.
    pub fn check_ladder(
        rungs: &[Rendition],
        segment: Duration,
        audio_kbps: Option<u32>,
    ) -> Result<(), String> {
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment) {
            return Err(format!(
                "segment duration {segment:?} is outside {MIN_SEGMENT:?} to {MAX_SEGMENT:?}"
            ));
        }
        let audio = |kbps: u32, what: &str| {
            if AUDIO_KBPS.contains(&kbps) {
                Ok(())
            } else {
                Err(format!(
                    "{what}: AAC at {kbps} kb/s is outside {}–{} kb/s",
                    AUDIO_KBPS.start(),
                    AUDIO_KBPS.end()
                ))
            }
        };
        if let Some(kbps) = audio_kbps {
            audio(kbps, "audio_kbps")?;
        }
        if rungs.is_empty() || rungs.len() > MAX_RUNGS {
            return Err(format!(
                "the ladder has {} rungs; 1 to {MAX_RUNGS} are allowed",
                rungs.len()
            ));
        }
        let (mut names, mut heights) = (HashSet::new(), HashSet::new());
        for rung in rungs {
            let name = &rung.name;
            let name_ok = !name.is_empty()
                && name.len() <= MAX_NAME_LEN
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err(format!(
                    "rendition name {name:?} must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ -"
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(format!("rendition name {name:?} is repeated"));
            }
            let height = rung.height;
            if height % 2 == 1 || !(MIN_RUNG_HEIGHT..=MAX_RUNG_HEIGHT).contains(&height) {
                return Err(format!(
                    "rendition {name}: height {height} must be even, from {MIN_RUNG_HEIGHT} \
                     to {MAX_RUNG_HEIGHT}"
                ));
            }
            if !heights.insert(height) {
                return Err(format!("rendition {name}: height {height} is repeated"));
            }
            if !VIDEO_KBPS.contains(&rung.video_kbps) {
                return Err(format!(
                    "rendition {name}: a video bitrate of {} kb/s is outside {}–{} kb/s",
                    rung.video_kbps,
                    VIDEO_KBPS.start(),
                    VIDEO_KBPS.end()
                ));
            }
            if audio_kbps.is_none() {
                audio(rung.audio_kbps, &format!("rendition {name}"))?;
            }
        }
        Ok(())
    }
}

use limits::*;

/// Validates `task` if it is one of the SDK's video tasks.
pub(crate) fn validate_any<T: Task>(task: &T) -> Result<()> {
    let any: &dyn Any = task;
    if let Some(task) = any.downcast_ref::<Transcode>() {
        task.validate()
    } else if let Some(task) = any.downcast_ref::<Analyze>() {
        task.validate()
    } else if let Some(task) = any.downcast_ref::<Package>() {
        task.validate()
    } else if let Some(task) = any.downcast_ref::<super::SampleEncode>() {
        task.validate()
    } else if let Some(task) = any.downcast_ref::<super::CrfPick>() {
        task.validate()
    } else {
        Ok(())
    }
}

fn invalid<T: Task>(reason: impl Into<String>) -> Result<()> {
    Err(Error::InvalidTask {
        task: T::NAME,
        reason: reason.into(),
    })
}

fn path<T: Task>(what: &str, value: &super::Location) -> Result<()> {
    match value.parse() {
        Ok(_) => Ok(()),
        // Keeps the old wording ("the input path is empty") for paths.
        Err(reason) if !value.is_url() => invalid::<T>(format!("the {what} {reason}")),
        Err(reason) => invalid::<T>(format!("the {what} {value:?}: {reason}")),
    }
}

fn even_side<T: Task>(what: &str, value: u32) -> Result<()> {
    if value == 0 || value % 2 == 1 || value > MAX_DIMENSION {
        return invalid::<T>(format!(
            "{what} {value} must be even, from 2 to {MAX_DIMENSION} (4:2:0 video needs even sides)"
        ));
    }
    Ok(())
}

impl Transcode {
    /// Checks the task's values: non-empty paths; an even frame size from
    /// 2 to [`MAX_DIMENSION`]; a frame rate above 0 and at most
    /// [`MAX_FPS`]; a CRF up to the codec's maximum
    /// ([`Codec::max_crf`](super::Codec::max_crf)) or a bitrate in
    /// [`VIDEO_KBPS`]; AAC in [`AUDIO_KBPS`]. The client checks it on
    /// enqueue, the worker before it runs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] with the reason.
    pub fn validate(&self) -> Result<()> {
        path::<Self>("input", &self.input)?;
        path::<Self>("output", &self.output)?;
        match self.size {
            Some(Size::Exact { width, height }) => {
                even_side::<Self>("width", width)?;
                even_side::<Self>("height", height)?;
            }
            Some(Size::Height(height)) => even_side::<Self>("height", height)?,
            Some(Size::Width(width)) => even_side::<Self>("width", width)?,
            None => {}
        }
        if let Some(fps) = self.fps
            && (fps.num == 0 || fps.den == 0 || fps.as_f64() > MAX_FPS)
        {
            return invalid::<Self>(format!(
                "frame rate {fps} must be above 0 and at most {MAX_FPS}"
            ));
        }
        match self.rate {
            RateControl::Crf(crf) if crf > self.codec.max_crf() => {
                return invalid::<Self>(format!(
                    "CRF {crf} is above {}, {}'s maximum",
                    self.codec.max_crf(),
                    self.codec
                ));
            }
            RateControl::Bitrate { kbps } if !VIDEO_KBPS.contains(&kbps) => {
                return invalid::<Self>(format!(
                    "a video bitrate of {kbps} kb/s is outside {}–{} kb/s",
                    VIDEO_KBPS.start(),
                    VIDEO_KBPS.end()
                ));
            }
            _ => {}
        }
        if let Audio::Aac { kbps } = self.audio
            && !AUDIO_KBPS.contains(&kbps)
        {
            return invalid::<Self>(format!(
                "AAC at {kbps} kb/s is outside {}–{} kb/s",
                AUDIO_KBPS.start(),
                AUDIO_KBPS.end()
            ));
        }
        Ok(())
    }
}

impl Analyze {
    /// Checks the task's values: non-empty paths, at least one metric,
    /// `threads` from 1 to [`MAX_ANALYSIS_THREADS`], `subsample` from 1 to
    /// [`MAX_SUBSAMPLE`]. The client checks it on enqueue, the worker
    /// before it runs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] with the reason.
    pub fn validate(&self) -> Result<()> {
        path::<Self>("reference", &self.reference)?;
        path::<Self>("distorted", &self.distorted)?;
        if self.metrics.is_empty() {
            return invalid::<Self>("no metric asked for (vmaf, psnr, ssim)");
        }
        if let Some(threads) = self.threads
            && !(1..=MAX_ANALYSIS_THREADS).contains(&threads)
        {
            return invalid::<Self>(format!(
                "{threads} threads: from 1 to {MAX_ANALYSIS_THREADS} are allowed"
            ));
        }
        if !(1..=MAX_SUBSAMPLE).contains(&self.subsample) {
            return invalid::<Self>(format!(
                "subsample {} is outside 1–{MAX_SUBSAMPLE}",
                self.subsample
            ));
        }
        Ok(())
    }
}

impl Package {
    /// Checks the task's values: non-empty paths, at least one format, a
    /// segment duration from [`MIN_SEGMENT`] to [`MAX_SEGMENT`], and a
    /// ladder of 1 to [`MAX_RUNGS`] rungs with unique names (1 to
    /// [`MAX_NAME_LEN`] of `A-Z a-z 0-9 _ -`), unique even heights from
    /// [`MIN_RUNG_HEIGHT`] to [`MAX_RUNG_HEIGHT`], video bitrates in
    /// [`VIDEO_KBPS`] and audio bitrates in [`AUDIO_KBPS`]. The client
    /// checks it on enqueue, the worker before it runs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] with the reason.
    pub fn validate(&self) -> Result<()> {
        path::<Self>("input", &self.input)?;
        path::<Self>("output directory", &self.output_dir)?;
        if self.formats.is_empty() {
            return invalid::<Self>("neither HLS nor DASH is asked for");
        }
        limits::check_ladder(&self.rungs(), self.segment_duration, self.audio_kbps)
            .or_else(invalid::<Self>)?;
        self.check_rung_quality().or_else(invalid::<Self>)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Codec, Fps, Metrics, Rendition};
    use super::*;

    fn reason(result: Result<()>) -> String {
        match result {
            Err(Error::InvalidTask { reason, .. }) => reason,
            other => panic!("expected InvalidTask, got {other:?}"),
        }
    }

    #[test]
    fn transcodes_are_checked() {
        let ok = Transcode::new("a.mp4", "b.mp4", Codec::H264);
        assert!(ok.validate().is_ok());
        assert!(ok.clone().size(Size::Height(240)).validate().is_ok());
        assert!(reason(ok.clone().size(Size::Height(241)).validate()).contains("height 241"));
        assert!(reason(ok.clone().size(Size::Width(0)).validate()).contains("width 0"));
        let huge = Size::Exact {
            width: 32_768,
            height: 240,
        };
        assert!(reason(ok.clone().size(huge).validate()).contains("32768"));
        assert!(ok.clone().fps(Fps::new(25, 0)).validate().is_err());
        assert!(ok.clone().fps(Fps::whole(5_000)).validate().is_err());
        assert!(reason(ok.clone().rate(RateControl::Crf(52)).validate()).contains("51"));
        let av1 = Transcode::new("a.mp4", "b.mp4", Codec::Av1).rate(RateControl::Crf(60));
        assert!(av1.validate().is_ok());
        let bitrate = ok.clone().rate(RateControl::Bitrate { kbps: 0 });
        assert!(bitrate.validate().is_err());
        assert!(ok.clone().audio(Audio::Aac { kbps: 4 }).validate().is_err());
        assert!(Transcode::new("", "b.mp4", Codec::H264).validate().is_err());
        let e = ok.size(Size::Height(241)).validate().unwrap_err();
        assert!(
            e.to_string().starts_with("invalid video.transcode task: "),
            "{e}"
        );
    }

    #[test]
    fn analyses_are_checked() {
        let ok = Analyze::new("r.mp4", "d.mp4");
        assert!(ok.validate().is_ok());
        assert!(ok.clone().threads(64).validate().is_ok());
        assert!(reason(ok.clone().threads(2_000).validate()).contains("2000 threads"));
        assert!(ok.clone().threads(0).validate().is_err());
        assert!(ok.clone().subsample(0).validate().is_err());
        let none = Metrics {
            vmaf: false,
            psnr: false,
            ssim: false,
        };
        assert!(ok.metrics(none).validate().is_err());
    }

    #[test]
    fn packages_are_checked() {
        let ok = Package::new("in.mp4", "out");
        assert!(ok.validate().is_ok());
        let odd = ok.clone().ladder(vec![Rendition::new("x", 241, 500, 64)]);
        assert!(reason(odd.validate()).contains("height 241"));
        let twice = ok.clone().ladder(vec![
            Rendition::new("a", 240, 500, 64),
            Rendition::new("a", 360, 800, 64),
        ]);
        assert!(reason(twice.validate()).contains("repeated"));
        let bad_name = ok
            .clone()
            .ladder(vec![Rendition::new("../x", 240, 500, 64)]);
        assert!(bad_name.validate().is_err());
        let short = ok.clone().segment_duration(Duration::from_millis(100));
        assert!(short.validate().is_err());
        let no_audio = ok.clone().ladder(vec![Rendition::new("a", 240, 500, 0)]);
        assert!(no_audio.clone().validate().is_err());
        assert!(no_audio.audio_kbps(96).validate().is_ok());
        assert!(ok.ladder(Vec::new()).validate().is_err());
    }
}

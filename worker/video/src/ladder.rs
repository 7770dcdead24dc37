//! The rendition ladder of a `video.package` run, planned from the probed
//! source: which rungs to encode, at what size and bitrate, and where the
//! keyframes go so that every rendition's segments start at the same
//! instants.
//!
//! - **Never upscaled.** Rungs taller than the source are dropped; a
//!   source smaller than every rung gets one rendition at its own size.
//! - **Even sizes, same shape.** Each width follows the source's aspect
//!   ratio, rounded to an even number (4:2:0 video needs both even).
//! - **Aligned keyframes.** The keyframe interval is the segment duration
//!   times the source's real frame rate (the probed `avg_frame_rate`, a
//!   fraction: 29.97 fps is 30000/1001), scene-cut keyframes are off, and
//!   a keyframe is forced at every multiple of the segment duration. The
//!   renditions are split from the same decoded frames, so the segmenters
//!   cut every rendition at the same frame.

use std::time::Duration;

use spool_sdk::video::{Fps, Rendition};

use super::VideoError;

/// The ladder's bounds, spelled once in the SDK that checks them on
/// enqueue.
pub use spool_sdk::video::limits::{MAX_NAME_LEN, MAX_RUNGS, MAX_SEGMENT, MIN_SEGMENT};

/// The peak bitrate allowed over a rung's target, for HLS `BANDWIDTH` and
/// DASH `bandwidth` to mean something: 110 %.
pub const PEAK_RATIO: f64 = 1.1;

/// One rendition to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    /// Its name: files and the HLS variant are named after it.
    pub name: String,
    /// Frame width in pixels, even.
    pub width: u32,
    /// Frame height in pixels, even.
    pub height: u32,
    /// Target video bitrate in kb/s.
    pub video_kbps: u32,
    /// AAC bitrate in kb/s, used when the source has audio.
    pub audio_kbps: u32,
    /// The CRF to encode at, capped at `video_kbps`; `None`: at
    /// `video_kbps`. The package sets it for rungs with a CRF or a target
    /// VMAF.
    pub crf: Option<u8>,
}

impl Rung {
    /// The peak video bitrate in kb/s (`-maxrate`).
    #[must_use]
    pub fn max_kbps(&self) -> u32 {
        scale_kbps(self.video_kbps, PEAK_RATIO)
    }

    /// The rate-control buffer in kb (`-bufsize`): two seconds at the
    /// target, so the peak holds over any two-second window.
    #[must_use]
    pub fn buffer_kbits(&self) -> u32 {
        self.video_kbps.saturating_mul(2)
    }
}

/// Where keyframes go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keyframes {
    /// The target segment duration in seconds.
    pub segment_seconds: f64,
    /// The keyframe interval in frames (`-g`, `-keyint_min`), from the
    /// real frame rate; `None` when the source's rate is unknown, where
    /// the forced keyframes alone align the segments.
    pub interval_frames: Option<u32>,
}

impl Keyframes {
    /// Keyframes every `segment` at `fps`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use spool_sdk::video::Fps;
    /// use spool_video::ladder::Keyframes;
    ///
    /// // NTSC's 29.97 fps is 30000/1001: 4 s is 120 frames.
    /// let keyframes = Keyframes::new(Duration::from_secs(4), Some(Fps::new(30000, 1001)));
    /// assert_eq!(keyframes.interval_frames, Some(120));
    /// assert_eq!(keyframes.force_expression(), "expr:gte(t,n_forced*4)");
    /// ```
    #[must_use]
    pub fn new(segment: Duration, fps: Option<Fps>) -> Self {
        let segment_seconds = segment.as_secs_f64();
        let interval_frames = fps
            .map(|fps| (fps.as_f64() * segment_seconds).round())
            .filter(|frames| frames.is_finite() && *frames >= 1.0)
            .map(|frames| frames.min(f64::from(u32::MAX)) as u32);
        Self {
            segment_seconds,
            interval_frames,
        }
    }

    /// The `-force_key_frames` value: a keyframe at the first frame at or
    /// past every multiple of the segment duration.
    #[must_use]
    pub fn force_expression(&self) -> String {
        format!(
            "expr:gte(t,n_forced*{})",
            seconds_text(self.segment_seconds)
        )
    }

    /// The segment duration as FFmpeg's muxers take it (`4`, `2.5`).
    #[must_use]
    pub fn segment_text(&self) -> String {
        seconds_text(self.segment_seconds)
    }
}

/// The planned ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    /// The rungs to encode, tallest first.
    pub rungs: Vec<Rung>,
    /// Where keyframes go.
    pub keyframes: Keyframes,
    /// Names of the rungs dropped because they are taller than the source.
    pub dropped: Vec<String>,
}

/// Plans the ladder for a `width`×`height` source at `fps`.
///
/// `requested` may come in any order; `audio_kbps` overrides every rung's
/// audio bitrate.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_sdk::video::{Fps, Rendition};
/// use spool_video::ladder::plan;
///
/// let ladder = plan(
///     (1280, 720),
///     Some(Fps::new(30000, 1001)),
///     &Rendition::default_ladder(),
///     Duration::from_secs(4),
///     None,
/// )?;
/// let sizes: Vec<_> = ladder.rungs.iter().map(|r| (r.width, r.height)).collect();
/// assert_eq!(sizes, [(1280, 720), (854, 480), (640, 360)]);
/// assert_eq!(ladder.dropped, ["1080p"]);
/// assert_eq!(ladder.keyframes.interval_frames, Some(120));
/// # Ok::<(), spool_video::VideoError>(())
/// ```
///
/// # Errors
///
/// [`VideoError::InvalidTask`] for an empty or oversized ladder, a name
/// that is empty, too long, repeated or not made of `A-Z a-z 0-9 _ -`, a
/// height that is odd, tiny or repeated, a zero bitrate, a segment
/// duration outside 0.5–60 s, or a source with no usable frame size.
pub fn plan(
    (width, height): (u32, u32),
    fps: Option<Fps>,
    requested: &[Rendition],
    segment: Duration,
    audio_kbps: Option<u32>,
) -> Result<Ladder, VideoError> {
    // The worker checked the task already; a ladder built by other callers
    // (the benches) meets the same rules.
    spool_sdk::video::limits::check_ladder(requested, segment, audio_kbps)
        .map_err(VideoError::InvalidTask)?;
    if width < 2 || height < 2 {
        return Err(VideoError::InvalidTask(format!(
            "the source's frame size {width}x{height} is too small to package"
        )));
    }
    let mut sorted = requested.to_vec();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.height));
    let (kept, dropped): (Vec<_>, Vec<_>) = sorted.into_iter().partition(|r| r.height <= height);
    let mut rungs: Vec<Rung> = kept
        .iter()
        .map(|r| Rung {
            name: r.name.clone(),
            width: even_width(r.height, width, height),
            height: r.height,
            video_kbps: r.video_kbps,
            audio_kbps: audio_kbps.unwrap_or(r.audio_kbps),
            crf: r.crf,
        })
        .collect();
    if rungs.is_empty() {
        // Smaller than every rung: one rendition at the source's own size,
        // with the smallest rung's bitrate scaled down by area.
        let smallest = dropped
            .last()
            .ok_or_else(|| VideoError::InvalidTask("the ladder has no rungs".to_owned()))?;
        let (own_width, own_height) = (width & !1, height & !1);
        let smallest_width = even_width(smallest.height, width, height);
        let area = f64::from(own_width) * f64::from(own_height)
            / (f64::from(smallest_width) * f64::from(smallest.height));
        rungs.push(Rung {
            name: format!("{own_height}p"),
            width: own_width,
            height: own_height,
            video_kbps: scale_kbps(smallest.video_kbps, area).max(1),
            audio_kbps: audio_kbps.unwrap_or(smallest.audio_kbps),
            crf: None,
        });
    }
    Ok(Ladder {
        rungs,
        keyframes: Keyframes::new(segment, fps),
        dropped: dropped.into_iter().map(|r| r.name).collect(),
    })
}

/// The even width of a frame `height` tall with the source's shape.
fn even_width(height: u32, source_width: u32, source_height: u32) -> u32 {
    let exact = f64::from(height) * f64::from(source_width) / f64::from(source_height);
    let even = (exact / 2.0).round() * 2.0;
    if even.is_finite() && even >= 2.0 {
        even.min(f64::from(u32::MAX - 1)) as u32
    } else {
        2
    }
}

fn scale_kbps(kbps: u32, factor: f64) -> u32 {
    let scaled = (f64::from(kbps) * factor).round();
    if scaled.is_finite() && scaled >= 0.0 {
        scaled.min(f64::from(u32::MAX)) as u32
    } else {
        kbps
    }
}

/// Seconds as FFmpeg reads them: `4`, `2.5`, never `4.000000`.
fn seconds_text(seconds: f64) -> String {
    let text = format!("{seconds:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(ladder: &Ladder) -> Vec<(u32, u32)> {
        ladder.rungs.iter().map(|r| (r.width, r.height)).collect()
    }

    fn default_plan(width: u32, height: u32) -> Ladder {
        plan(
            (width, height),
            Some(Fps::whole(30)),
            &Rendition::default_ladder(),
            Duration::from_secs(4),
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_1080p_source_gets_every_rung() {
        let ladder = default_plan(1920, 1080);
        assert_eq!(
            sizes(&ladder),
            [(1920, 1080), (1280, 720), (854, 480), (640, 360)]
        );
        assert!(ladder.dropped.is_empty());
        assert_eq!(ladder.rungs[0].video_kbps, 5000);
        assert_eq!(ladder.rungs[3].audio_kbps, 96);
    }

    #[test]
    fn taller_rungs_are_dropped_never_upscaled() {
        let ladder = default_plan(640, 360);
        assert_eq!(sizes(&ladder), [(640, 360)]);
        assert_eq!(ladder.rungs[0].name, "360p");
        assert_eq!(ladder.dropped, ["1080p", "720p", "480p"]);

        // Between rungs: only the smaller ones.
        let ladder = default_plan(1000, 600);
        assert_eq!(sizes(&ladder), [(800, 480), (600, 360)]);
    }

    #[test]
    fn a_source_smaller_than_every_rung_keeps_its_size() {
        let ladder = default_plan(321, 241);
        assert_eq!(sizes(&ladder), [(320, 240)]);
        assert_eq!(ladder.rungs[0].name, "240p");
        // 360p's 800 kb/s for its 480x360 at this shape, scaled by area:
        // 800 * (320 * 240) / (480 * 360).
        assert_eq!(ladder.rungs[0].video_kbps, 356);
        assert_eq!(ladder.dropped.len(), 4);
    }

    #[test]
    fn widths_are_even_and_keep_the_aspect_ratio() {
        // 4:3, and a portrait phone video.
        assert_eq!(sizes(&default_plan(1440, 1080))[1], (960, 720));
        assert_eq!(sizes(&default_plan(1080, 1920))[0], (608, 1080));
        // Scope (2.39:1): 480 * 1920 / 804 = 1146.3 -> 1146.
        let scope = default_plan(1920, 804);
        assert_eq!(sizes(&scope), [(1720, 720), (1146, 480), (860, 360)]);
        assert!(
            scope
                .rungs
                .iter()
                .all(|r| r.width % 2 == 0 && r.height % 2 == 0)
        );
    }

    #[test]
    fn keyframe_interval_comes_from_the_real_frame_rate() {
        let ntsc = Keyframes::new(Duration::from_secs(4), Some(Fps::new(30000, 1001)));
        assert_eq!(ntsc.interval_frames, Some(120));
        let film = Keyframes::new(Duration::from_secs(6), Some(Fps::new(24000, 1001)));
        assert_eq!(film.interval_frames, Some(144));
        let pal = Keyframes::new(Duration::from_millis(2500), Some(Fps::whole(25)));
        assert_eq!(pal.interval_frames, Some(63));
        assert_eq!(pal.force_expression(), "expr:gte(t,n_forced*2.5)");
        assert_eq!(pal.segment_text(), "2.5");
        let unknown = Keyframes::new(Duration::from_secs(4), None);
        assert_eq!(unknown.interval_frames, None);
        assert_eq!(unknown.force_expression(), "expr:gte(t,n_forced*4)");
    }

    #[test]
    fn audio_override_and_rate_limits() {
        let ladder = plan(
            (1280, 720),
            None,
            &Rendition::default_ladder(),
            Duration::from_secs(4),
            Some(64),
        )
        .unwrap();
        assert!(ladder.rungs.iter().all(|r| r.audio_kbps == 64));
        assert_eq!(ladder.rungs[0].max_kbps(), 3080);
        assert_eq!(ladder.rungs[0].buffer_kbits(), 5600);
    }

    #[test]
    fn requested_order_does_not_matter() {
        let mut rungs = Rendition::default_ladder();
        rungs.reverse();
        let ladder = plan((1920, 1080), None, &rungs, Duration::from_secs(4), None).unwrap();
        let heights: Vec<u32> = ladder.rungs.iter().map(|r| r.height).collect();
        assert_eq!(heights, [1080, 720, 480, 360]);
    }

    #[test]
    fn bad_ladders_are_rejected_with_the_reason() {
        let reason = |rungs: Vec<Rendition>, segment: Duration| match plan(
            (1920, 1080),
            None,
            &rungs,
            segment,
            None,
        ) {
            Err(VideoError::InvalidTask(reason)) => reason,
            other => panic!("expected an invalid task, got {other:?}"),
        };
        let four = Duration::from_secs(4);
        assert!(reason(vec![], four).contains("the ladder has 0 rungs"));
        let r = |name: &str, height| Rendition::new(name, height, 1000, 96);
        assert!(reason(vec![r("../x", 720)], four).contains("A-Z a-z 0-9 _ -"));
        assert!(reason(vec![r("a b", 720)], four).contains("A-Z a-z 0-9 _ -"));
        assert!(reason(vec![r("", 720)], four).contains("A-Z a-z 0-9 _ -"));
        assert!(reason(vec![r("a", 720), r("a", 480)], four).contains("repeated"));
        assert!(reason(vec![r("a", 720), r("b", 720)], four).contains("height 720 is repeated"));
        assert!(reason(vec![r("a", 721)], four).contains("must be even"));
        assert!(reason(vec![r("a", 8)], four).contains("must be even, from 16"));
        assert!(reason(vec![Rendition::new("a", 720, 0, 96)], four).contains("0 kb/s"));
        assert!(reason(vec![r("a", 720)], Duration::from_millis(100)).contains("segment duration"));
        assert!(reason(vec![r("a", 720)], Duration::from_secs(61)).contains("segment duration"));
        let many = (0..11).map(|i| r(&format!("r{i}"), 100 + 2 * i)).collect();
        assert!(reason(many, four).contains("1 to 10 are allowed"));
    }
}

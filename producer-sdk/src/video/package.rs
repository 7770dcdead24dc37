//! `video.package`: an HLS and/or DASH ladder from one input, in one
//! FFmpeg run.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Location;
use spool_broker::{QueueName, Task, TaskOptions};

use super::{Codec, Preset, VmafTarget};

/// Packages `input` into an adaptive-bitrate ladder under `output_dir`
/// (`video.package`, queue `streaming`).
///
/// The worker probes the input, drops the rungs taller than the source
/// (it never upscales; a source smaller than every rung gets one rendition
/// at its own size), then runs FFmpeg once: the decoded video is split and
/// scaled per rung, each rung is encoded once with keyframes every
/// `segment_duration` (computed from the source's real frame rate, so
/// segments cut at the same instants in every rendition), and the encoded
/// streams are muxed into HLS and DASH together. It then checks what was
/// written before it reports success: every playlist and segment present
/// and non-empty, every rendition listed, and segment counts that match
/// the duration.
///
/// The output directory holds `hls/master.m3u8` (one media playlist and
/// its MPEG-TS segments per rendition, named after it; fragmented MP4 for
/// HEVC and AV1) and `dash/manifest.mpd` (one video adaptation set with
/// every rendition, one audio adaptation set). When the source has audio,
/// each rendition carries its own AAC stream at its `audio_kbps`: HLS
/// variants stay self-contained, and DASH lists the audio bitrates as the
/// audio set's representations.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use spool_sdk::Client;
/// use spool_sdk::video::{Package, Rendition};
///
/// # #[cfg(feature = "store")] // the handle reads the job store
/// # async fn demo() -> Result<(), spool_sdk::Error> {
/// let client =
///     Client::connect_with_store("redis://127.0.0.1:6379/", "sqlite://spool.db").await?;
/// let task = Package::new("uploads/cat.mov", "streams/cat")
///     .ladder(vec![Rendition::new("720p", 720, 2800, 128), Rendition::new("360p", 360, 800, 96)])
///     .segment_duration(Duration::from_secs(6));
/// let id = client.enqueue(task).await?;
/// let out = client.task::<Package>(id)?.wait(Duration::from_secs(3600)).await?;
/// println!("{:?} {:?}", out.hls_master, out.dash_mpd);
/// for rendition in &out.renditions {
///     println!("{}: {}x{}, {} segments", rendition.name, rendition.width, rendition.height, rendition.segments);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Package {
    /// The video to package, inside the worker's roots, or an object URL.
    pub input: Location,
    /// The directory to write into, inside the worker's output root;
    /// created if missing. Its `hls/` and `dash/` subdirectories are
    /// replaced when the package succeeds, and left alone when it fails.
    /// Or an object prefix (`s3://bucket/streams/cat/`): segments are
    /// uploaded first and manifests last.
    pub output_dir: Location,
    /// Which formats to write. Default: both.
    #[serde(default)]
    pub formats: Formats,
    /// The rungs, in any order; `None` means [`Rendition::default_ladder`]
    /// (1080p, 720p, 480p, 360p). Names must be unique, 1 to 32 of
    /// `A-Z a-z 0-9 _ -` (they name files), heights even.
    #[serde(default)]
    pub ladder: Option<Vec<Rendition>>,
    /// The target segment duration. Default: 4 s. On the wire it is a
    /// number of seconds (`4`, `2.5`); the worker accepts 0.5 s to 60 s.
    #[serde(default = "default_segment_duration", with = "seconds")]
    pub segment_duration: Duration,
    /// The video codec. [`Codec::H264`] (the default) plays everywhere;
    /// [`Codec::Hevc`] and [`Codec::Av1`] need players that decode them,
    /// and their HLS segments are fragmented MP4. The worker encodes in
    /// software (`libx264`, `libx265`, `libsvtav1`).
    #[serde(default = "default_codec")]
    pub codec: Codec,
    /// Speed against compression. Default: [`Preset::Medium`].
    #[serde(default)]
    pub preset: Preset,
    /// One AAC bitrate in kb/s for every rendition, overriding the rungs'
    /// own `audio_kbps`. Default: `None`, each rung's own.
    #[serde(default)]
    pub audio_kbps: Option<u32>,
}

fn default_segment_duration() -> Duration {
    Package::DEFAULT_SEGMENT_DURATION
}

fn default_codec() -> Codec {
    Codec::H264
}

impl Package {
    /// The default target segment duration: 4 s.
    pub const DEFAULT_SEGMENT_DURATION: Duration = Duration::from_secs(4);

    /// A package of `input` into `output_dir` with the defaults: HLS and
    /// DASH, the default ladder, 4 s segments, H.264 at
    /// [`Preset::Medium`], each rung's own audio bitrate.
    #[must_use]
    pub fn new(input: impl Into<Location>, output_dir: impl Into<Location>) -> Self {
        Self {
            input: input.into(),
            output_dir: output_dir.into(),
            formats: Formats::default(),
            ladder: None,
            segment_duration: Self::DEFAULT_SEGMENT_DURATION,
            codec: Codec::H264,
            preset: Preset::default(),
            audio_kbps: None,
        }
    }

    /// Chooses the formats.
    #[must_use]
    pub fn formats(mut self, formats: Formats) -> Self {
        self.formats = formats;
        self
    }

    /// Replaces the default ladder.
    #[must_use]
    pub fn ladder(mut self, ladder: Vec<Rendition>) -> Self {
        self.ladder = Some(ladder);
        self
    }

    /// Sets the target segment duration.
    #[must_use]
    pub fn segment_duration(mut self, duration: Duration) -> Self {
        self.segment_duration = duration;
        self
    }

    /// Sets the video codec.
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets the preset.
    #[must_use]
    pub fn preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// Uses one audio bitrate for every rendition.
    #[must_use]
    pub fn audio_kbps(mut self, kbps: u32) -> Self {
        self.audio_kbps = Some(kbps);
        self
    }

    /// Checks each rung's CRF (up to the codec's maximum), target (0–100)
    /// and that no rung has both.
    pub(crate) fn check_rung_quality(&self) -> Result<(), String> {
        for rung in self.rungs() {
            let name = &rung.name;
            if let Some(crf) = rung.crf {
                if rung.target_vmaf.is_some() {
                    return Err(format!(
                        "rendition {name} has both a CRF and a target VMAF; give one"
                    ));
                }
                if crf > self.codec.max_crf() {
                    return Err(format!(
                        "rendition {name}: CRF {crf} is above {}, {}'s maximum",
                        self.codec.max_crf(),
                        self.codec
                    ));
                }
            }
            if rung.target_vmaf.is_some_and(|t| t.get() > 100.0) {
                return Err(format!(
                    "rendition {name}: a target VMAF must be from 0 to 100"
                ));
            }
        }
        Ok(())
    }

    /// The rungs asked for: [`ladder`](Self::ladder), or the default one.
    #[must_use]
    pub fn rungs(&self) -> Vec<Rendition> {
        self.ladder
            .clone()
            .unwrap_or_else(Rendition::default_ladder)
    }
}

impl Task for Package {
    const NAME: &'static str = "video.package";
    type Output = PackageOutput;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::STREAMING,
            ..TaskOptions::default()
        }
    }
}

/// Which streaming formats to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Formats {
    /// HLS: a master playlist and one media playlist per rendition.
    pub hls: bool,
    /// DASH: one MPD with every rendition.
    pub dash: bool,
}

impl Formats {
    /// HLS and DASH.
    pub const BOTH: Self = Self {
        hls: true,
        dash: true,
    };
    /// HLS only.
    pub const HLS: Self = Self {
        hls: true,
        dash: false,
    };
    /// DASH only.
    pub const DASH: Self = Self {
        hls: false,
        dash: true,
    };

    /// Whether neither is asked for (the worker rejects that).
    #[must_use]
    pub fn is_empty(self) -> bool {
        !(self.hls || self.dash)
    }
}

impl Default for Formats {
    /// Both.
    fn default() -> Self {
        Self::BOTH
    }
}

/// One rung of the ladder: a height and its bitrates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rendition {
    /// Its name, which names its files and its HLS variant: `720p`.
    pub name: String,
    /// Frame height in pixels (even); the width follows the source's
    /// display aspect ratio, rounded to an even number.
    pub height: u32,
    /// Target video bitrate in kb/s; with H.264 and HEVC the peak is held
    /// to 110 % of it (SVT-AV1 caps peaks only in constant-quality mode).
    pub video_kbps: u32,
    /// AAC bitrate in kb/s, when the source has audio.
    pub audio_kbps: u32,
    /// Encode at this CRF (capped at `video_kbps`, which then bounds the
    /// peak) instead of at `video_kbps`; the achieved VMAF is measured and
    /// reported in [`PackageOutput::quality`]. Default: `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crf: Option<u8>,
    /// Encode at the CRF that reaches this VMAF, picked for the source by
    /// a `video.crf_pick` parent of the package's workflow node (see
    /// [`TargetedLadder`](super::TargetedLadder)); capped at `video_kbps`
    /// like [`crf`](Self::crf). Default: `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_vmaf: Option<VmafTarget>,
}

impl Rendition {
    /// A rung named `name`.
    #[must_use]
    pub fn new(name: impl Into<String>, height: u32, video_kbps: u32, audio_kbps: u32) -> Self {
        Self {
            name: name.into(),
            height,
            video_kbps,
            audio_kbps,
            crf: None,
            target_vmaf: None,
        }
    }

    /// The same rung at a fixed CRF (capped at its `video_kbps`).
    #[must_use]
    pub fn crf(mut self, crf: u8) -> Self {
        self.crf = Some(crf);
        self.target_vmaf = None;
        self
    }

    /// The same rung at the CRF that reaches `vmaf` (0–100, kept to a
    /// hundredth; out of range, the package is refused on validation).
    #[must_use]
    pub fn target_vmaf(mut self, vmaf: f64) -> Self {
        // An impossible target becomes one the validation names.
        self.target_vmaf = Some(VmafTarget::new(vmaf).unwrap_or(VmafTarget::INVALID));
        self.crf = None;
        self
    }

    /// The default ladder, for H.264 at 24–30 fps: 1080p at 5000 kb/s,
    /// 720p at 2800, 480p at 1400, 360p at 800; audio at 128 kb/s for the
    /// two top rungs and 96 kb/s below.
    #[must_use]
    pub fn default_ladder() -> Vec<Self> {
        vec![
            Self::new("1080p", 1080, 5000, 128),
            Self::new("720p", 720, 2800, 128),
            Self::new("480p", 480, 1400, 96),
            Self::new("360p", 360, 800, 96),
        ]
    }
}

/// What `video.package` wrote, as checked after writing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageOutput {
    /// The HLS master playlist, absolute, when HLS was asked for.
    pub hls_master: Option<PathBuf>,
    /// The DASH MPD, absolute, when DASH was asked for.
    pub dash_mpd: Option<PathBuf>,
    /// The renditions written, tallest first.
    pub renditions: Vec<RenditionOutput>,
    /// The target segment duration used (seconds on the wire).
    #[serde(with = "seconds")]
    pub segment_duration: Duration,
    /// The packaged duration: the longest rendition's segments added up
    /// (seconds on the wire).
    #[serde(with = "seconds")]
    pub duration: Duration,
    /// Each rung encoded at a CRF ([`Rendition::crf`] or
    /// [`Rendition::target_vmaf`]), tallest first: its CRF and measured
    /// VMAF. Empty when every rung is encoded at a bitrate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<RungQuality>,
}

/// The quality of one rung encoded at a CRF, measured after the package's
/// encode: the whole rendition against the source scaled to its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungQuality {
    /// The rung's name.
    pub name: String,
    /// The CRF it was encoded at.
    pub crf: u8,
    /// The VMAF it was to reach, for a targeted rung.
    pub target_vmaf: Option<f64>,
    /// The VMAF its samples predicted at `crf`, for a targeted rung.
    pub predicted_vmaf: Option<f64>,
    /// The VMAF measured on the rendition (mean over its frames).
    pub achieved_vmaf: f64,
    /// The rendition's video bitrate, in kb/s (its video stream's bytes
    /// over its duration).
    pub kbps: f64,
    /// The fixed-CRF ladder's CRF the pick was compared with, for a
    /// targeted rung.
    pub fixed_crf: Option<u8>,
    /// The bitrate saved against `fixed_crf`, in percent, as measured on
    /// the samples (the same scenes encoded at both CRFs), for a targeted
    /// rung.
    pub saved_percent: Option<f64>,
}

/// One rendition written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenditionOutput {
    /// The rung's name.
    pub name: String,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Bits per second: the HLS master playlist's measured peak
    /// (`BANDWIDTH`, audio included) when HLS was written, else the DASH
    /// video and audio representations' declared bandwidths added up.
    pub bandwidth: u64,
    /// How many media segments the rendition has.
    pub segments: u32,
}

/// `Duration` as a number of seconds on the wire (`4`, `2.5`), which is
/// how people write segment durations.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds)
            .map_err(|e| D::Error::custom(format!("{seconds} is not a number of seconds: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_wire_form() {
        let task = Package::new("in.mp4", "streams/in");
        assert_eq!(task.formats, Formats::BOTH);
        assert_eq!(task.segment_duration, Duration::from_secs(4));
        assert_eq!(task.codec, Codec::H264);
        let heights: Vec<u32> = task.rungs().iter().map(|r| r.height).collect();
        assert_eq!(heights, [1080, 720, 480, 360]);
        assert_eq!(Package::NAME, "video.package");
        assert_eq!(Package::options().queue, QueueName::STREAMING);

        let task = task
            .formats(Formats::DASH)
            .ladder(vec![Rendition::new("small", 240, 300, 64)])
            .segment_duration(Duration::from_millis(2500))
            .codec(Codec::Hevc)
            .preset(Preset::VeryFast)
            .audio_kbps(96);
        let bytes = spool_broker::encode_payload(&task).expect("encodes");
        let back: Package = spool_broker::decode_payload(&bytes).expect("decodes");
        assert_eq!(back, task);
    }

    #[test]
    fn segment_duration_is_seconds_on_the_wire() {
        #[derive(Serialize)]
        struct Minimal {
            input: &'static str,
            output_dir: &'static str,
            segment_duration: f64,
        }
        let bytes = spool_broker::encode_payload(&Minimal {
            input: "a.mp4",
            output_dir: "out",
            segment_duration: 2.5,
        })
        .expect("encodes");
        let task: Package = spool_broker::decode_payload(&bytes).expect("decodes");
        assert_eq!(task.segment_duration, Duration::from_millis(2500));
        assert_eq!(task.ladder, None);
        assert_eq!(task.formats, Formats::BOTH);

        let negative = spool_broker::encode_payload(&Minimal {
            input: "a.mp4",
            output_dir: "out",
            segment_duration: -1.0,
        })
        .expect("encodes");
        assert!(spool_broker::decode_payload::<Package>(&negative).is_err());
    }

    #[test]
    fn per_rung_quality_is_left_off_the_wire_when_unset() {
        // A worker from before per-rung CRFs, strict about fields, still
        // reads a plain rung; new fields round-trip.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "only decoded")]
        struct OldRendition {
            name: String,
            height: u32,
            video_kbps: u32,
            audio_kbps: u32,
        }
        let plain = Rendition::new("720p", 720, 2800, 128);
        let bytes = spool_broker::encode_payload(&plain).expect("encodes");
        assert!(spool_broker::decode_payload::<OldRendition>(&bytes).is_ok());
        for rung in [plain.clone().crf(28), plain.target_vmaf(93.5)] {
            let bytes = spool_broker::encode_payload(&rung).expect("encodes");
            assert!(spool_broker::decode_payload::<OldRendition>(&bytes).is_err());
            let back: Rendition = spool_broker::decode_payload(&bytes).expect("decodes");
            assert_eq!(back, rung);
        }
        let both = Package::new("in.mp4", "out").ladder(vec![Rendition {
            crf: Some(20),
            ..Rendition::new("x", 360, 800, 96).target_vmaf(90.0)
        }]);
        assert!(both.check_rung_quality().unwrap_err().contains("both"));
        let absurd = Package::new("in.mp4", "out")
            .ladder(vec![Rendition::new("x", 360, 800, 96).target_vmaf(120.0)]);
        assert!(
            absurd
                .check_rung_quality()
                .unwrap_err()
                .contains("from 0 to 100")
        );
    }

    #[test]
    fn output_round_trips() {
        let output = PackageOutput {
            hls_master: Some(PathBuf::from("/srv/out/cat/hls/master.m3u8")),
            dash_mpd: None,
            renditions: vec![RenditionOutput {
                name: "360p".into(),
                width: 640,
                height: 360,
                bandwidth: 942_632,
                segments: 3,
            }],
            segment_duration: Duration::from_secs(4),
            duration: Duration::from_millis(10_010),
            quality: Vec::new(),
        };
        let bytes = spool_broker::encode_payload(&output).expect("encodes");
        let back: PackageOutput = spool_broker::decode_payload(&bytes).expect("decodes");
        assert_eq!(back, output);
        assert!(Formats::default() != Formats::HLS && !Formats::HLS.is_empty());
    }
}

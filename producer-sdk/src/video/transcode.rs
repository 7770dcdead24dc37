//! `video.transcode`: one input re-encoded to H.264, HEVC or AV1.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Location;
use spool_broker::{QueueName, Task, TaskOptions};

/// Re-encodes `input` into `output` with the best encoder the worker has
/// for `codec` (`video.transcode`, queue `default`).
///
/// Paths are relative to the worker's roots (`--input-root`,
/// `--output-root`), or absolute inside them; anything else is rejected.
/// The worker picks NVENC, QSV or VAAPI when its probe found one that
/// really encodes (see [`HardwarePolicy`]), else the software encoder, and
/// checks the output with ffprobe before it reports success.
///
/// # Examples
///
/// ```no_run
/// use spool_sdk::Client;
/// use spool_sdk::video::{Audio, Codec, Preset, RateControl, Size, Transcode};
///
/// # async fn demo() -> Result<(), spool_sdk::Error> {
/// let client = Client::connect("redis://127.0.0.1:6379/").await?;
/// let task = Transcode::new("uploads/cat.mov", "encodes/cat-720p.mp4", Codec::H264)
///     .rate(RateControl::Crf(23))
///     .preset(Preset::Fast)
///     .size(Size::Height(720))
///     .audio(Audio::Aac { kbps: 128 });
/// // Hardware-only encodes belong on the gpu queue.
/// let queue = task.suggested_queue();
/// let id = client.enqueue(task).queue(queue).await?;
/// # let _ = id; Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transcode {
    /// The video to read, inside an input root (or the output root), or an
    /// object URL inside the worker's allowed buckets.
    pub input: Location,
    /// Where to write, inside the output root or at an object URL. Its
    /// extension picks the container: `.mp4`, `.mkv` or `.mov`.
    pub output: Location,
    /// The codec to encode with.
    pub codec: Codec,
    /// Constant quality or a target bitrate.
    #[serde(default)]
    pub rate: RateControl,
    /// Speed against compression, mapped onto each encoder's own presets.
    #[serde(default)]
    pub preset: Preset,
    /// The output frame size; `None` keeps the input's.
    #[serde(default)]
    pub size: Option<Size>,
    /// The output frame rate; `None` keeps the input's.
    #[serde(default)]
    pub fps: Option<Fps>,
    /// What to do with the first audio stream, if there is one.
    #[serde(default)]
    pub audio: Audio,
    /// Whether a hardware encoder may, must or must not be used.
    #[serde(default)]
    pub hardware: HardwarePolicy,
}

impl Transcode {
    /// A transcode with the defaults: CRF 23, [`Preset::Medium`], the
    /// input's size and frame rate, audio re-encoded to AAC 128 kb/s, and
    /// [`HardwarePolicy::Auto`].
    #[must_use]
    pub fn new(input: impl Into<Location>, output: impl Into<Location>, codec: Codec) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            codec,
            rate: RateControl::default(),
            preset: Preset::default(),
            size: None,
            fps: None,
            audio: Audio::default(),
            hardware: HardwarePolicy::default(),
        }
    }

    /// Sets the rate control.
    #[must_use]
    pub fn rate(mut self, rate: RateControl) -> Self {
        self.rate = rate;
        self
    }

    /// Sets the preset.
    #[must_use]
    pub fn preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// Sets the output size.
    #[must_use]
    pub fn size(mut self, size: Size) -> Self {
        self.size = Some(size);
        self
    }

    /// Sets the output frame rate.
    #[must_use]
    pub fn fps(mut self, fps: Fps) -> Self {
        self.fps = Some(fps);
        self
    }

    /// Sets the audio handling.
    #[must_use]
    pub fn audio(mut self, audio: Audio) -> Self {
        self.audio = audio;
        self
    }

    /// Sets the hardware policy.
    #[must_use]
    pub fn hardware(mut self, hardware: HardwarePolicy) -> Self {
        self.hardware = hardware;
        self
    }

    /// The queue this transcode belongs on: `gpu` when it requires a
    /// hardware encoder, else `default` (where `Auto` still uses hardware
    /// if the worker has it). Pass it to the enqueue builder's `queue`.
    #[must_use]
    pub fn suggested_queue(&self) -> QueueName {
        match self.hardware {
            HardwarePolicy::Require => QueueName::GPU,
            HardwarePolicy::Auto | HardwarePolicy::Software => QueueName::DEFAULT,
        }
    }
}

impl Task for Transcode {
    const NAME: &'static str = "video.transcode";
    type Output = TranscodeOutput;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::DEFAULT,
            ..TaskOptions::default()
        }
    }
}

/// A video codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    Hevc,
    /// AV1.
    Av1,
}

impl Codec {
    /// The codec's name as ffprobe reports it: `h264`, `hevc`, `av1`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::Hevc => "hevc",
            Self::Av1 => "av1",
        }
    }

    /// The highest constant-quality value the codec's encoders take: 51
    /// for H.264 and HEVC, 63 for AV1.
    #[must_use]
    pub fn max_crf(self) -> u8 {
        match self {
            Self::H264 | Self::Hevc => 51,
            Self::Av1 => 63,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the encoder spends bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateControl {
    /// Constant quality: lower is better (0 to 51, 63 for AV1). Mapped to
    /// `-crf` in software, `-cq` for NVENC, `-global_quality` for QSV and
    /// `-qp` for VAAPI.
    Crf(u8),
    /// A target average bitrate in kilobits per second.
    Bitrate {
        /// Kilobits per second.
        kbps: u32,
    },
}

impl Default for RateControl {
    /// CRF 23, x264's default.
    fn default() -> Self {
        Self::Crf(23)
    }
}

/// Encoding speed against compression, in x264's words; each encoder
/// gets its closest equivalent (NVENC `p1`–`p7`, SVT-AV1 `12`–`2`).
///
/// On the wire a preset is written `very_fast`; FFmpeg's own spelling
/// (`veryfast`) is read too, so a payload written by hand can use either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Preset {
    /// The fastest, largest output.
    #[serde(alias = "ultrafast")]
    UltraFast,
    /// Very fast.
    #[serde(alias = "superfast")]
    SuperFast,
    /// Fast.
    #[serde(alias = "veryfast")]
    VeryFast,
    /// Faster than the default.
    Faster,
    /// A bit faster than the default.
    Fast,
    /// The encoders' default balance.
    #[default]
    Medium,
    /// Slower, smaller.
    Slow,
    /// Slower still.
    Slower,
    /// The slowest, smallest output.
    #[serde(alias = "veryslow")]
    VerySlow,
}

impl Preset {
    /// Every preset, fastest first.
    pub const ALL: [Self; 9] = [
        Self::UltraFast,
        Self::SuperFast,
        Self::VeryFast,
        Self::Faster,
        Self::Fast,
        Self::Medium,
        Self::Slow,
        Self::Slower,
        Self::VerySlow,
    ];

    /// The x264/x265 name: `ultrafast` … `veryslow`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UltraFast => "ultrafast",
            Self::SuperFast => "superfast",
            Self::VeryFast => "veryfast",
            Self::Faster => "faster",
            Self::Fast => "fast",
            Self::Medium => "medium",
            Self::Slow => "slow",
            Self::Slower => "slower",
            Self::VerySlow => "veryslow",
        }
    }

    /// 0 for the fastest preset, 8 for the slowest.
    #[must_use]
    pub fn rank(self) -> u8 {
        match self {
            Self::UltraFast => 0,
            Self::SuperFast => 1,
            Self::VeryFast => 2,
            Self::Faster => 3,
            Self::Fast => 4,
            Self::Medium => 5,
            Self::Slow => 6,
            Self::Slower => 7,
            Self::VerySlow => 8,
        }
    }
}

/// The output frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// Exactly this size (both even: 4:2:0 video needs it).
    Exact {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// This height; the width follows the input's aspect ratio, rounded to
    /// an even number.
    Height(u32),
    /// This width; the height follows the input's aspect ratio, rounded to
    /// an even number.
    Width(u32),
}

/// A frame rate as a fraction, `30000/1001` for NTSC's 29.97.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fps {
    /// Frames…
    pub num: u32,
    /// …per this many seconds.
    pub den: u32,
}

impl Fps {
    /// `num / den` frames per second.
    #[must_use]
    pub fn new(num: u32, den: u32) -> Self {
        Self { num, den }
    }

    /// A whole number of frames per second.
    #[must_use]
    pub fn whole(fps: u32) -> Self {
        Self { num: fps, den: 1 }
    }

    /// The rate as a float; 0 when `den` is 0.
    #[must_use]
    pub fn as_f64(self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            f64::from(self.num) / f64::from(self.den)
        }
    }
}

impl fmt::Display for Fps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// What to do with the input's first audio stream (nothing happens when
/// it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audio {
    /// Copy it unchanged (the container must accept its codec).
    Copy,
    /// Re-encode it to AAC at this bitrate.
    Aac {
        /// Kilobits per second.
        kbps: u32,
    },
    /// Drop it.
    None,
}

impl Default for Audio {
    /// AAC at 128 kb/s.
    fn default() -> Self {
        Self::Aac { kbps: 128 }
    }
}

/// Whether the encode may use a hardware encoder (NVENC, QSV, VAAPI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HardwarePolicy {
    /// The best encoder that passed the worker's trial encode; if a
    /// hardware encode fails, the software encoder runs instead.
    #[default]
    Auto,
    /// Software only (`libx264`, `libx265`, `libsvtav1`).
    Software,
    /// Hardware only: the task fails when no hardware encoder works.
    /// Enqueue it on the `gpu` queue ([`Transcode::suggested_queue`]).
    Require,
}

/// What a transcode produced, as checked by ffprobe after writing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscodeOutput {
    /// The output file, absolute, as the worker resolved it.
    pub output: String,
    /// The encoder that produced it: `libx264`, `h264_nvenc`…
    pub encoder: String,
    /// The hardware encoder that was tried first and failed, if any.
    pub fell_back_from: Option<String>,
    /// Why that encoder failed, in FFmpeg's words.
    pub fallback_reason: Option<String>,
    /// The codec written.
    pub codec: Codec,
    /// The output's duration.
    pub duration: Duration,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// The output's frame rate, as ffprobe reports it.
    pub fps: Option<Fps>,
    /// The output's size in bytes.
    pub bytes: u64,
    /// Whether the output has an audio stream.
    pub audio: bool,
    /// The encode's speed as a multiple of real time (2.0: twice as fast).
    pub speed: Option<f32>,
    /// Wall-clock time of the encode itself.
    pub encode_time: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_stable() {
        let task = Transcode::new("in.mp4", "out.mp4", Codec::Hevc)
            .rate(RateControl::Bitrate { kbps: 800 })
            .size(Size::Height(720))
            .fps(Fps::new(30000, 1001))
            .audio(Audio::Copy)
            .hardware(HardwarePolicy::Require);
        let bytes = spool_broker::encode_payload(&task).expect("encodes");
        let back: Transcode = spool_broker::decode_payload(&bytes).expect("decodes");
        assert_eq!(back, task);
        assert_eq!(task.suggested_queue(), QueueName::GPU);
        assert_eq!(Transcode::NAME, "video.transcode");
        assert_eq!(Transcode::options().queue, QueueName::DEFAULT);
    }

    #[test]
    fn presets_read_ffmpegs_names_too() {
        for preset in Preset::ALL {
            let ffmpeg = spool_broker::encode_payload(&preset.as_str()).expect("encodes");
            let read: Preset = spool_broker::decode_payload(&ffmpeg).expect("FFmpeg's name");
            assert_eq!(read, preset, "{}", preset.as_str());
            let wire = spool_broker::encode_payload(&preset).expect("encodes");
            let back: Preset = spool_broker::decode_payload(&wire).expect("the wire name");
            assert_eq!(back, preset);
        }
        let wire = spool_broker::encode_payload(&Preset::VeryFast).expect("encodes");
        let name: String = spool_broker::decode_payload(&wire).expect("a string");
        assert_eq!(name, "very_fast", "the wire form stays");
    }

    #[test]
    fn presets_are_ordered() {
        for (rank, preset) in Preset::ALL.iter().enumerate() {
            assert_eq!(usize::from(preset.rank()), rank);
        }
        assert_eq!(Codec::Av1.max_crf(), 63);
        assert!((Fps::new(30000, 1001).as_f64() - 29.97).abs() < 0.01);
    }
}

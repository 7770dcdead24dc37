//! The task types of a chunked encode: `video.split`,
//! `video.encode_chunk` (and its GPU-queue twin), `video.encode_audio` and
//! `video.join`. An app rarely builds them itself: [`Ingest`](super::Ingest)
//! submits a `video.split` node, and the split adds the rest to the
//! workflow as it runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, Task, TaskOptions};

use super::super::{Fps, Transcode};

/// Where a chunked encode may cut the source's video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Boundaries {
    /// At the source's keyframes, read from its packet index: no decode,
    /// and each chunk's seek lands on a keyframe. The default.
    #[default]
    Keyframes,
    /// At scene cuts, where FFmpeg's scene score (0 to 1) is above
    /// `threshold` (0.3 is a common choice): a full decode of the source
    /// at a small size, and cuts where an encoder would place a keyframe
    /// anyway. Too few cuts fall back to the keyframes.
    Scenes {
        /// The scene score a cut needs.
        threshold: f32,
    },
}

/// How a chunked encode cuts the source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChunkPolicy {
    /// The length a chunk aims for: it ends at the first boundary at or
    /// past it. Default: 10 s.
    #[serde(with = "millis")]
    pub target: Duration,
    /// The shortest chunk: a last chunk shorter than this is merged into
    /// the one before. Default: 2 s.
    #[serde(with = "millis")]
    pub min: Duration,
    /// Where cuts may fall. Default: [`Boundaries::Keyframes`].
    #[serde(default)]
    pub boundaries: Boundaries,
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        Self {
            target: Duration::from_secs(10),
            min: Duration::from_secs(2),
            boundaries: Boundaries::Keyframes,
        }
    }
}

impl ChunkPolicy {
    /// Chunks of about `target`, at least `min` long, cut at keyframes.
    #[must_use]
    pub fn new(target: Duration, min: Duration) -> Self {
        Self {
            target,
            min,
            boundaries: Boundaries::Keyframes,
        }
    }

    /// The same policy cutting at `boundaries`.
    #[must_use]
    pub fn boundaries(mut self, boundaries: Boundaries) -> Self {
        self.boundaries = boundaries;
        self
    }

    /// Checks the numbers: a target of at least 0.5 s and at most an
    /// hour, a minimum no longer than the target, a scene threshold in
    /// (0, 1).
    ///
    /// # Errors
    ///
    /// The reason, in words.
    pub fn check(&self) -> Result<(), String> {
        if self.target < Duration::from_millis(500) || self.target > Duration::from_secs(3600) {
            return Err(format!(
                "a chunk target of {:?} is outside 0.5 s to 1 h",
                self.target
            ));
        }
        if self.min > self.target {
            return Err(format!(
                "the minimum chunk ({:?}) is longer than the target ({:?})",
                self.min, self.target
            ));
        }
        if let Boundaries::Scenes { threshold } = self.boundaries
            && !(threshold > 0.0 && threshold < 1.0)
        {
            return Err(format!(
                "a scene threshold of {threshold} is outside (0, 1)"
            ));
        }
        Ok(())
    }
}

/// Durations as whole milliseconds on the wire.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `video.split`: probes the source, plans its chunks and adds to its
/// workflow one `video.encode_chunk` per chunk (longest first), one
/// `video.encode_audio` when there is audio, and the `video.join` that
/// joins them into `encode.output`. A source that cannot be split (no
/// keyframe past the first, a variable frame rate, a single chunk) gets
/// one whole-file `video.transcode` child instead, and the output says
/// why. Queue `default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Split {
    /// The encode: input, final output and settings, as a whole-file
    /// transcode would take them (`fps` must be unset: chunks keep the
    /// source's frames).
    pub encode: Transcode,
    /// How to cut.
    pub policy: ChunkPolicy,
    /// The name of the chunk home the chunks are written to:
    /// `.spool-chunks/<key>` under the worker's output root for a path
    /// output, the key prefix `.spool-chunks/<key>/` beside an object
    /// output (so workers that share no disk meet there). `None`: the
    /// workflow's id, so a retried workflow finds the chunks it already
    /// encoded. 1 to 64 of `a-z 0-9 -`.
    #[serde(default)]
    pub key: Option<String>,
}

impl Split {
    /// A split of `encode` under `policy`.
    #[must_use]
    pub fn new(encode: Transcode, policy: ChunkPolicy) -> Self {
        Self {
            encode,
            policy,
            key: None,
        }
    }

    /// The chunk directory's key.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Checks the encode, the policy and the key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`](crate::Error::InvalidTask) with the reason.
    pub fn validate(&self) -> crate::Result<()> {
        let invalid = |reason: String| crate::Error::InvalidTask {
            task: Self::NAME,
            reason,
        };
        self.encode.validate()?;
        if self.encode.fps.is_some() {
            return Err(invalid(
                "a chunked encode keeps the source's frame rate: leave fps unset".to_owned(),
            ));
        }
        self.policy.check().map_err(invalid)?;
        if let Some(key) = &self.key {
            check_key(key).map_err(invalid)?;
        }
        Ok(())
    }
}

/// Checks a chunk directory's key: 1 to 64 of `a-z 0-9 -`.
///
/// # Errors
///
/// The reason, in words.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "chunk key {key:?} must be 1 to 64 of a-z, 0-9 and -"
        ))
    }
}

impl Task for Split {
    const NAME: &'static str = "video.split";
    type Output = SplitOutput;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::DEFAULT,
            ..TaskOptions::default()
        }
    }
}

/// One chunk: a run of the source's frames in presentation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSpan {
    /// Its place in the output, from 0.
    pub index: u32,
    /// The index of its first frame in the source.
    pub first_frame: u64,
    /// How many frames it has.
    pub frames: u64,
    /// The presentation time of its first frame, in microseconds from the
    /// source's first frame.
    pub start_us: u64,
    /// Its length, in microseconds.
    pub duration_us: u64,
    /// Where an input seek (`-ss`, counted from the container's start
    /// time) lands just before its first frame: half a frame early, in
    /// microseconds.
    pub seek_us: u64,
}

impl ChunkSpan {
    /// The presentation time of its first frame.
    #[must_use]
    pub fn start(&self) -> Duration {
        Duration::from_micros(self.start_us)
    }

    /// Its length.
    #[must_use]
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.duration_us)
    }
}

/// What `video.split` decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitOutput {
    /// The source's video frames.
    pub frames: u64,
    /// The source's video length.
    pub duration: Duration,
    /// Its frame rate, when constant.
    pub fps: Option<Fps>,
    /// The chunks, in output order (empty when falling back).
    pub chunks: Vec<ChunkSpan>,
    /// Whether an audio node was added.
    pub audio: bool,
    /// Why the source is encoded whole instead (a `video.transcode` child
    /// named `encode`), if it is.
    pub fallback: Option<String>,
    /// The key of the chunk directory.
    pub key: String,
    /// How long probing and planning took.
    pub plan_time: Duration,
    /// The CPU time (user + system) of the ffprobe and FFmpeg runs the
    /// split made (packet index, scene scores), counted exactly from each
    /// child's rusage. `None` from workers that did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_cpu: Option<Duration>,
}

/// `video.encode_chunk`: one chunk of the source, encoded with the
/// encode's settings to `chunk-NNNNN.mp4` in the chunk home
/// (`.spool-chunks/<key>/` under the output root, or beside an object
/// output, uploaded then marked by `chunk-NNNNN.mp4.done`). A chunk
/// already there and whole (its frame count checked on disk; its marker
/// and size in a bucket) is reused, not encoded again. An object input is
/// downloaded into the worker's scratch first. Queue `default`; [`EncodeChunkOnGpu`]
/// is the same task on `gpu`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EncodeChunk {
    /// The encode the chunk belongs to (its input and settings).
    pub encode: Transcode,
    /// The chunk directory's key.
    pub key: String,
    /// The frames to encode.
    pub span: ChunkSpan,
}

impl EncodeChunk {
    /// Chunk `span` of `encode`, kept under `key`.
    #[must_use]
    pub fn new(encode: Transcode, key: impl Into<String>, span: ChunkSpan) -> Self {
        Self {
            encode,
            key: key.into(),
            span,
        }
    }
}

impl Task for EncodeChunk {
    const NAME: &'static str = "video.encode_chunk";
    type Output = ChunkOutput;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::DEFAULT,
            ..TaskOptions::default()
        }
    }
}

/// [`EncodeChunk`] routed to the `gpu` queue (an encode that requires
/// hardware).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncodeChunkOnGpu(pub EncodeChunk);

impl Task for EncodeChunkOnGpu {
    const NAME: &'static str = "video.encode_chunk_gpu";
    type Output = ChunkOutput;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::GPU,
            ..TaskOptions::default()
        }
    }
}

/// One chunk encoded (or found whole and reused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkOutput {
    /// The chunk's index.
    pub index: u32,
    /// Its file, relative to the output root, or its object URL.
    pub path: String,
    /// Its frames, as read back.
    pub frames: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// The encoder that wrote it (empty when reused).
    pub encoder: String,
    /// Whether a whole chunk from an earlier run was reused.
    pub reused: bool,
    /// How long the encode took (zero when reused).
    pub encode_time: Duration,
    /// The id of the worker process that ran it.
    pub worker_pid: u32,
    /// The encoding FFmpeg's CPU time (user + system, from its rusage;
    /// zero when reused). `None` from workers that did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encode_cpu: Option<Duration>,
    /// The CPU time of the checks around it (ffprobe reading back the
    /// written or found chunk). `None` from workers that did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_cpu: Option<Duration>,
}

/// `video.encode_audio`: the source's first audio stream, encoded once
/// as the encode asks (AAC or copy) to `audio.mka` in the chunk home.
/// Queue `default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EncodeAudio {
    /// The encode (its input and audio setting).
    pub encode: Transcode,
    /// The chunk directory's key.
    pub key: String,
}

impl EncodeAudio {
    /// The audio of `encode`, kept under `key`.
    #[must_use]
    pub fn new(encode: Transcode, key: impl Into<String>) -> Self {
        Self {
            encode,
            key: key.into(),
        }
    }
}

impl Task for EncodeAudio {
    const NAME: &'static str = "video.encode_audio";
    type Output = AudioOutput;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::DEFAULT,
            ..TaskOptions::default()
        }
    }
}

/// The audio encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioOutput {
    /// Its file, relative to the output root, or its object URL.
    pub path: String,
    /// Its codec.
    pub codec: String,
    /// Its length.
    pub duration: Duration,
    /// Its size in bytes.
    pub bytes: u64,
    /// How long the encode took.
    pub encode_time: Duration,
    /// The encoding FFmpeg's CPU time (user + system, from its rusage).
    /// `None` from workers that did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encode_cpu: Option<Duration>,
    /// The CPU time of the check after it (ffprobe reading it back).
    /// `None` from workers that did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_cpu: Option<Duration>,
}

/// `video.join`: the chunks joined by stream copy (FFmpeg's concat
/// demuxer) with the audio muxed in, validated against the source (frame
/// count, duration, timestamps, a keyframe at each chunk's start, A/V
/// sync), then moved (or uploaded) to `encode.output`; the chunk home is
/// removed after (its objects deleted). A chunk found missing or broken is
/// encoded again here first. Queue
/// `default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// The encode (source, final output, settings for a chunk encoded
    /// again).
    pub encode: Transcode,
    /// The chunk directory's key.
    pub key: String,
    /// The chunks, in output order.
    pub chunks: Vec<ChunkSpan>,
    /// The source's frames.
    pub frames: u64,
    /// Whether there is an audio track to mux.
    pub audio: bool,
}

impl Task for Join {
    const NAME: &'static str = "video.join";
    type Output = JoinOutput;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::DEFAULT,
            ..TaskOptions::default()
        }
    }
}

/// The joined encode, validated and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinOutput {
    /// The output, as written: an absolute path, or the object URL.
    pub output: String,
    /// Its video frames.
    pub frames: u64,
    /// Its length.
    pub duration: Duration,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether it has audio.
    pub audio: bool,
    /// How many chunks were joined.
    pub chunks: u32,
    /// Chunks found broken at the join and encoded again.
    pub reencoded: Vec<u32>,
    /// The largest gap between the audio's and the video's start, in
    /// milliseconds (0 without audio).
    pub av_offset_ms: f64,
    /// How long the concat (stream copy and mux) took.
    pub join_time: Duration,
    /// How long the validation took.
    pub validate_time: Duration,
    /// The CPU time (user + system, from each child's rusage) of the
    /// concat FFmpeg and of reading the encoded audio's index. `None` from
    /// workers that did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_cpu: Option<Duration>,
    /// The CPU time of the validation: the chunks' checks before the
    /// concat and the joined output's and source's indexes read after
    /// (chunks encoded again at the join not counted). `None` from workers
    /// that did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_cpu: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::Codec;

    #[test]
    fn policies_and_keys_are_checked() {
        assert!(ChunkPolicy::default().check().is_ok());
        assert!(
            ChunkPolicy::new(Duration::from_secs(2), Duration::from_secs(3))
                .check()
                .is_err()
        );
        assert!(
            ChunkPolicy::default()
                .boundaries(Boundaries::Scenes { threshold: 1.5 })
                .check()
                .is_err()
        );
        assert!(check_key("0193a7c4-5e1f").is_ok());
        assert!(check_key("../x").is_err());
        assert!(check_key("").is_err());
        let split = Split::new(
            Transcode::new("a.mp4", "b.mp4", Codec::H264).fps(Fps::whole(25)),
            ChunkPolicy::default(),
        );
        assert!(split.validate().is_err(), "fps is refused");
    }

    #[test]
    fn wire_forms_round_trip() {
        let span = ChunkSpan {
            index: 2,
            first_frame: 50,
            frames: 25,
            start_us: 2_000_000,
            duration_us: 1_000_000,
            seek_us: 1_980_000,
        };
        let chunk = EncodeChunkOnGpu(EncodeChunk::new(
            Transcode::new("a.mp4", "b.mp4", Codec::H264),
            "k1",
            span,
        ));
        let bytes = spool_broker::encode_payload(&chunk).expect("encodes");
        let back: EncodeChunkOnGpu = spool_broker::decode_payload(&bytes).expect("decodes");
        assert_eq!(back, chunk);
        let plain: EncodeChunk = spool_broker::decode_payload(&bytes).expect("same payload");
        assert_eq!(plain.span.start(), Duration::from_secs(2));
        let policy = ChunkPolicy::default().boundaries(Boundaries::Scenes { threshold: 0.3 });
        let bytes = spool_broker::encode_payload(&policy).expect("encodes");
        assert_eq!(
            spool_broker::decode_payload::<ChunkPolicy>(&bytes).expect("decodes"),
            policy
        );
    }
}

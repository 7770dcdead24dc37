//! A file's packet index, read with ffprobe without decoding: every video
//! packet's timestamps and keyframe flag, the audio stream's extent, the
//! container's start time. The split plans from it; the join validates
//! with it.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::formats::INPUT_FORMATS;
use crate::spawner::CaptureFailed;
use crate::{Ffprobe, VideoError};

/// How long one index read may take: a long file's index is a few
/// hundred thousand lines.
const INDEX_TIMEOUT: Duration = Duration::from_secs(300);

/// One video frame, in presentation order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Frame {
    /// Presentation time, in seconds.
    pub(crate) pts: f64,
    /// Whether its packet is a keyframe.
    pub(crate) key: bool,
}

/// What the index says about a file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PacketIndex {
    /// Video frames sorted by presentation time.
    pub(crate) frames: Vec<Frame>,
    /// Decode times in file order (`None` where a packet has none).
    pub(crate) dts: Vec<Option<f64>>,
    /// Frame durations as the packets state them.
    pub(crate) durations: Vec<f64>,
    /// The container's start time, in seconds (what `-ss` counts from).
    pub(crate) start_time: f64,
    /// The first audio stream's start and length, in seconds.
    pub(crate) audio: Option<(f64, f64)>,
    /// The video stream's average frame rate, when stated.
    pub(crate) avg_rate: Option<f64>,
    /// The first audio stream's codec.
    pub(crate) audio_codec: Option<String>,
}

impl PacketIndex {
    /// The median frame interval (seconds), from presentation times.
    pub(crate) fn frame_interval(&self) -> Option<f64> {
        let mut deltas: Vec<f64> = self
            .frames
            .windows(2)
            .map(|w| w[1].pts - w[0].pts)
            .collect();
        if deltas.is_empty() {
            return self
                .durations
                .first()
                .copied()
                .filter(|d| *d > 0.0)
                .or_else(|| self.avg_rate.filter(|r| *r > 0.0).map(|r| 1.0 / r));
        }
        deltas.sort_by(f64::total_cmp);
        Some(deltas[deltas.len() / 2])
    }

    /// The video's length: from its first frame to the end of its last.
    pub(crate) fn video_length(&self) -> f64 {
        match (self.frames.first(), self.frames.last()) {
            (Some(first), Some(last)) => {
                last.pts - first.pts + self.frame_interval().unwrap_or(0.0)
            }
            _ => 0.0,
        }
    }

    /// The first frame's presentation time.
    pub(crate) fn first_pts(&self) -> f64 {
        self.frames.first().map_or(0.0, |f| f.pts)
    }
}

#[derive(Debug, Deserialize)]
struct IndexJson {
    #[serde(default)]
    packets: Vec<PacketJson>,
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Debug, Deserialize)]
struct PacketJson {
    codec_type: Option<String>,
    pts_time: Option<String>,
    dts_time: Option<String>,
    duration_time: Option<String>,
    flags: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamJson {
    codec_type: Option<String>,
    codec_name: Option<String>,
    start_time: Option<String>,
    duration: Option<String>,
    avg_frame_rate: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FormatJson {
    start_time: Option<String>,
    duration: Option<String>,
}

fn number(text: Option<&str>) -> Option<f64> {
    text.and_then(|t| t.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// Reads `file`'s index (absolute, inside the roots or a worker-written
/// file; read through the `file` protocol and container demuxers only).
///
/// # Errors
///
/// [`VideoError::Probe`] with ffprobe's words when it cannot read the
/// file; [`VideoError::Missing`] when ffprobe cannot run.
///
/// # Cancel safety
///
/// Dropping the future kills ffprobe.
pub(crate) async fn read(ffprobe: &Ffprobe, file: &Path) -> Result<PacketIndex, VideoError> {
    let mut command = std::process::Command::new(ffprobe.path());
    command
        .args(["-v", "error", "-protocol_whitelist", "file", "-of", "json"])
        .args(["-format_whitelist", INPUT_FORMATS])
        .args([
            "-show_entries",
            "packet=codec_type,pts_time,dts_time,duration_time,flags:\
             stream=codec_type,codec_name,start_time,duration,avg_frame_rate:format=start_time,duration",
        ])
        .arg(file);
    let probe_error = |message: String| VideoError::Probe {
        path: file.to_owned(),
        message,
    };
    // Reaped with its rusage: its CPU time counts to the stage's.
    let captured = crate::spawner::capture(command, INDEX_TIMEOUT)
        .await
        .map_err(|failed| match failed {
            CaptureFailed::Spawn(e) => VideoError::Missing {
                what: "ffprobe",
                detail: format!("cannot run {}: {e}", ffprobe.path().display()),
                hint: crate::FFPROBE_HINT,
            },
            CaptureFailed::TimedOut => {
                probe_error(format!("ffprobe took longer than {INDEX_TIMEOUT:?}"))
            }
            CaptureFailed::Wait(e) => VideoError::io("cannot wait for ffprobe", e),
        })?;
    let (status, out, err) = (captured.status, captured.stdout, captured.stderr);
    // Errors while reading packets (a corrupt file) count even when
    // ffprobe exits 0: a file it cannot read whole is not whole.
    let words: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect();
    if !status.success() {
        return Err(probe_error(if words.is_empty() {
            format!("ffprobe failed ({status})")
        } else {
            words.join("; ")
        }));
    }
    let json: IndexJson = serde_json::from_str(&out)
        .map_err(|e| probe_error(format!("unreadable ffprobe output: {e}")))?;
    let mut index = parse(json);
    if index.frames.is_empty() && !words.is_empty() {
        return Err(probe_error(words.join("; ")));
    }
    index.frames.sort_by(|a, b| a.pts.total_cmp(&b.pts));
    Ok(index)
}

fn parse(json: IndexJson) -> PacketIndex {
    let mut frames = Vec::new();
    let mut dts = Vec::new();
    let mut durations = Vec::new();
    for packet in json.packets {
        if packet.codec_type.as_deref() != Some("video") {
            continue;
        }
        // A packet without a presentation time cannot be placed.
        let Some(pts) = number(packet.pts_time.as_deref()) else {
            continue;
        };
        frames.push(Frame {
            pts,
            key: packet.flags.as_deref().is_some_and(|f| f.starts_with('K')),
        });
        dts.push(number(packet.dts_time.as_deref()));
        durations.push(number(packet.duration_time.as_deref()).unwrap_or(0.0));
    }
    let format_duration = json
        .format
        .as_ref()
        .and_then(|f| number(f.duration.as_deref()));
    let audio_stream = json
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"));
    // Matroska states no stream duration: an audio-only file's is the
    // container's.
    let audio = audio_stream.map(|s| {
        (
            number(s.start_time.as_deref()).unwrap_or(0.0),
            number(s.duration.as_deref())
                .or(format_duration)
                .unwrap_or(0.0),
        )
    });
    let audio_codec = audio_stream.and_then(|s| s.codec_name.clone());
    let avg_rate = json
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video"))
        .and_then(|s| crate::media::parse_rate(s.avg_frame_rate.as_deref()))
        .map(spool_sdk::video::Fps::as_f64)
        .filter(|r| *r > 0.0);
    PacketIndex {
        frames,
        dts,
        durations,
        start_time: json
            .format
            .and_then(|f| number(f.start_time.as_deref()))
            .unwrap_or(0.0),
        audio,
        avg_rate,
        audio_codec,
    }
}

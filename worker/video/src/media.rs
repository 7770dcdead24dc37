//! What a media file holds, read with ffprobe.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use spool_sdk::video::Fps;
use tokio::io::AsyncReadExt;

use super::formats::{INPUT_FORMATS, not_allowed};
use super::{FFPROBE_HINT, VideoError};
use crate::probe::strip_log_context;

/// The longest one ffprobe may take; it reads headers, not frames.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What ffprobe says about a file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MediaInfo {
    /// The container's duration (else the video stream's).
    pub duration: Duration,
    /// The container format (`mov,mp4,m4a,3gp,3g2,mj2`).
    pub format: String,
    /// The first video stream.
    pub video: VideoStream,
    /// The first audio stream's codec, if there is one.
    pub audio_codec: Option<String>,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// A video stream's properties.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VideoStream {
    /// The codec (`h264`, `hevc`, `av1`).
    pub codec: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The average frame rate, when the container knows it.
    pub frame_rate: Option<Fps>,
    /// The pixel format (`yuv420p`).
    pub pix_fmt: Option<String>,
    /// The frame count, when the container records it (MP4 does); no
    /// frames are decoded to count them.
    pub frames: Option<u64>,
}

impl MediaInfo {
    /// Whether there is an audio stream.
    #[must_use]
    pub fn has_audio(&self) -> bool {
        self.audio_codec.is_some()
    }
}

/// Runs ffprobe on files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ffprobe {
    path: PathBuf,
}

impl Ffprobe {
    /// The ffprobe at `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The binary.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Probes `file` (absolute, inside the roots; read through the `file`
    /// protocol only).
    ///
    /// # Errors
    ///
    /// [`VideoError::Missing`] when ffprobe cannot be run,
    /// [`VideoError::Probe`] when it cannot read the file,
    /// [`VideoError::NoVideo`] when the file has no video stream,
    /// [`VideoError::Format`] when its format is not a media container.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills ffprobe.
    pub async fn probe(&self, file: &Path) -> Result<MediaInfo, VideoError> {
        let mut command = tokio::process::Command::new(&self.path);
        command
            .args(["-v", "error", "-protocol_whitelist", "file", "-of", "json"])
            // Media containers only: a playlist's demuxer opens other files.
            .args(["-format_whitelist", INPUT_FORMATS])
            .args(["-show_format", "-show_streams"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // ffprobe dies with this process too, forked from the thread that
        // forks FFmpeg (see `spawner`); a dropped probe's is killed on drop.
        crate::spawner::die_with_parent_tokio(&mut command);
        let mut child = crate::spawner::on_spawner(move || command.spawn(), drop)
            .await?
            .map_err(|e| self.missing(&e))?;
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let read = async {
            let out_read = async {
                if let Some(pipe) = stdout.as_mut() {
                    let _ = pipe.read_to_string(&mut out).await;
                }
            };
            let err_read = async {
                if let Some(pipe) = stderr.as_mut() {
                    let _ = pipe.read_to_string(&mut err).await;
                }
            };
            tokio::join!(out_read, err_read);
            child.wait().await
        };
        let status = tokio::time::timeout(PROBE_TIMEOUT, read)
            .await
            .map_err(|_| VideoError::Probe {
                path: file.to_owned(),
                message: format!("ffprobe took longer than {PROBE_TIMEOUT:?}"),
            })?
            .map_err(|e| VideoError::io("cannot wait for ffprobe", e))?;
        if !status.success() {
            let message = err
                .lines()
                .map(strip_log_context)
                .filter(|l| !l.is_empty())
                .take(3)
                .collect::<Vec<_>>()
                .join("; ");
            if not_allowed(&message) {
                return Err(VideoError::Format {
                    path: file.display().to_string(),
                    format: None,
                });
            }
            return Err(VideoError::Probe {
                path: file.to_owned(),
                message: if message.is_empty() {
                    format!("ffprobe failed ({status})")
                } else {
                    message
                },
            });
        }
        parse_probe(&out, file)
    }

    fn missing(&self, error: &std::io::Error) -> VideoError {
        VideoError::Missing {
            what: "ffprobe",
            detail: format!("cannot run {}: {error}", self.path.display()),
            hint: FFPROBE_HINT,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Debug, Deserialize)]
struct StreamJson {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    pix_fmt: Option<String>,
    nb_frames: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    disposition: Disposition,
}

#[derive(Debug, Default, Deserialize)]
struct Disposition {
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Debug, Deserialize)]
struct FormatJson {
    format_name: Option<String>,
    duration: Option<String>,
    size: Option<String>,
}

/// Reads ffprobe's JSON.
fn parse_probe(json: &str, file: &Path) -> Result<MediaInfo, VideoError> {
    let bad = |message: String| VideoError::Probe {
        path: file.to_owned(),
        message,
    };
    let probe: ProbeJson =
        serde_json::from_str(json).map_err(|e| bad(format!("unreadable ffprobe output: {e}")))?;
    // Cover art is a "video" stream of one picture: skip it.
    let video = probe
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video") && s.disposition.attached_pic == 0)
        .ok_or_else(|| VideoError::NoVideo {
            path: file.to_owned(),
        })?;
    let (Some(width), Some(height)) = (video.width, video.height) else {
        return Err(bad("the video stream has no frame size".to_owned()));
    };
    let audio_codec = probe
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"))
        .map(|s| s.codec_name.clone().unwrap_or_default());
    let format = probe.format.as_ref();
    let duration = format
        .and_then(|f| seconds(f.duration.as_deref()))
        .or_else(|| seconds(video.duration.as_deref()))
        .ok_or_else(|| bad("no duration".to_owned()))?;
    let frame_rate = parse_rate(video.avg_frame_rate.as_deref())
        .or_else(|| parse_rate(video.r_frame_rate.as_deref()));
    Ok(MediaInfo {
        duration,
        format: format
            .and_then(|f| f.format_name.clone())
            .unwrap_or_default(),
        video: VideoStream {
            codec: video.codec_name.clone().unwrap_or_default(),
            width,
            height,
            frame_rate,
            pix_fmt: video.pix_fmt.clone(),
            frames: video.nb_frames.as_deref().and_then(|n| n.parse().ok()),
        },
        audio_codec,
        bytes: format
            .and_then(|f| f.size.as_deref())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    })
}

fn seconds(text: Option<&str>) -> Option<Duration> {
    let value: f64 = text?.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64(value))
}

/// `30000/1001` as an [`Fps`]; `None` for `0/0` or garbage.
#[must_use]
pub fn parse_rate(text: Option<&str>) -> Option<Fps> {
    let (num, den) = text?.split_once('/')?;
    let (num, den): (u32, u32) = (num.trim().parse().ok()?, den.trim().parse().ok()?);
    (num > 0 && den > 0).then_some(Fps { num, den })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
        "streams": [
            {"codec_type": "video", "codec_name": "mjpeg", "width": 64, "height": 64,
             "disposition": {"attached_pic": 1}},
            {"codec_type": "video", "codec_name": "h264", "width": 320, "height": 240,
             "avg_frame_rate": "25/1", "r_frame_rate": "25/1", "pix_fmt": "yuv420p",
             "nb_frames": "50", "duration": "2.000000"},
            {"codec_type": "audio", "codec_name": "aac"}
        ],
        "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "2.023000",
                   "size": "194560"}
    }"#;

    #[test]
    fn probe_json_is_read() {
        let info = parse_probe(SAMPLE, Path::new("/x.mp4")).expect("parses");
        assert_eq!(info.duration, Duration::from_millis(2023));
        assert_eq!(info.video.codec, "h264");
        assert_eq!((info.video.width, info.video.height), (320, 240));
        assert_eq!(info.video.frame_rate, Some(Fps::whole(25)));
        assert_eq!(info.video.frames, Some(50));
        assert_eq!(info.audio_codec.as_deref(), Some("aac"));
        assert_eq!(info.bytes, 194_560);
        assert!(info.has_audio());
    }

    #[test]
    fn no_video_is_an_error() {
        let json = r#"{"streams": [{"codec_type": "audio", "codec_name": "aac"}],
                       "format": {"duration": "1.0"}}"#;
        let e = parse_probe(json, Path::new("/a.m4a")).unwrap_err();
        assert!(e.to_string().contains("no video stream"), "{e}");
        assert!(parse_probe("{", Path::new("/a")).is_err());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate(Some("30000/1001")), Some(Fps::new(30000, 1001)));
        assert_eq!(parse_rate(Some("0/0")), None);
        assert_eq!(parse_rate(None), None);
    }
}

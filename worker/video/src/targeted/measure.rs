//! The achieved quality of a package's CRF rungs, measured after the
//! encode on the staged package: each rendition's video, whole, scored
//! with VMAF against the source scaled to its size, in one FFmpeg run that
//! decodes the source once.
//!
//! A rendition's file is rebuilt from its segments by plain byte
//! concatenation, which both segment formats allow: MPEG-TS segments
//! follow one another as one transport stream, and fragmented MP4
//! segments follow their initialisation segment as one fragmented file.
//! Only the worker's own staged files are read: segment names come from
//! its playlists and must be bare file names.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::analyze::ScratchDir;
use crate::ladder::Ladder;
use crate::manifest::hls;
use crate::progress::{Reporter, StageBand};
use crate::runner::{FfmpegArgs, Input, Output, RunOptions, escape_filter_value};
use crate::scores::parse_vmaf_log;
use crate::{VideoError, VideoTasks};

/// One rendition's measured quality.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MeasuredRung {
    /// The rung's index in the ladder.
    pub index: usize,
    /// Mean VMAF over its frames.
    pub vmaf: f64,
    /// Its video stream's bitrate, in kb/s.
    pub kbps: f64,
}

/// Measures the rungs of `ladder` that have a CRF, from the package
/// written under `package_dir` (its `hls/` when `hls_written`, else its
/// `dash/`), against `source`.
///
/// # Errors
///
/// [`VideoError::Validation`] for a rendition whose segments cannot be
/// found; FFmpeg's and ffprobe's own errors; [`VideoError::Log`] when a
/// rendition was not scored.
///
/// # Cancel safety
///
/// Cancelling `cancel` or dropping the future stops FFmpeg; the scratch
/// directory is removed either way.
pub async fn measure_rungs(
    tasks: &VideoTasks,
    source: &Path,
    package_dir: &Path,
    ladder: &Ladder,
    hls_written: bool,
    reporter: Option<&Reporter>,
    cancel: &CancellationToken,
) -> Result<Vec<MeasuredRung>, VideoError> {
    let staging = package_dir;
    let indices: Vec<usize> = ladder
        .rungs
        .iter()
        .enumerate()
        .filter(|(_, rung)| rung.crf.is_some())
        .map(|(index, _)| index)
        .collect();
    if indices.is_empty() {
        return Ok(Vec::new());
    }
    let scratch = ScratchDir::new(tasks.config().scratch_dir.as_deref(), "measure")?;
    let mut renditions = Vec::with_capacity(indices.len());
    for &index in &indices {
        let rung = &ladder.rungs[index];
        let parts = if hls_written {
            hls_parts(&staging.join("hls"), &rung.name)?
        } else {
            dash_parts(&staging.join("dash"), index)?
        };
        let joined = scratch.file(&format!("rendition-{index}"));
        concatenate(&parts, &joined)?;
        renditions.push(joined);
    }
    let logs: Vec<PathBuf> = indices
        .iter()
        .map(|i| scratch.file(&format!("vmaf-{i}.json")))
        .collect();
    let videos: Vec<PathBuf> = indices
        .iter()
        .map(|i| scratch.file(&format!("video-{i}.mp4")))
        .collect();
    let sizes: Vec<(u32, u32)> = indices
        .iter()
        .map(|&i| (ladder.rungs[i].width, ladder.rungs[i].height))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let args = measure_command(source, &renditions, &sizes, &logs, &videos, threads);
    let options = RunOptions::new(StageBand::VALIDATING.named("measure VMAF"), cancel.clone());
    tasks
        .runner()
        .run(&args, options, |progress| {
            if let Some(reporter) = reporter {
                reporter.run(&progress);
            }
        })
        .await?;

    let ffprobe = tasks.ffprobe()?;
    let mut measured = Vec::with_capacity(indices.len());
    for ((&index, log), video) in indices.iter().zip(&logs).zip(&videos) {
        let text = std::fs::read_to_string(log).map_err(|e| VideoError::Log {
            what: "libvmaf",
            message: format!("{}: {e}", log.display()),
        })?;
        let frames = parse_vmaf_log(&text)?;
        if frames.is_empty() {
            return Err(VideoError::Log {
                what: "libvmaf",
                message: format!("rendition {} scored no frame", ladder.rungs[index].name),
            });
        }
        #[allow(clippy::cast_precision_loss, reason = "frame counts are small")]
        let vmaf = frames.iter().sum::<f64>() / frames.len() as f64;
        let info = ffprobe.probe(video).await?;
        let seconds = info.duration.as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "file sizes well below 2^52")]
        let kbps = if seconds > 0.0 {
            info.bytes as f64 * 8.0 / 1000.0 / seconds
        } else {
            0.0
        };
        measured.push(MeasuredRung { index, vmaf, kbps });
    }
    Ok(measured)
}

/// The files of rendition `name` of an HLS package in `dir`, in order:
/// its initialisation segment (fragmented MP4), then its segments.
fn hls_parts(dir: &Path, name: &str) -> Result<Vec<PathBuf>, VideoError> {
    let playlist = dir.join(format!("{name}.m3u8"));
    let text = std::fs::read_to_string(&playlist)
        .map_err(|e| VideoError::io(format!("cannot read {}", playlist.display()), e))?;
    let media = hls::parse_media(&text).map_err(|e| VideoError::Validation {
        path: playlist.clone(),
        message: e,
    })?;
    let mut uris: Vec<&str> = media.map_uri.iter().map(String::as_str).collect();
    uris.extend(media.segments.iter().map(|s| s.uri.as_str()));
    uris.into_iter()
        .map(|uri| {
            let bare = !uri.is_empty() && !uri.contains(['/', '\\']) && uri != ".." && uri != ".";
            if bare {
                Ok(dir.join(uri))
            } else {
                Err(VideoError::Validation {
                    path: playlist.clone(),
                    message: format!("segment {uri:?} is not a file beside the playlist"),
                })
            }
        })
        .collect()
}

/// The files of the `index`th video representation of a DASH package in
/// `dir`: FFmpeg's `init-stream<i>.m4s`, then `chunk-stream<i>-<n>.m4s` in
/// order.
fn dash_parts(dir: &Path, index: usize) -> Result<Vec<PathBuf>, VideoError> {
    let init = dir.join(format!("init-stream{index}.m4s"));
    let prefix = format!("chunk-stream{index}-");
    let entries = std::fs::read_dir(dir)
        .map_err(|e| VideoError::io(format!("cannot list {}", dir.display()), e))?;
    let mut chunks: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let number = name
                .strip_prefix(&prefix)?
                .strip_suffix(".m4s")?
                .parse()
                .ok()?;
            Some((number, entry.path()))
        })
        .collect();
    chunks.sort();
    if !init.is_file() || chunks.is_empty() {
        return Err(VideoError::Validation {
            path: dir.to_path_buf(),
            message: format!("no segments of video representation {index}"),
        });
    }
    Ok(std::iter::once(init)
        .chain(chunks.into_iter().map(|(_, path)| path))
        .collect())
}

/// Writes `parts` one after the other into `dest`.
fn concatenate(parts: &[PathBuf], dest: &Path) -> Result<(), VideoError> {
    let io = |what: &Path, e| VideoError::io(format!("cannot join {}", what.display()), e);
    let mut out = std::fs::File::create(dest).map_err(|e| io(dest, e))?;
    for part in parts {
        let mut input = std::fs::File::open(part).map_err(|e| io(part, e))?;
        std::io::copy(&mut input, &mut out).map_err(|e| io(part, e))?;
    }
    out.flush().map_err(|e| io(dest, e))
}

/// One run: the source (input 0) decoded once, split and scaled to each
/// rendition's size, scored against each rendition (inputs 1…); each
/// rendition's video also copied out, to weigh it without its audio and
/// segment framing.
fn measure_command(
    source: &Path,
    renditions: &[PathBuf],
    sizes: &[(u32, u32)],
    logs: &[PathBuf],
    videos: &[PathBuf],
    threads: usize,
) -> FfmpegArgs {
    let count = renditions.len();
    let mut args = FfmpegArgs::new().input(Input::file(source));
    for rendition in renditions {
        args = args.input(Input::file(rendition));
    }
    let mut graph = if count == 1 {
        "[0:v:0]null[s0]".to_owned()
    } else {
        let labels: String = (0..count).map(|i| format!("[s{i}]")).collect();
        format!("[0:v:0]split={count}{labels}")
    };
    let mut scores = Output::null();
    for (index, ((width, height), log)) in sizes.iter().zip(logs).enumerate() {
        let input = index + 1;
        graph.push_str(&format!(
            ";[s{index}]scale={width}:{height}:flags=bicubic,setpts=PTS-STARTPTS,format=yuv420p[r{index}]\
             ;[{input}:v:0]setpts=PTS-STARTPTS,format=yuv420p[d{index}]\
             ;[d{index}][r{index}]libvmaf=log_fmt=json:log_path={}:n_threads={threads}:shortest=1[m{index}]",
            escape_filter_value(&log.to_string_lossy())
        ));
        scores = scores.map(format!("[m{index}]"));
    }
    args = args.filter_complex(graph).output(scores);
    for (index, video) in videos.iter().enumerate() {
        args = args.output(
            Output::file(video)
                .map(format!("{}:v:0", index + 1))
                .option("-c", "copy")
                .option("-f", "mp4"),
        );
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlist_segments_must_be_bare_names() {
        let dir = ScratchDir::new(None, "measure-test").unwrap();
        let hls_dir = dir.file("hls");
        std::fs::create_dir_all(&hls_dir).unwrap();
        let playlist = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n\
                        #EXTINF:4.0,\n720p_00000.ts\n#EXTINF:2.0,\n../secret.ts\n#EXT-X-ENDLIST\n";
        std::fs::write(hls_dir.join("720p.m3u8"), playlist).unwrap();
        let error = hls_parts(&hls_dir, "720p").unwrap_err().to_string();
        assert!(error.contains("../secret.ts"), "{error}");
        std::fs::write(
            hls_dir.join("720p.m3u8"),
            playlist.replace("../secret.ts", "720p_00001.ts"),
        )
        .unwrap();
        let parts = hls_parts(&hls_dir, "720p").unwrap();
        assert_eq!(
            parts,
            [hls_dir.join("720p_00000.ts"), hls_dir.join("720p_00001.ts")]
        );
    }

    #[test]
    fn dash_parts_come_in_number_order_after_the_init() {
        let dir = ScratchDir::new(None, "measure-test").unwrap();
        let dash = dir.file("dash");
        std::fs::create_dir_all(&dash).unwrap();
        for name in [
            "init-stream1.m4s",
            "chunk-stream1-00010.m4s",
            "chunk-stream1-00002.m4s",
            "chunk-stream10-00001.m4s",
        ] {
            std::fs::write(dash.join(name), name).unwrap();
        }
        let parts = dash_parts(&dash, 1).unwrap();
        let names: Vec<_> = parts
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "init-stream1.m4s",
                "chunk-stream1-00002.m4s",
                "chunk-stream1-00010.m4s"
            ]
        );
        let joined = dir.file("joined");
        concatenate(&parts, &joined).unwrap();
        assert_eq!(
            std::fs::read_to_string(joined).unwrap(),
            "init-stream1.m4schunk-stream1-00002.m4schunk-stream1-00010.m4s"
        );
        assert!(dash_parts(&dash, 3).is_err());
    }
}

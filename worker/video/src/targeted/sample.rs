//! `video.sample_encode`: a few short scenes of the source encoded at one
//! CRF and one rung's size, each scored with VMAF against the same scene
//! of the source scaled to that size.
//!
//! Two FFmpeg runs whatever the number of scenes:
//!
//! ```text
//!  encode:  -ss s0 -t d -i src … -ss sN -t d -i src
//!           [i:v:0] scale=W:H, format ─► encoder at the CRF ─► scene-i.mp4   (one output per scene)
//!  score:   scene-0.mp4 … scene-N.mp4, -ss s0 -t d -i src … -ss sN -t d -i src
//!           [src i] scale=W:H ─┐
//!           [scene i] ─────────┴─► libvmaf (log per scene) ─► null
//! ```
//!
//! The scenes are MP4: libvmaf pairs frames by timestamp, and Matroska's
//! millisecond timestamps pair 30 fps frames wrongly (VMAF 76 instead of
//! 97 at CRF 18). Both runs seek the source the same way (`-ss` before `-i` decodes from
//! the keyframe before and drops frames up to the point), so the scored
//! pairs are the same frames. Scenes are written to a scratch directory
//! removed however the task ends.
//!
//! The scenes start where the source's own scenes do ([`scene_starts`]):
//! its start and the cuts FFmpeg's scene score finds, read by the same
//! decode a chunked encode's split uses (`chunk::scene_times`), once per
//! worker process and source file; with fewer scene starts than samples,
//! at evenly spread points ([`scene_spans`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use spool_sdk::video::{
    HardwarePolicy, RateControl, Rendition, SampleEncode, SamplePlacement, SampleScore, SceneScore,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::analyze::ScratchDir;
use crate::encoder;
use crate::ladder;
use crate::progress::{Reporter, StageBand};
use crate::runner::{FfmpegArgs, Input, Output, RunOptions, escape_filter_value};
use crate::scores::parse_vmaf_log;
use crate::{LIBVMAF_HINT, VideoError, VideoTasks};

/// Where each scene starts and how long it lasts, in seconds: the middle
/// of each of `count` equal parts of a `duration`-long source, `length`
/// long, kept inside the source; the whole source once when it is shorter
/// than all the scenes together.
///
/// # Examples
///
/// ```
/// use spool_video::targeted::scene_spans;
///
/// assert_eq!(scene_spans(30.0, 3, 2.0), [(4.0, 2.0), (14.0, 2.0), (24.0, 2.0)]);
/// assert_eq!(scene_spans(4.0, 3, 2.0), [(0.0, 4.0)]);
/// ```
#[must_use]
pub fn scene_spans(duration: f64, count: u8, length: f64) -> Vec<(f64, f64)> {
    let count = count.max(1);
    if !(duration.is_finite() && duration > 0.0) {
        return vec![(0.0, length)];
    }
    if f64::from(count) * length >= duration {
        return vec![(0.0, duration)];
    }
    (0..count)
        .map(|i| {
            let middle = (f64::from(i) + 0.5) * duration / f64::from(count);
            let start = (middle - length / 2.0).clamp(0.0, duration - length);
            (start, length)
        })
        .collect()
}

/// Where each scene starts and how long it lasts, in seconds, when they
/// start at the source's scene starts: `count` of `starts` (the source's
/// first frame and its scene cuts, in seconds), each with `length` of
/// source after it and not overlapping the one before, picked evenly over
/// them. `None` when fewer than `count` such starts exist (then
/// [`scene_spans`] spreads them evenly), or when the source is shorter
/// than all the scenes together (then it is sampled whole).
///
/// # Examples
///
/// ```
/// use spool_video::targeted::scene_starts;
///
/// let starts = [0.0, 2.5, 4.0, 7.0, 9.5, 11.0];
/// assert_eq!(
///     scene_starts(12.0, &starts, 3, 1.0),
///     Some(vec![(2.5, 1.0), (7.0, 1.0), (11.0, 1.0)])
/// );
/// assert_eq!(scene_starts(12.0, &[0.0, 6.0], 3, 1.0), None);
/// ```
#[must_use]
pub fn scene_starts(
    duration: f64,
    starts: &[f64],
    count: u8,
    length: f64,
) -> Option<Vec<(f64, f64)>> {
    let count = usize::from(count.max(1));
    if !(duration.is_finite() && duration > 0.0) || count as f64 * length >= duration {
        return None;
    }
    let mut sorted: Vec<f64> = starts
        .iter()
        .copied()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .collect();
    sorted.sort_by(f64::total_cmp);
    // Each with a whole scene of source after it, none overlapping.
    let mut room: Vec<f64> = Vec::with_capacity(sorted.len());
    for start in sorted {
        if start + length <= duration && room.last().is_none_or(|last| start >= last + length) {
            room.push(start);
        }
    }
    if room.len() < count {
        return None;
    }
    // Evenly over the candidates: the middle one of each of `count` equal
    // parts of the list.
    Some(
        (0..count)
            .map(|i| {
                let at = (2 * i + 1) * room.len() / (2 * count);
                (room[at.min(room.len() - 1)], length)
            })
            .collect(),
    )
}

/// The scene cuts of sources already read, by file, length, modification
/// time and threshold: every sample task of a ladder samples the same
/// source, and one decode per worker process serves them all.
type CutCache = HashMap<(PathBuf, u64, Option<SystemTime>, u8), Vec<f64>>;

fn cut_cache() -> &'static Mutex<CutCache> {
    static CACHE: OnceLock<Mutex<CutCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The source's scene starts: 0 and each cut where the scene score passes
/// `threshold_percent` / 100, from the split's own scene detection.
async fn source_scene_starts(
    tasks: &VideoTasks,
    source: &Path,
    threshold_percent: u8,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Result<Vec<f64>, VideoError> {
    let meta = std::fs::metadata(source)
        .map_err(|e| VideoError::io(format!("cannot read {}", source.display()), e))?;
    let key = (
        source.to_owned(),
        meta.len(),
        meta.modified().ok(),
        threshold_percent,
    );
    if let Some(cuts) = cut_cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(cuts);
    }
    let threshold = f32::from(threshold_percent) / 100.0;
    let mut starts = crate::chunk::scene_times(tasks, source, scratch, threshold, cancel).await?;
    starts.push(0.0);
    starts.sort_by(f64::total_cmp);
    starts.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    if let Ok(mut cache) = cut_cache().lock() {
        // Bounded: a long-lived worker samples many sources.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, starts.clone());
    }
    Ok(starts)
}

/// A sample's frame size: the rung's, planned like the package plans it
/// (never taller than the source, even sides, the source's shape).
fn sample_size(task: &SampleEncode, source: (u32, u32)) -> Result<(u32, u32), VideoError> {
    let rung = Rendition::new(task.rung.clone(), task.height, 1, 96);
    let plan = ladder::plan(source, None, &[rung], Duration::from_secs(4), None)?;
    plan.rungs
        .first()
        .map(|r| (r.width, r.height))
        .ok_or_else(|| VideoError::InvalidTask("the sample's rung was not planned".to_owned()))
}

/// Encodes and scores the scenes of `source` (a local file) for `task`.
///
/// # Errors
///
/// [`VideoError::Missing`] without libvmaf or the codec's encoder;
/// FFmpeg's and ffprobe's own errors; [`VideoError::Log`] when a scene
/// was not scored.
///
/// # Cancel safety
///
/// Cancelling `cancel` or dropping the future stops FFmpeg; the scratch
/// directory is removed either way.
pub async fn sample_file(
    tasks: &VideoTasks,
    task: &SampleEncode,
    source: &Path,
    reporter: Option<&Reporter>,
    cancel: &CancellationToken,
) -> Result<SampleScore, VideoError> {
    if !tasks.report().libvmaf {
        return Err(VideoError::Missing {
            what: "libvmaf",
            detail: format!(
                "quality-targeted ladders score samples with VMAF, and {} has no libvmaf filter",
                tasks.ffmpeg().display()
            ),
            hint: LIBVMAF_HINT,
        });
    }
    let media = tasks.ffprobe()?.probe(source).await?;
    let (width, height) = sample_size(task, (media.video.width, media.video.height))?;
    let scratch = ScratchDir::new(tasks.config().scratch_dir.as_deref(), "sample")?;
    let (duration, length) = (
        media.duration.as_secs_f64(),
        task.sample_duration.as_secs_f64(),
    );
    let at_cuts = match task.placement {
        SamplePlacement::SceneCuts { threshold_percent }
            if f64::from(task.samples) * length < duration =>
        {
            let starts =
                source_scene_starts(tasks, source, threshold_percent, scratch.path(), cancel)
                    .await?;
            scene_starts(duration, &starts, task.samples, length)
        }
        _ => None,
    };
    let at_scene_cuts = at_cuts.is_some();
    let spans = at_cuts.unwrap_or_else(|| scene_spans(duration, task.samples, length));
    let scenes: Vec<PathBuf> = (0..spans.len())
        .map(|i| scratch.file(&format!("scene-{i}.mp4")))
        .collect();
    let logs: Vec<PathBuf> = (0..spans.len())
        .map(|i| scratch.file(&format!("vmaf-{i}.json")))
        .collect();
    let sampled: f64 = spans.iter().map(|(_, length)| length).sum();
    let [encode_band, score_band] =
        StageBand::PROCESSING.split(["encode samples", "score samples"]);
    let report = |progress: crate::RunProgress| {
        if let Some(reporter) = reporter {
            reporter.run(&progress);
        }
    };

    let encode = encode_command(tasks, task, source, &spans, (width, height), &scenes)?;
    let options =
        RunOptions::new(encode_band, cancel.clone()).duration(Duration::from_secs_f64(sampled));
    tasks.runner().run(&encode, options, report).await?;

    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let score = score_command(
        task,
        source,
        &spans,
        (width, height),
        &scenes,
        &logs,
        threads,
    );
    let options =
        RunOptions::new(score_band, cancel.clone()).duration(Duration::from_secs_f64(sampled));
    tasks.runner().run(&score, options, report).await?;

    let mut out = Vec::with_capacity(spans.len());
    let (mut frames_total, mut vmaf_total, mut bits_total) = (0_usize, 0.0, 0.0);
    for ((&(start, seconds), scene), log) in spans.iter().zip(&scenes).zip(&logs) {
        let text = std::fs::read_to_string(log).map_err(|e| VideoError::Log {
            what: "libvmaf",
            message: format!("{}: {e}", log.display()),
        })?;
        let frames = parse_vmaf_log(&text)?;
        if frames.is_empty() {
            return Err(VideoError::Log {
                what: "libvmaf",
                message: format!("the scene at {start:.2} s scored no frame"),
            });
        }
        let bytes = std::fs::metadata(scene)
            .map_err(|e| VideoError::io(format!("cannot read {}", scene.display()), e))?
            .len();
        #[allow(clippy::cast_precision_loss, reason = "file sizes well below 2^52")]
        let bits = bytes as f64 * 8.0;
        #[allow(clippy::cast_precision_loss, reason = "frame counts are small")]
        let mean = frames.iter().sum::<f64>() / frames.len() as f64;
        frames_total += frames.len();
        vmaf_total += frames.iter().sum::<f64>();
        bits_total += bits;
        out.push(SceneScore {
            start,
            seconds,
            frames: u32::try_from(frames.len()).unwrap_or(u32::MAX),
            vmaf: mean,
            kbps: bits / 1000.0 / seconds,
        });
    }
    #[allow(clippy::cast_precision_loss, reason = "frame counts are small")]
    let vmaf = vmaf_total / frames_total.max(1) as f64;
    let score = SampleScore {
        rung: task.rung.clone(),
        crf: task.crf,
        width,
        height,
        vmaf,
        kbps: bits_total / 1000.0 / sampled,
        scenes: out,
        at_scene_cuts,
    };
    info!(
        rung = %score.rung,
        crf = score.crf,
        vmaf = score.vmaf,
        kbps = score.kbps,
        scenes = score.scenes.len(),
        at_scene_cuts,
        "sampled"
    );
    Ok(score)
}

/// The source's scene `span` as an input.
fn scene_input(source: &Path, (start, length): (f64, f64)) -> Input {
    Input::file(source)
        .option("-ss", format!("{start:.3}"))
        .option("-t", format!("{length:.3}"))
}

/// One run writing every scene encoded at the task's CRF.
fn encode_command(
    tasks: &VideoTasks,
    task: &SampleEncode,
    source: &Path,
    spans: &[(f64, f64)],
    (width, height): (u32, u32),
    scenes: &[PathBuf],
) -> Result<FfmpegArgs, VideoError> {
    // The package encodes in software: so do its samples.
    let encoder = encoder::plan(task.codec, HardwarePolicy::Software, &tasks.encoders())?
        .into_iter()
        .next()
        .ok_or_else(|| VideoError::InvalidTask(format!("no {} encoder", task.codec)))?;
    let setup = encoder::setup(&encoder, RateControl::Crf(task.crf), task.preset)?;
    let mut args = FfmpegArgs::new();
    for (name, value) in &setup.global {
        args = args.global(name, value);
    }
    let mut graph = Vec::with_capacity(spans.len());
    for (index, span) in spans.iter().enumerate() {
        args = args.input(scene_input(source, *span));
        graph.push(format!(
            "[{index}:v:0]scale={width}:{height}:flags=bicubic,{}[v{index}]",
            setup.pixel_filter
        ));
    }
    args = args.filter_complex(graph.join(";"));
    for (index, scene) in scenes.iter().enumerate() {
        let mut output = Output::file(scene).map(format!("[v{index}]"));
        for (name, value) in &setup.options {
            output = output.option(name, value);
        }
        args = args.output(output.flag("-an").option("-f", "mp4"));
    }
    Ok(args)
}

/// One run scoring every scene against the source's, scaled alike.
fn score_command(
    task: &SampleEncode,
    source: &Path,
    spans: &[(f64, f64)],
    (width, height): (u32, u32),
    scenes: &[PathBuf],
    logs: &[PathBuf],
    threads: usize,
) -> FfmpegArgs {
    let mut args = FfmpegArgs::new();
    for scene in scenes {
        args = args.input(Input::file(scene));
    }
    for span in spans {
        args = args.input(scene_input(source, *span));
    }
    let count = scenes.len();
    let mut graph = Vec::with_capacity(count * 3);
    let mut output = Output::null();
    for (index, log) in logs.iter().enumerate() {
        let reference = count + index;
        graph.push(format!(
            "[{reference}:v:0]scale={width}:{height}:flags=bicubic,setpts=PTS-STARTPTS,format=yuv420p[r{index}]"
        ));
        graph.push(format!(
            "[{index}:v:0]setpts=PTS-STARTPTS,format=yuv420p[d{index}]"
        ));
        graph.push(format!(
            "[d{index}][r{index}]libvmaf=model=version={}:log_fmt=json:log_path={}:n_threads={threads}:shortest=1[m{index}]",
            task.vmaf_model.as_str(),
            escape_filter_value(&log.to_string_lossy())
        ));
        output = output.map(format!("[m{index}]"));
    }
    args.filter_complex(graph.join(";")).output(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_spread_over_the_source_and_stay_inside_it() {
        assert_eq!(scene_spans(10.0, 2, 2.0), [(1.5, 2.0), (6.5, 2.0)]);
        assert_eq!(scene_spans(6.0, 3, 2.0), [(0.0, 6.0)]);
        for (start, length) in scene_spans(7.0, 3, 2.0) {
            assert!(start >= 0.0 && start + length <= 7.0);
        }
        assert_eq!(scene_spans(f64::NAN, 3, 2.0), [(0.0, 2.0)]);
    }

    #[test]
    fn the_score_pairs_each_scene_with_its_own_reference() {
        let task = SampleEncode::new("in.mp4", "360p", 360, 30);
        let args = score_command(
            &task,
            Path::new("/in/src.mp4"),
            &[(1.0, 2.0), (5.0, 2.0)],
            (640, 360),
            &[
                PathBuf::from("/s/scene-0.mp4"),
                PathBuf::from("/s/scene-1.mp4"),
            ],
            &[
                PathBuf::from("/s/vmaf-0.json"),
                PathBuf::from("/s/vmaf-1.json"),
            ],
            2,
        );
        let text: Vec<String> = args
            .to_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let graph = text.iter().find(|a| a.contains("libvmaf")).unwrap();
        assert!(graph.contains("[2:v:0]scale=640:360"), "{graph}");
        assert!(graph.contains("[3:v:0]scale=640:360"), "{graph}");
        assert!(graph.contains(
            "[d1][r1]libvmaf=model=version=vmaf_v0.6.1:log_fmt=json:log_path=/s/vmaf-1.json"
        ));
        assert_eq!(text.iter().filter(|a| *a == "-ss").count(), 2);
    }
}

//! `video.transcode`: probe, encode (with fallback), validate.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spool_sdk::video::{Audio, Fps, Size, Transcode, TranscodeOutput};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::encoder::{self, Encoder};
use super::media::MediaInfo;
use super::progress::{Reporter, StageBand};
use super::publish::TempOutput;
use super::runner::{FfmpegArgs, Input, Output, RunOptions, RunSummary};
use super::storage::{Place, Scratch, extension_of};
use super::{VideoError, VideoTasks};
use spool_worker::{Handler, TaskContext, TaskError};

/// Runs `video.transcode`. Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone)]
pub struct TranscodeHandler {
    tasks: VideoTasks,
}

impl TranscodeHandler {
    /// A handler sharing `tasks`' FFmpeg, ffprobe and roots.
    #[must_use]
    pub fn new(tasks: &VideoTasks) -> Self {
        Self {
            tasks: tasks.clone(),
        }
    }
}

impl Handler<Transcode> for TranscodeHandler {
    async fn call(&self, task: Transcode, ctx: TaskContext) -> Result<TranscodeOutput, TaskError> {
        transcode(&self.tasks, &task, &ctx)
            .await
            .map_err(VideoError::into_task_error)
    }
}

/// The containers a transcode may write, by extension, and their muxers.
fn container(output: &Path) -> Result<&'static str, VideoError> {
    let extension = output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("mp4" | "m4v") => Ok("mp4"),
        Some("mkv") => Ok("matroska"),
        Some("mov") => Ok("mov"),
        other => Err(VideoError::InvalidTask(format!(
            "the output's extension {:?} names no supported container (mp4, m4v, mkv, mov)",
            other.unwrap_or("")
        ))),
    }
}

/// Checks the task's numbers before anything runs.
fn check(task: &Transcode) -> Result<(), VideoError> {
    let even = |n: u32| n > 0 && n.is_multiple_of(2);
    let bad = |m: String| Err(VideoError::InvalidTask(m));
    match task.size {
        Some(Size::Exact { width, height }) if !(even(width) && even(height)) => {
            return bad(format!(
                "size {width}x{height}: both sides must be even and non-zero"
            ));
        }
        Some(Size::Height(0) | Size::Width(0)) => return bad("a zero size".to_owned()),
        Some(Size::Exact { width, height }) if width > 16384 || height > 16384 => {
            return bad(format!("size {width}x{height} is above 16384"));
        }
        _ => {}
    }
    if let Some(fps) = task.fps
        && (fps.num == 0 || fps.den == 0 || fps.as_f64() > 1000.0)
    {
        return bad(format!("frame rate {fps} is not between 0 and 1000"));
    }
    if let Audio::Aac { kbps } = task.audio
        && !(8..=1024).contains(&kbps)
    {
        return bad(format!("AAC at {kbps} kb/s is outside 8–1024"));
    }
    Ok(())
}

/// The frame size the output will have, as FFmpeg's `scale` computes it
/// (`-2`: the other side from the aspect ratio, rounded to an even number).
#[must_use]
pub(crate) fn output_size(size: Option<Size>, width: u32, height: u32) -> (u32, u32) {
    let scaled = |target: u32, along: u32, across: u32| -> u32 {
        // round(target × across / (along × 2)) × 2, FFmpeg's av_rescale.
        let num = u64::from(target) * u64::from(across);
        let den = u64::from(along.max(1)) * 2;
        u32::try_from((num + den / 2) / den * 2).unwrap_or(u32::MAX)
    };
    match size {
        Some(Size::Exact { width, height }) => (width, height),
        Some(Size::Height(h)) => (scaled(h, height, width), h),
        Some(Size::Width(w)) => (w, scaled(w, width, height)),
        // Keep the size, made even: 4:2:0 needs it.
        None => (width & !1, height & !1),
    }
}

/// FFmpeg's `scale` arguments for `size`: `-2` derives a side from the
/// input's aspect ratio, rounded to an even number, as [`output_size`]
/// computes it; with no size the input's is kept, made even.
fn scale_arguments(size: Option<Size>) -> String {
    match size {
        Some(Size::Exact { width, height }) => format!("{width}:{height}"),
        Some(Size::Height(height)) => format!("-2:{height}"),
        Some(Size::Width(width)) => format!("{width}:-2"),
        None => "trunc(iw/2)*2:trunc(ih/2)*2".to_owned(),
    }
}

/// The video filter chain: scale, frame rate, pixel format.
pub(crate) fn video_filter(size: Option<Size>, fps: Option<Fps>, pixel_filter: &str) -> String {
    let mut chain = format!("[0:v:0]scale={}:flags=bicubic", scale_arguments(size));
    if let Some(fps) = fps {
        chain.push_str(&format!(",fps={}/{}", fps.num, fps.den));
    }
    chain.push(',');
    chain.push_str(pixel_filter);
    chain.push_str("[v]");
    chain
}

/// The FFmpeg command for one encode attempt. It needs nothing from the
/// input's probe (sizes are derived by `scale`, the audio map is
/// optional), so FFmpeg can start while ffprobe reads the input.
fn encode_args(
    task: &Transcode,
    encoder: &Encoder,
    input: &Path,
    output: &Path,
    muxer: &'static str,
) -> Result<FfmpegArgs, VideoError> {
    let setup = encoder::setup(encoder, task.rate, task.preset)?;
    let mut args = FfmpegArgs::new();
    for (name, value) in &setup.global {
        args = args.global(name, value);
    }
    let mut out = Output::file(output).map("[v]");
    for (name, value) in &setup.options {
        out = out.option(name, value);
    }
    // `?`: an input without audio gives an output without audio.
    out = match task.audio {
        Audio::None => out.flag("-an"),
        Audio::Copy => out.map("0:a:0?").option("-c:a", "copy"),
        Audio::Aac { kbps } => out
            .map("0:a:0?")
            .option("-c:a", "aac")
            .option("-b:a", format!("{kbps}k")),
    };
    // Named, not guessed from the extension: a run writes a temporary file.
    let out = out.option("-f", muxer);
    Ok(args
        .input(Input::file(input))
        .filter_complex(video_filter(task.size, task.fps, setup.pixel_filter))
        .output(out))
}

impl TranscodeHandler {
    /// The FFmpeg arguments (after the program name) of the first encode
    /// `task` would run here: for benchmarks that run the same command
    /// without Spool, and for debugging. Creates the output's directory,
    /// like the task.
    ///
    /// # Errors
    ///
    /// As the task: [`VideoError::InvalidTask`], [`VideoError::Path`],
    /// [`VideoError::Missing`]…
    pub fn command_line(&self, task: &Transcode) -> Result<Vec<OsString>, VideoError> {
        let roots = self.tasks.roots();
        if task.input.is_url() || task.output.is_url() {
            return Err(VideoError::InvalidTask(
                "a command line is only shown for local paths, not object URLs".to_owned(),
            ));
        }
        check_task(task)?;
        let prepared = prepare(
            &self.tasks,
            task,
            roots.input(&task.input)?,
            roots.output(&task.output)?,
        )?;
        let encoder = prepared
            .plan
            .first()
            .ok_or_else(|| VideoError::InvalidTask("no encoder to run".to_owned()))?;
        let args = encode_args(
            task,
            encoder,
            &prepared.input,
            &prepared.output,
            prepared.muxer,
        )?;
        Ok(self.tasks.runner().command_line(&args))
    }
}

/// What an encode needs, checked and resolved.
struct Prepared {
    input: PathBuf,
    output: PathBuf,
    /// The output's muxer, from its extension.
    muxer: &'static str,
    plan: Vec<Encoder>,
}

/// Checks the task's values and its output's container, before any path
/// is resolved or anything is transferred.
fn check_task(task: &Transcode) -> Result<(), VideoError> {
    // The SDK checked it on enqueue; anything else may have enqueued it.
    task.validate().map_err(VideoError::from_validation)?;
    check(task)?;
    container(Path::new(task.output.as_str()))?;
    Ok(())
}

/// Takes the resolved paths (local, or in scratch for objects) and picks
/// the encoders.
fn prepare(
    tasks: &VideoTasks,
    task: &Transcode,
    input: PathBuf,
    output: PathBuf,
) -> Result<Prepared, VideoError> {
    let muxer = container(&output)?;
    if input == output {
        return Err(VideoError::InvalidTask(
            "the output would overwrite the input".to_owned(),
        ));
    }
    let plan = encoder::plan(task.codec, task.hardware, &tasks.encoders())?;
    Ok(Prepared {
        input,
        output,
        muxer,
        plan,
    })
}

/// What the encode loop produced.
struct Encoded {
    encoder: Encoder,
    summary: RunSummary,
    /// The hardware encoder that failed first, and FFmpeg's words.
    fallback: Option<(String, String)>,
}

/// Runs the plan's encoders in turn until one succeeds; a failed hardware
/// encode falls back to the next.
async fn encode(
    tasks: &VideoTasks,
    task: &Transcode,
    prepared: &Prepared,
    output: &Path,
    cancel: &CancellationToken,
    reporter: &Reporter,
) -> Result<Encoded, VideoError> {
    let Prepared {
        input, muxer, plan, ..
    } = prepared;
    let mut fallback: Option<(String, String)> = None;
    for (attempt, encoder) in plan.iter().enumerate() {
        let args = encode_args(task, encoder, input, output, muxer)?;
        // The duration comes from FFmpeg's own reading of the input.
        let options = RunOptions::new(
            StageBand::PROCESSING.named(format!("encode {encoder}")),
            cancel.clone(),
        )
        .clean(output);
        let ran = tasks
            .runner()
            .run(&args, options, |progress| reporter.run(&progress))
            .await;
        match ran {
            Ok(summary) => {
                return Ok(Encoded {
                    encoder: encoder.clone(),
                    summary,
                    fallback,
                });
            }
            Err(VideoError::Ffmpeg { message, .. })
                if encoder.kind.is_hardware() && attempt + 1 < plan.len() =>
            {
                warn!(
                    encoder = %encoder,
                    next = %plan[attempt + 1],
                    error = %message,
                    "the hardware encode failed; falling back"
                );
                if fallback.is_none() {
                    fallback = Some((encoder.name.clone(), message));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(VideoError::InvalidTask("no encoder to run".to_owned()))
}

/// Checks, places the input and output (allow-list first), then runs in a
/// scratch directory when either is an object; the scratch directory is
/// removed however the run ends.
async fn transcode(
    tasks: &VideoTasks,
    task: &Transcode,
    ctx: &TaskContext,
) -> Result<TranscodeOutput, VideoError> {
    let reporter = Reporter::new(ctx);
    reporter.stage(&StageBand::PROBING);
    check_task(task)?;
    let (storage, roots) = (tasks.storage(), tasks.roots());
    // Both are checked, the allow-list included, before any transfer.
    let input = storage.place(&task.input, |p| roots.input(p))?;
    let output = storage.place(&task.output, |p| roots.output(p))?;
    if input == output {
        return Err(VideoError::InvalidTask(
            "the output would overwrite the input".to_owned(),
        ));
    }
    let scratch = match (&input, &output) {
        (Place::Local(_), Place::Local(_)) => None,
        _ => Some(storage.scratch(tasks.config().scratch_dir.as_deref(), "transcode")?),
    };
    let result = transcode_places(
        tasks,
        task,
        ctx,
        &reporter,
        &input,
        &output,
        scratch.as_ref(),
    )
    .await;
    if let Some(scratch) = scratch {
        scratch.cleanup().await;
    }
    result
}

/// Downloads an object input, encodes, validates, uploads an object
/// output.
async fn transcode_places(
    tasks: &VideoTasks,
    task: &Transcode,
    ctx: &TaskContext,
    reporter: &Reporter,
    input: &Place,
    output: &Place,
    scratch: Option<&Scratch>,
) -> Result<TranscodeOutput, VideoError> {
    let storage = tasks.storage();
    let in_scratch = || scratch.ok_or(VideoError::Cancelled);
    let input_path = match input {
        Place::Local(path) => path.clone(),
        Place::Object(url) => {
            storage
                .fetch(
                    url,
                    in_scratch()?,
                    "input",
                    reporter,
                    StageBand::DOWNLOADING,
                )
                .await?
        }
    };
    let output_path = match output {
        Place::Local(path) => path.clone(),
        Place::Object(url) => in_scratch()?.file(&format!("output{}", extension_of(&url.key))),
    };
    let prepared = prepare(tasks, task, input_path, output_path)?;
    let ffprobe = tasks.ffprobe()?;
    // FFmpeg writes a file of this run's own, moved over the output only
    // once it is whole and valid: a concurrent run to the same output (or
    // this task's redelivery) can neither clobber it nor be clobbered.
    let temp = TempOutput::new(&prepared.output, &ctx.id().to_string(), ctx.attempt())?;
    // ffprobe reads the input while FFmpeg starts encoding it: its start-up
    // is off the critical path. A probe failure stops the encode.
    let stop = ctx.cancellation().child_token();
    let probe = async {
        let probed = ffprobe.probe(&prepared.input).await;
        if probed.is_err() {
            stop.cancel();
        }
        probed
    };
    let encoding = encode(tasks, task, &prepared, temp.path(), &stop, reporter);
    let (media, encoded) = tokio::join!(probe, encoding);
    let output_place = output;
    let output = &prepared.output;
    // On any error below, dropping `temp` removes what FFmpeg wrote.
    let media = media?;
    let Encoded {
        encoder,
        summary,
        fallback,
    } = encoded.map_err(|e| match e {
        // Named at the output the task asked for, not the run's own file.
        VideoError::NoSpace { .. } => VideoError::NoSpace {
            path: output.clone(),
        },
        other => other,
    })?;

    reporter.stage(&StageBand::VALIDATING);
    let size = output_size(task.size, media.video.width, media.video.height);
    // An output cut short by a full disk FFmpeg did not report fails as
    // a full disk.
    let full = |e: VideoError| match output.parent() {
        Some(dir) if crate::publish::out_of_space(dir) => VideoError::NoSpace {
            path: output.clone(),
        },
        _ => e,
    };
    let written = ffprobe.probe(temp.path()).await.map_err(full)?;
    validate(tasks, task, &media, &written, size, output).map_err(full)?;
    let bytes = std::fs::metadata(temp.path())
        .map(|m| m.len())
        .unwrap_or(written.bytes);
    temp.commit()?;
    let written_to = match (output_place, scratch) {
        (Place::Object(url), Some(scratch)) => {
            scratch.check_usage("output")?;
            storage
                .upload_file(output, url, reporter, StageBand::UPLOADING)
                .await?;
            url.to_string()
        }
        _ => output.to_string_lossy().into_owned(),
    };
    let speed = speed_of(media.duration, summary.elapsed).or(summary.speed);
    info!(
        encoder = %encoder,
        output = %written_to,
        bytes,
        speed,
        "transcoded"
    );
    reporter.done(format!("{written_to} via {encoder}"));
    crate::trace::record(
        [
            Some(opentelemetry::KeyValue::new(
                "spool.video.encoder",
                encoder.name.clone(),
            )),
            Some(opentelemetry::KeyValue::new(
                "spool.video.bytes",
                i64::try_from(bytes).unwrap_or(i64::MAX),
            )),
            written
                .video
                .frame_rate
                .map(|fps| opentelemetry::KeyValue::new("spool.video.fps", fps.as_f64())),
            speed.map(|speed| opentelemetry::KeyValue::new("spool.video.speed", f64::from(speed))),
            fallback.as_ref().map(|(from, _)| {
                opentelemetry::KeyValue::new("spool.video.fell_back_from", from.clone())
            }),
        ]
        .into_iter()
        .flatten(),
    );
    let (fell_back_from, fallback_reason) = fallback.unzip();
    Ok(TranscodeOutput {
        output: written_to,
        encoder: encoder.name,
        fell_back_from,
        fallback_reason,
        codec: task.codec,
        duration: written.duration,
        width: written.video.width,
        height: written.video.height,
        fps: written.video.frame_rate,
        bytes,
        audio: written.has_audio(),
        speed,
        encode_time: summary.elapsed,
    })
}

/// Media seconds per wall-clock second.
fn speed_of(media: Duration, elapsed: Duration) -> Option<f32> {
    if elapsed.is_zero() {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some((media.as_secs_f64() / elapsed.as_secs_f64()) as f32)
}

/// Checks what ffprobe read back against what was asked for.
fn validate(
    tasks: &VideoTasks,
    task: &Transcode,
    input: &MediaInfo,
    written: &MediaInfo,
    size: (u32, u32),
    output: &Path,
) -> Result<(), VideoError> {
    let fail = |message: String| {
        Err(VideoError::Validation {
            path: output.to_owned(),
            message,
        })
    };
    if written.video.codec != task.codec.as_str() {
        return fail(format!(
            "its video codec is {:?}, not {}",
            written.video.codec, task.codec
        ));
    }
    if (written.video.width, written.video.height) != size {
        return fail(format!(
            "its frame size is {}x{}, not {}x{}",
            written.video.width, written.video.height, size.0, size.1
        ));
    }
    let expected = input.duration;
    let tolerance = tasks.config().tolerance_for(expected);
    let off = written.duration.abs_diff(expected);
    if off > tolerance {
        return fail(format!(
            "it lasts {:.3} s where the input lasts {:.3} s (tolerance {:.3} s)",
            written.duration.as_secs_f64(),
            expected.as_secs_f64(),
            tolerance.as_secs_f64()
        ));
    }
    if let (Some(wanted), Some(got)) = (task.fps, written.video.frame_rate)
        && (wanted.as_f64() - got.as_f64()).abs() > wanted.as_f64() * 0.01
    {
        return fail(format!("its frame rate is {got}, not {wanted}"));
    }
    let wants_audio = !matches!(task.audio, Audio::None) && input.has_audio();
    if wants_audio != written.has_audio() {
        return fail(format!(
            "it {} an audio stream",
            if wants_audio { "lacks" } else { "has" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use spool_sdk::video::Codec;

    use super::*;

    #[test]
    fn sizes_follow_ffmpeg_scale() {
        assert_eq!(
            output_size(Some(Size::Height(720)), 1920, 1080),
            (1280, 720)
        );
        assert_eq!(output_size(Some(Size::Height(240)), 1920, 1080), (426, 240));
        assert_eq!(output_size(Some(Size::Width(160)), 320, 240), (160, 120));
        assert_eq!(output_size(Some(Size::Height(360)), 640, 480), (480, 360));
        assert_eq!(output_size(None, 321, 241), (320, 240));
        assert_eq!(
            output_size(
                Some(Size::Exact {
                    width: 64,
                    height: 48
                }),
                320,
                240
            ),
            (64, 48)
        );
    }

    #[test]
    fn tasks_are_checked() {
        let ok = Transcode::new("a.mp4", "b.mp4", Codec::H264);
        assert!(check(&ok).is_ok());
        let odd = ok.clone().size(Size::Exact {
            width: 321,
            height: 240,
        });
        assert!(check(&odd).is_err());
        assert!(check(&ok.clone().fps(Fps::new(25, 0))).is_err());
        assert!(check(&ok.clone().audio(Audio::Aac { kbps: 0 })).is_err());
        assert!(container(Path::new("/o/x.MP4")).is_ok());
        assert!(container(Path::new("/o/x.avi")).is_err());
        assert!(container(Path::new("/o/x")).is_err());
    }

    #[test]
    fn the_filter_chain_is_built() {
        assert_eq!(
            video_filter(
                Some(Size::Height(360)),
                Some(Fps::new(30000, 1001)),
                "format=yuv420p"
            ),
            "[0:v:0]scale=-2:360:flags=bicubic,fps=30000/1001,format=yuv420p[v]"
        );
        assert_eq!(
            video_filter(None, None, "format=nv12,hwupload"),
            "[0:v:0]scale=trunc(iw/2)*2:trunc(ih/2)*2:flags=bicubic,format=nv12,hwupload[v]"
        );
    }
}

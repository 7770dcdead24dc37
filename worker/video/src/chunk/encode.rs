//! `video.encode_chunk` and `video.encode_audio`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use spool_sdk::video::{
    Audio, AudioOutput, ChunkOutput, ChunkSpan, EncodeAudio, EncodeChunk, EncodeChunkOnGpu,
    ObjectUrl, Transcode,
};
use spool_worker::{Handler, TaskContext, TaskError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::home::{self, Home, Places};
use super::index;
use crate::encoder;
use crate::progress::{Reporter, StageBand};
use crate::publish::TempOutput;
use crate::runner::{FfmpegArgs, Input, Output, RunOptions};
use crate::storage::Scratch;
use crate::{VideoError, VideoTasks};

/// Runs `video.encode_chunk` and `video.encode_chunk_gpu`. Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone)]
pub struct EncodeChunkHandler {
    tasks: VideoTasks,
}

impl EncodeChunkHandler {
    /// A handler sharing `tasks`' FFmpeg, ffprobe and roots.
    #[must_use]
    pub fn new(tasks: &VideoTasks) -> Self {
        Self {
            tasks: tasks.clone(),
        }
    }
}

impl Handler<EncodeChunk> for EncodeChunkHandler {
    async fn call(&self, task: EncodeChunk, ctx: TaskContext) -> Result<ChunkOutput, TaskError> {
        metered_chunk(encode_chunk_task(&self.tasks, &task, &ctx)).await
    }
}

/// Runs a chunk task counting its children's CPU time: the encode's is in
/// its output already; the rest is the checks'.
async fn metered_chunk(
    work: impl std::future::Future<Output = Result<ChunkOutput, VideoError>>,
) -> Result<ChunkOutput, TaskError> {
    let (output, cpu) = crate::spawner::metered(work).await;
    output
        .map(|output| ChunkOutput {
            check_cpu: Some(cpu.saturating_sub(output.encode_cpu.unwrap_or_default())),
            ..output
        })
        .map_err(VideoError::into_task_error)
}

impl Handler<EncodeChunkOnGpu> for EncodeChunkHandler {
    async fn call(
        &self,
        task: EncodeChunkOnGpu,
        ctx: TaskContext,
    ) -> Result<ChunkOutput, TaskError> {
        metered_chunk(encode_chunk_task(&self.tasks, &task.0, &ctx)).await
    }
}

async fn encode_chunk_task(
    tasks: &VideoTasks,
    task: &EncodeChunk,
    ctx: &TaskContext,
) -> Result<ChunkOutput, VideoError> {
    home::run_node(
        tasks,
        ctx,
        &task.encode,
        &task.key,
        "chunk",
        async |reporter, places, scratch| {
            chunk_in(tasks, task, ctx, reporter, places, scratch).await
        },
    )
    .await
}

/// Encodes (or reuses) one chunk in its home.
async fn chunk_in(
    tasks: &VideoTasks,
    task: &EncodeChunk,
    ctx: &TaskContext,
    reporter: &Reporter,
    places: &Places,
    scratch: Option<&Scratch>,
) -> Result<ChunkOutput, VideoError> {
    let file = super::chunk_file(task.span.index);
    let run = RunIdentity {
        id: ctx.id().to_string(),
        attempt: ctx.attempt(),
    };
    let reused = |path: String, frames: u64, bytes: u64| {
        info!(chunk = task.span.index, %path, "reusing a whole chunk");
        reporter.done(format!("chunk {} reused", task.span.index));
        ChunkOutput {
            index: task.span.index,
            path,
            frames,
            bytes,
            encoder: String::new(),
            reused: true,
            encode_time: Duration::ZERO,
            worker_pid: std::process::id(),
            encode_cpu: Some(Duration::ZERO),
            check_cpu: None,
        }
    };
    match &places.home {
        Home::Local(dir) => {
            let path = dir.join(&file);
            if let Some(frames) = whole_chunk(tasks, &path, &task.span).await {
                let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                return Ok(reused(super::relative(&task.key, &file), frames, bytes));
            }
            let input = places.input_path(tasks, scratch, reporter).await?;
            let encoded = encode_chunk(
                tasks,
                &task.encode,
                &task.span,
                &input,
                &path,
                &run,
                ctx.cancellation(),
                reporter,
            )
            .await?;
            reporter.done(format!("chunk {} via {}", task.span.index, encoded.encoder));
            Ok(ChunkOutput {
                index: task.span.index,
                path: super::relative(&task.key, &file),
                frames: task.span.frames,
                bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
                encoder: encoded.encoder,
                reused: false,
                encode_time: encoded.elapsed,
                worker_pid: std::process::id(),
                encode_cpu: Some(encoded.cpu),
                check_cpu: None,
            })
        }
        Home::Object(home) => {
            let storage = tasks.storage();
            let url = home::object_in(home, &file)?;
            let marker = home::object_in(home, &home::marker_of(&file))?;
            if let Some(bytes) = done_object(tasks, &url, &marker).await? {
                return Ok(reused(url.to_string(), task.span.frames, bytes));
            }
            let scratch = scratch.ok_or(VideoError::Cancelled)?;
            let input = places.input_path(tasks, Some(scratch), reporter).await?;
            let path = scratch.file(&file);
            let encoded = encode_chunk(
                tasks,
                &task.encode,
                &task.span,
                &input,
                &path,
                &run,
                ctx.cancellation(),
                reporter,
            )
            .await?;
            scratch.check_usage(&format!("chunk {}", task.span.index))?;
            let bytes = storage
                .upload_file(&path, &url, reporter, StageBand::UPLOADING)
                .await?;
            // The marker last: an object without one is encoded again.
            storage.put_text(&marker, &format!("{bytes}\n")).await?;
            reporter.done(format!("chunk {} via {}", task.span.index, encoded.encoder));
            Ok(ChunkOutput {
                index: task.span.index,
                path: url.to_string(),
                frames: task.span.frames,
                bytes,
                encoder: encoded.encoder,
                reused: false,
                encode_time: encoded.elapsed,
                worker_pid: std::process::id(),
                encode_cpu: Some(encoded.cpu),
                check_cpu: None,
            })
        }
    }
}

/// The size of the chunk object at `url` when its `.done` marker says it
/// was uploaded whole and a HEAD finds it at that size; `None` otherwise.
///
/// # Errors
///
/// The store's, after its retries.
pub(super) async fn done_object(
    tasks: &VideoTasks,
    url: &ObjectUrl,
    marker: &ObjectUrl,
) -> Result<Option<u64>, VideoError> {
    let storage = tasks.storage();
    let Some(text) = storage.get_text(marker).await? else {
        return Ok(None);
    };
    let Ok(marked) = text.trim().parse::<u64>() else {
        warn!(%marker, "an unreadable chunk marker; encoding the chunk again");
        return Ok(None);
    };
    match storage.size_of(url).await? {
        Some(size) if size == marked => Ok(Some(size)),
        found => {
            warn!(%url, marked, ?found, "the chunk object differs from its marker; encoding it again");
            Ok(None)
        }
    }
}

/// The frames of the chunk at `path` when it is whole (its frame count
/// as planned, a keyframe first); `None` when it is missing or broken
/// (a broken one is removed).
pub(super) async fn whole_chunk(tasks: &VideoTasks, path: &Path, span: &ChunkSpan) -> Option<u64> {
    if !path.is_file() {
        return None;
    }
    let verdict = match tasks.ffprobe() {
        Ok(ffprobe) => match index::read(ffprobe, path).await {
            Ok(found)
                if found.frames.len() as u64 == span.frames
                    && found.frames.first().is_some_and(|f| f.key) =>
            {
                return Some(span.frames);
            }
            Ok(found) => format!(
                "{} frames (keyframe first: {}) where {} were planned",
                found.frames.len(),
                found.frames.first().is_some_and(|f| f.key),
                span.frames
            ),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    warn!(path = %path.display(), %verdict, "a broken chunk; encoding it again");
    let _ = std::fs::remove_file(path);
    None
}

/// Which run writes a chunk: its temporary file is named from it.
pub(super) struct RunIdentity {
    pub(super) id: String,
    pub(super) attempt: u32,
}

/// A chunk encoded.
pub(super) struct EncodedChunk {
    pub(super) encoder: String,
    pub(super) elapsed: Duration,
    /// The CPU time of its FFmpeg runs (a failed hardware try included).
    pub(super) cpu: Duration,
}

/// Encodes `span` of `input` with `encode`'s settings to `path`: seeks
/// to just before its first frame, writes exactly its frames, no audio;
/// checks what was written (frame count, keyframe first) and renames it
/// into place. A failed hardware encode falls back to the next encoder.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site each; a struct adds nothing"
)]
pub(super) async fn encode_chunk(
    tasks: &VideoTasks,
    encode: &Transcode,
    span: &ChunkSpan,
    input: &Path,
    path: &Path,
    run: &RunIdentity,
    cancel: &CancellationToken,
    reporter: &Reporter,
) -> Result<EncodedChunk, VideoError> {
    let plan = encoder::plan(encode.codec, encode.hardware, &tasks.encoders())?;
    let temp = TempOutput::new(path, &run.id, run.attempt)?;
    let seek = format!("{:.6}", Duration::from_micros(span.seek_us).as_secs_f64());
    let mut chosen = None;
    let cpu_before = crate::spawner::cpu_charged();
    for (attempt, candidate) in plan.iter().enumerate() {
        let setup = encoder::setup(candidate, encode.rate, encode.preset)?;
        let mut args = FfmpegArgs::new();
        for (name, value) in &setup.global {
            args = args.global(name, value);
        }
        let mut out = Output::file(temp.path()).map("[v]");
        for (name, value) in &setup.options {
            out = out.option(name, value);
        }
        let out = out
            .option("-frames:v", span.frames)
            .flag("-an")
            .option("-f", "mp4");
        let args = args
            .input(Input::file(input).option("-ss", &seek))
            .filter_complex(crate::transcode::video_filter(
                encode.size,
                None,
                setup.pixel_filter,
            ))
            .output(out);
        let options = RunOptions::new(
            StageBand::PROCESSING.named(format!("chunk {} via {candidate}", span.index)),
            cancel.clone(),
        )
        .duration(span.duration())
        .frames(span.frames)
        .clean(temp.path());
        match tasks
            .runner()
            .run(&args, options, |progress| reporter.run(&progress))
            .await
        {
            Ok(summary) => {
                chosen = Some((candidate.name.clone(), summary.elapsed, summary.frames));
                break;
            }
            Err(VideoError::Ffmpeg { message, .. })
                if candidate.kind.is_hardware() && attempt + 1 < plan.len() =>
            {
                warn!(encoder = %candidate, error = %message, "the hardware encode failed; falling back");
            }
            Err(e) => return Err(e),
        }
    }
    let (encoder, elapsed, frames) =
        chosen.ok_or_else(|| VideoError::InvalidTask("no encoder to run".to_owned()))?;
    let cpu = crate::spawner::cpu_charged().saturating_sub(cpu_before);
    // FFmpeg's own count of the frames it wrote, not an ffprobe of the
    // chunk: a probe per chunk cost more CPU than the split and the join
    // together, and the join validates the whole output (frame count,
    // a keyframe at every chunk start, timestamps) before it publishes.
    if frames != span.frames {
        return Err(VideoError::Validation {
            path: path.to_owned(),
            message: format!(
                "chunk {} has {frames} frames where {} were planned",
                span.index, span.frames
            ),
        });
    }
    temp.commit()?;
    info!(chunk = span.index, %encoder, frames, elapsed_ms = elapsed.as_millis(), "chunk encoded");
    Ok(EncodedChunk {
        encoder,
        elapsed,
        cpu,
    })
}

/// Runs `video.encode_audio`. Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone)]
pub struct EncodeAudioHandler {
    tasks: VideoTasks,
}

impl EncodeAudioHandler {
    /// A handler sharing `tasks`' FFmpeg, ffprobe and roots.
    #[must_use]
    pub fn new(tasks: &VideoTasks) -> Self {
        Self {
            tasks: tasks.clone(),
        }
    }
}

impl Handler<EncodeAudio> for EncodeAudioHandler {
    async fn call(&self, task: EncodeAudio, ctx: TaskContext) -> Result<AudioOutput, TaskError> {
        let (output, cpu) = crate::spawner::metered(encode_audio(&self.tasks, &task, &ctx)).await;
        output
            .map(|output| AudioOutput {
                check_cpu: Some(cpu.saturating_sub(output.encode_cpu.unwrap_or_default())),
                ..output
            })
            .map_err(VideoError::into_task_error)
    }
}

async fn encode_audio(
    tasks: &VideoTasks,
    task: &EncodeAudio,
    ctx: &TaskContext,
) -> Result<AudioOutput, VideoError> {
    home::run_node(
        tasks,
        ctx,
        &task.encode,
        &task.key,
        "audio",
        async |reporter, places, scratch| {
            audio_in(tasks, task, ctx, reporter, places, scratch).await
        },
    )
    .await
}

/// Encodes the audio into its home.
async fn audio_in(
    tasks: &VideoTasks,
    task: &EncodeAudio,
    ctx: &TaskContext,
    reporter: &Reporter,
    places: &Places,
    scratch: Option<&Scratch>,
) -> Result<AudioOutput, VideoError> {
    let input = places.input_path(tasks, scratch, reporter).await?;
    let path: PathBuf = match (&places.home, scratch) {
        (Home::Local(dir), _) => dir.join(super::AUDIO_FILE),
        (Home::Object(_), Some(scratch)) => scratch.file(super::AUDIO_FILE),
        (Home::Object(_), None) => return Err(VideoError::Cancelled),
    };
    let temp = TempOutput::new(&path, &ctx.id().to_string(), ctx.attempt())?;
    let out = Output::file(temp.path()).map("0:a:0").flag("-vn");
    let out = match task.encode.audio {
        Audio::Copy => out.option("-c:a", "copy"),
        Audio::Aac { kbps } => out.option("-c:a", "aac").option("-b:a", format!("{kbps}k")),
        Audio::None => {
            return Err(VideoError::InvalidTask(
                "video.encode_audio for an encode without audio".to_owned(),
            ));
        }
    };
    let args = FfmpegArgs::new()
        .input(Input::file(&input))
        .output(out.option("-f", "matroska"));
    let options = RunOptions::new(
        StageBand::PROCESSING.named("audio"),
        ctx.cancellation().clone(),
    )
    .clean(temp.path());
    let summary = tasks
        .runner()
        .run(&args, options, |progress| reporter.run(&progress))
        .await?;
    reporter.stage(&StageBand::VALIDATING);
    let written = index::read(tasks.ffprobe()?, temp.path()).await?;
    let (Some((_, length)), Some(codec)) = (written.audio, written.audio_codec) else {
        return Err(VideoError::Validation {
            path: path.clone(),
            message: "it has no audio stream".to_owned(),
        });
    };
    temp.commit()?;
    let (written_to, bytes) = match &places.home {
        Home::Local(_) => (
            super::relative(&task.key, super::AUDIO_FILE),
            std::fs::metadata(&path).map_or(0, |m| m.len()),
        ),
        Home::Object(home) => {
            let url = home::object_in(home, super::AUDIO_FILE)?;
            let bytes = tasks
                .storage()
                .upload_file(&path, &url, reporter, StageBand::UPLOADING)
                .await?;
            (url.to_string(), bytes)
        }
    };
    reporter.done("audio encoded");
    Ok(AudioOutput {
        path: written_to,
        codec,
        duration: Duration::from_secs_f64(length.max(0.0)),
        bytes,
        encode_time: summary.elapsed,
        encode_cpu: Some(summary.cpu),
        check_cpu: None,
    })
}

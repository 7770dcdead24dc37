//! `video.join`: the chunks joined by stream copy, the audio muxed in,
//! validated against the source, published, and the chunks removed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spool_sdk::video::{Join, JoinOutput};
use spool_worker::{Handler, TaskContext, TaskError};
use tracing::{info, warn};

use super::encode::{RunIdentity, encode_chunk, whole_chunk};
use super::home::{self, Home, Places};
use super::{index, validate};
use crate::progress::{Reporter, StageBand};
use crate::publish::TempOutput;
use crate::runner::{FfmpegArgs, Input, Output, RunOptions};
use crate::storage::{Place, Scratch, extension_of};
use crate::{VideoError, VideoTasks};

/// Runs `video.join`. Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone)]
pub struct JoinHandler {
    tasks: VideoTasks,
}

impl JoinHandler {
    /// A handler sharing `tasks`' FFmpeg, ffprobe and roots.
    #[must_use]
    pub fn new(tasks: &VideoTasks) -> Self {
        Self {
            tasks: tasks.clone(),
        }
    }
}

impl Handler<Join> for JoinHandler {
    async fn call(&self, task: Join, ctx: TaskContext) -> Result<JoinOutput, TaskError> {
        // Its children's CPU time, read between its steps.
        crate::spawner::metered(join(&self.tasks, &task, &ctx))
            .await
            .0
            .map_err(VideoError::into_task_error)
    }
}

/// The muxer for the output's extension.
fn muxer(output: &Path) -> Result<&'static str, VideoError> {
    match output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("mp4" | "m4v") => Ok("mp4"),
        Some("mkv") => Ok("matroska"),
        Some("mov") => Ok("mov"),
        other => Err(VideoError::InvalidTask(format!(
            "the output's extension {:?} names no supported container (mp4, m4v, mkv, mov)",
            other.unwrap_or("")
        ))),
    }
}

/// An ffconcat list of `files` (absolute, worker-written): each path
/// quoted, its `'` and `\` escaped as the concat demuxer reads them.
fn concat_list(files: &[PathBuf]) -> String {
    let mut list = String::from("ffconcat version 1.0\n");
    for file in files {
        let escaped = file
            .to_string_lossy()
            .replace('\\', "\\\\")
            .replace('\'', "'\\''");
        let _ = writeln!(list, "file '{escaped}'");
    }
    list
}

async fn join(
    tasks: &VideoTasks,
    task: &Join,
    ctx: &TaskContext,
) -> Result<JoinOutput, VideoError> {
    home::run_node(
        tasks,
        ctx,
        &task.encode,
        &task.key,
        "join",
        async |reporter, places, scratch| {
            join_in(tasks, task, ctx, reporter, places, scratch).await
        },
    )
    .await
}

/// Where the join reads its pieces and writes its list: the home's
/// directory, or (for an object home) the run's scratch directory, the
/// chunks downloaded into it.
async fn gather(
    tasks: &VideoTasks,
    task: &Join,
    reporter: &Reporter,
    home: &Home,
    scratch: Option<&Scratch>,
) -> Result<PathBuf, VideoError> {
    let (Home::Object(home), Some(scratch)) = (home, scratch) else {
        return match home {
            Home::Local(dir) => Ok(dir.clone()),
            Home::Object(_) => Err(VideoError::Cancelled),
        };
    };
    let storage = tasks.storage();
    let mut files: Vec<String> = task
        .chunks
        .iter()
        .map(|span| super::chunk_file(span.index))
        .collect();
    if task.audio {
        files.push(super::AUDIO_FILE.to_owned());
    }
    for file in files {
        let url = home::object_in(home, &file)?;
        match storage
            .download(
                &url,
                &scratch.file(&file),
                scratch,
                reporter,
                StageBand::DOWNLOADING.named(format!("download {file}")),
            )
            .await
        {
            // A missing chunk is encoded again below; missing audio fails
            // when it is read.
            Ok(_) | Err(VideoError::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // Absolute: the concat list's paths are read from its own directory.
    std::fs::canonicalize(scratch.path())
        .map_err(|e| VideoError::io(format!("cannot read {}", scratch.path().display()), e))
}

/// Downloads what the home holds, joins, validates, publishes, and
/// removes the home.
#[allow(
    clippy::too_many_lines,
    reason = "one straight sequence: fetch, join, validate, publish"
)]
async fn join_in(
    tasks: &VideoTasks,
    task: &Join,
    ctx: &TaskContext,
    reporter: &Reporter,
    places: &Places,
    scratch: Option<&Scratch>,
) -> Result<JoinOutput, VideoError> {
    let input = places.input_path(tasks, scratch, reporter).await?;
    let output = match (&places.output, scratch) {
        (Place::Local(path), _) => path.clone(),
        (Place::Object(url), Some(scratch)) => {
            let dir = std::fs::canonicalize(scratch.path()).map_err(|e| {
                VideoError::io(format!("cannot read {}", scratch.path().display()), e)
            })?;
            dir.join(format!("output{}", extension_of(&url.key)))
        }
        (Place::Object(_), None) => return Err(VideoError::Cancelled),
    };
    let muxer = muxer(&output)?;
    let dir = gather(tasks, task, reporter, &places.home, scratch).await?;
    let ffprobe = tasks.ffprobe()?;

    let audio = dir.join(super::AUDIO_FILE);
    let audio_index = if task.audio {
        Some(index::read(ffprobe, &audio).await?)
    } else {
        None
    };
    let audio_extent = audio_index.as_ref().and_then(|a| a.audio);
    if task.audio && audio_extent.is_none() {
        return Err(VideoError::Validation {
            path: audio.clone(),
            message: "the encoded audio has no audio stream".to_owned(),
        });
    }

    // The chunks are first taken as their nodes wrote them (a missing one
    // is encoded again): the joined output's validation catches a damaged
    // one. Only then is every chunk probed, a broken one encoded again
    // here, and the join run once more, so a file damaged after its node
    // succeeded never reaches the output, and a sound run probes no chunk.
    let mut reencoded = Vec::new();
    let mut checks_cpu = Duration::ZERO;
    let mut join_cpu = Duration::ZERO;
    let mut join_time = Duration::ZERO;
    let mut probe_chunks = false;
    let (temp, report, validate_time, validate_cpu) = loop {
        let checks_start = crate::spawner::cpu_charged();
        let mut reencode_cpu = Duration::ZERO;
        let mut files = Vec::with_capacity(task.chunks.len());
        for span in &task.chunks {
            let path = dir.join(super::chunk_file(span.index));
            let whole = if probe_chunks {
                whole_chunk(tasks, &path, span).await.is_some()
            } else {
                path.is_file()
            };
            if !whole {
                warn!(
                    chunk = span.index,
                    "the chunk is missing or broken at the join; encoding it again"
                );
                let run = RunIdentity {
                    id: format!("{}-join", ctx.id()),
                    attempt: ctx.attempt(),
                };
                let before = crate::spawner::cpu_charged();
                encode_chunk(
                    tasks,
                    &task.encode,
                    span,
                    &input,
                    &path,
                    &run,
                    ctx.cancellation(),
                    reporter,
                )
                .await?;
                reencode_cpu += crate::spawner::cpu_charged().saturating_sub(before);
                if !reencoded.contains(&span.index) {
                    reencoded.push(span.index);
                }
            }
            files.push(path);
        }
        checks_cpu += crate::spawner::cpu_charged()
            .saturating_sub(checks_start)
            .saturating_sub(reencode_cpu);

        let cpu_join = crate::spawner::cpu_charged();
        let started = Instant::now();
        let joined = concat(
            tasks, task, ctx, reporter, &output, muxer, &dir, &files, &audio,
        )
        .await;
        join_time += started.elapsed();
        let cpu_validate = crate::spawner::cpu_charged();
        join_cpu += cpu_validate.saturating_sub(cpu_join);

        let checked = match joined {
            Ok(temp) => {
                reporter.stage(&StageBand::VALIDATING);
                let started = Instant::now();
                let source = index::read(ffprobe, &input).await?;
                let written = index::read(ffprobe, temp.path()).await?;
                validate::check_join(&written, &source, &task.chunks, audio_extent)
                    .map(|report| (temp, report, started.elapsed()))
                    .map_err(|message| VideoError::Validation {
                        path: output.clone(),
                        message,
                    })
            }
            Err(e) => Err(e),
        };
        let validate_cpu = crate::spawner::cpu_charged().saturating_sub(cpu_validate);
        match checked {
            Ok((temp, report, validate_time)) => {
                break (temp, report, validate_time, checks_cpu + validate_cpu);
            }
            Err(e @ (VideoError::Ffmpeg { .. } | VideoError::Validation { .. }))
                if !probe_chunks =>
            {
                warn!(error = %e, "the join did not validate; probing every chunk");
                checks_cpu += validate_cpu;
                probe_chunks = true;
            }
            Err(e) => return Err(e),
        }
    };
    let bytes = std::fs::metadata(temp.path()).map_or(0, |m| m.len());
    temp.commit()?;
    let written_to = match (&places.output, scratch) {
        (Place::Object(url), Some(scratch)) => {
            scratch.check_usage("joined output")?;
            tasks
                .storage()
                .upload_file(&output, url, reporter, StageBand::UPLOADING)
                .await?;
            url.to_string()
        }
        _ => output.to_string_lossy().into_owned(),
    };
    // Published: the chunks are no longer needed.
    match &places.home {
        Home::Local(dir) => {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                warn!(dir = %dir.display(), error = %e, "cannot remove the chunk directory");
            }
        }
        Home::Object(home) => {
            if let Err(e) = tasks.storage().delete_prefix(home).await {
                warn!(%home, error = %e, "cannot delete the chunk objects");
            }
        }
    }
    info!(
        output = %written_to,
        chunks = task.chunks.len(),
        frames = report.frames,
        join_ms = join_time.as_millis(),
        validate_ms = validate_time.as_millis(),
        "joined"
    );
    reporter.done(format!(
        "{} chunks joined into {written_to}",
        task.chunks.len(),
    ));
    Ok(JoinOutput {
        output: written_to,
        frames: report.frames,
        duration: Duration::from_secs_f64(report.length.max(0.0)),
        bytes,
        audio: task.audio,
        chunks: u32::try_from(task.chunks.len()).unwrap_or(u32::MAX),
        reencoded,
        av_offset_ms: report.av_offset_ms,
        join_time,
        validate_time,
        join_cpu: Some(join_cpu),
        validate_cpu: Some(validate_cpu),
    })
}

/// Joins `files` (and the audio) by stream copy into a temporary output
/// beside `output`, committed by the caller once it validates.
#[allow(clippy::too_many_arguments, reason = "the join's own pieces")]
async fn concat(
    tasks: &VideoTasks,
    task: &Join,
    ctx: &TaskContext,
    reporter: &Reporter,
    output: &Path,
    muxer: &str,
    dir: &Path,
    files: &[PathBuf],
    audio: &Path,
) -> Result<TempOutput, VideoError> {
    let list = dir.join("concat.txt");
    std::fs::write(&list, concat_list(files))
        .map_err(|e| VideoError::from_io(format!("cannot write {}", list.display()), &list, e))?;
    let temp = TempOutput::new(output, &ctx.id().to_string(), ctx.attempt())?;
    let mut out = Output::file(temp.path())
        .map("0:v:0")
        .option("-c:v", "copy");
    let mut args = FfmpegArgs::new().input(Input::concat_list(&list));
    if task.audio {
        args = args.input(Input::file(audio));
        out = out.map("1:a:0").option("-c:a", "copy");
    }
    if muxer == "mp4" || muxer == "mov" {
        // The index up front: players start before the whole file is read.
        out = out.option("-movflags", "+faststart");
    }
    let args = args.output(out.option("-f", muxer));
    let options = RunOptions::new(
        StageBand::PROCESSING.named("join"),
        ctx.cancellation().clone(),
    )
    .frames(task.frames)
    .clean(temp.path());
    tasks
        .runner()
        .run(&args, options, |progress| reporter.run(&progress))
        .await?;
    Ok(temp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_lists_quote_their_paths() {
        let list = concat_list(&[PathBuf::from("/o/a.mp4"), PathBuf::from("/o/it's.mp4")]);
        assert_eq!(
            list,
            "ffconcat version 1.0\nfile '/o/a.mp4'\nfile '/o/it'\\''s.mp4'\n"
        );
        assert_eq!(muxer(Path::new("/o/x.MKV")).unwrap(), "matroska");
        assert!(muxer(Path::new("/o/x.avi")).is_err());
    }
}

//! `video.split`: the source's frame index, the plan, and the nodes that
//! carry it out.

use std::path::Path;
use std::time::Instant;

use spool_broker::workflow::EdgePolicy;
use spool_sdk::video::{
    Audio, Boundaries, EncodeAudio, EncodeChunk, EncodeChunkOnGpu, HardwarePolicy, Ingest, Join,
    Split, SplitOutput, chunk_node,
};
use spool_worker::{Handler, TaskContext, TaskError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::home::{Home, Places};
use super::index::{self, PacketIndex};
use super::plan::{self, Whole};
use crate::progress::{Reporter, StageBand};
use crate::runner::{FfmpegArgs, Input, Output, RunOptions};
use crate::storage::{Place, Scratch};
use crate::{VideoError, VideoTasks, escape_filter_value};

/// Runs `video.split`. Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone)]
pub struct SplitHandler {
    tasks: VideoTasks,
}

impl SplitHandler {
    /// A handler sharing `tasks`' FFmpeg, ffprobe and roots.
    #[must_use]
    pub fn new(tasks: &VideoTasks) -> Self {
        Self {
            tasks: tasks.clone(),
        }
    }
}

impl Handler<Split> for SplitHandler {
    async fn call(&self, task: Split, ctx: TaskContext) -> Result<SplitOutput, TaskError> {
        // Every ffprobe and FFmpeg it runs is charged to its CPU time.
        let (split, cpu) = crate::spawner::metered(split(&self.tasks, &task, &ctx)).await;
        split
            .map(|output| SplitOutput {
                plan_cpu: Some(cpu),
                ..output
            })
            .map_err(VideoError::into_task_error)
    }
}

/// The width scene scores are computed at: enough to see a cut, a small
/// share of a full-size decode's filtering.
const SCENE_WIDTH: u32 = 320;

async fn split(
    tasks: &VideoTasks,
    task: &Split,
    ctx: &TaskContext,
) -> Result<SplitOutput, VideoError> {
    let started = Instant::now();
    let reporter = Reporter::new(ctx);
    reporter.stage(&StageBand::PROBING);
    task.validate().map_err(VideoError::from_validation)?;
    let key = match (&task.key, ctx.workflow()) {
        (Some(key), _) => key.clone(),
        (None, Some(workflow)) => workflow.to_string(),
        (None, None) => {
            return Err(VideoError::InvalidTask(
                "video.split runs as a workflow node (it adds the chunks to its workflow)"
                    .to_owned(),
            ));
        }
    };
    // The input, the output and the chunk home checked (roots,
    // allow-list) before anything is transferred.
    let places = Places::new(tasks, &task.encode, &key)?;
    if places.uses_objects() {
        let source = places.input_size(tasks).await?;
        let need = places.scratch_need(source);
        Scratch::check_need(
            tasks.config().scratch_dir.as_deref(),
            need,
            tasks.storage().config().scratch_limit,
            &format!(
                "chunked encode of {} ({source} bytes: the join holds the source, \
                 its chunks and the output)",
                task.encode.input.as_str()
            ),
        )?;
    }
    let scratch = places.scratch(tasks, "split")?;
    let result = split_in(
        tasks,
        task,
        ctx,
        &reporter,
        &places,
        scratch.as_ref(),
        key,
        started,
    )
    .await;
    if let Some(scratch) = scratch {
        scratch.cleanup().await;
    }
    result
}

/// Indexes the (downloaded) source, plans, and adds the nodes.
#[allow(
    clippy::too_many_arguments,
    clippy::too_many_lines,
    reason = "one call site; the split's steps in order"
)]
async fn split_in(
    tasks: &VideoTasks,
    task: &Split,
    ctx: &TaskContext,
    reporter: &Reporter,
    places: &Places,
    scratch: Option<&Scratch>,
    key: String,
    started: Instant,
) -> Result<SplitOutput, VideoError> {
    let input = places.input_path(tasks, scratch, reporter).await?;
    reporter.stage(&StageBand::PROBING);
    // The scene log's directory: the home's, or the run's scratch.
    let (dir, local_home) = match (&places.home, scratch) {
        (Home::Local(dir), _) => (dir.clone(), true),
        (Home::Object(_), Some(scratch)) => (scratch.path().to_owned(), false),
        (Home::Object(_), None) => return Err(VideoError::Cancelled),
    };
    let ffprobe = tasks.ffprobe()?;
    let source = index::read(ffprobe, &input).await?;
    if source.frames.is_empty() {
        // Named as the task gave it, not the scratch copy.
        let path = match &places.input {
            Place::Local(path) => path.clone(),
            Place::Object(url) => url.to_string().into(),
        };
        return Err(VideoError::NoVideo { path });
    }
    let interval = source.frame_interval().unwrap_or(0.0);
    reporter.stage(&StageBand::PROCESSING.named("plan"));
    let planned = if interval <= 0.0 {
        Err(Whole::Because(
            "the source's frame interval is unknown; encoding it whole".to_owned(),
        ))
    } else if plan::is_variable_rate(&source.frames, interval) {
        Err(Whole::Because(
            "the source has a variable frame rate, which chunks would not keep; \
             encoding it whole"
                .to_owned(),
        ))
    } else {
        let cuts = cuts(tasks, task, &input, &source, &dir, ctx.cancellation()).await?;
        plan::plan(
            &source.frames,
            &cuts,
            interval,
            source.start_time,
            &task.policy,
        )
    };
    let wants_audio = !matches!(task.encode.audio, Audio::None) && source.audio.is_some();
    let frames = source.frames.len() as u64;
    let duration = std::time::Duration::from_secs_f64(source.video_length().max(0.0));
    let fps = source
        .avg_rate
        .and_then(|_| crate::media::parse_rate(Some(&rate_text(interval))));
    let output = match planned {
        Err(whole) => {
            let reason = whole.reason();
            warn!(input = %input.display(), %reason, "not splitting");
            ctx.add_child(Ingest::ENCODE, &task.encode)
                .map_err(|e| VideoError::InvalidTask(e.to_string()))?;
            // Nothing will be written there.
            if local_home {
                let _ = std::fs::remove_dir(&dir);
            }
            SplitOutput {
                frames,
                duration,
                fps,
                chunks: Vec::new(),
                audio: wants_audio,
                fallback: Some(reason),
                key,
                plan_time: started.elapsed(),
                plan_cpu: None,
            }
        }
        Ok(chunks) => {
            let add = |e: TaskError| VideoError::InvalidTask(e.to_string());
            for span in plan::longest_first(&chunks) {
                let chunk = EncodeChunk::new(task.encode.clone(), key.clone(), span);
                let name = chunk_node(span.index);
                if task.encode.hardware == HardwarePolicy::Require {
                    ctx.add_child(&name, &EncodeChunkOnGpu(chunk))
                        .map_err(add)?;
                } else {
                    ctx.add_child(&name, &chunk).map_err(add)?;
                }
            }
            if wants_audio {
                ctx.add_child(
                    Ingest::AUDIO,
                    &EncodeAudio::new(task.encode.clone(), key.clone()),
                )
                .map_err(add)?;
            }
            let join = Join {
                encode: task.encode.clone(),
                key: key.clone(),
                chunks: chunks.clone(),
                frames,
                audio: wants_audio,
            };
            ctx.join_children(Ingest::JOIN, &join, EdgePolicy::Fail)
                .map_err(add)?;
            info!(
                input = %input.display(),
                chunks = chunks.len(),
                frames,
                "split planned"
            );
            SplitOutput {
                frames,
                duration,
                fps,
                chunks,
                audio: wants_audio,
                fallback: None,
                key,
                plan_time: started.elapsed(),
                plan_cpu: None,
            }
        }
    };
    reporter.done(match &output.fallback {
        Some(reason) => format!("whole: {reason}"),
        None => format!("{} chunks", output.chunks.len()),
    });
    Ok(output)
}

/// A frame interval as the frame rate FFmpeg would print (`25/1`,
/// `30000/1001`).
fn rate_text(interval: f64) -> String {
    let fps = 1.0 / interval;
    let whole = fps.round();
    if (fps - whole).abs() < 1e-3 {
        format!("{whole:.0}/1")
    } else {
        let ntsc = (fps * 1.001).round();
        format!("{:.0}/1001", ntsc * 1000.0)
    }
}

/// Where the source may be cut: its keyframes, or its scene cuts (at
/// least as many as its keyframes give, else the keyframes).
async fn cuts(
    tasks: &VideoTasks,
    task: &Split,
    input: &Path,
    source: &PacketIndex,
    dir: &Path,
    cancel: &CancellationToken,
) -> Result<Vec<usize>, VideoError> {
    let keyframes = plan::keyframe_cuts(&source.frames);
    let Boundaries::Scenes { threshold } = task.policy.boundaries else {
        return Ok(keyframes);
    };
    let times = scene_times(tasks, input, dir, threshold, cancel).await?;
    // The filter counts from the container's start; the index from the
    // stream's own timestamps.
    let times: Vec<f64> = times.iter().map(|t| t + source.start_time).collect();
    let mut cuts = plan::cuts_at_times(&source.frames, &times);
    if cuts.len() < keyframes.len().saturating_sub(1) / 2 {
        // Too few cuts to make chunks of the target: keyframes as well.
        cuts.extend(&keyframes);
        cuts.sort_unstable();
        cuts.dedup();
    }
    Ok(cuts)
}

/// The times (seconds from the container's start) where FFmpeg's scene
/// score passes `threshold`, from a decode at [`SCENE_WIDTH`] (its log
/// written to `dir` and removed). Also where quality-targeted samples
/// start (`targeted::sample`).
pub(crate) async fn scene_times(
    tasks: &VideoTasks,
    input: &Path,
    dir: &Path,
    threshold: f32,
    cancel: &CancellationToken,
) -> Result<Vec<f64>, VideoError> {
    let log = dir.join("scenes.txt");
    let graph = format!(
        "[0:v:0]scale={SCENE_WIDTH}:-2,select='gt(scene\\,{threshold})',metadata=print:file={}",
        escape_filter_value(&log.to_string_lossy())
    );
    let args = FfmpegArgs::new()
        .input(Input::file(input))
        .filter_complex(graph)
        .output(Output::null().flag("-an"));
    let options = RunOptions::new(StageBand::PROCESSING.named("scene scores"), cancel.clone());
    tasks.runner().run(&args, options, |_| {}).await?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    Ok(parse_scene_log(&text))
}

/// The `pts_time:` of each frame `metadata=print` logged.
fn parse_scene_log(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|line| {
            let rest = line.split("pts_time:").nth(1)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scene_logs_and_rates_are_read() {
        let log = "frame:0    pts:51200   pts_time:4\nlavfi.scene_score=0.71\n\
                   frame:1    pts:89600   pts_time:7.04\nlavfi.scene_score=0.52\n";
        assert_eq!(parse_scene_log(log), [4.0, 7.04]);
        assert_eq!(rate_text(0.04), "25/1");
        assert_eq!(rate_text(1001.0 / 30000.0), "30000/1001");
    }
}

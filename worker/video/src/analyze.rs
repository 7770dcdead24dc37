//! `video.analyze`: VMAF, PSNR and SSIM in one FFmpeg pass.
//!
//! The graph, for all three metrics:
//!
//! ```text
//! [0:v] setpts=PTS-STARTPTS, format=yuv420p, split=3          -> r0 r1 r2
//! [1:v] scale=W:H:flags=bicubic, setpts=PTS-STARTPTS, format, split=3 -> d0 d1 d2
//! [d0][r0] libvmaf=model=version=…:log_fmt=json:log_path=…:n_threads=…
//! [d1][r1] psnr=stats_file=…
//! [d2][r2] ssim=stats_file=…
//! ```
//!
//! The distorted video is scaled to the reference's size and both start at
//! timestamp 0, so frames pair up even when an encoder shifted them. PSNR
//! and SSIM are two filters of their own (not options of one), and the
//! VMAF filter is `libvmaf` (FFmpeg has no `vmaf` filter). Per-frame logs
//! go to a scratch directory the worker creates; their paths are escaped
//! for the filtergraph and never come from the task.

use std::path::{Path, PathBuf};

use spool_sdk::video::{AnalysisReport, Analyze};
use tracing::info;

use super::progress::{Reporter, StageBand};
use super::runner::{FfmpegArgs, Input, Output, RunOptions, escape_filter_value};
use super::scores::{frames, parse_psnr_log, parse_ssim_log, parse_vmaf_log, pool};
use super::storage::Place;
use super::{LIBVMAF_HINT, VideoError, VideoTasks};
use spool_worker::{Handler, TaskContext, TaskError};

/// Runs `video.analyze`. Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone)]
pub struct AnalyzeHandler {
    tasks: VideoTasks,
}

impl AnalyzeHandler {
    /// A handler sharing `tasks`' FFmpeg, ffprobe and roots.
    #[must_use]
    pub fn new(tasks: &VideoTasks) -> Self {
        Self {
            tasks: tasks.clone(),
        }
    }
}

impl Handler<Analyze> for AnalyzeHandler {
    async fn call(&self, task: Analyze, ctx: TaskContext) -> Result<AnalysisReport, TaskError> {
        analyze(&self.tasks, &task, &ctx)
            .await
            .map_err(VideoError::into_task_error)
    }
}

/// A directory of the worker's own for one run's logs, removed on drop.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub(crate) fn new(parent: Option<&Path>, tag: &str) -> Result<Self, VideoError> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let path = parent.join(format!(
            "spool-{tag}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| VideoError::io(format!("cannot create {}", path.display()), e))?;
        Ok(Self { path })
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Where each metric's log goes.
struct LogPaths {
    vmaf: Option<PathBuf>,
    psnr: Option<PathBuf>,
    ssim: Option<PathBuf>,
}

/// The filtergraph comparing input 1 (distorted) with input 0 (reference)
/// at `width`×`height`; returns it with its output labels.
fn analysis_graph(
    task: &Analyze,
    width: u32,
    height: u32,
    threads: usize,
    logs: &LogPaths,
) -> (String, Vec<String>) {
    let mut metrics: Vec<String> = Vec::new();
    if let Some(path) = &logs.vmaf {
        metrics.push(format!(
            "libvmaf=model=version={}:log_fmt=json:log_path={}:n_threads={threads}:shortest=1",
            task.vmaf_model.as_str(),
            escape_filter_value(&path.to_string_lossy())
        ));
    }
    if let Some(path) = &logs.psnr {
        metrics.push(format!(
            "psnr=stats_file={}:shortest=1",
            escape_filter_value(&path.to_string_lossy())
        ));
    }
    if let Some(path) = &logs.ssim {
        metrics.push(format!(
            "ssim=stats_file={}:shortest=1",
            escape_filter_value(&path.to_string_lossy())
        ));
    }
    let n = metrics.len();
    // One frame in `subsample`, picked the same way on both sides.
    let select = if task.subsample > 1 {
        format!("select=not(mod(n\\,{})),", task.subsample)
    } else {
        String::new()
    };
    let fan_out = |prefix: &str| -> String {
        if n == 1 {
            format!("[{prefix}0]")
        } else {
            let labels: String = (0..n).map(|i| format!("[{prefix}{i}]")).collect();
            format!(",split={n}{labels}")
        }
    };
    let join = |chain: String, prefix: &str| format!("{chain}{}", fan_out(prefix));
    let mut graph = join(
        format!("[0:v:0]{select}setpts=PTS-STARTPTS,format=yuv420p"),
        "r",
    );
    graph.push(';');
    graph.push_str(&join(
        format!(
            "[1:v:0]{select}scale={width}:{height}:flags=bicubic,setpts=PTS-STARTPTS,format=yuv420p"
        ),
        "d",
    ));
    let mut outputs = Vec::with_capacity(n);
    for (i, metric) in metrics.iter().enumerate() {
        graph.push_str(&format!(";[d{i}][r{i}]{metric}[m{i}]"));
        outputs.push(format!("[m{i}]"));
    }
    (graph, outputs)
}

/// Checks, places both inputs (allow-list first), downloads objects into
/// a scratch directory removed however the run ends, then analyzes.
async fn analyze(
    tasks: &VideoTasks,
    task: &Analyze,
    ctx: &TaskContext,
) -> Result<AnalysisReport, VideoError> {
    // The SDK checked it on enqueue; anything else may have enqueued it.
    task.validate().map_err(VideoError::from_validation)?;
    if task.metrics.vmaf && !tasks.report().libvmaf {
        return Err(libvmaf_missing(tasks));
    }
    let reporter = Reporter::new(ctx);
    reporter.stage(&StageBand::PROBING);
    let (storage, roots) = (tasks.storage(), tasks.roots());
    // Both are checked, the allow-list included, before any transfer.
    let reference = storage.place(&task.reference, |p| roots.input(p))?;
    let distorted = storage.place(&task.distorted, |p| roots.input(p))?;
    let scratch = match (&reference, &distorted) {
        (Place::Local(_), Place::Local(_)) => None,
        _ => Some(storage.scratch(tasks.config().scratch_dir.as_deref(), "analyze-inputs")?),
    };
    let analyzed = async {
        let [first, second] =
            StageBand::DOWNLOADING.split(["download reference", "download distorted"]);
        let reference = storage
            .local_path(&reference, scratch.as_ref(), "reference", &reporter, first)
            .await?;
        let distorted = storage
            .local_path(&distorted, scratch.as_ref(), "distorted", &reporter, second)
            .await?;
        analyze_files(tasks, task, ctx, &reporter, &reference, &distorted).await
    }
    .await;
    if let Some(scratch) = scratch {
        scratch.cleanup().await;
    }
    analyzed
}

/// Probe both, score in one pass, read the logs, pool.
async fn analyze_files(
    tasks: &VideoTasks,
    task: &Analyze,
    ctx: &TaskContext,
    reporter: &Reporter,
    reference: &Path,
    distorted: &Path,
) -> Result<AnalysisReport, VideoError> {
    let ffprobe = tasks.ffprobe()?;
    // The reference sets the size. Both are probed first, so a file
    // without video is named ("x.mp4 has no video stream") instead of
    // failing FFmpeg's filtergraph; a corrupt one fails with ffprobe's
    // words.
    let (reference_info, distorted_info) =
        tokio::join!(ffprobe.probe(reference), ffprobe.probe(distorted));
    let reference_info = reference_info?;
    distorted_info?;
    let (width, height) = (reference_info.video.width, reference_info.video.height);

    let scratch = ScratchDir::new(tasks.config().scratch_dir.as_deref(), "analyze")?;
    let logs = LogPaths {
        vmaf: task.metrics.vmaf.then(|| scratch.file("vmaf.json")),
        psnr: task.metrics.psnr.then(|| scratch.file("psnr.log")),
        ssim: task.metrics.ssim.then(|| scratch.file("ssim.log")),
    };
    let threads = task.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let (graph, labels) = analysis_graph(task, width, height, threads, &logs);
    let mut output = Output::null();
    for label in labels {
        output = output.map(label);
    }
    let args = FfmpegArgs::new()
        .input(Input::file(reference))
        .input(Input::file(distorted))
        .filter_complex(graph)
        .output(output);
    let duration = reference_info.duration;
    let options = RunOptions::new(
        StageBand::PROCESSING.named("analyze"),
        ctx.cancellation().clone(),
    )
    .duration(duration);
    let options = match reference_info.video.frames {
        Some(frames) => options.frames(frames.div_ceil(u64::from(task.subsample))),
        None => options,
    };
    let summary = tasks
        .runner()
        .run(&args, options, |progress| reporter.run(&progress))
        .await
        .map_err(|e| match e {
            VideoError::Ffmpeg { message, .. }
                if message.contains("libvmaf") && message.contains("No such filter") =>
            {
                libvmaf_missing(tasks)
            }
            other => other,
        })?;

    reporter.stage(&StageBand::VALIDATING);
    let read = |path: &Option<PathBuf>, what: &'static str| -> Result<Option<String>, VideoError> {
        path.as_ref()
            .map(|p| {
                std::fs::read_to_string(p).map_err(|e| VideoError::Log {
                    what,
                    message: format!("{}: {e}", p.display()),
                })
            })
            .transpose()
    };
    let vmaf = read(&logs.vmaf, "libvmaf")?
        .map(|t| parse_vmaf_log(&t))
        .transpose()?
        .unwrap_or_default();
    let psnr = read(&logs.psnr, "psnr")?
        .map(|t| parse_psnr_log(&t))
        .transpose()?
        .unwrap_or_default();
    let ssim = read(&logs.ssim, "ssim")?
        .map(|t| parse_ssim_log(&t))
        .transpose()?
        .unwrap_or_default();
    let per_frame = frames(&vmaf, &psnr, &ssim);
    if per_frame.is_empty() {
        return Err(VideoError::Log {
            what: "analysis",
            message: "no frame was scored (do the videos overlap in time?)".to_owned(),
        });
    }
    let report = AnalysisReport {
        vmaf: pool(&vmaf),
        psnr: pool(&psnr),
        ssim: pool(&ssim),
        frames: u32::try_from(per_frame.len()).unwrap_or(u32::MAX),
        vmaf_model: task.metrics.vmaf.then_some(task.vmaf_model),
        width,
        height,
        per_frame: if task.per_frame {
            per_frame
        } else {
            Vec::new()
        },
    };
    info!(
        frames = report.frames,
        vmaf = report.vmaf.map(|s| s.mean),
        psnr = report.psnr.map(|s| s.mean),
        ssim = report.ssim.map(|s| s.mean),
        elapsed = ?summary.elapsed,
        "analyzed"
    );
    reporter.done(format!("{} frames scored", report.frames));
    crate::trace::record(
        [
            Some(opentelemetry::KeyValue::new(
                "spool.video.frames",
                i64::from(report.frames),
            )),
            report
                .vmaf
                .map(|s| opentelemetry::KeyValue::new("spool.video.vmaf", s.mean)),
            report
                .psnr
                .map(|s| opentelemetry::KeyValue::new("spool.video.psnr", s.mean)),
            report
                .ssim
                .map(|s| opentelemetry::KeyValue::new("spool.video.ssim", s.mean)),
        ]
        .into_iter()
        .flatten(),
    );
    Ok(report)
}

fn libvmaf_missing(tasks: &VideoTasks) -> VideoError {
    VideoError::Missing {
        what: "libvmaf",
        detail: format!(
            "VMAF was asked for, and {} has no libvmaf filter (PSNR and SSIM work without it)",
            tasks.ffmpeg().display()
        ),
        hint: LIBVMAF_HINT,
    }
}

#[cfg(test)]
mod tests {
    use spool_sdk::video::{Metrics, VmafModel};

    use super::*;

    fn logs(vmaf: bool, psnr: bool, ssim: bool) -> LogPaths {
        LogPaths {
            vmaf: vmaf.then(|| PathBuf::from("/tmp/s/vmaf.json")),
            psnr: psnr.then(|| PathBuf::from("/tmp/s/psnr.log")),
            ssim: ssim.then(|| PathBuf::from("/tmp/s/ssim.log")),
        }
    }

    #[test]
    fn one_pass_with_separate_filters() {
        let task = Analyze::new("r.mp4", "d.mp4").model(VmafModel::V061Neg);
        let (graph, outputs) = analysis_graph(&task, 1920, 1080, 4, &logs(true, true, true));
        assert_eq!(
            graph,
            "[0:v:0]setpts=PTS-STARTPTS,format=yuv420p,split=3[r0][r1][r2];\
             [1:v:0]scale=1920:1080:flags=bicubic,setpts=PTS-STARTPTS,format=yuv420p,split=3[d0][d1][d2];\
             [d0][r0]libvmaf=model=version=vmaf_v0.6.1neg:log_fmt=json:log_path=/tmp/s/vmaf.json:n_threads=4:shortest=1[m0];\
             [d1][r1]psnr=stats_file=/tmp/s/psnr.log:shortest=1[m1];\
             [d2][r2]ssim=stats_file=/tmp/s/ssim.log:shortest=1[m2]"
        );
        assert_eq!(outputs, ["[m0]", "[m1]", "[m2]"]);
        assert!(!graph.contains("vmaf=") || graph.contains("libvmaf="));
    }

    #[test]
    fn one_metric_needs_no_split() {
        let task = Analyze::new("r.mp4", "d.mp4")
            .metrics(Metrics {
                vmaf: false,
                psnr: true,
                ssim: false,
            })
            .subsample(5);
        let (graph, outputs) = analysis_graph(&task, 320, 240, 1, &logs(false, true, false));
        assert_eq!(
            graph,
            "[0:v:0]select=not(mod(n\\,5)),setpts=PTS-STARTPTS,format=yuv420p[r0];\
             [1:v:0]select=not(mod(n\\,5)),scale=320:240:flags=bicubic,setpts=PTS-STARTPTS,format=yuv420p[d0];\
             [d0][r0]psnr=stats_file=/tmp/s/psnr.log:shortest=1[m0]"
        );
        assert_eq!(outputs, ["[m0]"]);
    }

    #[test]
    fn scratch_dirs_are_removed() {
        let dir = ScratchDir::new(None, "test").unwrap();
        let file = dir.file("x.log");
        std::fs::write(&file, "x").unwrap();
        let parent = file.parent().unwrap().to_owned();
        drop(dir);
        assert!(!parent.exists());
    }
}

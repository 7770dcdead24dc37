//! `spool-demo`: Spool's main job end to end, on a real Redis.
//!
//! An "upload" becomes an encode, quality scores and streams:
//!
//! 1. a test clip is generated with FFmpeg's `lavfi` sources (a moving
//!    test pattern and a tone; 10 s of 1080p by default);
//! 2. `video.transcode` encodes it (queue `default`);
//! 3. `video.analyze` scores the encode against the clip: VMAF, PSNR and
//!    SSIM (queue `analysis`);
//! 4. `video.package` turns the clip into an HLS and DASH ladder in one
//!    FFmpeg run (queue `streaming`).
//!
//! Steps 2 to 4 are submitted as ONE workflow (`transcode -> analyze ->
//! package`): the worker runs each node when the one before it succeeded,
//! so the pipeline no longer depends on this process waiting between
//! steps. Each task goes through Redis to a worker running in this
//! process, and its record and progress through a SQLite job store. Progress is printed
//! as it comes; the scores and the output paths at the end. With `--json`
//! the last line is one JSON object with `vmaf`, `psnr`, `ssim` (pooled
//! means), `hls_master` and `dash_mpd` (absolute paths).
//!
//! The Redis keys live under a fresh prefix that is deleted at the end;
//! the files stay in `--workdir`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::StreamExt as _;
use serde::Serialize;
use spool_broker::store::JobStore;
use spool_broker::{Broker, QueueName, RedisBroker, RedisConfig, SigningKeys, Task, TaskId};
use spool_sdk::Client;
use spool_sdk::video::{
    AnalysisReport, Analyze, Codec, Package, PackageOutput, Preset, RateControl, Transcode,
    TranscodeOutput,
};
use spool_sdk::workflow::{Workflow, WorkflowHandle};
use spool_video::{TestClip, VideoConfig, VideoTasks, WithVideoTasks};
use spool_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// Run Spool's main job: generate a clip, then transcode, analyze and
/// package it through Redis and a local worker.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version)]
struct Args {
    /// The Redis to use; credentials in it are never printed.
    #[arg(
        long,
        env = "SPOOL_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// Sign and verify the demo's tasks with the keys of this file (first
    /// line signs; see spool-worker --help).
    #[arg(long, env = "SPOOL_SIGNING_KEY_FILE", value_name = "FILE")]
    signing_key_file: Option<PathBuf>,
    /// Where the clip, the encodes, the streams and the job store go.
    #[arg(long, default_value = "spool-demo-output")]
    workdir: PathBuf,
    /// The length of the generated clip.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The clip's width in pixels.
    #[arg(long, default_value_t = 1920, value_parser = clap::value_parser!(u32).range(16..=7680))]
    width: u32,
    /// The clip's height in pixels.
    #[arg(long, default_value_t = 1080, value_parser = clap::value_parser!(u32).range(16..=4320))]
    height: u32,
    /// The clip's frame rate.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    fps: u32,
    /// The transcode's constant rate factor (lower is better and larger).
    #[arg(long, default_value_t = 28)]
    crf: u8,
    /// The encoders' speed preset, as x264 names them.
    #[arg(long, default_value = "veryfast", value_parser = parse_preset)]
    preset: Preset,
    /// How long each task may take before the demo gives up.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    task_timeout: Duration,
    /// Print one JSON object with the results on the last line.
    #[arg(long)]
    json: bool,
}

fn parse_preset(name: &str) -> Result<Preset, String> {
    Preset::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<_> = Preset::ALL.iter().map(|p| p.as_str()).collect();
            format!("expected one of {}", names.join(", "))
        })
}

/// The demo's results; the last line of `--json`.
#[derive(Debug, Serialize)]
struct Summary {
    /// Pooled mean VMAF of the encode against the clip.
    vmaf: f64,
    /// Pooled mean PSNR, in dB.
    psnr: f64,
    /// Pooled mean SSIM.
    ssim: f64,
    /// The HLS master playlist.
    hls_master: PathBuf,
    /// The DASH manifest.
    dash_mpd: PathBuf,
    /// The generated clip.
    source: PathBuf,
    /// The encode.
    encode: PathBuf,
    /// The encoder the worker chose.
    encoder: String,
    /// The ladder's renditions, as `name WxH`.
    renditions: Vec<String>,
    /// Seconds each step took, enqueue to result.
    seconds: StepTimes,
}

#[derive(Debug, Default, Serialize)]
struct StepTimes {
    generate: f64,
    transcode: f64,
    analyze: f64,
    package: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _telemetry =
        spool_worker_cli::cli::init_logging(spool_worker_cli::cli::LogFormat::Human, "warn");

    std::fs::create_dir_all(&args.workdir)
        .with_context(|| format!("creating {}", args.workdir.display()))?;
    let workdir = args
        .workdir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.workdir.display()))?;

    let signing = args
        .signing_key_file
        .as_deref()
        .map(SigningKeys::from_file)
        .transpose()?;
    let config = RedisConfig {
        key_prefix: format!("spool-demo-{}", TaskId::new()),
        signing,
        ..RedisConfig::from_url(&args.redis_url)
    };
    let broker = RedisBroker::connect(config)
        .await
        .context("connecting to Redis (is it running? ops/scripts/setup.sh starts one)")?;
    let store_url = format!("sqlite://{}", workdir.join("jobs.db").display());
    let store = JobStore::create(&store_url)
        .await
        .with_context(|| format!("opening the job store {store_url}"))?;

    let outcome = run(&args, &workdir, &broker, store).await;
    // The keys go whatever happened; the files stay for a look.
    for queue in QueueName::ROUTED {
        broker.purge(&queue).await?;
    }
    let summary = outcome?;
    print(&summary);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

async fn run(
    args: &Args,
    workdir: &Path,
    broker: &RedisBroker,
    store: JobStore,
) -> Result<Summary> {
    let video_config = VideoConfig {
        input_roots: vec![workdir.to_owned()],
        output_root: workdir.to_owned(),
        ..VideoConfig::default()
    };
    // The probe runs trial encodes: a few seconds of blocking work.
    let video = tokio::task::spawn_blocking(move || VideoTasks::new(video_config))
        .await
        .context("the FFmpeg probe panicked")?
        .context("preparing the video tasks (ops/scripts/setup.sh installs FFmpeg)")?;
    eprintln!(
        "FFmpeg: {} ({}); encoders that passed a trial encode: {}; libvmaf: {}",
        video.ffmpeg().display(),
        video
            .report()
            .version
            .as_deref()
            .unwrap_or("unknown version"),
        video.encoders().join(", "),
        if video.report().libvmaf { "yes" } else { "no" },
    );

    let mut times = StepTimes::default();
    let started = Instant::now();
    let source = workdir.join("source.mp4");
    eprintln!(
        "generating a {}x{} {} fps clip of {} with lavfi: {}",
        args.width,
        args.height,
        args.fps,
        humantime::format_duration(args.duration),
        source.display()
    );
    TestClip::new(args.width, args.height)
        .fps(args.fps)
        .seconds(args.duration.as_secs_f64())
        .write(video.runner(), &source)
        .await
        .context("generating the clip")?;
    times.generate = started.elapsed().as_secs_f64();

    let stop = CancellationToken::new();
    let worker = Worker::new(
        broker.clone(),
        WorkerConfig {
            queues: vec![
                QueueName::DEFAULT,
                QueueName::ANALYSIS,
                QueueName::STREAMING,
            ],
            concurrency: 1,
            prefetch: 1,
            ..WorkerConfig::default()
        },
    )
    .with_video_tasks(&video)
    .with_store(store.clone());
    let worker = tokio::spawn(worker.run(stop.clone().cancelled_owned()));

    let client = Client::new(broker.clone()).with_store(store);
    let steps = pipeline(args, &client, &mut times).await;
    stop.cancel();
    worker
        .await
        .context("the worker panicked")?
        .context("the worker failed")?;
    let (encoded, report, streams) = steps?;

    let mean = |summary: Option<&spool_sdk::video::MetricSummary>, name: &str| {
        summary
            .map(|s| s.mean)
            .with_context(|| format!("the analysis has no {name} score"))
    };
    Ok(Summary {
        vmaf: mean(report.vmaf.as_ref(), "VMAF")?,
        psnr: mean(report.psnr.as_ref(), "PSNR")?,
        ssim: mean(report.ssim.as_ref(), "SSIM")?,
        hls_master: absolute(
            workdir,
            streams.hls_master.as_deref(),
            "HLS master playlist",
        )?,
        dash_mpd: absolute(workdir, streams.dash_mpd.as_deref(), "DASH manifest")?,
        source,
        encode: absolute(workdir, Some(Path::new(&encoded.output)), "encode")?,
        encoder: encoded.encoder,
        renditions: streams
            .renditions
            .iter()
            .map(|r| format!("{} {}x{}", r.name, r.width, r.height))
            .collect(),
        seconds: times,
    })
}

/// Transcode, then analyze the encode against the clip, then package the
/// clip, submitted as one workflow: the worker starts each node when the
/// one before it succeeded. Each step's time runs from the end of the one
/// before (from the submit, for the first) to its result.
async fn pipeline(
    args: &Args,
    client: &Client<RedisBroker>,
    times: &mut StepTimes,
) -> Result<(TranscodeOutput, AnalysisReport, PackageOutput)> {
    // The encode's path is chosen here, so the analysis can name it before
    // it exists.
    let encode = "encodes/source-h264.mp4";
    let mut wf = Workflow::new();
    wf.node(
        "transcode",
        Transcode::new("source.mp4", encode, Codec::H264)
            .rate(RateControl::Crf(args.crf))
            .preset(args.preset),
    );
    wf.node("analyze", Analyze::new("source.mp4", encode));
    wf.node(
        "package",
        Package::new("source.mp4", "streams/source").preset(args.preset),
    );
    wf.chain(&["transcode", "analyze", "package"]);
    let started = Instant::now();
    let workflow = client
        .submit_workflow(wf)
        .await
        .context("submitting the pipeline workflow")?;
    eprintln!(
        "workflow {}: submitted (transcode -> analyze -> package)",
        workflow.id()
    );

    let encoded = follow::<Transcode>(client, &workflow, "transcode", args.task_timeout).await?;
    times.transcode = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let report = follow::<Analyze>(client, &workflow, "analyze", args.task_timeout).await?;
    times.analyze = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let streams = follow::<Package>(client, &workflow, "package", args.task_timeout).await?;
    times.package = started.elapsed().as_secs_f64();
    Ok((encoded, report, streams))
}

/// Prints node `node`'s progress as it runs and returns its output.
async fn follow<T: Task>(
    client: &Client<RedisBroker>,
    workflow: &WorkflowHandle<RedisBroker>,
    node: &str,
    timeout: Duration,
) -> Result<T::Output> {
    let status = workflow.status().await?;
    let id = status
        .node(node)
        .with_context(|| format!("the workflow has no node {node}"))?
        .task_id;
    eprintln!("{} {id}: node {node}", T::NAME);
    let mut progress = client.task::<T>(id)?.progress().await?;
    let printer = tokio::spawn(async move {
        while let Some(report) = progress.next().await {
            eprintln!("{}: {report}", T::NAME);
        }
    });
    let output = workflow.wait::<T>(node, timeout).await;
    printer.abort();
    output.with_context(|| format!("node {node} ({} {id}) did not succeed", T::NAME))
}

/// `path` made absolute against `workdir` (outputs are reported relative
/// to the output root).
fn absolute(workdir: &Path, path: Option<&Path>, what: &str) -> Result<PathBuf> {
    let path = path.with_context(|| format!("the worker reported no {what}"))?;
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        workdir.join(path)
    })
}

fn print(s: &Summary) {
    println!();
    println!("encode      {} ({})", s.encode.display(), s.encoder);
    println!("VMAF        {:.2}", s.vmaf);
    println!("PSNR        {:.2} dB", s.psnr);
    println!("SSIM        {:.4}", s.ssim);
    println!("HLS         {}", s.hls_master.display());
    println!("DASH        {}", s.dash_mpd.display());
    println!("renditions  {}", s.renditions.join(", "));
    println!(
        "seconds     generate {:.1}, transcode {:.1}, analyze {:.1}, package {:.1}",
        s.seconds.generate, s.seconds.transcode, s.seconds.analyze, s.seconds.package
    );
}

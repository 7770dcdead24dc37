//! `spool-demo`: Spool's main job end to end, on a real Redis.
//!
//! An "upload" becomes an encode, quality scores and streams, as ONE
//! ingest workflow (`spool_sdk::video::Ingest`):
//!
//! 1. a test clip is generated with FFmpeg's `lavfi` sources (a moving
//!    test pattern with a keyframe every 2 s, and a tone; 10 s of 1080p
//!    by default);
//! 2. `video.split` plans chunks at its keyframes (`--chunk`, 2 s by
//!    default) and adds a `video.encode_chunk` per chunk, one
//!    `video.encode_audio` and the `video.join` (queue `default`), served
//!    by two `spool-worker` processes, so the chunks are encoded side by
//!    side; the join copies them into one file and validates it;
//! 3. `video.analyze` scores the encode against the clip: VMAF, PSNR and
//!    SSIM (queue `analysis`);
//! 4. `video.package` turns the clip into an HLS and DASH ladder in one
//!    FFmpeg run (queue `streaming`).
//!
//! Analysis and packaging run in a worker inside this process, after the
//! join. Progress across the stages is printed as it comes (frames done
//! over total, fps, ETA); then the chunk map (which process encoded which
//! chunk, and how long it took), the per-stage times, the scores and the
//! output paths. With `--json` the last line is one JSON object with
//! `vmaf`, `psnr`, `ssim` (pooled means), `hls_master` and `dash_mpd`
//! (absolute paths), and the chunk figures (`chunks`, `seconds.split`,
//! `seconds.join`, `seconds.validate`). Without a `spool-worker` beside
//! this binary, the in-process worker encodes the chunks too.
//!
//! The Redis keys live under a fresh prefix that is deleted at the end;
//! the files stay in `--workdir`.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::StreamExt as _;
use serde::Serialize;
use spool_broker::store::JobStore;
use spool_broker::{Broker, QueueName, RedisBroker, RedisConfig, SigningKeys, TaskId};
use spool_sdk::Client;
use spool_sdk::video::{
    ChunkOutput, ChunkPolicy, Codec, CrfSearch, EncodeChunk, Ingest, IngestOutput, Package, Preset,
    RateControl, Rendition, RungQuality, chunk_node,
};
use spool_video::{
    FfmpegArgs, FfmpegRunner, Input, Output, RunOptions, StageBand, VideoConfig, VideoTasks,
    WithVideoTasks,
};
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
    /// The length chunks aim for (the clip has a keyframe every 2 s).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    chunk: Duration,
    /// How many `spool-worker` processes encode the chunks.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=16))]
    encode_workers: u16,
    /// How long each task may take before the demo gives up.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    task_timeout: Duration,
    /// The VMAF the ladder's two tallest rungs target: their CRFs are
    /// picked from sample encodes (a quality-targeted ladder).
    #[arg(long, default_value_t = 93.0, value_parser = parse_vmaf)]
    target_vmaf: f64,
    /// Package the fixed-bitrate ladder instead of the quality-targeted one.
    #[arg(long)]
    fixed_ladder: bool,
    /// Print one JSON object with the results on the last line.
    #[arg(long)]
    json: bool,
}

fn parse_vmaf(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(score) if (1.0..=100.0).contains(&score) => Ok(score),
        _ => Err(format!("{text:?} is not a VMAF score from 1 to 100")),
    }
}

/// The package of the ingest: the default ladder, whose two tallest rungs
/// target `target_vmaf` unless `fixed`. A targeted rung's bitrate is only
/// a ceiling (`-maxrate`), set high so that it never caps the picked CRF.
fn demo_package(target_vmaf: f64, fixed: bool) -> Package {
    let package = Package::new("source.mp4", "streams/source");
    if fixed {
        return package;
    }
    let ladder = Rendition::default_ladder()
        .into_iter()
        .enumerate()
        .map(|(i, rung)| {
            if i < 2 {
                let ceiling = rung.video_kbps * 4;
                Rendition::new(rung.name, rung.height, ceiling, rung.audio_kbps)
                    .target_vmaf(target_vmaf)
            } else {
                rung
            }
        })
        .collect();
    package.ladder(ladder)
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
    /// Seconds each step took: `transcode` from the submit to the join's
    /// end (split, chunks, audio, join), `analyze` and `package` from
    /// then to their end (they run side by side); `split`, `join` and
    /// `validate` as the tasks measured them.
    seconds: StepTimes,
    /// The chunks, in output order.
    chunks: Vec<ChunkRow>,
    /// Why the split encoded the clip whole, if it did.
    fallback: Option<String>,
    /// The quality-targeted rungs: the CRF picked, the VMAF predicted
    /// from the samples and achieved by the encode, the bitrate saved
    /// against the fixed-CRF ladder (empty with `--fixed-ladder`).
    quality: Vec<RungQuality>,
}

#[derive(Debug, Default, Serialize)]
struct StepTimes {
    generate: f64,
    transcode: f64,
    analyze: f64,
    package: f64,
    split: f64,
    join: f64,
    validate: f64,
}

/// One chunk of the chunk map.
#[derive(Debug, Serialize)]
struct ChunkRow {
    index: u32,
    start_s: f64,
    end_s: f64,
    frames: u64,
    /// The worker process that encoded it.
    pid: u32,
    encoder: String,
    encode_s: f64,
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
    let prefix = format!("spool-demo-{}", TaskId::new());
    let config = RedisConfig {
        key_prefix: prefix.clone(),
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

    let outcome = run(&args, &workdir, &broker, &prefix, store).await;
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
    prefix: &str,
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
    generate_clip(video.runner(), args, &source)
        .await
        .context("generating the clip")?;
    times.generate = started.elapsed().as_secs_f64();

    // The chunks go to spool-worker processes when there are any to
    // start; this process's worker takes what they do not serve.
    let mut encoders = Vec::new();
    match sibling_worker() {
        Some(exe) if args.encode_workers > 0 => {
            for _ in 0..args.encode_workers {
                encoders.push(spawn_encoder(&exe, args, prefix, workdir, video.ffmpeg())?);
            }
            let pids: Vec<String> = encoders.iter().map(|c| c.id().to_string()).collect();
            eprintln!(
                "encoding chunks in {} spool-worker processes (pids {})",
                encoders.len(),
                pids.join(", ")
            );
        }
        _ => eprintln!("encoding chunks in this process (no spool-worker beside it)"),
    }
    let mut queues = vec![QueueName::ANALYSIS, QueueName::STREAMING];
    if encoders.is_empty() {
        queues.push(QueueName::DEFAULT);
    }
    let stop = CancellationToken::new();
    let worker = Worker::new(
        broker.clone(),
        WorkerConfig {
            queues,
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
    for child in &encoders {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for mut child in encoders {
        let _ = child.wait();
    }
    worker
        .await
        .context("the worker panicked")?
        .context("the worker failed")?;
    let (done, chunks) = steps?;

    let report = done
        .analysis
        .as_ref()
        .context("the ingest was not analysed")?;
    let streams = done
        .package
        .as_ref()
        .context("the ingest was not packaged")?;
    let mean = |summary: Option<&spool_sdk::video::MetricSummary>, name: &str| {
        summary
            .map(|s| s.mean)
            .with_context(|| format!("the analysis has no {name} score"))
    };
    let split = done.split.as_ref();
    let encoder = chunks
        .iter()
        .map(|c| c.encoder.clone())
        .find(|e| !e.is_empty())
        .or_else(|| done.transcode.as_ref().map(|t| t.encoder.clone()))
        .unwrap_or_default();
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
        encode: absolute(workdir, Some(Path::new(&done.output)), "encode")?,
        encoder,
        renditions: streams
            .renditions
            .iter()
            .map(|r| format!("{} {}x{}", r.name, r.width, r.height))
            .collect(),
        seconds: times,
        chunks,
        fallback: split.and_then(|s| s.fallback.clone()),
        quality: streams.quality.clone(),
    })
}

/// The clip: a moving test pattern with a keyframe every 2 s (where
/// chunks may be cut) and a tone, near-lossless, as a reference for the
/// scores.
async fn generate_clip(runner: &FfmpegRunner, args: &Args, out: &Path) -> Result<()> {
    let seconds = args.duration.as_secs_f64();
    let ffargs = FfmpegArgs::new()
        .input(Input::lavfi(format!(
            "testsrc2=size={}x{}:rate={}:duration={seconds}",
            args.width, args.height, args.fps
        )))
        .input(Input::lavfi(format!(
            "sine=frequency=440:sample_rate=48000:duration={seconds}"
        )))
        .output(
            Output::file(out)
                .map("0:v")
                .map("1:a")
                .option("-c:v", "libx264")
                .option("-preset", "ultrafast")
                .option("-crf", 12)
                .option("-g", args.fps * 2)
                .option("-pix_fmt", "yuv420p")
                .option("-c:a", "aac")
                .option("-b:a", "96k")
                .option("-f", "mp4"),
        );
    runner
        .run(
            &ffargs,
            RunOptions::new(StageBand::PROCESSING, CancellationToken::new()),
            |_| {},
        )
        .await?;
    Ok(())
}

/// `spool-worker` beside this binary, if built.
fn sibling_worker() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.with_file_name("spool-worker");
    exe.is_file().then_some(exe)
}

/// A `spool-worker` process serving the `default` queue (split, chunks,
/// audio, join) under the demo's prefix, one task at a time.
fn spawn_encoder(
    exe: &Path,
    args: &Args,
    prefix: &str,
    workdir: &Path,
    ffmpeg: &Path,
) -> Result<std::process::Child> {
    let mut command = std::process::Command::new(exe);
    command
        .env("SPOOL_REDIS_URL", &args.redis_url)
        .env("SPOOL_KEY_PREFIX", prefix)
        .env("SPOOL_FFMPEG", ffmpeg)
        .env("SPOOL_INPUT_ROOT", workdir)
        .env("SPOOL_OUTPUT_ROOT", workdir)
        .env("SPOOL_QUEUES", "default")
        .env("SPOOL_LOG", "warn")
        .args(["--processes", "0", "--concurrency", "1", "--prefetch", "1"])
        .args([
            "--no-probe",
            "--metrics-addr",
            "none",
            "--poll-interval",
            "100ms",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    if let Some(file) = &args.signing_key_file {
        command.env("SPOOL_SIGNING_KEY_FILE", file);
    }
    command.spawn().context("starting spool-worker")
}

/// The ingest, submitted as one workflow; its progress printed as it
/// comes; its stage times recorded.
async fn pipeline(
    args: &Args,
    client: &Client<RedisBroker>,
    times: &mut StepTimes,
) -> Result<(IngestOutput, Vec<ChunkRow>)> {
    let ingest = Ingest::new("source.mp4", "encodes/source-h264.mp4", Codec::H264)
        .rate(RateControl::Crf(args.crf))
        .preset(args.preset)
        .chunked(ChunkPolicy::new(
            args.chunk,
            args.chunk.min(Duration::from_secs(1)),
        ))
        .analyze(true)
        .package_with(demo_package(args.target_vmaf, args.fixed_ladder).preset(args.preset))
        // Three CRFs on two 1 s scenes per targeted rung: a few seconds of
        // sample encodes each, so the demo still ends in minutes.
        .crf_search(CrfSearch {
            points: 3,
            samples: 2,
            sample_duration: Duration::from_secs(1),
            ..CrfSearch::default()
        });
    let started = Instant::now();
    let handle = ingest
        .submit(client)
        .await
        .context("submitting the ingest workflow")?;
    eprintln!(
        "workflow {}: submitted (split -> chunks + audio -> join -> analyze, package)",
        handle.workflow().id()
    );
    let mut progress = handle.progress();
    let deadline = Instant::now() + args.task_timeout * 3;
    let (mut encoded_at, mut analyzed_at, mut packaged_at) = (None, None, None);
    while let Some(item) = tokio::time::timeout_at(deadline.into(), progress.next())
        .await
        .context("the ingest took too long")?
    {
        let p = item?;
        let at = started.elapsed().as_secs_f64();
        let done = |stage: &str| {
            p.stages
                .iter()
                .any(|s| s.stage == stage && s.nodes > 0 && s.nodes_done == s.nodes)
        };
        let encode_nodes = p
            .stages
            .iter()
            .find(|s| s.stage == "encode")
            .map_or(0, |s| s.nodes);
        if encoded_at.is_none() && encode_nodes > 1 && done("encode") {
            encoded_at = Some(at);
        }
        if analyzed_at.is_none() && done("analyze") {
            analyzed_at = Some(at);
        }
        if packaged_at.is_none() && done("package") {
            packaged_at = Some(at);
        }
        let eta = p.eta.map_or_else(
            || "-".to_owned(),
            |eta| format!("{:.0} s", eta.as_secs_f64()),
        );
        let stages: Vec<String> = p
            .stages
            .iter()
            .map(|s| format!("{} {}/{}", s.stage, s.nodes_done, s.nodes))
            .collect();
        eprintln!(
            "ingest: {}/{} frames, {:.0} fps, ETA {eta} ({})",
            p.frames_done,
            p.frames_total,
            p.fps,
            stages.join(", ")
        );
    }
    let done = handle
        .wait(args.task_timeout)
        .await
        .context("the ingest did not succeed")?;
    let encoded = encoded_at.unwrap_or(0.0);
    times.transcode = encoded;
    times.analyze = analyzed_at.map_or(0.0, |t| t - encoded);
    times.package = packaged_at.map_or(0.0, |t| t - encoded);
    let mut rows = Vec::new();
    if let Some(split) = &done.split {
        times.split = split.plan_time.as_secs_f64();
        for chunk in &split.chunks {
            let out: ChunkOutput = handle
                .workflow()
                .wait::<EncodeChunk>(&chunk_node(chunk.index), Duration::from_secs(10))
                .await?;
            rows.push(ChunkRow {
                index: chunk.index,
                start_s: chunk.start().as_secs_f64(),
                end_s: (chunk.start() + chunk.duration()).as_secs_f64(),
                frames: chunk.frames,
                pid: out.worker_pid,
                encoder: out.encoder,
                encode_s: out.encode_time.as_secs_f64(),
            });
        }
    }
    if let Some(join) = &done.join {
        times.join = join.join_time.as_secs_f64();
        times.validate = join.validate_time.as_secs_f64();
    }
    Ok((done, rows))
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
    if !s.chunks.is_empty() {
        println!("chunk  span            frames  pid      encode");
        for c in &s.chunks {
            println!(
                "{:<6} {:>5.2}-{:<5.2} s   {:>6}  {:<8} {:.2} s ({})",
                c.index, c.start_s, c.end_s, c.frames, c.pid, c.encode_s, c.encoder
            );
        }
    }
    if let Some(reason) = &s.fallback {
        println!("whole       {reason}");
    }
    println!("encode      {} ({})", s.encode.display(), s.encoder);
    println!("VMAF        {:.2}", s.vmaf);
    println!("PSNR        {:.2} dB", s.psnr);
    println!("SSIM        {:.4}", s.ssim);
    println!("HLS         {}", s.hls_master.display());
    println!("DASH        {}", s.dash_mpd.display());
    println!("renditions  {}", s.renditions.join(", "));
    for q in &s.quality {
        println!(
            "targeted    {}: CRF {} for VMAF {}, predicted {}, achieved {:.2}, {:.0} kb/s, saved {} against CRF {}",
            q.name,
            q.crf,
            q.target_vmaf.map_or("-".to_owned(), |t| format!("{t:.1}")),
            q.predicted_vmaf
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
            q.achieved_vmaf,
            q.kbps,
            q.saved_percent
                .map_or("-".to_owned(), |p| format!("{p:.1} %")),
            q.fixed_crf.map_or("-".to_owned(), |c| c.to_string()),
        );
    }
    println!(
        "seconds     generate {:.1}, transcode {:.1} (split {:.2}, join {:.2}, validate {:.2}), \
         analyze {:.1}, package {:.1}",
        s.seconds.generate,
        s.seconds.transcode,
        s.seconds.split,
        s.seconds.join,
        s.seconds.validate,
        s.seconds.analyze,
        s.seconds.package
    );
}

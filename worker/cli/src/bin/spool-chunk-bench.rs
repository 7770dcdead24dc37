//! `spool-chunk-bench`: a chunked encode against one FFmpeg.
//!
//! It generates a test clip with lavfi (a moving pattern, a keyframe
//! every 2 s, a tone), then:
//!
//! - **single**: the exact FFmpeg command a whole-file `video.transcode`
//!   runs (from `TranscodeHandler::command_line`), as one subprocess using
//!   every core;
//! - **chunked ×N**, for each N of `--workers`: N `spool-worker`
//!   processes (`--processes 0 --concurrency 1`, each FFmpeg free to use
//!   every core) serve one `Ingest` workflow: split, chunks, audio, join
//!   with validation. Timed from the submit to the join's result.
//!
//! CPU time is what the processes used, from `getrusage(RUSAGE_CHILDREN)`
//! around each run (FFmpeg, ffprobe and the workers, once reaped). Each
//! stage's own CPU time comes from its task output: the workers reap every
//! FFmpeg and ffprobe they start with `wait4` and report its rusage (user +
//! system, exact whatever else the machine runs). The overhead of chunking
//! is the CPU time of the split (packet index), the join (concat, audio
//! index) and the validation (the join's checks, and each chunk's and the
//! audio's read-back) as a share of the CPU time of the encodes (chunks
//! and audio); the wall times are printed beside. With `--vmaf`
//! each output is scored against the clip (libvmaf, every `--vmaf-every`
//! frame). Prints a table, or with `--json` one JSON object on the last
//! line. Redis keys live under a random prefix and are deleted afterwards;
//! the working directory too, unless `--keep`.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::sys::resource::{UsageWho, getrusage};
use serde::Serialize;
use spool_broker::{QueueName, RedisBroker, RedisConfig, TaskId};
use spool_sdk::Client;
use spool_sdk::video::{
    AudioOutput, ChunkOutput, ChunkPolicy, Codec, EncodeAudio, EncodeChunk, Ingest, Preset,
    RateControl, Transcode, chunk_node,
};
use spool_video::{
    FfmpegArgs, FfmpegRunner, Input, Output, RunOptions, StageBand, TranscodeHandler, VideoConfig,
    VideoTasks,
};
use tokio_util::sync::CancellationToken;

/// Measure a chunked encode across worker processes against one FFmpeg.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version)]
struct Args {
    /// The Redis to run through.
    #[arg(
        long,
        env = "SPOOL_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// The FFmpeg to use (default: SPOOL_FFMPEG, then PATH).
    #[arg(long, env = "SPOOL_FFMPEG")]
    ffmpeg: Option<PathBuf>,
    /// Where the clip and the encodes go (a fresh temporary directory by
    /// default, removed afterwards).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Keep the working directory.
    #[arg(long)]
    keep: bool,
    /// The clip's length in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// The clip's width.
    #[arg(long, default_value_t = 1920)]
    width: u32,
    /// The clip's height.
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// The clip's frame rate.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// The codec: h264 (x264) or av1 (SVT-AV1).
    #[arg(long, default_value = "h264", value_parser = parse_codec)]
    codec: Codec,
    /// The constant rate factor.
    #[arg(long, default_value_t = 28)]
    crf: u8,
    /// The speed preset, as x264 names them.
    #[arg(long, default_value = "medium", value_parser = parse_preset)]
    preset: Preset,
    /// The chunk length to aim for (the clip has a keyframe every 2 s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    chunk: Duration,
    /// The worker process counts to run the chunked encode with.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    workers: Vec<usize>,
    /// Score each output against the clip with libvmaf.
    #[arg(long)]
    vmaf: bool,
    /// Score one frame in this many.
    #[arg(long, default_value_t = 5)]
    vmaf_every: u32,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

fn parse_codec(name: &str) -> Result<Codec, String> {
    match name {
        "h264" => Ok(Codec::H264),
        "av1" => Ok(Codec::Av1),
        "hevc" => Ok(Codec::Hevc),
        _ => Err("expected h264, hevc or av1".to_owned()),
    }
}

fn parse_preset(name: &str) -> Result<Preset, String> {
    Preset::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .ok_or_else(|| "expected an x264 preset name".to_owned())
}

#[derive(Debug, Serialize)]
struct Figures {
    clip: String,
    frames: u64,
    codec: String,
    preset: String,
    crf: u8,
    cores: usize,
    single: RunFigures,
    chunked: Vec<ChunkedFigures>,
}

#[derive(Debug, Serialize)]
struct RunFigures {
    wall_s: f64,
    cpu_s: f64,
    vmaf: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ChunkedFigures {
    workers: usize,
    chunks: usize,
    wall_s: f64,
    cpu_s: f64,
    vmaf: Option<f64>,
    speedup: f64,
    /// Wall times of the split, the concat and the validation.
    split_s: f64,
    join_s: f64,
    validate_s: f64,
    /// CPU times (exact, from the children's rusage) of the split, the
    /// join, the validation, and the chunks' and audio's read-back checks.
    split_cpu_s: f64,
    join_cpu_s: f64,
    validate_cpu_s: f64,
    checks_cpu_s: f64,
    /// CPU time of the encodes: the chunks' FFmpeg runs and the audio's.
    encode_cpu_s: f64,
    /// CPU time of the worker processes themselves (not their children).
    workers_own_cpu_s: f64,
    /// (split + join + validation + checks) CPU over the encodes' CPU.
    overhead_share: f64,
    /// The same with wall times over the encodes' CPU (the old measure).
    overhead_wall_share: f64,
    chunk_map: Vec<String>,
}

/// CPU seconds (user + system) of this process's reaped children.
fn children_cpu() -> f64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |usage| {
        let seconds = |t: nix::sys::time::TimeVal| {
            #[allow(clippy::cast_precision_loss, reason = "seconds of CPU time")]
            let s = t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            s
        };
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _telemetry =
        spool_worker_cli::cli::init_logging(spool_worker_cli::cli::LogFormat::Human, "warn");
    let workdir = match &args.workdir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("spool-chunk-bench-{}", TaskId::new())),
    };
    std::fs::create_dir_all(&workdir)?;
    let workdir = workdir.canonicalize()?;
    let outcome = bench(&args, &workdir).await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    let figures = outcome?;
    print_table(&figures);
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}

async fn bench(args: &Args, workdir: &Path) -> Result<Figures> {
    let config = VideoConfig {
        ffmpeg: args.ffmpeg.clone(),
        input_roots: vec![workdir.to_owned()],
        output_root: workdir.to_owned(),
        ..VideoConfig::default()
    };
    let video = tokio::task::spawn_blocking(move || VideoTasks::new(config)).await??;
    let ffmpeg = video.ffmpeg().to_owned();
    let source = workdir.join("source.mp4");
    eprintln!(
        "generating {}x{} {} fps, {} s: {}",
        args.width,
        args.height,
        args.fps,
        args.seconds,
        source.display()
    );
    generate(video.runner(), args, &source).await?;
    let frames = u64::from(args.seconds) * u64::from(args.fps);

    // One FFmpeg, the command a whole transcode runs.
    let task = Transcode::new("source.mp4", "single.mp4", args.codec)
        .rate(RateControl::Crf(args.crf))
        .preset(args.preset);
    let line = TranscodeHandler::new(&video).command_line(&task)?;
    eprintln!("single FFmpeg ({} {})…", args.codec, args.preset.as_str());
    let cpu = children_cpu();
    let started = Instant::now();
    let status = Command::new(&ffmpeg)
        .args(&line)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("the single FFmpeg failed ({status})");
    }
    let single_wall = started.elapsed().as_secs_f64();
    let single = RunFigures {
        wall_s: single_wall,
        cpu_s: children_cpu() - cpu,
        vmaf: if args.vmaf {
            Some(vmaf(
                &ffmpeg,
                &workdir.join("single.mp4"),
                &source,
                args.vmaf_every,
            )?)
        } else {
            None
        },
    };

    let mut chunked = Vec::new();
    for &workers in &args.workers {
        eprintln!("chunked on {workers} worker process(es)…");
        let run = chunked_run(args, workdir, &ffmpeg, workers).await?;
        chunked.push(run);
    }
    for run in &mut chunked {
        run.speedup = single.wall_s / run.wall_s;
    }
    Ok(Figures {
        clip: format!(
            "{}x{} {} fps {} s",
            args.width, args.height, args.fps, args.seconds
        ),
        frames,
        codec: args.codec.to_string(),
        preset: args.preset.as_str().to_owned(),
        crf: args.crf,
        cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        single,
        chunked,
    })
}

/// The clip: a moving pattern with a keyframe every 2 s, and a tone.
async fn generate(runner: &FfmpegRunner, args: &Args, out: &Path) -> Result<()> {
    let seconds = args.seconds;
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
                .option("-f", "mp4"),
        );
    runner
        .run(
            &ffargs,
            RunOptions::new(StageBand::PROCESSING, CancellationToken::new()),
            |_| {},
        )
        .await
        .context("generating the clip")?;
    Ok(())
}

fn spawn_worker(args: &Args, workdir: &Path, ffmpeg: &Path, prefix: &str) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let worker = exe.with_file_name("spool-worker");
    if !worker.is_file() {
        bail!(
            "{} is not built: cargo build -p spool-worker-cli --bin spool-worker",
            worker.display()
        );
    }
    Ok(Command::new(worker)
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
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

async fn chunked_run(
    args: &Args,
    workdir: &Path,
    ffmpeg: &Path,
    workers: usize,
) -> Result<ChunkedFigures> {
    let prefix = format!("spool-chunk-bench-{}", TaskId::new());
    let broker = RedisBroker::connect(RedisConfig {
        key_prefix: prefix.clone(),
        ..RedisConfig::from_url(&args.redis_url)
    })
    .await
    .context("connecting to Redis")?;
    let cpu = children_cpu();
    let mut children = Vec::new();
    for _ in 0..workers {
        children.push(spawn_worker(args, workdir, ffmpeg, &prefix)?);
    }
    let client = Client::new(broker.clone());
    let output = format!("chunked-{workers}.mp4");
    let started = Instant::now();
    let handle = Ingest::new("source.mp4", output.as_str(), args.codec)
        .rate(RateControl::Crf(args.crf))
        .preset(args.preset)
        .chunked(ChunkPolicy::new(
            args.chunk,
            Duration::from_secs(2).min(args.chunk),
        ))
        .submit(&client)
        .await?;
    let done = handle.wait(Duration::from_secs(6 * 3600)).await;
    let wall = started.elapsed().as_secs_f64();
    let mut map = Vec::new();
    let mut encode_cpu = 0.0;
    let mut checks_cpu = 0.0;
    let mut reported = true;
    let mut seconds = |cpu: Option<Duration>| {
        reported &= cpu.is_some();
        cpu.unwrap_or_default().as_secs_f64()
    };
    if let Ok(done) = &done {
        let split = done.split.as_ref().context("no split")?;
        for chunk in &split.chunks {
            let out: ChunkOutput = handle
                .workflow()
                .wait::<EncodeChunk>(&chunk_node(chunk.index), Duration::from_secs(10))
                .await?;
            let chunk_cpu = seconds(out.encode_cpu);
            encode_cpu += chunk_cpu;
            checks_cpu += seconds(out.check_cpu);
            map.push(format!(
                "{} [{:.1}-{:.1} s] {} frames, pid {}, {:.1} s, {:.1} CPU s",
                chunk.index,
                chunk.start().as_secs_f64(),
                (chunk.start() + chunk.duration()).as_secs_f64(),
                chunk.frames,
                out.worker_pid,
                out.encode_time.as_secs_f64(),
                chunk_cpu
            ));
        }
        // A fallback encodes whole, audio included: no audio node.
        if split.audio && split.fallback.is_none() {
            let out: AudioOutput = handle
                .workflow()
                .wait::<EncodeAudio>(Ingest::AUDIO, Duration::from_secs(10))
                .await?;
            encode_cpu += seconds(out.encode_cpu);
            checks_cpu += seconds(out.check_cpu);
        }
    }
    // Warm shutdown, then reap: their CPU time counts once reaped.
    for child in &children {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for mut child in children {
        let _ = child.wait();
    }
    for queue in QueueName::ROUTED {
        let _ = spool_broker::Broker::purge(&broker, &queue).await;
    }
    let cpu = children_cpu() - cpu;
    let done = done.context("the chunked ingest failed")?;
    let split = done.split.context("no split")?;
    if let Some(reason) = &split.fallback {
        bail!("the split fell back to a whole encode: {reason}");
    }
    let join = done.join.context("no join")?;
    let (split_s, join_s, validate_s) = (
        split.plan_time.as_secs_f64(),
        join.join_time.as_secs_f64(),
        join.validate_time.as_secs_f64(),
    );
    let (split_cpu, join_cpu, validate_cpu) = (
        seconds(split.plan_cpu),
        seconds(join.join_cpu),
        seconds(join.validate_cpu),
    );
    if !reported {
        bail!("a stage reported no CPU time: is spool-worker built from this tree?");
    }
    let overhead_cpu = split_cpu + join_cpu + validate_cpu + checks_cpu;
    let vmaf_score = if args.vmaf {
        Some(vmaf(
            ffmpeg,
            &workdir.join(&output),
            &workdir.join("source.mp4"),
            args.vmaf_every,
        )?)
    } else {
        None
    };
    Ok(ChunkedFigures {
        workers,
        chunks: split.chunks.len(),
        wall_s: wall,
        cpu_s: cpu,
        vmaf: vmaf_score,
        speedup: 0.0,
        split_s,
        join_s,
        validate_s,
        split_cpu_s: split_cpu,
        join_cpu_s: join_cpu,
        validate_cpu_s: validate_cpu,
        checks_cpu_s: checks_cpu,
        encode_cpu_s: encode_cpu,
        workers_own_cpu_s: cpu - encode_cpu - overhead_cpu,
        overhead_share: overhead_cpu / encode_cpu.max(f64::EPSILON),
        overhead_wall_share: (split_s + join_s + validate_s) / encode_cpu.max(f64::EPSILON),
        chunk_map: map,
    })
}

/// The pooled VMAF of `distorted` against `reference`, scoring one frame
/// in `every`.
fn vmaf(ffmpeg: &Path, distorted: &Path, reference: &Path, every: u32) -> Result<f64> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let out = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(distorted)
        .arg("-i")
        .arg(reference)
        .args([
            "-lavfi",
            &format!("[0:v][1:v]libvmaf=n_threads={threads}:n_subsample={every}"),
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::null())
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .find_map(|l| {
            l.split("VMAF score:")
                .nth(1)
                .and_then(|v| v.trim().parse().ok())
        })
        .with_context(|| {
            format!(
                "no VMAF score from FFmpeg: {}",
                log.lines().last().unwrap_or("")
            )
        })
}

fn print_table(f: &Figures) {
    println!();
    println!(
        "clip {} ({} frames), {} {} CRF {}, {} cores",
        f.clip, f.frames, f.codec, f.preset, f.crf, f.cores
    );
    let vmaf = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    println!(
        "{:<22} {:>8} {:>8} {:>7} {:>8} {:>13}",
        "run", "wall s", "CPU s", "VMAF", "speedup", "overhead CPU"
    );
    println!(
        "{:<22} {:>8.1} {:>8.1} {:>7} {:>8} {:>13}",
        "one FFmpeg",
        f.single.wall_s,
        f.single.cpu_s,
        vmaf(f.single.vmaf),
        "1.00x",
        "-"
    );
    for run in &f.chunked {
        println!(
            "{:<22} {:>8.1} {:>8.1} {:>7} {:>7.2}x {:>12.2}%",
            format!("chunked, {} worker(s)", run.workers),
            run.wall_s,
            run.cpu_s,
            vmaf(run.vmaf),
            run.speedup,
            run.overhead_share * 100.0
        );
        println!(
            "    {} chunks; CPU s: encodes {:.2} (chunks + audio), split {:.3}, join {:.3}, \
             validation {:.3}, chunk checks {:.3}, workers' own {:.2}",
            run.chunks,
            run.encode_cpu_s,
            run.split_cpu_s,
            run.join_cpu_s,
            run.validate_cpu_s,
            run.checks_cpu_s,
            run.workers_own_cpu_s
        );
        println!(
            "    wall s: split {:.2}, join {:.2}, validation {:.2} ({:.2}% of the encodes' CPU)",
            run.split_s,
            run.join_s,
            run.validate_s,
            run.overhead_wall_share * 100.0
        );
        for line in &run.chunk_map {
            println!("    chunk {line}");
        }
    }
}

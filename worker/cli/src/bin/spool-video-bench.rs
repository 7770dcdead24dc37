//! `spool-video-bench`: what running FFmpeg through Spool costs.
//!
//! It generates a test clip with lavfi, then alternates, for `--rounds`
//! rounds:
//!
//! - **direct**: the exact FFmpeg command line a `video.transcode` runs
//!   (from `TranscodeHandler::command_line`), run as a plain subprocess
//!   with its stderr discarded;
//! - **spool**: the same transcode enqueued through Redis to a worker in
//!   this process, timed from the enqueue until the typed result is back
//!   (ffprobe before and after, progress parsing, the job store, Redis).
//!
//! Then it scores the encode against the clip with `video.analyze`
//! (VMAF + PSNR + SSIM, then PSNR + SSIM alone) and reports frames per
//! second. Prints a table, or with `--json` one JSON object on the last
//! line. Redis keys live under a random prefix and are deleted afterwards,
//! as is the scratch directory.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use redis::AsyncCommands;
use serde::Serialize;
use spool_broker::store::JobStore;
use spool_broker::{RedisBroker, RedisConfig};
use spool_sdk::Client;
use spool_sdk::video::{Analyze, Audio, Codec, Metrics, Preset, RateControl, Size, Transcode};
use spool_video::{
    FfmpegRunner, TestClip, TranscodeHandler, VideoConfig, VideoTasks, WithVideoTasks,
};
use spool_worker::{Worker, WorkerConfig};

/// Measure FFmpeg through Spool against FFmpeg alone.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version)]
struct Args {
    /// The Redis to run through.
    #[arg(
        long,
        env = "SPOOL_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// The FFmpeg to use (default: SPOOL_FFMPEG, then PATH).
    #[arg(long)]
    ffmpeg: Option<PathBuf>,
    /// The test clip's width.
    #[arg(long, default_value_t = 1280)]
    width: u32,
    /// The test clip's height.
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// The test clip's length in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// The test clip's frame rate.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Rounds of the two transcode runs, alternated so both see the same
    /// machine; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Figures {
    clip: String,
    frames: u64,
    transcode: String,
    direct_s: Vec<f64>,
    spool_s: Vec<f64>,
    spool_handler_s: Vec<f64>,
    spool_ffmpeg_s: Vec<f64>,
    direct_median_s: f64,
    spool_median_s: f64,
    overhead_ratio: f64,
    analysis_all_fps: f64,
    analysis_psnr_ssim_fps: f64,
    vmaf_mean: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = runtime.block_on(bench(&args))?;
    print_table(&figures);
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}

async fn bench(args: &Args) -> Result<Figures> {
    let ffmpeg = args
        .ffmpeg
        .clone()
        .or_else(|| VideoConfig::default().locate_ffmpeg())
        .context("no FFmpeg: run `bash ops/scripts/setup.sh`, or pass --ffmpeg")?;
    let dir = std::env::temp_dir().join(format!("spool-video-bench-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("spool-video-bench-{:08x}", fastrand::u32(..));
    let result = run(args, &ffmpeg, &dir, &prefix).await;
    let _ = std::fs::remove_dir_all(&dir);
    cleanup(&args.redis_url, &prefix).await?;
    result
}

async fn run(args: &Args, ffmpeg: &Path, dir: &Path, prefix: &str) -> Result<Figures> {
    let clip = dir.join("clip.mp4");
    eprintln!(
        "generating a {}x{} {} s clip at {} fps",
        args.width, args.height, args.seconds, args.fps
    );
    TestClip::new(args.width, args.height)
        .fps(args.fps)
        .seconds(f64::from(args.seconds))
        .write(&FfmpegRunner::new(ffmpeg), &clip)
        .await?;
    let config = VideoConfig {
        ffmpeg: Some(ffmpeg.to_owned()),
        input_roots: vec![dir.to_owned()],
        output_root: dir.join("out"),
        ..VideoConfig::default()
    };
    let video = tokio::task::spawn_blocking(move || VideoTasks::new(config)).await??;
    let broker = RedisBroker::connect(RedisConfig {
        key_prefix: prefix.to_owned(),
        ..RedisConfig::from_url(&args.redis_url)
    })
    .await?;
    let store = JobStore::create(&format!("sqlite://{}", dir.join("jobs.db").display())).await?;
    let client = Client::new(broker.clone()).with_store(store.clone());
    let worker = Worker::new(
        broker,
        WorkerConfig {
            queues: spool_broker::QueueName::ROUTED.to_vec(),
            concurrency: 1,
            prefetch: 1,
            poll_interval: Duration::from_millis(20),
            ..WorkerConfig::default()
        },
    )
    .with_store(store)
    .with_video_tasks(&video);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));

    let task = |name: &str| {
        Transcode::new("clip.mp4", format!("out/{name}.mp4"), Codec::H264)
            .rate(RateControl::Crf(28))
            .preset(Preset::VeryFast)
            .size(Size::Height(args.height / 2))
            .audio(Audio::Aac { kbps: 128 })
    };
    let handler = TranscodeHandler::new(&video);
    let (mut direct, mut spool, mut spool_ffmpeg) = (Vec::new(), Vec::new(), Vec::new());
    let mut spool_handler = Vec::new();
    let wait = Duration::from_secs(3600);
    for round in 0..args.rounds.max(1) {
        // Alternate which goes first, so neither always gets a warm cache.
        for spool_first in [round % 2 == 0, round % 2 != 0] {
            if spool_first {
                let started = Instant::now();
                let id = client.enqueue(task(&format!("spool-{round}"))).await?;
                let handle = client.task::<Transcode>(id)?;
                let output = handle.wait(wait).await?;
                spool.push(started.elapsed().as_secs_f64());
                spool_ffmpeg.push(output.encode_time.as_secs_f64());
                if let Some(record) = handle.record().await?
                    && let (Some(start), Some(end)) = (record.started_at, record.finished_at)
                {
                    spool_handler.push(end.saturating_since(start).as_secs_f64());
                    eprintln!(
                        "  enqueue to start {:.3} s, outcome to result {:.3} s",
                        start.saturating_since(record.created_at).as_secs_f64(),
                        spool_timestamp_now().saturating_since(end).as_secs_f64()
                    );
                }
            } else {
                let line = handler.command_line(&task(&format!("direct-{round}")))?;
                let started = Instant::now();
                let status = tokio::process::Command::new(ffmpeg)
                    .args(&line)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await?;
                if !status.success() {
                    bail!("the direct FFmpeg run failed: {status}");
                }
                direct.push(started.elapsed().as_secs_f64());
            }
        }
        eprintln!(
            "round {}: direct {:.3} s, spool {:.3} s (handler {:.3} s, FFmpeg {:.3} s)",
            round + 1,
            direct[round],
            spool[round],
            spool_handler.get(round).copied().unwrap_or(f64::NAN),
            spool_ffmpeg[round]
        );
    }

    let frames = u64::from(args.seconds) * u64::from(args.fps);
    let (all_fps, vmaf) = analysis_fps(&client, Metrics::ALL, frames).await?;
    let (plain_fps, _) = analysis_fps(&client, Metrics::WITHOUT_VMAF, frames).await?;

    let _ = stop.send(());
    running.await??;
    let direct_median = median(&direct);
    let spool_median = median(&spool);
    Ok(Figures {
        clip: format!(
            "{}x{} {} s {} fps, H.264 + AAC",
            args.width, args.height, args.seconds, args.fps
        ),
        frames,
        transcode: format!("libx264 veryfast CRF 28 to {}p, AAC 128k", args.height / 2),
        direct_s: direct,
        spool_s: spool,
        spool_handler_s: spool_handler,
        spool_ffmpeg_s: spool_ffmpeg,
        direct_median_s: direct_median,
        spool_median_s: spool_median,
        overhead_ratio: spool_median / direct_median,
        analysis_all_fps: all_fps,
        analysis_psnr_ssim_fps: plain_fps,
        vmaf_mean: vmaf,
    })
}

/// Scores the first Spool encode against the clip; frames per second of
/// the whole task, and the pooled VMAF.
async fn analysis_fps(
    client: &Client<RedisBroker>,
    metrics: Metrics,
    frames: u64,
) -> Result<(f64, Option<f64>)> {
    let started = Instant::now();
    let id = client
        .enqueue(Analyze::new("clip.mp4", "out/spool-0.mp4").metrics(metrics))
        .await?;
    let report = client
        .task::<Analyze>(id)?
        .wait(Duration::from_secs(3600))
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    if u64::from(report.frames) != frames {
        eprintln!("note: {} frames scored, {frames} expected", report.frames);
    }
    Ok((
        f64::from(report.frames) / elapsed,
        report.vmaf.map(|v| v.mean),
    ))
}

fn spool_timestamp_now() -> spool_broker::Timestamp {
    spool_broker::Timestamp::now()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

async fn cleanup(url: &str, prefix: &str) -> Result<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = conn.keys(format!("{prefix}:*")).await?;
    if !keys.is_empty() {
        let () = conn.del(keys).await?;
    }
    Ok(())
}

fn print_table(f: &Figures) {
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("clip: {} ({} frames)", f.clip, f.frames);
    println!("transcode: {}", f.transcode);
    println!();
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| direct FFmpeg, s (median) | {:.3} ({}) |",
        f.direct_median_s,
        list(&f.direct_s)
    );
    println!(
        "| through Spool, enqueue to result, s (median) | {:.3} ({}) |",
        f.spool_median_s,
        list(&f.spool_s)
    );
    println!(
        "| of which the handler (start to outcome), s | {} |",
        list(&f.spool_handler_s)
    );
    println!(
        "| of which FFmpeg itself, s | {} |",
        list(&f.spool_ffmpeg_s)
    );
    println!("| Spool / direct | {:.4} |", f.overhead_ratio);
    println!(
        "| analysis VMAF+PSNR+SSIM, frames/s | {:.1} |",
        f.analysis_all_fps
    );
    println!(
        "| analysis PSNR+SSIM, frames/s | {:.1} |",
        f.analysis_psnr_ssim_fps
    );
    if let Some(vmaf) = f.vmaf_mean {
        println!("| VMAF of the encode | {vmaf:.2} |");
    }
}

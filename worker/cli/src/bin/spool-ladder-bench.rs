//! `spool-ladder-bench`: what `video.package`'s one-pass ladder saves.
//!
//! On one generated clip (`testsrc2` and a tone, made with FFmpeg's
//! `lavfi`), with the ladder `video.package` plans for it, it times three
//! ways of writing the same HLS and DASH package, each through the worker's
//! FFmpeg runner:
//!
//! - **one pass** (what `video.package` runs): one FFmpeg, the video decoded
//!   once, split and scaled per rendition, each rendition encoded once, and
//!   the `tee` muxer writing HLS and DASH from the same packets;
//! - **two outputs**: one FFmpeg with an HLS output and a DASH output, each
//!   encoding its own copy of every rendition (the alternative to `tee`);
//! - **one run per rendition**: an FFmpeg per rendition, each decoding the
//!   source again (the defect `video.package` avoids).
//!
//! Each package is validated like the task validates its output. Rounds
//! alternate the modes, so each sees the same machine; medians of the wall
//! time and of FFmpeg's CPU time (user + system, from `getrusage` of the
//! reaped children) are reported. Prints a table, or with `--json` one JSON
//! object on the last line.
//!
//! With `--targeted` it measures a quality-targeted ladder instead (see
//! `spool_ladder_bench_parts/targeted.rs`): the samples' wall time, each
//! rung's chosen CRF, predicted and achieved VMAF, and the bitrate saved
//! against the fixed-CRF ladder, both packaged whole.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

#[path = "spool_ladder_bench_parts/targeted.rs"]
mod targeted;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nix::sys::resource::{UsageWho, getrusage};
use serde::Serialize;
use spool_sdk::video::{Package, Preset, Rendition};
use spool_video::ladder::{self, Ladder};
use spool_video::manifest::{self, Expected};
use spool_video::package::{DASH_MPD, HLS_MASTER, LadderEncode, package_command, tee_slaves};
use spool_video::{
    FfmpegArgs, MediaInfo, Output, RunOptions, StageBand, TestClip, VideoConfig, VideoTasks,
};
use tokio_util::sync::CancellationToken;

/// Time the one-pass HLS/DASH ladder against its alternatives.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version)]
struct Args {
    /// The FFmpeg to run (default: `SPOOL_FFMPEG`, then `PATH`).
    #[arg(long)]
    ffmpeg: Option<PathBuf>,
    /// The clip's width.
    #[arg(long, default_value_t = 1920)]
    width: u32,
    /// The clip's height.
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// The clip's frame rate.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// The clip's duration in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// The x264 preset of every encode.
    #[arg(long, default_value = "veryfast", value_parser = parse_preset)]
    preset: Preset,
    /// The segment duration in seconds.
    #[arg(long, default_value_t = 4)]
    segment: u64,
    /// Rounds of the three modes; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where to write the clip and packages (default: a fresh directory in
    /// the system's temporary directory, removed afterwards).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Measure a quality-targeted ladder against the fixed-CRF one instead
    /// (on a clip of four moving scenes, each `--scene-seconds` long).
    #[arg(long)]
    targeted: bool,
    /// `--targeted`: the VMAF every rung aims at.
    #[arg(long, default_value_t = 93.0)]
    target_vmaf: f64,
    /// `--targeted`: the fixed-CRF ladder's CRF.
    #[arg(long, default_value_t = 23)]
    fixed_crf: u8,
    /// `--targeted`: the length of each of the clip's four scenes, in
    /// seconds.
    #[arg(long, default_value_t = 4)]
    scene_seconds: u32,
}

fn parse_preset(text: &str) -> Result<Preset, String> {
    Preset::ALL
        .into_iter()
        .find(|p| p.as_str() == text)
        .ok_or_else(|| {
            let names: Vec<_> = Preset::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown preset {text:?}; one of {}", names.join(", "))
        })
}

/// The three ways of writing the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    OnePass,
    TwoOutputs,
    PerRendition,
}

impl Mode {
    const ALL: [Self; 3] = [Self::OnePass, Self::TwoOutputs, Self::PerRendition];

    fn name(self) -> &'static str {
        match self {
            Self::OnePass => "one pass (tee)",
            Self::TwoOutputs => "two outputs",
            Self::PerRendition => "one run per rendition",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::OnePass => "one_pass",
            Self::TwoOutputs => "two_outputs",
            Self::PerRendition => "per_rendition",
        }
    }
}

/// One mode's medians.
#[derive(Debug, Serialize)]
struct ModeResult {
    mode: &'static str,
    ffmpeg_runs: usize,
    decodes: usize,
    encodes_per_rendition: usize,
    #[serde(rename = "wall_seconds")]
    wall_s: f64,
    #[serde(rename = "cpu_seconds")]
    cpu_s: f64,
    wall_vs_one_pass: f64,
    cpu_vs_one_pass: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    clip: String,
    renditions: Vec<String>,
    preset: &'static str,
    #[serde(rename = "segment_seconds")]
    segment_s: u64,
    rounds: usize,
    results: Vec<ModeResult>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let (workdir, temporary) = match &args.workdir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("spool-ladder-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&workdir)
        .with_context(|| format!("cannot create {}", workdir.display()))?;
    if args.targeted {
        let outcome = run_targeted(&args, &workdir).await;
        if temporary {
            let _ = std::fs::remove_dir_all(&workdir);
        }
        let report = outcome?;
        targeted::print_table(&report);
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        }
        return Ok(());
    }
    let outcome = run(&args, &workdir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    let report = outcome?;
    print_table(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

async fn run_targeted(args: &Args, workdir: &Path) -> Result<targeted::TargetedReport> {
    let workdir = workdir.canonicalize()?;
    let config = VideoConfig {
        ffmpeg: args.ffmpeg.clone(),
        input_roots: vec![workdir.clone()],
        output_root: workdir.clone(),
        ..VideoConfig::default()
    };
    eprintln!("probing FFmpeg (trial encodes)…");
    let tasks = VideoTasks::new(config)?;
    let settings = targeted::Settings {
        width: args.width,
        height: args.height,
        fps: args.fps,
        scene_seconds: args.scene_seconds,
        preset: args.preset,
        segment: args.segment,
        target_vmaf: args.target_vmaf,
        search: spool_sdk::video::CrfSearch {
            fixed_crf: args.fixed_crf,
            ..spool_sdk::video::CrfSearch::default()
        },
    };
    targeted::run(&tasks, &settings, &workdir).await
}

async fn run(args: &Args, workdir: &Path) -> Result<Report> {
    let workdir = workdir.canonicalize()?;
    let config = VideoConfig {
        ffmpeg: args.ffmpeg.clone(),
        input_roots: vec![workdir.clone()],
        output_root: workdir.clone(),
        ..VideoConfig::default()
    };
    eprintln!("probing FFmpeg (trial encodes)…");
    let tasks = VideoTasks::new(config)?;
    let clip = workdir.join("clip.mp4");
    eprintln!(
        "generating a {}x{} {} fps {} s clip…",
        args.width, args.height, args.fps, args.seconds
    );
    TestClip::new(args.width, args.height)
        .fps(args.fps)
        .seconds(f64::from(args.seconds))
        .write(tasks.runner(), &clip)
        .await?;
    let media = tasks.ffprobe()?.probe(&clip).await?;
    let task = Package::new("clip.mp4", "bench")
        .preset(args.preset)
        .segment_duration(Duration::from_secs(args.segment));
    let ladder = ladder::plan(
        (media.video.width, media.video.height),
        media.video.frame_rate,
        &Rendition::default_ladder(),
        task.segment_duration,
        None,
    )?;
    let renditions: Vec<String> = ladder
        .rungs
        .iter()
        .map(|r| format!("{} {}x{}", r.name, r.width, r.height))
        .collect();
    eprintln!("ladder: {}", renditions.join(", "));

    let mut samples: Vec<(Mode, Duration, Duration)> = Vec::new();
    for round in 0..args.rounds {
        for mode in Mode::ALL {
            let dir = workdir.join(format!("{}-{round}", mode.key()));
            let (wall, cpu) = time_mode(&tasks, &task, &ladder, &media, &clip, &dir, mode).await?;
            eprintln!(
                "round {}: {:<22} wall {:>7.2} s  cpu {:>7.2} s",
                round + 1,
                mode.name(),
                wall.as_secs_f64(),
                cpu.as_secs_f64()
            );
            samples.push((mode, wall, cpu));
            std::fs::remove_dir_all(&dir)?;
        }
    }

    let rungs = ladder.rungs.len();
    let medians: Vec<(Mode, f64, f64)> = Mode::ALL
        .into_iter()
        .map(|mode| {
            let of = |pick: fn(&(Mode, Duration, Duration)) -> Duration| {
                median(
                    samples
                        .iter()
                        .filter(|s| s.0 == mode)
                        .map(|s| pick(s).as_secs_f64())
                        .collect(),
                )
            };
            (mode, of(|s| s.1), of(|s| s.2))
        })
        .collect();
    let (base_wall, base_cpu) = (medians[0].1, medians[0].2);
    let results = medians
        .into_iter()
        .map(|(mode, wall, cpu)| ModeResult {
            mode: mode.name(),
            ffmpeg_runs: if mode == Mode::PerRendition { rungs } else { 1 },
            decodes: if mode == Mode::PerRendition { rungs } else { 1 },
            encodes_per_rendition: if mode == Mode::TwoOutputs { 2 } else { 1 },
            wall_s: wall,
            cpu_s: cpu,
            wall_vs_one_pass: wall / base_wall,
            cpu_vs_one_pass: cpu / base_cpu,
        })
        .collect();
    Ok(Report {
        clip: format!(
            "{}x{} {} fps {} s, testsrc2 + 440 Hz tone",
            args.width, args.height, args.fps, args.seconds
        ),
        renditions,
        preset: args.preset.as_str(),
        segment_s: args.segment,
        rounds: args.rounds,
        results,
    })
}

/// Writes the package `mode`'s way under `dir`; its wall and CPU time.
async fn time_mode(
    tasks: &VideoTasks,
    task: &Package,
    ladder: &Ladder,
    media: &MediaInfo,
    clip: &Path,
    dir: &Path,
    mode: Mode,
) -> Result<(Duration, Duration)> {
    let audio = media.has_audio();
    let encoders = tasks.encoders();
    // Each run's own directory, prepared before the clock starts.
    let runs: Vec<(FfmpegArgs, PathBuf, Ladder)> = match mode {
        Mode::OnePass => vec![(
            package_command(task, ladder, &encoders, audio, clip, dir)?,
            dir.to_owned(),
            ladder.clone(),
        )],
        Mode::TwoOutputs => {
            let encode = LadderEncode::new(task, ladder, &encoders, audio)?;
            let mut command = encode.args(clip, 2);
            for (index, slave) in tee_slaves(task, ladder, audio, dir).into_iter().enumerate() {
                let output = Output::tee(vec![slave]).option("-protocol_whitelist", "file");
                command = command.output(encode.output(output, index));
            }
            vec![(command, dir.to_owned(), ladder.clone())]
        }
        Mode::PerRendition => ladder
            .rungs
            .iter()
            .map(|rung| {
                let single = Ladder {
                    rungs: vec![rung.clone()],
                    keyframes: ladder.keyframes,
                    dropped: Vec::new(),
                };
                let sub = dir.join(&rung.name);
                let command = package_command(task, &single, &encoders, audio, clip, &sub)?;
                Ok((command, sub, single))
            })
            .collect::<Result<_>>()?,
    };
    for (_, out, _) in &runs {
        std::fs::create_dir_all(out.join("hls"))?;
        std::fs::create_dir_all(out.join("dash"))?;
    }
    let cpu_before = children_cpu()?;
    let started = Instant::now();
    for (command, _, _) in &runs {
        run_ffmpeg(tasks, command, media.duration).await?;
    }
    let wall = started.elapsed();
    let cpu = children_cpu()?.saturating_sub(cpu_before);
    for (_, out, planned) in &runs {
        let expected = Expected {
            duration: media.duration.as_secs_f64(),
            segment_duration: task.segment_duration.as_secs_f64(),
            sizes: planned.rungs.iter().map(|r| (r.width, r.height)).collect(),
            audio,
            tolerance: tasks.config().tolerance_for(media.duration).as_secs_f64(),
        };
        manifest::check_hls(&out.join("hls").join(HLS_MASTER), &expected)?;
        manifest::check_dash(&out.join("dash").join(DASH_MPD), &expected)?;
    }
    Ok((wall, cpu))
}

async fn run_ffmpeg(tasks: &VideoTasks, command: &FfmpegArgs, duration: Duration) -> Result<()> {
    let options =
        RunOptions::new(StageBand::PROCESSING, CancellationToken::new()).duration(duration);
    tasks.runner().run(command, options, |_| {}).await?;
    Ok(())
}

/// User plus system CPU time of this process's reaped children.
fn children_cpu() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let seconds = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_table(report: &Report) {
    println!(
        "clip: {}; ladder: {}; preset {}; {} s segments; medians of {} rounds",
        report.clip,
        report.renditions.join(", "),
        report.preset,
        report.segment_s,
        report.rounds
    );
    println!(
        "| mode | FFmpeg runs | decodes | encodes per rendition | wall | CPU | wall vs one pass | CPU vs one pass |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &report.results {
        println!(
            "| {} | {} | {} | {} | {:.2} s | {:.2} s | {:.2}× | {:.2}× |",
            r.mode,
            r.ffmpeg_runs,
            r.decodes,
            r.encodes_per_rendition,
            r.wall_s,
            r.cpu_s,
            r.wall_vs_one_pass,
            r.cpu_vs_one_pass
        );
    }
}

//! `spool-ladder-bench --targeted`: a quality-targeted ladder against the
//! fixed-CRF ladder, on a clip of several moving scenes.
//!
//! The steps `TargetedLadder` adds to a workflow, run here in one process
//! through the worker's own functions (no broker): every (rung, CRF)
//! sample at once, as a fleet would run the sample tasks, then each rung's
//! pick, then the package at the picked CRFs, measured. The fixed-CRF
//! ladder is packaged and measured the same way, so the bitrate saved is
//! measured on two whole encodes, not predicted.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use serde::Serialize;
use spool_sdk::video::{
    CrfChoice, CrfPick, CrfSearch, Formats, Package, Preset, Rendition, SampleEncode, VmafTarget,
};
use spool_video::ladder::{self, Ladder};
use spool_video::package::package_command;
use spool_video::targeted::{MeasuredRung, measure_rungs, pick_crf, sample_file};
use spool_video::{FfmpegArgs, Input, MediaInfo, Output, RunOptions, StageBand, VideoTasks};
use tokio_util::sync::CancellationToken;

/// Every rung's bitrate ceiling: far above what any CRF in range spends.
const UNBOUND_KBPS: u32 = 100_000;

/// What the targeted phase is asked for.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fps: u32,
    /// Seconds per scene; the clip has four.
    pub(crate) scene_seconds: u32,
    pub(crate) preset: Preset,
    pub(crate) segment: u64,
    pub(crate) target_vmaf: f64,
    pub(crate) search: CrfSearch,
}

/// One rung's figures.
#[derive(Debug, Serialize)]
pub(crate) struct RungResult {
    rung: String,
    size: String,
    target_vmaf: f64,
    crf: u8,
    predicted_vmaf: f64,
    achieved_vmaf: f64,
    kbps: f64,
    fixed_crf: u8,
    fixed_vmaf: f64,
    fixed_kbps: f64,
    /// Measured on the two whole encodes.
    saved_percent: f64,
    /// As the samples predicted it.
    predicted_saved_percent: f64,
}

/// The phase's report.
#[derive(Debug, Serialize)]
pub(crate) struct TargetedReport {
    clip: String,
    preset: &'static str,
    crfs_sampled: Vec<u8>,
    sample_tasks: usize,
    scenes_per_sample: u8,
    scene_seconds: f64,
    sampling_wall_seconds: f64,
    targeted_package_wall_seconds: f64,
    fixed_package_wall_seconds: f64,
    rungs: Vec<RungResult>,
}

/// The clip: four scenes, each moving differently (`testsrc2`, a zooming
/// Mandelbrot set, Conway's life, `testsrc2` again), near-lossless H.264.
fn clip_command(settings: &Settings, out: &Path) -> FfmpegArgs {
    let size = format!("{}x{}", settings.width, settings.height);
    let (rate, seconds) = (settings.fps, settings.scene_seconds);
    FfmpegArgs::new()
        .input(Input::lavfi(format!(
            "testsrc2=size={size}:rate={rate}:duration={seconds}"
        )))
        .input(Input::lavfi(format!(
            "mandelbrot=size={size}:rate={rate}:end_scale=0.05:end_pts=60"
        )))
        .input(Input::lavfi(format!(
            "life=size={size}:rate={rate}:ratio=0.3:mold=10:death_color=#C83232:life_color=#00ff00"
        )))
        .input(Input::lavfi(format!(
            "testsrc=size={size}:rate={rate}:duration={seconds}"
        )))
        .filter_complex(format!(
            "[1:v]trim=duration={seconds},setpts=PTS-STARTPTS,format=yuv420p[b];\
             [2:v]trim=duration={seconds},setpts=PTS-STARTPTS,format=yuv420p[c];\
             [0:v]format=yuv420p[a];[3:v]format=yuv420p[d];\
             [a][b][c][d]concat=n=4:v=1:a=0,format=yuv420p[v]"
        ))
        .output(
            Output::file(out)
                .map("[v]")
                .option("-c:v", "libx264")
                .option("-preset", "ultrafast")
                .option("-crf", 10)
                .option("-f", "mp4"),
        )
}

/// Runs the phase in `workdir`.
pub(crate) async fn run(
    tasks: &VideoTasks,
    settings: &Settings,
    workdir: &Path,
) -> Result<TargetedReport> {
    let cancel = CancellationToken::new();
    let clip = workdir.join("scenes.mp4");
    eprintln!(
        "generating a {}x{} {} fps clip of four {} s scenes…",
        settings.width, settings.height, settings.fps, settings.scene_seconds
    );
    let options = RunOptions::new(StageBand::PROCESSING, cancel.clone());
    tasks
        .runner()
        .run(&clip_command(settings, &clip), options, |_| {})
        .await?;
    let media = tasks.ffprobe()?.probe(&clip).await?;
    let target = VmafTarget::new(settings.target_vmaf).context("--target-vmaf is 0 to 100")?;
    let search = &settings.search;
    // The default ladder's heights, with ceilings that do not bind: the
    // CRF alone sets each rung's quality (a binding `-maxrate` lowers the
    // achieved VMAF below the samples' prediction, which the package
    // reports, but that is the ceiling's doing, not the pick's).
    let requested: Vec<Rendition> = Rendition::default_ladder()
        .into_iter()
        .map(|r| {
            Rendition::new(r.name, r.height, UNBOUND_KBPS, r.audio_kbps).target_vmaf(target.get())
        })
        .collect();
    let package = Package::new("scenes.mp4", "targeted")
        .ladder(requested.clone())
        .preset(settings.preset)
        .formats(Formats::HLS)
        .segment_duration(Duration::from_secs(settings.segment));
    let plan = ladder::plan(
        (media.video.width, media.video.height),
        media.video.frame_rate,
        &requested,
        package.segment_duration,
        None,
    )?;

    // Every sample at once, as the fleet runs the sample tasks.
    let crfs = search.crfs();
    let (codec, preset) = (package.codec, package.preset);
    let (scenes, scene_length) = (search.samples, search.sample_duration);
    let samples: Vec<SampleEncode> = plan
        .rungs
        .iter()
        .flat_map(|rung| {
            crfs.iter().map(move |crf| {
                SampleEncode::new("scenes.mp4", &rung.name, rung.height, *crf)
                    .encoder(codec, preset)
                    .scenes(scenes, scene_length)
            })
        })
        .collect();
    eprintln!(
        "sampling: {} sample encodes at CRFs {crfs:?}…",
        samples.len()
    );
    let started = Instant::now();
    let scores = try_join_all(
        samples
            .iter()
            .map(|sample| sample_file(tasks, sample, &clip, None, &cancel)),
    )
    .await?;
    let sampling = started.elapsed();
    let mut choices: Vec<CrfChoice> = Vec::new();
    for rung in &plan.rungs {
        let pick = CrfPick::new(
            &rung.name,
            target,
            (search.crf_min, search.crf_max),
            search.fixed_crf,
        );
        let points: Vec<_> = scores
            .iter()
            .filter(|s| s.rung == rung.name)
            .map(|s| (s.crf, s.vmaf, s.kbps))
            .collect();
        let choice = pick_crf(&pick, &points).map_err(anyhow::Error::msg)?;
        eprintln!(
            "{}: CRF {} (VMAF {:.2} predicted, samples {:?})",
            rung.name, choice.crf, choice.predicted_vmaf, choice.samples
        );
        choices.push(choice);
    }

    let mut targeted = plan.clone();
    for (rung, choice) in targeted.rungs.iter_mut().zip(&choices) {
        rung.crf = Some(choice.crf);
    }
    let mut fixed = plan.clone();
    for rung in &mut fixed.rungs {
        rung.crf = Some(search.fixed_crf);
    }
    eprintln!("packaging the targeted ladder…");
    let (targeted_wall, targeted_measured) = package_and_measure(
        tasks,
        &package,
        &targeted,
        &media,
        &clip,
        &workdir.join("targeted"),
    )
    .await?;
    eprintln!("packaging the fixed-CRF ladder…");
    let (fixed_wall, fixed_measured) = package_and_measure(
        tasks,
        &package,
        &fixed,
        &media,
        &clip,
        &workdir.join("fixed"),
    )
    .await?;

    let rungs = plan
        .rungs
        .iter()
        .enumerate()
        .map(|(index, rung)| {
            let of = |measured: &[MeasuredRung]| {
                measured
                    .iter()
                    .find(|m| m.index == index)
                    .map(|m| (m.vmaf, m.kbps))
                    .context("a rung was not measured")
            };
            let (achieved_vmaf, kbps) = of(&targeted_measured)?;
            let (fixed_vmaf, fixed_kbps) = of(&fixed_measured)?;
            let choice = &choices[index];
            Ok(RungResult {
                rung: rung.name.clone(),
                size: format!("{}x{}", rung.width, rung.height),
                target_vmaf: choice.target_vmaf,
                crf: choice.crf,
                predicted_vmaf: choice.predicted_vmaf,
                achieved_vmaf,
                kbps,
                fixed_crf: search.fixed_crf,
                fixed_vmaf,
                fixed_kbps,
                saved_percent: (1.0 - kbps / fixed_kbps) * 100.0,
                predicted_saved_percent: choice.saved_percent,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TargetedReport {
        clip: format!(
            "{}x{} {} fps, four {} s scenes (testsrc2, mandelbrot, life, testsrc)",
            settings.width, settings.height, settings.fps, settings.scene_seconds
        ),
        preset: settings.preset.as_str(),
        crfs_sampled: crfs,
        sample_tasks: samples.len(),
        scenes_per_sample: search.samples,
        scene_seconds: search.sample_duration.as_secs_f64(),
        sampling_wall_seconds: sampling.as_secs_f64(),
        targeted_package_wall_seconds: targeted_wall.as_secs_f64(),
        fixed_package_wall_seconds: fixed_wall.as_secs_f64(),
        rungs,
    })
}

/// Packages `plan` under `dir` in one FFmpeg run and measures its rungs;
/// the package's wall time (the measurement excluded).
async fn package_and_measure(
    tasks: &VideoTasks,
    package: &Package,
    plan: &Ladder,
    media: &MediaInfo,
    clip: &Path,
    dir: &Path,
) -> Result<(Duration, Vec<MeasuredRung>)> {
    std::fs::create_dir_all(dir.join("hls"))?;
    let command = package_command(
        package,
        plan,
        &tasks.encoders(),
        media.has_audio(),
        clip,
        dir,
    )?;
    let cancel = CancellationToken::new();
    let options = RunOptions::new(StageBand::PROCESSING, cancel.clone()).duration(media.duration);
    let started = Instant::now();
    tasks.runner().run(&command, options, |_| {}).await?;
    let wall = started.elapsed();
    let measured = measure_rungs(tasks, clip, dir, plan, true, None, &cancel).await?;
    Ok((wall, measured))
}

/// The phase's table.
pub(crate) fn print_table(report: &TargetedReport) {
    println!(
        "clip: {}; preset {}; {} sample tasks (CRFs {:?}, {} scenes of {} s each); \
         sampling {:.2} s, targeted package {:.2} s, fixed-CRF package {:.2} s (wall)",
        report.clip,
        report.preset,
        report.sample_tasks,
        report.crfs_sampled,
        report.scenes_per_sample,
        report.scene_seconds,
        report.sampling_wall_seconds,
        report.targeted_package_wall_seconds,
        report.fixed_package_wall_seconds
    );
    println!(
        "| rung | size | target | CRF | VMAF predicted | VMAF achieved | kb/s | fixed CRF | its VMAF | its kb/s | saved (measured) | saved (predicted) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &report.rungs {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.0} | {} | {:.2} | {:.0} | {:.1} % | {:.1} % |",
            r.rung,
            r.size,
            r.target_vmaf,
            r.crf,
            r.predicted_vmaf,
            r.achieved_vmaf,
            r.kbps,
            r.fixed_crf,
            r.fixed_vmaf,
            r.fixed_kbps,
            r.saved_percent,
            r.predicted_saved_percent
        );
    }
}

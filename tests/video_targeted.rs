//! Quality-targeted ladders through a real worker on Redis: on a generated
//! clip with motion and two scene changes, `TargetedLadder` samples each
//! targeted rung at a few CRFs (one `video.sample_encode` task each, run in
//! parallel), `video.crf_pick` interpolates the CRF for the target, and
//! `video.package` encodes each rung at its CRF and measures the VMAF it
//! achieved. A target no CRF in range reaches fails the workflow at the
//! pick, naming the rung; a package given per-rung CRFs reports their
//! quality, and one given a target without a pick is refused. The samples
//! start at the source's scene cuts (FFmpeg's scene score), and are spread
//! evenly over a source without enough cuts.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use spool_broker::Task as _;
use spool_broker::workflow::{NodeState, WorkflowState};
use spool_sdk::video::{
    CrfChoice, CrfPick, CrfSearch, Formats, Package, Preset, Rendition, SampleEncode,
    SamplePlacement, TargetedLadder,
};
use spool_sdk::workflow::Workflow;
use spool_tests::TestRedis;
use spool_tests::video::{VideoEnv, failure, ffmpeg_or_skip, worker_config};
use spool_video::{FfmpegArgs, FfmpegRunner, Input, Output, RunOptions, StageBand};
use spool_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(240);

/// How far the achieved VMAF of a whole rendition may fall below its
/// target: the pick is predicted from a third of the clip's frames, and
/// the package's forced segment keyframes cost a little quality.
const BELOW_TARGET: f64 = 2.0;
/// How far the achieved VMAF may stray from the samples' prediction.
const FROM_PREDICTION: f64 = 3.0;

/// Writes a 6 s, 30 fps, 640x360 clip of three 2 s scenes, each moving:
/// `testsrc2`, a zooming Mandelbrot set and Conway's life (hard to encode),
/// as near-lossless H.264.
async fn scene_clip(env: &VideoEnv, name: &str) {
    let size = "640x360";
    let args = FfmpegArgs::new()
        .input(Input::lavfi(format!("testsrc2=size={size}:rate=30:duration=2")))
        .input(Input::lavfi(format!(
            "mandelbrot=size={size}:rate=30:end_scale=0.05:end_pts=60"
        )))
        .input(Input::lavfi(format!(
            "life=size={size}:rate=30:ratio=0.3:mold=10:death_color=#C83232:life_color=#00ff00"
        )))
        .filter_complex(
            "[1:v]trim=duration=2,setpts=PTS-STARTPTS[b];[2:v]trim=duration=2,setpts=PTS-STARTPTS,\
             format=yuv420p[c];[0:v]format=yuv420p[a];[a][b][c]concat=n=3:v=1:a=0,format=yuv420p[v]",
        )
        .output(
            Output::file(env.inputs.join(name))
                .map("[v]")
                .option("-c:v", "libx264")
                .option("-preset", "ultrafast")
                .option("-crf", 10)
                .option("-f", "mp4"),
        );
    let options = RunOptions::new(StageBand::PROCESSING, CancellationToken::new());
    FfmpegRunner::new(&env.ffmpeg)
        .run(&args, options, |_| {})
        .await
        .unwrap_or_else(|e| panic!("cannot generate the clip: {e}"));
}

/// A worker with four slots: room for samples to run side by side.
fn four_slots() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        prefetch: 4,
        ..worker_config()
    }
}

/// A quick search: CRFs 18, 26, 34 and 42; three 1 s scenes.
fn quick_search() -> CrfSearch {
    CrfSearch {
        crf_min: 18,
        crf_max: 42,
        points: 4,
        samples: 3,
        sample_duration: Duration::from_secs(1),
        ..CrfSearch::default()
    }
}

fn quick_package(input: &str, output_dir: &str, ladder: Vec<Rendition>) -> Package {
    Package::new(input, output_dir)
        .ladder(ladder)
        .preset(Preset::UltraFast)
        .formats(Formats::HLS)
        .segment_duration(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_ladder_reaches_its_targets_with_samples_run_in_parallel() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_targeted_ladder_reaches_its_targets") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    scene_clip(&env, "scenes.mp4").await;
    let tasks = env.tasks(env.config());
    let worker = env.worker_with(&redis, &tasks, four_slots());
    let client = env.client(&redis);

    // Two targeted rungs and one at a bitrate; the bitrates are ceilings
    // the targets stay well under.
    let package = quick_package(
        "scenes.mp4",
        "streams/targeted",
        vec![
            Rendition::new("360p", 360, 8000, 96).target_vmaf(92.0),
            Rendition::new("240p", 240, 4000, 96).target_vmaf(85.0),
            Rendition::new("180p", 180, 300, 96),
        ],
    );
    let ladder = TargetedLadder::new(package).search(quick_search());
    let mut wf = Workflow::new();
    let package_node = ladder.add_to(&mut wf, &[]).unwrap();
    let handle = client.submit_workflow(wf).await.unwrap();
    let out = handle.wait::<Package>(&package_node, WAIT).await.unwrap();
    let status = handle.finished(WAIT).await.unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);

    // Each targeted rung: one sample task per CRF, then its pick.
    for (rung, target) in [("360p", 92.0), ("240p", 85.0)] {
        let samples: Vec<_> = [18, 26, 34, 42]
            .iter()
            .map(|crf| status.node(&ladder.sample_node(rung, *crf)).unwrap())
            .collect();
        for node in &samples {
            assert_eq!(node.task, SampleEncode::NAME);
            assert_eq!((node.state, node.attempts), (NodeState::Succeeded, 1));
        }
        let choice: CrfChoice = handle
            .wait::<CrfPick>(&ladder.pick_node(rung), WAIT)
            .await
            .unwrap();
        assert_eq!(choice.samples.len(), 4, "{choice:?}");
        assert!(
            choice.samples.first().unwrap().1 > choice.samples.last().unwrap().1,
            "VMAF falls from CRF 18 to 42: {choice:?}"
        );
        assert!((18..=42).contains(&choice.crf), "{choice:?}");
        assert!(choice.predicted_vmaf >= target, "{choice:?}");
        assert!(choice.predicted_kbps > 0.0 && choice.fixed_kbps > 0.0);

        // The samples ran as separate tasks, at least two of them at once.
        let mut spans = Vec::new();
        for node in &samples {
            let record = env.store.get(node.task_id).await.unwrap().unwrap();
            spans.push((record.started_at.unwrap(), record.finished_at.unwrap()));
        }
        let overlapping = spans
            .iter()
            .enumerate()
            .any(|(i, a)| spans[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
        assert!(
            overlapping,
            "{rung}: samples ran one after another: {spans:?}"
        );
    }

    // The package: every targeted rung at its picked CRF, measured.
    let names: Vec<_> = out.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["360p", "240p", "180p"]);
    assert_eq!(out.quality.len(), 2, "{:?}", out.quality);
    for quality in &out.quality {
        let choice: CrfChoice = handle
            .wait::<CrfPick>(&ladder.pick_node(&quality.name), WAIT)
            .await
            .unwrap();
        let target = quality.target_vmaf.unwrap();
        eprintln!(
            "{}: samples {:?}; {quality:?}",
            quality.name, choice.samples
        );
        assert_eq!(quality.crf, choice.crf);
        assert_eq!(quality.predicted_vmaf, Some(choice.predicted_vmaf));
        assert_eq!(quality.saved_percent, Some(choice.saved_percent));
        assert_eq!(quality.fixed_crf, Some(23));
        assert!(
            quality.achieved_vmaf >= target - BELOW_TARGET,
            "{}: achieved {:.2} for a target of {target}",
            quality.name,
            quality.achieved_vmaf
        );
        assert!(
            (quality.achieved_vmaf - choice.predicted_vmaf).abs() <= FROM_PREDICTION,
            "{}: achieved {:.2}, predicted {:.2}",
            quality.name,
            quality.achieved_vmaf,
            choice.predicted_vmaf
        );
        assert!(quality.kbps > 0.0);
    }
    let hls = out.hls_master.unwrap();
    for rung in ["360p", "240p", "180p"] {
        assert!(hls.parent().unwrap().join(format!("{rung}.m3u8")).is_file());
    }

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_fails_the_workflow_at_the_pick_naming_the_rung() {
    let Some(ffmpeg) = ffmpeg_or_skip("an_unreachable_target_fails_the_workflow") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    scene_clip(&env, "scenes.mp4").await;
    let tasks = env.tasks(env.config());
    let worker = env.worker_with(&redis, &tasks, four_slots());
    let client = env.client(&redis);

    // VMAF 99.9 from CRF 40 at best: out of reach.
    let package = quick_package(
        "scenes.mp4",
        "streams/unreachable",
        vec![Rendition::new("240p", 240, 4000, 96).target_vmaf(99.9)],
    );
    let ladder = TargetedLadder::new(package).search(CrfSearch {
        crf_min: 40,
        crf_max: 46,
        points: 2,
        ..quick_search()
    });
    let mut wf = Workflow::new();
    let package_node = ladder.add_to(&mut wf, &[]).unwrap();
    let handle = client.submit_workflow(wf).await.unwrap();
    let error = handle
        .wait::<Package>(&package_node, WAIT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            spool_sdk::Error::NodeNotSucceeded {
                state: NodeState::Cancelled,
                ..
            }
        ),
        "{error}"
    );
    let status = handle.finished(WAIT).await.unwrap();
    // The workflow failed at the stage that found the target out of reach.
    let WorkflowState::Failed { node, reason: why } = &status.state else {
        panic!("the workflow did not fail: {status:?}");
    };
    assert_eq!(node.as_str(), ladder.pick_node("240p"));
    assert!(why.contains("rung 240p"), "{why}");
    let pick = status.node(&ladder.pick_node("240p")).unwrap();
    assert_eq!(pick.state, NodeState::Failed);
    let reason = pick.error.as_deref().unwrap();
    for words in ["rung 240p", "target VMAF 99.9", "out of reach", "at CRF 40"] {
        assert!(reason.contains(words), "{words:?} in {reason:?}");
    }
    // Nothing was packaged.
    assert_eq!(
        status.node(&package_node).unwrap().state,
        NodeState::Cancelled
    );
    assert!(!env.outputs.join("streams/unreachable/hls").exists());

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_takes_per_rung_crfs_and_refuses_a_target_without_a_pick() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_package_takes_per_rung_crfs") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    scene_clip(&env, "scenes.mp4").await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    let package = quick_package(
        "scenes.mp4",
        "streams/crfs",
        vec![
            Rendition::new("360p", 360, 8000, 96).crf(20),
            Rendition::new("240p", 240, 8000, 96).crf(40),
            Rendition::new("180p", 180, 300, 96),
        ],
    );
    let id = client.enqueue(package).await.unwrap();
    let out = client
        .task::<Package>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    let crfs: Vec<_> = out
        .quality
        .iter()
        .map(|q| (q.name.as_str(), q.crf))
        .collect();
    assert_eq!(crfs, [("360p", 20), ("240p", 40)]);
    let (fine, coarse) = (&out.quality[0], &out.quality[1]);
    assert!(fine.target_vmaf.is_none() && fine.predicted_vmaf.is_none());
    assert!(
        fine.achieved_vmaf > coarse.achieved_vmaf + 5.0,
        "CRF 20 scores above CRF 40: {:?}",
        out.quality
    );
    assert!(fine.kbps > coarse.kbps, "{:?}", out.quality);
    check_playlist(out.hls_master.as_deref().unwrap());

    // A target with nobody to pick its CRF: refused, naming the rung.
    let orphan = quick_package(
        "scenes.mp4",
        "streams/orphan",
        vec![Rendition::new("240p", 240, 4000, 96).target_vmaf(90.0)],
    );
    let id = client.enqueue(orphan).await.unwrap();
    let error = failure(client.task::<Package>(id).unwrap().wait(WAIT).await);
    assert!(
        error.contains("rendition 240p asks for VMAF 90") && error.contains("video.crf_pick"),
        "{error}"
    );
    // A rung with a CRF above the codec's maximum is refused on enqueue.
    let absurd = quick_package(
        "scenes.mp4",
        "streams/absurd",
        vec![Rendition::new("240p", 240, 4000, 96).crf(60)],
    );
    let error = client.enqueue(absurd).await.unwrap_err().to_string();
    assert!(error.contains("CRF 60 is above 51"), "{error}");

    worker.stop().await;
    redis.cleanup().await;
}

/// The scene starts of [`cut_clip`]: its first frame and four cuts.
const CUTS: [f64; 5] = [0.0, 1.5, 4.5, 6.5, 10.5];

/// Writes a 12 s, 30 fps, 320x180 clip of five scenes of unequal lengths
/// (starting at [`CUTS`]), each a different lavfi source, concatenated.
async fn cut_clip(env: &VideoEnv, name: &str) {
    let size = "320x180";
    let sources = [
        format!("testsrc2=size={size}:rate=30"),
        format!("mandelbrot=size={size}:rate=30:end_scale=0.05:end_pts=90"),
        format!(
            "life=size={size}:rate=30:ratio=0.3:mold=10:death_color=#C83232:life_color=#00ff00"
        ),
        format!("smptehdbars=size={size}:rate=30"),
        format!("testsrc=size={size}:rate=30"),
    ];
    let mut args = FfmpegArgs::new();
    for source in &sources {
        args = args.input(Input::lavfi(source.clone()));
    }
    let mut graph = String::new();
    for (index, start) in CUTS.iter().enumerate() {
        let end = CUTS.get(index + 1).copied().unwrap_or(12.0);
        graph.push_str(&format!(
            "[{index}:v]trim=duration={},setpts=PTS-STARTPTS,format=yuv420p[s{index}];",
            end - start
        ));
    }
    graph.push_str("[s0][s1][s2][s3][s4]concat=n=5:v=1:a=0,format=yuv420p[v]");
    let args = args.filter_complex(graph).output(
        Output::file(env.inputs.join(name))
            .map("[v]")
            .option("-c:v", "libx264")
            .option("-preset", "ultrafast")
            .option("-crf", 16)
            .option("-f", "mp4"),
    );
    let options = RunOptions::new(StageBand::PROCESSING, CancellationToken::new());
    FfmpegRunner::new(&env.ffmpeg)
        .run(&args, options, |_| {})
        .await
        .unwrap_or_else(|e| panic!("cannot generate the clip: {e}"));
}

/// Writes a 12 s, 30 fps, 320x180 clip of one moving scene.
async fn one_scene_clip(env: &VideoEnv, name: &str) {
    let args = FfmpegArgs::new()
        .input(Input::lavfi("testsrc2=size=320x180:rate=30:duration=12"))
        .output(
            Output::file(env.inputs.join(name))
                .map("0:v")
                .option("-c:v", "libx264")
                .option("-preset", "ultrafast")
                .option("-crf", 16)
                .option("-pix_fmt", "yuv420p")
                .option("-f", "mp4"),
        );
    let options = RunOptions::new(StageBand::PROCESSING, CancellationToken::new());
    FfmpegRunner::new(&env.ffmpeg)
        .run(&args, options, |_| {})
        .await
        .unwrap_or_else(|e| panic!("cannot generate the clip: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_start_at_scene_cuts_and_spread_evenly_without_them() {
    let Some(ffmpeg) = ffmpeg_or_skip("samples_start_at_scene_cuts") else {
        return;
    };
    let env = VideoEnv::new(ffmpeg).await;
    cut_clip(&env, "cuts.mp4").await;
    one_scene_clip(&env, "one.mp4").await;
    let tasks = env.tasks(env.config());
    let cancel = CancellationToken::new();
    let frame = 1.0 / 30.0;
    let sample = |input: &str, placement: SamplePlacement| {
        SampleEncode::new(input, "180p", 180, 30)
            .encoder(spool_sdk::video::Codec::H264, Preset::UltraFast)
            .scenes(3, Duration::from_secs(1))
            .placement(placement)
    };
    let sample_file = |task: SampleEncode, file: &str| {
        let (tasks, cancel) = (tasks.clone(), cancel.clone());
        let source = env.inputs.join(file);
        async move {
            spool_video::targeted::sample_file(&tasks, &task, &source, None, &cancel)
                .await
                .unwrap_or_else(|e| panic!("sampling {}: {e}", source.display()))
        }
    };

    // Three scenes, each starting at a cut: spread over the five scene
    // starts (the first, the middle, the last).
    let score = sample_file(sample("cuts.mp4", SamplePlacement::default()), "cuts.mp4").await;
    assert!(score.at_scene_cuts, "{score:?}");
    let starts: Vec<f64> = score.scenes.iter().map(|s| s.start).collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    for start in &starts {
        assert!(
            CUTS.iter().any(|cut| (cut - start).abs() <= frame),
            "the sample at {start} s is at no cut of {CUTS:?}"
        );
    }
    assert!(near(&starts, &[0.0, 4.5, 10.5], frame), "{starts:?}");
    assert!(score.scenes.iter().all(|s| s.frames >= 29), "{score:?}");

    // Asked to spread evenly: the middles of three equal parts, whatever
    // the cuts.
    let even = sample_file(sample("cuts.mp4", SamplePlacement::Even), "cuts.mp4").await;
    assert!(!even.at_scene_cuts);
    let even_starts: Vec<f64> = even.scenes.iter().map(|s| s.start).collect();
    assert!(near(&even_starts, &[1.5, 5.5, 9.5], frame), "{even:?}");

    // One scene: too few cuts, so spread evenly as well.
    let one = sample_file(sample("one.mp4", SamplePlacement::default()), "one.mp4").await;
    assert!(!one.at_scene_cuts, "{one:?}");
    let one_starts: Vec<f64> = one.scenes.iter().map(|s| s.start).collect();
    assert!(near(&one_starts, &[1.5, 5.5, 9.5], frame), "{one:?}");
}

/// Whether `got` is `expected`, each within `tolerance`.
fn near(got: &[f64], expected: &[f64], tolerance: f64) -> bool {
    got.len() == expected.len()
        && got
            .iter()
            .zip(expected)
            .all(|(a, b)| (a - b).abs() <= tolerance)
}

/// The master playlist lists the three renditions.
fn check_playlist(master: &Path) {
    let text = std::fs::read_to_string(master).unwrap();
    let parsed = spool_video::manifest::hls::parse_master(&text).unwrap();
    assert_eq!(parsed.variants.len(), 3, "{text}");
}

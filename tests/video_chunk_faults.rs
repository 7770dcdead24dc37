//! Chunked ingest on bad input and under faults: each ends in a clear
//! outcome (a whole-file fallback with its reason, a chunk encoded again,
//! a rerun of the killed chunk only, or a failed workflow naming the stage
//! and FFmpeg's or ffprobe's words), never a broken output.

#[path = "video_chunk_common.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use spool_sdk::video::{
    ChunkOutput, ChunkPolicy, Codec, EncodeChunk, Ingest, IngestOutput, Preset, RateControl,
    chunk_node,
};
use spool_tests::video::{VideoEnv, ffmpeg_or_skip, processes_mentioning};
use spool_tests::{TestRedis, wait_until};
use spool_video::{FfmpegArgs, FfmpegRunner, Input, Output, RunOptions, StageBand, TestClip};
use tokio_util::sync::CancellationToken;

use common::{frame_hashes, has_audio, kill_hard, scene_clip, video_worker_process};

const WAIT: Duration = Duration::from_secs(300);

fn chunks_of(seconds: u64) -> ChunkPolicy {
    ChunkPolicy::new(Duration::from_secs(seconds), Duration::from_millis(500))
}

fn quick(input: &str, output: &str) -> Ingest {
    Ingest::new(input, output, Codec::H264)
        .rate(RateControl::Crf(30))
        .preset(Preset::UltraFast)
        .chunked(chunks_of(1))
}

async fn write(env: &VideoEnv, args: &FfmpegArgs) {
    FfmpegRunner::new(&env.ffmpeg)
        .run(
            args,
            RunOptions::new(StageBand::PROCESSING, CancellationToken::new()),
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("cannot write a test input: {e}"));
}

/// The frames of `file`, decoded.
fn frames_of(env: &VideoEnv, file: &Path) -> usize {
    frame_hashes(&env.ffmpeg, file).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fall_back_or_fail_with_the_stage_named() {
    let Some(ffmpeg) = ffmpeg_or_skip("bad_inputs_fall_back_or_fail_with_the_stage_named") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    // 4 s with one keyframe: x264's default GOP is 250 frames, and the
    // test pattern has no scene cut.
    env.clip("one-keyframe.mp4", TestClip::new(320, 240).seconds(4.0))
        .await;
    // 25 fps for 2 s, then 10 fps for 2 s, keyframes every 10 frames.
    write(
        &env,
        &FfmpegArgs::new()
            .input(Input::lavfi("testsrc2=size=320x240:rate=25:duration=4"))
            .filter_complex("[0:v]setpts='if(lt(N,50),N/25,2+(N-50)/10)/TB',format=yuv420p[v]")
            .output(
                Output::file(env.inputs.join("vfr.mp4"))
                    .map("[v]")
                    .option("-fps_mode", "passthrough")
                    .option("-c:v", "libx264")
                    .option("-preset", "ultrafast")
                    .option("-g", 10)
                    .option("-f", "mp4"),
            ),
    )
    .await;
    write(
        &env,
        &FfmpegArgs::new()
            .input(Input::lavfi(
                "sine=frequency=440:sample_rate=48000:duration=3",
            ))
            .output(
                Output::file(env.inputs.join("audio-only.m4a"))
                    .map("0:a")
                    .option("-c:a", "aac")
                    .option("-f", "mp4"),
            ),
    )
    .await;
    scene_clip(&env, "silent.mp4", (320, 240), 25, 1.0, false).await;
    let worker = video_worker_process(&redis, &env, &[]);
    let client = env.client(&redis);

    let no_keys = quick("one-keyframe.mp4", "no-keys.mp4")
        .submit(&client)
        .await
        .unwrap();
    let vfr = quick("vfr.mp4", "vfr-out.mp4")
        .submit(&client)
        .await
        .unwrap();
    let audio_only = quick("audio-only.m4a", "audio-only.mp4")
        .submit(&client)
        .await
        .unwrap();
    let silent = quick("silent.mp4", "silent-out.mp4")
        .submit(&client)
        .await
        .unwrap();

    let whole: IngestOutput = no_keys.wait(WAIT).await.unwrap();
    let reason = whole
        .split
        .as_ref()
        .unwrap()
        .fallback
        .clone()
        .expect("a fallback");
    assert!(reason.contains("no boundary"), "{reason}");
    let encoded = whole.transcode.expect("encoded whole");
    assert!(whole.join.is_none());
    assert_eq!(frames_of(&env, &env.outputs.join("no-keys.mp4")), 100);
    assert!(encoded.audio);

    let whole = vfr.wait(WAIT).await.unwrap();
    let reason = whole.split.unwrap().fallback.expect("a fallback");
    assert!(reason.contains("variable frame rate"), "{reason}");
    assert!(whole.transcode.is_some());

    match audio_only.wait(WAIT).await {
        Err(spool_sdk::Error::NodeNotSucceeded { node, error, .. }) => {
            assert_eq!(node.as_str(), "split");
            let error = error.unwrap_or_default();
            assert!(error.contains("no video stream"), "{error}");
        }
        other => panic!("an audio-only input must fail the split: {other:?}"),
    }

    let joined = silent.wait(WAIT).await.unwrap();
    let join = joined.join.expect("chunks joined");
    assert!(!join.audio && joined.split.unwrap().chunks.len() == 3);
    assert!(!has_audio(&env.outputs.join("silent-out.mp4")));
    assert_eq!(join.frames, 75);

    kill_hard(worker);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunk_is_encoded_again_and_a_rerun_reuses_whole_ones() {
    let Some(ffmpeg) =
        ffmpeg_or_skip("a_broken_chunk_is_encoded_again_and_a_rerun_reuses_whole_ones")
    else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    scene_clip(&env, "scenes.mp4", (640, 360), 25, 1.0, true).await;
    let worker = video_worker_process(&redis, &env, &[]);
    let client = env.client(&redis);
    // Slow enough (x264 veryslow) to stop the first run between chunks.
    let ingest = |output: &str| {
        Ingest::new("scenes.mp4", output, Codec::H264)
            .rate(RateControl::Crf(30))
            .preset(Preset::VerySlow)
            .chunked(chunks_of(1))
    };
    let key = format!("rerun-{:08x}", fastrand::u32(..));
    let dir = env.outputs.join(".spool-chunks").join(&key);
    std::fs::create_dir_all(&dir).unwrap();

    // A first run that stops after its chunks: a cancelled workflow
    // stands for a crash before the join (the chunks stay on disk).
    let first = ingest("first.mp4").key(&key).workflow().unwrap();
    let handle = client.submit_workflow(first).await.unwrap();
    wait_until("two chunks encoded", WAIT, || {
        let dir = dir.clone();
        async move {
            std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".mp4"))
                        .filter(|e| e.file_name().to_string_lossy().starts_with("chunk-"))
                        .count()
                })
                .unwrap_or(0)
                >= 2
        }
    })
    .await;
    handle.cancel().await.unwrap();
    handle.finished(WAIT).await.unwrap();
    let mut whole: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chunk-") && n.ends_with(".mp4"))
        .collect();
    whole.sort();
    assert!(whole.len() >= 2, "{whole:?}");
    // One of them damaged on disk after it was written.
    let damaged = dir.join(&whole[0]);
    let bytes = std::fs::read(&damaged).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() / 3]).unwrap();

    let rerun = ingest("rerun.mp4").key(&key).submit(&client).await.unwrap();
    let done = rerun.wait(WAIT).await.unwrap();
    let join = done.join.expect("joined");
    assert_eq!(join.frames, 75);
    assert!(
        join.reencoded.is_empty(),
        "the chunk node caught the damage first"
    );
    let mut reused = Vec::new();
    for chunk in 0..3 {
        let out: ChunkOutput = rerun
            .workflow()
            .wait::<EncodeChunk>(&chunk_node(chunk), WAIT)
            .await
            .unwrap();
        if out.reused {
            reused.push(format!("chunk-{chunk:05}.mp4"));
        }
    }
    assert_eq!(
        reused,
        whole[1..].to_vec(),
        "the whole chunks are reused, the damaged one is encoded again"
    );
    assert_eq!(frames_of(&env, &env.outputs.join("rerun.mp4")), 75);
    assert!(!dir.exists(), "removed after the join");

    kill_hard(worker);
    redis.cleanup().await;
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// FFmpeg processes writing a chunk of this test, as (pid, command line).
fn chunk_encodes(env: &VideoEnv) -> Vec<(u32, String)> {
    processes_mentioning(&env.marker())
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let program = cmdline
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            (program.ends_with("ffmpeg")
                && cmdline.contains(".spool-tmp")
                && cmdline.contains("chunk-"))
            .then_some((pid, cmdline))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_chunk_reruns_that_chunk_only() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_worker_killed_mid_chunk_reruns_that_chunk_only") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    scene_clip(&env, "scenes.mp4", (640, 360), 25, 2.0, true).await;
    let lease = ["--visibility-timeout", "2s"];
    let victim = video_worker_process(&redis, &env, &lease);
    let survivor = video_worker_process(&redis, &env, &lease);
    let (victim_pid, survivor_pid) = (victim.id(), survivor.id());
    let client = env.client(&redis);

    // Slow encodes (x264 veryslow): each 2 s chunk takes seconds.
    let handle = Ingest::new("scenes.mp4", "out.mp4", Codec::H264)
        .rate(RateControl::Crf(30))
        .preset(Preset::VerySlow)
        .chunked(chunks_of(2))
        .submit(&client)
        .await
        .unwrap();
    let mut hit = None;
    wait_until("the victim encoding a chunk", WAIT, || {
        let found = chunk_encodes(&env)
            .into_iter()
            .find(|(pid, _)| parent_of(*pid) == victim_pid);
        if let Some((_, cmdline)) = &found {
            hit = cmdline.split_whitespace().find_map(|arg| {
                arg.split("/.chunk-")
                    .nth(1)
                    .map(|rest| rest[..5].to_owned())
            });
        }
        async move { found.is_some() }
    })
    .await;
    let killed: u32 = hit.expect("the chunk's file name").parse().unwrap();
    kill_hard(victim);

    let done = handle.wait(WAIT).await.unwrap();
    let join = done.join.expect("joined");
    assert_eq!(join.frames, 150);
    assert!(join.reencoded.is_empty());
    let mut by = Vec::new();
    for chunk in 0..3 {
        let out: ChunkOutput = handle
            .workflow()
            .wait::<EncodeChunk>(&chunk_node(chunk), WAIT)
            .await
            .unwrap();
        by.push((chunk, out.worker_pid, out.reused));
    }
    let (_, pid, _) = by[killed as usize];
    assert_eq!(
        pid, survivor_pid,
        "the killed chunk ran again in the survivor: {by:?}"
    );
    // A chunk that finished in the victim before it died was not encoded
    // again: its node kept the victim's output.
    for (chunk, pid, reused) in &by {
        assert!(
            *pid == survivor_pid || *pid == victim_pid,
            "chunk {chunk} ran in {pid}"
        );
        assert!(!reused || *chunk == killed, "{by:?}");
    }
    let status = handle.workflow().status().await.unwrap();
    for node in &status.nodes {
        if node.name.as_str().starts_with("chunk-") && node.name.as_str() != chunk_node(killed) {
            assert_eq!(node.attempts, 1, "{} ran once", node.name);
        }
    }
    assert_eq!(frames_of(&env, &env.outputs.join("out.mp4")), 150);
    assert!(chunk_encodes(&env).is_empty());

    kill_hard(survivor);
    redis.cleanup().await;
}

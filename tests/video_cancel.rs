//! Stopping a running encode: a revocation (FFmpeg asked to quit, then
//! killed), a task's hard time limit (the run is dropped and its guard
//! kills FFmpeg) and a worker's soft time limit. Each time the task ends
//! with the right status, no FFmpeg process is left (checked by scanning
//! `/proc` for command lines naming the test's directory) and the partial
//! output is gone.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use spool_broker::JobStatus;
use spool_sdk::Error;
use spool_sdk::video::{Audio, Codec, Preset, Transcode};
use spool_tests::video::{Clip, VideoEnv, ffmpeg_or_skip, processes_mentioning, worker_config};
use spool_tests::{TestRedis, wait_until};
use spool_worker::WorkerConfig;

const WAIT: Duration = Duration::from_secs(120);

/// A clip that takes FFmpeg many seconds to encode at `veryslow`.
fn long_clip() -> Clip {
    Clip::new(640, 360).seconds(20.0).without_audio()
}

fn slow_encode(output: &str) -> Transcode {
    Transcode::new("long.mp4", output, Codec::H264)
        .preset(Preset::VerySlow)
        .audio(Audio::None)
}

/// Waits until FFmpeg runs for this test and has started writing `output`;
/// returns its pids.
async fn ffmpeg_running(env: &VideoEnv, output: &Path) -> Vec<u32> {
    let marker = env.marker();
    wait_until("FFmpeg to be encoding", WAIT, || {
        let running = !processes_mentioning(&marker).is_empty() && output.exists();
        async move { running }
    })
    .await;
    processes_mentioning(&marker)
}

/// Waits until none of `pids` lives and nothing mentions the test's
/// directory.
async fn ffmpeg_gone(env: &VideoEnv, pids: &[u32]) {
    let marker = env.marker();
    wait_until("FFmpeg to be gone", Duration::from_secs(20), || {
        let gone = processes_mentioning(&marker).is_empty()
            && pids
                .iter()
                .all(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        async move { gone }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_encode_stops_ffmpeg_and_removes_its_output() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_revoked_encode_stops_ffmpeg_and_removes_its_output")
    else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("long.mp4", long_clip()).await;
    let tasks = env.tasks(env.config());
    let client = env.client(&redis);
    let worker = env.worker(&redis, &tasks);

    let id = client.enqueue(slow_encode("revoked.mp4")).await.unwrap();
    let output = env.outputs.join("revoked.mp4");
    let pids = ffmpeg_running(&env, &output).await;
    assert!(!pids.is_empty());

    client.revoke(id).await.unwrap();
    match client.task::<Transcode>(id).unwrap().wait(WAIT).await {
        Err(Error::TaskFailed {
            status: JobStatus::Revoked,
            ..
        }) => {}
        other => panic!("expected a revoked task, got {other:?}"),
    }
    ffmpeg_gone(&env, &pids).await;
    assert!(!output.exists(), "the partial output is removed");

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limits_stop_ffmpeg_and_remove_its_output() {
    let Some(ffmpeg) = ffmpeg_or_skip("time_limits_stop_ffmpeg_and_remove_its_output") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("long.mp4", long_clip()).await;
    let tasks = env.tasks(env.config());
    let client = env.client(&redis);

    // The task's hard limit: the run is dropped mid-encode.
    let worker = env.worker(&redis, &tasks);
    let id = client
        .enqueue(slow_encode("hard.mp4"))
        .time_limit(Duration::from_secs(3))
        .await
        .unwrap();
    let output = env.outputs.join("hard.mp4");
    let pids = ffmpeg_running(&env, &output).await;
    match client.task::<Transcode>(id).unwrap().wait(WAIT).await {
        Err(Error::TaskFailed {
            status: JobStatus::Failed,
            error: Some(error),
        }) => assert!(error.contains("time limit"), "{error}"),
        other => panic!("expected a timed-out task, got {other:?}"),
    }
    ffmpeg_gone(&env, &pids).await;
    assert!(!output.exists(), "the partial output is removed");
    worker.stop().await;

    // The worker's soft limit: the run is asked to stop and FFmpeg quits.
    let config = WorkerConfig {
        soft_time_limit: Some(Duration::from_secs(3)),
        ..worker_config()
    };
    let worker = env.worker_with(&redis, &tasks, config);
    let id = client.enqueue(slow_encode("soft.mp4")).await.unwrap();
    let output = env.outputs.join("soft.mp4");
    let pids = ffmpeg_running(&env, &output).await;
    match client.task::<Transcode>(id).unwrap().wait(WAIT).await {
        Err(Error::TaskFailed {
            status: JobStatus::Failed,
            error: Some(error),
        }) => assert!(error.contains("time limit"), "{error}"),
        other => panic!("expected a timed-out task, got {other:?}"),
    }
    ffmpeg_gone(&env, &pids).await;
    assert!(!output.exists(), "the partial output is removed");

    worker.stop().await;
    redis.cleanup().await;
}

//! `spoolctl task show ID --follow` on real tasks: a transcode followed
//! from before any worker takes it, through FFmpeg's progress, to its
//! outcome, which becomes spoolctl's exit status; and a task that fails.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use spool_sdk::video::{Codec, Preset, RateControl, Transcode};
use spool_tests::bins::spoolctl;
use spool_tests::video::{Clip, VideoEnv, ffmpeg_or_skip};
use spool_tests::{TestRedis, redis_url};
use spool_video::VideoConfig;
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(120);

/// `spoolctl task show ID --follow` on `redis` and the test's store, with
/// stdout piped.
fn follow(redis: &TestRedis, env: &VideoEnv, id: &str) -> tokio::process::Child {
    let store_url = format!("sqlite://{}", env.dir.join("jobs.db").display());
    tokio::process::Command::new(spoolctl())
        .args(["task", "show", id, "--follow"])
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(["--store-url", &store_url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_transcode_streams_its_progress_and_exits_with_its_outcome() {
    let Some(ffmpeg) = ffmpeg_or_skip("following_a_transcode") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(320, 240).seconds(3.0)).await;
    let tasks = env.tasks(VideoConfig {
        progress_interval: Duration::from_millis(100),
        ..env.config()
    });
    let client = env.client(&redis);
    let id = client
        .enqueue(
            Transcode::new("clip.mp4", "out/followed.mp4", Codec::H264)
                .rate(RateControl::Crf(30))
                .preset(Preset::Slower),
        )
        .await
        .unwrap();

    let mut following = follow(&redis, &env, &id.to_string());
    let mut lines = BufReader::new(following.stdout.take().unwrap()).lines();
    // It reports the queued task before any worker runs.
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("a first line");
    assert_eq!(first, "video.transcode queued (attempt 0)");

    let worker = env.worker(&redis, &tasks);
    let mut rest = Vec::new();
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        rest.push(line);
    }
    let status = following.wait().await.unwrap();
    let text = rest.join("\n");
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        rest.iter()
            .any(|l| l.contains("encode libx264") && l.contains("fps")),
        "FFmpeg's progress: {text}"
    );
    // The final record, from the store: status and the last progress.
    assert!(
        rest.iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["status:", "succeeded"]),
        "{text}"
    );
    assert!(text.contains("100%"), "the final progress: {text}");

    // A task that fails for good: its status is spoolctl's.
    let missing = client
        .enqueue(Transcode::new("missing.mp4", "out/never.mp4", Codec::H264))
        .await
        .unwrap();
    let failed = follow(&redis, &env, &missing.to_string())
        .wait_with_output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{text}");
    assert!(text.contains("failed"), "{text}");

    worker.stop().await;
    redis.cleanup().await;
}

//! `spoolctl tasks --follow` on real tasks, a real worker, Redis and a
//! SQLite job store: two transcodes followed from before any worker takes
//! them, through FFmpeg's progress, to their outcomes (one fails, which
//! becomes the exit status with --until-done); and, without FFmpeg, a task
//! finished before the follow is shown but not waited for, and one that
//! starts matching after the follow began is picked up, its progress
//! streamed as JSON.
//!
//! Build the binaries first: `cargo build -p spool-scheduler --bins`.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::store::{JobStatus, JobStore};
use spool_broker::{Progress, Task};
use spool_sdk::video::{Codec, Preset, RateControl, Transcode};
use spool_tests::bins::spoolctl;
use spool_tests::video::{Clip, VideoEnv, ffmpeg_or_skip};
use spool_tests::{TestRedis, redis_url, spawn_worker, wait_until};
use spool_video::VideoConfig;
use spool_worker::{TaskContext, Worker, WorkerConfig};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(120);

/// `spoolctl tasks --follow` with `args` on `redis` and the store at
/// `store_url`, stdout piped.
fn follow(
    redis: &TestRedis,
    store_url: &str,
    args: &[&str],
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = tokio::process::Command::new(spoolctl())
        .args(["tasks", "--follow"])
        .args(args)
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(["--store-url", store_url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// The next line, failing the test after [`WAIT`]; `None` at the end.
async fn next(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<String> {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_two_transcodes_streams_their_progress_until_both_end() {
    let Some(ffmpeg) = ffmpeg_or_skip("following_two_transcodes") else {
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
    let good = client
        .enqueue(
            Transcode::new("clip.mp4", "out/followed.mp4", Codec::H264)
                .rate(RateControl::Crf(30))
                .preset(Preset::Slower),
        )
        .await
        .unwrap();
    let missing = client
        .enqueue(Transcode::new("missing.mp4", "out/never.mp4", Codec::H264))
        .await
        .unwrap();

    let store_url = format!("sqlite://{}", env.dir.join("jobs.db").display());
    let (mut following, mut lines) = follow(
        &redis,
        &store_url,
        &["--until-done", "--name", "video.transcode"],
    );
    // Both, queued, oldest first, before any worker runs.
    assert_eq!(
        next(&mut lines).await.unwrap(),
        format!("{good} video.transcode queued (attempt 0)")
    );
    assert_eq!(
        next(&mut lines).await.unwrap(),
        format!("{missing} video.transcode queued (attempt 0)")
    );

    let worker = env.worker(&redis, &tasks);
    let mut rest = Vec::new();
    while let Some(line) = next(&mut lines).await {
        rest.push(line);
    }
    let status = following.wait().await.unwrap();
    let text = rest.join("\n");
    // The failed one sets the exit status.
    assert_eq!(status.code(), Some(1), "{text}");
    let good_lines: Vec<&String> = rest
        .iter()
        .filter(|l| l.starts_with(&good.to_string()))
        .collect();
    assert!(
        good_lines
            .iter()
            .any(|l| l.contains("encode libx264") && l.contains("fps")),
        "FFmpeg's progress, led by the task's id: {text}"
    );
    let last = good_lines.last().unwrap();
    assert!(
        last.contains("video.transcode succeeded (attempt 1)") && last.contains("100.0 %"),
        "the final record, at 100 %: {text}"
    );
    let failed = rest
        .iter()
        .find(|l| l.starts_with(&missing.to_string()) && l.contains(" failed "))
        .unwrap_or_else(|| panic!("the failure: {text}"));
    assert!(failed.contains("missing.mp4"), "with its error: {failed}");

    worker.stop().await;
    redis.cleanup().await;
}

/// Reports progress every 100 ms until released (or ends at once).
#[derive(Debug, Serialize, Deserialize)]
struct Step {
    hold: bool,
}

impl Task for Step {
    const NAME: &'static str = "test.follow.step";
    type Output = ();
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_waits_only_for_unfinished_tasks_and_picks_up_new_matches() {
    let redis = TestRedis::new().await;
    let dir = std::env::temp_dir().join(format!(
        "spool-follow-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store_url = format!("sqlite://{}", dir.join("jobs.db").display());
    let store = JobStore::create(&store_url).await.unwrap();
    let client = redis.client().with_store(store.clone());
    let release = Arc::new(Notify::new());
    let held = release.clone();
    let worker = Worker::new(
        redis.broker.clone(),
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    )
    .with_store(store.clone())
    .register::<Step, _>(move |step: Step, ctx: TaskContext| {
        let held = held.clone();
        async move {
            if !step.hold {
                return Ok(());
            }
            loop {
                ctx.progress(Progress {
                    stage: Some("halfway".into()),
                    eta_seconds: Some(5.0),
                    ..Progress::percent(50.0)
                });
                tokio::select! {
                    () = held.notified() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    });
    let worker = spawn_worker(worker);

    // Finished before the follow starts: shown, not waited for.
    let before = client.enqueue(Step { hold: false }).await.unwrap();
    wait_until("the first task to succeed", WAIT, || {
        let store = store.clone();
        async move { store.get(before).await.unwrap().map(|r| r.status) == Some(JobStatus::Succeeded) }
    })
    .await;

    // With --until-done and nothing unfinished: the finished one, and out.
    let (mut following, mut lines) = follow(
        &redis,
        &store_url,
        &["--json", "--until-done", "--name", "test.follow.step"],
    );
    let only = json(&next(&mut lines).await.unwrap());
    assert_eq!(only["event"], "finished", "{only}");
    assert_eq!(only["record"]["id"], before.to_string());
    assert_eq!(only["record"]["status"], "succeeded");
    assert_eq!(next(&mut lines).await, None);
    assert_eq!(following.wait().await.unwrap().code(), Some(0));

    // Without it, the follow goes on and picks up a task that starts
    // matching later.
    let (mut following, mut lines) = follow(
        &redis,
        &store_url,
        &["--json", "--name", "test.follow.step"],
    );
    let first = json(&next(&mut lines).await.unwrap());
    assert_eq!(first["record"]["id"], before.to_string(), "{first}");
    let later = client.enqueue(Step { hold: true }).await.unwrap();
    let mut events = Vec::new();
    loop {
        let line = json(&next(&mut lines).await.expect("more lines"));
        let progress = line["event"] == "progress";
        events.push(line);
        if progress {
            break;
        }
    }
    let state = &events[0];
    assert_eq!(state["event"], "state", "{events:?}");
    assert_eq!(state["id"], later.to_string());
    assert_eq!(state["name"], "test.follow.step");
    let progress = events.last().unwrap();
    assert_eq!(progress["id"], later.to_string());
    assert_eq!(progress["progress"]["percent"], 50.0);
    assert_eq!(progress["progress"]["stage"], "halfway");
    assert_eq!(progress["progress"]["eta_seconds"], 5.0);

    release.notify_one();
    let end = loop {
        let line = json(&next(&mut lines).await.expect("the end"));
        if line["event"] == "finished" {
            break line;
        }
    };
    assert_eq!(end["record"]["id"], later.to_string());
    assert_eq!(end["record"]["status"], "succeeded");
    assert_eq!(end["record"]["progress"]["percent"], 100.0, "{end}");
    // Still following, for tasks to come, until interrupted.
    assert!(following.try_wait().unwrap().is_none());
    following.kill().await.unwrap();

    worker.stop().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    redis.cleanup().await;
}

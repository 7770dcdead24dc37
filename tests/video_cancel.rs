//! Stopping a running encode: a revocation (FFmpeg asked to quit, then
//! killed), a task's hard time limit (the run is dropped and its guard
//! kills FFmpeg) and a worker's soft time limit. Each time the task ends
//! with the right status, no FFmpeg process is left (checked by scanning
//! `/proc` for command lines naming the test's directory) and the partial
//! output is gone. Last, a worker child killed mid-encode: its supervisor
//! kills the FFmpeg it left behind, and the task runs again.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use spool_broker::JobStatus;
use spool_sdk::Error;
use spool_sdk::video::{Audio, Codec, Preset, Transcode};
use spool_tests::bins::{spool_worker, stop_warm};
use spool_tests::video::{
    Clip, VideoEnv, ffmpeg_or_skip, processes_mentioning, temp_outputs, worker_config,
};
use spool_tests::{TestRedis, redis_url, wait_until};
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

/// Waits until FFmpeg runs for this test and has started writing `output`
/// (into its run's temporary file beside it); returns its pids.
async fn ffmpeg_running(env: &VideoEnv, output: &Path) -> Vec<u32> {
    let marker = env.marker();
    let dir = output.parent().unwrap().to_owned();
    wait_until("FFmpeg to be encoding", WAIT, || {
        let running = !processes_mentioning(&marker).is_empty() && !temp_outputs(&dir).is_empty();
        async move { running }
    })
    .await;
    assert!(
        !output.exists(),
        "nothing is at the output before the run ends"
    );
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
    assert_eq!(temp_outputs(&env.outputs), Vec::<std::path::PathBuf>::new());

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
    assert_eq!(temp_outputs(&env.outputs), Vec::<std::path::PathBuf>::new());
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
    assert_eq!(temp_outputs(&env.outputs), Vec::<std::path::PathBuf>::new());

    worker.stop().await;
    redis.cleanup().await;
}

/// The parent of `pid`, from `/proc/<pid>/stat` (the field after the state,
/// which follows the parenthesised command name).
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// A child that dies hard (SIGKILL here; the OOM killer or a crash alike)
/// cannot stop its encode: its FFmpeg dies with it (`PR_SET_PDEATHSIG`),
/// and the supervisor kills whatever else is left of its process group;
/// the task, never acknowledged, runs again in the replacement child once
/// its lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_takes_its_ffmpeg_with_it() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_killed_child_takes_its_ffmpeg_with_it") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("long.mp4", long_clip()).await;
    let worker = std::process::Command::new(spool_worker())
        .env("SPOOL_REDIS_URL", redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_FFMPEG", &env.ffmpeg)
        .env("SPOOL_INPUT_ROOT", &env.inputs)
        .env("SPOOL_OUTPUT_ROOT", &env.outputs)
        .env("SPOOL_LOG", "warn")
        .args(["--processes", "1", "--concurrency", "1", "--no-probe"])
        .args(["--visibility-timeout", "2s", "--metrics-addr", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let id = redis
        .client()
        .enqueue(slow_encode("orphan.mp4"))
        .await
        .unwrap();
    let output = env.outputs.join("orphan.mp4");
    let first = ffmpeg_running(&env, &output).await;
    let child = parent_of(first[0]);
    assert_ne!(
        child,
        worker.id(),
        "FFmpeg runs under a child, not the supervisor"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    wait_until(
        "the killed child's FFmpeg to be gone",
        Duration::from_secs(20),
        || {
            let gone = first
                .iter()
                .all(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            async move { gone }
        },
    )
    .await;
    wait_until("the task to run again in the new child", WAIT, || {
        let again = processes_mentioning(&env.marker())
            .iter()
            .any(|pid| !first.contains(pid) && parent_of(*pid) != child);
        async move { again }
    })
    .await;

    redis.client().revoke(id).await.unwrap();
    let second = processes_mentioning(&env.marker());
    ffmpeg_gone(&env, &second).await;
    stop_warm(worker);
    redis.cleanup().await;
}

/// `spool-worker` serving the video tasks of `env` under `redis`'s
/// prefix with `processes` worker processes (0: in the supervisor's own).
fn video_worker(redis: &TestRedis, env: &VideoEnv, processes: &str) -> std::process::Child {
    std::process::Command::new(spool_worker())
        .env("SPOOL_REDIS_URL", redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_FFMPEG", &env.ffmpeg)
        .env("SPOOL_INPUT_ROOT", &env.inputs)
        .env("SPOOL_OUTPUT_ROOT", &env.outputs)
        .env("SPOOL_LOG", "warn")
        .args(["--processes", processes, "--concurrency", "1", "--no-probe"])
        .args(["--metrics-addr", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (polling `/proc`, 10 s at most) until none of `pids` lives.
async fn all_gone(what: &str, pids: &[u32]) {
    let pids = pids.to_vec();
    wait_until(what, Duration::from_secs(10), || {
        let gone = pids
            .iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        async move { gone }
    })
    .await;
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// A worker without a supervisor (`--processes 0`) killed hard mid-encode
/// takes its FFmpeg with it: FFmpeg is started with `PR_SET_PDEATHSIG`
/// from a thread that lives as long as the worker, so it is not left
/// encoding (reparented to PID 1) while the task's next run writes the
/// same output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_takes_its_ffmpeg_with_it() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_killed_worker_takes_its_ffmpeg_with_it") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("long.mp4", long_clip()).await;
    let mut worker = video_worker(&redis, &env, "0");
    let id = redis
        .client()
        .enqueue(slow_encode("inline.mp4"))
        .await
        .unwrap();
    let ffmpeg = ffmpeg_running(&env, &env.outputs.join("inline.mp4")).await;
    assert_eq!(
        parent_of(ffmpeg[0]),
        worker.id(),
        "FFmpeg runs under the worker"
    );

    sigkill(worker.id());
    worker.wait().unwrap();
    all_gone("the killed worker's FFmpeg to be gone", &ffmpeg).await;

    redis.client().revoke(id).await.unwrap();
    redis.cleanup().await;
}

/// A supervisor killed hard: its child dies with it (its own
/// `PR_SET_PDEATHSIG`), and the child's FFmpeg with the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_supervisor_takes_its_childs_ffmpeg_with_it() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_killed_supervisor_takes_its_childs_ffmpeg_with_it") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("long.mp4", long_clip()).await;
    let mut supervisor = video_worker(&redis, &env, "1");
    let id = redis
        .client()
        .enqueue(slow_encode("supervised.mp4"))
        .await
        .unwrap();
    let ffmpeg = ffmpeg_running(&env, &env.outputs.join("supervised.mp4")).await;
    let child = parent_of(ffmpeg[0]);
    assert_eq!(
        parent_of(child),
        supervisor.id(),
        "FFmpeg runs under a child"
    );

    sigkill(supervisor.id());
    supervisor.wait().unwrap();
    let mut both = ffmpeg.clone();
    both.push(child);
    all_gone("the child and its FFmpeg to be gone", &both).await;

    redis.client().revoke(id).await.unwrap();
    redis.cleanup().await;
}

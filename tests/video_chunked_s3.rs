//! Chunked ingest between buckets on a real S3-compatible server
//! (`moto_server`, started per test) with real `spool-worker` processes
//! that share no disk: each has its own input root, output root and
//! scratch directory, so the split, the chunks, the audio and the join
//! can only meet through the bucket (the chunk home beside the output).
//!
//! - Two processes encode bucket to bucket: the output is valid (every
//!   frame of the source, it decodes), the chunk objects are deleted
//!   after the join, no multipart upload is left open, no scratch file
//!   left behind, and nothing written to the processes' disks.
//! - A rerun with the key of a stopped ingest reuses the chunks whose
//!   `.done` marker was uploaded.
//! - A bucket outside the allow-list fails the workflow naming it.
//! - The split refuses a scratch limit too small for the encode, naming
//!   the need and the limit, before anything is downloaded.
#![allow(clippy::unwrap_used)]

#[path = "video_chunk_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use spool_sdk::video::{
    ChunkOutput, ChunkPolicy, Codec, EncodeChunk, Ingest, Preset, RateControl, chunk_node,
};
use spool_tests::bins::spool_worker;
use spool_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use spool_tests::video::{VideoEnv, ffmpeg_or_skip, files_under};
use spool_tests::{TestRedis, redis_url, wait_until};

use common::{WorkerProcess, frame_hashes, has_audio, kill_hard, scene_clip};

const WAIT: Duration = Duration::from_secs(300);

/// 1 s chunks (the clip has a keyframe every second), 0.5 s at least.
fn one_second_chunks() -> ChunkPolicy {
    ChunkPolicy::new(Duration::from_secs(1), Duration::from_millis(500))
}

/// One worker host: its own roots and scratch directory, none shared.
struct Host {
    inputs: PathBuf,
    outputs: PathBuf,
    scratch: PathBuf,
}

impl Host {
    fn new(env: &VideoEnv, name: &str) -> Self {
        let base = env.dir.join(name);
        let host = Self {
            inputs: base.join("inputs"),
            outputs: base.join("outputs"),
            scratch: base.join("scratch"),
        };
        for dir in [&host.inputs, &host.outputs, &host.scratch] {
            std::fs::create_dir_all(dir).unwrap();
        }
        host
    }

    /// `spool-worker` on this host, reaching `s3` with the tests'
    /// credentials from the environment, allowed `allowed`, one task at a
    /// time in its own process (`--processes 0`).
    fn worker(
        &self,
        redis: &TestRedis,
        env: &VideoEnv,
        s3: &S3Server,
        allowed: &str,
        extra: &[&str],
    ) -> WorkerProcess {
        let child = Command::new(spool_worker())
            .env("SPOOL_REDIS_URL", redis_url())
            .env("SPOOL_KEY_PREFIX", &redis.prefix)
            .env("SPOOL_FFMPEG", &env.ffmpeg)
            .env("SPOOL_INPUT_ROOT", &self.inputs)
            .env("SPOOL_OUTPUT_ROOT", &self.outputs)
            .env("SPOOL_SCRATCH_DIR", &self.scratch)
            .env("SPOOL_ALLOW_BUCKET", allowed)
            .env("SPOOL_QUEUES", "default,analysis,streaming")
            .env("SPOOL_LOG", "warn")
            .env("AWS_ENDPOINT", s3.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .args(["--processes", "0", "--concurrency", "1", "--prefetch", "1"])
            .args([
                "--no-probe",
                "--metrics-addr",
                "none",
                "--poll-interval",
                "100ms",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spool-worker starts");
        WorkerProcess(child)
    }

    /// What the host holds on disk, outside the roots' own directories.
    fn files(&self) -> Vec<PathBuf> {
        [&self.inputs, &self.outputs, &self.scratch]
            .iter()
            .flat_map(|dir| files_under(dir))
            .collect()
    }
}

/// A scene clip uploaded as `uploads/in/<name>`, removed from the disk:
/// its bytes.
async fn uploaded_clip(env: &VideoEnv, s3: &S3Server, name: &str, seconds: f64) -> Vec<u8> {
    let path = scene_clip(env, name, (320, 240), 25, seconds, true).await;
    let bytes = std::fs::read(&path).unwrap();
    s3.put("uploads", &format!("in/{name}"), &bytes);
    std::fs::remove_file(&path).unwrap();
    bytes
}

/// Whether FFmpeg decodes all of `file` without an error.
fn plays(ffmpeg: &Path, file: &Path) -> bool {
    let out = Command::new(ffmpeg)
        .args(["-v", "error", "-xerror", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    out.status.success() && out.stderr.is_empty()
}

const ALLOWED: &str = "s3://uploads/in,s3://encodes/out";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_ingest_runs_bucket_to_bucket_on_two_hosts_sharing_no_disk() {
    let test = "a_chunked_ingest_runs_bucket_to_bucket_on_two_hosts_sharing_no_disk";
    let Some(ffmpeg) = ffmpeg_or_skip(test) else {
        return;
    };
    let Some(s3) = S3Server::start_or_skip(test) else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    s3.create_bucket("uploads");
    s3.create_bucket("encodes");
    // Three 2 s scenes at 25 fps: 150 frames, a keyframe every second.
    uploaded_clip(&env, &s3, "scenes.mp4", 2.0).await;
    let source = env.dir.join("source.mp4");
    std::fs::write(&source, s3.get("uploads", "in/scenes.mp4").unwrap()).unwrap();
    let hosts = [Host::new(&env, "host-a"), Host::new(&env, "host-b")];
    let workers: Vec<WorkerProcess> = hosts
        .iter()
        .map(|host| host.worker(&redis, &env, &s3, ALLOWED, &[]))
        .collect();
    let pids: Vec<u32> = workers.iter().map(WorkerProcess::id).collect();
    let client = env.client(&redis);

    let ingest = Ingest::new(
        "s3://uploads/in/scenes.mp4",
        "s3://encodes/out/scenes.mp4",
        Codec::H264,
    )
    .rate(RateControl::Crf(28))
    .preset(Preset::UltraFast)
    .chunked(one_second_chunks())
    .submit(&client)
    .await
    .unwrap();
    let done = ingest.wait(WAIT).await.unwrap();
    let split = done.split.expect("split");
    assert!(split.fallback.is_none(), "{:?}", split.fallback);
    assert!(split.chunks.len() >= 5, "{:?}", split.chunks);
    let join = done.join.expect("joined");
    assert_eq!(join.output, "s3://encodes/out/scenes.mp4");
    assert_eq!(join.frames, 150);
    assert!(join.audio && join.reencoded.is_empty(), "{join:?}");
    for chunk in 0..split.chunks.len() {
        let index = u32::try_from(chunk).unwrap();
        let out: ChunkOutput = ingest
            .workflow()
            .wait::<EncodeChunk>(&chunk_node(index), WAIT)
            .await
            .unwrap();
        let file = format!("chunk-{index:05}.mp4");
        assert!(
            out.path.starts_with("s3://encodes/out/.spool-chunks/") && out.path.ends_with(&file),
            "{out:?}"
        );
        assert!(!out.reused);
        assert!(pids.contains(&out.worker_pid), "{out:?} ran in {pids:?}");
    }

    // The output: in the bucket, every source frame, decodes, has audio.
    let stored = s3.get("encodes", "out/scenes.mp4").expect("uploaded");
    assert_eq!(stored.len() as u64, join.bytes);
    let output = env.dir.join("output.mp4");
    std::fs::write(&output, &stored).unwrap();
    assert_eq!(frame_hashes(&env.ffmpeg, &output).len(), 150);
    assert_eq!(
        frame_hashes(&env.ffmpeg, &source).len(),
        150,
        "the source has the frames the join counted"
    );
    assert!(plays(&env.ffmpeg, &output), "the output decodes cleanly");
    assert!(has_audio(&output));

    // The chunk objects are gone, no upload is left open, and the hosts'
    // disks hold nothing: the nodes met only in the bucket.
    assert_eq!(s3.keys("encodes", ""), ["out/scenes.mp4"]);
    assert!(s3.multipart_uploads("encodes").is_empty());
    for host in &hosts {
        assert!(host.files().is_empty(), "{:?}", host.files());
    }

    for worker in workers {
        kill_hard(worker);
    }
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_reuses_the_chunks_already_in_the_bucket() {
    let test = "a_rerun_reuses_the_chunks_already_in_the_bucket";
    let Some(ffmpeg) = ffmpeg_or_skip(test) else {
        return;
    };
    let Some(s3) = S3Server::start_or_skip(test) else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    s3.create_bucket("uploads");
    s3.create_bucket("encodes");
    // Three 1 s scenes at 640x360: 75 frames, three chunks.
    let path = scene_clip(&env, "scenes.mp4", (640, 360), 25, 1.0, true).await;
    s3.put("uploads", "in/scenes.mp4", &std::fs::read(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    let host = Host::new(&env, "host");
    let worker = host.worker(&redis, &env, &s3, ALLOWED, &[]);
    let client = env.client(&redis);
    // Slow enough (x264 veryslow) to stop the first run between chunks.
    let ingest = |output: &str| {
        Ingest::new(
            "s3://uploads/in/scenes.mp4",
            format!("s3://encodes/out/{output}"),
            Codec::H264,
        )
        .rate(RateControl::Crf(30))
        .preset(Preset::VerySlow)
        .chunked(one_second_chunks())
    };
    let key = format!("rerun-{:08x}", fastrand::u32(..));
    let home = format!("out/.spool-chunks/{key}/");
    let markers = |s3: &S3Server| -> Vec<String> {
        let mut found: Vec<String> = s3
            .keys("encodes", &home)
            .into_iter()
            .filter_map(|k| k.strip_suffix(".done").map(str::to_owned))
            .filter_map(|k| k.rsplit('/').next().map(str::to_owned))
            .collect();
        found.sort();
        found
    };

    // A first run stopped after some chunks: a cancelled workflow stands
    // for a crash before the join (the chunks stay in the bucket).
    let first = ingest("first.mp4").key(&key).workflow().unwrap();
    let handle = client.submit_workflow(first).await.unwrap();
    wait_until("a chunk uploaded whole", WAIT, || {
        let found = markers(&s3);
        async move { !found.is_empty() }
    })
    .await;
    handle.cancel().await.unwrap();
    handle.finished(WAIT).await.unwrap();
    let whole = markers(&s3);
    assert!(!whole.is_empty());
    for chunk in &whole {
        assert!(
            s3.get("encodes", &format!("{home}{chunk}")).is_some(),
            "{chunk} beside its marker"
        );
    }

    let rerun = ingest("rerun.mp4").key(&key).submit(&client).await.unwrap();
    let done = rerun.wait(WAIT).await.unwrap();
    let join = done.join.expect("joined");
    assert_eq!(join.frames, 75);
    let mut reused = Vec::new();
    for chunk in 0..3 {
        let out: ChunkOutput = rerun
            .workflow()
            .wait::<EncodeChunk>(&chunk_node(chunk), WAIT)
            .await
            .unwrap();
        if out.reused {
            assert_eq!(out.encode_time, Duration::ZERO);
            reused.push(format!("chunk-{chunk:05}.mp4"));
        }
    }
    for chunk in &whole {
        assert!(
            reused.contains(chunk),
            "{chunk} had its marker, so it is reused: {reused:?}"
        );
    }
    let output = env.dir.join("rerun.mp4");
    std::fs::write(&output, s3.get("encodes", "out/rerun.mp4").unwrap()).unwrap();
    assert_eq!(frame_hashes(&env.ffmpeg, &output).len(), 75);
    assert!(
        s3.keys("encodes", &home).is_empty(),
        "deleted after the join"
    );
    assert!(host.files().is_empty(), "{:?}", host.files());

    kill_hard(worker);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_outside_the_allow_list_fails_the_workflow_naming_it() {
    let test = "a_bucket_outside_the_allow_list_fails_the_workflow_naming_it";
    let Some(ffmpeg) = ffmpeg_or_skip(test) else {
        return;
    };
    let Some(s3) = S3Server::start_or_skip(test) else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    s3.create_bucket("uploads");
    s3.create_bucket("private");
    uploaded_clip(&env, &s3, "scenes.mp4", 1.0).await;
    let host = Host::new(&env, "host");
    let worker = host.worker(&redis, &env, &s3, ALLOWED, &[]);
    let client = env.client(&redis);

    let ingest = Ingest::new(
        "s3://uploads/in/scenes.mp4",
        "s3://private/out/scenes.mp4",
        Codec::H264,
    )
    .preset(Preset::UltraFast)
    .chunked(one_second_chunks())
    .submit(&client)
    .await
    .unwrap();
    match ingest.wait(WAIT).await {
        Err(spool_sdk::Error::NodeNotSucceeded { node, error, .. }) => {
            assert_eq!(node.as_str(), "split");
            let error = error.unwrap_or_default();
            assert!(
                error.contains("s3://private/out/scenes.mp4") && error.contains("allow-list"),
                "{error}"
            );
            assert!(
                error.contains("s3://uploads/in, s3://encodes/out"),
                "{error}"
            );
        }
        other => panic!("a bucket outside the allow-list must fail the split: {other:?}"),
    }
    assert!(s3.keys("private", "").is_empty(), "nothing written there");
    assert!(host.files().is_empty(), "{:?}", host.files());

    kill_hard(worker);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_refuses_a_scratch_limit_too_small_for_the_encode() {
    let test = "the_split_refuses_a_scratch_limit_too_small_for_the_encode";
    let Some(ffmpeg) = ffmpeg_or_skip(test) else {
        return;
    };
    let Some(s3) = S3Server::start_or_skip(test) else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    s3.create_bucket("uploads");
    s3.create_bucket("encodes");
    let source = uploaded_clip(&env, &s3, "scenes.mp4", 1.0).await;
    let size = source.len() as u64;
    // Room for the download alone, not for the join's source, chunks and
    // output.
    let limit = (size + 1).to_string();
    let host = Host::new(&env, "host");
    let worker = host.worker(&redis, &env, &s3, ALLOWED, &["--scratch-limit", &limit]);
    let client = env.client(&redis);

    let ingest = Ingest::new(
        "s3://uploads/in/scenes.mp4",
        "s3://encodes/out/scenes.mp4",
        Codec::H264,
    )
    .preset(Preset::UltraFast)
    .chunked(one_second_chunks())
    .submit(&client)
    .await
    .unwrap();
    match ingest.wait(WAIT).await {
        Err(spool_sdk::Error::NodeNotSucceeded { node, error, .. }) => {
            assert_eq!(node.as_str(), "split");
            let error = error.unwrap_or_default();
            let need = (3 * size).to_string();
            assert!(
                error.contains(&need)
                    && error.contains(&limit)
                    && error.contains("--scratch-limit"),
                "names the need ({need}) and the limit ({limit}): {error}"
            );
        }
        other => panic!("a too-small scratch limit must fail the split: {other:?}"),
    }
    assert!(s3.keys("encodes", "").is_empty(), "nothing uploaded");
    assert!(host.files().is_empty(), "{:?}", host.files());

    kill_hard(worker);
    redis.cleanup().await;
}

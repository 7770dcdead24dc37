//! Video tasks confine their paths to the worker's roots: through a real
//! worker on Redis, a traversal, an absolute path outside the roots and a
//! symlink leading out of a root each fail the task with an error naming
//! the root, and FFmpeg never runs.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use spool_sdk::video::{Analyze, Codec, Metrics, Transcode};
use spool_tests::TestRedis;
use spool_tests::video::{Clip, VideoEnv, failure, ffmpeg_or_skip};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_roots_are_rejected() {
    let Some(ffmpeg) = ffmpeg_or_skip("paths_outside_the_roots_are_rejected") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    let clip = env.clip("clip.mp4", Clip::new(160, 120).seconds(1.0)).await;
    // A file beside the roots, and a link to it from inside the input root.
    let secret = env.dir.join("secret.mp4");
    std::fs::copy(&clip, &secret).unwrap();
    std::os::unix::fs::symlink(&secret, env.inputs.join("link.mp4")).unwrap();
    std::os::unix::fs::symlink(&env.dir, env.outputs.join("up")).unwrap();

    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);
    let inputs = env.inputs.canonicalize().unwrap();
    let outputs = env.outputs.canonicalize().unwrap();

    let cases = [
        // (input, output, what the error says, the root it names)
        ("../secret.mp4", "a.mp4", "`..` is not allowed", &inputs),
        (
            secret.to_str().unwrap(),
            "b.mp4",
            "outside every root",
            &inputs,
        ),
        (
            "link.mp4",
            "c.mp4",
            "symlink leads outside the root",
            &inputs,
        ),
        ("clip.mp4", "../../d.mp4", "`..` is not allowed", &outputs),
        (
            "clip.mp4",
            "/tmp/e.mp4",
            "outside the output root",
            &outputs,
        ),
        (
            "clip.mp4",
            "up/f.mp4",
            "symlink leads outside the output root",
            &outputs,
        ),
    ];
    for (input, output, expected, root) in cases {
        let id = client
            .enqueue(Transcode::new(input, output, Codec::H264))
            .await
            .unwrap();
        let error = failure(client.task::<Transcode>(id).unwrap().wait(WAIT).await);
        assert!(error.contains(expected), "{input} -> {output}: {error}");
        assert!(
            error.contains(root.to_str().unwrap()),
            "the error names the root: {error}"
        );
    }
    // The analysis task resolves its two inputs the same way.
    let id = client
        .enqueue(Analyze::new("clip.mp4", "../secret.mp4").metrics(Metrics::WITHOUT_VMAF))
        .await
        .unwrap();
    let error = failure(client.task::<Analyze>(id).unwrap().wait(WAIT).await);
    assert!(error.contains("`..` is not allowed"), "{error}");

    // Nothing was written anywhere, in the roots or beside them.
    assert!(!env.dir.join("d.mp4").exists() && !env.dir.join("f.mp4").exists());
    let written: Vec<_> = std::fs::read_dir(&env.outputs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(written, ["up"], "only the test's own link is there");

    worker.stop().await;
    redis.cleanup().await;
}

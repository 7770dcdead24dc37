//! Video tasks from one bucket to another on a real S3-compatible server
//! (`moto_server`, started per test): a transcode, an analysis and a
//! package, run by a real worker with real FFmpeg, their downloads and
//! uploads reported as stages of the task's progress, with no multipart
//! upload left open, no scratch file left behind and no credential in
//! any record.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use spool_broker::Progress;
use spool_sdk::video::{
    Analyze, Codec, Formats, Metrics, Package, Preset, Rendition, Size, Transcode,
};
use spool_tests::TestRedis;
use spool_tests::s3::{S3Server, SECRET_KEY};
use spool_tests::video::{Clip, VideoEnv, ffmpeg_or_skip, files_under};
use spool_video::storage::StorageConfig;
use spool_video::{Ffprobe, VideoConfig};

const WAIT: Duration = Duration::from_secs(120);

/// The worker's object storage: `endpoint`, the test credentials, quick
/// retries and 64 KiB parts, so a small output is a multipart upload.
pub fn storage(endpoint: &str, allowed: &[&str]) -> StorageConfig {
    StorageConfig {
        allowed_buckets: allowed.iter().map(|a| (*a).to_owned()).collect(),
        options: S3Server::options(endpoint),
        max_retries: 3,
        retry_timeout: Duration::from_secs(5),
        upload_concurrency: 2,
        part_size: 64 << 10,
        ..StorageConfig::default()
    }
}

fn ffprobe(env: &VideoEnv) -> Ffprobe {
    Ffprobe::new(
        env.config()
            .locate_ffprobe(Some(&env.ffmpeg))
            .expect("ffprobe is installed by ops/scripts/setup.sh"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_analyze_and_package_from_bucket_to_bucket() {
    let test = "transcode_analyze_and_package_from_bucket_to_bucket";
    let Some(ffmpeg) = ffmpeg_or_skip(test) else {
        return;
    };
    let Some(s3) = S3Server::start_or_skip(test) else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    s3.create_bucket("uploads");
    s3.create_bucket("renditions");
    let clip = env.clip("clip.mp4", Clip::new(320, 240).seconds(2.0)).await;
    s3.put("uploads", "in/clip.mp4", &std::fs::read(&clip).unwrap());
    // Only the bucket holds it now.
    std::fs::remove_file(&clip).unwrap();
    let scratch = env.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let config = VideoConfig {
        scratch_dir: Some(scratch.clone()),
        progress_interval: Duration::from_millis(100),
        storage: storage(&s3.endpoint(), &["s3://uploads/in", "s3://renditions/out"]),
        ..env.config()
    };
    let tasks = env.tasks(config);
    let client = env.client(&redis);

    // Transcode: bucket to bucket, progress through download and upload.
    let task = Transcode::new(
        "s3://uploads/in/clip.mp4",
        "s3://renditions/out/clip-120p.mp4",
        Codec::H264,
    )
    .preset(Preset::UltraFast)
    .size(Size::Height(120));
    let id = client.enqueue(task).await.unwrap();
    let mut ids = vec![id];
    let handle = client.task::<Transcode>(id).unwrap();
    let reports = tokio::spawn({
        let stream = handle.progress().await.unwrap();
        stream.collect::<Vec<Progress>>()
    });
    let worker = env.worker(&redis, &tasks);
    let encoded = handle.wait(WAIT).await.unwrap();
    assert_eq!(encoded.output, "s3://renditions/out/clip-120p.mp4");
    let stored = s3.get("renditions", "out/clip-120p.mp4").expect("uploaded");
    assert_eq!(stored.len() as u64, encoded.bytes);
    let check = env.dir.join("check.mp4");
    std::fs::write(&check, &stored).unwrap();
    let media = ffprobe(&env).probe(&check).await.unwrap();
    assert_eq!(
        (media.video.codec.as_str(), media.video.height),
        ("h264", 120)
    );
    let reports = tokio::time::timeout(WAIT, reports).await.unwrap().unwrap();
    for stage in ["download", "upload"] {
        assert!(
            reports.iter().any(|p| p.stage.as_deref() == Some(stage)
                && p.message.as_deref().is_some_and(|m| m.contains("MiB"))),
            "a {stage} stage with bytes: {reports:?}"
        );
    }
    assert!(
        reports.windows(2).all(|w| w[0].percent <= w[1].percent),
        "percent never goes back: {reports:?}"
    );

    // Analyze: both inputs from buckets.
    let id = client
        .enqueue(
            Analyze::new(
                "s3://uploads/in/clip.mp4",
                "s3://renditions/out/clip-120p.mp4",
            )
            .metrics(Metrics::WITHOUT_VMAF),
        )
        .await
        .unwrap();
    ids.push(id);
    let report = client
        .task::<Analyze>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    let psnr = report.psnr.expect("a PSNR score");
    assert!(psnr.mean > 20.0, "{report:?}");
    assert!(report.ssim.is_some());

    // Package: HLS and DASH into a prefix, manifests last.
    let task = Package::new(
        "s3://uploads/in/clip.mp4",
        "s3://renditions/out/streams/clip/",
    )
    .preset(Preset::UltraFast)
    .segment_duration(Duration::from_secs(1))
    .formats(Formats::default())
    .ladder(vec![
        Rendition::new("mid", 180, 300, 64),
        Rendition::new("low", 120, 150, 64),
    ]);
    let id = client.enqueue(task).await.unwrap();
    ids.push(id);
    let packaged = client
        .task::<Package>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(
        packaged.hls_master.as_deref(),
        Some(Path::new(
            "s3://renditions/out/streams/clip/hls/master.m3u8"
        ))
    );
    assert_eq!(packaged.renditions.len(), 2);
    let keys = s3.keys("renditions", "out/streams/clip/");
    for wanted in [
        "out/streams/clip/hls/master.m3u8",
        "out/streams/clip/dash/manifest.mpd",
    ] {
        assert!(keys.iter().any(|k| k == wanted), "{wanted} in {keys:?}");
    }
    // Every file the master playlist names is in the bucket.
    let master = String::from_utf8(
        s3.get("renditions", "out/streams/clip/hls/master.m3u8")
            .unwrap(),
    )
    .unwrap();
    for line in master
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let playlist = format!("out/streams/clip/hls/{line}");
        let text = String::from_utf8(s3.get("renditions", &playlist).expect(&playlist)).unwrap();
        for segment in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let key = format!("out/streams/clip/hls/{segment}");
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
    }
    assert!(
        keys.iter()
            .any(|k| k.ends_with(".m4s") || k.ends_with(".ts")),
        "segments: {keys:?}"
    );
    assert!(s3.multipart_uploads("renditions").is_empty());
    assert!(files_under(&scratch).is_empty(), "scratch is cleaned");
    assert!(
        files_under(&env.outputs).is_empty(),
        "nothing written locally"
    );

    // No credential in any record.
    for id in ids {
        let record = format!("{:?}", env.store.get(id).await.unwrap());
        assert!(!record.contains(SECRET_KEY), "{record}");
    }

    worker.stop().await;
    redis.cleanup().await;
}

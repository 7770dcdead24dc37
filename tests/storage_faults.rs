//! Object storage faults, on a real S3-compatible server (`moto_server`,
//! per test) and a real worker: URLs outside the allow-list or with `..`
//! refused before any transfer, a missing object named with the store's
//! words, a scratch limit that stops a download and leaves nothing, and
//! the server gone in the middle of a multipart upload (retried, finished,
//! no multipart upload left open), and a revocation mid-upload (aborted,
//! scratch cleaned).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use spool_broker::{Broker as _, Envelope, Progress};
use spool_sdk::video::{Codec, Preset, RateControl, Size, Transcode};
use spool_tests::TestRedis;
use spool_tests::s3::{Proxy, S3Server, SECRET_KEY};
use spool_tests::video::{Clip, VideoEnv, failure, ffmpeg_or_skip, files_under};
use spool_video::VideoConfig;
use spool_video::storage::StorageConfig;

const WAIT: Duration = Duration::from_secs(120);

fn storage(endpoint: &str, allowed: &[&str]) -> StorageConfig {
    StorageConfig {
        allowed_buckets: allowed.iter().map(|a| (*a).to_owned()).collect(),
        options: S3Server::options(endpoint),
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        upload_concurrency: 2,
        part_size: 64 << 10,
        ..StorageConfig::default()
    }
}

/// A server with buckets `uploads` (holding `in/clip.mp4`) and
/// `renditions`, a Redis prefix and a video environment with a scratch
/// directory.
async fn setup(test: &str) -> Option<(S3Server, TestRedis, VideoEnv)> {
    let ffmpeg = ffmpeg_or_skip(test)?;
    let s3 = S3Server::start_or_skip(test)?;
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    for bucket in ["uploads", "renditions", "private"] {
        s3.create_bucket(bucket);
    }
    let clip = env.clip("clip.mp4", Clip::new(320, 240).seconds(2.0)).await;
    let bytes = std::fs::read(&clip).unwrap();
    s3.put("uploads", "in/clip.mp4", &bytes);
    s3.put("private", "clip.mp4", &bytes);
    std::fs::create_dir_all(env.dir.join("scratch")).unwrap();
    Some((s3, redis, env))
}

fn config(env: &VideoEnv, storage: StorageConfig) -> VideoConfig {
    VideoConfig {
        scratch_dir: Some(env.dir.join("scratch")),
        storage,
        ..env.config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_locations_fail_before_any_transfer() {
    let Some((s3, redis, env)) = setup("refused_locations_fail_before_any_transfer").await else {
        return;
    };
    let tasks = env.tasks(config(
        &env,
        storage(&s3.endpoint(), &["s3://uploads/in", "s3://renditions/out"]),
    ));
    let client = env.client(&redis);

    // The SDK refuses a key with `..` or `//` on enqueue...
    for bad in [
        "s3://uploads/in/../../private/clip.mp4",
        "s3://uploads/in//clip.mp4",
    ] {
        match client
            .enqueue(Transcode::new(
                bad,
                "s3://renditions/out/x.mp4",
                Codec::H264,
            ))
            .await
        {
            Err(spool_sdk::Error::InvalidTask { reason, .. }) => {
                assert!(reason.contains("not allowed"), "{reason}");
            }
            other => panic!("{bad}: expected InvalidTask, got {other:?}"),
        }
    }
    // ...and so does the worker, for payloads put on the queue without it.
    let traversal = Transcode::new(
        "s3://uploads/in/../../private/clip.mp4",
        "s3://renditions/out/x.mp4",
        Codec::H264,
    );
    let forbidden_input = Transcode::new(
        "s3://private/clip.mp4",
        "s3://renditions/out/y.mp4",
        Codec::H264,
    );
    let forbidden_output = Transcode::new(
        "s3://uploads/in/clip.mp4",
        "s3://private/out.mp4",
        Codec::H264,
    );
    let envelopes = vec![
        Envelope::for_task(&traversal).unwrap(),
        Envelope::for_task(&forbidden_input).unwrap(),
        Envelope::for_task(&forbidden_output).unwrap(),
    ];
    let ids: Vec<_> = envelopes.iter().map(|e| e.id).collect();
    redis.broker.enqueue(&envelopes).await.unwrap();
    let worker = env.worker(&redis, &tasks);
    let errors: Vec<String> = futures::future::join_all(
        ids.iter()
            .map(|id| async { failure(client.task::<Transcode>(*id).unwrap().wait(WAIT).await) }),
    )
    .await;
    assert!(errors[0].contains("`..` is not allowed"), "{}", errors[0]);
    for error in &errors[1..] {
        assert!(
            error.contains("allow-list: s3://uploads/in, s3://renditions/out"),
            "{error}"
        );
        assert!(error.contains("s3://private/"), "{error}");
    }
    for id in ids {
        let record = env.store.get(id).await.unwrap().unwrap();
        assert_eq!(record.attempts, 1, "not retried: {record:?}");
        assert!(!format!("{record:?}").contains(SECRET_KEY));
    }
    assert!(s3.keys("renditions", "").is_empty());
    assert!(files_under(&env.dir.join("scratch")).is_empty());

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_fails_with_its_url_and_the_stores_words() {
    let Some((s3, redis, env)) =
        setup("a_missing_object_fails_with_its_url_and_the_stores_words").await
    else {
        return;
    };
    let tasks = env.tasks(config(
        &env,
        storage(&s3.endpoint(), &["s3://uploads/in", "s3://renditions/out"]),
    ));
    let client = env.client(&redis);
    let id = client
        .enqueue(Transcode::new(
            "s3://uploads/in/nowhere.mp4",
            "s3://renditions/out/x.mp4",
            Codec::H264,
        ))
        .await
        .unwrap();
    let worker = env.worker(&redis, &tasks);
    let error = failure(client.task::<Transcode>(id).unwrap().wait(WAIT).await);
    assert!(
        error.contains("s3://uploads/in/nowhere.mp4 not found"),
        "{error}"
    );
    // The store's own words follow.
    assert!(error.to_lowercase().contains("not found:"), "{error}");
    assert!(!error.contains(SECRET_KEY), "{error}");
    let record = env.store.get(id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 1, "not retried: {record:?}");
    assert!(files_under(&env.dir.join("scratch")).is_empty());

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_over_the_scratch_limit_fails_and_leaves_nothing() {
    let Some((s3, redis, env)) =
        setup("a_download_over_the_scratch_limit_fails_and_leaves_nothing").await
    else {
        return;
    };
    let tasks = env.tasks(config(
        &env,
        StorageConfig {
            scratch_limit: 4096,
            ..storage(&s3.endpoint(), &["s3://uploads/in", "s3://renditions/out"])
        },
    ));
    let client = env.client(&redis);
    let id = client
        .enqueue(Transcode::new(
            "s3://uploads/in/clip.mp4",
            "s3://renditions/out/x.mp4",
            Codec::H264,
        ))
        .await
        .unwrap();
    let worker = env.worker(&redis, &tasks);
    let error = failure(client.task::<Transcode>(id).unwrap().wait(WAIT).await);
    assert!(
        error.contains(
            "scratch directory's limit is exceeded by the download of s3://uploads/in/clip.mp4"
        ) && error.contains("4096 allowed"),
        "{error}"
    );
    let record = env.store.get(id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 1, "not retried: {record:?}");
    assert!(files_under(&env.dir.join("scratch")).is_empty());
    assert!(s3.keys("renditions", "").is_empty());

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_gone_mid_upload_leaves_no_parts_and_the_task_finishes() {
    let Some((s3, redis, env)) =
        setup("the_server_gone_mid_upload_leaves_no_parts_and_the_task_finishes").await
    else {
        return;
    };
    // 200 KB/s each way: the ~500 KB output takes seconds to upload.
    let mut proxy = Proxy::start(s3.port, 200_000).await;
    let tasks = env.tasks(config(
        &env,
        storage(
            &proxy.endpoint(),
            &["s3://uploads/in", "s3://renditions/out"],
        ),
    ));
    let client = env.client(&redis);
    let task = Transcode::new(
        "s3://uploads/in/clip.mp4",
        "s3://renditions/out/big.mp4",
        Codec::H264,
    )
    .preset(Preset::UltraFast)
    .size(Size::Height(240))
    .rate(RateControl::Bitrate { kbps: 2000 });
    let id = client.enqueue(task).await.unwrap();
    let handle = client.task::<Transcode>(id).unwrap();
    let mut reports = handle.progress().await.unwrap();
    let worker = env.worker(&redis, &tasks);

    // The server goes away once the upload has begun...
    let uploading = tokio::time::timeout(WAIT, async {
        while let Some(report) = reports.next().await {
            if report.stage.as_deref() == Some("upload") && report.percent > 95.0 {
                return Some(report);
            }
        }
        None
    })
    .await
    .unwrap();
    let uploading: Progress = uploading.expect("an upload stage");
    assert!(
        s3.multipart_uploads("renditions").len() == 1,
        "{uploading:?}"
    );
    proxy.cut();
    // ...for longer than the store's own retries last, then comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.open().await;

    let encoded = handle.wait(WAIT).await.unwrap();
    let stored = s3.get("renditions", "out/big.mp4").expect("uploaded");
    assert_eq!(stored.len() as u64, encoded.bytes);
    assert!(encoded.bytes > 64 << 10, "a multipart upload: {encoded:?}");
    assert!(
        s3.multipart_uploads("renditions").is_empty(),
        "no multipart upload left open"
    );
    let record = env.store.get(id).await.unwrap().unwrap();
    // The outage outlasted the store's own retries (2, 100 ms apart and
    // up): the first attempt failed as transient, aborted its upload once
    // the server was back, and the task's own retry finished the work.
    assert_eq!(record.attempts, 2, "{record:?}");
    assert!(!format!("{record:?}").contains(SECRET_KEY));
    assert!(files_under(&env.dir.join("scratch")).is_empty());

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_mid_upload_aborts_it_and_cleans_scratch() {
    let Some((s3, redis, env)) =
        setup("a_revocation_mid_upload_aborts_it_and_cleans_scratch").await
    else {
        return;
    };
    // Slow enough that the revocation lands while parts are in flight.
    let proxy = Proxy::start(s3.port, 100_000).await;
    let tasks = env.tasks(config(
        &env,
        storage(
            &proxy.endpoint(),
            &["s3://uploads/in", "s3://renditions/out"],
        ),
    ));
    let client = env.client(&redis);
    let task = Transcode::new(
        "s3://uploads/in/clip.mp4",
        "s3://renditions/out/revoked.mp4",
        Codec::H264,
    )
    .preset(Preset::UltraFast)
    .size(Size::Height(240))
    .rate(RateControl::Bitrate { kbps: 2000 });
    let id = client.enqueue(task).await.unwrap();
    let handle = client.task::<Transcode>(id).unwrap();
    let mut reports = handle.progress().await.unwrap();
    let worker = env.worker(&redis, &tasks);
    tokio::time::timeout(WAIT, async {
        while let Some(report) = reports.next().await {
            if report.stage.as_deref() == Some("upload") && report.percent > 95.0 {
                return;
            }
        }
        panic!("no upload stage");
    })
    .await
    .unwrap();
    assert_eq!(s3.multipart_uploads("renditions").len(), 1);

    client.revoke(id).await.unwrap();
    match handle.wait(WAIT).await {
        Err(spool_sdk::Error::TaskFailed {
            status: spool_broker::JobStatus::Revoked,
            ..
        }) => {}
        other => panic!("expected a revoked task, got {other:?}"),
    }
    spool_tests::wait_until("the multipart upload is aborted", WAIT, || async {
        s3.multipart_uploads("renditions").is_empty()
    })
    .await;
    assert!(s3.get("renditions", "out/revoked.mp4").is_none());
    spool_tests::wait_until("scratch is cleaned", WAIT, || async {
        files_under(&env.dir.join("scratch")).is_empty()
    })
    .await;

    worker.stop().await;
    redis.cleanup().await;
}

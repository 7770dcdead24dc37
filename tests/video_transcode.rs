//! `video.transcode` end to end: the SDK enqueues, a worker on Redis runs
//! real FFmpeg on clips generated with lavfi, and ffprobe checks what was
//! written. Also: progress with fps and speed on the SDK's stream, the
//! software fallback after a real hardware failure (NVENC without a GPU),
//! and a corrupt input failing with FFmpeg's message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use spool_broker::{JobStatus, Progress};
use spool_sdk::Error;
use spool_sdk::video::{
    Audio, Codec, Fps, HardwarePolicy, Preset, RateControl, Size, Transcode, TranscodeOutput,
};
use spool_tests::TestRedis;
use spool_tests::video::{Clip, VideoEnv, ffmpeg_or_skip};
use spool_video::{Ffprobe, MediaInfo, VideoConfig};

const WAIT: Duration = Duration::from_secs(120);

/// ffprobe, as the worker finds it.
fn ffprobe(config: &VideoConfig) -> Ffprobe {
    let path = config
        .locate_ffprobe(config.ffmpeg.as_deref())
        .expect("ffprobe is needed: run `bash ops/scripts/setup.sh`");
    Ffprobe::new(path)
}

async fn probe(config: &VideoConfig, output: &TranscodeOutput) -> MediaInfo {
    ffprobe(config)
        .probe(Path::new(&output.output))
        .await
        .unwrap()
}

fn assert_close(what: &str, got: Duration, expected: Duration) {
    let off = got.abs_diff(expected);
    assert!(
        off <= Duration::from_millis(150),
        "{what}: {got:?}, expected about {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_with_crf_size_and_audio_reports_progress() {
    let Some(ffmpeg) = ffmpeg_or_skip("h264_with_crf_size_and_audio_reports_progress") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(320, 240).seconds(3.0)).await;
    // Stats every 100 ms, so even a short encode reports its speed.
    let config = VideoConfig {
        progress_interval: Duration::from_millis(100),
        ..env.config()
    };
    let tasks = env.tasks(config.clone());
    let client = env.client(&redis);
    let task = Transcode::new("clip.mp4", "out/small.mp4", Codec::H264)
        .rate(RateControl::Crf(30))
        .preset(Preset::Slower)
        .size(Size::Height(120))
        .audio(Audio::Aac { kbps: 64 });
    let id = client.enqueue(task).await.unwrap();
    let handle = client.task::<Transcode>(id).unwrap();
    // Subscribed before the worker starts: no report is missed.
    let reports = tokio::spawn({
        let stream = handle.progress().await.unwrap();
        stream.collect::<Vec<Progress>>()
    });
    let worker = env.worker(&redis, &tasks);

    let output = handle.wait(WAIT).await.unwrap();
    assert_eq!(output.encoder, "libx264");
    assert_eq!(output.fell_back_from, None);
    assert_eq!(
        (output.codec, output.width, output.height),
        (Codec::H264, 160, 120)
    );
    assert!(output.audio);
    assert!(output.bytes > 1000, "{output:?}");
    assert!(output.speed.is_some_and(|s| s > 0.0), "{output:?}");
    let resolved = env.outputs.canonicalize().unwrap().join("out/small.mp4");
    assert_eq!(Path::new(&output.output), resolved);

    // What ffprobe reads back, independently of the task's own check.
    let media = probe(&config, &output).await;
    assert_eq!(media.video.codec, "h264");
    assert_eq!((media.video.width, media.video.height), (160, 120));
    assert_eq!(media.audio_codec.as_deref(), Some("aac"));
    assert_close("duration", media.duration, Duration::from_secs(3));
    assert_eq!(media.video.frames, Some(75));

    let reports = tokio::time::timeout(WAIT, reports).await.unwrap().unwrap();
    let stages: Vec<&str> = reports.iter().filter_map(|p| p.stage.as_deref()).collect();
    // (The last reports may trail the outcome, which ends the stream.)
    assert_eq!(stages.first(), Some(&"probing"), "{reports:?}");
    assert!(
        reports
            .iter()
            .any(|p| p.stage.as_deref() == Some("encode libx264")
                && p.fps.is_some()
                && p.speed.is_some_and(|s| s > 0.0)),
        "FFmpeg's progress with fps and speed: {reports:?}"
    );
    assert!(
        reports.windows(2).all(|w| w[0].percent <= w[1].percent),
        "percent never goes back: {reports:?}"
    );
    assert!(reports.iter().all(|p| p.percent <= 100.0), "{reports:?}");

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_and_av1_with_bitrate_and_frame_rate() {
    let Some(ffmpeg) = ffmpeg_or_skip("hevc_and_av1_with_bitrate_and_frame_rate") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(320, 240)).await;
    let config = env.config();
    let tasks = env.tasks(config.clone());
    let client = env.client(&redis);
    let worker = env.worker(&redis, &tasks);

    let hevc = Transcode::new("clip.mp4", "hevc.mp4", Codec::Hevc)
        .rate(RateControl::Bitrate { kbps: 200 })
        .preset(Preset::UltraFast)
        .fps(Fps::whole(15))
        .audio(Audio::None);
    let av1 = Transcode::new("clip.mp4", "av1.mkv", Codec::Av1)
        .rate(RateControl::Crf(45))
        .preset(Preset::UltraFast)
        .size(Size::Exact {
            width: 160,
            height: 96,
        })
        .audio(Audio::Copy)
        .hardware(HardwarePolicy::Software);
    let hevc_id = client.enqueue(hevc).await.unwrap();
    let av1_id = client.enqueue(av1).await.unwrap();

    let hevc = client
        .task::<Transcode>(hevc_id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(
        (hevc.encoder.as_str(), hevc.codec),
        ("libx265", Codec::Hevc)
    );
    let media = probe(&config, &hevc).await;
    assert_eq!(media.video.codec, "hevc");
    assert_eq!((media.video.width, media.video.height), (320, 240));
    assert_eq!(media.video.frame_rate, Some(Fps::whole(15)));
    assert_eq!(media.audio_codec, None, "audio dropped");
    assert_close("duration", media.duration, Duration::from_secs(2));
    assert!(media.format.contains("mp4"), "{}", media.format);

    let av1 = client
        .task::<Transcode>(av1_id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(av1.encoder, "libsvtav1");
    let media = probe(&config, &av1).await;
    assert_eq!(media.video.codec, "av1");
    assert_eq!((media.video.width, media.video.height), (160, 96));
    assert_eq!(media.audio_codec.as_deref(), Some("aac"), "audio copied");
    assert!(media.format.contains("matroska"), "{}", media.format);

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hardware_encoder_falls_back_to_software() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_failing_hardware_encoder_falls_back_to_software") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(160, 120).seconds(1.0)).await;
    // As if the probe had found NVENC working: on this GPU-less machine
    // (as on any where NVENC's trial encode failed) it fails for real.
    let config = VideoConfig {
        encoders_override: Some(vec!["h264_nvenc".into(), "libx264".into()]),
        ..env.config()
    };
    let tasks = env.tasks(config);
    if tasks.report().encoders.iter().any(|e| e == "h264_nvenc") {
        eprintln!("skipping a_failing_hardware_encoder_falls_back_to_software: NVENC works here");
        return;
    }
    let client = env.client(&redis);
    let worker = env.worker(&redis, &tasks);

    let id = client
        .enqueue(Transcode::new("clip.mp4", "auto.mp4", Codec::H264).rate(RateControl::Crf(30)))
        .await
        .unwrap();
    let output = client
        .task::<Transcode>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(output.encoder, "libx264");
    assert_eq!(output.fell_back_from.as_deref(), Some("h264_nvenc"));
    let reason = output.fallback_reason.unwrap_or_default();
    assert!(!reason.is_empty(), "FFmpeg's words on NVENC");
    assert_eq!((output.width, output.height), (160, 120));

    // Hardware required: no fallback, the task fails with FFmpeg's
    // message, and no partial output is left.
    let id = client
        .enqueue(
            Transcode::new("clip.mp4", "required.mp4", Codec::H264)
                .hardware(HardwarePolicy::Require),
        )
        .await
        .unwrap();
    match client.task::<Transcode>(id).unwrap().wait(WAIT).await {
        Err(Error::TaskFailed {
            status: JobStatus::Failed,
            error: Some(error),
        }) => {
            assert!(error.contains("FFmpeg failed"), "{error}");
            assert!(error.contains(reason.as_str()), "{error} / {reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(!env.outputs.join("required.mp4").exists());

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_without_retry() {
    let Some(ffmpeg) = ffmpeg_or_skip("bad_input_fails_without_retry") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    std::fs::write(env.inputs.join("corrupt.mp4"), b"this is not a video").unwrap();
    env.clip("clip.mp4", Clip::new(160, 120).seconds(1.0)).await;
    let tasks = env.tasks(env.config());
    let client = env.client(&redis);
    let worker = env.worker(&redis, &tasks);

    let cases = [
        (
            Transcode::new("corrupt.mp4", "x.mp4", Codec::H264),
            "Invalid data found when processing input",
        ),
        (
            Transcode::new("missing.mp4", "x.mp4", Codec::H264),
            "not found in",
        ),
        (
            Transcode::new("clip.mp4", "x.avi", Codec::H264),
            "no supported container",
        ),
        (
            Transcode::new("clip.mp4", "x.mp4", Codec::H264).hardware(HardwarePolicy::Require),
            "passed the trial encode",
        ),
    ];
    // Refused before it is enqueued (a worker refuses it too:
    // bad_input_video::absurd_payloads_are_refused_before_ffmpeg_runs).
    let crf = Transcode::new("clip.mp4", "x.mp4", Codec::H264).rate(RateControl::Crf(60));
    match client.enqueue(crf).await {
        Err(Error::InvalidTask { reason, .. }) => {
            assert!(reason.contains("CRF 60 is above 51"), "{reason}");
        }
        other => panic!("expected InvalidTask, got {other:?}"),
    }
    for (task, expected) in cases {
        let id = client.enqueue(task).await.unwrap();
        let handle = client.task::<Transcode>(id).unwrap();
        match handle.wait(WAIT).await {
            Err(Error::TaskFailed {
                status: JobStatus::Failed,
                error: Some(error),
            }) => assert!(error.contains(expected), "{error}"),
            other => panic!("expected a failure with {expected:?}, got {other:?}"),
        }
        assert_eq!(
            handle.record().await.unwrap().unwrap().attempts,
            1,
            "not retried"
        );
    }
    assert!(!env.outputs.join("x.mp4").exists());

    worker.stop().await;
    redis.cleanup().await;
}

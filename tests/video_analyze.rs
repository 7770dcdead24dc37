//! `video.analyze` end to end, with real FFmpeg on generated clips: an
//! identical copy scores at the top, a degraded encode at a quarter of the
//! size (scaled back to the reference) scores lower, an FFmpeg without
//! libvmaf gives the clear error for VMAF while PSNR and SSIM still work,
//! and a corrupt input fails the job with FFmpeg's message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use spool_sdk::video::{
    AnalysisReport, Analyze, Codec, Metrics, Preset, RateControl, Size, Transcode, VmafModel,
};
use spool_tests::TestRedis;
use spool_tests::video::{
    Clip, VideoEnv, failure, ffmpeg_or_skip, ffmpeg_without_libvmaf, no_ffmpeg,
};
use spool_video::{PSNR_CAP, VideoConfig};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_and_degraded_videos_score_as_they_should() {
    let Some(ffmpeg) = ffmpeg_or_skip("identical_and_degraded_videos_score_as_they_should") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    let clip = Clip::new(320, 240);
    env.clip("ref.mp4", clip).await;
    let tasks = env.tasks(env.config());
    if !tasks.report().libvmaf {
        let what = format!("an FFmpeg with libvmaf ({} has none)", env.ffmpeg.display());
        no_ffmpeg("identical_and_degraded_videos_score_as_they_should", &what);
        return;
    }
    let client = env.client(&redis);
    let worker = env.worker(&redis, &tasks);

    // The distorted video: a quarter of the pixels, heavily compressed.
    let id = client
        .enqueue(
            Transcode::new("ref.mp4", "small.mp4", Codec::H264)
                .size(Size::Height(120))
                .rate(RateControl::Crf(42))
                .preset(Preset::UltraFast),
        )
        .await
        .unwrap();
    let small = client
        .task::<Transcode>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();

    let same_id = client
        .enqueue(Analyze::new("ref.mp4", "ref.mp4").per_frame(true))
        .await
        .unwrap();
    let worse_id = client
        .enqueue(
            Analyze::new("ref.mp4", &small.output)
                .model(VmafModel::V061Neg)
                .threads(2),
        )
        .await
        .unwrap();
    let same: AnalysisReport = client
        .task::<Analyze>(same_id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    let worse: AnalysisReport = client
        .task::<Analyze>(worse_id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();

    let frames = u32::try_from(clip.frames()).unwrap();
    assert_eq!(same.frames, frames);
    assert_eq!((same.width, same.height), (320, 240));
    assert_eq!(same.per_frame.len(), frames as usize);
    assert!(
        same.per_frame
            .iter()
            .all(|f| f.vmaf.is_some() && f.ssim.is_some())
    );
    let vmaf = same.vmaf.unwrap();
    assert!(
        vmaf.mean > 95.0 && vmaf.max <= 100.0,
        "identical VMAF: {vmaf:?}"
    );
    let psnr = same.psnr.unwrap();
    assert_eq!(
        (psnr.mean, psnr.min),
        (PSNR_CAP, PSNR_CAP),
        "identical PSNR: {psnr:?}"
    );
    let ssim = same.ssim.unwrap();
    assert!((ssim.mean - 1.0).abs() < 1e-6, "identical SSIM: {ssim:?}");
    assert_eq!(same.vmaf_model, Some(VmafModel::V061));

    // Scaled back to 320x240 and compared frame by frame.
    assert_eq!(
        (worse.width, worse.height, worse.frames),
        (320, 240, frames)
    );
    assert!(
        worse.per_frame.is_empty(),
        "per-frame scores only when asked"
    );
    let (w_vmaf, w_psnr, w_ssim) = (
        worse.vmaf.unwrap(),
        worse.psnr.unwrap(),
        worse.ssim.unwrap(),
    );
    assert!(w_vmaf.mean < vmaf.mean - 10.0, "degraded VMAF {w_vmaf:?}");
    assert!(w_vmaf.mean > 0.0 && w_vmaf.min <= w_vmaf.p1 && w_vmaf.p1 <= w_vmaf.p5);
    assert!(w_vmaf.p5 <= w_vmaf.mean && w_vmaf.mean <= w_vmaf.p95 && w_vmaf.p95 <= w_vmaf.max);
    assert!(w_vmaf.harmonic_mean <= w_vmaf.mean);
    assert!(
        w_psnr.mean > 15.0 && w_psnr.mean < 40.0,
        "degraded PSNR {w_psnr:?}"
    );
    assert!(
        w_ssim.mean > 0.5 && w_ssim.mean < 0.99,
        "degraded SSIM {w_ssim:?}"
    );
    assert_eq!(worse.vmaf_model, Some(VmafModel::V061Neg));

    // Subsampled: one frame in five.
    let id = client
        .enqueue(
            Analyze::new("ref.mp4", &small.output)
                .metrics(Metrics::WITHOUT_VMAF)
                .subsample(5),
        )
        .await
        .unwrap();
    let sampled = client
        .task::<Analyze>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(sampled.frames, frames.div_ceil(5));
    assert!(sampled.vmaf.is_none() && sampled.vmaf_model.is_none());

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_libvmaf_vmaf_fails_clearly_and_psnr_ssim_work() {
    let Some(ffmpeg) = ffmpeg_or_skip("without_libvmaf_vmaf_fails_clearly_and_psnr_ssim_work")
    else {
        return;
    };
    let Some(plain) = ffmpeg_without_libvmaf() else {
        no_ffmpeg(
            "without_libvmaf_vmaf_fails_clearly_and_psnr_ssim_work",
            "an FFmpeg without libvmaf (set-up installs Debian's /usr/bin/ffmpeg; or set \
             SPOOL_TEST_FFMPEG_NO_VMAF)",
        );
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("ref.mp4", Clip::new(160, 120).seconds(1.0)).await;
    let config = VideoConfig {
        ffmpeg: Some(plain.clone()),
        ..env.config()
    };
    let tasks = env.tasks(config);
    assert!(!tasks.report().libvmaf);
    let client = env.client(&redis);
    let worker = env.worker(&redis, &tasks);

    let id = client
        .enqueue(Analyze::new("ref.mp4", "ref.mp4"))
        .await
        .unwrap();
    let error = failure(client.task::<Analyze>(id).unwrap().wait(WAIT).await);
    assert!(error.contains("libvmaf"), "{error}");
    assert!(
        error.contains(plain.to_str().unwrap()),
        "names the FFmpeg: {error}"
    );
    assert!(
        error.contains("imageio-ffmpeg") && error.contains("ops/scripts/setup.sh"),
        "{error}"
    );

    let id = client
        .enqueue(Analyze::new("ref.mp4", "ref.mp4").metrics(Metrics::WITHOUT_VMAF))
        .await
        .unwrap();
    let report = client
        .task::<Analyze>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert!(report.vmaf.is_none());
    assert_eq!(report.psnr.unwrap().mean, PSNR_CAP);
    assert!((report.ssim.unwrap().mean - 1.0).abs() < 1e-6);
    assert_eq!(report.frames, 25);

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_input_fails_with_ffmpegs_message() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_corrupt_input_fails_with_ffmpegs_message") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("ref.mp4", Clip::new(160, 120).seconds(1.0)).await;
    // A real clip cut in half: its index (at the end) is gone.
    let whole = std::fs::read(env.inputs.join("ref.mp4")).unwrap();
    std::fs::write(env.inputs.join("cut.mp4"), &whole[..whole.len() / 2]).unwrap();
    let tasks = env.tasks(env.config());
    let client = env.client(&redis);
    let worker = env.worker(&redis, &tasks);

    let id = client
        .enqueue(Analyze::new("ref.mp4", "cut.mp4").metrics(Metrics::WITHOUT_VMAF))
        .await
        .unwrap();
    let handle = client.task::<Analyze>(id).unwrap();
    let error = failure(handle.wait(WAIT).await);
    // Probed before the analysis runs: ffprobe's words, naming the file.
    assert!(error.contains("cut.mp4"), "{error}");
    assert!(
        error.contains("moov atom not found"),
        "FFmpeg's own words: {error}"
    );
    assert_eq!(
        handle.record().await.unwrap().unwrap().attempts,
        1,
        "not retried"
    );

    worker.stop().await;
    redis.cleanup().await;
}

//! `video.package` through a real worker on Redis: generated clips are
//! packaged into HLS and DASH in one FFmpeg run; the playlists and the MPD
//! parse and list every rendition, taller rungs are dropped, segments are
//! cut at the same instants in every rendition and their counts match the
//! duration; a broken input fails with FFmpeg's words, a traversal in
//! `output_dir` is rejected, and a revoked run leaves no FFmpeg and no
//! partial output.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use spool_broker::JobStatus;
use spool_sdk::Error;
use spool_sdk::video::{Codec, Formats, Package, PackageOutput, Preset, Rendition};
use spool_tests::video::{Clip, VideoEnv, failure, ffmpeg_or_skip, processes_mentioning};
use spool_tests::{TestRedis, wait_until};
use spool_video::manifest::{dash, hls};

const WAIT: Duration = Duration::from_secs(120);

/// A fast package of `input`: ultrafast x264, 2 s segments.
fn quick(input: &str, output_dir: &str) -> Package {
    Package::new(input, output_dir)
        .preset(Preset::UltraFast)
        .segment_duration(Duration::from_secs(2))
}

/// The ffprobe beside the tests' FFmpeg, `SPOOL_FFPROBE`, or on `PATH`.
fn ffprobe(env: &VideoEnv) -> PathBuf {
    env.config()
        .locate_ffprobe(Some(&env.ffmpeg))
        .expect("ffprobe is installed with FFmpeg by ops/scripts/setup.sh")
}

/// The first video timestamp of a media file, in seconds, as ffprobe
/// reads it.
fn first_video_time(ffprobe: &Path, file: &Path) -> f64 {
    let out = Command::new(ffprobe)
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=start_time", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}: {out:?}", file.display());
    // The stream's line (ffprobe may repeat it for the program).
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// One HLS variant as a package lists it.
#[derive(Debug)]
struct Variant {
    uri: String,
    size: (u32, u32),
    /// Its media playlist's segment durations.
    durations: Vec<f64>,
}

/// One DASH representation as a package lists it.
#[derive(Debug)]
struct Representation {
    /// `video` or `audio`.
    kind: String,
    size: Option<(u32, u32)>,
    segments: usize,
    duration: f64,
}

/// The master playlist's variants, checking that each media playlist is
/// complete and every segment it names exists.
fn read_hls(master: &Path) -> Vec<Variant> {
    let text = std::fs::read_to_string(master).unwrap();
    let parsed = hls::parse_master(&text).unwrap();
    parsed
        .variants
        .iter()
        .map(|variant| {
            assert!(variant.bandwidth > 0, "{variant:?}");
            let path = master.parent().unwrap().join(&variant.uri);
            let media = hls::parse_media(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert!(media.ended, "{} has #EXT-X-ENDLIST", path.display());
            for segment in &media.segments {
                let file = path.parent().unwrap().join(&segment.uri);
                assert!(
                    std::fs::metadata(&file).unwrap().len() > 0,
                    "{}",
                    file.display()
                );
            }
            let durations = media.segments.iter().map(|s| s.duration).collect();
            Variant {
                uri: variant.uri.clone(),
                size: variant.resolution.unwrap(),
                durations,
            }
        })
        .collect()
}

/// The MPD's representations, checking that every segment it names
/// exists.
fn read_dash(mpd: &Path) -> Vec<Representation> {
    let parsed = dash::parse_mpd(&std::fs::read_to_string(mpd).unwrap()).unwrap();
    let dir = mpd.parent().unwrap();
    parsed
        .adaptation_sets
        .iter()
        .flat_map(|set| set.representations.iter())
        .map(|rep| {
            let init = dir.join(rep.initialization.as_ref().unwrap());
            assert!(
                std::fs::metadata(&init).unwrap().len() > 0,
                "{}",
                init.display()
            );
            for segment in &rep.segments {
                assert!(
                    std::fs::metadata(dir.join(segment)).unwrap().len() > 0,
                    "{segment}"
                );
            }
            Representation {
                kind: rep.content_type.clone().unwrap(),
                size: rep.width.zip(rep.height),
                segments: rep.segments.len(),
                duration: rep.duration,
            }
        })
        .collect()
}

/// Nothing is left in the worker's staging area.
fn assert_no_staging(env: &VideoEnv) {
    let staging = env.outputs.join(".spool-staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging holds {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_360p_clip_keeps_one_rendition_and_drops_taller_rungs() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_360p_clip_keeps_one_rendition") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("small.mp4", Clip::new(640, 360).seconds(4.0))
        .await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    // The default ladder: 1080p, 720p and 480p are taller than the source.
    let id = client
        .enqueue(quick("small.mp4", "streams/small"))
        .await
        .unwrap();
    let handle = client.task::<Package>(id).unwrap();
    let out: PackageOutput = handle.wait(WAIT).await.unwrap();
    let dir = env.outputs.canonicalize().unwrap().join("streams/small");
    assert_eq!(out.hls_master, Some(dir.join("hls/master.m3u8")));
    assert_eq!(out.dash_mpd, Some(dir.join("dash/manifest.mpd")));
    assert_eq!(out.renditions.len(), 1, "{out:?}");
    let rendition = &out.renditions[0];
    assert_eq!(
        (rendition.name.as_str(), rendition.width, rendition.height),
        ("360p", 640, 360)
    );
    assert_eq!(rendition.segments, 2, "4 s in 2 s segments");
    assert!(rendition.bandwidth > 0);
    assert_eq!(out.segment_duration, Duration::from_secs(2));
    assert!(
        (out.duration.as_secs_f64() - 4.0).abs() < 0.2,
        "{:?}",
        out.duration
    );

    let variants = read_hls(out.hls_master.as_ref().unwrap());
    assert_eq!(variants.len(), 1);
    assert_eq!(variants[0].uri, "360p.m3u8");
    assert_eq!(variants[0].size, (640, 360));
    assert_eq!(variants[0].durations.len(), 2);
    let representations = read_dash(out.dash_mpd.as_ref().unwrap());
    let video: Vec<_> = representations
        .iter()
        .filter(|r| r.kind == "video")
        .collect();
    assert_eq!(video.len(), 1);
    assert_eq!((video[0].size, video[0].segments), (Some((640, 360)), 2));
    assert_eq!(
        representations.iter().filter(|r| r.kind == "audio").count(),
        1
    );
    assert_eq!(handle.status().await.unwrap(), Some(JobStatus::Succeeded));
    assert_no_staging(&env);

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_720p_clip_gives_three_renditions_cut_at_the_same_instants() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_720p_clip_gives_three_renditions") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    // 25 fps and 2 s segments: keyframes every 50 frames.
    env.clip("hd.mp4", Clip::new(1280, 720).seconds(4.0)).await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    let id = client.enqueue(quick("hd.mp4", "streams/hd")).await.unwrap();
    let out = client
        .task::<Package>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    let names: Vec<_> = out.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["720p", "480p", "360p"]);
    let sizes: Vec<_> = out.renditions.iter().map(|r| (r.width, r.height)).collect();
    assert_eq!(sizes, [(1280, 720), (854, 480), (640, 360)]);
    assert!(
        out.renditions
            .windows(2)
            .all(|w| w[0].bandwidth > w[1].bandwidth),
        "{out:?}"
    );

    // HLS: one master listing the three variants, each with its own media
    // playlist of two segments, cut at the same instants.
    let master = out.hls_master.unwrap();
    let variants = read_hls(&master);
    let listed: Vec<_> = variants.iter().map(|v| (v.uri.as_str(), v.size)).collect();
    assert_eq!(
        listed,
        [
            ("720p.m3u8", (1280, 720)),
            ("480p.m3u8", (854, 480)),
            ("360p.m3u8", (640, 360))
        ]
    );
    for variant in &variants {
        let (uri, durations) = (&variant.uri, &variant.durations);
        assert_eq!(
            durations, &variants[0].durations,
            "{uri} is cut like the first rendition"
        );
        assert_eq!(durations.len(), 2, "{uri}: {durations:?}");
    }
    // Each second segment starts at the same frame in every rendition.
    let ffprobe = ffprobe(&env);
    let starts: Vec<f64> = ["720p", "480p", "360p"]
        .iter()
        .map(|name| first_video_time(&ffprobe, &master.with_file_name(format!("{name}_00001.ts"))))
        .collect();
    assert!(
        starts.iter().all(|s| (s - starts[0]).abs() < 1e-3),
        "{starts:?}"
    );

    // DASH: every rendition in one MPD, the video timelines identical.
    let representations = read_dash(&out.dash_mpd.unwrap());
    let video: Vec<_> = representations
        .iter()
        .filter(|r| r.kind == "video")
        .collect();
    let video_sizes: Vec<_> = video.iter().map(|r| r.size.unwrap()).collect();
    assert_eq!(video_sizes, sizes);
    assert!(
        video
            .iter()
            .all(|r| r.segments == 2 && (r.duration - video[0].duration).abs() < 1e-9),
        "{video:?}"
    );
    // 128, 96 and 96 kb/s: DASH lists each audio bitrate once.
    assert_eq!(
        representations.iter().filter(|r| r.kind == "audio").count(),
        2
    );
    assert_no_staging(&env);

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_clip_smaller_than_every_rung_is_packaged_at_its_size() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_silent_clip_smaller_than_every_rung") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("tiny.mp4", Clip::new(320, 240).seconds(3.0).without_audio())
        .await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    let task = quick("tiny.mp4", "streams/tiny")
        .formats(Formats::HLS)
        .ladder(vec![
            Rendition::new("hd", 720, 2800, 128),
            Rendition::new("sd", 360, 800, 96),
        ]);
    let id = client.enqueue(task).await.unwrap();
    let out = client
        .task::<Package>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(out.dash_mpd, None);
    assert!(!env.outputs.join("streams/tiny/dash").exists());
    assert_eq!(out.renditions.len(), 1);
    assert_eq!(
        (out.renditions[0].width, out.renditions[0].height),
        (320, 240)
    );
    assert_eq!(out.renditions[0].name, "240p");
    assert_eq!(out.renditions[0].segments, 2, "3 s in 2 s segments");
    let master = std::fs::read_to_string(out.hls_master.unwrap()).unwrap();
    assert!(master.contains("RESOLUTION=320x240"), "{master}");
    assert!(
        !master.contains("mp4a"),
        "no audio codec in a silent package: {master}"
    );

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_and_av1_ladders_use_fragmented_mp4_segments() {
    let Some(ffmpeg) = ffmpeg_or_skip("hevc_and_av1_ladders_use_fragmented_mp4") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(320, 240).seconds(2.0)).await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    for (codec, tag) in [(Codec::Hevc, "hvc1"), (Codec::Av1, "av01")] {
        let task = quick("clip.mp4", &format!("streams/{codec}"))
            .codec(codec)
            .segment_duration(Duration::from_secs(1))
            .ladder(vec![
                Rendition::new("240p", 240, 400, 64),
                Rendition::new("120p", 120, 150, 48),
            ]);
        let id = client.enqueue(task).await.unwrap();
        let out = client
            .task::<Package>(id)
            .unwrap()
            .wait(WAIT)
            .await
            .unwrap();
        assert_eq!(out.renditions.len(), 2, "{codec}: {out:?}");
        let master_path = out.hls_master.unwrap();
        let master = std::fs::read_to_string(&master_path).unwrap();
        assert!(master.contains(tag), "{codec}: {master}");
        for name in ["240p", "120p"] {
            let media = std::fs::read_to_string(master_path.with_file_name(format!("{name}.m3u8")))
                .unwrap();
            let media = hls::parse_media(&media).unwrap();
            assert_eq!(media.map_uri, Some(format!("{name}_init.mp4")), "{codec}");
            assert!(
                media.segments.iter().all(|s| s.uri.ends_with(".m4s")),
                "{codec}"
            );
            assert_eq!(
                media.segments.len(),
                2,
                "{codec} {name}: 2 s in 1 s segments"
            );
        }
        let representations = read_dash(&out.dash_mpd.unwrap());
        assert_eq!(
            representations.iter().filter(|r| r.kind == "video").count(),
            2
        );
    }

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_input_fails_with_ffmpegs_message_and_writes_nothing() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_broken_input_fails") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    let clip = env
        .clip("whole.mp4", Clip::new(320, 240).seconds(2.0))
        .await;
    // The first half of an MP4 whose index (moov) is written last.
    let bytes = std::fs::read(&clip).unwrap();
    std::fs::write(env.inputs.join("broken.mp4"), &bytes[..bytes.len() / 2]).unwrap();
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    let id = client
        .enqueue(quick("broken.mp4", "streams/broken"))
        .await
        .unwrap();
    let error = failure(client.task::<Package>(id).unwrap().wait(WAIT).await);
    assert!(
        error.contains("moov atom not found"),
        "FFmpeg's own words: {error}"
    );
    // The directory the failed run created is gone again.
    assert!(!env.outputs.join("streams/broken").exists());
    assert_no_staging(&env);

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_in_output_dir_is_rejected() {
    let Some(ffmpeg) = ffmpeg_or_skip("traversal_in_output_dir_is_rejected") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(160, 120).seconds(1.0)).await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    for (output_dir, expected) in [
        ("../escaped", "`..` is not allowed"),
        ("streams/../../escaped", "`..` is not allowed"),
        ("/tmp/spool-package-escaped", "outside the output root"),
        (".spool-staging/mine", "staging area"),
    ] {
        let id = client.enqueue(quick("clip.mp4", output_dir)).await.unwrap();
        let error = failure(client.task::<Package>(id).unwrap().wait(WAIT).await);
        assert!(error.contains(expected), "{output_dir}: {error}");
    }
    assert!(!env.dir.join("escaped").exists());
    assert!(!env.outputs.join(".spool-staging/mine").exists());
    assert!(!Path::new("/tmp/spool-package-escaped").exists());

    worker.stop().await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_package_stops_ffmpeg_and_leaves_no_partial_output() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_revoked_package_stops_ffmpeg") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    // Long enough that the run is still going when the revocation lands.
    env.clip("long.mp4", Clip::new(640, 360).seconds(60.0))
        .await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    // The slowest preset: however fast the machine, it is still encoding
    // when the revocation arrives.
    let task = Package::new("long.mp4", "streams/long").preset(Preset::VerySlow);
    let id = client.enqueue(task).await.unwrap();
    let handle = client.task::<Package>(id).unwrap();
    let mut progress = handle.progress().await.unwrap();
    // Wait until FFmpeg has written some media: it is packaging.
    tokio::time::timeout(WAIT, async {
        while let Some(report) = progress.next().await {
            if report.percent > 6.0 {
                break;
            }
        }
    })
    .await
    .expect("the package makes progress");
    let staging = env.outputs.join(".spool-staging");
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        1,
        "it writes into staging"
    );

    client.revoke(id).await.unwrap();
    let outcome = handle.wait(WAIT).await;
    assert!(
        matches!(
            outcome,
            Err(Error::TaskFailed {
                status: JobStatus::Revoked,
                ..
            })
        ),
        "{outcome:?}"
    );
    let marker = env.marker();
    wait_until("FFmpeg is gone", WAIT, || async {
        processes_mentioning(&marker).is_empty()
    })
    .await;
    assert_no_staging(&env);
    assert!(!env.outputs.join("streams/long/hls").exists());

    worker.stop().await;
    redis.cleanup().await;
}

/// What players read in the manifests: every HLS variant carries
/// `FRAME-RATE` (the rendition's, 3 decimals); DASH lists each audio
/// bitrate once (rungs at one bitrate had byte-identical representations)
/// and no `bitstreamSwitching="true"` (each representation has its own
/// initialisation segment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_carry_frame_rates_list_audio_once_and_no_bitstream_switching() {
    let Some(ffmpeg) = ffmpeg_or_skip("manifests_carry_frame_rates") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("thirty.mp4", Clip::new(640, 360).fps(30).seconds(4.0))
        .await;
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    let task = quick("thirty.mp4", "streams/thirty").ladder(vec![
        Rendition::new("360p", 360, 900, 96),
        Rendition::new("240p", 240, 500, 96),
        Rendition::new("180p", 180, 300, 64),
    ]);
    let id = client.enqueue(task).await.unwrap();
    let out = client
        .task::<Package>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();

    let master = out.hls_master.unwrap();
    let text = std::fs::read_to_string(&master).unwrap();
    let parsed = hls::parse_master(&text).unwrap();
    assert_eq!(parsed.variants.len(), 3);
    for variant in &parsed.variants {
        assert_eq!(variant.frame_rate, Some(30.0), "{text}");
    }
    assert_eq!(text.matches("FRAME-RATE=30.000").count(), 3, "{text}");
    // Every HLS variant still carries its own audio.
    assert!(
        parsed
            .variants
            .iter()
            .all(|v| v.codecs.as_deref().is_some_and(|c| c.contains("mp4a"))),
        "{text}"
    );

    let mpd_path = out.dash_mpd.unwrap();
    let mpd_text = std::fs::read_to_string(&mpd_path).unwrap();
    assert!(!mpd_text.contains("bitstreamSwitching"), "{mpd_text}");
    let mpd = dash::parse_mpd(&mpd_text).unwrap();
    let audio: Vec<_> = mpd
        .adaptation_sets
        .iter()
        .flat_map(|set| set.representations.iter())
        .filter(|rep| rep.content_type.as_deref() == Some("audio"))
        .collect();
    let mut bandwidths: Vec<u64> = audio.iter().map(|rep| rep.bandwidth).collect();
    bandwidths.sort_unstable();
    assert_eq!(bandwidths, [64_000, 96_000], "{mpd_text}");
    // No two audio representations hold the same bytes.
    let dir = mpd_path.parent().unwrap();
    let contents: Vec<Vec<u8>> = audio
        .iter()
        .map(|rep| {
            let mut bytes = std::fs::read(dir.join(rep.initialization.as_ref().unwrap())).unwrap();
            for segment in &rep.segments {
                bytes.extend(std::fs::read(dir.join(segment)).unwrap());
            }
            bytes
        })
        .collect();
    assert_ne!(contents[0], contents[1]);
    // The representations read back whole, as before.
    let representations = read_dash(&mpd_path);
    assert_eq!(
        representations.iter().filter(|r| r.kind == "video").count(),
        3
    );
    assert_no_staging(&env);

    worker.stop().await;
    redis.cleanup().await;
}

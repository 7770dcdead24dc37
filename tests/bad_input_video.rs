//! The video tasks against hostile uploads and unlucky payloads, through a
//! real worker on Redis and real FFmpeg: each class of bad input of the
//! bad-input campaign (issue 19) that concerns the video tasks, kept as a
//! test so it stays covered. docs/reliability.md lists the classes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use spool_broker::Broker as _;
use spool_sdk::video::{
    Analyze, Codec, Metrics, Package, Preset, Rendition, Size, Transcode, TranscodeOutput,
};
use spool_tests::TestRedis;
use spool_tests::video::{Clip, VideoEnv, failure, ffmpeg_or_skip, files_under, temp_outputs};
use spool_video::Ffprobe;

const WAIT: Duration = Duration::from_secs(120);

/// Writes a 1 s MPEG-TS clip at `path` with FFmpeg directly.
fn write_ts(ffmpeg: &Path, path: &Path) {
    let status = std::process::Command::new(ffmpeg)
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=160x120:rate=25:duration=1")
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Sets `path`'s access time to the epoch, so any later read moves it
/// (on `relatime` mounts an atime older than the mtime is always updated).
fn reset_atime(path: &Path) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_times(std::fs::FileTimes::new().set_accessed(SystemTime::UNIX_EPOCH))
        .unwrap();
}

fn atime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().accessed().unwrap()
}

/// Whether reads move access times on the file system under `dir` (not on
/// `noatime` mounts): checked on a file of its own.
fn reads_are_visible(dir: &Path) -> bool {
    let control = dir.join("atime-control");
    std::fs::write(&control, b"x").unwrap();
    reset_atime(&control);
    let _ = std::fs::read(&control).unwrap();
    atime(&control) != SystemTime::UNIX_EPOCH
}

/// Playlists and concat lists inside the input root that name files
/// outside it (directly, or through a symlink the list names) are refused
/// by transcode, analyze and package alike, with the input and the kind of
/// playlist named, before FFmpeg opens anything: the outside files are
/// never read and nothing is written. A file FFmpeg detects as another
/// format outside the media containers (a PNG named `.mp4`) is refused by
/// FFmpeg's own `-format_whitelist`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_and_concat_lists_cannot_read_outside_the_roots() {
    let Some(ffmpeg) = ffmpeg_or_skip("playlists_and_concat_lists_cannot_read_outside_the_roots")
    else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(160, 120).seconds(1.0).without_audio())
        .await;
    // The secrets: media files beside the roots, which no task may read.
    let secret_ts = env.dir.join("secret.ts");
    write_ts(&env.ffmpeg, &secret_ts);
    let secret_mp4 = env.dir.join("secret.mp4");
    std::fs::rename(
        env.clip("tmp.mp4", Clip::new(160, 120).seconds(1.0).without_audio())
            .await,
        &secret_mp4,
    )
    .unwrap();
    let hls = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n",
        secret_ts.display()
    );
    std::fs::write(env.inputs.join("playlist.m3u8"), &hls).unwrap();
    // FFmpeg probes content, not names.
    std::fs::write(env.inputs.join("playlist.mp4"), &hls).unwrap();
    // The concat demuxer's "safe" mode refuses absolute paths, not a
    // relative link that leads out.
    std::os::unix::fs::symlink(&secret_mp4, env.inputs.join("innocent.mp4")).unwrap();
    std::fs::write(
        env.inputs.join("list.mp4"),
        "ffconcat version 1.0\nfile innocent.mp4\n",
    )
    .unwrap();
    // A PNG named .mp4: FFmpeg would read it with its image demuxer.
    let status = std::process::Command::new(&env.ffmpeg)
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x48",
        ])
        .args(["-frames:v", "1", "-f", "image2", "-c:v", "png"])
        .arg(env.inputs.join("picture.mp4"))
        .status()
        .unwrap();
    assert!(status.success());
    let watch_reads = reads_are_visible(&env.dir);
    reset_atime(&secret_ts);
    reset_atime(&secret_mp4);

    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);
    let cases = [
        ("playlist.m3u8", Some("hls")),
        ("playlist.mp4", Some("hls")),
        ("list.mp4", Some("concat")),
        ("picture.mp4", None),
    ];
    for (n, (input, format)) in cases.into_iter().enumerate() {
        let transcode = client
            .enqueue(
                Transcode::new(input, format!("t{n}.mp4"), Codec::H264).preset(Preset::UltraFast),
            )
            .await
            .unwrap();
        let analyze = client
            .enqueue(Analyze::new("clip.mp4", input).metrics(Metrics {
                vmaf: false,
                psnr: true,
                ssim: false,
            }))
            .await
            .unwrap();
        let package = client
            .enqueue(
                Package::new(input, format!("p{n}"))
                    .preset(Preset::UltraFast)
                    .ladder(vec![Rendition::new("low", 120, 200, 64)]),
            )
            .await
            .unwrap();
        let errors = [
            failure(
                client
                    .task::<Transcode>(transcode)
                    .unwrap()
                    .wait(WAIT)
                    .await,
            ),
            failure(client.task::<Analyze>(analyze).unwrap().wait(WAIT).await),
            failure(client.task::<Package>(package).unwrap().wait(WAIT).await),
        ];
        for error in errors {
            assert!(
                error.contains(input) && error.contains("is refused"),
                "{input}: {error}"
            );
            match format {
                Some(format) => assert!(
                    error.contains(&format!("as a playlist ({format})")),
                    "{input}: {error}"
                ),
                None => assert!(error.contains("format is not one"), "{input}: {error}"),
            }
        }
    }
    let written = files_under(&env.outputs);
    assert!(written.is_empty(), "nothing is written: {written:?}");
    if watch_reads {
        assert_eq!(
            atime(&secret_ts),
            SystemTime::UNIX_EPOCH,
            "secret.ts was read"
        );
        assert_eq!(
            atime(&secret_mp4),
            SystemTime::UNIX_EPOCH,
            "secret.mp4 was read"
        );
    }

    worker.stop().await;
    redis.cleanup().await;
}

/// Two transcodes to one output path, run at once: each writes a file of
/// its own and moves it into place only when it is whole and valid, so
/// the file left is complete, decodes without an error and is exactly what
/// one of the two results describes; no temporary file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transcodes_to_one_output_do_not_clobber_each_other() {
    let Some(ffmpeg) = ffmpeg_or_skip("two_transcodes_to_one_output_do_not_clobber_each_other")
    else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(640, 360).seconds(4.0)).await;
    let tasks = env.tasks(env.config());
    let client = env.client(&redis);
    // Both are fetched together (two slots) and encode at the same time.
    let small = client
        .enqueue(
            Transcode::new("clip.mp4", "same.mp4", Codec::H264)
                .size(Size::Height(180))
                .preset(Preset::Medium),
        )
        .await
        .unwrap();
    let large = client
        .enqueue(
            Transcode::new("clip.mp4", "same.mp4", Codec::H264)
                .size(Size::Height(360))
                .preset(Preset::Medium),
        )
        .await
        .unwrap();
    let worker = env.worker(&redis, &tasks);
    let small = client
        .task::<Transcode>(small)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    let large = client
        .task::<Transcode>(large)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();

    let output = env.outputs.canonicalize().unwrap().join("same.mp4");
    let ffprobe = env
        .config()
        .locate_ffprobe(Some(&env.ffmpeg))
        .map(Ffprobe::new)
        .unwrap();
    let media = ffprobe.probe(&output).await.unwrap();
    let bytes = std::fs::metadata(&output).unwrap().len();
    let matches = |result: &TranscodeOutput| {
        (result.width, result.height, result.bytes)
            == (media.video.width, media.video.height, bytes)
    };
    assert!(
        matches(&small) != matches(&large),
        "the file ({}x{}, {bytes} bytes) is exactly one result: {small:?} {large:?}",
        media.video.width,
        media.video.height
    );
    // Every frame decodes.
    let decoded = std::process::Command::new(&env.ffmpeg)
        .args(["-v", "error", "-i"])
        .arg(&output)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(decoded.status.success());
    assert_eq!(
        String::from_utf8_lossy(&decoded.stderr),
        "",
        "decode errors"
    );
    assert_eq!(media.video.frames, Some(100));
    assert_eq!(temp_outputs(&env.outputs), Vec::<PathBuf>::new());

    worker.stop().await;
    redis.cleanup().await;
}

/// Absurd payloads never reach FFmpeg: the SDK refuses them on enqueue
/// (`Error::InvalidTask`, nothing enqueued), and a worker refuses those
/// enqueued some other way before FFmpeg runs, failing the task for good
/// with the reason on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_payloads_are_refused_before_ffmpeg_runs() {
    let Some(ffmpeg) = ffmpeg_or_skip("absurd_payloads_are_refused_before_ffmpeg_runs") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(320, 240).seconds(1.0)).await;
    let client = env.client(&redis);
    let odd = Transcode::new("clip.mp4", "odd.mp4", Codec::H264).size(Size::Height(241));
    let threads = Analyze::new("clip.mp4", "clip.mp4")
        .metrics(Metrics {
            vmaf: false,
            psnr: true,
            ssim: false,
        })
        .threads(2_000);
    let ladder = Package::new("clip.mp4", "odd").ladder(vec![Rendition::new("odd", 241, 300, 64)]);

    match client.enqueue(odd.clone()).await {
        Err(spool_sdk::Error::InvalidTask { task, reason }) => {
            assert_eq!(task, "video.transcode");
            assert!(reason.contains("height 241 must be even"), "{reason}");
        }
        other => panic!("expected InvalidTask, got {other:?}"),
    }
    match client.enqueue(threads.clone()).await {
        Err(spool_sdk::Error::InvalidTask { reason, .. }) => {
            assert!(reason.contains("2000 threads"), "{reason}");
        }
        other => panic!("expected InvalidTask, got {other:?}"),
    }
    assert!(client.enqueue(ladder.clone()).await.is_err());
    for queue in &spool_broker::QueueName::ROUTED {
        let stats = redis.stats(queue).await;
        assert_eq!(stats.ready, [0; 3], "nothing enqueued on {queue}");
    }

    // The same payloads put on the queues without the SDK's check.
    let envelopes = vec![
        spool_broker::Envelope::for_task(&odd).unwrap(),
        spool_broker::Envelope::for_task(&threads).unwrap(),
        spool_broker::Envelope::for_task(&ladder).unwrap(),
    ];
    let ids: Vec<_> = envelopes.iter().map(|e| e.id).collect();
    redis.broker.enqueue(&envelopes).await.unwrap();
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let errors = [
        failure(client.task::<Transcode>(ids[0]).unwrap().wait(WAIT).await),
        failure(client.task::<Analyze>(ids[1]).unwrap().wait(WAIT).await),
        failure(client.task::<Package>(ids[2]).unwrap().wait(WAIT).await),
    ];
    assert!(
        errors[0].contains("invalid task: height 241 must be even"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("2000 threads"), "{}", errors[1]);
    assert!(
        errors[2].contains("height 241 must be even"),
        "{}",
        errors[2]
    );
    for id in ids {
        let record = env.store.get(id).await.unwrap().unwrap();
        assert_eq!(record.attempts, 1, "not retried: {record:?}");
    }
    assert!(files_under(&env.outputs).is_empty());

    worker.stop().await;
    redis.cleanup().await;
}

/// An analysis whose distorted file has no video stream (audio only) says
/// so, naming the file, instead of FFmpeg's "Stream specifier ':v:0' ...
/// Error binding filtergraph".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_of_a_file_without_video_names_it() {
    let Some(ffmpeg) = ffmpeg_or_skip("an_analysis_of_a_file_without_video_names_it") else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(160, 120).seconds(1.0)).await;
    let status = std::process::Command::new(&env.ffmpeg)
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1"])
        .args(["-c:a", "aac", "-f", "mp4"])
        .arg(env.inputs.join("voice.mp4"))
        .status()
        .unwrap();
    assert!(status.success());
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    let id = client
        .enqueue(Analyze::new("clip.mp4", "voice.mp4").metrics(Metrics::WITHOUT_VMAF))
        .await
        .unwrap();
    let error = failure(client.task::<Analyze>(id).unwrap().wait(WAIT).await);
    let voice = env.inputs.canonicalize().unwrap().join("voice.mp4");
    assert!(
        error.contains(&format!("{} has no video stream", voice.display())),
        "{error}"
    );

    worker.stop().await;
    redis.cleanup().await;
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts `size` (`256k`) of tmpfs at `path`; `None` when mounting is
    /// not allowed here (not root).
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// A package that fills its disk says "no space left on device writing
/// <output dir>" (it said its playlist "failed validation"), and leaves no
/// staging files behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_on_a_full_disk_says_so() {
    let test = "a_package_on_a_full_disk_says_so";
    let Some(ffmpeg) = ffmpeg_or_skip(test) else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(640, 360).seconds(6.0)).await;
    let Some(disk) = SmallDisk::mount(&env.dir.join("small"), "256k") else {
        spool_tests::missing_tool(
            test,
            "permission to mount a small tmpfs (run as root)",
            "run the suite as root",
            "SPOOL_SKIP_MOUNT",
        );
        return;
    };
    let config = spool_video::VideoConfig {
        output_root: disk.path.clone(),
        ..env.config()
    };
    let tasks = env.tasks(config);
    let worker = env.worker(&redis, &tasks);
    let client = env.client(&redis);

    let id = client
        .enqueue(
            Package::new("clip.mp4", "streams/full")
                .preset(Preset::UltraFast)
                .segment_duration(Duration::from_secs(2))
                .ladder(vec![Rendition::new("hi", 360, 4_000, 128)]),
        )
        // A full disk is worth retrying later; one attempt here.
        .max_attempts(1)
        .await
        .unwrap();
    let error = match client.task::<Package>(id).unwrap().wait(WAIT).await {
        Err(spool_sdk::Error::TaskFailed {
            error: Some(error), ..
        }) => error,
        other => panic!("expected a failed task, got {other:?}"),
    };
    let output_dir = disk.path.canonicalize().unwrap().join("streams/full");
    assert!(
        error.ends_with(&format!(
            "no space left on device writing {}",
            output_dir.display()
        )),
        "{error}"
    );
    worker.stop().await;
    assert!(
        files_under(&disk.path).is_empty(),
        "no staging left: {:?}",
        files_under(&disk.path)
    );
    drop(disk);
    redis.cleanup().await;
}

/// `spool-worker` against `redis`'s prefix, without probes or a metrics
/// port, with `args` added; stdout and stderr piped.
fn spool_worker(redis: &TestRedis, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(spool_tests::bins::spool_worker());
    command
        .env("SPOOL_REDIS_URL", spool_tests::redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_LOG", "info")
        .args(["--no-probe", "--metrics-addr", "none", "--concurrency", "1"])
        .args(["--poll-interval", "100ms"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

/// Waits (30 s at most) for `child` to exit; returns whether it succeeded
/// and its stderr.
async fn exit_of(mut child: std::process::Child) -> (bool, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status.success(), stderr);
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("spool-worker did not exit within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker whose video settings were given but cannot work (an FFmpeg
/// that does not exist, a missing input root, an output root that is a
/// file) refuses to start, with or without a supervisor, naming what is
/// wrong, instead of starting and dead-lettering every video task it
/// takes as `unknown_task`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_broken_video_settings_refuses_to_start() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_worker_with_broken_video_settings_refuses_to_start")
    else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    let a_file = env.dir.join("a-file");
    std::fs::write(&a_file, b"x").unwrap();
    let missing = env.dir.join("missing");
    let ffmpeg = env.ffmpeg.to_str().unwrap();
    let inputs = env.inputs.to_str().unwrap();
    let outputs = env.outputs.to_str().unwrap();
    let no_ffmpeg = missing.join("ffmpeg");
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec![
                "--ffmpeg",
                no_ffmpeg.to_str().unwrap(),
                "--input-root",
                inputs,
                "--output-root",
                outputs,
            ],
            "missing/ffmpeg",
        ),
        (
            vec![
                "--ffmpeg",
                ffmpeg,
                "--input-root",
                missing.to_str().unwrap(),
                "--output-root",
                outputs,
            ],
            "input root",
        ),
        (
            vec![
                "--ffmpeg",
                ffmpeg,
                "--input-root",
                inputs,
                "--output-root",
                a_file.to_str().unwrap(),
            ],
            "a-file",
        ),
    ];
    for processes in ["0", "1"] {
        for (args, named) in &cases {
            let mut command = spool_worker(&redis, args);
            command.args(["--processes", processes]);
            let (succeeded, stderr) = exit_of(command.spawn().unwrap()).await;
            assert!(
                !succeeded,
                "--processes {processes} {args:?} started: {stderr}"
            );
            assert!(
                stderr.contains("video tasks cannot be served") && stderr.contains(named),
                "--processes {processes} {args:?}: {stderr}"
            );
        }
    }
    redis.cleanup().await;
}

/// A worker that has no FFmpeg (none configured, none on `PATH`) starts
/// without the video tasks and leaves each one it fetches for other
/// workers: put back as the same attempt, not dead-lettered. A healthy
/// worker then runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_video_leaves_video_tasks_for_others() {
    let Some(ffmpeg) = ffmpeg_or_skip("a_worker_without_video_leaves_video_tasks_for_others")
    else {
        return;
    };
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    env.clip("clip.mp4", Clip::new(160, 120).seconds(1.0)).await;
    let client = env.client(&redis);
    let id = client
        .enqueue(Transcode::new("clip.mp4", "left.mp4", Codec::H264).preset(Preset::UltraFast))
        .await
        .unwrap();

    // No FFmpeg anywhere, the default roots (in a directory of its own).
    let empty = env.dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let blind = spool_worker(&redis, &["--processes", "0", "--queues", "default"])
        .env("PATH", &empty)
        .env_remove("SPOOL_FFMPEG")
        .env_remove("SPOOL_FFPROBE")
        .env_remove("SPOOL_INPUT_ROOT")
        .env_remove("SPOOL_OUTPUT_ROOT")
        .current_dir(&env.dir)
        .spawn()
        .unwrap();
    let default = spool_broker::QueueName::DEFAULT;
    spool_tests::wait_until("the task to be put back", WAIT, || async {
        redis.stats(&default).await.delayed == 1
    })
    .await;
    let stderr = spool_tests::bins::stop_warm(blind);
    assert!(stderr.contains("video tasks disabled"), "{stderr}");
    assert!(stderr.contains("left for other workers"), "{stderr}");
    let stats = redis.stats(&default).await;
    assert_eq!((stats.dead, stats.delayed), (0, 1), "{stats:?}");

    // Due now rather than in 30 s, for a worker that serves video.
    let delayed = redis.stream_key(&default, "delayed");
    let mut raw = redis.raw();
    let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(&delayed)
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    for member in members {
        let _: () = redis::cmd("ZADD")
            .arg(&delayed)
            .arg(0)
            .arg(member)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let tasks = env.tasks(env.config());
    let worker = env.worker(&redis, &tasks);
    let output = client
        .task::<Transcode>(id)
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(output.encoder, "libx264");
    let record = env.store.get(id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 1, "{record:?}");
    assert_eq!(redis.stats(&default).await.dead, 0);

    worker.stop().await;
    redis.cleanup().await;
}

//! What the chunked-encoding suites share (`#[path]`-included by
//! tests/video_chunked.rs and tests/video_chunk_faults.rs): clips with
//! scene changes, `spool-worker` processes serving the video tasks, frame
//! hashes and keyframe times read back with FFmpeg.

#![allow(dead_code, reason = "each suite uses its own part")]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use spool_tests::bins::spool_worker;
use spool_tests::video::VideoEnv;
use spool_tests::{TestRedis, redis_url};
use spool_video::{FfmpegArgs, FfmpegRunner, Input, Output, RunOptions, StageBand};
use tokio_util::sync::CancellationToken;

/// A clip of three scenes (a moving test pattern, a zooming fractal,
/// colour bars turning hue), each `scene_seconds` long, at `fps`, with a
/// tone unless `audio` is false, as near-lossless H.264 with a keyframe
/// every second (`-g fps`) and no scene-cut keyframes, so the keyframe
/// index is known.
pub async fn scene_clip(
    env: &VideoEnv,
    name: &str,
    (width, height): (u32, u32),
    fps: u32,
    scene_seconds: f64,
    audio: bool,
) -> std::path::PathBuf {
    let path = env.inputs.join(name);
    let total = scene_seconds * 3.0;
    let size = format!("{width}x{height}");
    let mut args = FfmpegArgs::new()
        .input(Input::lavfi(format!(
            "testsrc2=size={size}:rate={fps}:duration={scene_seconds}"
        )))
        .input(Input::lavfi(format!("mandelbrot=size={size}:rate={fps}")))
        .input(Input::lavfi(format!(
            "smptebars=size={size}:rate={fps}:duration={scene_seconds}"
        )))
        .filter_complex(format!(
            "[1:v]trim=duration={scene_seconds},setpts=PTS-STARTPTS[m];\
             [2:v]hue=H=2*PI*t[s];[0:v][m][s]concat=n=3:v=1:a=0,format=yuv420p[v]"
        ));
    let mut out = Output::file(&path)
        .map("[v]")
        .option("-c:v", "libx264")
        .option("-preset", "ultrafast")
        .option("-crf", 12)
        .option("-g", fps)
        .option("-x264-params", "scenecut=0");
    if audio {
        args = args.input(Input::lavfi(format!(
            "sine=frequency=440:sample_rate=48000:duration={total}"
        )));
        out = out.map("3:a").option("-c:a", "aac").option("-b:a", "96k");
    }
    let args = args.output(out.option("-f", "mp4"));
    FfmpegRunner::new(&env.ffmpeg)
        .run(
            &args,
            RunOptions::new(StageBand::PROCESSING, CancellationToken::new()),
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("cannot generate {}: {e}", path.display()));
    path
}

/// `spool-worker` serving the routed queues with the video tasks of
/// `env`, in its own process (`--processes 0`: the tasks run in the
/// process whose id this returns), one task at a time.
pub fn video_worker_process(redis: &TestRedis, env: &VideoEnv, extra: &[&str]) -> WorkerProcess {
    let child = Command::new(spool_worker())
        .env("SPOOL_REDIS_URL", redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_FFMPEG", &env.ffmpeg)
        .env("SPOOL_INPUT_ROOT", &env.inputs)
        .env("SPOOL_OUTPUT_ROOT", &env.outputs)
        .env("SPOOL_QUEUES", "default,analysis,streaming")
        .env("SPOOL_LOG", "warn")
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

/// A test's `spool-worker` process: SIGKILLed and reaped when dropped, so
/// a test that fails midway leaves no worker polling Redis behind.
#[derive(Debug)]
pub struct WorkerProcess(pub Child);

impl WorkerProcess {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every video frame's MD5 (FFmpeg's `framemd5` muxer: the decoded
/// picture's bytes), in presentation order.
pub fn frame_hashes(ffmpeg: &Path, file: &Path) -> Vec<String> {
    let out = Command::new(ffmpeg)
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "framemd5 of {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_owned()))
        .collect()
}

/// The presentation times (seconds) of `file`'s video keyframes, read by
/// ffprobe from its packets.
pub fn keyframe_times(file: &Path) -> Vec<f64> {
    let ffprobe = std::env::var_os("SPOOL_FFPROBE").unwrap_or_else(|| "ffprobe".into());
    let out = Command::new(ffprobe)
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=pts_time,flags", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    let mut times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (pts, flags) = l.split_once(',')?;
            flags.starts_with('K').then(|| pts.parse().ok()).flatten()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// Whether `file` has an audio stream, by ffprobe.
pub fn has_audio(file: &Path) -> bool {
    let ffprobe = std::env::var_os("SPOOL_FFPROBE").unwrap_or_else(|| "ffprobe".into());
    let out = Command::new(ffprobe)
        .args(["-v", "error", "-select_streams", "a"])
        .args(["-show_entries", "stream=index", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// SIGKILLs `worker` and reaps it.
pub fn kill_hard(worker: WorkerProcess) {
    drop(worker);
}

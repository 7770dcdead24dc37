//! Harness for the video suites: FFmpeg found like the worker finds it,
//! small clips generated with `lavfi`, a scratch directory with input and
//! output roots and a SQLite job store, and a worker serving the video
//! tasks against the test's Redis prefix.
//!
//! The suites need a real FFmpeg (`bash ops/scripts/setup.sh` installs one
//! and writes `SPOOL_FFMPEG` into `~/.spool/env`); without one they fail,
//! unless `SPOOL_SKIP_FFMPEG=1` asks them to skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use spool_broker::RedisBroker;
use spool_broker::store::JobStore;
use spool_sdk::Client;
use spool_video::probe::FfmpegReport;
use spool_video::{FfmpegRunner, VideoConfig, VideoTasks, WithVideoTasks};
use spool_worker::{Worker, WorkerConfig};

use crate::{RunningWorker, TestRedis, spawn_worker};

/// The FFmpeg the suites use: `SPOOL_FFMPEG`, else the first on `PATH`.
pub fn ffmpeg() -> Option<PathBuf> {
    let from_env = std::env::var_os("SPOOL_FFMPEG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    spool_video::probe::locate_ffmpeg(from_env.as_deref()).filter(|p| p.is_file())
}

/// [`ffmpeg`]; without one `test` fails, or with `SPOOL_SKIP_FFMPEG=1`
/// this prints why it skips and returns `None`.
pub fn ffmpeg_or_skip(test: &str) -> Option<PathBuf> {
    let found = ffmpeg();
    if found.is_none() {
        no_ffmpeg(test, "an FFmpeg");
    }
    found
}

/// Fails `test`, which needs `what` (an FFmpeg, one with libvmaf...), or
/// with `SPOOL_SKIP_FFMPEG=1` prints why it skips.
pub fn no_ffmpeg(test: &str, what: &str) {
    crate::missing_tool(
        test,
        what,
        "run `bash ops/scripts/setup.sh`, or set SPOOL_FFMPEG",
        "SPOOL_SKIP_FFMPEG",
    );
}

/// An FFmpeg built without libvmaf (Debian's, which set-up installs for
/// its ffprobe): `SPOOL_TEST_FFMPEG_NO_VMAF`, else `/usr/bin/ffmpeg` if it
/// lacks libvmaf.
pub fn ffmpeg_without_libvmaf() -> Option<PathBuf> {
    let candidate = std::env::var_os("SPOOL_TEST_FFMPEG_NO_VMAF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/ffmpeg"));
    if !candidate.is_file() {
        return None;
    }
    (!report(&candidate).libvmaf).then_some(candidate)
}

/// The probe's report on `ffmpeg` (trial encodes, libvmaf), probed once
/// per test binary.
pub fn report(ffmpeg: &Path) -> FfmpegReport {
    static REPORTS: OnceLock<Mutex<HashMap<PathBuf, FfmpegReport>>> = OnceLock::new();
    let reports = REPORTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut reports = reports.lock().unwrap();
    reports
        .entry(ffmpeg.to_owned())
        .or_insert_with(|| spool_video::probe::probe_ffmpeg(ffmpeg))
        .clone()
}

/// The test clip: the worker's own lavfi generator.
pub use spool_video::TestClip as Clip;

/// A scratch directory for one test: `inputs/` and `outputs/` roots, a
/// SQLite job store, and the FFmpeg to use. Removed on drop.
#[derive(Debug)]
pub struct VideoEnv {
    pub dir: PathBuf,
    pub inputs: PathBuf,
    pub outputs: PathBuf,
    pub ffmpeg: PathBuf,
    pub store: JobStore,
}

impl VideoEnv {
    /// A fresh directory under the system's temporary directory; its path
    /// is unique, so processes mentioning it belong to this test.
    pub async fn new(ffmpeg: PathBuf) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spool-video-{}-{:012x}",
            std::process::id(),
            fastrand::u64(..1 << 48)
        ));
        let (inputs, outputs) = (dir.join("inputs"), dir.join("outputs"));
        std::fs::create_dir_all(&inputs).unwrap();
        std::fs::create_dir_all(&outputs).unwrap();
        let url = format!("sqlite://{}", dir.join("jobs.db").display());
        let store = JobStore::create(&url).await.unwrap();
        Self {
            dir,
            inputs,
            outputs,
            ffmpeg,
            store,
        }
    }

    /// The video configuration of this test's roots and FFmpeg.
    pub fn config(&self) -> VideoConfig {
        VideoConfig {
            ffmpeg: Some(self.ffmpeg.clone()),
            input_roots: vec![self.inputs.clone()],
            output_root: self.outputs.clone(),
            ..VideoConfig::default()
        }
    }

    /// The video tasks for `config`, with the FFmpeg probed once per test
    /// binary.
    pub fn tasks(&self, config: VideoConfig) -> VideoTasks {
        let ffmpeg = config.ffmpeg.clone().unwrap_or_else(|| self.ffmpeg.clone());
        VideoTasks::with_report(config, report(&ffmpeg)).unwrap()
    }

    /// Writes `clip` as `inputs/<name>`; returns its path.
    pub async fn clip(&self, name: &str, clip: Clip) -> PathBuf {
        let path = self.inputs.join(name);
        clip.write(&FfmpegRunner::new(&self.ffmpeg), &path)
            .await
            .unwrap_or_else(|e| panic!("cannot generate {}: {e}", path.display()));
        path
    }

    /// A client of `redis` recording to this test's store.
    pub fn client(&self, redis: &TestRedis) -> Client<RedisBroker> {
        redis.client().with_store(self.store.clone())
    }

    /// A worker serving the video tasks on every routed queue, recording
    /// to this test's store.
    pub fn worker(&self, redis: &TestRedis, tasks: &VideoTasks) -> RunningWorker {
        self.worker_with(redis, tasks, worker_config())
    }

    /// Like [`VideoEnv::worker`], with its own configuration.
    pub fn worker_with(
        &self,
        redis: &TestRedis,
        tasks: &VideoTasks,
        config: WorkerConfig,
    ) -> RunningWorker {
        let worker = Worker::new(redis.broker.clone(), config)
            .with_store(self.store.clone())
            .with_video_tasks(tasks);
        spawn_worker(worker)
    }

    /// The path of this test's directory as text: every FFmpeg it starts
    /// mentions it.
    pub fn marker(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }
}

impl Drop for VideoEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A worker configuration for the video suites: the routed queues, two
/// slots, quick polling.
pub fn worker_config() -> WorkerConfig {
    WorkerConfig {
        queues: spool_broker::QueueName::ROUTED.to_vec(),
        concurrency: 2,
        prefetch: 2,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// The pids of live processes whose command line mentions `marker` (and
/// that are not zombies).
pub fn processes_mentioning(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mentions = String::from_utf8_lossy(&cmdline).contains(marker);
            mentions && !is_zombie(*pid)
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|s| s == "Z")
        })
        .unwrap_or(true)
}

/// Every file under `dir`, recursively; none when it does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// The runs' temporary outputs (`.<name>.<task>-<attempt>.spool-tmp`)
/// under `dir`, recursively: where FFmpeg writes before the file is moved
/// into place.
pub fn temp_outputs(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            path.to_string_lossy()
                .ends_with(spool_video::publish::TEMP_SUFFIX)
        })
        .collect()
}

/// The recorded error of a task that must fail for good; panics on any
/// other outcome.
pub fn failure<T: std::fmt::Debug>(result: Result<T, spool_sdk::Error>) -> String {
    match result {
        Err(spool_sdk::Error::TaskFailed {
            status: spool_broker::JobStatus::Failed,
            error: Some(error),
        }) => error,
        other => panic!("expected a failed task, got {other:?}"),
    }
}

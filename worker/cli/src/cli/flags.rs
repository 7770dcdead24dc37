//! The worker's own settings (beside the shared connection flags), each
//! declared once: its flag, environment variable and file key, its type
//! and, in its help, its default (applied in `settings.rs`).

use std::path::PathBuf;

use spool_cli_common::LogFormat;
use spool_cli_common::text::{HumanDuration, OptionalAddr, OptionalDuration};

use super::parse::{
    AutoCount, AutoPath, ByteSize, OptionalCount, OptionalSize, QueueList, WorkerName,
};

spool_cli_common::layered! {
    /// The worker's flags, each also an environment variable and a key of
    /// the `--config` file.
    pub struct WorkerArgs / WorkerFile {
        /// How long finished records stay in the job store; older ones are
        /// pruned in batches. none keeps them all [default: 30d]
        #[arg(long, env = "SPOOL_STORE_RETENTION", value_name = "DURATION")]
        store_retention: OptionalDuration,

        /// The queues to serve, comma-separated. The gpu queue is served only
        /// where a GPU passes the self-test (or with --force-gpu) [default:
        /// default]
        #[arg(long, env = "SPOOL_QUEUES", value_name = "LIST")]
        queues: QueueList,

        /// Child processes, each with --concurrency slots. 0 runs one worker in
        /// this process, with no supervisor: the task and memory limits then
        /// make it exit (status 0) for an outer supervisor to replace [default:
        /// 1]
        #[arg(long, env = "SPOOL_PROCESSES", value_name = "N")]
        processes: usize,

        /// Tasks each child runs at once [default: the number of CPUs]
        #[arg(long, env = "SPOOL_CONCURRENCY", value_name = "N")]
        concurrency: usize,

        /// The most tasks a child holds fetched and unacknowledged, running ones
        /// included; auto is 4 x concurrency [default: auto]
        #[arg(long, env = "SPOOL_PREFETCH", value_name = "N")]
        prefetch: AutoCount,

        /// Recycle a child after this many tasks (none: never) [default: none]
        #[arg(long, env = "SPOOL_MAX_TASKS_PER_CHILD", value_name = "N")]
        max_tasks_per_child: OptionalCount,

        /// Recycle a child whose resident memory exceeds this, at least 64MiB
        /// (e.g. 2GiB; none: never) [default: none]
        #[arg(long, env = "SPOOL_MAX_MEMORY_PER_CHILD", value_name = "SIZE")]
        max_memory_per_child: OptionalSize,

        /// Hard limit on a run, for tasks without their own: past it the run is
        /// dropped and fails [default: none]
        #[arg(long, env = "SPOOL_TIME_LIMIT", value_name = "DURATION")]
        time_limit: OptionalDuration,

        /// Soft limit on a run: past it the task's cancellation token fires so
        /// it can wind down before the hard limit [default: none]
        #[arg(long, env = "SPOOL_SOFT_TIME_LIMIT", value_name = "DURATION")]
        soft_time_limit: OptionalDuration,

        /// How long a task may go without a lease renewal before other workers
        /// reclaim it; leases and the registry heartbeat are renewed every third
        /// of it [default: 30s]
        #[arg(long, env = "SPOOL_VISIBILITY_TIMEOUT", value_name = "DURATION")]
        visibility_timeout: HumanDuration,

        /// Deliveries without an outcome (its workers keep dying) before a task
        /// is dead-lettered [default: 5]
        #[arg(long, env = "SPOOL_MAX_DELIVERIES", value_name = "N")]
        max_deliveries: u32,

        /// The longest one fetch waits on an empty queue; also bounds how long a
        /// warm shutdown takes to stop fetching [default: 1s]
        #[arg(long, env = "SPOOL_POLL_INTERVAL", value_name = "DURATION")]
        poll_interval: HumanDuration,

        /// The largest task envelope this worker runs: a bigger one is
        /// dead-lettered `oversized` unread [default: 16MiB]
        #[arg(long, env = "SPOOL_MAX_ENVELOPE_SIZE", value_name = "SIZE")]
        max_envelope_size: ByteSize,

        /// The largest result a task may return: a bigger one is not stored
        /// and the task is dead-lettered `oversized` [default: 16MiB]
        #[arg(long, env = "SPOOL_MAX_RESULT_SIZE", value_name = "SIZE")]
        max_result_size: ByteSize,

        /// Serve Prometheus metrics on this address (GET /metrics), or none
        /// [default: 127.0.0.1:9464]
        #[arg(long, env = "SPOOL_METRICS_ADDR", value_name = "ADDR")]
        metrics_addr: OptionalAddr,

        /// This worker's name in the registry and in consumer names [default:
        /// the host name]
        #[arg(long, env = "SPOOL_NAME", value_name = "NAME")]
        name: WorkerName,

        /// Log format: human, or json for one object per line [default: human]
        #[arg(long, env = "SPOOL_LOG_FORMAT", value_name = "FORMAT", hide_possible_values = true)]
        log_format: LogFormat,

        /// Log filter (tracing EnvFilter syntax: info, spool_worker=debug,...)
        /// [default: info]
        #[arg(long, env = "SPOOL_LOG", value_name = "FILTER")]
        log_level: String,

        /// The FFmpeg to probe and use; auto searches PATH [default: auto]
        #[arg(long, env = "SPOOL_FFMPEG", value_name = "PATH")]
        ffmpeg: AutoPath,

        /// The ffprobe the video tasks use; auto takes the one beside FFmpeg,
        /// then searches PATH [default: auto]
        #[arg(long, env = "SPOOL_FFPROBE", value_name = "PATH")]
        ffprobe: AutoPath,

        /// A directory video tasks may read from; repeat it (or separate with
        /// commas) for several. The output root is readable too [default: .]
        #[arg(long, env = "SPOOL_INPUT_ROOT", value_name = "DIR", value_delimiter = ',')]
        input_root: Vec<PathBuf>,

        /// The directory video tasks write into (created if missing) [default:
        /// spool-output]
        #[arg(long, env = "SPOOL_OUTPUT_ROOT", value_name = "DIR")]
        output_root: PathBuf,

        /// A bucket (and key prefix) video tasks may read and write, the
        /// object-storage form of the roots: s3://bucket/prefix, gs://... or
        /// az://container/...; repeat it (or separate with commas) for
        /// several. Credentials come from the environment (AWS_*, GOOGLE_*,
        /// AZURE_*) and the clouds' credential chains [default: none, no
        /// object URL is accepted]
        #[arg(long, env = "SPOOL_ALLOW_BUCKET", value_name = "URL", value_delimiter = ',')]
        allow_bucket: Vec<PathBuf>,

        /// Where video tasks download objects and write outputs before
        /// uploading them, one directory per run [default: the system's
        /// temporary directory]
        #[arg(long, env = "SPOOL_SCRATCH_DIR", value_name = "DIR")]
        scratch_dir: PathBuf,

        /// The most one run's scratch directory may hold (downloads and
        /// outputs); a bigger input fails the task [default: 20GiB]
        #[arg(long, env = "SPOOL_SCRATCH_LIMIT", value_name = "SIZE")]
        scratch_limit: ByteSize,

        /// Do not serve the video tasks (video.transcode, video.analyze,
        /// video.package)
        #[arg(long, env = "SPOOL_NO_VIDEO", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL", value_parser = super::parse::switch)]
        no_video: bool,

        /// Serve the gpu queue even when no GPU passes the self-test
        #[arg(long, env = "SPOOL_FORCE_GPU", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL", value_parser = super::parse::switch)]
        force_gpu: bool,

        /// Skip the hardware probe (GPUs, CUDA, FFmpeg) at start; the gpu queue
        /// then needs --force-gpu
        #[arg(long, env = "SPOOL_NO_PROBE", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL", value_parser = super::parse::switch)]
        no_probe: bool,
    }
}

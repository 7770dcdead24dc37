//! The resolved settings of a `spool-worker`: the layers merged over the
//! defaults, and checked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, RedisConfig};
use spool_cli_common::text::{duration, optional_duration};
use spool_cli_common::{Connection, ConnectionFile, LogFormat};
use spool_worker::WorkerConfig;

use super::flags::WorkerFile;
use super::parse::{
    AutoCount, AutoPath, ByteSize, OptionalCount, OptionalSize, QueueList, WorkerName,
};
use crate::{Error, Result};

/// The lowest `--max-memory-per-child`: a limit below what a child needs
/// to start would recycle it as soon as it reports its memory, again and
/// again.
pub const MIN_MEMORY_PER_CHILD: u64 = 64 << 20;

/// The smallest `--max-envelope-size` and `--max-result-size`: below it no
/// real task or result fits, which is a typo rather than a policy.
const MIN_PAYLOAD_LIMIT: u64 = 1 << 10;

/// The worker's default command timeout: above its blocking fetches
/// (`--poll-interval`), as the broker's own default.
pub const WORKER_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a `spool-worker` runs with, merged and validated.
///
/// Its `Debug` output (and [`Settings::redacted`], which `--print-config`
/// prints) hides the passwords in the URLs. The signing keys are never in
/// it: only their file's path, which each process reads itself.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Settings {
    /// Redis, the key prefix, the signing keys' and TLS files, the job
    /// store and the Redis timeouts: the flags every binary shares.
    #[serde(flatten)]
    pub connection: Connection,
    /// How long finished records are kept, if not forever.
    #[serde(with = "optional_duration")]
    pub store_retention: Option<Duration>,
    /// The queues asked for (the hardware probe may drop `gpu`).
    pub queues: Vec<QueueName>,
    /// Child processes; 0 runs the worker in this process.
    pub processes: usize,
    /// Slots per child.
    pub concurrency: usize,
    /// Prefetch bound per child.
    pub prefetch: usize,
    /// Tasks after which a child is recycled.
    pub max_tasks_per_child: Option<u64>,
    /// Resident bytes above which a child is recycled.
    pub max_memory_per_child: Option<u64>,
    /// Hard time limit per run.
    #[serde(with = "optional_duration")]
    pub time_limit: Option<Duration>,
    /// Soft time limit per run.
    #[serde(with = "optional_duration")]
    pub soft_time_limit: Option<Duration>,
    /// The lease (visibility) timeout.
    #[serde(with = "duration")]
    pub visibility_timeout: Duration,
    /// Deliveries before a task is dead-lettered as poison.
    pub max_deliveries: u32,
    /// The longest wait of one fetch.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// The largest envelope run, in bytes.
    pub max_envelope_bytes: u64,
    /// The largest result stored, in bytes.
    pub max_result_bytes: u64,
    /// Where to serve metrics.
    pub metrics_addr: Option<SocketAddr>,
    /// The worker's name.
    pub name: String,
    /// The log format.
    pub log_format: LogFormat,
    /// The log filter.
    pub log_level: String,
    /// An explicit FFmpeg; `None` searches `PATH`.
    pub ffmpeg: Option<PathBuf>,
    /// An explicit ffprobe; `None` takes the one beside FFmpeg, then
    /// searches `PATH`.
    #[serde(default)]
    pub ffprobe: Option<PathBuf>,
    /// Where video tasks may read.
    #[serde(default)]
    pub input_roots: Vec<PathBuf>,
    /// Where video tasks write.
    #[serde(default)]
    pub output_root: PathBuf,
    /// The buckets and prefixes video tasks may use.
    #[serde(default)]
    pub allowed_buckets: Vec<String>,
    /// Where video tasks keep downloads and outputs; `None`: the system's
    /// temporary directory.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// The most one run's scratch directory may hold.
    #[serde(default)]
    pub scratch_limit: u64,
    /// Whether the video tasks are left out.
    #[serde(default)]
    pub no_video: bool,
    /// Serve `gpu` without a GPU that passed the self-test.
    pub force_gpu: bool,
    /// Skip the hardware probe.
    pub no_probe: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The field list stays in one place (serde's), redacted.
        let shown = serde_json::to_string(&self.redacted()).unwrap_or_default();
        write!(f, "Settings {shown}")
    }
}

/// The number of CPUs, the default concurrency.
fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The host name, cleaned up to a valid worker name.
fn default_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let cleaned: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "worker".to_owned()
    } else {
        cleaned
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Settings {
    /// The settings the layers ask for, over the defaults each flag's help
    /// shows, checked.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the flag and what is wrong.
    pub fn resolve(connection: ConnectionFile, worker: WorkerFile) -> Result<Self> {
        let connection = connection
            .resolve(WORKER_COMMAND_TIMEOUT)
            .map_err(|e| Error::Config(e.to_string()))?;
        let concurrency = worker.concurrency.unwrap_or_else(default_concurrency);
        let prefetch = match worker.prefetch {
            Some(AutoCount(Some(n))) => to_usize(n),
            _ => concurrency.saturating_mul(4),
        };
        let settings = Self {
            connection,
            store_retention: worker
                .store_retention
                .map_or(Some(Duration::from_secs(30 * 86_400)), |d| d.0),
            queues: worker
                .queues
                .map_or_else(|| vec![QueueName::DEFAULT], |QueueList(q)| q),
            processes: worker.processes.unwrap_or(1),
            concurrency,
            prefetch,
            max_tasks_per_child: worker.max_tasks_per_child.and_then(|OptionalCount(n)| n),
            max_memory_per_child: worker.max_memory_per_child.and_then(|OptionalSize(n)| n),
            time_limit: worker.time_limit.and_then(|d| d.0),
            soft_time_limit: worker.soft_time_limit.and_then(|d| d.0),
            visibility_timeout: worker
                .visibility_timeout
                .map_or(Duration::from_secs(30), |d| d.0),
            max_deliveries: worker.max_deliveries.unwrap_or(5),
            poll_interval: worker.poll_interval.map_or(Duration::from_secs(1), |d| d.0),
            max_envelope_bytes: worker.max_envelope_size.map_or(
                spool_broker::DEFAULT_MAX_ENVELOPE_BYTES as u64,
                |ByteSize(n)| n,
            ),
            max_result_bytes: worker.max_result_size.map_or(
                spool_worker::DEFAULT_MAX_RESULT_BYTES as u64,
                |ByteSize(n)| n,
            ),
            metrics_addr: worker
                .metrics_addr
                .map_or(Some(SocketAddr::from(([127, 0, 0, 1], 9464))), |a| a.0),
            name: worker
                .name
                .map_or_else(default_name, |WorkerName(name)| name),
            log_format: worker.log_format.unwrap_or_default(),
            log_level: worker.log_level.unwrap_or_else(|| "info".to_owned()),
            ffmpeg: worker.ffmpeg.and_then(|AutoPath(p)| p),
            ffprobe: worker.ffprobe.and_then(|AutoPath(p)| p),
            input_roots: worker
                .input_root
                .unwrap_or_else(|| vec![PathBuf::from(".")]),
            output_root: worker
                .output_root
                .unwrap_or_else(|| PathBuf::from("spool-output")),
            // Read as a list of paths (the layered settings' repeatable,
            // comma-separated kind); checked as URLs by spool-video.
            allowed_buckets: worker
                .allow_bucket
                .unwrap_or_default()
                .iter()
                .map(|url| url.to_string_lossy().into_owned())
                .collect(),
            scratch_dir: worker.scratch_dir,
            scratch_limit: worker.scratch_limit.map_or(
                spool_video::storage::StorageConfig::default().scratch_limit,
                |ByteSize(n)| n,
            ),
            no_video: worker.no_video.unwrap_or(false),
            force_gpu: worker.force_gpu.unwrap_or(false),
            no_probe: worker.no_probe.unwrap_or(false),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// These settings with the passwords in the Redis and store URLs
    /// replaced by `***`, for printing.
    #[must_use]
    pub fn redacted(&self) -> Self {
        Self {
            connection: self.connection.redacted(),
            ..self.clone()
        }
    }

    /// How to reach Redis with these settings: the URL, the key prefix,
    /// the timeouts, the signing keys and the TLS certificates, read from
    /// their files now.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a file cannot be read or the key file holds a
    /// bad key (the message names the file and the line, never a key).
    pub fn redis_config(&self) -> Result<RedisConfig> {
        let mut config = self.connection.redis_config().map_err(|e| match e {
            spool_cli_common::Error::Broker(e) => Error::Broker(e),
            other => Error::Config(other.to_string()),
        })?;
        config.max_envelope_bytes = to_usize(self.max_envelope_bytes);
        Ok(config)
    }

    /// How often leases are renewed and the registry record is refreshed: a
    /// third of the visibility timeout.
    #[must_use]
    pub fn heartbeat_interval(&self) -> Duration {
        self.visibility_timeout / 3
    }

    /// The runtime configuration of one worker process with these settings,
    /// serving `queues`.
    #[must_use]
    pub fn worker_config(&self, queues: Vec<QueueName>, consumer_name: String) -> WorkerConfig {
        WorkerConfig {
            queues,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            poll_interval: self.poll_interval,
            time_limit: self.time_limit,
            soft_time_limit: self.soft_time_limit,
            visibility_timeout: self.visibility_timeout,
            heartbeat_interval: self.heartbeat_interval(),
            max_deliveries: self.max_deliveries,
            consumer_name: Some(consumer_name),
            max_tasks: self.max_tasks_per_child,
            max_result_bytes: to_usize(self.max_result_bytes),
            ..WorkerConfig::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let problem = if self.processes > 256 {
            format!("--processes {} is more than 256", self.processes)
        } else if self.concurrency == 0 {
            "--concurrency must be at least 1".to_owned()
        } else if self.max_deliveries == 0 {
            "--max-deliveries must be at least 1".to_owned()
        } else if let Some(bytes) = self.max_memory_per_child
            && bytes < MIN_MEMORY_PER_CHILD
        {
            format!(
                "--max-memory-per-child {bytes} bytes is below the floor of 64MiB: a child would \
                 be recycled as soon as it reports its memory (sizes take units: 2GiB, 512MiB)"
            )
        } else if let (Some(soft), Some(hard)) = (self.soft_time_limit, self.time_limit)
            && soft >= hard
        {
            format!(
                "--soft-time-limit ({}) must be below --time-limit ({})",
                humantime::format_duration(soft),
                humantime::format_duration(hard)
            )
        } else if self.max_envelope_bytes < MIN_PAYLOAD_LIMIT {
            format!(
                "--max-envelope-size {} bytes is below the floor of 1KiB: no task would fit",
                self.max_envelope_bytes
            )
        } else if self.max_result_bytes < MIN_PAYLOAD_LIMIT {
            format!(
                "--max-result-size {} bytes is below the floor of 1KiB: no result would fit",
                self.max_result_bytes
            )
        } else if self.visibility_timeout < Duration::from_secs(1) {
            "--visibility-timeout must be at least 1s".to_owned()
        } else if self.poll_interval.is_zero() {
            "--poll-interval must be positive".to_owned()
        } else if self.connection.redis_command_timeout <= self.poll_interval {
            format!(
                "--redis-command-timeout ({}) must be above --poll-interval ({}): a fetch \
                 waits that long for a reply",
                humantime::format_duration(self.connection.redis_command_timeout),
                humantime::format_duration(self.poll_interval)
            )
        } else if self.queues.is_empty() {
            "--queues: at least one queue is needed".to_owned()
        } else if self.input_roots.is_empty() {
            "--input-root: at least one directory is needed".to_owned()
        } else if self.output_root.as_os_str().is_empty() {
            "--output-root: a directory is needed".to_owned()
        } else if !store_url_ok(&self.connection.store_url) {
            format!(
                "--store-url {:?} must be none, a sqlite: URL or a postgres:// URL",
                RedisConfig::redact(&self.connection.store_url)
            )
        } else {
            // Read the keys once now, so a bad file stops the start.
            self.redis_config()?;
            return Ok(());
        };
        Err(Error::Config(problem))
    }
}

fn store_url_ok(url: &str) -> bool {
    url == spool_cli_common::NO_STORE
        || url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
}

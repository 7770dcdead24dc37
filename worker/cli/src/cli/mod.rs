//! The `spool-worker` command line: flags, environment variables and an
//! optional TOML file merged into one [`Settings`].
//!
//! Every setting can be given three ways. The first found wins:
//!
//! 1. a flag: `--max-memory-per-child 2GiB`;
//! 2. an environment variable: `SPOOL_MAX_MEMORY_PER_CHILD=2GiB`;
//! 3. a key of the TOML file named by `--config` (or `SPOOL_CONFIG`), spelled
//!    like the flag with `_` or `-`: `max_memory_per_child = "2GiB"`;
//!
//! and otherwise its default, which `--help` shows. Durations are
//! human-readable (`30s`, `55m`, `1h 30m`), sizes too (`512MiB`, `2GiB`),
//! and limits take `none` for none.

pub mod parse;
mod video;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, RedisConfig, SigningKeys, TlsConfig};

pub use self::video::video_tasks;
pub use spool_cli_common::{LogFormat, init_logging};
use spool_worker::WorkerConfig;

use crate::{Error, Result};

/// The environment variable through which a supervisor hands a child its
/// [`ChildSpec`](crate::supervisor::ChildSpec).
pub const CHILD_SPEC_ENV: &str = "SPOOL_CHILD_SPEC";

/// The flags of `spool-worker`, before merging with the environment and
/// the configuration file; see [`resolve`].
// (Its `Debug` output leaves the URLs out: they may hold passwords. Not in
// the doc comment, which clap would print as the long about.)
#[derive(Clone, Parser)]
#[command(
    name = "spool-worker",
    version,
    about = "Run Spool workers: a supervisor with prefork child processes that fetch tasks from Redis Streams and run them.",
    after_help = "Every flag can also be set with its SPOOL_* environment variable or as a key of the --config TOML file (max_memory_per_child = \"2GiB\"); flags win over the environment, which wins over the file. Durations and sizes are human-readable: 30s, 55m, 1h 30m, 512MiB, 2GiB; limits take \"none\"."
)]
pub struct Args {
    /// A TOML file of settings, keyed like the long flags.
    #[arg(long, env = "SPOOL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The Redis holding the queues (redis://, rediss:// for TLS,
    /// redis+cluster://host:port,host:port/ for a cluster; credentials in
    /// the URL, never printed).
    #[arg(
        long,
        env = "SPOOL_REDIS_URL",
        hide_env_values = true,
        value_name = "URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis_url: String,

    /// The job store: a sqlite: or postgres:// URL, or none (credentials in
    /// it are never printed).
    #[arg(
        long,
        env = "SPOOL_STORE_URL",
        hide_env_values = true,
        value_name = "URL",
        default_value = "none"
    )]
    pub store_url: String,

    /// A file of HMAC keys: tasks must be signed with one of them, and
    /// unsigned or forged ones are dead-lettered unrun. Its first line
    /// signs (retries, requeues); further lines are older keys still
    /// accepted. Each key is at least 32 bytes (openssl rand -hex 32).
    /// none: no signing, unsigned and signed tasks are accepted.
    #[arg(
        long,
        env = "SPOOL_SIGNING_KEY_FILE",
        value_name = "FILE",
        default_value = "none"
    )]
    pub signing_key_file: String,

    /// A PEM file of CA certificates to trust for rediss:// instead of the
    /// system roots; none: the system roots (or SSL_CERT_FILE).
    #[arg(
        long,
        env = "SPOOL_TLS_CA_CERT_FILE",
        value_name = "FILE",
        default_value = "none"
    )]
    pub tls_ca_cert_file: String,

    /// A PEM client certificate for rediss:// servers that require one
    /// (tls-auth-clients yes), with --tls-key-file; none: no client
    /// certificate.
    #[arg(
        long,
        env = "SPOOL_TLS_CERT_FILE",
        value_name = "FILE",
        default_value = "none"
    )]
    pub tls_cert_file: String,

    /// The PEM private key of --tls-cert-file; none: no client certificate.
    #[arg(
        long,
        env = "SPOOL_TLS_KEY_FILE",
        value_name = "FILE",
        default_value = "none"
    )]
    pub tls_key_file: String,

    /// How long finished records stay in the job store; older ones are
    /// pruned in batches. `none` keeps them all.
    #[arg(
        long,
        env = "SPOOL_STORE_RETENTION",
        value_name = "DURATION",
        default_value = "30d"
    )]
    pub store_retention: String,

    /// The first part of every Redis key; workers and producers must agree.
    #[arg(
        long,
        env = "SPOOL_KEY_PREFIX",
        value_name = "PREFIX",
        default_value = "spool"
    )]
    pub key_prefix: String,

    /// The queues to serve, comma-separated. The gpu queue is served only
    /// where a GPU passes the self-test (or with --force-gpu).
    #[arg(
        long,
        env = "SPOOL_QUEUES",
        value_name = "LIST",
        default_value = "default"
    )]
    pub queues: String,

    /// Child processes, each with --concurrency slots. 0 runs one worker in
    /// this process, with no supervisor: the task and memory limits then
    /// make it exit (status 0) for an outer supervisor to replace.
    #[arg(long, env = "SPOOL_PROCESSES", value_name = "N", default_value = "1")]
    pub processes: String,

    /// Tasks each child runs at once (default: the number of CPUs).
    #[arg(long, env = "SPOOL_CONCURRENCY", value_name = "N", default_value_t = default_concurrency().to_string())]
    pub concurrency: String,

    /// The most tasks a child holds fetched and unacknowledged, running ones
    /// included; auto is 4 x concurrency.
    #[arg(long, env = "SPOOL_PREFETCH", value_name = "N", default_value = "auto")]
    pub prefetch: String,

    /// Recycle a child after this many tasks (none: never).
    #[arg(
        long,
        env = "SPOOL_MAX_TASKS_PER_CHILD",
        value_name = "N",
        default_value = "none"
    )]
    pub max_tasks_per_child: String,

    /// Recycle a child whose resident memory exceeds this (e.g. 2GiB; none:
    /// never).
    #[arg(
        long,
        env = "SPOOL_MAX_MEMORY_PER_CHILD",
        value_name = "SIZE",
        default_value = "none"
    )]
    pub max_memory_per_child: String,

    /// Hard limit on a run, for tasks without their own: past it the run is
    /// dropped and fails.
    #[arg(
        long,
        env = "SPOOL_TIME_LIMIT",
        value_name = "DURATION",
        default_value = "none"
    )]
    pub time_limit: String,

    /// Soft limit on a run: past it the task's cancellation token fires so
    /// it can wind down before the hard limit.
    #[arg(
        long,
        env = "SPOOL_SOFT_TIME_LIMIT",
        value_name = "DURATION",
        default_value = "none"
    )]
    pub soft_time_limit: String,

    /// How long a task may go without a lease renewal before other workers
    /// reclaim it; leases and the registry heartbeat are renewed every third
    /// of it.
    #[arg(
        long,
        env = "SPOOL_VISIBILITY_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub visibility_timeout: String,

    /// Deliveries without an outcome (its workers keep dying) before a task
    /// is dead-lettered.
    #[arg(
        long,
        env = "SPOOL_MAX_DELIVERIES",
        value_name = "N",
        default_value = "5"
    )]
    pub max_deliveries: String,

    /// The longest one fetch waits on an empty queue; also bounds how long a
    /// warm shutdown takes to stop fetching.
    #[arg(
        long,
        env = "SPOOL_POLL_INTERVAL",
        value_name = "DURATION",
        default_value = "1s"
    )]
    pub poll_interval: String,

    /// Serve Prometheus metrics on this address (GET /metrics), or none.
    #[arg(
        long,
        env = "SPOOL_METRICS_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_addr: String,

    /// This worker's name in the registry and in consumer names.
    #[arg(long, env = "SPOOL_NAME", value_name = "NAME", default_value_t = default_name())]
    pub name: String,

    /// Log format.
    #[arg(
        long,
        env = "SPOOL_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "human"
    )]
    pub log_format: String,

    /// Log filter (tracing EnvFilter syntax: info, spool_worker=debug,...).
    #[arg(long, env = "SPOOL_LOG", value_name = "FILTER", default_value = "info")]
    pub log_level: String,

    /// The FFmpeg to probe and use; auto searches PATH.
    #[arg(
        long,
        env = "SPOOL_FFMPEG",
        value_name = "PATH",
        default_value = "auto"
    )]
    pub ffmpeg: String,

    /// The ffprobe the video tasks use; auto takes the one beside FFmpeg,
    /// then searches PATH.
    #[arg(
        long,
        env = "SPOOL_FFPROBE",
        value_name = "PATH",
        default_value = "auto"
    )]
    pub ffprobe: String,

    /// A directory video tasks may read from; repeat it (or separate with
    /// commas) for several. The output root is readable too.
    #[arg(
        long = "input-root",
        id = "input_root",
        env = "SPOOL_INPUT_ROOT",
        value_name = "DIR",
        value_delimiter = ',',
        default_value = "."
    )]
    pub input_roots: Vec<String>,

    /// The directory video tasks write into (created if missing).
    #[arg(
        long,
        env = "SPOOL_OUTPUT_ROOT",
        value_name = "DIR",
        default_value = "spool-output"
    )]
    pub output_root: String,

    /// Do not serve the video tasks (video.transcode, video.analyze,
    /// video.package).
    #[arg(long, env = "SPOOL_NO_VIDEO")]
    pub no_video: bool,

    /// Serve the gpu queue even when no GPU passes the self-test.
    #[arg(long, env = "SPOOL_FORCE_GPU")]
    pub force_gpu: bool,

    /// Skip the hardware probe (GPUs, CUDA, FFmpeg) at start; the gpu queue
    /// then needs --force-gpu.
    #[arg(long, env = "SPOOL_NO_PROBE")]
    pub no_probe: bool,

    /// Probe the hardware, print the capabilities as JSON, and exit.
    #[arg(long, conflicts_with_all = ["print_config", "child"])]
    pub probe_only: bool,

    /// Print the merged settings as JSON, and exit.
    #[arg(long, conflicts_with = "child")]
    pub print_config: bool,

    /// Run as a supervisor's child (internal: the settings come from the
    /// supervisor through SPOOL_CHILD_SPEC).
    #[arg(long, hide = true)]
    pub child: bool,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("config", &self.config)
            .field("key_prefix", &self.key_prefix)
            .field("queues", &self.queues)
            .field("processes", &self.processes)
            .field("name", &self.name)
            .field("child", &self.child)
            .finish_non_exhaustive()
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

/// Everything a `spool-worker` runs with, merged and validated.
///
/// Its `Debug` output (and [`Settings::redacted`], which `--print-config`
/// prints) hides the passwords in the URLs. The signing keys are never in
/// it: only their file's path, which each process reads itself.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Settings {
    /// The Redis URL.
    pub redis_url: String,
    /// The job store URL (`sqlite://…` or `postgres://…`), or `none`: every
    /// task's start, progress and outcome are recorded there.
    pub store_url: String,
    /// The file of HMAC keys that sign and verify envelopes, if any.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// The CA certificates trusted for `rediss://`, if not the system's.
    #[serde(default)]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// The client certificate presented on `rediss://`, if any.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// How long finished records are kept, if not forever.
    #[serde(with = "opt_duration")]
    pub store_retention: Option<Duration>,
    /// The Redis key prefix.
    pub key_prefix: String,
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
    #[serde(with = "opt_duration")]
    pub time_limit: Option<Duration>,
    /// Soft time limit per run.
    #[serde(with = "opt_duration")]
    pub soft_time_limit: Option<Duration>,
    /// The lease (visibility) timeout.
    #[serde(with = "duration")]
    pub visibility_timeout: Duration,
    /// Deliveries before a task is dead-lettered as poison.
    pub max_deliveries: u32,
    /// The longest wait of one fetch.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
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

impl Settings {
    /// These settings with the passwords in the Redis and store URLs
    /// replaced by `***`, for printing.
    #[must_use]
    pub fn redacted(&self) -> Self {
        Self {
            redis_url: RedisConfig::redact(&self.redis_url),
            store_url: RedisConfig::redact(&self.store_url),
            ..self.clone()
        }
    }

    /// How to reach Redis with these settings: the URL, the key prefix,
    /// the signing keys and the TLS certificates, read from their files
    /// now.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a file cannot be read, the key file holds a
    /// bad key (the message names the file and the line, never a key), or
    /// a client certificate comes without its key.
    pub fn redis_config(&self) -> Result<RedisConfig> {
        let signing = self
            .signing_key_file
            .as_deref()
            .map(SigningKeys::from_file)
            .transpose()
            .map_err(|e| match e {
                spool_broker::Error::Config(problem) => {
                    Error::Config(format!("--signing-key-file: {problem}"))
                }
                other => Error::Broker(other),
            })?;
        let tls = TlsConfig::from_files(
            self.tls_ca_cert_file.as_deref(),
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
        )
        .map_err(|e| match e {
            spool_broker::Error::Config(problem) => Error::Config(problem),
            other => Error::Broker(other),
        })?;
        Ok(RedisConfig {
            key_prefix: self.key_prefix.clone(),
            signing,
            tls,
            ..RedisConfig::from_url(&self.redis_url)
        })
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
            ..WorkerConfig::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let problem = if self.key_prefix.is_empty()
            || self.key_prefix.contains(['{', '}'])
            || self.key_prefix.contains(char::is_whitespace)
        {
            "--key-prefix must be non-empty, without braces or spaces".to_owned()
        } else if self.processes > 256 {
            format!("--processes {} is more than 256", self.processes)
        } else if let (Some(soft), Some(hard)) = (self.soft_time_limit, self.time_limit)
            && soft >= hard
        {
            format!(
                "--soft-time-limit ({}) must be below --time-limit ({})",
                humantime::format_duration(soft),
                humantime::format_duration(hard)
            )
        } else if self.visibility_timeout < Duration::from_secs(1) {
            "--visibility-timeout must be at least 1s".to_owned()
        } else if self.poll_interval.is_zero() {
            "--poll-interval must be positive".to_owned()
        } else if !store_url_ok(&self.store_url) {
            format!(
                "--store-url {:?} must be none, a sqlite: URL or a postgres:// URL",
                RedisConfig::redact(&self.store_url)
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
    url == "none"
        || url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
}

/// What the command line asks for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Invocation {
    /// Run workers (a supervisor, or one in-process worker).
    Run(Settings),
    /// Probe the hardware, print the capabilities, exit.
    Probe(Settings),
    /// Print the merged settings, exit.
    PrintConfig(Settings),
    /// Run as a supervisor's child.
    Child(Box<crate::supervisor::ChildSpec>),
}

impl Invocation {
    /// The settings in effect (logging is set up from them).
    #[must_use]
    pub fn settings(&self) -> &Settings {
        match self {
            Self::Run(s) | Self::Probe(s) | Self::PrintConfig(s) => s,
            Self::Child(spec) => &spec.settings,
        }
    }
}

/// The clap command, with every flag, its environment variable and default.
#[must_use]
pub fn command() -> clap::Command {
    Args::command()
}

/// Where a value came from, for error messages.
enum Origin<'a> {
    Flag(&'a str),
    Env(&'a str),
    File(&'a Path),
    Default,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag(id) => write!(f, "--{}", id.replace('_', "-")),
            Self::Env(id) => write!(f, "${}", env_name(id)),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Default => f.write_str("the default"),
        }
    }
}

fn env_name(id: &str) -> String {
    match id {
        "log_level" => "SPOOL_LOG".to_owned(),
        _ => format!("SPOOL_{}", id.to_ascii_uppercase()),
    }
}

/// The keys a configuration file may hold.
const FILE_KEYS: &[&str] = &[
    "redis_url",
    "store_url",
    "signing_key_file",
    "tls_ca_cert_file",
    "tls_cert_file",
    "tls_key_file",
    "store_retention",
    "key_prefix",
    "queues",
    "processes",
    "concurrency",
    "prefetch",
    "max_tasks_per_child",
    "max_memory_per_child",
    "time_limit",
    "soft_time_limit",
    "visibility_timeout",
    "max_deliveries",
    "poll_interval",
    "metrics_addr",
    "name",
    "log_format",
    "log_level",
    "ffmpeg",
    "ffprobe",
    "input_root",
    "output_root",
    "no_video",
    "force_gpu",
    "no_probe",
];

/// A configuration file's values, as text.
struct FileValues {
    path: PathBuf,
    values: BTreeMap<String, String>,
}

impl FileValues {
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| Error::Config(format!("{} is not valid TOML: {e}", path.display())))?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            let id = key.replace('-', "_");
            if !FILE_KEYS.contains(&id.as_str()) {
                return Err(Error::Config(format!(
                    "{}: unknown setting {key:?} (known: {})",
                    path.display(),
                    FILE_KEYS.join(", ")
                )));
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => {
                    let mut parts = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            toml::Value::String(s) => parts.push(s),
                            other => {
                                return Err(Error::Config(format!(
                                    "{}: {key} holds {other:?}, not a string",
                                    path.display()
                                )));
                            }
                        }
                    }
                    parts.join(",")
                }
                other => {
                    return Err(Error::Config(format!(
                        "{}: {key} cannot be {}",
                        path.display(),
                        other.type_str()
                    )));
                }
            };
            values.insert(id, text);
        }
        Ok(Self {
            path: path.to_owned(),
            values,
        })
    }
}

/// Merges flags, environment and file for one setting.
struct Merger<'a> {
    matches: &'a ArgMatches,
    file: Option<&'a FileValues>,
}

impl<'a> Merger<'a> {
    /// The winning text of setting `id` and where it came from (the
    /// values of a repeated flag joined with commas).
    fn text(&self, id: &'a str) -> (String, Origin<'a>) {
        let given = self
            .matches
            .get_many::<String>(id)
            .map(|values| values.cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => return (given, Origin::Flag(id)),
            Some(ValueSource::EnvVariable) => return (given, Origin::Env(id)),
            _ => {}
        }
        if let Some(file) = self.file
            && let Some(value) = file.values.get(id)
        {
            return (value.clone(), Origin::File(&file.path));
        }
        (given, Origin::Default)
    }

    /// Setting `id`, parsed.
    fn get<T>(&self, id: &'a str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T> {
        let (text, origin) = self.text(id);
        parse(&text).map_err(|e| Error::Config(format!("{} ({origin}): {e}", flag(id))))
    }

    /// A boolean flag, which the file may set too.
    fn flag(&self, id: &'a str) -> Result<bool> {
        let set = self.matches.get_flag(id);
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine | ValueSource::EnvVariable) => Ok(set),
            _ => match self.file.and_then(|f| f.values.get(id).map(|v| (f, v))) {
                Some((file, value)) => parse::boolean(value).map_err(|e| {
                    Error::Config(format!("{} ({}): {e}", flag(id), file.path.display()))
                }),
                None => Ok(set),
            },
        }
    }
}

fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// Merges parsed flags with the environment (clap has read it already) and
/// the configuration file, and validates the result.
///
/// # Errors
///
/// [`Error::Config`] naming the setting, the source of its bad value and
/// what is wrong with it.
pub fn resolve(matches: &ArgMatches) -> Result<Invocation> {
    let args = Args::from_arg_matches(matches).map_err(|e| Error::Config(e.to_string()))?;
    if args.child {
        return child_spec().map(|spec| Invocation::Child(Box::new(spec)));
    }
    let file = args.config.as_deref().map(FileValues::load).transpose()?;
    let m = Merger {
        matches,
        file: file.as_ref(),
    };
    let concurrency = m.get("concurrency", |t| parse::count(t, 1))?;
    let concurrency = usize::try_from(concurrency).unwrap_or(usize::MAX);
    let prefetch = m
        .get("prefetch", |t| parse::auto_count(t, 1))?
        .map_or(concurrency.saturating_mul(4), |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let settings = Settings {
        redis_url: m.get("redis_url", |t| Ok(t.trim().to_owned()))?,
        store_url: m.get("store_url", |t| Ok(t.trim().to_owned()))?,
        signing_key_file: m.get("signing_key_file", none_path)?,
        tls_ca_cert_file: m.get("tls_ca_cert_file", none_path)?,
        tls_cert_file: m.get("tls_cert_file", none_path)?,
        tls_key_file: m.get("tls_key_file", none_path)?,
        store_retention: m.get("store_retention", parse::optional_duration)?,
        key_prefix: m.get("key_prefix", |t| Ok(t.trim().to_owned()))?,
        queues: m.get("queues", parse::queues)?,
        processes: usize::try_from(m.get("processes", |t| parse::count(t, 0))?)
            .unwrap_or(usize::MAX),
        concurrency,
        prefetch,
        max_tasks_per_child: m.get("max_tasks_per_child", parse::optional_count)?,
        max_memory_per_child: m.get("max_memory_per_child", parse::optional_size)?,
        time_limit: m.get("time_limit", parse::optional_duration)?,
        soft_time_limit: m.get("soft_time_limit", parse::optional_duration)?,
        visibility_timeout: m.get("visibility_timeout", parse::duration)?,
        max_deliveries: m.get("max_deliveries", |t| {
            parse::count(t, 1).and_then(|n| u32::try_from(n).map_err(|e| e.to_string()))
        })?,
        poll_interval: m.get("poll_interval", parse::duration)?,
        metrics_addr: m.get("metrics_addr", parse::optional_addr)?,
        name: m.get("name", parse::name)?,
        log_format: m.get("log_format", |t| LogFormat::from_str(t.trim(), true))?,
        log_level: m.get("log_level", |t| Ok(t.trim().to_owned()))?,
        ffmpeg: m.get("ffmpeg", auto_path)?,
        ffprobe: m.get("ffprobe", auto_path)?,
        input_roots: m.get("input_root", |t| {
            let roots: Vec<PathBuf> = t
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(PathBuf::from)
                .collect();
            if roots.is_empty() {
                Err("at least one directory is needed".to_owned())
            } else {
                Ok(roots)
            }
        })?,
        output_root: m.get("output_root", |t| {
            let t = t.trim();
            if t.is_empty() {
                Err("a directory is needed".to_owned())
            } else {
                Ok(PathBuf::from(t))
            }
        })?,
        no_video: m.flag("no_video")?,
        force_gpu: m.flag("force_gpu")?,
        no_probe: m.flag("no_probe")?,
    };
    settings.validate()?;
    Ok(if args.probe_only {
        Invocation::Probe(settings)
    } else if args.print_config {
        Invocation::PrintConfig(settings)
    } else {
        Invocation::Run(settings)
    })
}

/// A path, or `None` for `none` (or nothing).
fn none_path(text: &str) -> Result<Option<PathBuf>, String> {
    let text = text.trim();
    Ok((!text.is_empty() && !text.eq_ignore_ascii_case("none")).then(|| PathBuf::from(text)))
}

/// A path, or `None` for `auto` (or nothing).
fn auto_path(text: &str) -> Result<Option<PathBuf>, String> {
    let text = text.trim();
    Ok((!text.is_empty() && !text.eq_ignore_ascii_case("auto")).then(|| PathBuf::from(text)))
}

fn child_spec() -> Result<crate::supervisor::ChildSpec> {
    let text = std::env::var(CHILD_SPEC_ENV).map_err(|_| {
        Error::Config(format!(
            "--child is internal: a supervisor sets {CHILD_SPEC_ENV}"
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{CHILD_SPEC_ENV} does not decode: {e}")))
}

/// Serde as humantime text (`30s`), so settings read well when printed.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for optional durations: humantime text or null.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_args(args: &[&str]) -> Result<Settings> {
        let matches = command()
            .try_get_matches_from(std::iter::once("spool-worker").chain(args.iter().copied()))
            .map_err(|e| Error::Config(e.to_string()))?;
        resolve(&matches).map(|i| i.settings().clone())
    }

    #[test]
    fn the_command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn flags_parse_into_settings() {
        let s = resolve_args(&[
            "--queues",
            "default,analysis",
            "--processes",
            "3",
            "--concurrency",
            "4",
            "--max-tasks-per-child",
            "10",
            "--max-memory-per-child",
            "2GiB",
            "--time-limit",
            "1h",
            "--soft-time-limit",
            "55m",
            "--metrics-addr",
            "none",
        ])
        .expect("valid");
        assert_eq!(s.queues, vec![QueueName::DEFAULT, QueueName::ANALYSIS]);
        assert_eq!((s.processes, s.concurrency, s.prefetch), (3, 4, 16));
        assert_eq!(s.max_tasks_per_child, Some(10));
        assert_eq!(s.max_memory_per_child, Some(2 << 30));
        assert_eq!(s.time_limit, Some(Duration::from_secs(3600)));
        assert_eq!(s.soft_time_limit, Some(Duration::from_secs(3300)));
        assert_eq!(s.metrics_addr, None);
        let config = s.worker_config(s.queues.clone(), "c".into());
        assert_eq!(config.max_tasks, Some(10));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bad_values_name_their_flag() {
        let e = resolve_args(&["--max-memory-per-child", "lots"]).expect_err("invalid");
        assert!(e.to_string().contains("--max-memory-per-child"), "{e}");
        let e =
            resolve_args(&["--time-limit", "1m", "--soft-time-limit", "2m"]).expect_err("invalid");
        assert!(e.to_string().contains("--soft-time-limit"), "{e}");
    }

    #[test]
    fn video_flags_parse() {
        let s = resolve_args(&[
            "--input-root",
            "/srv/a",
            "--input-root",
            "/srv/b,/srv/c",
            "--output-root",
            "/srv/out",
            "--ffprobe",
            "/opt/ffprobe",
            "--no-video",
        ])
        .expect("valid");
        let roots: Vec<PathBuf> = ["/srv/a", "/srv/b", "/srv/c"].map(PathBuf::from).to_vec();
        assert_eq!(s.input_roots, roots);
        assert_eq!(s.output_root, PathBuf::from("/srv/out"));
        assert_eq!(s.ffprobe, Some(PathBuf::from("/opt/ffprobe")));
        assert!(s.no_video);
        let d = resolve_args(&[]).expect("valid");
        assert_eq!(d.input_roots, vec![PathBuf::from(".")]);
        assert_eq!(d.output_root, PathBuf::from("spool-output"));
        // (The default ffprobe follows SPOOL_FFPROBE, which set-up exports.)
        assert!(!d.no_video);
    }

    #[test]
    fn signing_key_files_are_read_and_bad_ones_named_without_their_keys() {
        let dir = std::env::temp_dir().join(format!("spool-cli-keys-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.keys");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").expect("written");
        let short = dir.join("short.keys");
        std::fs::write(&short, "tiny-secret\n").expect("written");

        let none = resolve_args(&["--signing-key-file", "none"]).expect("valid");
        assert_eq!(none.signing_key_file, None);
        assert!(none.redis_config().expect("no keys").signing.is_none());
        let path = good.to_str().expect("utf-8");
        let s = resolve_args(&["--signing-key-file", path]).expect("valid");
        assert_eq!(s.signing_key_file.as_deref(), Some(good.as_path()));
        let keys = s.redis_config().expect("keys").signing.expect("signing");
        assert_eq!(keys.accepted(), 1);

        let e = resolve_args(&["--signing-key-file", short.to_str().expect("utf-8")])
            .expect_err("too short");
        let text = e.to_string();
        assert!(
            text.contains("--signing-key-file") && text.contains("short.keys"),
            "{text}"
        );
        assert!(!text.contains("tiny-secret"), "{text}");
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn printed_settings_hide_passwords() {
        let s = resolve_args(&[
            "--redis-url",
            "redis://spool:hunter2-redis@10.0.0.1:6379/",
            "--store-url",
            "postgres://spool:hunter2-store@db/spool",
        ])
        .expect("valid");
        let shown = format!(
            "{s:?} {}",
            serde_json::to_string(&s.redacted()).expect("json")
        );
        assert!(
            shown.contains("10.0.0.1:6379") && shown.contains("@db/spool"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        // What travels to a child keeps the real URL.
        assert!(
            serde_json::to_string(&s)
                .expect("json")
                .contains("hunter2-redis")
        );
        let e = resolve_args(&["--store-url", "mysql://spool:hunter2-store@db/spool"])
            .expect_err("unsupported");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn settings_survive_json() {
        let s = resolve_args(&["--time-limit", "90s"]).expect("valid");
        let text = serde_json::to_string(&s).expect("encodes");
        assert!(text.contains("\"1m 30s\""), "{text}");
        let back: Settings = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, s);
    }
}

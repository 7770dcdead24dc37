//! The autoscaler's configuration: a TOML file (see `ops/autoscaler.md`),
//! some of whose settings flags and environment variables override.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, WorkerRecord, WorkerState};

use super::policy::Policy;
use crate::error::{Error, Result};

/// Which actuator carries the decisions out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActuatorKind {
    /// Start and retire `spool-worker` processes on this host.
    #[default]
    Local,
    /// Set the replicas of one Deployment per pool.
    Kubernetes,
}

impl FromStr for ActuatorKind {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Self::Local),
            "kubernetes" | "k8s" => Ok(Self::Kubernetes),
            other => Err(Error::Config(format!(
                "unknown actuator {other:?}: use local or kubernetes"
            ))),
        }
    }
}

/// The whole configuration of `spool-autoscaler`.
///
/// # Examples
///
/// ```
/// use spool_autoscaler::{ActuatorKind, AutoscalerConfig};
///
/// let config = AutoscalerConfig::from_toml(
///     r#"
///     interval = "500ms"
///     [[pools]]
///     name = "cpu"
///     queues = ["default", "analysis"]
///     concurrency = 4
///     worker_args = ["--no-probe"]
///     [pools.policy]
///     max_workers = 8
///     "#,
/// )?;
/// assert_eq!(config.actuator, ActuatorKind::Local);
/// assert_eq!(config.pools[0].worker_name(), "cpu");
/// # Ok::<(), spool_autoscaler::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscalerConfig {
    /// The Redis holding the queues. Default: `redis://127.0.0.1:6379/`.
    pub redis_url: String,
    /// The first part of every Spool key, as the workers use it. Default:
    /// `spool`.
    pub key_prefix: String,
    /// How often the signals are read and a decision made. Default: 1 s.
    #[serde(with = "spool_cli_common::text::duration")]
    pub interval: Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`), or `"none"`.
    /// Default: `127.0.0.1:9466` (spool-worker uses 9464, spool-beat examples 9465).
    #[serde(with = "spool_cli_common::text::optional_addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// Which actuator acts. Default: `local`.
    pub actuator: ActuatorKind,
    /// The GPUs present, instead of counting them with NVML: for tests, or
    /// for the Kubernetes actuator, where the GPUs are the cluster's, not
    /// this host's. Default: none (counted at start).
    pub gpus: Option<u32>,
    /// The local actuator's settings.
    pub local: LocalConfig,
    /// The Kubernetes actuator's settings.
    pub kubernetes: KubernetesConfig,
    /// The pools, each scaled on its own; at least one.
    pub pools: Vec<PoolConfig>,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379/".to_owned(),
            key_prefix: "spool".to_owned(),
            interval: Duration::from_secs(1),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9466))),
            actuator: ActuatorKind::Local,
            gpus: None,
            local: LocalConfig::default(),
            kubernetes: KubernetesConfig::default(),
            pools: Vec::new(),
        }
    }
}

/// How the local actuator runs workers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// The `spool-worker` executable. Default: none, meaning the one next
    /// to this autoscaler's own executable if there is one, else
    /// `spool-worker` on `PATH`.
    pub worker_bin: Option<PathBuf>,
    /// A directory for the workers' logs, one file per worker
    /// (`<pool>-<n>.log`). Default: none, meaning the workers log to the
    /// autoscaler's standard error.
    pub log_dir: Option<PathBuf>,
}

/// How the Kubernetes actuator reaches the API server. Every default is
/// the in-cluster one: a pod's service account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// The API server's URL. Default: none, meaning
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    pub api_url: Option<String>,
    /// The namespace of the Deployments. Default: none, meaning the
    /// service account's namespace file, else `default`.
    pub namespace: Option<String>,
    /// A bearer token file, read again for each request (projected tokens
    /// rotate). Default: none, meaning the service account's token file
    /// when no `token` is given.
    pub token_file: Option<PathBuf>,
    /// A bearer token given inline (tests, `kubectl proxy` setups). Default:
    /// none.
    pub token: Option<String>,
    /// The CA bundle (PEM) that signs the API server's certificate.
    /// Default: none, meaning the service account's `ca.crt`.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate from the API server. Never in production: it
    /// lets anyone on the path impersonate the API server and read the
    /// token. Default: false.
    pub insecure_skip_tls_verify: bool,
}

/// One pool: a set of queues, the workers that serve them, and how their
/// number scales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The pool's name (letters, digits, `_`, `-`, `.`); also the default
    /// worker name and Deployment name. Required.
    pub name: String,
    /// The queues its workers serve and whose backlog it scales on; a
    /// queue belongs to one pool only. Required.
    pub queues: Vec<QueueName>,
    /// Slots per worker (`spool-worker --concurrency`). Default: none, the
    /// worker's own default (its CPUs).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// More `spool-worker` flags for the local actuator, such as
    /// `["--no-probe", "--store-url", "sqlite://spool.db"]`. The autoscaler
    /// sets `--queues`, `--concurrency`, `--redis-url`, `--key-prefix`,
    /// `--name` and `--processes 0` itself, and `--metrics-addr none`
    /// unless given here. Default: none.
    #[serde(default)]
    pub worker_args: Vec<String>,
    /// The name the pool's workers register under (`spool-worker --name`),
    /// which is how the autoscaler finds them in the registry. Default: the
    /// pool's name.
    #[serde(default)]
    pub worker_name: Option<String>,
    /// The Kubernetes Deployment that runs the pool's workers. Default: the
    /// pool's name.
    #[serde(default)]
    pub deployment: Option<String>,
    /// How the pool scales. Default: [`Policy::default`].
    #[serde(default)]
    pub policy: Policy,
}

/// Flags of `spool-worker` the local actuator sets itself.
const RESERVED_WORKER_FLAGS: &[&str] = &[
    "--queues",
    "--redis-url",
    "--key-prefix",
    "--name",
    "--processes",
    "--concurrency",
    "--child",
    "--probe-only",
    "--print-config",
];

impl PoolConfig {
    /// A pool named `name` serving `queues`, with every other setting at
    /// its default.
    #[must_use]
    pub fn new(name: impl Into<String>, queues: Vec<QueueName>) -> Self {
        Self {
            name: name.into(),
            queues,
            concurrency: None,
            worker_args: Vec::new(),
            worker_name: None,
            deployment: None,
            policy: Policy::default(),
        }
    }

    /// The name its workers register under.
    #[must_use]
    pub fn worker_name(&self) -> &str {
        self.worker_name.as_deref().unwrap_or(&self.name)
    }

    /// The Deployment that runs it.
    #[must_use]
    pub fn deployment(&self) -> &str {
        self.deployment.as_deref().unwrap_or(&self.name)
    }

    /// The registry records of this pool's workers that are still live.
    pub fn workers_of<'a>(
        &'a self,
        records: &'a [WorkerRecord],
    ) -> impl Iterator<Item = &'a WorkerRecord> + 'a {
        records
            .iter()
            .filter(move |r| r.name == self.worker_name() && r.state != WorkerState::Stopped)
    }

    fn validate(&mut self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("pool {:?}: {what}", self.name)));
        check_name("pool name", &self.name)?;
        check_name("worker_name", self.worker_name())?;
        if self.queues.is_empty() {
            return bad("queues must name at least one queue".to_owned());
        }
        let distinct: BTreeSet<&QueueName> = self.queues.iter().collect();
        if distinct.len() != self.queues.len() {
            return bad("a queue is listed twice".to_owned());
        }
        if self.concurrency == Some(0) {
            return bad("concurrency must be at least 1".to_owned());
        }
        if let Some(flag) = self.worker_args.iter().find(|arg| {
            RESERVED_WORKER_FLAGS
                .iter()
                .any(|f| arg.as_str() == *f || arg.starts_with(&format!("{f}=")))
        }) {
            return bad(format!(
                "worker_args may not set {flag}: the autoscaler sets it (use the pool's queues \
                 and concurrency, or the autoscaler's redis_url and key_prefix)"
            ));
        }
        if self.deployment().is_empty() {
            return bad("deployment may not be empty".to_owned());
        }
        let policy = &mut self.policy;
        if policy.min_workers > policy.max_workers {
            return bad(format!(
                "min_workers ({}) is above max_workers ({})",
                policy.min_workers, policy.max_workers
            ));
        }
        if policy.gpus_per_worker.is_none() {
            let serves_gpu = self.queues.contains(&QueueName::GPU);
            policy.gpus_per_worker = Some(u32::from(serves_gpu));
        }
        Ok(())
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} {name:?}: use 1 to 64 ASCII letters, digits, '_', '-' or '.'"
        )))
    }
}

impl AutoscalerConfig {
    /// Parses a configuration from TOML text (not yet validated).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for text that is not valid TOML, unknown
    /// keys and values of the wrong type.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Reads and parses a TOML file (not yet validated).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read,
    /// [`Error::Config`] naming the file when it does not parse.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("cannot read {}", path.display()),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// A small working configuration: one CPU pool on `default`.
    #[must_use]
    pub fn example() -> Self {
        let mut pool = PoolConfig::new("cpu", vec![QueueName::DEFAULT]);
        pool.concurrency = Some(4);
        pool.worker_args = vec!["--no-probe".to_owned()];
        Self {
            pools: vec![pool],
            ..Self::default()
        }
    }

    /// Checks the configuration and fills in derived defaults (GPUs per
    /// worker).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] saying what is wrong: no pool, a pool name
    /// or queue used twice, `min_workers` above `max_workers`, a reserved
    /// worker flag, a zero interval.
    pub fn validated(mut self) -> Result<Self> {
        if self.pools.is_empty() {
            return Err(Error::Config(
                "no pool configured: add at least one [[pools]] table".to_owned(),
            ));
        }
        if self.interval.is_zero() {
            return Err(Error::Config("interval must be positive".to_owned()));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}', ' ']) {
            return Err(Error::Config(
                "key_prefix must be non-empty, without braces or spaces".to_owned(),
            ));
        }
        let mut names = BTreeSet::new();
        let mut queues = BTreeSet::new();
        for pool in &mut self.pools {
            pool.validate()?;
            if !names.insert(pool.name.clone()) {
                return Err(Error::Config(format!(
                    "two pools are named {:?}",
                    pool.name
                )));
            }
            for queue in &pool.queues {
                if !queues.insert(queue.clone()) {
                    return Err(Error::Config(format!(
                        "queue {queue:?} is in two pools: each queue's backlog drives one pool"
                    )));
                }
            }
        }
        Ok(self)
    }

    /// The pool named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing the pools when there is none by
    /// that name.
    pub fn pool(&self, name: &str) -> Result<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
            Error::Config(format!(
                "no pool {name:?} in the configuration (pools: {})",
                known.join(", ")
            ))
        })
    }

    /// Whether any pool needs GPUs.
    #[must_use]
    pub fn needs_gpus(&self) -> bool {
        self.pools.iter().any(|p| p.policy.gpus_needed() > 0)
    }
}

/// Parses `host:port` (IP literal), or `none`: the spelling every Spool
/// binary shares.
pub use spool_cli_common::text::parse_optional_addr;

#[cfg(test)]
mod tests;

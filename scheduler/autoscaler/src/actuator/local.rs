//! The local actuator: `spool-worker` processes on this host, one per
//! worker (`--processes 0`), started with the pool's queues and flags and
//! retired with SIGTERM, their warm shutdown: a retiring worker stops
//! fetching, gives back what it prefetched, finishes and acknowledges what
//! runs, and exits. Nothing is lost.
//!
//! Workers inherit the autoscaler's environment, so `SPOOL_SIGNING_KEY_FILE`
//! set for the autoscaler makes every worker it starts require signed
//! tasks (the autoscaler itself enqueues nothing and needs no key). They
//! get its Redis URL and TLS files too, however the autoscaler was given
//! them ([`LocalActuator::with_tls`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use spool_broker::{WorkerRecord, WorkerState};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Actuator;
use super::spawn::terminate_with_parent;
use crate::config::{AutoscalerConfig, PoolConfig};
use crate::error::{Error, Result};
use spool_cli_common::TlsArgs;

/// The executable name of the worker.
const WORKER_BIN: &str = "spool-worker";

/// How often a long warm shutdown reports the workers it waits for.
const WAIT_REPORT: Duration = Duration::from_secs(5);

/// Where the worker executable is: `configured` if given; else
/// `spool-worker` next to the running executable, if there is one; else
/// `spool-worker`, to be found on `PATH`.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use spool_autoscaler::resolve_worker_bin;
///
/// let bin = resolve_worker_bin(Some(Path::new("/opt/spool/bin/spool-worker")));
/// assert_eq!(bin, Path::new("/opt/spool/bin/spool-worker"));
/// ```
#[must_use]
pub fn resolve_worker_bin(configured: Option<&Path>) -> PathBuf {
    if let Some(path) = configured {
        return path.to_owned();
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name(WORKER_BIN);
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from(WORKER_BIN)
}

/// The command line of one of `pool`'s workers (the Redis URL goes in the
/// environment, so its credentials do not show in `ps`).
///
/// # Examples
///
/// ```
/// use spool_autoscaler::{PoolConfig, worker_args};
///
/// let mut pool = PoolConfig::new("cpu", vec!["default".parse()?, "analysis".parse()?]);
/// pool.concurrency = Some(4);
/// pool.worker_args = vec!["--no-probe".into()];
/// assert_eq!(
///     worker_args(&pool, "spool").join(" "),
///     "--processes 0 --queues default,analysis --key-prefix spool --name cpu \
///      --concurrency 4 --metrics-addr none --no-probe"
/// );
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[must_use]
pub fn worker_args(pool: &PoolConfig, key_prefix: &str) -> Vec<String> {
    let queues: Vec<&str> = pool.queues.iter().map(|q| q.as_str()).collect();
    let mut args = vec![
        "--processes".to_owned(),
        "0".to_owned(),
        "--queues".to_owned(),
        queues.join(","),
        "--key-prefix".to_owned(),
        key_prefix.to_owned(),
        "--name".to_owned(),
        pool.worker_name().to_owned(),
    ];
    if let Some(concurrency) = pool.concurrency {
        args.extend(["--concurrency".to_owned(), concurrency.to_string()]);
    }
    let sets_metrics = pool
        .worker_args
        .iter()
        .any(|a| a == "--metrics-addr" || a.starts_with("--metrics-addr="));
    if !sets_metrics {
        // Every worker would otherwise try spool-worker's default port.
        args.extend(["--metrics-addr".to_owned(), "none".to_owned()]);
    }
    args.extend(pool.worker_args.iter().cloned());
    args
}

/// A worker process this actuator started.
#[derive(Debug)]
struct Process {
    child: Child,
    pid: u32,
    started: Instant,
}

/// One pool's processes.
#[derive(Debug, Default)]
struct Fleet {
    /// Serving: the pool's current workers.
    running: Vec<Process>,
    /// Told to stop (SIGTERM), finishing their tasks.
    retiring: Vec<Process>,
}

impl Fleet {
    /// Forgets the processes that exited, saying why.
    fn reap(&mut self, pool: &str) {
        self.running.retain_mut(|p| match p.child.try_wait() {
            Ok(Some(status)) => {
                warn!(pool, pid = p.pid, %status, "a worker exited by itself; the next tick replaces it if needed");
                false
            }
            Ok(None) => true,
            Err(e) => {
                warn!(pool, pid = p.pid, error = %e, "cannot check a worker process");
                true
            }
        });
        self.retiring.retain_mut(|p| match p.child.try_wait() {
            Ok(Some(status)) => {
                info!(pool, pid = p.pid, %status, "worker retired");
                false
            }
            Ok(None) => true,
            Err(e) => {
                warn!(pool, pid = p.pid, error = %e, "cannot check a retiring worker process");
                true
            }
        });
    }
}

/// Starts and retires `spool-worker` processes on this host.
///
/// Workers run in their own process group, so a terminal's Ctrl-C reaches
/// only the autoscaler, which then retires them once (a second signal
/// would be their cold shutdown). On Linux each worker also gets SIGTERM
/// from the kernel if the thread that started it exits, so no worker
/// outlives the autoscaler even when it is killed: start workers from the
/// runtime's own threads.
///
/// # Examples
///
/// ```no_run
/// use spool_autoscaler::{Actuator, AutoscalerConfig, LocalActuator};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> spool_autoscaler::Result<()> {
/// let config = AutoscalerConfig::example().validated()?;
/// let mut local = LocalActuator::new(&config);
/// println!("using {}", local.check().await?);
/// let pool = &config.pools[0];
/// local.scale(pool, 2, &[]).await?;
/// assert_eq!(local.current(pool).await?, 2);
/// local.shutdown(std::future::pending()).await?;
/// # Ok(())
/// # }
/// ```
pub struct LocalActuator {
    worker_bin: PathBuf,
    redis_url: String,
    key_prefix: String,
    tls: TlsArgs,
    log_dir: Option<PathBuf>,
    pools: BTreeMap<String, Fleet>,
    started: u64,
}

impl std::fmt::Debug for LocalActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("LocalActuator")
            .field("worker_bin", &self.worker_bin)
            .field(
                "redis_url",
                &spool_broker::RedisConfig::redact(&self.redis_url),
            )
            .field("key_prefix", &self.key_prefix)
            .field("tls", &self.tls)
            .field("log_dir", &self.log_dir)
            .field("pools", &self.pools)
            .field("started", &self.started)
            .finish()
    }
}

impl LocalActuator {
    /// An actuator for the deployment `config` describes, with no worker
    /// yet.
    #[must_use]
    pub fn new(config: &AutoscalerConfig) -> Self {
        Self {
            worker_bin: resolve_worker_bin(config.local.worker_bin.as_deref()),
            redis_url: config.redis_url.clone(),
            key_prefix: config.key_prefix.clone(),
            tls: TlsArgs::default(),
            log_dir: config.local.log_dir.clone(),
            pools: BTreeMap::new(),
            started: 0,
        }
    }

    /// Hands the workers these TLS files (as `SPOOL_TLS_*` variables), so
    /// that they reach the Redis the autoscaler reaches.
    #[must_use]
    pub fn with_tls(mut self, tls: &TlsArgs) -> Self {
        self.tls = tls.clone();
        self
    }

    /// The worker executable in use.
    #[must_use]
    pub fn worker_bin(&self) -> &Path {
        &self.worker_bin
    }

    /// Runs `spool-worker --version` to check that the executable works;
    /// returns what it prints.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] saying which executable failed and how
    /// to point at another.
    pub async fn check(&self) -> Result<String> {
        let run = Command::new(&self.worker_bin)
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let problem = match tokio::time::timeout(Duration::from_secs(10), run).await {
            Ok(Ok(output)) if output.status.success() => {
                return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
            }
            Ok(Ok(output)) => format!("it exited with {}", output.status),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "it did not answer --version within 10 s".to_owned(),
        };
        Err(Error::Config(format!(
            "cannot run the worker executable {}: {problem}; set local.worker_bin or --worker-bin",
            self.worker_bin.display()
        )))
    }

    /// Process ids of the pool's serving workers (retiring ones not
    /// included).
    #[must_use]
    pub fn pids(&self, pool: &str) -> Vec<u32> {
        self.pools
            .get(pool)
            .map(|f| f.running.iter().map(|p| p.pid).collect())
            .unwrap_or_default()
    }

    /// How many processes are retiring, over every pool.
    #[must_use]
    pub fn retiring(&self) -> usize {
        self.pools.values().map(|f| f.retiring.len()).sum()
    }

    fn start(&mut self, pool: &PoolConfig) -> Result<Process> {
        let mut command = Command::new(&self.worker_bin);
        command
            .args(worker_args(pool, &self.key_prefix))
            .env("SPOOL_REDIS_URL", &self.redis_url)
            .envs(self.tls.env())
            .stdin(Stdio::null())
            .process_group(0);
        match &self.log_dir {
            Some(dir) => {
                let path = dir.join(format!("{}-{}.log", pool.name, self.started + 1));
                let file = std::fs::File::create(&path).map_err(|source| Error::Io {
                    context: format!("cannot create the worker log {}", path.display()),
                    source,
                })?;
                let copy = file.try_clone().map_err(|source| Error::Io {
                    context: format!("cannot open the worker log {}", path.display()),
                    source,
                })?;
                command.stdout(copy).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        terminate_with_parent(&mut command);
        let child = command.spawn().map_err(|source| Error::Io {
            context: format!(
                "cannot start the worker executable {} (set local.worker_bin or --worker-bin)",
                self.worker_bin.display()
            ),
            source,
        })?;
        self.started += 1;
        let pid = child.id().unwrap_or(0);
        info!(pool = %pool.name, pid, "worker started");
        Ok(Process {
            child,
            pid,
            started: Instant::now(),
        })
    }

    /// Starts the warm shutdown of `process`.
    fn retire(pool: &str, process: &Process, why: &str) {
        info!(
            pool,
            pid = process.pid,
            why,
            "retiring a worker (warm shutdown)"
        );
        signal(process.pid, Signal::SIGTERM);
    }

    fn reap_all(&mut self) {
        for (name, fleet) in &mut self.pools {
            fleet.reap(name);
        }
    }

    /// Waits until every retiring process has exited.
    async fn wait_retiring(&mut self) {
        loop {
            self.reap_all();
            let left = self.retiring();
            if left == 0 {
                return;
            }
            let first = self
                .pools
                .values_mut()
                .flat_map(|f| f.retiring.iter_mut())
                .next();
            if let Some(process) = first
                && tokio::time::timeout(WAIT_REPORT, process.child.wait())
                    .await
                    .is_err()
            {
                info!(
                    workers = left,
                    "waiting for retiring workers to finish their tasks"
                );
            }
        }
    }
}

/// Sends `signal` to `pid`; a process already gone is not an error.
fn signal(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw == 0 {
        return;
    }
    if let Err(e) = kill(Pid::from_raw(raw), signal)
        && e != nix::errno::Errno::ESRCH
    {
        warn!(pid, error = %e, "cannot signal a worker");
    }
}

/// The order in which a pool's workers are retired: idle registered ones
/// first, then those not registered yet, newest first; busy ones never.
fn retirable(process: &Process, records: &HashMap<u32, &WorkerRecord>) -> Option<(u8, Instant)> {
    let rank = match records.get(&process.pid) {
        Some(record) if record.state == WorkerState::Running && record.busy == 0 => 0,
        Some(_) => return None,
        None => 1,
    };
    Some((rank, process.started))
}

impl Actuator for LocalActuator {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn current(&mut self, pool: &PoolConfig) -> Result<u32> {
        let fleet = self.pools.entry(pool.name.clone()).or_default();
        fleet.reap(&pool.name);
        Ok(u32::try_from(fleet.running.len()).unwrap_or(u32::MAX))
    }

    async fn scale(
        &mut self,
        pool: &PoolConfig,
        desired: u32,
        workers: &[WorkerRecord],
    ) -> Result<u32> {
        let desired = usize::try_from(desired).unwrap_or(usize::MAX);
        self.pools
            .entry(pool.name.clone())
            .or_default()
            .reap(&pool.name);
        let running = self.pools.get(&pool.name).map_or(0, |f| f.running.len());
        if desired > running {
            for _ in running..desired {
                let process = self.start(pool)?;
                self.pools
                    .entry(pool.name.clone())
                    .or_default()
                    .running
                    .push(process);
            }
        } else if desired < running {
            let records: HashMap<u32, &WorkerRecord> =
                pool.workers_of(workers).map(|r| (r.pid, r)).collect();
            let fleet = self.pools.entry(pool.name.clone()).or_default();
            let mut order: Vec<(usize, (u8, Instant))> = fleet
                .running
                .iter()
                .enumerate()
                .filter_map(|(i, p)| retirable(p, &records).map(|key| (i, key)))
                .collect();
            // Lowest rank first; within a rank, the newest first.
            order.sort_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)));
            let mut chosen: Vec<usize> = order
                .into_iter()
                .take(running - desired)
                .map(|(i, _)| i)
                .collect();
            if chosen.len() < running - desired {
                info!(
                    pool = %pool.name,
                    keeping = running - desired - chosen.len(),
                    "busy workers are not retired; trying again at the next tick"
                );
            }
            chosen.sort_unstable_by(|a, b| b.cmp(a));
            for i in chosen {
                let process = fleet.running.swap_remove(i);
                Self::retire(&pool.name, &process, "scale down");
                fleet.retiring.push(process);
            }
        }
        let now = self.pools.get(&pool.name).map_or(0, |f| f.running.len());
        Ok(u32::try_from(now).unwrap_or(u32::MAX))
    }

    async fn shutdown(&mut self, hurry: impl Future<Output = ()> + Send) -> Result<()> {
        self.reap_all();
        for (name, fleet) in &mut self.pools {
            for process in fleet.running.drain(..) {
                Self::retire(name, &process, "autoscaler stopping");
                fleet.retiring.push(process);
            }
        }
        let hurried = {
            let wait = self.wait_retiring();
            tokio::pin!(wait);
            tokio::pin!(hurry);
            tokio::select! {
                () = &mut wait => false,
                () = &mut hurry => true,
            }
        };
        if hurried {
            warn!(
                workers = self.retiring(),
                "second signal: cold shutdown of the workers; their unacknowledged tasks will be reclaimed"
            );
            for fleet in self.pools.values() {
                for process in &fleet.retiring {
                    signal(process.pid, Signal::SIGTERM);
                }
            }
            self.wait_retiring().await;
        }
        Ok(())
    }
}

impl Drop for LocalActuator {
    fn drop(&mut self) {
        // On Linux the kernel sends each worker SIGTERM when the thread
        // that started it exits; signalling here too would make that a
        // second signal, a cold shutdown. Elsewhere, start the warm
        // shutdown of what still runs.
        if cfg!(not(target_os = "linux")) {
            for fleet in self.pools.values() {
                for process in &fleet.running {
                    signal(process.pid, Signal::SIGTERM);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_flags_in_the_pool_replace_the_default() {
        let mut pool = PoolConfig::new("gpu", vec![spool_broker::QueueName::GPU]);
        pool.worker_args = vec!["--metrics-addr=127.0.0.1:9500".into()];
        let args = worker_args(&pool, "p");
        assert!(!args.contains(&"none".to_owned()), "{args:?}");
        assert_eq!(
            args.last().map(String::as_str),
            Some("--metrics-addr=127.0.0.1:9500")
        );
        assert!(!args.contains(&"--concurrency".to_owned()));
    }

    #[test]
    fn a_missing_binary_falls_back_to_path() {
        let bin = resolve_worker_bin(None);
        assert!(
            bin == Path::new(WORKER_BIN) || bin.ends_with(WORKER_BIN),
            "{bin:?}"
        );
    }
}

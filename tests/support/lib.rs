//! Shared harness for Spool's end-to-end suites: a real Redis isolated by a
//! random key prefix per test, bounded waits on conditions, and helpers to
//! run workers and look inside the streams.
#![allow(clippy::unwrap_used, missing_docs)]

pub mod bins;
pub mod browser;
pub mod chaos;
mod cluster;
pub mod metrics;
pub mod otlp;
pub mod s3;
mod server;
pub mod video;
pub use cluster::RedisCluster;
pub use server::{RedisServer, free_port};

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use redis::AsyncCommands;
use spool_broker::{
    Broker, DeadLetterEntry, Envelope, Priority, QueueName, QueueStats, RedisBroker, RedisConfig,
};
use spool_sdk::Client;
use spool_worker::{CounterSnapshot, Counters, Worker};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The Redis the suites run against: `SPOOL_REDIS_URL`, else the local one.
pub fn redis_url() -> String {
    std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// Whether [`redis_url`] names a Redis Cluster (the cluster pass).
pub fn redis_is_cluster() -> bool {
    RedisConfig::from_url(redis_url())
        .cluster_nodes()
        .is_ok_and(|nodes| nodes.is_some())
}

/// Called when a tool `test` needs is missing: fails the test, saying how
/// to get `what`, unless `skip_var` is set to `1`, in which case it prints
/// why the test skips and returns (the caller then returns too). A suite
/// that passes without running is only ever asked for, as with
/// `SPOOL_SKIP_POSTGRES`.
///
/// # Panics
///
/// Unless `skip_var` is `1`.
pub fn missing_tool(test: &str, what: &str, remedy: &str, skip_var: &str) {
    if std::env::var(skip_var).is_ok_and(|v| v == "1") {
        eprintln!("skipping {test}: {what} ({skip_var}=1)");
        return;
    }
    panic!("{test} needs {what}: {remedy}, or set {skip_var}=1 to skip it");
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The consumer group every worker joins.
pub const GROUP: &str = "spool";

/// Pending entries per consumer over a queue's streams, read atomically;
/// quiet about streams or groups that do not exist yet.
const PENDING_BY_CONSUMER: &str = r"
local out = {}
for i = 1, #KEYS do
  local summary = redis.pcall('XPENDING', KEYS[i], ARGV[1])
  if type(summary) == 'table' and not summary.err and type(summary[4]) == 'table' then
    for _, consumer in ipairs(summary[4]) do
      table.insert(out, consumer[1])
      table.insert(out, consumer[2])
    end
  end
end
return out
";

/// How long a test's own Redis command may take. Not redis-rs's default of
/// half a second: a test's check of what happened must not fail because
/// eight suites share two loaded cores (as under `NEXTEST_TEST_THREADS=8`).
const RAW_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A raw connection to the test's Redis: one server or a cluster.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // ClusterConnection is not Debug
pub enum RawConnection {
    /// Reconnects by itself, so it outlives the restarts chaos suites cause.
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl RawConnection {
    /// Connects to `url`; `redis+cluster://a,b,c/` names a cluster by its
    /// seeds, as Spool's URLs do.
    pub async fn open(url: &str) -> Self {
        match RedisConfig::from_url(url).cluster_nodes().unwrap() {
            Some(seeds) => {
                let client = redis::cluster::ClusterClient::builder(seeds)
                    .response_timeout(RAW_RESPONSE_TIMEOUT)
                    .build()
                    .unwrap();
                Self::Cluster(client.get_async_connection().await.unwrap())
            }
            None => Self::Single(
                redis::aio::ConnectionManager::new_with_config(
                    redis::Client::open(url).unwrap(),
                    redis::aio::ConnectionManagerConfig::new()
                        .set_response_timeout(Some(RAW_RESPONSE_TIMEOUT)),
                )
                .await
                .unwrap(),
            ),
        }
    }
}

impl redis::aio::ConnectionLike for RawConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A Redis connection whose keys live under a prefix no other test uses.
pub struct TestRedis {
    pub prefix: String,
    pub broker: RedisBroker,
    raw: RawConnection,
}

impl fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRedis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl TestRedis {
    pub async fn new() -> Self {
        Self::at(&redis_url()).await
    }

    /// Like [`TestRedis::new`], against the Redis at `url`.
    pub async fn at(url: &str) -> Self {
        Self::at_with(url, |_| {}).await
    }

    /// Like [`TestRedis::new`], with `adjust` applied to the broker's
    /// configuration (after the URL and key prefix are set).
    pub async fn with_config(adjust: impl FnOnce(&mut RedisConfig)) -> Self {
        Self::at_with(&redis_url(), adjust).await
    }

    async fn at_with(url: &str, adjust: impl FnOnce(&mut RedisConfig)) -> Self {
        init_tracing();
        let prefix = format!("spool-test-{:016x}", fastrand::u64(..));
        let mut config = RedisConfig {
            key_prefix: prefix.clone(),
            ..RedisConfig::from_url(url)
        };
        adjust(&mut config);
        let broker = RedisBroker::connect(config)
            .await
            .expect("Redis must be running: start it with `bash ops/scripts/setup.sh`");
        let raw = RawConnection::open(url).await;
        Self {
            prefix,
            broker,
            raw,
        }
    }

    pub fn client(&self) -> Client<RedisBroker> {
        Client::new(self.broker.clone())
    }

    /// A raw connection, for injecting what a buggy producer might write.
    pub fn raw(&self) -> RawConnection {
        self.raw.clone()
    }

    /// The stream key of a queue's priority level.
    pub fn stream_key(&self, queue: &QueueName, priority: &str) -> String {
        format!("{}:{{{queue}}}:{priority}", self.prefix)
    }

    /// The three stream keys of a queue, highest priority first.
    pub fn stream_keys(&self, queue: &QueueName) -> [String; 3] {
        Priority::ALL.map(|p| self.stream_key(queue, p.as_str()))
    }

    pub async fn stats(&self, queue: &QueueName) -> QueueStats {
        self.broker.stats(queue).await.unwrap()
    }

    /// Up to 1000 dead letters of a queue, oldest first.
    pub async fn dead_letters(&self, queue: &QueueName) -> Vec<DeadLetterEntry> {
        self.broker.dead_letters(queue, 1000).await.unwrap()
    }

    /// `XLEN` of one priority stream (0 when it does not exist).
    pub async fn xlen(&self, queue: &QueueName, priority: Priority) -> u64 {
        self.raw()
            .xlen(self.stream_key(queue, priority.as_str()))
            .await
            .unwrap()
    }

    /// Whether a key exists.
    pub async fn exists(&self, key: &str) -> bool {
        self.raw().exists(key).await.unwrap()
    }

    /// Appends a raw entry to a priority stream, as a buggy producer would;
    /// returns its id.
    pub async fn xadd_raw(
        &self,
        queue: &QueueName,
        priority: Priority,
        fields: &[(&str, &[u8])],
    ) -> String {
        self.raw()
            .xadd(self.stream_key(queue, priority.as_str()), "*", fields)
            .await
            .unwrap()
    }

    /// Every entry of a priority stream, oldest first, as (id, `e` field).
    pub async fn stream_entries(
        &self,
        queue: &QueueName,
        priority: Priority,
    ) -> Vec<(String, Vec<u8>)> {
        let key = self.stream_key(queue, priority.as_str());
        let mut raw = self.raw();
        let mut out = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let page: redis::streams::StreamRangeReply =
                raw.xrange_count(&key, &start, "+", 1000).await.unwrap();
            let Some(last) = page.ids.last() else { break };
            start = format!("({}", last.id);
            for entry in page.ids {
                let e = match entry.map.get("e") {
                    Some(value) => redis::from_redis_value_ref(value).unwrap(),
                    None => Vec::new(),
                };
                out.push((entry.id, e));
            }
        }
        out
    }

    /// Every entry of a priority stream, decoded, oldest first.
    pub async fn stream_envelopes(
        &self,
        queue: &QueueName,
        priority: Priority,
    ) -> Vec<(String, Envelope)> {
        self.stream_entries(queue, priority)
            .await
            .into_iter()
            .map(|(id, e)| (id, Envelope::decode(&e).unwrap()))
            .collect()
    }

    /// Entries claimed and not yet acknowledged, per consumer, summed over the
    /// queue's three streams in one atomic read.
    pub async fn pending_by_consumer(&self, queue: &QueueName) -> BTreeMap<String, u64> {
        let script = redis::Script::new(PENDING_BY_CONSUMER);
        let mut invocation = script.prepare_invoke();
        for key in self.stream_keys(queue) {
            invocation.key(key);
        }
        let flat: Vec<String> = invocation
            .arg(GROUP)
            .invoke_async(&mut self.raw())
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        for pair in flat.chunks_exact(2) {
            *out.entry(pair[0].clone()).or_default() += pair[1].parse::<u64>().unwrap();
        }
        out
    }

    /// Deletes every key under this test's prefix.
    pub async fn cleanup(mut self) {
        let keys: Vec<String> = self.raw.keys(format!("{}:*", self.prefix)).await.unwrap();
        match &self.raw {
            RawConnection::Single(_) if !keys.is_empty() => {
                let _: () = self.raw.del(keys).await.unwrap();
            }
            RawConnection::Single(_) => {}
            // One DEL each: in a cluster the keys span slots.
            RawConnection::Cluster(_) => {
                for key in keys {
                    let _: () = self.raw.del(key).await.unwrap();
                }
            }
        }
    }
}

/// A worker configuration with short leases, so the suites run in
/// seconds: a lease lapses after 600 ms without renewal and is renewed
/// every 150 ms; `name` is the consumer name.
pub fn short_lease_config(name: &str) -> spool_worker::WorkerConfig {
    spool_worker::WorkerConfig {
        concurrency: 8,
        prefetch: 8,
        poll_interval: Duration::from_millis(100),
        visibility_timeout: Duration::from_millis(600),
        heartbeat_interval: Duration::from_millis(150),
        consumer_name: Some(name.to_owned()),
        ..spool_worker::WorkerConfig::default()
    }
}

/// Polls `condition` until it holds, failing the test after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A shutdown signal the test fires by hand.
pub fn shutdown_switch() -> (
    tokio::sync::oneshot::Sender<()>,
    impl Future<Output = ()> + Send,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// A worker running in the background, with its counters and its shutdown
/// switch.
#[derive(Debug)]
pub struct RunningWorker {
    pub counters: Counters,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: JoinHandle<spool_worker::Result<CounterSnapshot>>,
}

/// Spawns `worker.run` with a shutdown switch.
pub fn spawn_worker<B: Broker>(worker: Worker<B>) -> RunningWorker {
    let counters = worker.counters();
    let (stop, shutdown) = shutdown_switch();
    let handle = tokio::spawn(worker.run(shutdown));
    RunningWorker {
        counters,
        stop,
        handle,
    }
}

impl RunningWorker {
    /// The counters now.
    pub fn snapshot(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// Waits until the counters satisfy `condition`, failing after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&CounterSnapshot) -> bool,
    ) -> CounterSnapshot {
        wait_until(what, timeout, || {
            let done = condition(&self.counters.snapshot());
            async move { done }
        })
        .await;
        self.counters.snapshot()
    }

    /// Kills the worker cold, as a crash would: `run` is dropped, so its
    /// leases stop being renewed and nothing more is acknowledged.
    pub fn kill(self) {
        self.handle.abort();
    }

    /// Whether `run` has returned.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Fires the warm shutdown and waits (at most 10 s) for `run` to return
    /// its report.
    pub async fn stop(self) -> CounterSnapshot {
        let _ = self.stop.send(());
        Self::join_handle(self.handle).await
    }

    /// Waits (at most 10 s) for `run` to return by itself, without firing
    /// the shutdown.
    pub async fn join(self) -> CounterSnapshot {
        let Self { stop, handle, .. } = self;
        let report = Self::join_handle(handle).await;
        drop(stop);
        report
    }

    async fn join_handle(
        handle: JoinHandle<spool_worker::Result<CounterSnapshot>>,
    ) -> CounterSnapshot {
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the worker did not stop within 10 s")
            .expect("the worker panicked")
            .expect("the worker failed")
    }
}

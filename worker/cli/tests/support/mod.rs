//! Harness for the `spool-worker` binary tests: a Redis isolated by a random
//! key prefix, worker processes that are killed when a test ends however it
//! ends, bounded waits on conditions, and a Prometheus text parser.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redis::AsyncCommands;
use spool_broker::{Broker, QueueName, QueueStats, RedisBroker, RedisConfig, WorkerRecord};
use spool_sdk::Client;
use tokio::time::Instant;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_spool-worker");

/// The Redis the tests run against: `SPOOL_REDIS_URL`, else the local one.
pub fn redis_url() -> String {
    std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A Redis whose keys live under a prefix no other test uses.
pub struct TestRedis {
    pub prefix: String,
    pub broker: RedisBroker,
    pub client: Client,
}

impl TestRedis {
    pub async fn new() -> Self {
        let prefix = format!("spool-cli-test-{:016x}", fastrand::u64(..));
        let config = RedisConfig {
            key_prefix: prefix.clone(),
            ..RedisConfig::from_url(redis_url())
        };
        let broker = RedisBroker::connect(config)
            .await
            .expect("Redis must be running: start it with `bash ops/scripts/setup.sh`");
        let client = Client::new(broker.clone());
        Self {
            prefix,
            broker,
            client,
        }
    }

    pub async fn stats(&self) -> QueueStats {
        self.broker.stats(&QueueName::DEFAULT).await.unwrap()
    }

    pub async fn workers(&self) -> Vec<WorkerRecord> {
        self.broker.workers().await.unwrap()
    }

    /// Starts `spool-worker` with this prefix, a short poll interval, no
    /// hardware probe, no metrics unless `args` say otherwise, and a clean
    /// environment.
    pub fn spawn(&self, args: &[&str]) -> WorkerProcess {
        let mut all = self.base_args(args);
        all.push("--no-probe".into());
        all.extend(args.iter().map(|a| (*a).to_owned()));
        WorkerProcess::spawn(&all, &[])
    }

    /// As [`spawn`](Self::spawn), with the hardware probe and `env`.
    pub fn spawn_probed(&self, args: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
        let mut all = self.base_args(args);
        all.extend(args.iter().map(|a| (*a).to_owned()));
        WorkerProcess::spawn(&all, env)
    }

    fn base_args(&self, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = vec![
            "--key-prefix".into(),
            self.prefix.clone(),
            "--redis-url".into(),
            redis_url(),
            "--poll-interval".into(),
            "100ms".into(),
        ];
        if !args.contains(&"--metrics-addr") {
            all.extend(["--metrics-addr".into(), "none".into()]);
        }
        all
    }

    /// Deletes every key under this test's prefix.
    pub async fn cleanup(self) {
        let mut raw = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = raw.keys(format!("{}:*", self.prefix)).await.unwrap();
        if !keys.is_empty() {
            let _: () = raw.del(keys).await.unwrap();
        }
    }
}

/// A `spool-worker` process, SIGKILLed on drop (its children die with it).
pub struct WorkerProcess {
    child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Runs the binary with `args` and `env` only (every `SPOOL_*` variable
    /// of the test's own environment removed), logging to a file.
    pub fn spawn(args: &[String], env: &[(&str, &str)]) -> Self {
        let log =
            std::env::temp_dir().join(format!("spool-worker-test-{:016x}.log", fastrand::u64(..)));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(BIN);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .env_remove("RUST_LOG");
        for (key, _) in std::env::vars() {
            if key.starts_with("SPOOL_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let child = command.spawn().unwrap();
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(i32::try_from(self.pid()).unwrap()), signal).unwrap();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the process to exit, failing the test after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "spool-worker did not exit within {timeout:?}; its log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- spool-worker log ({}) ---\n{}",
                self.log.display(),
                self.logs()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Runs the binary to the end with `args` and `env` only (the test's own
/// `SPOOL_*` variables removed); its output.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("SPOOL_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

/// Polls `probe` until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bounded wait written as a loop: `tick` sleeps a little, failing the
/// test once the time is up.
pub struct Deadline {
    what: &'static str,
    timeout: Duration,
    at: Instant,
}

impl Deadline {
    pub fn new(what: &'static str, timeout: Duration) -> Self {
        Self {
            what,
            timeout,
            at: Instant::now() + timeout,
        }
    }

    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.at,
            "timed out after {:?} waiting for {}",
            self.timeout,
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record seen so far, by worker id, the latest of each kept:
/// records of exited workers stay known after they expire.
#[derive(Debug, Default)]
pub struct Records(pub HashMap<String, WorkerRecord>);

impl Records {
    pub async fn poll(&mut self, redis: &TestRedis) {
        for record in redis.workers().await {
            let newer = self
                .0
                .get(&record.id)
                .is_none_or(|known| known.last_seen <= record.last_seen);
            if newer {
                self.0.insert(record.id.clone(), record);
            }
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.0.values().map(|r| r.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    pub fn processed(&self) -> u64 {
        self.0.values().map(|r| r.processed).sum()
    }

    pub fn succeeded(&self) -> u64 {
        self.0.values().map(|r| r.succeeded).sum()
    }

    pub fn busy(&self) -> u32 {
        self.0
            .values()
            .filter(|r| r.is_live())
            .map(|r| r.busy)
            .sum()
    }
}

/// A free local TCP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` over a plain TCP connection (HTTP/1.0, read to close).
pub async fn scrape(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    Some(body.to_owned())
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parsed Prometheus text: samples, and each family's `# TYPE`.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses the text format (0.0.4), failing the test on a malformed line.
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                out.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .expect("a sample line ends with its value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels end with }");
                    let mut labels = BTreeMap::new();
                    for pair in split_labels(inner) {
                        let (k, v) = pair.split_once('=').expect("label=value");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .expect("quoted value");
                        labels.insert(k.to_owned(), v.replace("\\\"", "\"").replace("\\\\", "\\"));
                    }
                    (name.to_owned(), labels)
                }
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line:?}"
            );
            out.samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        out
    }

    /// The value of `name` with exactly these labels (others ignored when
    /// not named), summed over matching series; `None` if none match.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }
}

/// Splits `a="x",b="y,z"` at the commas between labels.
fn split_labels(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        parts.push(&inner[start..]);
    }
    parts
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body, or `None`
/// while nothing answers there.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

//! The harness of the `spoolctl` suites: the built binary run against the
//! real Redis at `SPOOL_REDIS_URL` (else the local one), under a key prefix
//! no other run uses, and temporary SQLite job stores.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::hash::{BuildHasher as _, RandomState};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use spool_broker::{RedisBroker, RedisConfig};

/// A `spoolctl` with its own key prefix; purges the routed queues when
/// dropped, so a failing test leaves nothing behind either.
pub struct Ctl {
    pub prefix: String,
    /// Queues to purge besides the routed ones.
    pub extra_queues: Vec<String>,
}

impl Ctl {
    pub fn new() -> Self {
        let random = RandomState::new().hash_one(std::process::id());
        Self {
            prefix: format!("spoolctl-test-{random:016x}"),
            extra_queues: Vec::new(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_spoolctl"))
            .args(["--key-prefix", &self.prefix])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("SPOOL_STORE_URL")
            .env_remove("SPOOL_REDIS_URL")
            .env("SPOOL_REDIS_URL", redis_url())
            .output()
            .expect("spoolctl runs")
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "spoolctl {args:?} failed ({}); is Redis running? {stderr}",
            out.status
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// `queues --json` without sampling the rates (no wait).
    pub fn queues(&self) -> Value {
        self.json(&["queues", "--json", "--sample", "0s"])
    }

    /// Runs a command that must fail and returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "spoolctl {args:?} succeeded");
        assert!(out.stdout.is_empty(), "spoolctl {args:?} printed output");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A broker on the same Redis and prefix, to seed what no worker makes
    /// here.
    pub async fn broker(&self) -> RedisBroker {
        let config = RedisConfig {
            url: redis_url(),
            key_prefix: self.prefix.clone(),
            pool_size: 4,
            ..RedisConfig::default()
        };
        RedisBroker::connect(config)
            .await
            .expect("Redis is running")
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let routed = ["default", "analysis", "streaming", "gpu"].map(str::to_owned);
        for queue in routed.iter().chain(&self.extra_queues) {
            let _ = self.run(&["resume", queue]);
            let _ = self.run(&["purge", queue, "--yes"]);
        }
    }
}

pub fn redis_url() -> String {
    std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A SQLite job store in a temporary file, deleted when dropped.
pub struct TempStore {
    path: PathBuf,
}

impl TempStore {
    pub fn new() -> Self {
        let random = RandomState::new().hash_one(std::process::id());
        let path = std::env::temp_dir().join(format!("spoolctl-test-{random:016x}.db"));
        Self { path }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The row of queue `name` in `queues --json`.
pub fn queue<'a>(rows: &'a Value, name: &str) -> &'a Value {
    let rows = rows.as_array().expect("an array of queues");
    rows.iter()
        .find(|r| r["queue"] == name)
        .unwrap_or_else(|| panic!("queue {name} is not listed: {rows:?}"))
}

/// Checks `condition` every 20 ms until it holds; fails after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

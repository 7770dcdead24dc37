//! Shared harness for Spool's end-to-end suites: a real Redis isolated by a
//! random key prefix per test, and bounded waits on conditions.
#![allow(clippy::unwrap_used, missing_docs)]

use std::future::Future;
use std::time::Duration;

use redis::AsyncCommands;
use spool_broker::{Broker, QueueName, QueueStats, RedisBroker, RedisConfig};
use spool_sdk::Client;
use tokio::time::Instant;

/// The Redis the suites run against: `SPOOL_REDIS_URL`, else the local one.
pub fn redis_url() -> String {
    std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A Redis connection whose keys live under a prefix no other test uses.
pub struct TestRedis {
    pub prefix: String,
    pub broker: RedisBroker,
    raw: redis::aio::MultiplexedConnection,
}

impl TestRedis {
    pub async fn new() -> Self {
        init_tracing();
        let prefix = format!("spool-test-{:016x}", fastrand::u64(..));
        let config = RedisConfig {
            key_prefix: prefix.clone(),
            ..RedisConfig::from_url(redis_url())
        };
        let broker = RedisBroker::connect(config)
            .await
            .expect("Redis must be running: start it with `bash ops/scripts/setup.sh`");
        let raw = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self { prefix, broker, raw }
    }

    pub fn client(&self) -> Client<RedisBroker> {
        Client::new(self.broker.clone())
    }

    /// A raw connection, for injecting what a buggy producer might write.
    pub fn raw(&self) -> redis::aio::MultiplexedConnection {
        self.raw.clone()
    }

    /// The stream key of a queue's priority level.
    pub fn stream_key(&self, queue: &QueueName, priority: &str) -> String {
        format!("{}:{{{queue}}}:{priority}", self.prefix)
    }

    pub async fn stats(&self, queue: &QueueName) -> QueueStats {
        self.broker.stats(queue).await.unwrap()
    }

    /// Deletes every key under this test's prefix.
    pub async fn cleanup(mut self) {
        let keys: Vec<String> = self.raw.keys(format!("{}:*", self.prefix)).await.unwrap();
        if !keys.is_empty() {
            let _: () = self.raw.del(keys).await.unwrap();
        }
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
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A shutdown signal the test fires by hand.
pub fn shutdown_switch() -> (tokio::sync::oneshot::Sender<()>, impl Future<Output = ()> + Send) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

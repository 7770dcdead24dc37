//! Several real `spool-beat` processes against a real Redis: each tick is
//! enqueued exactly once, through a leader's death (SIGKILL) and a graceful
//! handover (SIGTERM).
//!
//! The binary is taken from next to this test's executable (the workspace
//! test run builds it).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spool_broker::{LeaderLock, Priority, QueueName};
use spool_scheduler::beat::{HEADER_ENTRY, HEADER_SCHEDULED_AT, LOCK_NAME};
use spool_tests::bins::workspace_bin;
use spool_tests::{TestRedis, metrics, redis_url, wait_until};

/// Every second, every missed tick caught up, a short lease for a quick
/// failover.
const CONFIG: &str = r#"
    lock_ttl = "2s"

    [[entry]]
    name = "heartbeat"
    task = "spool.ping"
    every = "1s"
    catch_up = "all"
"#;

const WAIT: Duration = Duration::from_secs(20);

fn spool_beat() -> PathBuf {
    workspace_bin("spool-beat", "spool-scheduler")
}

/// A `spool-beat` process, killed when dropped; its log in a file.
struct Replica {
    child: Child,
    log: PathBuf,
}

impl Replica {
    fn start(config: &Path, prefix: &str, extra: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!("spool-beat-{:016x}.log", fastrand::u64(..)));
        let child = Command::new(spool_beat())
            .arg("--config")
            .arg(config)
            .args(["--redis-url", &redis_url(), "--key-prefix", prefix])
            .args(extra)
            .env("RUST_LOG", "spool_scheduler=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let child = &mut self.child;
        wait_until("spool-beat to exit", WAIT, || {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            async move { exited }
        })
        .await;
        let code = self.child.wait().unwrap();
        assert!(
            code.success(),
            "spool-beat exited with {code}:\n{}",
            self.log()
        );
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The pid in the lock holder's owner id (`<host>:<pid>:<random>`).
async fn leader_pid(lock: &LeaderLock) -> Option<u32> {
    let holder = lock.holder().await.unwrap()?;
    holder.owner.split(':').nth(1)?.parse().ok()
}

/// Every tick's scheduled time (ms), in stream order; checks each is a
/// valid heartbeat task.
async fn ticks(redis: &TestRedis) -> Vec<u64> {
    redis
        .stream_envelopes(&QueueName::DEFAULT, Priority::Normal)
        .await
        .into_iter()
        .map(|(_, e)| {
            assert_eq!(e.name, "spool.ping");
            assert_eq!(e.headers[HEADER_ENTRY], "heartbeat");
            e.headers[HEADER_SCHEDULED_AT].parse().unwrap()
        })
        .collect()
}

/// Each tick once, one second apart, none missing.
fn assert_exactly_once(ticks: &[u64]) {
    let unique: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ticks.len(),
        "a tick was enqueued twice: {ticks:?}"
    );
    let sorted: Vec<u64> = unique.into_iter().collect();
    for pair in sorted.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "a tick is missing: {sorted:?}");
    }
}

async fn wait_ticks(redis: &TestRedis, at_least: usize, logs: &dyn Fn() -> String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if ticks(redis).await.len() >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {at_least} ticks; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_config(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("spool-beat-{:016x}.toml", fastrand::u64(..)));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[tokio::test]
async fn two_replicas_enqueue_each_tick_once_through_a_leader_crash() {
    let redis = TestRedis::new().await;
    let config = write_config(CONFIG);
    let lock = redis
        .broker
        .leader_lock(LOCK_NAME, "observer", Duration::from_secs(1))
        .unwrap();
    let mut replicas = vec![
        Replica::start(&config, &redis.prefix, &[]),
        Replica::start(&config, &redis.prefix, &[]),
    ];
    let logs = |replicas: &[Replica]| -> String {
        replicas
            .iter()
            .map(Replica::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };

    wait_ticks(&redis, 3, &|| logs(&replicas)).await;
    let leader = leader_pid(&lock).await.expect("a replica leads");
    let index = replicas.iter().position(|r| r.pid() == leader).unwrap();
    // Both are alive: one leads, the other stands by, refused the lock.
    for replica in &mut replicas {
        assert!(
            replica.child.try_wait().unwrap().is_none(),
            "{}",
            replica.log()
        );
    }
    let standby = &replicas[1 - index];
    wait_until("the standby to be refused the lead", WAIT, || {
        let refused = standby.log().contains("another replica leads");
        async move { refused }
    })
    .await;

    // SIGKILL the leader: no resignation, its lease must run out.
    let dead = replicas.remove(index);
    drop(dead);
    let before = ticks(&redis).await.len();
    let survivor = replicas[0].pid();
    wait_until("the survivor to take over", WAIT, || async {
        leader_pid(&lock).await == Some(survivor)
    })
    .await;
    wait_ticks(&redis, before + 3, &|| logs(&replicas)).await;

    let survivor = replicas.pop().unwrap();
    survivor.stop().await;
    assert_eq!(
        lock.holder().await.unwrap(),
        None,
        "a stopped leader resigns"
    );
    let all = ticks(&redis).await;
    assert!(all.len() >= 6, "{all:?}");
    assert_exactly_once(&all);
    let _ = std::fs::remove_file(config);
    redis.cleanup().await;
}

#[tokio::test]
async fn a_stopping_leader_hands_over_and_serves_metrics() {
    let redis = TestRedis::new().await;
    let config = write_config(CONFIG);
    let lock = redis
        .broker
        .leader_lock(LOCK_NAME, "observer", Duration::from_secs(1))
        .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let first = Replica::start(&config, &redis.prefix, &["--metrics-addr", &addr]);
    wait_ticks(&redis, 2, &|| first.log()).await;
    assert_eq!(leader_pid(&lock).await, Some(first.pid()));

    // The counter moves just after a tick lands in Redis: a scrape right
    // after the second tick may still show one, so wait for it.
    let enqueued = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("spool_beat_ticks_enqueued_total{entry=\"heartbeat\"} "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until("the metrics to count two ticks", WAIT, || {
        let counted = enqueued(&scrape(&addr)) >= 2;
        async move { counted }
    })
    .await;
    let metrics = scrape(&addr);
    assert!(metrics.contains("spool_beat_leader 1"), "{metrics}");

    let second = Replica::start(&config, &redis.prefix, &[]);
    // The second replica is up (it logs once it runs) before the first stops.
    wait_until("the second replica to stand by", WAIT, || {
        let started = second.log().contains("standing by");
        async move { started }
    })
    .await;
    let before = ticks(&redis).await.len();
    first.stop().await;
    wait_until("the standby to take over", WAIT, || async {
        leader_pid(&lock).await == Some(second.pid())
    })
    .await;
    wait_ticks(&redis, before + 2, &|| second.log()).await;
    second.stop().await;

    let all = ticks(&redis).await;
    assert_exactly_once(&all);
    let _ = std::fs::remove_file(config);
    redis.cleanup().await;
}

/// `GET /metrics`, which must answer 200.
fn scrape(addr: &str) -> String {
    let response = metrics::scrape(addr).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[test]
fn check_prints_each_entry_and_its_next_ticks_without_redis() {
    let config = write_config(CONFIG);
    let output = Command::new(spool_beat())
        .arg("--config")
        .arg(&config)
        .arg("--check")
        // Nothing listens there: --check must not connect.
        .args(["--redis-url", "redis://127.0.0.1:1/"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("heartbeat: spool.ping on queue default, every 1s, catch_up all"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("  next ").count(), 3, "{stdout}");
}

#[test]
fn bad_configurations_fail_with_the_reason() {
    let cases = [
        (
            "[[entry]]\nname = \"x\"\ntask = \"t\"\ncron = \"61 * * * *\"\n",
            "invalid cron expression",
        ),
        (
            "[[entry]]\nname = \"x\"\ntask = \"t\"\nevery = \"1s\"\nargs = \"{bad\"\n",
            "not valid JSON",
        ),
        ("lock_ttl = \"forever\"\n", "invalid lock_ttl"),
    ];
    for (text, reason) in cases {
        let config = write_config(text);
        let output = Command::new(spool_beat())
            .arg("--config")
            .arg(&config)
            .arg("--check")
            .output()
            .unwrap();
        let _ = std::fs::remove_file(config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("spool-beat: error: in "), "{stderr}");
        assert!(stderr.contains(reason), "{reason} not in {stderr}");
    }
    let missing = Command::new(spool_beat())
        .args(["--config", "/nonexistent/beat.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/beat.toml")
    );
    let usage = Command::new(spool_beat()).arg("--bogus").output().unwrap();
    assert_eq!(usage.status.code(), Some(2), "clap's usage error");
}

//! The process metrics on a daemon's `/metrics`: a real `spool-worker`
//! against real Redis exports `process_*` (memory, CPU, file descriptors,
//! start time) beside its `spool_*` metrics, as every Prometheus client
//! does, so dashboards need no node exporter for the worker's own memory.
//!
//! Build the binaries first: `cargo build -p spool-worker-cli --bins`.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use spool_tests::metrics::{sample, scrape};
use spool_tests::{TestRedis, bins, free_port, redis_url, wait_until};

#[tokio::test]
async fn worker_metrics_include_the_process_metrics() {
    let redis = TestRedis::new().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = Command::new(bins::spool_worker())
        .env("SPOOL_REDIS_URL", redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_QUEUES", "default")
        .args(["--no-video", "--no-probe", "--metrics-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the worker's /metrics", Duration::from_secs(20), || {
        let up = scrape(&addr).is_some_and(|r| r.starts_with("HTTP/1.1 200"));
        async move { up }
    })
    .await;
    let metrics = scrape(&addr).unwrap();
    assert!(
        metrics.contains("spool_"),
        "the worker's own metrics: {metrics}"
    );
    assert!(
        metrics.contains("# TYPE process_resident_memory_bytes gauge"),
        "{metrics}"
    );
    let rss = sample(&metrics, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1_000_000.0, "a live process has some memory: {rss}");
    let fds = sample(&metrics, "process_open_fds").unwrap();
    assert!(fds >= 3.0, "stdin, stdout, stderr at least: {fds}");
    let started = sample(&metrics, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 120.0..=now + 1.0).contains(&started),
        "{started} vs {now}"
    );
    assert!(
        sample(&metrics, "process_cpu_seconds_total").is_some(),
        "{metrics}"
    );

    let _ = worker.kill();
    let _ = worker.wait();
    redis.cleanup().await;
}

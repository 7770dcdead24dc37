//! The `spool-autoscaler` binary: the policy simulation writes its CSV and
//! PNG, a dry run prints its decisions against a real Redis, and bad input
//! gets a clear error and a non-zero exit.
//!
//! Needs the `spool-autoscaler` binary: a workspace test run builds it; run
//! alone, `cargo build -p spool-autoscaler --bin spool-autoscaler` first.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use spool_broker::QueueName;
use spool_sdk::Client;
use spool_tests::{TestRedis, bins, redis_url};
use spool_worker::builtin::Sleep;

/// Runs `spool-autoscaler` with `args` and none of the test's `SPOOL_*`
/// environment.
fn autoscaler(args: &[&str]) -> Output {
    let mut command = Command::new(bins::spool_autoscaler());
    for (name, _) in std::env::vars() {
        if name.starts_with("SPOOL_") {
            command.env_remove(name);
        }
    }
    command.args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ops/autoscaler")
        .join(name)
        .display()
        .to_string()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spool-autoscaler-cli-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Width and height from a PNG's header, after checking its signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(
        &bytes[bytes.len() - 8..bytes.len() - 4],
        b"IEND",
        "truncated PNG"
    );
    (width, height)
}

#[test]
fn the_simulation_writes_its_csv_and_a_png_plot() {
    let out = temp_dir();
    let output = autoscaler(&[
        "simulate",
        "--profile",
        &example("profile-bursty.toml"),
        "--policy",
        &example("autoscaler.toml"),
        "--pool",
        "cpu",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("pool cpu: ") && stdout.contains("wrote "),
        "{stdout}"
    );

    let csv = std::fs::read_to_string(out.join("simulation.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "t,arrivals,backlog,workers,ready_workers,busy,desired,completed,wait_p50,wait_p95,wait_mean"
        )
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // 30 simulated minutes, a row a second.
    assert_eq!(rows.len(), 1800);
    assert!(rows.iter().all(|r| r.len() == 11));
    let column = |i: usize| rows.iter().map(move |r| r[i].parse::<f64>().unwrap());
    // The bursts of the profile (800 and 1500 tasks) show in the backlog,
    // and the pool reaches its maximum of 16 workers.
    assert!(column(2).fold(0.0, f64::max) >= 1400.0);
    assert_eq!(column(3).fold(0.0, f64::max), 16.0);
    assert_eq!(column(1).sum::<f64>() as u64, {
        let summary = stdout.lines().next().unwrap();
        summary
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });

    let png = std::fs::read(out.join("simulation.png")).unwrap();
    assert_eq!(png_size(&png), (1200, 900));
    assert!(png.len() > 20_000, "{} bytes", png.len());

    // A CSV profile, a seed, and the summary as JSON.
    let output = autoscaler(&[
        "simulate",
        "--profile",
        &example("profile-recorded.csv"),
        "--policy",
        &example("autoscaler.toml"),
        "--pool",
        "cpu",
        "--seed",
        "9",
        "--json",
        "--out",
        &out.join("csv").display().to_string(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["tasks"], 334);
    assert_eq!(summary["unfinished"], 0);
    assert_eq!(
        png_size(&std::fs::read(out.join("csv/simulation.png")).unwrap()),
        (1200, 900)
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_input_gets_a_clear_error_and_a_non_zero_exit() {
    let dir = temp_dir();
    let out = dir.display().to_string();
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["--intervall", "1s"],
            2,
            "unexpected argument '--intervall'",
        ),
        (
            &[
                "simulate",
                "--profile",
                "/nonexistent.toml",
                "--policy",
                "x",
                "--out",
                &out,
            ],
            1,
            "cannot read the load profile /nonexistent.toml",
        ),
        (
            &[
                "simulate",
                "--profile",
                &example("profile-bursty.toml"),
                "--policy",
                &example("autoscaler.toml"),
                "--out",
                &out,
            ],
            1,
            "several pools (cpu, gpu): name one with --pool",
        ),
        (
            &[
                "--interval",
                "soon",
                "--config",
                &example("autoscaler.toml"),
            ],
            2,
            "invalid value 'soon'",
        ),
    ];
    for (args, code, expected) in cases {
        let output = autoscaler(args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[pools]]\nname = \"cpu\"\nqueues = [\"default\"]\n[pools.policy]\nmax_worker = 3\n",
    )
    .unwrap();
    let output = autoscaler(&[
        "--config",
        &bad.display().to_string(),
        "--dry-run",
        "--once",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown field `max_worker`"), "{stderr}");
    let output = autoscaler(&["--dry-run"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("no pool configured: pass --config FILE"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_dry_run_prints_each_decision_and_acts_on_nothing() {
    let test = TestRedis::new().await;
    let queue = QueueName::new("dry").unwrap();
    Client::new(test.broker.clone())
        .enqueue_many((0..23).map(|_| Sleep { ms: 1 }))
        .queue(queue.clone())
        .await
        .unwrap();
    let dir = temp_dir();
    let config = dir.join("autoscaler.toml");
    std::fs::write(
        &config,
        format!(
            "key_prefix = \"{}\"\nmetrics_addr = \"none\"\n[local]\nworker_bin = \"/nonexistent/spool-worker\"\n\
             [[pools]]\nname = \"dry\"\nqueues = [\"dry\"]\nconcurrency = 2\n\
             [pools.policy]\nmax_workers = 6\ntarget_backlog_per_worker = 5\n",
            test.prefix
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let url = redis_url();

    let output = autoscaler(&[
        "--config",
        &config,
        "--redis-url",
        &url,
        "--dry-run",
        "--once",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let tick: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(tick["dry_run"], true);
    let pool = &tick["pools"][0];
    assert_eq!(
        (pool["pool"].as_str(), pool["backlog"].as_u64()),
        (Some("dry"), Some(23))
    );
    assert_eq!(pool["decision"]["direction"], "up");
    assert_eq!(
        (
            pool["decision"]["current"].as_u64(),
            pool["decision"]["desired"].as_u64()
        ),
        (Some(0), Some(5))
    );
    assert_eq!(pool["queues"][0]["queue"], "dry");

    let output = autoscaler(&[
        "--config",
        &config,
        "--redis-url",
        &url,
        "--dry-run",
        "--once",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("TICK  POOL"), "{stdout}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    // TICK POOL BACKLOG IN-FLIGHT OLDEST BUSY WORKERS ACTION REASON
    assert_eq!(&cells[..4], ["1", "dry", "23", "0"], "{stdout}");
    assert!(cells[4].ends_with('s'), "{stdout}");
    assert_eq!(&cells[5..10], ["0/0", "0", "->", "5", "up"], "{stdout}");

    // Acting needs the worker executable, which is missing here: the
    // autoscaler says so rather than starting a broken fleet.
    let output = autoscaler(&["--config", &config, "--redis-url", &url]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot run the worker executable /nonexistent/spool-worker"),
        "{stderr}"
    );
    // And one acting tick with the local actuator is refused.
    let output = autoscaler(&["--config", &config, "--redis-url", &url, "--once"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("--once with the local actuator"));

    assert_eq!(
        test.stats(&queue).await.ready_total(),
        23,
        "a dry run changes nothing"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    test.cleanup().await;
}

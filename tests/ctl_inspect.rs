//! `spoolctl inspect registered` and `spoolctl call`'s check against it,
//! with a real `spool-worker` on a real Redis; and the conventions every
//! binary follows: its own name in `--version`, the connection flags
//! under their own help heading, shell completions and a man page.
//!
//! Build the binaries first: `cargo build -p spool-scheduler -p
//! spool-worker-cli -p spool-autoscaler --bins`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use spool_broker::QueueName;
use spool_tests::{TestRedis, bins, redis_url, wait_until};

/// Runs `spoolctl` with `args` under the test's prefix.
fn spoolctl(redis: &TestRedis, args: &[&str]) -> Output {
    Command::new(bins::spoolctl())
        .args(["--redis-url", &redis_url(), "--key-prefix", &redis.prefix])
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Whether the registry holds a live worker that reports its task names.
async fn a_worker_reports_its_tasks(redis: &TestRedis) -> bool {
    redis
        .broker
        .workers()
        .await
        .unwrap()
        .iter()
        .any(|r| r.is_live() && !r.tasks.is_empty())
}

#[tokio::test]
async fn inspect_registered_lists_the_live_workers_tasks_and_call_checks_them() {
    let redis = TestRedis::new().await;

    // No worker yet: nothing is registered, and `call` refuses but for
    // --force.
    let out = spoolctl(&redis, &["inspect", "registered"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "no live worker is registered\n");
    let out = spoolctl(&redis, &["call", "spool.ping"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no live worker is registered") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(redis.stats(&QueueName::DEFAULT).await.backlog(), 0);
    let out = spoolctl(&redis, &["call", "spool.ping", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(redis.stats(&QueueName::DEFAULT).await.backlog(), 1);

    // A worker without video: the built-in tasks are served, the video
    // tasks it only leaves for others are not.
    let worker = bins::spawn_spool_worker(&redis_url(), &redis.prefix, "default,analysis");
    wait_until(
        "the worker's registry record with its task names",
        Duration::from_secs(20),
        || a_worker_reports_its_tasks(&redis),
    )
    .await;

    let out = spoolctl(&redis, &["inspect", "registered", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["task"].as_str().unwrap())
        .collect();
    for builtin in ["spool.echo", "spool.fail", "spool.ping", "spool.sleep"] {
        assert!(names.contains(&builtin), "{builtin} missing: {rows}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("video.")),
        "a worker without video serves no video task: {rows}"
    );
    let ping = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "spool.ping")
        .unwrap();
    assert_eq!(ping["queues"], serde_json::json!(["analysis", "default"]));
    assert_eq!(ping["workers"].as_array().unwrap().len(), 1, "{ping}");

    let out = spoolctl(&redis, &["inspect", "registered"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("TASK "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("spool.ping ") && l.ends_with(" analysis,default")),
        "{table}"
    );

    // `workers --json` carries the names too.
    let out = spoolctl(&redis, &["workers", "--json"]);
    let workers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        workers[0]["tasks"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("spool.ping")),
        "{workers}"
    );

    // A name the worker serves is enqueued (and runs); one it does not
    // serve is refused with the names it does, unless --force.
    let out = spoolctl(&redis, &["call", "spool.ping"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = spoolctl(&redis, &["call", "no.such.task", "--max-attempts", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no live worker serves task \"no.such.task\"")
            && stderr.contains("spool.ping")
            && stderr.contains("--force"),
        "{stderr}"
    );
    let out = spoolctl(
        &redis,
        &["call", "no.such.task", "--max-attempts", "1", "--force"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(
        "the two pings run and the forced unknown task dead-lettered",
        Duration::from_secs(20),
        || async {
            let stats = redis.stats(&QueueName::DEFAULT).await;
            stats.completed_total >= 3 && stats.dead == 1
        },
    )
    .await;
    let dead = redis.dead_letters(&QueueName::DEFAULT).await;
    assert_eq!(dead[0].reason, "unknown_task", "{dead:?}");

    // Stopped, the worker's last record is no longer live: `call` refuses
    // again.
    bins::stop_warm(worker);
    let out = spoolctl(&redis, &["call", "spool.ping"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no live worker is registered"),
        "{}",
        text(&out.stderr)
    );
    redis.cleanup().await;
}

/// `spool_cli_common::ConnectionArgs`, in order.
const CONNECTION_FLAGS: [&str; 9] = [
    "--redis-url",
    "--key-prefix",
    "--signing-key-file",
    "--tls-ca-cert-file",
    "--tls-cert-file",
    "--tls-key-file",
    "--store-url",
    "--redis-connect-timeout",
    "--redis-command-timeout",
];

/// The binaries that take the connection flags.
fn daemons() -> [(&'static str, PathBuf); 4] {
    [
        ("spoolctl", bins::spoolctl()),
        (
            "spool-beat",
            bins::workspace_bin("spool-beat", "spool-scheduler"),
        ),
        ("spool-autoscaler", bins::spool_autoscaler()),
        ("spool-worker", bins::spool_worker()),
    ]
}

fn run_ok(bin: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The lines of the help section `heading` (such as `Connection:`).
fn section<'a>(help: &'a str, heading: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_binary_names_itself_and_groups_its_connection_flags() {
    for (name, bin) in daemons() {
        let version = run_ok(&bin, &["--version"]);
        assert_eq!(
            version,
            format!("{name} {}\n", env!("CARGO_PKG_VERSION")),
            "{name}"
        );
        let help = run_ok(&bin, &["--help"]);
        let connection = section(&help, "Connection:");
        for flag in CONNECTION_FLAGS {
            assert!(
                connection.iter().any(|l| l.contains(flag)),
                "{name}: {flag} not under Connection:\n{help}"
            );
        }
        // The binary's own flags stay under Options.
        let options = section(&help, "Options:");
        assert!(
            !options.iter().any(|l| l.contains("--redis-url")),
            "{name}:\n{help}"
        );
        for line in connection
            .iter()
            .filter(|l| l.trim_start().starts_with("--"))
        {
            let flag = line.split_whitespace().next().unwrap();
            assert!(
                CONNECTION_FLAGS.contains(&flag),
                "{name}: {flag}, not a connection flag, under Connection:\n{help}"
            );
        }
    }
    // A subcommand's help too, with its own flags and the global --json
    // under Options.
    let call = run_ok(&bins::spoolctl(), &["call", "--help"]);
    let options = section(&call, "Options:");
    assert!(
        options.iter().any(|l| l.contains("--force"))
            && options.iter().any(|l| l.contains("--json")),
        "{call}"
    );
    assert!(
        section(&call, "Connection:")
            .iter()
            .any(|l| l.contains("--redis-url")),
        "{call}"
    );
}

#[test]
fn spoolctl_prints_completions_and_a_man_page() {
    let ctl = bins::spoolctl();
    let bash = run_ok(&ctl, &["completions", "bash"]);
    assert!(
        bash.contains("_spoolctl()") && bash.contains("complete -F _spoolctl"),
        "{bash}"
    );
    assert!(bash.contains("registered") && bash.contains("--redis-url"));
    // Made from the flags alone: a bad connection setting does not stop it.
    let out = Command::new(&ctl)
        .env("SPOOL_KEY_PREFIX", "two words")
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), bash);
    let zsh = run_ok(&ctl, &["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef spoolctl"), "{zsh}");
    for shell in ["fish", "elvish", "powershell"] {
        assert!(run_ok(&ctl, &["completions", shell]).contains("spoolctl"));
    }
    let out = Command::new(&ctl)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bash"), "{}", text(&out.stderr));

    let man = run_ok(&ctl, &["man"]);
    assert!(man.contains(".TH spoolctl 1"), "{man}");
    assert!(
        man.contains("inspect") && man.contains("completions"),
        "{man}"
    );
    assert!(man.contains("redis\\-url"), "{man}");
}

//! Runs the built `spoolctl` against the real Redis at `SPOOL_REDIS_URL`
//! (else the local one), under a key prefix no other run uses.

use std::hash::{BuildHasher as _, RandomState};
use std::process::{Command, Output};

use serde_json::Value;

/// A `spoolctl` with its own key prefix; purges the routed queues when
/// dropped, so a failing test leaves nothing behind either.
struct Ctl {
    prefix: String,
}

impl Ctl {
    fn new() -> Self {
        let random = RandomState::new().hash_one(std::process::id());
        Self {
            prefix: format!("spoolctl-test-{random:016x}"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_spoolctl"))
            .args(["--key-prefix", &self.prefix])
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("spoolctl runs")
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "spoolctl {args:?} failed ({}); is Redis running? {stderr}",
            out.status
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        for queue in ["default", "analysis", "streaming", "gpu"] {
            let _ = self.run(&["purge", queue, "--yes"]);
        }
    }
}

fn queue<'a>(rows: &'a Value, name: &str) -> &'a Value {
    let rows = rows.as_array().expect("an array of queues");
    rows.iter()
        .find(|r| r["queue"] == name)
        .expect("the queue is listed")
}

#[test]
fn call_queues_and_purge_against_redis() {
    let ctl = Ctl::new();

    let ids = ctl.json(&["call", "spool.ping", "--count", "3", "--json"]);
    let ids = ids.as_array().expect("an array of ids");
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| id.as_str().is_some_and(|s| s.len() == 36)),
        "{ids:?}"
    );

    let rows = ctl.json(&["queues", "--json"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(4), "{rows}");
    let default = queue(&rows, "default");
    assert_eq!(
        (&default["ready"], &default["ready_normal"]),
        (&3.into(), &3.into()),
        "{rows}"
    );
    assert_eq!(queue(&rows, "gpu")["ready"], 0, "{rows}");

    let table = ctl.ok(&["queues"]);
    assert!(table.starts_with("QUEUE "), "{table}");
    assert!(table.lines().any(|l| l.starts_with("default ")), "{table}");

    let refused = ctl.run(&["purge", "default"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let purged = ctl.json(&["purge", "default", "--yes", "--json"]);
    assert_eq!(purged, serde_json::json!({"queue": "default", "purged": 3}));
    let rows = ctl.json(&["queues", "--json"]);
    assert_eq!(queue(&rows, "default")["ready"], 0, "{rows}");
}

#[test]
fn an_unknown_flag_prints_usage_and_fails() {
    let out = Ctl::new().run(&["queues", "--no-such-flag"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--no-such-flag") && stderr.contains("Usage:"),
        "{stderr}"
    );
}

#[test]
fn bad_args_json_fails_naming_the_problem() {
    let out = Ctl::new().run(&["call", "x", "--args", "{bad"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not valid JSON") && stderr.contains("line 1 column 2"),
        "{stderr}"
    );
}

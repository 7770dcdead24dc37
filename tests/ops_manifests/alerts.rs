//! The Prometheus alert rules: complete, on exported metrics, runbook links; promtool.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use crate::containers::duration;
use crate::dashboard::dashboard_targets;
use crate::docs::{anchors, check_runbook_link};
use crate::files::{read, repo, seq, text, yaml_docs};
use crate::metrics::{exported_metrics, metrics_in, unknown_metrics};

fn alert_rules() -> Vec<Yaml> {
    let docs = yaml_docs(&repo().join("ops/prometheus/spool-alerts.yaml"));
    assert_eq!(docs.len(), 1);
    let groups = seq(&docs[0]["groups"]);
    assert!(!groups.is_empty());
    groups
        .iter()
        .flat_map(|g| seq(&g["rules"]).to_vec())
        .collect()
}

#[test]
fn alerts_are_complete_and_query_exported_metrics() {
    let known = exported_metrics();
    let anchors = anchors(&read("docs/operations.md"));
    let rules = alert_rules();
    let mut names = BTreeSet::new();
    let mut used = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("alerting rules only");
        assert!(names.insert(name.to_owned()), "{name} twice");
        let expr = text(&rule["expr"]);
        let unknown = unknown_metrics(&expr, &known);
        assert!(
            unknown.is_empty(),
            "{name} queries {unknown:?}, which no daemon exports"
        );
        used.extend(metrics_in(&expr));
        let for_ = rule["for"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no `for`"));
        duration(for_);
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        assert!(
            rule["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{name}"
        );
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        check_runbook_link(runbook, &anchors, name);
    }
    // What the issue asks to be alerted on.
    for metric in [
        "spool_autoscaler_queue_oldest_age_seconds",
        "spool_dead_letters_total",
        "spool_autoscaler_queue_consumers",
        "spool_gpu_memory_used_bytes",
    ] {
        assert!(used.contains(metric), "no alert on {metric}");
    }
}

/// `PROMTOOL`, else `promtool` on `PATH`.
fn promtool() -> Option<PathBuf> {
    let candidate =
        std::env::var_os("PROMTOOL").map_or_else(|| PathBuf::from("promtool"), PathBuf::from);
    Command::new(&candidate)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| candidate)
}

#[test]
fn promtool_accepts_the_rules_and_their_tests() {
    let Some(promtool) = promtool() else {
        spool_tests::missing_tool(
            "promtool_accepts_the_rules_and_their_tests",
            "promtool",
            "install Debian's prometheus package (`bash ops/scripts/setup.sh` does), or set \
             PROMTOOL",
            "SPOOL_SKIP_PROMTOOL",
        );
        return;
    };
    let dir = repo().join("ops/prometheus");
    for args in [
        ["check", "rules", "spool-alerts.yaml"],
        ["test", "rules", "spool-alerts.test.yaml"],
    ] {
        let output = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The dashboard's queries, with Grafana's variables filled in, as
    // recording rules: promtool parses each.
    let rules: Vec<Json> = dashboard_targets()
        .into_iter()
        // Grafana's label_values() is not PromQL.
        .filter(|(title, _)| !title.starts_with("variable "))
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$queue", ".*");
            serde_json::json!({ "record": format!("spool:dashboard:{i}"), "expr": expr })
        })
        .collect();
    let file =
        std::env::temp_dir().join(format!("spool-dashboard-{:016x}.json", fastrand::u64(..)));
    std::fs::write(
        &file,
        serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] }).to_string(),
    )
    .unwrap();
    let output = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

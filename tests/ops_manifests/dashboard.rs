//! The Grafana dashboard: well formed, and querying exported metrics.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use crate::docs::{anchors, check_runbook_link};
use crate::files::read;
use crate::metrics::{exported_metrics, metrics_in, unknown_metrics};

fn dashboard() -> Json {
    serde_json::from_str(&read("ops/grafana/spool-dashboard.json")).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<Json> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        out.push(panel.clone());
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
    }
    out
}

/// (panel title, expr) of every query, the templating's included.
pub(crate) fn dashboard_targets() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut out: Vec<(String, String)> = panels(&dashboard)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| {
                    (
                        title.clone(),
                        t["expr"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        })
        .collect();
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let query = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .unwrap();
            out.push((format!("variable {}", var["name"]), query.to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_is_well_formed_and_queries_exported_metrics() {
    let dashboard = dashboard();
    let known = exported_metrics();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("the data source is a variable");
    assert_eq!(datasource["query"], "prometheus");
    let source = format!("${{{}}}", datasource["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    let mut cells = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &panel["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
            grid[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos without {k}"))
        });
        assert!(h > 0 && w > 0 && x + w <= 24, "{title}: {grid}");
        for (other, (oh, ow, ox, oy)) in &cells {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        cells.push((title.to_owned(), (h, w, x, y)));
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        assert_eq!(panel["datasource"]["uid"], source.as_str(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], source.as_str(), "{title}");
            assert!(target["refId"].is_string(), "{title}");
        }
    }
    let mut used = BTreeSet::new();
    for (title, expr) in dashboard_targets() {
        assert!(!expr.trim().is_empty(), "{title}: empty query");
        let unknown = unknown_metrics(&expr, &known);
        assert!(
            unknown.is_empty(),
            "{title} queries {unknown:?}, which no daemon exports"
        );
        used.extend(metrics_in(&expr));
    }
    // What the issue asks the dashboard to show.
    for metric in [
        "spool_tasks_total",
        "spool_task_duration_seconds_bucket",
        "spool_tasks_in_flight",
        "spool_autoscaler_queue_backlog",
        "spool_autoscaler_queue_oldest_age_seconds",
        "spool_dead_letters_total",
        "spool_autoscaler_queue_consumers",
        "spool_autoscaler_desired_workers",
        "spool_autoscaler_current_workers",
        "spool_gpu_utilization_ratio",
        "spool_gpu_memory_used_bytes",
        "spool_gpu_encoder_utilization_ratio",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
    let anchors = anchors(&read("docs/operations.md"));
    for link in dashboard["links"].as_array().unwrap() {
        check_runbook_link(link["url"].as_str().unwrap(), &anchors, "dashboard link");
    }
}

//! The metric names the daemons export, and checking queries against them.

use std::collections::BTreeSet;

use spool_autoscaler::AutoscalerMetrics;
use spool_scheduler::beat::BeatMetrics;
use spool_worker_cli::metrics::MetricsHub;

/// Every metric family the three daemons export, from the code.
pub(crate) fn exported_metrics() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = MetricsHub::new(None, None)
        .unwrap()
        .metric_names()
        .into_iter()
        .collect();
    names.extend(AutoscalerMetrics::new().unwrap().metric_names());
    names.extend(BeatMetrics::new(["entry"]).metric_names());
    names
}

/// The `spool_*` metric names a PromQL expression mentions.
pub(crate) fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in expr.match_indices("spool_") {
        let before = expr[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = expr[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// The metrics of `expr` that no daemon exports (histogram series are
/// checked by their family's name).
pub(crate) fn unknown_metrics(expr: &str, known: &BTreeSet<String>) -> Vec<String> {
    metrics_in(expr)
        .into_iter()
        .filter(|name| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            !known.contains(name) && !known.contains(family)
        })
        .collect()
}

#[test]
fn the_exported_metric_names_come_from_the_code() {
    let known = exported_metrics();
    // Families without a series until work happens are listed too.
    for name in [
        "spool_tasks_total",
        "spool_task_duration_seconds",
        "spool_dead_letters_total",
        "spool_gpu_memory_used_bytes",
        "spool_autoscaler_queue_backlog",
        "spool_autoscaler_queue_consumers",
        "spool_autoscaler_queue_dead_letters",
        "spool_beat_leader",
    ] {
        assert!(known.contains(name), "{name} not in {known:?}");
    }
    assert!(unknown_metrics("rate(spool_task_duration_seconds_bucket[5m])", &known).is_empty());
    assert_eq!(
        unknown_metrics("spool_tasks_totals + spool_nope", &known),
        ["spool_nope", "spool_tasks_totals"]
    );
}

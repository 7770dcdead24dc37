//! The terminal drawing of `spoolctl workflow show`: the graph layered by
//! depth (roots on top), a box per node with its state, attempts,
//! duration, progress and parents, arrows between the layers. A layer too
//! wide for the terminal wraps; one with more than [`MAX_BOXES`] nodes
//! shows the first ones and a box counting the rest by state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::workflow::{NodeView, WorkflowReport, short_duration};
use crate::table::{clean, truncate};

/// The inside width of a node's box, in characters.
const INNER: usize = 22;

/// The most boxes drawn for one layer; the rest are counted.
pub(crate) const MAX_BOXES: usize = 12;

/// Draws `report` for a terminal `width` characters wide.
pub(crate) fn draw(report: &WorkflowReport, width: usize) -> String {
    let mut out = String::new();
    let _ = write!(out, "workflow {}  {}", report.id, report.state);
    if let Some(node) = &report.failed_node {
        let _ = write!(out, " at {node}");
        if let Some(reason) = &report.reason {
            let _ = write!(out, ": {}", truncate(&clean(reason), 80));
        }
    }
    out.push('\n');
    let mut facts = Vec::new();
    if let Some(created) = report.created_at {
        facts.push(format!("created {created}"));
    }
    if let Some(seconds) = report.duration_seconds {
        facts.push(short_duration(Duration::from_secs_f64(seconds)));
    }
    let mut counts: Vec<(&str, usize)> = report.counts.iter().map(|(k, v)| (*k, *v)).collect();
    counts.sort_unstable();
    let counted: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    facts.push(format!(
        "{} node{}: {}",
        report.nodes.len(),
        if report.nodes.len() == 1 { "" } else { "s" },
        counted.join(", ")
    ));
    if let Some(deadline) = report.deadline {
        facts.push(format!("deadline {deadline}"));
    }
    if let Some(runs) = report.runs.filter(|&r| r > 1) {
        facts.push(format!("run {runs}"));
    }
    let _ = writeln!(out, "{}  (from {})", facts.join(" · "), report.source);

    let mut layers: BTreeMap<usize, Vec<&NodeView>> = BTreeMap::new();
    for node in &report.nodes {
        layers.entry(node.depth).or_default().push(node);
    }
    // A box is INNER plus a space and a border each side; one space parts
    // two boxes.
    let per_row = ((width + 1) / (INNER + 5)).max(1);
    for (i, nodes) in layers.values().enumerate() {
        if i > 0 {
            arrow(&mut out);
        }
        let mut boxes: Vec<Vec<String>> =
            nodes.iter().take(MAX_BOXES).map(|n| node_box(n)).collect();
        if nodes.len() > MAX_BOXES {
            boxes.truncate(MAX_BOXES - 1);
            boxes.push(rest_box(&nodes[MAX_BOXES - 1..]));
        }
        for row in boxes.chunks(per_row) {
            row_of_boxes(&mut out, row);
        }
    }
    out
}

fn arrow(out: &mut String) {
    let middle = " ".repeat((INNER + 2) / 2);
    let _ = writeln!(out, "{middle}│");
    let _ = writeln!(out, "{middle}▼");
}

/// A node's lines, each at most [`INNER`] characters.
fn node_box(node: &NodeView) -> Vec<String> {
    let mut state = node.state.to_owned();
    if let Some(p) = &node.progress {
        let _ = write!(state, " {:.0}%", p.percent);
        if let Some(stage) = &p.stage {
            let _ = write!(state, " {stage}");
        }
    }
    let mut run = format!(
        "{} attempt{}",
        node.attempts,
        if node.attempts == 1 { "" } else { "s" }
    );
    if let Some(seconds) = node.duration_seconds {
        let _ = write!(
            run,
            " · {}",
            short_duration(Duration::from_secs_f64(seconds))
        );
    }
    let mut lines = vec![node.name.clone(), state, run];
    if !node.parents.is_empty() {
        let parents: Vec<String> = node
            .parents
            .iter()
            .map(|p| match p.policy {
                "fail" => p.name.clone(),
                policy => format!("{} ({policy})", p.name),
            })
            .collect();
        lines.push(format!("← {}", parents.join(", ")));
    }
    lines
}

/// A box counting `nodes` by state.
fn rest_box(nodes: &[&NodeView]) -> Vec<String> {
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for node in nodes {
        *by_state.entry(node.state).or_default() += 1;
    }
    let mut lines = vec![format!("… {} more", nodes.len())];
    lines.extend(by_state.iter().map(|(state, n)| format!("{n} {state}")));
    lines
}

fn row_of_boxes(out: &mut String, boxes: &[Vec<String>]) {
    let height = boxes.iter().map(Vec::len).max().unwrap_or(0);
    let edge = "─".repeat(INNER + 2);
    let tops: Vec<String> = boxes.iter().map(|_| format!("┌{edge}┐")).collect();
    let _ = writeln!(out, "{}", tops.join(" "));
    for line in 0..height {
        let cells: Vec<String> = boxes
            .iter()
            .map(|b| {
                let text = b
                    .get(line)
                    .map_or(String::new(), |t| truncate(&clean(t), INNER));
                format!("│ {text:<INNER$} │")
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join(" "));
    }
    let bottoms: Vec<String> = boxes.iter().map(|_| format!("└{edge}┘")).collect();
    let _ = writeln!(out, "{}", bottoms.join(" "));
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ctl::workflow::{ParentJson, ProgressJson};

    fn node(name: &str, state: &'static str, depth: usize, parents: &[&str]) -> NodeView {
        NodeView {
            name: name.to_owned(),
            task_id: String::new(),
            task: "video.x".to_owned(),
            queue: "default".to_owned(),
            state,
            attempts: 1,
            depth,
            parents: parents
                .iter()
                .map(|p| ParentJson {
                    name: (*p).to_owned(),
                    policy: "fail",
                })
                .collect(),
            queued_at: None,
            started_at: None,
            finished_at: None,
            duration_seconds: Some(1.25),
            progress: None,
            output_summary: None,
            error: None,
        }
    }

    fn report(nodes: Vec<NodeView>) -> WorkflowReport {
        WorkflowReport {
            id: "wf".to_owned(),
            state: "running",
            failed_node: None,
            reason: None,
            source: "redis",
            created_at: None,
            finished_at: None,
            deadline: None,
            duration_seconds: None,
            runs: None,
            counts: HashMap::new(),
            nodes,
        }
    }

    #[test]
    fn layers_stack_with_arrows_between() {
        let mut encode = node("encode", "running", 1, &["probe"]);
        encode.progress = Some(ProgressJson {
            percent: 40.0,
            stage: Some("encode".into()),
            message: None,
        });
        let text = draw(
            &report(vec![
                node("probe", "succeeded", 0, &[]),
                encode,
                node("package", "waiting", 2, &["encode"]),
            ]),
            100,
        );
        let lines: Vec<&str> = text.lines().collect();
        let probe = lines.iter().position(|l| l.contains("│ probe ")).unwrap();
        let encode = lines.iter().position(|l| l.contains("│ encode ")).unwrap();
        let package = lines.iter().position(|l| l.contains("│ package ")).unwrap();
        assert!(probe < encode && encode < package, "{text}");
        assert!(text.contains("│ running 40% encode"), "{text}");
        assert!(text.contains("│ 1 attempt · 1.2s"), "{text}");
        assert!(text.contains("│ ← encode "), "{text}");
        assert_eq!(text.matches('▼').count(), 2, "{text}");
    }

    #[test]
    fn wide_layers_wrap_and_huge_ones_are_counted() {
        let mut nodes = vec![node("split", "succeeded", 0, &[])];
        for i in 0..10_000 {
            let state = if i < 9_990 { "succeeded" } else { "queued" };
            nodes.push(node(&format!("chunk-{i}"), state, 1, &["split"]));
        }
        nodes.push(node("join", "waiting", 2, &["chunk-0"]));
        let text = draw(&report(nodes), 100);
        assert!(text.contains("│ … 9989 more"), "{text}");
        assert!(text.contains("│ 9979 succeeded"), "{text}");
        assert!(text.contains("│ 10 queued"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
        assert!(text.lines().count() < 60, "{text}");
    }
}

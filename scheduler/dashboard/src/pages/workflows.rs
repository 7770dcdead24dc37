//! Workflows: the list from the job store, and one workflow's graph with
//! each node's live state (click a node for its task), its chunk map when
//! its nodes are named `chunk-N`, and cancel and retry.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;
use spool_broker::store::WorkflowRecordStatus;
use spool_broker::workflow::WorkflowId;
use spool_scheduler::ctl::{self, NodeView, WorkflowReport};

use super::layout::{self, Section};
use super::{ActionForm, Done, Fragment, parse};
use crate::auth::check_csrf;
use crate::error::Result;
use crate::state::AppState;

/// The list's filter.
#[derive(Debug, Default, Deserialize)]
pub struct ListForm {
    /// One status: running, succeeded, failed or cancelled.
    #[serde(default)]
    pub status: String,
}

/// `GET /workflows`.
pub async fn list(State(state): State<AppState>, Query(form): Query<ListForm>) -> Result<Markup> {
    let statuses: Vec<WorkflowRecordStatus> = if form.status.trim().is_empty() {
        Vec::new()
    } else {
        vec![parse(&form.status, "workflow status")?]
    };
    let report =
        ctl::workflow_list(state.store()?, &statuses, ctl::DEFAULT_WORKFLOWS_LIMIT * 5).await?;
    let body = html! {
        form.search method="get" action="/workflows" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in ["running", "succeeded", "failed", "cancelled"] {
                        option value=(s) selected[form.status == s] { (s) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if report.rows.is_empty() {
            p.none { "No workflow recorded." }
        } @else {
            table.workflows {
                thead { tr { th { "Workflow" } th { "Status" } th.num { "Nodes settled" } th { "Failed node" } th { "Created" } th { "Finished" } } }
                tbody {
                    @for row in &report.rows {
                        tr {
                            td { a href={ "/workflows/" (row.id) } { code { (row.id) } } }
                            td { (layout::status_badge(row.status)) }
                            td.num { (row.nodes_settled) " / " (row.nodes) }
                            td { (row.failed_node.as_deref().unwrap_or("–")) }
                            td { (layout::time(row.created_at)) }
                            td { (layout::time(row.finished_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &state,
        Section::Workflows,
        "Workflows",
        None,
        &body,
    ))
}

/// `GET /workflows/{id}`.
pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Markup> {
    let id: WorkflowId = parse(&id, "workflow id")?;
    let report = ctl::workflow_show(&state.broker, state.store.as_ref(), id).await?;
    let body = html! {
        (layout::flash(done.done.as_deref()))
        @for f in fragments(&report) {
            section id=(f.id) { (f.html) }
        }
        section.actions {
            @if report.state == "running" {
                (layout::action(&state, &format!("/workflows/{id}/cancel"), "Cancel", "cancel danger", &[], None))
            }
            @if report.state == "failed" || report.state == "cancelled" {
                (layout::action(&state, &format!("/workflows/{id}/retry"), "Retry failed nodes", "retry", &[], None))
            }
        }
    };
    Ok(layout::page(
        &state,
        Section::Workflows,
        &format!("Workflow {id}"),
        Some(&format!("/events/workflows/{id}")),
        &body,
    ))
}

/// The workflow page's live parts.
#[must_use]
pub fn fragments(report: &WorkflowReport) -> Vec<Fragment> {
    vec![
        Fragment {
            id: "wf-summary",
            html: summary(report),
        },
        Fragment {
            id: "chunks",
            html: chunk_map(&report.nodes),
        },
        Fragment {
            id: "graph",
            html: graph(&report.nodes),
        },
    ]
}

fn summary(report: &WorkflowReport) -> Markup {
    let mut counts: Vec<_> = report.counts.iter().collect();
    counts.sort();
    html! {
        dl.stats {
            dt { "State" } dd data-field="wf-state" { (layout::status_badge(report.state)) }
            dt { "Nodes" } dd { @for (state, n) in counts { (layout::status_badge(state)) " " (n) " " } }
            @if let Some(node) = &report.failed_node { dt { "Failed node" } dd { (node) } }
            @if let Some(reason) = &report.reason { dt { "Reason" } dd.error { (reason) } }
            dt { "Created" } dd { (layout::time(report.created_at)) }
            dt { "Finished" } dd { (layout::time(report.finished_at)) }
            dt { "Source" } dd { (report.source) }
        }
    }
}

/// The graph, one column per layer; each node links to its task.
fn graph(nodes: &[NodeView]) -> Markup {
    let mut layers: BTreeMap<usize, Vec<&NodeView>> = BTreeMap::new();
    for node in nodes {
        layers.entry(node.depth).or_default().push(node);
    }
    html! {
        h2 { "Graph" }
        div.graph {
            @for (depth, layer) in &layers {
                div.layer data-depth=(depth) {
                    @for node in layer {
                        a class={ "node state-" (node.state) } href={ "/tasks/" (node.task_id) }
                            data-node=(node.name) data-state=(node.state) {
                            strong { (node.name) }
                            span.task { (node.task) }
                            (layout::status_badge(node.state))
                            @if let Some(p) = &node.progress {
                                (layout::progress_bar(p.percent))
                                @if let Some(stage) = &p.stage { span.stage { (stage) } }
                            }
                            @if !node.parents.is_empty() {
                                span.parents { "← " @for (i, p) in node.parents.iter().enumerate() {
                                    @if i > 0 { ", " } (p.name)
                                } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The chunk number of a node named `chunk-N` (or `chunk_N`, `chunkN`).
#[must_use]
pub fn chunk_number(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("chunk")?;
    let rest = rest.strip_prefix(['-', '_']).unwrap_or(rest);
    rest.parse().ok()
}

/// The chunks of an ingest, in order, each with its state and progress.
fn chunk_map(nodes: &[NodeView]) -> Markup {
    let mut chunks: Vec<(u32, &NodeView)> = nodes
        .iter()
        .filter_map(|n| chunk_number(&n.name).map(|i| (i, n)))
        .collect();
    if chunks.is_empty() {
        return html! {};
    }
    chunks.sort_by_key(|(i, _)| *i);
    let done = chunks
        .iter()
        .filter(|(_, n)| n.state == "succeeded")
        .count();
    html! {
        h2 { "Chunks" }
        p { (done) " of " (chunks.len()) " chunks done." }
        div.chunk-map {
            @for (i, node) in &chunks {
                @let percent = if node.state == "succeeded" { 100.0 } else { node.progress.as_ref().map_or(0.0, |p| p.percent) };
                a class={ "chunk state-" (node.state) } href={ "/tasks/" (node.task_id) }
                    title={ (node.name) ": " (node.state) ", " (format!("{percent:.0}")) "%" }
                    data-chunk=(i) data-state=(node.state) {
                    span.fill style={ "height:" (format!("{:.0}", percent.clamp(0.0, 100.0))) "%" } {}
                    span.label { (i) }
                }
            }
        }
    }
}

/// `POST /workflows/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let id: WorkflowId = parse(&id, "workflow id")?;
    let report = ctl::workflow_cancel(&state.broker, state.store.as_ref(), id).await?;
    tracing::info!(workflow = %id, changed = report.changed, "cancelled from the dashboard");
    let code = if report.changed {
        "cancelled"
    } else {
        "unchanged"
    };
    Ok(super::done(&format!("/workflows/{id}"), code))
}

/// `POST /workflows/{id}/retry`.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let id: WorkflowId = parse(&id, "workflow id")?;
    let report = ctl::workflow_retry(&state.broker, state.store.as_ref(), id).await?;
    tracing::info!(workflow = %id, nodes = report.nodes_reset, "retried from the dashboard");
    let code = if report.changed {
        "wf-retried"
    } else {
        "unchanged"
    };
    Ok(super::done(&format!("/workflows/{id}"), code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_give_their_numbers() {
        assert_eq!(chunk_number("chunk-12"), Some(12));
        assert_eq!(chunk_number("chunk_3"), Some(3));
        assert_eq!(chunk_number("chunk7"), Some(7));
        assert_eq!(chunk_number("chunked"), None);
        assert_eq!(chunk_number("probe"), None);
    }
}

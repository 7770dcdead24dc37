//! A queue: its counts now, its tasks by state from the job store, and
//! pause, resume and purge (with a typed confirmation).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use maud::{Markup, html};
use spool_broker::store::JobQuery;
use spool_broker::{Broker as _, QueueName};
use spool_scheduler::ctl;

use super::layout::{self, Section};
use super::{ActionForm, Done, parse};
use crate::auth::check_csrf;
use crate::error::{Error, Result};
use crate::state::AppState;

/// How many recent tasks the queue page lists.
const RECENT: usize = 20;

/// `GET /queues/{queue}`.
pub async fn page(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Query(done): Query<Done>,
) -> Result<Markup> {
    let queue: QueueName = parse(&queue, "queue name")?;
    let stats = state.broker.stats(&queue).await?;
    let row = ctl::QueueRow::new(queue.clone(), &stats);
    let (counts, recent) = match &state.store {
        Some(store) => {
            let counts = store.count_by_status(Some(&queue)).await?;
            let page = store
                .query(&JobQuery::new().queue(queue.clone()).limit(RECENT))
                .await?;
            (Some(counts), page.records)
        }
        None => (None, Vec::new()),
    };
    let q = queue.as_str();
    let body = html! {
        (layout::flash(done.done.as_deref()))
        section #queue-state {
            dl.stats {
                dt { "State" }
                dd data-field="state" { @if row.paused { (layout::status_badge("paused")) } @else { (layout::status_badge("active")) } }
                dt { "Ready (high / normal / low)" } dd { (row.ready_high) " / " (row.ready_normal) " / " (row.ready_low) }
                dt { "Backlog" } dd data-field="backlog" { (row.backlog) }
                dt { "In flight" } dd { (row.pending) }
                dt { "Delayed (due)" } dd { (row.delayed) " (" (row.delayed_due) ")" }
                dt { "Dead" } dd { a href={ "/queues/" (q) "/dead" } { (row.dead) } }
                dt { "Oldest waiting" } dd { (row.oldest_age.as_deref().unwrap_or("–")) }
                dt { "Consumers" } dd { (row.consumers) }
            }
        }
        section.actions {
            @if row.paused {
                (layout::action(&state, &format!("/queues/{q}/resume"), "Resume", "resume", &[], None))
            } @else {
                (layout::action(&state, &format!("/queues/{q}/pause"), "Pause", "pause", &[], None))
            }
            details.danger {
                summary { "Purge…" }
                p { "Deletes every task of the queue: ready, running, delayed and dead." }
                (layout::action(&state, &format!("/queues/{q}/purge"), "Purge the queue", "purge danger", &[], Some(q)))
            }
        }
        @if let Some(counts) = counts {
            section {
                h2 { "Tasks by state (job store)" }
                p {
                    @for (status, n) in &counts {
                        a href={ "/tasks?queue=" (q) "&status=" (status.as_str()) } {
                            (layout::status_badge(status.as_str())) " " (n)
                        }
                        " "
                    }
                    @if counts.is_empty() { span.none { "No recorded tasks." } }
                }
                h2 { "Recent tasks" }
                (super::search::records_table(&recent))
                p { a href={ "/tasks?queue=" (q) } { "All of this queue's tasks →" } }
            }
        }
    };
    Ok(layout::page(
        &state,
        Section::Overview,
        &format!("Queue {q}"),
        None,
        &body,
    ))
}

/// `POST /queues/{queue}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let queue: QueueName = parse(&queue, "queue name")?;
    ctl::pause(&state.broker, &queue).await?;
    tracing::info!(queue = %queue, "paused from the dashboard");
    Ok(super::done(&format!("/queues/{queue}"), "paused"))
}

/// `POST /queues/{queue}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let queue: QueueName = parse(&queue, "queue name")?;
    ctl::resume(&state.broker, &queue).await?;
    tracing::info!(queue = %queue, "resumed from the dashboard");
    Ok(super::done(&format!("/queues/{queue}"), "resumed"))
}

/// `POST /queues/{queue}/purge`: only with the queue's name typed in
/// `confirm`.
pub async fn purge(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let queue: QueueName = parse(&queue, "queue name")?;
    let confirmed = form.confirm.as_deref().map(str::trim) == Some(queue.as_str());
    if !confirmed {
        return Err(Error::BadInput(format!(
            "type the queue's name, {queue}, to confirm the purge"
        )));
    }
    let report = ctl::purge(&state.broker, &queue, true).await?;
    tracing::info!(queue = %queue, purged = report.purged, "purged from the dashboard");
    Ok(super::done(&format!("/queues/{queue}"), "purged"))
}

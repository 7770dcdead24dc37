//! A queue's dead letters: the reason, the error, the payload; retry one
//! or all, purge with a typed confirmation.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use maud::{Markup, html};
use spool_broker::QueueName;
use spool_scheduler::ctl;

use super::layout::{self, Section};
use super::{ActionForm, Done, parse};
use crate::auth::check_csrf;
use crate::error::{Error, Result};
use crate::state::AppState;

/// How many dead letters the page lists.
const SHOWN: usize = 100;

/// `GET /queues/{queue}/dead`.
pub async fn page(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Query(done): Query<Done>,
) -> Result<Markup> {
    let queue: QueueName = parse(&queue, "queue name")?;
    let report = ctl::dead_list(&state.broker, &queue, SHOWN).await?;
    let q = queue.as_str();
    let body = html! {
        (layout::flash(done.done.as_deref()))
        p { (report.total) " dead letters"
            @if report.total > report.rows.len() as u64 { ", the oldest " (report.rows.len()) " shown" } "." }
        @if !report.rows.is_empty() {
            section.actions {
                (layout::action(&state, &format!("/queues/{q}/dead/retry"), "Retry all", "retry", &[], None))
                details.danger {
                    summary { "Purge…" }
                    p { "Deletes every dead letter of the queue." }
                    (layout::action(&state, &format!("/queues/{q}/dead/purge"), "Purge the dead letters", "purge danger", &[], Some(q)))
                }
            }
            table.dead {
                thead { tr { th { "Task" } th { "Name" } th { "Reason" } th { "Error" } th.num { "Attempts" } th { "Dead since" } th { "Payload" } th {} } }
                tbody {
                    @for row in &report.rows {
                        tr data-entry=(row.entry_id) {
                            td { @match &row.task_id {
                                Some(id) => a href={ "/tasks/" (id) } { code { (super::search::short_id(id)) } },
                                None => span.none { "–" },
                            } }
                            td { (row.name.as_deref().unwrap_or("–")) }
                            td { code { (row.reason) } }
                            td.error { (row.error) }
                            td.num { (row.attempts) }
                            td { (layout::time(Some(row.dead_at))) }
                            td { @match &row.args {
                                Some(args) => details { summary { "arguments" } pre.json { (super::task::pretty(args)) } },
                                None => span.none { "undecodable" },
                            } }
                            td { (layout::action(&state, &format!("/queues/{q}/dead/retry"), "Retry", "retry", &[("entry", row.entry_id.as_str())], None)) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &state,
        Section::Overview,
        &format!("Dead letters of {q}"),
        None,
        &body,
    ))
}

/// `POST /queues/{queue}/dead/retry`: one entry (`entry`), or all.
pub async fn retry(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let queue: QueueName = parse(&queue, "queue name")?;
    let ids: Vec<String> = form.entry.into_iter().collect();
    ctl::check_entry_ids(&ids)?;
    let report =
        ctl::dead_retry_recorded(&state.broker, state.store.as_ref(), &queue, &ids).await?;
    tracing::info!(queue = %queue, requeued = report.requeued, "dead letters retried from the dashboard");
    Ok(super::done(
        &format!("/queues/{queue}/dead"),
        "dead-retried",
    ))
}

/// `POST /queues/{queue}/dead/purge`: only with the queue's name typed in
/// `confirm`.
pub async fn purge(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let queue: QueueName = parse(&queue, "queue name")?;
    if form.confirm.as_deref().map(str::trim) != Some(queue.as_str()) {
        return Err(Error::BadInput(format!(
            "type the queue's name, {queue}, to confirm the purge"
        )));
    }
    let report = ctl::dead_purge(&state.broker, &queue, true).await?;
    tracing::info!(queue = %queue, purged = report.purged, "dead letters purged from the dashboard");
    Ok(super::done(&format!("/queues/{queue}/dead"), "dead-purged"))
}

//! The worker processes: host, queues, slots, the GPU and encoders their
//! probe found, and the tasks they run; live.

use axum::extract::State;
use maud::{Markup, html};
use spool_broker::Timestamp;

use super::layout::{self, Section};
use super::search::short_id;
use crate::state::AppState;

/// `GET /workers`.
pub async fn page(State(state): State<AppState>) -> Markup {
    let body = html! { section #workers { (table(&state)) } };
    layout::page(
        &state,
        Section::Workers,
        "Workers",
        Some("/events/workers"),
        &body,
    )
}

/// The workers' table, as the page and its event stream render it.
#[must_use]
pub fn table(state: &AppState) -> Markup {
    let now = Timestamp::now();
    let mut workers = state.history.workers();
    workers.sort_by(|a, b| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
    html! {
        @if workers.is_empty() {
            p.none { "No worker is registered." }
        } @else {
            table.workers {
                thead { tr {
                    th { "Worker" } th { "Host" } th.num { "Pid" } th { "State" } th { "Queues" }
                    th.num { "Slots" } th { "Running" } th.num { "Processed" } th.num { "Failed" }
                    th { "GPU and encoders" } th { "Seen" }
                } }
                tbody {
                    @for w in &workers {
                        tr data-worker=(w.id) {
                            td { (w.name) }
                            td { (w.host) }
                            td.num { (w.pid) }
                            td { (layout::status_badge(if w.is_live() { w.state.as_str() } else { "gone" })) }
                            td { @for q in &w.queues { a href={ "/queues/" (q.as_str()) } { (q.as_str()) } " " } }
                            td.num data-field="busy" { (w.busy) " / " (w.slots) }
                            td data-field="running" {
                                @for id in &w.running { a href={ "/tasks/" (id) } { code { (short_id(id)) } } " " }
                            }
                            td.num { (w.processed) }
                            td.num { (w.failed) }
                            td.caps {
                                @if w.capabilities.is_empty() { span.none { "not probed" } }
                                @for (k, v) in &w.capabilities { span.cap { (k) "=" (v) } " " }
                            }
                            td { (spool_scheduler::ctl::humantime_rounded(now.saturating_since(w.last_seen))) " ago" }
                        }
                    }
                }
            }
        }
    }
}

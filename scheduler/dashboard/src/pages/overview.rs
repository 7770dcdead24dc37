//! The overview: every queue's depth, rates and oldest age now and over
//! time, the workers, and the failure rate; live.

use axum::extract::{Query, State};
use maud::{Markup, html};
use spool_broker::store::JobStatus;
use spool_scheduler::ctl::QueueRow;

use super::layout::{self, Section};
use super::{Done, Fragment};
use crate::charts::{Chart, Series, line_chart};
use crate::state::AppState;

/// The classes that color the charts' lines, one per queue in turn.
pub const SERIES_CLASSES: [&str; 8] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];

/// `GET /`.
pub async fn page(State(state): State<AppState>, Query(done): Query<Done>) -> Markup {
    let fragments = fragments(&state).await;
    let body = html! {
        (layout::flash(done.done.as_deref()))
        @for f in &fragments {
            section id=(f.id) { (f.html) }
        }
    };
    layout::page(
        &state,
        Section::Overview,
        "Overview",
        Some("/events/overview"),
        &body,
    )
}

/// The overview's live parts, as the page and its event stream render them.
pub async fn fragments(state: &AppState) -> Vec<Fragment> {
    vec![
        Fragment {
            id: "queues",
            html: queues_table(state),
        },
        Fragment {
            id: "charts",
            html: charts(state),
        },
        Fragment {
            id: "fleet",
            html: fleet(state).await,
        },
    ]
}

fn queues_table(state: &AppState) -> Markup {
    let latest = state.history.latest();
    html! {
        h2 { "Queues" }
        @if let Some(error) = state.history.error() {
            p.error { "Cannot read the queues: " (error) }
        }
        @match latest {
            None => p.none { "Reading the queues…" },
            Some(reading) => table.queues {
                thead { tr {
                    th { "Queue" } th.num { "Backlog" } th.num { "In flight" } th.num { "Delayed" }
                    th.num { "Dead" } th.num { "Oldest" } th.num { "Consumers" }
                    th.num { "In/s" } th.num { "Out/s" } th { "State" }
                } }
                tbody {
                    @for row in &reading.rows { (queue_row(row)) }
                }
            },
        }
    }
}

fn queue_row(row: &QueueRow) -> Markup {
    let q = row.queue.as_str();
    html! {
        tr data-queue=(q) {
            td { a href={ "/queues/" (q) } { (q) } }
            @if let Some(error) = &row.error {
                td colspan="9" .error { (error) }
            } @else {
                td.num data-field="backlog" { (row.backlog) }
                td.num data-field="pending" { (row.pending) }
                td.num data-field="delayed" { (row.delayed) }
                td.num data-field="dead" { a href={ "/queues/" (q) "/dead" } { (row.dead) } }
                td.num data-field="oldest" { (row.oldest_age.as_deref().unwrap_or("–")) }
                td.num data-field="consumers" { (row.consumers) @if row.no_consumer { " ⚠" } }
                td.num data-field="rate-in" { (rate(row.rate_in)) }
                td.num data-field="rate-out" { (rate(row.rate_out)) }
                td data-field="state" {
                    @if row.paused { (layout::status_badge("paused")) } @else { (layout::status_badge("active")) }
                }
            }
        }
    }
}

/// A rate as text, one decimal.
#[must_use]
pub fn rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{r:.1}"))
}

fn charts(state: &AppState) -> Markup {
    let readings = state.history.readings();
    let Some(first) = readings.first() else {
        return html! {};
    };
    let t0 = first.at.as_millis();
    let queues: Vec<String> = readings
        .last()
        .map(|r| r.rows.iter().map(|row| row.queue.to_string()).collect())
        .unwrap_or_default();
    let series_of = |value: &dyn Fn(&QueueRow) -> Option<f64>| -> Vec<Series> {
        queues
            .iter()
            .enumerate()
            .map(|(i, queue)| Series {
                label: queue.clone(),
                class: SERIES_CLASSES[i % SERIES_CLASSES.len()],
                points: readings
                    .iter()
                    .map(|r| {
                        let x = (r.at.as_millis().saturating_sub(t0)) as f64 / 1000.0;
                        let y = r.rows.iter().find(|row| row.queue.as_str() == queue);
                        (x, y.and_then(value))
                    })
                    .collect(),
            })
            .collect()
    };
    #[allow(clippy::cast_precision_loss)]
    let depth = series_of(&|row| row.error.is_none().then_some(row.backlog as f64));
    let rate_in = series_of(&|row| row.rate_in);
    let rate_out = series_of(&|row| row.rate_out);
    let oldest = series_of(&|row| {
        row.error
            .is_none()
            .then(|| row.oldest_age_seconds.unwrap_or(0.0))
    });
    let size = (420, 140);
    html! {
        h2 { "Over time" }
        div.charts {
            (line_chart(&Chart { title: "Backlog (tasks)", size, y_range: None, unit: "" }, &depth))
            (line_chart(&Chart { title: "In (tasks/s)", size, y_range: None, unit: "" }, &rate_in))
            (line_chart(&Chart { title: "Out (tasks/s)", size, y_range: None, unit: "" }, &rate_out))
            (line_chart(&Chart { title: "Oldest waiting (s)", size, y_range: None, unit: "s" }, &oldest))
        }
    }
}

async fn fleet(state: &AppState) -> Markup {
    let workers = state.history.workers();
    let live: Vec<_> = workers.iter().filter(|w| w.is_live()).collect();
    let slots: u32 = live.iter().map(|w| w.slots).sum();
    let busy: u32 = live.iter().map(|w| w.busy).sum();
    let processed: u64 = live.iter().map(|w| w.processed).sum();
    let failed: u64 = live.iter().map(|w| w.failed).sum();
    let counts = state.store_counts().await;
    html! {
        h2 { "Fleet" }
        dl.stats {
            dt { "Workers" } dd data-field="workers" { a href="/workers" { (live.len()) " live" } }
            dt { "Slots busy" } dd data-field="busy" { (busy) " / " (slots) }
            dt { "Failure rate (live workers)" }
            dd data-field="failure-rate" { (failure_rate(failed, processed)) " (" (failed) " of " (processed) ")" }
            @if let Some(counts) = &counts {
                @let finished: u64 = counts.iter().filter(|(s, _)| s.is_finished()).map(|(_, n)| n).sum();
                @let failures: u64 = counts.iter()
                    .filter(|(s, _)| matches!(s, JobStatus::Failed | JobStatus::Dead))
                    .map(|(_, n)| n).sum();
                dt { "Failure rate (job store)" }
                dd data-field="store-failure-rate" { (failure_rate(failures, finished)) " (" (failures) " of " (finished) " finished)" }
                dt { "Tasks by status" }
                dd {
                    @for (status, n) in counts {
                        a href={ "/tasks?status=" (status.as_str()) } { (layout::status_badge(status.as_str())) " " (n) }
                        " "
                    }
                }
            }
        }
    }
}

/// `failed` of `total` as a percentage.
#[must_use]
pub fn failure_rate(failed: u64, total: u64) -> String {
    if total == 0 {
        return "–".to_owned();
    }
    #[allow(clippy::cast_precision_loss)]
    let percent = failed as f64 / total as f64 * 100.0;
    format!("{percent:.1}%")
}

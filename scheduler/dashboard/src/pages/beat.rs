//! The beat's periodic entries (from the file `--beat-config` names, the
//! one `spool-beat` runs): schedule, task, queue and the next ticks.

use axum::extract::State;
use maud::{Markup, html};
use spool_broker::Timestamp;

use super::layout::{self, Section};
use crate::state::AppState;

/// How many upcoming ticks each entry shows.
const NEXT_TICKS: usize = 3;

/// `GET /beat`.
pub async fn page(State(state): State<AppState>) -> Markup {
    let now = Timestamp::now();
    let body = match &state.beat {
        None => html! {
            p.none { "Start the dashboard with --beat-config, the file spool-beat runs, to see its entries." }
        },
        Some(config) => html! {
            p { "Lock TTL " (humantime::format_duration(config.lock_ttl))
                ", grace " (humantime::format_duration(config.grace)) "." }
            table.beat {
                thead { tr { th { "Entry" } th { "Task" } th { "Queue" } th { "Schedule" } th { "Catch-up" } th { "Next ticks" } } }
                tbody {
                    @for entry in &config.entries {
                        tr {
                            td { (entry.name) }
                            td { a href={ "/tasks?name=" (super::search::encode(&entry.call.name)) } { (entry.call.name) } }
                            td { a href={ "/queues/" (entry.call.queue.as_str()) } { (entry.call.queue.as_str()) } }
                            td { code { (entry.schedule.to_string()) } }
                            td { (entry.catch_up.to_string()) " within " (humantime::format_duration(entry.catch_up_window)) }
                            td { (next_ticks(&entry.schedule, now)) }
                        }
                    }
                }
            }
        },
    };
    layout::page(&state, Section::Beat, "Beat", None, &body)
}

fn next_ticks(schedule: &spool_scheduler::beat::Schedule, now: Timestamp) -> Markup {
    let mut at = now;
    let mut ticks = Vec::new();
    for _ in 0..NEXT_TICKS {
        match schedule.next_after(at) {
            Some(next) => {
                ticks.push(next);
                at = next;
            }
            None => break,
        }
    }
    html! { @for t in ticks { (layout::time(Some(t))) br; } }
}

//! A task: its arguments, its attempts as a timeline, its progress (stage,
//! fps, ETA) live, its result or error and its worker; revoke and retry.
//! Video tasks add their own views ([`super::video`]).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use maud::{Markup, html};
use spool_broker::store::{JobEvent, JobRecord, JobStatus, JobTransition};
use spool_broker::{Broker as _, Progress, QueueName, TaskId, Timestamp};
use spool_scheduler::ctl;

use super::layout::{self, Section};
use super::{ActionForm, Done, Fragment, parse};
use crate::auth::check_csrf;
use crate::error::{Error, Result};
use crate::state::AppState;

/// How many dead letters a retry looks through for the task's own.
const DEAD_SCAN: usize = 10_000;

/// One attempt on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Its number, from 1.
    pub number: u32,
    /// When it started, when known.
    pub started_at: Option<Timestamp>,
    /// When it ended, when known.
    pub finished_at: Option<Timestamp>,
    /// How it ended (or where it is), when known.
    pub status: Option<JobStatus>,
    /// Its error, when known.
    pub error: Option<String>,
    /// Its worker, as `host:pid`, when known.
    pub worker: Option<String>,
}

/// The task's attempts, oldest first, from its timeline in the job store
/// (`JobStore::events`): each `running` event opens an attempt, and the
/// transition that ends it (retrying, succeeded, failed, dead, revoked,
/// expired) closes it. A store that has no timeline for the task (written
/// before timelines existed) gives the latest attempt from the record, and
/// the earlier ones by number alone.
#[must_use]
pub fn attempt_history(record: &JobRecord, events: &[JobEvent]) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = Vec::new();
    for event in events.iter().filter(|e| e.attempt > 0) {
        let attempt = match attempts.iter_mut().find(|a| a.number == event.attempt) {
            Some(attempt) => attempt,
            None => {
                attempts.push(Attempt {
                    number: event.attempt,
                    started_at: None,
                    finished_at: None,
                    status: None,
                    error: None,
                    worker: None,
                });
                let last = attempts.len() - 1;
                &mut attempts[last]
            }
        };
        let Some(status) = ended_as(event.transition) else {
            if event.transition == JobTransition::Running {
                attempt.started_at = Some(event.at);
                attempt.status.get_or_insert(JobStatus::Running);
                attempt.worker = event
                    .worker
                    .as_ref()
                    .map(|w| format!("{}:{}", w.host, w.pid));
            }
            continue;
        };
        attempt.finished_at = Some(event.at);
        attempt.status = Some(status);
        attempt.error.clone_from(&event.error);
    }
    if !attempts.is_empty() {
        attempts.sort_by_key(|a| a.number);
        // The record's error is whole; the timeline keeps an excerpt.
        if let Some(latest) = attempts.iter_mut().find(|a| a.number == record.attempts)
            && latest.status == Some(record.status)
            && record.error.is_some()
        {
            latest.error.clone_from(&record.error);
        }
        return attempts;
    }
    (1..=record.attempts)
        .map(|number| {
            if number == record.attempts {
                Attempt {
                    number,
                    started_at: record.started_at,
                    finished_at: record.finished_at,
                    status: Some(record.status),
                    error: record.error.clone(),
                    worker: record
                        .worker
                        .as_ref()
                        .map(|w| format!("{}:{}", w.host, w.pid)),
                }
            } else {
                Attempt {
                    number,
                    started_at: None,
                    finished_at: None,
                    status: None,
                    error: None,
                    worker: None,
                }
            }
        })
        .collect()
}

/// The status an attempt ends in with `transition`, if it ends one.
fn ended_as(transition: JobTransition) -> Option<JobStatus> {
    match transition {
        JobTransition::Retrying => Some(JobStatus::Retrying),
        JobTransition::Succeeded => Some(JobStatus::Succeeded),
        JobTransition::Failed => Some(JobStatus::Failed),
        JobTransition::Dead => Some(JobStatus::Dead),
        JobTransition::Revoked => Some(JobStatus::Revoked),
        JobTransition::Expired => Some(JobStatus::Expired),
        _ => None,
    }
}

/// `GET /tasks/{id}`.
pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Markup> {
    let id: TaskId = parse(&id, "task id")?;
    let store = state.store()?;
    let record = store
        .get(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("the job store has no task {id}")))?;
    let workflow = store.workflow_of_task(id).await.ok().flatten();
    let events = store.events(id).await?;
    let fragments = fragments(&record, &events, None);
    let body = html! {
        (layout::flash(done.done.as_deref()))
        @if let Some((wf, node)) = &workflow {
            p { "Node " code { (node.to_string()) } " of workflow "
                a href={ "/workflows/" (wf) } { code { (wf) } } }
        }
        @for f in fragments.iter().filter(|f| f.id != "outcome") {
            section id=(f.id) { (f.html) }
        }
        section.actions {
            @if !record.status.is_finished() {
                (layout::action(&state, &format!("/tasks/{id}/revoke"), "Revoke", "revoke danger", &[], None))
            }
            @if matches!(record.status, JobStatus::Dead) {
                (layout::action(&state, &format!("/tasks/{id}/retry"), "Retry", "retry", &[], None))
            }
        }
        @if record.name == "video.analyze" {
            (super::video::analysis(&record))
        }
        @if record.name == "video.package" {
            (super::video::player(&state, &record))
        }
        section #arguments {
            h2 { "Arguments" }
            @match &record.args {
                Some(args) => pre.json { (pretty(args)) },
                None => p.none { "Not recorded." },
            }
        }
        @for f in fragments.iter().filter(|f| f.id == "outcome") {
            section id=(f.id) { (f.html) }
        }
    };
    Ok(layout::page(
        &state,
        Section::Tasks,
        &format!("Task {}", record.name),
        Some(&format!("/events/tasks/{id}")),
        &body,
    ))
}

/// The task page's live parts, with `progress` (from a live event) over
/// the record's own when it is newer.
#[must_use]
pub fn fragments(
    record: &JobRecord,
    events: &[JobEvent],
    progress: Option<&Progress>,
) -> Vec<Fragment> {
    let progress = progress.or(record.progress.as_ref());
    vec![
        Fragment {
            id: "summary",
            html: summary(record),
        },
        Fragment {
            id: "progress",
            html: progress_view(record, progress),
        },
        Fragment {
            id: "attempts",
            html: timeline(record, events),
        },
        Fragment {
            id: "outcome",
            html: outcome(record),
        },
    ]
}

fn summary(r: &JobRecord) -> Markup {
    html! {
        dl.stats {
            dt { "Id" } dd { code { (r.id) } }
            dt { "Status" } dd data-field="status" { (layout::status_badge(r.status.as_str())) }
            dt { "Queue" } dd { a href={ "/queues/" (r.queue.as_str()) } { (r.queue.as_str()) } " (" (r.priority.as_str()) ")" }
            dt { "Tenant" } dd { (r.tenant.as_deref().unwrap_or("–")) }
            dt { "Attempts" } dd { (r.attempts) }
            dt { "Worker" } dd data-field="worker" {
                @match &r.worker { Some(w) => { (w.host) ":" (w.pid) }, None => "–" }
            }
            dt { "Created" } dd { (layout::time(Some(r.created_at))) }
            dt { "Started" } dd { (layout::time(r.started_at)) }
            dt { "Finished" } dd { (layout::time(r.finished_at)) }
        }
    }
}

fn progress_view(r: &JobRecord, progress: Option<&Progress>) -> Markup {
    html! {
        h2 { "Progress" }
        @match progress {
            None => p.none { @if r.status.is_finished() { "No progress was reported." } @else { "No progress yet." } },
            Some(p) => div.progress data-percent=(format!("{:.1}", p.percent)) {
                (layout::progress_bar(p.percent))
                " " strong data-field="percent" { (format!("{:.1}", p.percent)) "%" }
                @if let Some(stage) = &p.stage { " · stage " span data-field="stage" { (stage) } }
                @if let Some(fps) = p.fps { " · " (format!("{fps:.1}")) " fps" }
                @if let Some(speed) = p.speed { " · " (format!("{speed:.2}")) "×" }
                @if let Some(eta) = p.eta_seconds {
                    " · ETA " (humantime::format_duration(std::time::Duration::from_secs_f32(eta.max(0.0).round())))
                }
                @if let Some(message) = &p.message { p.message { (message) } }
            },
        }
    }
}

fn timeline(r: &JobRecord, events: &[JobEvent]) -> Markup {
    let attempts = attempt_history(r, events);
    html! {
        h2 { "Attempts" }
        ol.timeline {
            li.enqueued { span.when { (layout::time(Some(r.created_at))) } " created" }
            @for a in &attempts {
                li.attempt data-attempt=(a.number) {
                    strong { "Attempt " (a.number) }
                    @match a.status {
                        Some(status) => {
                            " " (layout::status_badge(status.as_str()))
                            @if let Some(w) = &a.worker { " on " code { (w) } }
                            br;
                            span.when { (layout::time(a.started_at)) " → " (layout::time(a.finished_at)) }
                            @if let (Some(s), Some(f)) = (a.started_at, a.finished_at) {
                                " (" (ctl::humantime_rounded(f.saturating_since(s))) ")"
                            }
                            @if let Some(e) = &a.error { p.error { (e) } }
                        },
                        None => { " " span.none { "an earlier run (details not recorded)" } },
                    }
                }
            }
        }
    }
}

fn outcome(r: &JobRecord) -> Markup {
    html! {
        @if let Some(error) = &r.error {
            h2 { "Error" }
            pre.error { (error) }
        }
        @if r.result.is_some() {
            h2 { "Result" }
            @match r.result_json() {
                Ok(Some(json)) => pre.json { (pretty(&json)) },
                _ => p.error { "The result cannot be decoded." },
            }
        }
    }
}

/// JSON, indented.
#[must_use]
pub fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `POST /tasks/{id}/revoke`: as `spoolctl revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let id: TaskId = parse(&id, "task id")?;
    let mut request = ctl::RevokeRequest::new(id);
    let served: Vec<QueueName> = state
        .history
        .workers()
        .into_iter()
        .filter(|r| r.is_live())
        .flat_map(|r| r.queues)
        .collect();
    request.queues = ctl::queues_with_paused(&state.broker, &served).await?;
    ctl::revoke(&state.broker, state.store.as_ref(), &request).await?;
    tracing::info!(task = %id, "revoked from the dashboard");
    Ok(super::done(&format!("/tasks/{id}"), "revoked"))
}

/// `POST /tasks/{id}/retry`: requeues a dead task from its queue's dead
/// letters, as `spoolctl dead retry QUEUE ENTRY` does.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Redirect> {
    check_csrf(&state, &form.csrf)?;
    let id: TaskId = parse(&id, "task id")?;
    let store = state.store()?;
    let record = store
        .get(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("the job store has no task {id}")))?;
    let letters = state.broker.dead_letters(&record.queue, DEAD_SCAN).await?;
    let entry = letters
        .iter()
        .find(|l| l.envelope.as_ref().is_some_and(|e| e.id == id))
        .ok_or_else(|| {
            Error::BadInput(format!(
                "task {id} is not in the dead letters of queue {}: only a dead task can be retried",
                record.queue
            ))
        })?;
    let report = ctl::dead_retry_recorded(
        &state.broker,
        Some(store),
        &record.queue,
        std::slice::from_ref(&entry.entry_id),
    )
    .await?;
    tracing::info!(task = %id, requeued = report.requeued, "retried from the dashboard");
    let code = if report.requeued > 0 {
        "retried"
    } else {
        "unchanged"
    };
    Ok(super::done(&format!("/tasks/{id}"), code))
}

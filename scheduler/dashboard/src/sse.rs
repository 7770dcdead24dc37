//! Live updates over server-sent events. Each page that has live parts
//! names its stream in `<body data-sse=…>`; the stream sends `fragment`
//! events, `{"id": …, "html": …}`, and `app.js` replaces that element's
//! content. The HTML is rendered by the same maud code as the page, so it
//! is escaped the same way, and only fragments that changed are sent.
//!
//! - `/events/overview` and `/events/workers`: on every reading of the
//!   queues (the sampler's interval).
//! - `/events/tasks/{id}`: on the task's own events (progress, finished)
//!   from Redis, and on a slow poll of the job store for the rest
//!   (started, retried).
//! - `/events/workflows/{id}`: on a poll of the workflow's state.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt as _};
use spool_broker::workflow::WorkflowId;
use spool_broker::{Broker as _, Progress, TaskEvent, TaskEvents, TaskId};

use crate::error::Result;
use crate::pages::{self, Fragment, parse};
use crate::state::AppState;

/// How often a task page's stream reads the job store besides the task's
/// events.
pub const TASK_POLL: Duration = Duration::from_secs(1);

/// How often a workflow page's stream reads the workflow.
pub const WORKFLOW_POLL: Duration = Duration::from_secs(1);

/// The fragments that changed since `sent`, as events; `sent` is updated.
fn changed(fragments: Vec<Fragment>, sent: &mut HashMap<&'static str, String>) -> Vec<Event> {
    fragments
        .into_iter()
        .filter_map(|f| {
            let html = f.html.into_string();
            if sent.get(f.id) == Some(&html) {
                return None;
            }
            let data = serde_json::json!({ "id": f.id, "html": html }).to_string();
            sent.insert(f.id, html);
            Some(Event::default().event("fragment").data(data))
        })
        .collect()
}

/// Wraps a stream of event batches as the SSE answer, ending it when the
/// server shuts down.
fn respond(
    mut stopping: tokio::sync::watch::Receiver<bool>,
    batches: impl Stream<Item = Vec<Event>> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stop = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let events = batches
        .flat_map(stream::iter)
        .map(Ok)
        .take_until(Box::pin(stop));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /events/overview`.
pub async fn overview(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let readings = state.history.subscribe();
    let batches = stream::unfold(
        (state.clone(), readings, HashMap::new()),
        |(state, mut readings, mut sent)| async move {
            readings.changed().await.ok()?;
            let events = changed(pages::overview::fragments(&state).await, &mut sent);
            Some((events, (state, readings, sent)))
        },
    );
    respond(state.stopping.clone(), batches)
}

/// `GET /events/workers`.
pub async fn workers(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let readings = state.history.subscribe();
    let batches = stream::unfold(
        (state.clone(), readings, HashMap::new()),
        |(state, mut readings, mut sent)| async move {
            readings.changed().await.ok()?;
            let fragment = Fragment {
                id: "workers",
                html: pages::workers::table(&state),
            };
            let events = changed(vec![fragment], &mut sent);
            Some((events, (state, readings, sent)))
        },
    );
    respond(state.stopping.clone(), batches)
}

/// What a task page's stream keeps between batches.
struct TaskWatch {
    state: AppState,
    id: TaskId,
    events: Option<TaskEvents>,
    progress: Option<(u32, Progress)>,
    sent: HashMap<&'static str, String>,
}

/// `GET /events/tasks/{id}`.
pub async fn task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl axum::response::IntoResponse> {
    let id: TaskId = parse(&id, "task id")?;
    state.store()?;
    // Subscribed before the first read, so nothing falls in between.
    let events = state.broker.task_events(id).await.ok();
    let watch = TaskWatch {
        state: state.clone(),
        id,
        events,
        progress: None,
        sent: HashMap::new(),
    };
    let batches = stream::unfold(watch, |mut w| async move {
        // The first batch is read at once: what changed since the page.
        if !w.sent.is_empty() {
            wait_for_task_news(&mut w).await;
        }
        let store = w.state.store.as_ref()?;
        let record = store.get(w.id).await.ok().flatten()?;
        // A live event's progress is newer than the stored one while it
        // belongs to the latest attempt.
        let live = w
            .progress
            .as_ref()
            .filter(|(attempt, _)| *attempt >= record.attempts && !record.status.is_finished())
            .map(|(_, p)| p.clone());
        let timeline = store.events(w.id).await.unwrap_or_default();
        let fragments = pages::task::fragments(&record, &timeline, live.as_ref());
        let events = changed(fragments, &mut w.sent);
        Some((events, w))
    });
    Ok(respond(state.stopping.clone(), batches))
}

async fn wait_for_task_news(w: &mut TaskWatch) {
    let poll = tokio::time::sleep(TASK_POLL);
    match w.events.as_mut() {
        Some(events) => {
            tokio::select! {
                event = events.next() => match event {
                    Some(TaskEvent::Progress { attempt, progress, .. }) => {
                        w.progress = Some((attempt, progress));
                    }
                    Some(_) => {}
                    // The subscription broke: polling carries on alone.
                    None => w.events = None,
                },
                () = poll => {}
            }
        }
        None => poll.await,
    }
}

/// `GET /events/workflows/{id}`.
pub async fn workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl axum::response::IntoResponse> {
    let id: WorkflowId = parse(&id, "workflow id")?;
    let batches = stream::unfold(
        (state.clone(), HashMap::new(), true),
        move |(state, mut sent, first)| async move {
            if !first {
                tokio::time::sleep(WORKFLOW_POLL).await;
            }
            let events =
                match spool_scheduler::ctl::workflow_show(&state.broker, state.store.as_ref(), id)
                    .await
                {
                    Ok(report) => changed(pages::workflows::fragments(&report), &mut sent),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the workflow");
                        Vec::new()
                    }
                };
            Some((events, (state, sent, false)))
        },
    );
    Ok(respond(state.stopping.clone(), batches))
}

//! Task history and search, from the job store: by id, name, queue,
//! tenant, status and creation time, newest first, a page at a time
//! (`JobStore::query` with its keyset cursor).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use spool_broker::store::{Cursor, JobQuery, JobRecord, JobStatus};
use spool_broker::{QueueName, TaskId, Timestamp};

use super::layout::{self, Section};
use super::parse;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Records per page unless the query asks otherwise.
pub const PAGE_SIZE: usize = 50;

/// The most records one page shows.
pub const MAX_PAGE: usize = 500;

/// The longest name or tenant searched for.
const MAX_TEXT: usize = 200;

/// The search form's fields, all optional and validated.
#[derive(Debug, Default, Deserialize)]
pub struct SearchForm {
    /// A task id: goes straight to its page.
    #[serde(default)]
    pub id: String,
    /// A task name.
    #[serde(default)]
    pub name: String,
    /// A queue.
    #[serde(default)]
    pub queue: String,
    /// A tenant.
    #[serde(default)]
    pub tenant: String,
    /// A status, or several separated by commas.
    #[serde(default)]
    pub status: String,
    /// Created at or after (RFC 3339, or a form's `YYYY-MM-DDTHH:MM`, UTC).
    #[serde(default)]
    pub since: String,
    /// Created before.
    #[serde(default)]
    pub until: String,
    /// The page after this cursor.
    #[serde(default)]
    pub after: String,
    /// Records per page.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl SearchForm {
    /// The job store query this form asks for.
    ///
    /// # Errors
    ///
    /// [`Error::BadInput`] naming the first field that does not validate.
    pub fn to_query(&self) -> Result<JobQuery> {
        let mut query = JobQuery::new().limit(self.limit.unwrap_or(PAGE_SIZE).clamp(1, MAX_PAGE));
        if !self.name.trim().is_empty() {
            query = query.name(bounded(&self.name, "task name")?);
        }
        if !self.tenant.trim().is_empty() {
            query = query.tenant(bounded(&self.tenant, "tenant")?);
        }
        if !self.queue.trim().is_empty() {
            query = query.queue(parse::<QueueName>(&self.queue, "queue name")?);
        }
        let statuses = self
            .status
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse::<JobStatus>(s, "status"))
            .collect::<Result<Vec<_>>>()?;
        if !statuses.is_empty() {
            query = query.status(statuses);
        }
        query = query.created_between(time(&self.since, "since")?, time(&self.until, "until")?);
        if !self.after.trim().is_empty() {
            query = query.after(Some(parse::<Cursor>(&self.after, "page cursor")?));
        }
        Ok(query)
    }

    /// This search's query string with `after` set to `cursor`.
    fn next_href(&self, cursor: &Cursor) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (key, value) in [
            ("name", &self.name),
            ("queue", &self.queue),
            ("tenant", &self.tenant),
            ("status", &self.status),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.trim().is_empty() {
                pairs.push((key, value.trim().to_owned()));
            }
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        pairs.push(("after", cursor.to_string()));
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        format!("/tasks?{}", query.join("&"))
    }
}

fn bounded(text: &str, what: &str) -> Result<String> {
    let text = text.trim();
    if text.len() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(Error::BadInput(format!(
            "the {what} is longer than {MAX_TEXT} bytes or holds control characters"
        )));
    }
    Ok(text.to_owned())
}

/// A time field: empty, RFC 3339, or a form's `YYYY-MM-DDTHH:MM` (UTC).
fn time(text: &str, what: &str) -> Result<Option<Timestamp>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let full = if text.len() == 16 {
        format!("{text}:00Z")
    } else {
        text.to_owned()
    };
    spool_broker::rfc3339::parse(&full)
        .map(Some)
        .map_err(|_| Error::BadInput(format!("{what} is not a time such as 2026-01-31T12:00:00Z")))
}

/// Percent-encodes `text` for a query string.
#[must_use]
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /tasks`: the search form and one page of results.
pub async fn page(
    State(state): State<AppState>,
    Query(form): Query<SearchForm>,
) -> Result<Response> {
    if !form.id.trim().is_empty() {
        let id: TaskId = parse(&form.id, "task id")?;
        return Ok(Redirect::to(&format!("/tasks/{id}")).into_response());
    }
    let query = form.to_query()?;
    let store = state.store()?;
    let results = store.query(&query).await?;
    let statuses = JobStatus::ALL;
    let body = html! {
        form.search method="get" action="/tasks" {
            label { "Id " input type="text" name="id" size="38" placeholder="0193a7c4-…" value=(form.id); }
            label { "Name " input type="text" name="name" value=(form.name) maxlength="200"; }
            label { "Queue " input type="text" name="queue" value=(form.queue) maxlength="64"; }
            label { "Tenant " input type="text" name="tenant" value=(form.tenant) maxlength="200"; }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in statuses {
                        option value=(s.as_str()) selected[form.status == s.as_str()] { (s.as_str()) }
                    }
                    @if !form.status.is_empty() && !statuses.iter().any(|s| s.as_str() == form.status) {
                        option value=(form.status) selected { (form.status) }
                    }
                }
            }
            label { "Created since " input type="text" name="since" value=(form.since) placeholder="2026-01-31T12:00:00Z"; }
            label { "until " input type="text" name="until" value=(form.until) placeholder="(now)"; }
            button type="submit" { "Search" }
        }
        (records_table(&results.records))
        @if let Some(cursor) = &results.next {
            p { a.next href=(form.next_href(cursor)) { "Next page →" } }
        }
    };
    Ok(layout::page(&state, Section::Tasks, "Tasks", None, &body).into_response())
}

/// A table of records, linking each to its page.
#[must_use]
pub fn records_table(records: &[JobRecord]) -> Markup {
    html! {
        @if records.is_empty() {
            p.none { "No task matches." }
        } @else {
            table.records {
                thead { tr {
                    th { "Task" } th { "Name" } th { "Queue" } th { "Tenant" } th { "Status" }
                    th.num { "Attempts" } th { "Progress" } th { "Created" }
                } }
                tbody {
                    @for r in records {
                        tr data-task=(r.id) {
                            td { a href={ "/tasks/" (r.id) } { code { (short_id(&r.id)) } } }
                            td { (r.name) }
                            td { a href={ "/queues/" (r.queue.as_str()) } { (r.queue.as_str()) } }
                            td { (r.tenant.as_deref().unwrap_or("–")) }
                            td { (layout::status_badge(r.status.as_str())) }
                            td.num { (r.attempts) }
                            td { @if let Some(p) = &r.progress { (layout::progress_bar(p.percent)) } }
                            td { (layout::time(Some(r.created_at))) }
                        }
                    }
                }
            }
        }
    }
}

/// The first group of a task id's digits, enough to tell tasks apart on
/// a page.
#[must_use]
pub fn short_id(id: &TaskId) -> String {
    let text = id.to_string();
    text.split('-').next().unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_validated() {
        let bad_status = SearchForm {
            status: "running,nope".into(),
            ..SearchForm::default()
        };
        assert!(bad_status.to_query().is_err());
        let bad_time = SearchForm {
            since: "yesterday".into(),
            ..SearchForm::default()
        };
        assert!(bad_time.to_query().is_err());
        let bad_queue = SearchForm {
            queue: "no spaces".into(),
            ..SearchForm::default()
        };
        assert!(bad_queue.to_query().is_err());
        let good = SearchForm {
            status: "failed, dead".into(),
            since: "2026-01-31T12:00".into(),
            queue: "gpu".into(),
            limit: Some(100_000),
            ..SearchForm::default()
        };
        let query = good.to_query().unwrap();
        assert_eq!(query.status.map(|s| s.len()), Some(2));
        assert_eq!(query.limit, MAX_PAGE);
        assert!(query.since.is_some());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("a b&c=<d>"), "a%20b%26c%3D%3Cd%3E");
    }
}

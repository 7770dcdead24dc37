//! The page shell every page shares: navigation, the flash line after an
//! action, and the pieces of forms (the CSRF field, confirmations).

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use spool_broker::Timestamp;

use crate::state::AppState;

/// The navigation's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Queues, workers and failures at a glance.
    Overview,
    /// Task history and search.
    Tasks,
    /// The worker processes.
    Workers,
    /// Workflows.
    Workflows,
    /// The beat's periodic entries.
    Beat,
    /// No section (errors).
    None,
}

/// A whole page: `title`, the navigation with `section` current, and
/// `body`. `sse`, when given, is the event stream the page's live parts
/// listen to.
#[must_use]
pub fn page(
    state: &AppState,
    section: Section,
    title: &str,
    sse: Option<&str>,
    body: &Markup,
) -> Markup {
    let nav = [
        (Section::Overview, "/", "Overview"),
        (Section::Tasks, "/tasks", "Tasks"),
        (Section::Workers, "/workers", "Workers"),
        (Section::Workflows, "/workflows", "Workflows"),
        (Section::Beat, "/beat", "Beat"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Spool" }
                link rel="stylesheet" href=(crate::assets::url("app.css"));
                script src=(crate::assets::url("app.js")) defer {}
            }
            body data-sse=[sse] {
                header.top {
                    a.brand href="/" { "Spool" }
                    nav {
                        @for (s, href, label) in nav {
                            a href=(href) class=[(s == section).then_some("current")] { (label) }
                        }
                    }
                    @if state.config.read_only {
                        span.badge.readonly title="started with --read-only: no actions" { "read-only" }
                    }
                    span #live.live title="live updates" { "●" }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page for an error, standalone (no state needed).
#[must_use]
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (status.as_u16()) " · Spool" }
                link rel="stylesheet" href=(crate::assets::url("app.css"));
            }
            body {
                header.top { a.brand href="/" { "Spool" } }
                main {
                    h1 { (status.canonical_reason().unwrap_or("Error")) }
                    p.error { (message) }
                    p { a href="/" { "Back to the overview" } }
                }
            }
        }
    }
}

/// The line shown after an action redirected back here (`?done=CODE`):
/// only known codes show, in fixed words.
#[must_use]
pub fn flash(done: Option<&str>) -> Markup {
    let text = match done {
        Some("paused") => "The queue is paused: workers stop fetching it.",
        Some("resumed") => "The queue is resumed.",
        Some("purged") => "The queue is purged.",
        Some("dead-retried") => "The dead letters are requeued.",
        Some("dead-purged") => "The dead letters are deleted.",
        Some("revoked") => "The task is revoked: workers skip it, or cancel it if it runs.",
        Some("retried") => "The task is requeued.",
        Some("cancelled") => "The workflow is cancelled.",
        Some("wf-retried") => "The workflow's failed nodes run again.",
        Some("unchanged") => "Nothing changed: the action did not apply.",
        _ => return html! {},
    };
    html! { p.flash role="status" { (text) } }
}

/// A POST form with one button and the CSRF token; none in read-only
/// mode. `confirm` adds a text field the user must fill with that value.
#[must_use]
pub fn action(
    state: &AppState,
    href: &str,
    label: &str,
    class: &str,
    extra: &[(&str, &str)],
    confirm: Option<&str>,
) -> Markup {
    if state.config.read_only {
        return html! {};
    }
    html! {
        form.action method="post" action=(href) {
            input type="hidden" name=(crate::auth::CSRF_FIELD) value=(state.csrf.expose());
            @for (name, value) in extra {
                input type="hidden" name=(name) value=(value);
            }
            @if let Some(expected) = confirm {
                label {
                    "Type " code { (expected) } " to confirm: "
                    input type="text" name="confirm" required autocomplete="off"
                        pattern=(pattern_literal(expected)) data-confirm=(expected);
                }
                " "
            }
            button type="submit" class=(class) { (label) }
        }
    }
}

/// `text` as an HTML `pattern` matching only itself.
fn pattern_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A time as RFC 3339 UTC, with the age after it when recent.
#[must_use]
pub fn time(at: Option<Timestamp>) -> Markup {
    match at {
        Some(at) => {
            let text = at.to_string();
            html! { time datetime=(text) { (text) } }
        }
        None => html! { span.none { "–" } },
    }
}

/// A status word as a colored badge.
#[must_use]
pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "status status-" (status) } { (status) } }
}

/// A progress bar for `percent` (0 to 100).
#[must_use]
pub fn progress_bar(percent: f32) -> Markup {
    let clamped = percent.clamp(0.0, 100.0);
    html! {
        span.bar title={ (format!("{clamped:.1}")) "%" } {
            span.fill style={ "width:" (format!("{clamped:.1}")) "%" } {}
        }
    }
}

//! `top`'s four tables: their columns (and the order they are dropped
//! in, see `render.rs`) and cells.

use std::time::Duration;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;

use super::columns::{Column, sparkline};
use super::render::section;
use super::{RunningTask, TopFrame};
use crate::ctl::queues::humantime_rounded;
use crate::table::clean;

/// What the text shows for a value that is not known.
const NONE: &str = "-";

pub(super) fn queues(frame: &TopFrame, selected: Option<usize>, area: Rect, buffer: &mut Buffer) {
    const COLUMNS: [Column; 12] = [
        Column::flex("QUEUE", 0, 16, 5),
        Column::number("BACKLOG", 0),
        Column::number("IN-FLIGHT", 0),
        Column::number("DELAYED", 7),
        Column::number("DEAD", 0),
        Column::number("OLDEST", 6),
        Column::number("CONSUMERS", 8),
        Column::number("IN/S", 2),
        Column::flex("IN~", 4, 12, 6).cut_start(),
        Column::number("OUT/S", 3),
        Column::flex("OUT~", 5, 12, 6).cut_start(),
        Column::text("PAUSED", 1),
    ];
    let rate = |r: Option<f64>| r.map_or_else(|| NONE.to_owned(), |r| format!("{r:.1}"));
    let rows = frame
        .queues
        .rows
        .iter()
        .map(|q| {
            let history = frame.history.get(&q.queue);
            let spark =
                |values: Option<&Vec<f64>>| values.map(|v| sparkline(v)).unwrap_or_default();
            // Why, in `queues` and the JSON: a long error would push the
            // other columns out.
            if q.error.is_some() {
                let mut row = vec![clean(q.queue.as_str())];
                row.extend(std::iter::repeat_n(NONE.to_owned(), 10));
                row.push("ERROR".to_owned());
                return row;
            }
            vec![
                clean(q.queue.as_str()),
                q.backlog.to_string(),
                q.pending.to_string(),
                q.delayed.to_string(),
                q.dead.to_string(),
                q.oldest_age.clone().unwrap_or_else(|| NONE.to_owned()),
                q.consumers.to_string(),
                rate(q.rate_in),
                spark(history.map(|h| &h.rate_in)),
                rate(q.rate_out),
                spark(history.map(|h| &h.rate_out)),
                if q.paused { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    let unreadable = frame
        .queues
        .rows
        .iter()
        .filter(|q| q.error.is_some())
        .count();
    let title = match unreadable {
        0 => format!("Queues ({})", frame.queues.rows.len()),
        n => format!(
            "Queues ({}, {n} unreadable: `spoolctl queues` says why)",
            frame.queues.rows.len()
        ),
    };
    section(title, &COLUMNS, rows, "no queues", selected, area, buffer);
}

pub(super) fn workers(frame: &TopFrame, area: Rect, buffer: &mut Buffer) {
    const COLUMNS: [Column; 9] = [
        Column::flex("HOST", 0, 16, 6),
        Column::number("PID", 5),
        Column::flex("QUEUES", 6, 20, 6),
        Column::number("BUSY", 0),
        Column::number("RUNNING", 4),
        Column::number("PROCESSED", 3),
        Column::number("FAILED", 2),
        Column::number("AGE", 7),
        Column::text("STATE", 1),
    ];
    let rows = frame
        .workers
        .rows
        .iter()
        .map(|w| {
            let queues: Vec<&str> = w.queues.iter().map(|q| q.as_str()).collect();
            vec![
                clean(&w.host),
                w.pid.to_string(),
                clean(&queues.join(",")),
                format!("{}/{}", w.busy, w.slots),
                w.running.to_string(),
                w.processed.to_string(),
                w.failed.to_string(),
                humantime_rounded(Duration::from_secs(w.age_seconds)),
                w.state.as_str().to_owned(),
            ]
        })
        .collect();
    let title = format!("Workers ({})", frame.workers.rows.len());
    section(
        title,
        &COLUMNS,
        rows,
        "no workers in the registry",
        None,
        area,
        buffer,
    );
}

/// A progress bar of `width` cells.
fn bar(percent: f32, width: usize) -> String {
    // 0..=width by the clamp: the cast cannot overflow.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let done = ((percent.clamp(0.0, 100.0) / 100.0) * width as f32).round() as usize;
    "█".repeat(done) + &"░".repeat(width - done.min(width))
}

/// A duration in whole seconds, humantime, or `-`.
fn seconds_text(seconds: Option<f64>) -> String {
    seconds.filter(|s| s.is_finite()).map_or_else(
        || NONE.to_owned(),
        // Whole, non-negative seconds: the cast only drops the fraction.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        |s| humantime::format_duration(Duration::from_secs(s.max(0.0).round() as u64)).to_string(),
    )
}

/// The cells of a running task.
fn running_row(frame: &TopFrame, task: &RunningTask) -> Vec<String> {
    let progress = task.progress.as_ref();
    let elapsed = task
        .started_at
        .map(|s| frame.at.saturating_since(s).as_secs_f64());
    vec![
        task.id.to_string(),
        task.name.as_deref().map_or_else(|| "?".to_owned(), clean),
        task.queue
            .as_ref()
            .map_or_else(|| NONE.to_owned(), |q| clean(q.as_str())),
        task.worker
            .as_deref()
            .map_or_else(|| NONE.to_owned(), clean),
        progress.map_or_else(|| NONE.to_owned(), |p| format!("{:.0}%", p.percent)),
        progress.map_or_else(String::new, |p| bar(p.percent, 10)),
        progress
            .and_then(|p| p.stage.as_deref())
            .map_or_else(|| NONE.to_owned(), clean),
        progress
            .and_then(|p| p.fps)
            .map_or_else(|| NONE.to_owned(), |f| format!("{f:.0}")),
        progress
            .and_then(|p| p.speed)
            .map_or_else(|| NONE.to_owned(), |s| format!("{s:.1}x")),
        seconds_text(elapsed),
        seconds_text(task.eta_seconds),
    ]
}

pub(super) fn running(frame: &TopFrame, selected: Option<usize>, area: Rect, buffer: &mut Buffer) {
    const COLUMNS: [Column; 11] = [
        Column::flex("ID", 0, 13, 9).cut_start(),
        Column::flex("NAME", 0, 20, 8),
        Column::text("QUEUE", 6),
        Column::flex("WORKER", 7, 16, 8),
        Column::number("PROGRESS", 0),
        Column::text("BAR", 9),
        Column::flex("STAGE", 3, 16, 8),
        Column::number("FPS", 4),
        Column::number("SPEED", 5),
        Column::number("ELAPSED", 8),
        Column::number("ETA", 0),
    ];
    let rows = frame
        .running
        .iter()
        .map(|t| running_row(frame, t))
        .collect();
    let title = format!("Running ({})", frame.running.len());
    section(
        title,
        &COLUMNS,
        rows,
        "no task is running",
        selected,
        area,
        buffer,
    );
}

pub(super) fn failures(frame: &TopFrame, selected: Option<usize>, area: Rect, buffer: &mut Buffer) {
    const COLUMNS: [Column; 7] = [
        Column::number("WHEN", 0),
        Column::flex("NAME", 0, 20, 8),
        Column::flex("ID", 4, 13, 9).cut_start(),
        Column::text("QUEUE", 3),
        Column::text("STATUS", 0),
        Column::number("TRIES", 2),
        Column::flex("ERROR", 0, 40, 10),
    ];
    let rows = frame
        .failures
        .iter()
        .map(|f| {
            let ago = humantime_rounded(Duration::from_secs(
                frame.at.saturating_since(f.at).as_secs(),
            ));
            vec![
                format!("{ago} ago"),
                f.name
                    .as_deref()
                    .map_or_else(|| "(undecodable)".to_owned(), clean),
                f.id.map_or_else(|| NONE.to_owned(), |id| id.to_string()),
                clean(f.queue.as_str()),
                clean(&f.status),
                f.attempts.to_string(),
                clean(&f.error),
            ]
        })
        .collect();
    let title = format!("Recent failures ({})", frame.failures.len());
    section(title, &COLUMNS, rows, "no failures", selected, area, buffer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_durations() {
        assert_eq!(bar(42.0, 10), "████░░░░░░");
        assert_eq!(bar(150.0, 4), "████");
        assert_eq!(seconds_text(Some(61.4)), "1m 1s");
        assert_eq!(seconds_text(None), "-");
    }
}

//! Drawing a [`TopFrame`]: a pure function of the frame, the area and the
//! interactive [`View`], on ratatui widgets. `--once` draws into a
//! [`Buffer`] and prints it as plain text ([`render_text`]); the
//! interactive mode draws the same into the terminal.
//!
//! Every table fits the width (see `columns.rs` for how). Below about 80
//! columns, columns go in this order, the first first:
//! - queues: CONSUMERS, DELAYED, OLDEST, OUT~ and IN~ (the sparklines),
//!   OUT/S, IN/S, PAUSED; QUEUE, BACKLOG, IN-FLIGHT and DEAD stay;
//! - workers: AGE, QUEUES, PID, RUNNING, PROCESSED, FAILED, STATE; HOST
//!   and BUSY stay;
//! - running tasks: BAR, ELAPSED, WORKER, QUEUE, SPEED, FPS, STAGE; ID
//!   (cut to its end), NAME, PROGRESS and ETA stay;
//! - failures: ID, QUEUE, TRIES; WHEN, NAME, STATUS and ERROR stay.
//!
//! Names, stages and errors are cut with `…` before any column goes, and
//! again after; lines never wrap.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Paragraph, Row, StatefulWidget, Table, TableState, Widget,
};

use super::TopFrame;
use super::columns::{Column, SPACING, cut, fit, text_width};
use super::tables::{failures, queues, running, workers};
use crate::table::clean;

/// The table of a [`View`] that has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    /// The queues: pause and resume act on the selected one.
    Queues,
    /// The running tasks: detail and revoke act on the selected one.
    #[default]
    Running,
    /// The recent failures: detail acts on the selected one.
    Failures,
}

impl Focus {
    /// The next table, for Tab.
    #[must_use]
    pub fn next(self) -> Self {
        match self {
            Self::Queues => Self::Running,
            Self::Running => Self::Failures,
            Self::Failures => Self::Queues,
        }
    }
}

/// What the interactive mode adds to a frame; the default is `--once`'s
/// (no selection, no footer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// Whether it is the interactive mode: rows are selected and a footer
    /// shows the keys.
    pub interactive: bool,
    /// The table the keys act on.
    pub focus: Focus,
    /// The selected row of that table.
    pub selected: usize,
    /// The detail pane: its title and lines, shown in place of the
    /// running tasks and failures.
    pub detail: Option<(String, Vec<String>)>,
    /// A message or a question for the footer, in place of the keys.
    pub footer: Option<String>,
}

/// The keys, in the interactive mode's footer.
pub const KEYS_HELP: &str =
    "↑↓ select  Tab table  Enter detail  p pause/resume  x revoke  Esc back  q quit";

/// How many rows `frame` takes drawn with `view`, nothing cut.
#[must_use]
pub fn frame_height(frame: &TopFrame, view: &View) -> u16 {
    let sections = section_heights(frame, view);
    let footer = u16::from(view.interactive);
    1 + sections.iter().sum::<u16>() + footer
}

/// The rows of each section: a title, a header and the rows (or one line
/// saying there are none).
fn section_heights(frame: &TopFrame, view: &View) -> Vec<u16> {
    let rows = |n: usize| 2 + u16::try_from(n.max(1)).unwrap_or(u16::MAX - 2);
    let mut heights = vec![
        rows(frame.queues.rows.len()),
        rows(frame.workers.rows.len()),
    ];
    match &view.detail {
        Some((_, lines)) => heights.push(1 + u16::try_from(lines.len()).unwrap_or(u16::MAX - 1)),
        None => {
            heights.push(rows(frame.running.len()));
            heights.push(rows(frame.failures.len()));
        }
    }
    heights
}

/// The frame as plain text, `width` columns wide: what `top --once`
/// prints. No line is wider than `width` cells, and none ends in spaces.
#[must_use]
pub fn render_text(frame: &TopFrame, width: u16) -> String {
    let view = View::default();
    let area = Rect::new(0, 0, width.max(1), frame_height(frame, &view));
    let mut buffer = Buffer::empty(area);
    draw(frame, &view, area, &mut buffer);
    buffer_text(&buffer)
}

/// The buffer's symbols, a line per row, trailing spaces trimmed.
fn buffer_text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut text = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        let mut skip = 0;
        for x in area.left()..area.right() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let symbol = buffer[(x, y)].symbol();
            skip = text_width(symbol).saturating_sub(1);
            line.push_str(symbol);
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Draws `frame` into `area` of `buffer`, as `view` says.
pub fn draw(frame: &TopFrame, view: &View, area: Rect, buffer: &mut Buffer) {
    let heights = section_heights(frame, view);
    let mut constraints = vec![Constraint::Length(1)];
    for (i, height) in heights.iter().enumerate() {
        // On a terminal too short for everything, the running tasks (or
        // the detail) give way, keeping a few rows.
        constraints.push(if view.interactive && i == 2 {
            Constraint::Min(3.min(*height))
        } else {
            Constraint::Length(*height)
        });
    }
    if view.interactive {
        constraints.push(Constraint::Length(1));
    }
    let areas = Layout::vertical(constraints).split(area);
    header(frame).render(areas[0], buffer);
    let focus = |focus: Focus| (view.interactive && view.focus == focus).then_some(view.selected);
    queues(frame, focus(Focus::Queues), areas[1], buffer);
    workers(frame, areas[2], buffer);
    match &view.detail {
        Some((title, lines)) => detail(title, lines, areas[3], buffer),
        None => {
            running(frame, focus(Focus::Running), areas[3], buffer);
            failures(frame, focus(Focus::Failures), areas[4], buffer);
        }
    }
    if view.interactive {
        let footer = view.footer.as_deref().unwrap_or(KEYS_HELP);
        Paragraph::new(
            Line::from(clean(footer)).style(Style::new().add_modifier(Modifier::REVERSED)),
        )
        .render(areas[areas.len() - 1], buffer);
    }
}

/// The first line: when, how often, and the counts.
fn header(frame: &TopFrame) -> Paragraph<'static> {
    let busy: u32 = frame.workers.rows.iter().map(|w| w.busy).sum();
    let slots: u32 = frame.workers.rows.iter().map(|w| w.slots).sum();
    let mut spans = vec![
        Span::styled("spoolctl top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {}  every {}  {} running  {}/{} slots busy",
            frame.at,
            humantime::format_duration(frame.interval),
            frame.running.len(),
            busy,
            slots
        )),
    ];
    if !frame.store {
        spans.push(Span::raw(
            "  (no job store: names and progress need --store-url)",
        ));
    }
    Paragraph::new(Line::from(spans))
}

/// A section: a titled rule, then the table or a line saying it is empty.
pub(super) fn section(
    title: String,
    columns: &[Column],
    rows: Vec<Vec<String>>,
    empty: &str,
    selected: Option<usize>,
    area: Rect,
    buffer: &mut Buffer,
) {
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(" {title} "),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let inner = block.inner(area);
    block.render(area, buffer);
    if rows.is_empty() {
        Paragraph::new(empty.to_owned()).render(inner, buffer);
        return;
    }
    let widths = fit(columns, &rows, inner.width);
    let kept: Vec<(usize, u16)> = widths
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.map(|w| (i, w)))
        .collect();
    let line = |text: &str, i: usize, width: u16| {
        Cell::from(Line::from(cut(text, width, columns[i].cut)).alignment(columns[i].align))
    };
    let header = Row::new(kept.iter().map(|&(i, w)| line(columns[i].header, i, w)))
        .style(Style::new().add_modifier(Modifier::BOLD));
    let body = rows.iter().map(|row| {
        Row::new(
            kept.iter()
                .map(|&(i, w)| line(row.get(i).map_or("", String::as_str), i, w)),
        )
    });
    let table = Table::new(body, kept.iter().map(|&(_, w)| Constraint::Length(w)))
        .header(header)
        .column_spacing(SPACING)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(selected.map(|s| s.min(rows.len() - 1)));
    StatefulWidget::render(table, inner, buffer, &mut state);
}

fn detail(title: &str, lines: &[String], area: Rect, buffer: &mut Buffer) {
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        format!(" {} ", clean(title)),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let text: Vec<Line<'_>> = lines.iter().map(|l| Line::from(clean(l))).collect();
    Paragraph::new(text).block(block).render(area, buffer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::top::tests::frame;

    fn assert_fits(text: &str, width: usize) {
        for line in text.lines() {
            assert!(
                line.chars().count() <= width,
                "{} > {width}: {line:?}\n{text}",
                line.chars().count()
            );
        }
    }

    #[tokio::test]
    async fn wide_frames_show_every_column() {
        let text = render_text(&frame().await, 200);
        assert_fits(&text, 200);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("spoolctl top  2023-11-14T22:13:20.000Z  every 1s 500ms"),
            "{text}"
        );
        for header in [
            "CONSUMERS",
            "IN~",
            "OUT~",
            "PROCESSED",
            "ELAPSED",
            "SPEED",
            "TRIES",
            "ERROR",
        ] {
            assert!(text.contains(header), "{header}: {text}");
        }
        let default = lines.iter().find(|l| l.starts_with("default")).unwrap();
        assert!(
            default.contains("1234") && default.contains("12.5") && default.contains("▁▄█"),
            "{default}"
        );
        let task = lines
            .iter()
            .find(|l| l.contains("video.transcode"))
            .unwrap();
        for fact in [
            "0193a7c4-5e1f-7d2a-9b3c-4d5e6f708192",
            "42%",
            "████",
            "encode libx264",
            "118",
            "3.9x",
            "30s",
            "41s",
        ] {
            assert!(task.contains(fact), "{fact}: {task}");
        }
        assert!(
            text.contains("2m ago") && text.contains("No such file or directory"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn narrow_frames_drop_columns_in_order_and_never_wrap() {
        let frame = frame().await;
        let full = render_text(&frame, 200);
        for width in [20, 40, 60, 79] {
            let text = render_text(&frame, width);
            assert_fits(&text, usize::from(width));
            assert_eq!(
                text.lines().count(),
                full.lines().count(),
                "nothing wraps at {width}"
            );
        }
        let text = render_text(&frame, 60);
        assert!(
            !text.contains("CONSUMERS") && !text.contains("ELAPSED"),
            "{text}"
        );
        let task = text
            .lines()
            .find(|l| l.contains("video.transcode"))
            .unwrap();
        assert!(
            task.contains("6f708192") && task.contains("42%") && task.contains("41s"),
            "{task}"
        );
        assert!(text.contains("BACKLOG") && text.contains("1234"), "{text}");
        assert!(text.contains("dead") && text.contains("No such"), "{text}");
    }

    #[tokio::test]
    async fn the_interactive_view_selects_and_shows_a_detail_pane() {
        let frame = frame().await;
        let view = View {
            interactive: true,
            detail: Some((
                "Task x".into(),
                vec!["status: running".into(), "\x1b[31mred".into()],
            )),
            footer: Some("Revoke video.transcode? y/n".into()),
            ..View::default()
        };
        let area = Rect::new(0, 0, 70, frame_height(&frame, &view));
        let mut buffer = Buffer::empty(area);
        draw(&frame, &view, area, &mut buffer);
        let text = buffer_text(&buffer);
        assert!(
            text.contains(" Task x ") && text.contains("status: running"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            !text.contains("Running ("),
            "the detail replaces the tasks: {text}"
        );
        assert!(
            text.trim_end().ends_with("Revoke video.transcode? y/n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_queue_is_flagged_without_pushing_columns_out() {
        let mut frame = frame().await;
        frame.queues.rows[1].error = Some("WRONGTYPE ".repeat(20));
        let text = render_text(&frame, 120);
        assert_fits(&text, 120);
        let row = text.lines().find(|l| l.starts_with("analysis")).unwrap();
        assert!(row.ends_with("ERROR"), "{row}");
        assert!(text.contains("Queues (4, 1 unreadable"), "{text}");
        assert!(text.contains("IN/S") && text.contains("DELAYED"), "{text}");
    }
}

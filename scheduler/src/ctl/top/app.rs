//! `spoolctl top` on a terminal: the frames drawn in place, and the keys.
//!
//! The terminal is put in raw mode on the alternate screen and restored
//! on every way out: a return, an error (a guard's drop), a panic
//! (ratatui's panic hook), Ctrl-C (a key in raw mode; SIGINT and SIGTERM
//! from elsewhere are caught too).

use std::time::Duration;

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::widgets::Paragraph;
use spool_broker::{QueueName, TaskId};
use tokio::sync::mpsc;

use super::render::{Focus, View, draw};
use super::{Top, TopFrame};
use crate::ctl::{Report as _, RevokeRequest, pause, resume, revoke, task_show};
use crate::error::Result;

/// Restores the terminal when dropped, however the loop ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// What the key thread reports.
enum Input {
    Key(KeyEvent),
    Resize,
}

/// Reads the terminal's events on a thread of its own (crossterm's reads
/// block) until the receiver is gone.
fn spawn_key_reader() -> mpsc::UnboundedReceiver<Input> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return,
            }
            let input = match event::read() {
                Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => Input::Key(key),
                Ok(Event::Resize(..)) => Input::Resize,
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.send(input).is_err() {
                return;
            }
        }
    });
    rx
}

/// The interactive state besides the frame.
struct App {
    view: View,
    frame: Option<TopFrame>,
    /// The task whose detail is shown, read again at each refresh.
    detail: Option<TaskId>,
    /// The task to revoke once confirmed.
    confirm: Option<TaskId>,
    quit: bool,
}

/// Runs `top` interactively on the terminal until `q`, Esc at the top
/// level, Ctrl-C, SIGINT or SIGTERM; keys: ↑/↓ (or k/j) select, Tab
/// switches table, Enter shows the selected task's detail, `p` pauses or
/// resumes the selected queue, `x` revokes the selected task (after `y`),
/// `q` quits.
///
/// # Errors
///
/// [`Error::Write`](crate::Error::Write) when the terminal cannot be set
/// up or drawn on; the first frame's read error (later ones are shown in
/// the footer and retried).
///
/// # Cancel safety
///
/// Cancelling it restores the terminal; nothing is changed.
pub async fn run_interactive(top: &mut Top<'_>) -> Result<()> {
    let interval = top.interval();
    // Read once before touching the terminal: a Redis that cannot be
    // reached is reported on a normal screen.
    let first = top.next_frame().await?;
    // Listening before the first frame is drawn: a signal from then on
    // restores the terminal.
    let mut interrupts = Interrupts::listen()?;
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let mut keys = spawn_key_reader();
    let mut app = App {
        view: View {
            interactive: true,
            ..View::default()
        },
        frame: Some(first),
        detail: None,
        confirm: None,
        quit: false,
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    while !app.quit {
        paint(&mut terminal, &app)?;
        tokio::select! {
            _ = ticks.tick() => app.refresh(top).await,
            input = keys.recv() => match input {
                Some(Input::Key(key)) => app.key(key, top).await,
                Some(Input::Resize) => {}
                None => app.quit = true,
            },
            () = interrupts.next() => app.quit = true,
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM, listened to from creation on.
struct Interrupts {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn listen() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves at the next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn paint(terminal: &mut DefaultTerminal, app: &App) -> Result<()> {
    terminal.draw(|f| {
        let area = f.area();
        match &app.frame {
            Some(frame) => draw(frame, &app.view, area, f.buffer_mut()),
            None => f.render_widget(Paragraph::new("reading…"), area),
        }
    })?;
    Ok(())
}

impl App {
    async fn refresh(&mut self, top: &mut Top<'_>) {
        match top.next_frame().await {
            Ok(frame) => {
                self.frame = Some(frame);
                self.clamp_selection();
            }
            Err(e) => self.view.footer = Some(format!("cannot refresh: {e}")),
        }
        if let Some(id) = self.detail {
            self.view.detail = Some(detail(top, self.frame.as_ref(), id).await);
        }
    }

    fn rows(&self) -> usize {
        self.frame.as_ref().map_or(0, |f| match self.view.focus {
            Focus::Queues => f.queues.rows.len(),
            Focus::Running => f.running.len(),
            Focus::Failures => f.failures.len(),
        })
    }

    fn clamp_selection(&mut self) {
        self.view.selected = self.view.selected.min(self.rows().saturating_sub(1));
    }

    fn selected_queue(&self) -> Option<(QueueName, bool)> {
        let frame = self.frame.as_ref()?;
        (self.view.focus == Focus::Queues)
            .then(|| frame.queues.rows.get(self.view.selected))
            .flatten()
            .map(|q| (q.queue.clone(), q.paused))
    }

    fn selected_task(&self) -> Option<(TaskId, String)> {
        let frame = self.frame.as_ref()?;
        match self.view.focus {
            Focus::Queues => None,
            Focus::Running => frame
                .running
                .get(self.view.selected)
                .map(|t| (t.id, t.name.clone().unwrap_or_default())),
            Focus::Failures => frame
                .failures
                .get(self.view.selected)
                .and_then(|f| Some((f.id?, f.name.clone().unwrap_or_default()))),
        }
    }

    async fn key(&mut self, key: KeyEvent, top: &mut Top<'_>) {
        let ctrl_c =
            key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c');
        if ctrl_c {
            self.quit = true;
            return;
        }
        if let Some(id) = self.confirm.take() {
            self.view.footer = Some(if key.code == KeyCode::Char('y') {
                revoke_task(top, self.frame.as_ref(), id).await
            } else {
                format!("task {id} not revoked")
            });
            self.refresh(top).await;
            return;
        }
        self.view.footer = None;
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc if self.view.detail.is_some() => {
                self.view.detail = None;
                self.detail = None;
            }
            KeyCode::Esc => self.quit = true,
            KeyCode::Tab => {
                self.view.focus = self.view.focus.next();
                self.view.selected = 0;
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.view.selected = self.view.selected.saturating_sub(1);
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.view.selected += 1;
                self.clamp_selection();
            }
            KeyCode::Enter => match self.selected_task() {
                Some((id, _)) => {
                    self.detail = Some(id);
                    self.view.detail = Some(detail(top, self.frame.as_ref(), id).await);
                }
                None => self.view.footer = Some("select a task first (Tab to the tasks)".into()),
            },
            KeyCode::Char('p') => match self.selected_queue() {
                Some((queue, paused)) => {
                    let done = if paused {
                        resume(top.broker(), &queue).await
                    } else {
                        pause(top.broker(), &queue).await
                    };
                    self.view.footer = Some(match done {
                        Ok(report) => report.to_text().trim_end().to_owned(),
                        Err(e) => format!("cannot pause or resume {queue}: {e}"),
                    });
                    self.refresh(top).await;
                }
                None => self.view.footer = Some("select a queue first (Tab to the queues)".into()),
            },
            KeyCode::Char('x') => match self.selected_task() {
                Some((id, name)) => {
                    self.confirm = Some(id);
                    self.view.footer = Some(format!(
                        "Revoke task {id} ({name})? y revokes, any other key cancels"
                    ));
                }
                None => self.view.footer = Some("select a task first (Tab to the tasks)".into()),
            },
            _ => {}
        }
    }
}

/// The detail pane of task `id`: its record when a store is read, else
/// what the frame knows.
async fn detail(top: &Top<'_>, frame: Option<&TopFrame>, id: TaskId) -> (String, Vec<String>) {
    let title = format!("Task {id} (Esc closes)");
    if let Some(store) = top.store() {
        return match task_show(store, id).await {
            Ok(report) => (title, report.to_text().lines().map(str::to_owned).collect()),
            Err(e) => (title, vec![e.to_string()]),
        };
    }
    let mut lines = vec!["(no job store: pass --store-url for the task's record)".to_owned()];
    if let Some(task) = frame.and_then(|f| f.running.iter().find(|t| t.id == id)) {
        lines.push(format!("worker: {}", task.worker.as_deref().unwrap_or("-")));
    }
    if let Some(failure) = frame.and_then(|f| f.failures.iter().find(|t| t.id == Some(id))) {
        lines.push(format!("name: {}", failure.name.as_deref().unwrap_or("-")));
        lines.push(format!("error: {}", failure.error));
    }
    (title, lines)
}

/// Revokes task `id`, searching the frame's queues, and says how it went.
async fn revoke_task(top: &Top<'_>, frame: Option<&TopFrame>, id: TaskId) -> String {
    let request = RevokeRequest {
        queues: frame.map_or_else(Vec::new, |f| {
            f.queues.rows.iter().map(|q| q.queue.clone()).collect()
        }),
        ..RevokeRequest::new(id)
    };
    match revoke(top.broker(), top.store(), &request).await {
        Ok(report) => report.to_text().trim_end().to_owned(),
        Err(e) => format!("cannot revoke: {e}"),
    }
}

//! Reading FFmpeg's stderr: error lines for failures, stats lines turned
//! into steady progress.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use tokio::time::Instant;
use tracing::debug;

use super::progress::{RunProgress, StageBand, parse_ffmpeg_time};
use crate::probe::strip_log_context;

/// How many of FFmpeg's error lines a failure carries.
const ERROR_LINES: usize = 3;

/// How many recent log lines are kept, for failures without error lines.
const TAIL_LINES: usize = 8;

/// What the runner gathers from FFmpeg's log.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    errors: Vec<String>,
    pub(crate) warnings: Vec<String>,
    tail: VecDeque<String>,
    /// Whether any line said a write hit a full disk (some muxers log it
    /// and go on, leaving files short or missing).
    pub(crate) no_space: bool,
}

impl LogState {
    /// Takes in one event; returns the stats line it carries, if any.
    pub(crate) fn handle(&mut self, event: FfmpegEvent) -> Option<Stats> {
        if let FfmpegEvent::Log(_, line) = &event
            && crate::error::says_no_space(line)
        {
            self.no_space = true;
        }
        match event {
            FfmpegEvent::Progress(p) => Some(Stats {
                time: parse_ffmpeg_time(&p.time),
                frame: u64::from(p.frame),
                fps: p.fps,
                speed: p.speed,
            }),
            FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, line) => {
                let line = strip_log_context(&line).to_owned();
                if !line.is_empty() && !self.errors.contains(&line) {
                    self.errors.push(line);
                }
                None
            }
            FfmpegEvent::Log(LogLevel::Warning, line) => {
                let line = strip_log_context(&line).to_owned();
                if self.warnings.len() < ERROR_LINES && !self.warnings.contains(&line) {
                    self.warnings.push(line.clone());
                }
                self.remember(line);
                None
            }
            FfmpegEvent::Log(_, line) => {
                self.remember(strip_log_context(&line).to_owned());
                None
            }
            // The sidecar's own notes ("No streams found" when nothing goes
            // to stdout): not FFmpeg's words.
            FfmpegEvent::Error(note) => {
                debug!(%note, "ffmpeg-sidecar");
                None
            }
            _ => None,
        }
    }

    fn remember(&mut self, line: String) {
        if line.is_empty() {
            return;
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// FFmpeg's first error lines; without any, its last log lines.
    pub(crate) fn failure_message(&self) -> String {
        let lines: Vec<&str> = if self.errors.is_empty() {
            self.tail.iter().map(String::as_str).collect()
        } else {
            self.errors
                .iter()
                .take(ERROR_LINES)
                .map(String::as_str)
                .collect()
        };
        if lines.is_empty() {
            return "no error message (FFmpeg printed nothing)".to_owned();
        }
        let mut message = String::new();
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                message.push_str("; ");
            }
            let _ = write!(message, "{}", truncate(line, 300));
        }
        message
    }
}

fn truncate(line: &str, max: usize) -> &str {
    match line.char_indices().nth(max) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

/// One of FFmpeg's stats lines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    /// The output time; `None` while nothing was muxed (`time=N/A`).
    time: Option<Duration>,
    frame: u64,
    /// 0 when FFmpeg does not say (it prints `fps=0.0` in its first
    /// second).
    fps: f32,
    /// 0 when FFmpeg does not say (`speed=N/A`).
    speed: f32,
}

/// Turns stats lines into steady progress: the percent never goes back
/// (FFmpeg's time can, between streams), and fps and speed are computed
/// from the elapsed time when FFmpeg leaves them out.
#[derive(Debug)]
pub(crate) struct Tracker {
    stage: StageBand,
    duration: Option<Duration>,
    frames: Option<u64>,
    started: Instant,
    out_time: Duration,
    percent: f32,
}

impl Tracker {
    pub(crate) fn new(
        stage: StageBand,
        duration: Option<Duration>,
        frames: Option<u64>,
        started: Instant,
    ) -> Self {
        Self {
            percent: stage.start,
            stage,
            duration: duration.filter(|d| !d.is_zero()),
            frames: frames.filter(|&n| n > 0),
            started,
            out_time: Duration::ZERO,
        }
    }

    /// Takes the first input's duration, as FFmpeg read it, when no hint
    /// was given.
    pub(crate) fn learn_duration(&mut self, seconds: f64) {
        if self.duration.is_none() && seconds.is_finite() && seconds > 0.0 {
            self.duration = Some(Duration::from_secs_f64(seconds));
        }
    }

    pub(crate) fn update(&mut self, stats: &Stats, now: Instant) -> RunProgress {
        if let Some(time) = stats.time {
            self.out_time = self.out_time.max(time);
        }
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let by_frames = self.frames.map(|n| stats.frame as f64 / n as f64);
        let by_time = self
            .duration
            .map(|d| self.out_time.as_secs_f64() / d.as_secs_f64());
        let fraction = match (by_time, by_frames) {
            (Some(t), Some(f)) => Some(t.max(f)),
            (one, other) => one.or(other),
        }
        .map(|f| f.clamp(0.0, 1.0));
        if let Some(fraction) = fraction {
            self.percent = self.percent.max(self.stage.at(fraction));
        }
        let measured = elapsed > 0.05;
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let fps = if stats.fps > 0.0 && stats.fps.is_finite() {
            Some(stats.fps)
        } else if stats.frame > 0 && measured {
            Some((stats.frame as f64 / elapsed) as f32)
        } else {
            None
        };
        #[allow(clippy::cast_possible_truncation)]
        let speed = if stats.speed > 0.0 && stats.speed.is_finite() {
            Some(stats.speed)
        } else if !self.out_time.is_zero() && measured {
            Some((self.out_time.as_secs_f64() / elapsed) as f32)
        } else {
            None
        };
        #[allow(clippy::cast_possible_truncation)]
        let eta_seconds = fraction
            .filter(|&f| f > 0.0 && measured)
            .map(|f| (elapsed * (1.0 - f) / f) as f32);
        RunProgress {
            stage: self.stage.name.clone(),
            percent: self.percent,
            fraction,
            out_time: self.out_time,
            frame: stats.frame,
            fps,
            speed,
            eta_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(time: Option<f64>, frame: u64, fps: f32, speed: f32) -> Stats {
        Stats {
            time: time.map(Duration::from_secs_f64),
            frame,
            fps,
            speed,
        }
    }

    #[test]
    fn progress_maps_into_the_band() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let ten = Some(Duration::from_secs(10));
        let mut tracker = Tracker::new(StageBand::PROCESSING, ten, None, start);
        let p = tracker.update(&stats(Some(5.0), 125, 50.0, 2.0), at(2));
        assert_eq!(p.percent, 50.0);
        assert_eq!(p.eta_seconds, Some(2.0));
        assert_eq!((p.fps, p.speed, p.frame), (Some(50.0), Some(2.0), 125));
        // FFmpeg's time going back (or N/A) never moves the percent back.
        let p = tracker.update(&stats(Some(1.0), 130, 50.0, 2.0), at(3));
        assert_eq!((p.percent, p.out_time), (50.0, Duration::from_secs(5)));
        let p = tracker.update(&stats(None, 140, 0.0, 0.0), at(4));
        assert_eq!(p.percent, 50.0);
        // fps and speed from the elapsed time when FFmpeg leaves them out.
        assert_eq!((p.fps, p.speed), (Some(35.0), Some(1.25)));

        let mut unknown = Tracker::new(StageBand::PROCESSING, None, None, start);
        let p = unknown.update(&stats(None, 0, 0.0, 0.0), start);
        assert_eq!(
            (p.percent, p.fps, p.speed, p.eta_seconds),
            (5.0, None, None, None)
        );
        // Until FFmpeg says how long its input is.
        unknown.learn_duration(20.0);
        let p = unknown.update(&stats(Some(10.0), 250, 25.0, 1.0), at(10));
        assert_eq!(p.percent, 50.0);
    }

    #[test]
    fn frames_move_the_percent_while_time_is_unknown() {
        let start = Instant::now();
        let mut tracker = Tracker::new(
            StageBand::new("x", 0.0, 100.0),
            Some(Duration::from_secs(4)),
            Some(100),
            start,
        );
        let p = tracker.update(&stats(None, 25, 0.0, 0.0), start + Duration::from_secs(1));
        assert_eq!((p.percent, p.fraction), (25.0, Some(0.25)));
        assert_eq!(p.eta_seconds, Some(3.0));
    }

    #[test]
    fn failures_carry_the_first_error_lines() {
        let mut log = LogState::default();
        for (level, line) in [
            (LogLevel::Warning, "[in#0 @ 0x1] [warning] low score"),
            (LogLevel::Error, "[in#0 @ 0x1] [error] moov atom not found"),
            (
                LogLevel::Error,
                "[in#0 @ 0x2] [error] Error opening input: Invalid data",
            ),
            (LogLevel::Error, "[in#0 @ 0x2] [error] moov atom not found"),
            (LogLevel::Fatal, "[fatal] Error opening input files"),
            (LogLevel::Error, "[error] a fourth line"),
        ] {
            assert!(log.handle(FfmpegEvent::Log(level, line.into())).is_none());
        }
        assert_eq!(
            log.failure_message(),
            "moov atom not found; Error opening input: Invalid data; Error opening input files"
        );
        assert_eq!(log.warnings, vec!["low score".to_owned()]);
        let quiet = LogState::default();
        assert!(quiet.failure_message().contains("printed nothing"));
    }
}

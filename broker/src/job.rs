//! A task's life as Spool tracks it: its status, its progress, and what
//! to record of it. Used by the job store, the worker and the SDK alike.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a task is in its life, as the job store records it.
///
/// `Queued`, `Scheduled`, `Running` and `Retrying` are live; the other five
/// are final ([`JobStatus::is_finished`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Enqueued and ready to run.
    Queued,
    /// Enqueued with an ETA or countdown that has not come yet.
    Scheduled,
    /// A worker is running an attempt.
    Running,
    /// An attempt failed and the next one is scheduled.
    Retrying,
    /// The handler returned its output.
    Succeeded,
    /// Failed for good (a non-retryable error, or out of attempts).
    Failed,
    /// Moved to the dead-letter stream (undecodable, unknown or poison).
    Dead,
    /// Revoked before or while it ran.
    Revoked,
    /// Its expiry passed before it ran.
    Expired,
}

impl JobStatus {
    /// Every status, live ones first.
    pub const ALL: [Self; 9] = [
        Self::Queued,
        Self::Scheduled,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
        Self::Revoked,
        Self::Expired,
    ];

    /// The statuses that end a task's life: what retention prunes.
    pub const FINISHED: [Self; 5] = [
        Self::Succeeded,
        Self::Failed,
        Self::Dead,
        Self::Revoked,
        Self::Expired,
    ];

    /// The lowercase name stored in the database and shown by the CLI.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    /// Whether the task's life is over: no attempt will follow.
    #[must_use]
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Dead | Self::Revoked | Self::Expired
        )
    }

    /// Whether this status reports something that went wrong: a failed
    /// attempt (`Retrying`), or a task that ended without its output.
    #[must_use]
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Retrying | Self::Failed | Self::Dead | Self::Revoked | Self::Expired
        )
    }

    /// How far into one attempt this status is: 0 before it runs, 1 while it
    /// runs, 2 once it failed and waits for a retry, 3 when final.
    #[cfg(feature = "store")]
    pub(crate) const fn rank(self) -> i64 {
        match self {
            Self::Queued | Self::Scheduled => 0,
            Self::Running => 1,
            Self::Retrying => 2,
            Self::Succeeded | Self::Failed | Self::Dead | Self::Revoked | Self::Expired => 3,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::decode("job status", format!("unknown job status {s:?}")))
    }
}

/// What to record for one task type: everything, only failures, or nothing.
///
/// Callers (the worker's settler, the SDK) look the policy up per task name
/// and ask [`RecordPolicy::records`] before adding a write to a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordPolicy {
    /// Every transition: enqueued, started, progress, every outcome.
    #[default]
    Full,
    /// Only attempts that went wrong ([`JobStatus::is_failure`]), and,
    /// so that such a record does not stay `retrying` forever, whatever
    /// happens to the task after its first attempt.
    FailuresOnly,
    /// Nothing.
    Off,
}

impl RecordPolicy {
    /// Whether a transition to `status` is recorded under this policy
    /// (for `FailuresOnly`, as if it were the task's first attempt; see
    /// [`RecordPolicy::records_attempt`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use spool_broker::store::{JobStatus, RecordPolicy};
    ///
    /// assert!(RecordPolicy::Full.records(JobStatus::Succeeded));
    /// assert!(!RecordPolicy::FailuresOnly.records(JobStatus::Succeeded));
    /// assert!(RecordPolicy::FailuresOnly.records(JobStatus::Dead));
    /// assert!(!RecordPolicy::Off.records(JobStatus::Failed));
    /// ```
    #[must_use]
    pub const fn records(self, status: JobStatus) -> bool {
        match self {
            Self::Full => true,
            Self::FailuresOnly => status.is_failure(),
            Self::Off => false,
        }
    }

    /// Like [`RecordPolicy::records`], for a transition of attempt
    /// `attempt` (starting at 1). Under `FailuresOnly`, every transition of
    /// a second or later attempt is recorded too: the first attempt failed,
    /// so a record exists and must follow the task to its end.
    ///
    /// # Examples
    ///
    /// ```
    /// use spool_broker::store::{JobStatus, RecordPolicy};
    ///
    /// let policy = RecordPolicy::FailuresOnly;
    /// assert!(!policy.records_attempt(JobStatus::Succeeded, 1));
    /// assert!(policy.records_attempt(JobStatus::Succeeded, 2));
    /// ```
    #[must_use]
    pub const fn records_attempt(self, status: JobStatus, attempt: u32) -> bool {
        match self {
            Self::FailuresOnly if attempt > 1 => true,
            _ => self.records(status),
        }
    }

    /// The policy's name as configuration spells it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::FailuresOnly => "failures-only",
            Self::Off => "off",
        }
    }
}

impl fmt::Display for RecordPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "full" => Ok(Self::Full),
            "failures-only" | "failures" => Ok(Self::FailuresOnly),
            "off" | "none" => Ok(Self::Off),
            _ => Err(Error::Config(format!(
                "unknown record policy {s:?} (expected full, failures-only or off)"
            ))),
        }
    }
}

/// How far a running task has got, as its handler reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Percent done, 0 to 100.
    pub percent: f32,
    /// The current stage, such as `"encode 720p"`.
    pub stage: Option<String>,
    /// A free-form message.
    pub message: Option<String>,
    /// Frames per second, for video work.
    pub fps: Option<f32>,
    /// Estimated seconds to completion.
    pub eta_seconds: Option<f32>,
    /// Processing speed as a multiple of real time (FFmpeg's `speed=2.5x`),
    /// for video work. Reported on the progress stream; the job store does
    /// not keep it.
    #[serde(default)]
    pub speed: Option<f32>,
}

impl Progress {
    /// Progress at `percent` with nothing else set.
    #[must_use]
    pub fn percent(percent: f32) -> Self {
        Self {
            percent,
            ..Self::default()
        }
    }
}

/// One line for people: ` 42.0 % encode 720p, 118 fps, 3.9x, 12 s left`,
/// each part only when reported, the message last in parentheses.
///
/// # Examples
///
/// ```
/// use spool_broker::Progress;
///
/// let progress = Progress {
///     stage: Some("encode 720p".into()),
///     fps: Some(118.4),
///     ..Progress::percent(42.0)
/// };
/// assert_eq!(progress.to_string(), " 42.0 % encode 720p, 118 fps");
/// ```
impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:5.1} %", self.percent)?;
        if let Some(stage) = &self.stage {
            write!(f, " {stage}")?;
        }
        if let Some(fps) = self.fps {
            write!(f, ", {fps:.0} fps")?;
        }
        if let Some(speed) = self.speed {
            write!(f, ", {speed:.1}x")?;
        }
        if let Some(eta) = self.eta_seconds {
            write!(f, ", {eta:.0} s left")?;
        }
        if let Some(message) = &self.message {
            write!(f, " ({message})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_like_the_demo() {
        let progress = Progress {
            percent: 42.0,
            stage: Some("encode 720p".into()),
            fps: Some(118.4),
            speed: Some(3.94),
            eta_seconds: Some(12.2),
            ..Progress::default()
        };
        assert_eq!(
            progress.to_string(),
            " 42.0 % encode 720p, 118 fps, 3.9x, 12 s left"
        );
    }
}

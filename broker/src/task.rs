//! The [`Task`] trait and the options every task carries.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::job::RecordPolicy;
use crate::queue::{Priority, QueueName};

/// A unit of work: a serde type with a stable wire name.
///
/// The name, not the Rust type name, identifies the task on the wire, so a
/// type can be renamed or moved between crates without stranding the tasks
/// already queued. The payload is encoded with MessagePack.
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use spool_broker::{QueueName, Task, TaskOptions};
///
/// #[derive(Serialize, Deserialize)]
/// struct Thumbnail {
///     video: String,
///     at_seconds: f64,
/// }
///
/// impl Task for Thumbnail {
///     const NAME: &'static str = "video.thumbnail";
///     type Output = String;
///
///     fn options() -> TaskOptions {
///         TaskOptions {
///             queue: QueueName::ANALYSIS,
///             max_attempts: 5,
///             ..TaskOptions::default()
///         }
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// The stable wire name, such as `"video.transcode"`.
    const NAME: &'static str;

    /// What a successful run produces.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Fields of the payload that hold secrets (a signed URL, an API key):
    /// field names, or dotted paths into nested objects. They travel in the
    /// task's envelope (header [`HEADER_SECRET_FIELDS`]) and are replaced
    /// with `"***"` wherever Spool shows or stores arguments: the job
    /// store's record, `spoolctl task show`, `tasks`, `dead list`. The
    /// handler still receives them. Default: none.
    ///
    /// [`HEADER_SECRET_FIELDS`]: crate::HEADER_SECRET_FIELDS
    ///
    /// # Examples
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use serde_json::json;
    /// use spool_broker::{Envelope, Task};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Fetch {
    ///     url: String,
    ///     auth: Auth,
    /// }
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Auth {
    ///     user: String,
    ///     token: String,
    /// }
    ///
    /// impl Task for Fetch {
    ///     const NAME: &'static str = "media.fetch";
    ///     const SECRET_FIELDS: &'static [&'static str] = &["auth.token"];
    ///     type Output = ();
    /// }
    ///
    /// let task = Fetch {
    ///     url: "https://cdn.example/in.mp4".into(),
    ///     auth: Auth { user: "ci".into(), token: "t0p-s3cr3t".into() },
    /// };
    /// let envelope = Envelope::for_task(&task)?;
    /// assert_eq!(
    ///     envelope.args_json()?,
    ///     json!({"url": "https://cdn.example/in.mp4", "auth": {"user": "ci", "token": "***"}})
    /// );
    /// # Ok::<(), spool_broker::Error>(())
    /// ```
    const SECRET_FIELDS: &'static [&'static str] = &[];

    /// Options used when the producer does not override them.
    fn options() -> TaskOptions {
        TaskOptions::default()
    }
}

/// Per-task delivery options. Producers may override each of them per call.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// The queue the task is routed to. Default: [`QueueName::DEFAULT`].
    pub queue: QueueName,
    /// Its priority within the queue. Default: [`Priority::Normal`].
    pub priority: Priority,
    /// How many times the task may run before it is dead-lettered, counting
    /// the first run. Default: 3.
    pub max_attempts: u32,
    /// The delay before each retry. Default: [`Backoff::default`].
    pub backoff: Backoff,
    /// A hard limit on one run; past it the run is stopped and the task
    /// fails without retry, as in Celery. Default: `None`, the worker's own
    /// limit applies.
    pub time_limit: Option<Duration>,
    /// How long after enqueueing the task is still worth running; an expired
    /// task is skipped and acknowledged. Default: `None`, never expires.
    pub expires: Option<Duration>,
    /// How often tasks of this type may start, across all workers: a task
    /// over the limit is put back until a token is free. Default: `None`.
    pub rate_limit: Option<RateLimit>,
    /// What the job store records of these tasks. Default:
    /// [`RecordPolicy::Full`].
    pub record: RecordPolicy,
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self {
            queue: QueueName::DEFAULT,
            priority: Priority::Normal,
            max_attempts: 3,
            backoff: Backoff::default(),
            time_limit: None,
            expires: None,
            rate_limit: None,
            record: RecordPolicy::Full,
        }
    }
}

/// At most `limit` starts per `period`, with bursts up to `limit`
/// (a token bucket).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_broker::RateLimit;
///
/// let limit: RateLimit = "100/m".parse()?;
/// assert_eq!(limit, RateLimit { limit: 100, period: Duration::from_secs(60) });
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts allowed per period.
    pub limit: u32,
    /// The period.
    pub period: Duration,
}

impl std::str::FromStr for RateLimit {
    type Err = crate::Error;

    /// Parses Celery's notation: `10/s`, `100/m`, `1000/h`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            crate::Error::Config(format!(
                "invalid rate limit {s:?}: expected N/s, N/m or N/h"
            ))
        };
        let (limit, unit) = s.split_once('/').ok_or_else(invalid)?;
        let limit: u32 = limit.trim().parse().map_err(|_| invalid())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(invalid()),
        };
        if limit == 0 {
            return Err(invalid());
        }
        Ok(Self { limit, period })
    }
}

/// Exponential backoff with jitter: the n-th retry waits about
/// `base * factor^(n-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry. Default: 1 s.
    pub base: Duration,
    /// The growth per retry. Default: 2.
    pub factor: f64,
    /// The longest delay. Default: 10 minutes.
    pub max: Duration,
    /// Whether to randomize each delay within its upper half ("equal
    /// jitter"), so that tasks that failed together do not retry together.
    /// Default: `true`.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(600),
            jitter: true,
        }
    }
}

impl Backoff {
    /// A backoff that always waits `delay`, without jitter.
    #[must_use]
    pub fn fixed(delay: Duration) -> Self {
        Self {
            base: delay,
            factor: 1.0,
            max: delay,
            jitter: false,
        }
    }

    /// The delay before retry number `retry` (1 for the first retry).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use spool_broker::Backoff;
    ///
    /// let b = Backoff { jitter: false, ..Backoff::default() };
    /// assert_eq!(b.delay(1), Duration::from_secs(1));
    /// assert_eq!(b.delay(3), Duration::from_secs(4));
    /// assert_eq!(b.delay(40), Duration::from_secs(600));
    /// ```
    #[must_use]
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(64);
        let exponent = i32::try_from(exponent).unwrap_or(i32::MAX);
        let max = self.max.as_secs_f64();
        let upper = (self.base.as_secs_f64() * self.factor.max(1.0).powi(exponent)).min(max);
        let seconds = if self.jitter {
            upper / 2.0 + fastrand::f64() * upper / 2.0
        } else {
            upper
        };
        Duration::try_from_secs_f64(seconds).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_delays_stay_in_the_upper_half() {
        let b = Backoff::default();
        for retry in 1..=12 {
            let upper = Backoff { jitter: false, ..b }.delay(retry);
            for _ in 0..50 {
                let d = b.delay(retry);
                assert!(
                    d <= upper && d >= upper / 2,
                    "retry {retry}: {d:?} vs {upper:?}"
                );
            }
        }
    }

    #[test]
    fn fixed_backoff_is_constant() {
        let b = Backoff::fixed(Duration::from_millis(50));
        assert_eq!(b.delay(1), b.delay(9));
    }
}

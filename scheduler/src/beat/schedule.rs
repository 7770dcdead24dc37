//! When an entry fires: a cron expression or a fixed interval, both pure
//! functions of time, so every replica computes the same ticks.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use spool_broker::Timestamp;

use crate::error::{Error, Result};

/// When an entry fires.
///
/// - **Cron** expressions have five fields (minute, hour, day of month,
///   month, day of week) or six with a leading seconds field, and are
///   evaluated in **UTC**. Day of week runs 0–6 from Sunday (7 is Sunday
///   too); names (`MON`, `JAN`) and `@daily`-style nicknames work. Ticks
///   fall on whole seconds.
/// - **Intervals** (`every = "5m"`) fire at whole multiples of the interval
///   since the Unix epoch: `1h` at the top of each UTC hour, `90s` at
///   00:00:00, 00:01:30, 00:03:00… Aligning on the epoch rather than on
///   the start of a process is what lets any replica compute the same
///   ticks as any other.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_broker::Timestamp;
/// use spool_scheduler::beat::Schedule;
///
/// let every = Schedule::every(Duration::from_secs(60))?;
/// let t = Timestamp::from_millis(90_500);
/// assert_eq!(every.next_after(t), Some(Timestamp::from_millis(120_000)));
///
/// // 02:30 UTC every day; the seconds field is optional.
/// let nightly = Schedule::cron("30 2 * * *")?;
/// let next = nightly.next_after(Timestamp::from_millis(0)).unwrap();
/// assert_eq!(next, Timestamp::from_millis((2 * 3600 + 30 * 60) * 1000));
/// # Ok::<(), spool_scheduler::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule(Kind);

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Cron { expression: String, cron: Box<Cron> },
    Every { millis: NonZeroU64 },
}

impl Schedule {
    /// A cron expression, five fields or six with seconds first, in UTC.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the expression does not parse.
    pub fn cron(expression: &str) -> Result<Self> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| {
                Error::InvalidInput(format!("invalid cron expression {expression:?}: {e}"))
            })?;
        Ok(Self(Kind::Cron {
            expression: expression.trim().to_owned(),
            cron: Box::new(cron),
        }))
    }

    /// A fixed interval, in whole milliseconds, aligned on the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an interval under a millisecond.
    pub fn every(interval: Duration) -> Result<Self> {
        let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let Some(millis) = NonZeroU64::new(millis) else {
            return Err(Error::InvalidInput(format!(
                "an interval must be at least 1ms, not {}",
                humantime::format_duration(interval)
            )));
        };
        Ok(Self(Kind::Every { millis }))
    }

    /// The first tick strictly after `time`, or `None` if there is none
    /// (a cron expression that never matches again).
    #[must_use]
    pub fn next_after(&self, time: Timestamp) -> Option<Timestamp> {
        match &self.0 {
            Kind::Every { millis } => (time.as_millis() / *millis)
                .checked_add(1)
                .and_then(|n| n.checked_mul(millis.get()))
                .map(Timestamp::from_millis),
            // Ticks fall on whole seconds: the first one after `time` is the
            // first one after its whole second.
            Kind::Cron { cron, .. } => {
                let next = cron.find_next_occurrence(&whole_second(time)?, false);
                next.ok().and_then(to_timestamp)
            }
        }
    }

    /// The last tick at or before `time`, if any.
    #[must_use]
    pub fn last_at_or_before(&self, time: Timestamp) -> Option<Timestamp> {
        match &self.0 {
            Kind::Every { millis } => Some(Timestamp::from_millis(
                time.as_millis() / *millis * millis.get(),
            )),
            Kind::Cron { cron, .. } => {
                let last = cron.find_previous_occurrence(&whole_second(time)?, true);
                last.ok().and_then(to_timestamp)
            }
        }
    }

    /// How many ticks fall in `(after, up_to]`, counting at most `cap`.
    #[must_use]
    pub fn count_between(&self, after: Timestamp, up_to: Timestamp, cap: u64) -> u64 {
        if up_to <= after {
            return 0;
        }
        match &self.0 {
            Kind::Every { millis } => {
                (up_to.as_millis() / *millis - after.as_millis() / *millis).min(cap)
            }
            Kind::Cron { .. } => {
                let mut count = 0;
                let mut at = after;
                while count < cap {
                    match self.next_after(at) {
                        Some(next) if next <= up_to => {
                            count += 1;
                            at = next;
                        }
                        _ => break,
                    }
                }
                count
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Cron { expression, .. } => write!(f, "cron {expression:?} (UTC)"),
            Kind::Every { millis } => write!(
                f,
                "every {}",
                humantime::format_duration(Duration::from_millis(millis.get()))
            ),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `time` truncated to its whole second, in UTC.
fn whole_second(time: Timestamp) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(time.as_millis() / 1000).ok()?;
    DateTime::from_timestamp(secs, 0)
}

fn to_timestamp(time: DateTime<Utc>) -> Option<Timestamp> {
    u64::try_from(time.timestamp_millis())
        .ok()
        .map(Timestamp::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn intervals_align_on_the_epoch() {
        let every = Schedule::every(Duration::from_secs(90)).unwrap();
        assert_eq!(every.next_after(at(0)), Some(at(90)));
        assert_eq!(every.next_after(at(90)), Some(at(180)));
        assert_eq!(
            every.next_after(Timestamp::from_millis(179_999)),
            Some(at(180))
        );
        assert_eq!(every.last_at_or_before(at(180)), Some(at(180)));
        assert_eq!(
            every.last_at_or_before(Timestamp::from_millis(179_999)),
            Some(at(90))
        );
        assert_eq!(every.count_between(at(0), at(450), 100), 5);
        assert_eq!(every.count_between(at(0), at(450), 3), 3);
        assert_eq!(every.count_between(at(450), at(0), 100), 0);
        assert_eq!(every.to_string(), "every 1m 30s");
        assert!(Schedule::every(Duration::from_micros(999)).is_err());
    }

    #[test]
    fn cron_seconds_are_optional_and_utc() {
        // 2024-01-01T00:00:00Z was a Monday.
        let monday = 1_704_067_200;
        let five = Schedule::cron("30 2 * * MON").unwrap();
        assert_eq!(
            five.next_after(at(monday)),
            Some(at(monday + 2 * 3600 + 1800))
        );
        let six = Schedule::cron("15 30 2 * * 1").unwrap();
        assert_eq!(
            six.next_after(at(monday)),
            Some(at(monday + 2 * 3600 + 1800 + 15))
        );
        // Sunday is 0 and 7.
        let sunday = Schedule::cron("0 0 * * 0").unwrap();
        assert_eq!(sunday.next_after(at(monday)), Some(at(monday + 6 * 86_400)));
        assert_eq!(
            Schedule::cron("0 0 * * 7").unwrap().next_after(at(monday)),
            Some(at(monday + 6 * 86_400))
        );
        assert_eq!(five.to_string(), "cron \"30 2 * * MON\" (UTC)");
    }

    #[test]
    fn cron_ticks_fall_on_whole_seconds() {
        let every_second = Schedule::cron("* * * * * *").unwrap();
        let t = Timestamp::from_millis(10_500);
        assert_eq!(every_second.next_after(t), Some(at(11)));
        assert_eq!(every_second.next_after(at(11)), Some(at(12)));
        assert_eq!(every_second.last_at_or_before(t), Some(at(10)));
        assert_eq!(every_second.last_at_or_before(at(10)), Some(at(10)));
        assert_eq!(every_second.count_between(at(10), at(20), 100), 10);
        assert_eq!(every_second.count_between(t, at(20), 4), 4);
    }

    #[test]
    fn bad_expressions_are_refused_with_the_expression() {
        let err = Schedule::cron("61 * * * *").unwrap_err().to_string();
        assert!(err.contains("\"61 * * * *\""), "{err}");
        assert!(Schedule::cron("").is_err());
        assert!(Schedule::cron("* * *").is_err());
    }
}

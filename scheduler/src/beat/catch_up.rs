//! The missed-tick policy: which of an entry's due ticks a pass enqueues.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use spool_broker::Timestamp;

use super::schedule::Schedule;
use crate::error::{Error, Result};

/// The most ticks of one entry that one pass enqueues; a longer catch-up
/// continues in the next pass, at once.
pub const MAX_TICKS_PER_PASS: usize = 1000;

/// Missed ticks counted one by one at most, per pass (only cron schedules
/// need counting; intervals are counted arithmetically).
const MAX_COUNTED: u64 = 100_000;

/// What to do with **missed** ticks: ticks more than the grace late when
/// the leader gets to them, because no beat was running, leadership was
/// changing hands, or Redis was unreachable. Ticks within the grace are on
/// time and always enqueued.
///
/// | policy | missed ticks enqueued |
/// | --- | --- |
/// | `latest` (default) | the most recent one, once, if no on-time tick is due: the missed period runs once, as in Celery beat |
/// | `all` | every one, oldest first |
/// | `skip` | none |
///
/// In every policy a missed tick older than the entry's catch-up window is
/// never enqueued.
///
/// # Examples
///
/// ```
/// use spool_scheduler::beat::CatchUp;
///
/// assert_eq!("all".parse::<CatchUp>()?, CatchUp::All);
/// assert_eq!(CatchUp::default(), CatchUp::Latest);
/// # Ok::<(), spool_scheduler::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Run the missed period once.
    #[default]
    Latest,
    /// Run every missed tick.
    All,
    /// Run no missed tick.
    Skip,
}

impl CatchUp {
    /// The policy's name in the configuration.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::All => "all",
            Self::Skip => "skip",
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CatchUp {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "latest" => Ok(Self::Latest),
            "all" => Ok(Self::All),
            "skip" => Ok(Self::Skip),
            other => Err(Error::InvalidInput(format!(
                "invalid catch_up {other:?}: expected latest, all or skip"
            ))),
        }
    }
}

/// What one pass does for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The ticks to enqueue, oldest first.
    pub(crate) ticks: Vec<Timestamp>,
    /// Due ticks that the policy does not run.
    pub(crate) skipped: u64,
    /// Where the entry stands once `ticks` are enqueued: every tick up to it
    /// has been decided. Before `now` only when the pass was cut short at
    /// [`MAX_TICKS_PER_PASS`].
    pub(crate) cursor: Timestamp,
}

/// The timing of one entry's catch-up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) policy: CatchUp,
    /// How late a tick may be and still count as on time.
    pub(crate) grace: Duration,
    /// How old a missed tick may be and still be caught up.
    pub(crate) window: Duration,
}

/// Decides which ticks in `(cursor, now]` to enqueue.
pub(crate) fn plan(schedule: &Schedule, timing: Timing, cursor: Timestamp, now: Timestamp) -> Plan {
    let mut plan = Plan {
        ticks: Vec::new(),
        skipped: 0,
        cursor: now.max(cursor),
    };
    if now <= cursor {
        return plan;
    }
    // Missed: due ticks before `on_time_from`.
    let on_time_from = millis_before(now, timing.grace);
    let window_from = millis_before(now, timing.window);
    let mut ticks = Vec::new();
    match timing.policy {
        CatchUp::All => {
            let from = cursor.max(before(window_from));
            collect(schedule, from, now, &mut ticks);
        }
        CatchUp::Latest | CatchUp::Skip => {
            collect(schedule, cursor.max(before(on_time_from)), now, &mut ticks);
            if ticks.is_empty() && timing.policy == CatchUp::Latest {
                let latest_missed = schedule
                    .last_at_or_before(before(on_time_from))
                    .filter(|&t| t > cursor && t >= window_from);
                ticks.extend(latest_missed);
            }
        }
    }
    if ticks.len() > MAX_TICKS_PER_PASS {
        ticks.truncate(MAX_TICKS_PER_PASS);
        if let Some(&last) = ticks.last() {
            plan.cursor = last;
        }
    }
    let due = schedule.count_between(cursor, plan.cursor, MAX_COUNTED);
    plan.skipped = due.saturating_sub(ticks.len() as u64);
    plan.ticks = ticks;
    plan
}

/// Appends the ticks in `(after, up_to]` to `out`, up to one more than
/// [`MAX_TICKS_PER_PASS`] (enough to know there are more).
fn collect(schedule: &Schedule, after: Timestamp, up_to: Timestamp, out: &mut Vec<Timestamp>) {
    let mut at = after;
    while out.len() <= MAX_TICKS_PER_PASS {
        match schedule.next_after(at) {
            Some(next) if next <= up_to => {
                out.push(next);
                at = next;
            }
            _ => break,
        }
    }
}

/// `time - duration`, saturating at the epoch.
fn millis_before(time: Timestamp, duration: Duration) -> Timestamp {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    Timestamp::from_millis(time.as_millis().saturating_sub(millis))
}

/// One millisecond before `time`: turns "at or after" bounds into the
/// "strictly after" that [`Schedule::next_after`] takes.
fn before(time: Timestamp) -> Timestamp {
    Timestamp::from_millis(time.as_millis().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    fn ms(millis: u64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    fn timing(policy: CatchUp) -> Timing {
        Timing {
            policy,
            grace: Duration::from_secs(2),
            window: Duration::from_secs(3600),
        }
    }

    fn every_10s() -> Schedule {
        Schedule::every(Duration::from_secs(10)).unwrap()
    }

    const POLICIES: [CatchUp; 3] = [CatchUp::Latest, CatchUp::All, CatchUp::Skip];

    #[test]
    fn on_time_ticks_are_enqueued_whatever_the_policy() {
        for policy in POLICIES {
            let plan = plan(&every_10s(), timing(policy), s(10), ms(20_500));
            assert_eq!(plan.ticks, [s(20)], "{policy}");
            assert_eq!((plan.skipped, plan.cursor), (0, ms(20_500)), "{policy}");
            // A tick exactly `grace` late is still on time.
            let plan = plan_at(policy, s(10), s(22));
            assert_eq!(plan.ticks, [s(20)], "{policy}");
        }
    }

    fn plan_at(policy: CatchUp, cursor: Timestamp, now: Timestamp) -> Plan {
        plan(&every_10s(), timing(policy), cursor, now)
    }

    #[test]
    fn nothing_is_due_before_the_next_tick_or_when_the_clock_goes_back() {
        for policy in POLICIES {
            let plan = plan_at(policy, s(10), ms(19_999));
            assert!(plan.ticks.is_empty(), "{policy}");
            assert_eq!((plan.skipped, plan.cursor), (0, ms(19_999)));
            let plan = plan_at(policy, s(30), s(20));
            assert!(plan.ticks.is_empty(), "{policy}");
            assert_eq!(plan.cursor, s(30), "the cursor never moves back");
        }
    }

    #[test]
    fn missed_ticks_follow_the_policy() {
        // Down from just after 10 s until 65 s: 20..=60 are missed (60 is
        // 5 s late, past the 2 s grace).
        let latest = plan_at(CatchUp::Latest, s(10), s(65));
        assert_eq!(latest.ticks, [s(60)]);
        assert_eq!(latest.skipped, 4);
        let all = plan_at(CatchUp::All, s(10), s(65));
        assert_eq!(all.ticks, [s(20), s(30), s(40), s(50), s(60)]);
        assert_eq!(all.skipped, 0);
        let skip = plan_at(CatchUp::Skip, s(10), s(65));
        assert!(skip.ticks.is_empty());
        assert_eq!(skip.skipped, 5);
        for plan in [latest, all, skip] {
            assert_eq!(plan.cursor, s(65));
        }
    }

    #[test]
    fn an_on_time_tick_covers_the_missed_period_under_latest() {
        // Back at 61 s: 60 is on time, so latest runs it alone.
        let latest = plan_at(CatchUp::Latest, s(10), s(61));
        assert_eq!((latest.ticks, latest.skipped), (vec![s(60)], 4));
        let skip = plan_at(CatchUp::Skip, s(10), s(61));
        assert_eq!((skip.ticks, skip.skipped), (vec![s(60)], 4));
        let all = plan_at(CatchUp::All, s(10), s(61));
        assert_eq!(all.ticks.len(), 5);
    }

    #[test]
    fn the_window_bounds_every_catch_up() {
        let window = |policy| Timing {
            window: Duration::from_secs(25),
            ..timing(policy)
        };
        // At 65 s the window reaches back to 40 s, inclusive.
        let all = plan(&every_10s(), window(CatchUp::All), s(10), s(65));
        assert_eq!(all.ticks, [s(40), s(50), s(60)]);
        assert_eq!(all.skipped, 2);
        // Latest's one missed tick must be in the window too.
        let late = plan(&every_10s(), window(CatchUp::Latest), s(10), s(95));
        assert_eq!(late.ticks, [s(90)]);
        let too_late = Timing {
            window: Duration::from_secs(4),
            ..timing(CatchUp::Latest)
        };
        let none = plan(&every_10s(), too_late, s(10), s(95));
        assert!(none.ticks.is_empty());
        assert_eq!(none.skipped, 8);
    }

    #[test]
    fn a_long_catch_up_is_cut_into_passes() {
        let every_second = Schedule::every(Duration::from_secs(1)).unwrap();
        let t = timing(CatchUp::All);
        let first = plan(&every_second, t, s(0), s(2500));
        assert_eq!(first.ticks.len(), MAX_TICKS_PER_PASS);
        assert_eq!(first.ticks[0], s(1));
        assert_eq!(first.cursor, s(1000));
        assert_eq!(first.skipped, 0);
        let second = plan(&every_second, t, first.cursor, s(2500));
        assert_eq!(second.ticks[0], s(1001));
        let third = plan(&every_second, t, second.cursor, s(2500));
        assert_eq!(third.ticks.len(), 500);
        assert_eq!(third.cursor, s(2500));
    }

    #[test]
    fn cron_schedules_catch_up_the_same_way() {
        let cron = Schedule::cron("*/10 * * * * *").unwrap();
        let latest = plan(&cron, timing(CatchUp::Latest), s(10), s(65));
        assert_eq!((latest.ticks, latest.skipped), (vec![s(60)], 4));
        let all = plan(&cron, timing(CatchUp::All), s(10), s(65));
        assert_eq!(all.ticks, [s(20), s(30), s(40), s(50), s(60)]);
    }

    #[test]
    fn policies_parse_from_their_names() {
        for policy in POLICIES {
            assert_eq!(policy.as_str().parse::<CatchUp>().unwrap(), policy);
        }
        let err = "never".parse::<CatchUp>().unwrap_err().to_string();
        assert!(err.contains("latest, all or skip"), "{err}");
    }
}

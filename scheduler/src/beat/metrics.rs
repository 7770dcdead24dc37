//! The beat's Prometheus metrics, prefixed `spool_beat_`.
//!
//! | metric | type | labels | counts |
//! | --- | --- | --- | --- |
//! | `spool_beat_ticks_enqueued_total` | counter | `entry` | ticks this replica enqueued |
//! | `spool_beat_ticks_missed_total` | counter | `entry` | missed ticks its catch-up policy did not run |
//! | `spool_beat_ticks_duplicate_total` | counter | `entry` | ticks refused because another leader enqueued them first |
//! | `spool_beat_last_tick_timestamp_seconds` | gauge | `entry` | scheduled time of the last tick this replica enqueued |
//! | `spool_beat_leader` | gauge | | 1 while this replica leads, else 0 |
//! | `spool_beat_leadership_acquired_total` | counter | | times it took the lead |
//! | `spool_beat_leadership_lost_total` | counter | | times it lost the lead without resigning (lease lost, fenced off) |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use spool_broker::Timestamp;

/// The counters of one entry.
#[derive(Debug, Default)]
struct EntryCounts {
    enqueued: AtomicU64,
    missed: AtomicU64,
    duplicates: AtomicU64,
    last_tick_ms: AtomicU64,
}

/// Counters and gauges of one beat replica, rendered in Prometheus' text
/// format.
///
/// # Examples
///
/// ```
/// use spool_scheduler::beat::BeatMetrics;
///
/// let metrics = BeatMetrics::new(["sweep"]);
/// assert!(metrics.render().contains("spool_beat_ticks_enqueued_total{entry=\"sweep\"} 0"));
/// ```
#[derive(Debug)]
pub struct BeatMetrics {
    entries: Vec<(String, EntryCounts)>,
    leader: AtomicU64,
    acquired: AtomicU64,
    lost: AtomicU64,
}

impl BeatMetrics {
    /// Metrics for the entries named `entries`, all zero.
    #[must_use]
    pub fn new<S: Into<String>>(entries: impl IntoIterator<Item = S>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|name| (name.into(), EntryCounts::default()))
                .collect(),
            leader: AtomicU64::new(0),
            acquired: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    fn entry(&self, index: usize) -> Option<&EntryCounts> {
        self.entries.get(index).map(|(_, counts)| counts)
    }

    pub(crate) fn enqueued(&self, index: usize, scheduled: Timestamp) {
        if let Some(counts) = self.entry(index) {
            counts.enqueued.fetch_add(1, Ordering::Relaxed);
            counts
                .last_tick_ms
                .fetch_max(scheduled.as_millis(), Ordering::Relaxed);
        }
    }

    pub(crate) fn missed(&self, index: usize, count: u64) {
        if let Some(counts) = self.entry(index) {
            counts.missed.fetch_add(count, Ordering::Relaxed);
        }
    }

    pub(crate) fn duplicate(&self, index: usize) {
        if let Some(counts) = self.entry(index) {
            counts.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_leader(&self, leading: bool) {
        self.leader.store(u64::from(leading), Ordering::Relaxed);
        if leading {
            self.acquired.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn lost(&self) {
        self.leader.store(0, Ordering::Relaxed);
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this replica leads now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed) == 1
    }

    /// Ticks of the entry named `entry` enqueued by this replica.
    #[must_use]
    pub fn enqueued_total(&self, entry: &str) -> u64 {
        self.entries
            .iter()
            .find(|(name, _)| name == entry)
            .map_or(0, |(_, counts)| counts.enqueued.load(Ordering::Relaxed))
    }

    /// The name of every metric family exported, in rendering order: the
    /// families [`render`](Self::render) declares, which it does even
    /// without an entry.
    #[must_use]
    pub fn metric_names(&self) -> Vec<String> {
        self.render()
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    /// Everything in Prometheus' text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let per_entry: [Family; 4] = [
            Family {
                name: "spool_beat_ticks_enqueued_total",
                kind: "counter",
                help: "Ticks this replica enqueued.",
                value: |c| c.enqueued.load(Ordering::Relaxed) as f64,
            },
            Family {
                name: "spool_beat_ticks_missed_total",
                kind: "counter",
                help: "Missed ticks that the entry's catch-up policy did not run.",
                value: |c| c.missed.load(Ordering::Relaxed) as f64,
            },
            Family {
                name: "spool_beat_ticks_duplicate_total",
                kind: "counter",
                help: "Ticks refused because another leader had enqueued them.",
                value: |c| c.duplicates.load(Ordering::Relaxed) as f64,
            },
            Family {
                name: "spool_beat_last_tick_timestamp_seconds",
                kind: "gauge",
                help: "Scheduled time of the last tick this replica enqueued.",
                value: |c| c.last_tick_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            },
        ];
        for family in &per_entry {
            let name = family.name;
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} {}",
                family.help, family.kind
            );
            for (entry, counts) in &self.entries {
                let _ = writeln!(
                    out,
                    "{name}{{entry=\"{}\"}} {}",
                    escape_label(entry),
                    (family.value)(counts)
                );
            }
        }
        let single = [
            (
                "spool_beat_leader",
                "gauge",
                "1 while this replica is the leader, else 0.",
                &self.leader,
            ),
            (
                "spool_beat_leadership_acquired_total",
                "counter",
                "Times this replica became the leader.",
                &self.acquired,
            ),
            (
                "spool_beat_leadership_lost_total",
                "counter",
                "Times this replica lost the lead without resigning.",
                &self.lost,
            ),
        ];
        for (name, kind, help, value) in single {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// One per-entry metric family.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&EntryCounts) -> f64,
}

/// A label value as Prometheus' text format writes it.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_per_entry() {
        let metrics = BeatMetrics::new(["a", "b\"q"]);
        metrics.set_leader(true);
        metrics.enqueued(0, Timestamp::from_millis(1_500));
        metrics.enqueued(0, Timestamp::from_millis(1_000));
        metrics.missed(1, 3);
        metrics.duplicate(1);
        metrics.enqueued(7, Timestamp::from_millis(1)); // unknown index: ignored
        let text = metrics.render();
        for line in [
            "spool_beat_ticks_enqueued_total{entry=\"a\"} 2",
            "spool_beat_ticks_missed_total{entry=\"b\\\"q\"} 3",
            "spool_beat_ticks_duplicate_total{entry=\"b\\\"q\"} 1",
            "spool_beat_last_tick_timestamp_seconds{entry=\"a\"} 1.5",
            "spool_beat_leader 1",
            "spool_beat_leadership_acquired_total 1",
            "spool_beat_leadership_lost_total 0",
            "# TYPE spool_beat_ticks_enqueued_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert_eq!(metrics.enqueued_total("a"), 2);
        let names = metrics.metric_names();
        assert_eq!(names.len(), 7, "{names:?}");
        assert_eq!(BeatMetrics::new(Vec::<String>::new()).metric_names(), names);
        for name in &names {
            assert!(
                text.lines().any(|l| l.starts_with(name.as_str())),
                "{name} has no sample in\n{text}"
            );
        }
        metrics.lost();
        assert!(!metrics.is_leader());
        assert!(
            metrics
                .render()
                .contains("spool_beat_leadership_lost_total 1")
        );
    }
}

//! The `spool_workflow_*` metrics, fed by the runtime's workflow observer
//! events and carried with the task totals from children to the
//! supervisor.
//!
//! | metric | type | labels | counted by |
//! | --- | --- | --- | --- |
//! | `spool_workflow_running` | gauge | | the live workflows in Redis's index at this worker's last sweep, less those it found finished or expired (every worker exports the same figure) |
//! | `spool_workflow_finished_total` | counter | `outcome` | workflows this worker's settlement ended (`succeeded`, `failed`), plus those its sweeper failed past their deadline (`failed`) or dropped from the index after a cancel (`cancelled`: a cancel leaves its workflow in the index, and only the sweep whose removal takes it out counts it, so a cancel counts once across the fleet) |
//! | `spool_workflow_repaired_total` | counter | | outbox entries the sweeper dispatched after a settler died or failed before it did, plus workflows it failed past their deadline |
//! | `spool_workflow_node_latency_seconds` | histogram | | from a node's enqueue (for a child: its last parent settled and the outbox dispatched it) to its handler's start |

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::proto::{MetricFamily, MetricType};
use serde::{Deserialize, Serialize};
use spool_broker::workflow::{Settled, SweepReport};

use super::{counter, family, histogram_with};

/// Upper bounds of the node latency histogram, in seconds: from a
/// millisecond (a chain step on an idle fleet) to a minute (a backlog).
pub const NODE_LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Workflow counts of one process (increments) or of the fleet (totals).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowTotals {
    /// Workflows ended, by outcome.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    finished: BTreeMap<String, u64>,
    /// Repairs by the sweeper.
    #[serde(default, skip_serializing_if = "is_zero")]
    repaired: u64,
    /// Node starts per latency bucket (not cumulative); the last is
    /// `+Inf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    latency_buckets: Vec<u64>,
    /// Seconds of latency in all.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    latency_seconds: f64,
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

impl WorkflowTotals {
    /// Whether nothing was counted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.finished.is_empty() && self.repaired == 0 && self.latency_buckets.is_empty()
    }

    /// Counts a node start `waited` after its enqueue.
    pub(super) fn node_started(&mut self, waited: Duration) {
        let seconds = waited.as_secs_f64();
        if self.latency_buckets.len() != NODE_LATENCY_BUCKETS.len() + 1 {
            self.latency_buckets = vec![0; NODE_LATENCY_BUCKETS.len() + 1];
        }
        let bucket = NODE_LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(NODE_LATENCY_BUCKETS.len());
        self.latency_buckets[bucket] += 1;
        self.latency_seconds += seconds;
    }

    /// Counts a settlement that ended its workflow.
    pub(super) fn node_settled(&mut self, settled: &Settled) {
        if let Settled::Recorded {
            finished: Some(state),
            ..
        } = settled
        {
            *self.finished.entry(state.as_str().to_owned()).or_default() += 1;
        }
    }

    /// Counts a sweep's repairs (and its deadline failures and the
    /// cancels it dropped as finished).
    pub(super) fn swept(&mut self, report: &SweepReport) {
        let expired = report.expired as u64;
        self.repaired += report.redispatched as u64 + expired;
        if expired > 0 {
            *self.finished.entry("failed".to_owned()).or_default() += expired;
        }
        if report.cancelled > 0 {
            *self.finished.entry("cancelled".to_owned()).or_default() += report.cancelled as u64;
        }
    }

    /// Adds `other`'s counts into these.
    pub(super) fn merge(&mut self, other: Self) {
        for (outcome, n) in other.finished {
            *self.finished.entry(outcome).or_default() += n;
        }
        self.repaired += other.repaired;
        if other.latency_buckets.len() == NODE_LATENCY_BUCKETS.len() + 1 {
            if self.latency_buckets.len() != other.latency_buckets.len() {
                self.latency_buckets = vec![0; other.latency_buckets.len()];
            }
            for (into, n) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
                *into += n;
            }
        }
        self.latency_seconds += other.latency_seconds;
    }

    /// The counter and histogram families (empty ones included, for the
    /// list of names).
    pub(super) fn families(&self) -> Vec<MetricFamily> {
        let finished = self
            .finished
            .iter()
            .map(|(outcome, n)| counter(&[("outcome", outcome)], *n))
            .collect();
        let latency = if self.latency_buckets.is_empty() {
            Vec::new()
        } else {
            vec![histogram_with(
                &NODE_LATENCY_BUCKETS,
                &[],
                &self.latency_buckets,
                self.latency_seconds,
            )]
        };
        vec![
            family(
                "spool_workflow_finished_total",
                "Workflows this fleet's workers ended (or, for `cancelled`, found ended by a cancel), by outcome.",
                MetricType::COUNTER,
                finished,
            ),
            family(
                "spool_workflow_repaired_total",
                "Repairs by the workflow sweeper: outbox entries dispatched after a settler \
                 stopped short, and workflows failed past their deadline.",
                MetricType::COUNTER,
                vec![counter(&[], self.repaired)],
            ),
            family(
                "spool_workflow_node_latency_seconds",
                "From a workflow node's enqueue (its parents settled) to its handler's start.",
                MetricType::HISTOGRAM,
                latency,
            ),
        ]
    }
}

/// The running workflows a sweep saw: those it checked, less those it
/// dropped as finished or failed past their deadline.
pub(super) fn running_after(report: &SweepReport) -> u64 {
    report
        .checked
        .saturating_sub(report.dropped + report.expired) as u64
}

#[cfg(test)]
mod tests {
    use spool_broker::workflow::WorkflowState;

    use super::*;

    #[test]
    fn counts_merge_and_render() {
        let mut child = WorkflowTotals::default();
        assert!(child.is_empty());
        child.node_started(Duration::from_micros(1500));
        child.node_started(Duration::from_secs(90));
        child.node_settled(&Settled::Recorded {
            ready: Vec::new(),
            outboxed: false,
            finished: Some(WorkflowState::Succeeded),
        });
        child.node_settled(&Settled::Already);
        child.swept(&SweepReport {
            checked: 5,
            redispatched: 2,
            expired: 1,
            dropped: 2,
            cancelled: 1,
        });
        let mut totals = WorkflowTotals::default();
        totals.merge(child.clone());
        totals.merge(child);
        assert_eq!(totals.repaired, 6);
        assert_eq!(totals.finished["succeeded"], 2);
        assert_eq!(totals.finished["failed"], 2);
        assert_eq!(totals.finished["cancelled"], 2);
        assert_eq!(totals.latency_buckets[1], 2, "1.5 ms is under 2 ms");
        assert_eq!(*totals.latency_buckets.last().unwrap(), 2, "+Inf");
        let json = serde_json::to_string(&totals).unwrap();
        assert_eq!(
            serde_json::from_str::<WorkflowTotals>(&json).unwrap(),
            totals
        );
        let names: Vec<String> = totals
            .families()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(names.len(), 3);
        assert_eq!(
            running_after(&SweepReport {
                checked: 5,
                redispatched: 0,
                expired: 1,
                dropped: 1,
                cancelled: 0,
            }),
            3
        );
    }
}

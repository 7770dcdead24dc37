//! What a supervisor and its children say to each other.
//!
//! - **Supervisor to child**: the [`ChildSpec`] as JSON in the environment
//!   variable `SPOOL_CHILD_SPEC` at start; later, on the child's stdin, the
//!   line `stop` for a warm shutdown. End of file on stdin (the supervisor
//!   is gone) is a warm shutdown too. A cold shutdown is `SIGKILL`.
//! - **Child to supervisor**: JSON lines on the child's stdout, each led by
//!   [`PREFIX`] ([`ChildMessage`]): `ready` once it serves, `retiring` the
//!   moment it stops fetching to recycle itself (the supervisor starts its
//!   replacement then, before the old one finishes), and `metrics` every
//!   second. Any other stdout line (a handler's `println!`) is passed
//!   through to the supervisor's stdout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cli::Settings;
use crate::metrics::{Gauges, TaskTotals};

/// Leads every protocol line on a child's stdout.
pub const PREFIX: &str = "\u{1e}spool-child ";

/// What a supervisor hands a child: the settings (with the queues to
/// serve, after the hardware probe), the probe's findings for the
/// registry, and who its supervisor is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChildSpec {
    /// The merged settings; `queues` holds the queues to serve.
    pub settings: Settings,
    /// The hardware probe's labels, for the registry record.
    pub capabilities: BTreeMap<String, String>,
    /// The supervisor's pid: the child exits at once if its parent is
    /// another process (the supervisor died before the child started).
    pub supervisor_pid: u32,
    /// Which of the supervisor's slots the child fills (for logs).
    pub slot: usize,
}

/// A message from a child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChildMessage {
    /// Connected and serving, under this registry id.
    Ready {
        /// The child's id in the registry (its consumer name).
        id: String,
    },
    /// Stopped fetching to recycle itself; finishing what it holds.
    Retiring {
        /// `max-tasks` or `memory`.
        reason: String,
    },
    /// Task counts since the last report, and the gauges now.
    Metrics {
        /// Increments since the last report.
        increments: TaskTotals,
        /// In flight and prefetched now.
        gauges: Gauges,
    },
}

impl ChildMessage {
    /// The message as one protocol line, newline included.
    #[must_use]
    pub fn to_line(&self) -> String {
        match serde_json::to_string(self) {
            Ok(json) => format!("{PREFIX}{json}\n"),
            // Plain data with string keys: serializing cannot fail.
            Err(_) => String::new(),
        }
    }

    /// Reads a protocol line; `None` for any other line.
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line.strip_prefix(PREFIX)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_other_lines_do_not_parse() {
        for message in [
            ChildMessage::Ready {
                id: "w-1-ab".into(),
            },
            ChildMessage::Retiring {
                reason: "memory".into(),
            },
            ChildMessage::Metrics {
                increments: TaskTotals::default(),
                gauges: Gauges {
                    in_flight: 1,
                    prefetched: 2,
                    workflows_running: None,
                },
            },
        ] {
            let line = message.to_line();
            assert!(line.ends_with('\n'));
            assert_eq!(ChildMessage::parse(line.trim_end()), Some(message));
        }
        assert_eq!(ChildMessage::parse("hello from a handler"), None);
        assert_eq!(ChildMessage::parse(&format!("{PREFIX}not json")), None);
    }
}

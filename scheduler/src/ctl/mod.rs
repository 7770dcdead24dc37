//! The `spoolctl` commands, one function each, generic over the broker.
//!
//! Each command returns a report: a value that serializes to the command's
//! `--json` shape and renders as text for people ([`Report::to_text`]).
//! [`render`] picks one of the two.
//!
//! ```
//! use spool_broker::{Broker, MemoryBroker, QueueName};
//! use spool_scheduler::ctl::{self, CallRequest, Format};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> spool_scheduler::Result<()> {
//! let broker = MemoryBroker::new();
//! let ids = ctl::call(&broker, &CallRequest::new("spool.ping")).await?;
//! assert_eq!(ids.ids.len(), 1);
//! let report = ctl::queues(&broker, &[]).await?;
//! assert!(ctl::render(&report, Format::Text)?.starts_with("QUEUE"));
//! # Ok(())
//! # }
//! ```

mod call;
mod dead;
mod purge;
mod queues;

use serde::Serialize;

pub use self::call::{CallReport, CallRequest, DEFAULT_MAX_ATTEMPTS, MAX_CALL_COUNT, call};
pub use self::dead::{DEFAULT_DEAD_LIMIT, DeadReport, DeadRow, ERROR_WIDTH, dead_list};
pub use self::purge::{PurgeReport, check_purge_confirmed, purge};
pub use self::queues::{QueueRow, QueuesReport, queues, queues_to_show};
use crate::error::{Error, Result};

/// The result of a command, printable for people or for scripts.
pub trait Report: Serialize {
    /// The human rendering, ending with a newline.
    fn to_text(&self) -> String;
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Tables and sentences for people.
    #[default]
    Text,
    /// Pretty-printed JSON for scripts.
    Json,
}

/// Renders a report in `format`, ending with a newline.
///
/// # Errors
///
/// [`Error::Output`] when the report cannot be encoded as JSON, which only
/// a broken `Serialize` implementation can cause.
pub fn render<R: Report + ?Sized>(report: &R, format: Format) -> Result<String> {
    match format {
        Format::Text => Ok(report.to_text()),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(report).map_err(Error::Output)?;
            json.push('\n');
            Ok(json)
        }
    }
}

/// `count` followed by `noun`, plural unless the count is one.
fn plural(count: u64, noun: &str) -> String {
    let s = if count == 1 { "" } else { "s" };
    format!("{count} {noun}{s}")
}

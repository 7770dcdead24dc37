//! The chaos suites' task types, shared by the `chaos-worker` binary and
//! the tests that enqueue them.
#![allow(dead_code, reason = "each suite uses some of these task types")]

use serde::{Deserialize, Serialize};
use spool_broker::Task;

/// Counts its execution, then works for `ms`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Count {
    pub seq: u32,
    pub ms: u64,
}

impl Task for Count {
    const NAME: &'static str = "chaos.count";
    type Output = ();
}

/// Kills its process: the poison message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Abort {}

impl Task for Abort {
    const NAME: &'static str = "chaos.abort";
    type Output = ();
}

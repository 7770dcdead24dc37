//! `spool-worker`: runs Spool tasks.
//!
//! Register a [`Handler`] per task type on a [`Worker`], then
//! [`run`](Worker::run) it. The worker fetches from its queues with a
//! bounded prefetch, runs up to `concurrency` tasks at once, each inside a
//! tracing span carrying the task's name, id, queue and attempt, retries
//! failures with exponential backoff and jitter, dead-letters what cannot
//! run, and acknowledges each task only after its outcome is recorded.
//!
//! This is the runtime an application embeds: it depends on the broker,
//! the SDK, tokio, serde and tracing only. With the `sqlite` or `postgres`
//! feature (or both), a [`Worker`] also records every task's life in the
//! job store on that backend (`Worker::with_store`). The `spool-worker` binary (prefork supervisor,
//! settings, `/metrics`) lives in `spool-worker-cli`, and the video tasks
//! and hardware probe in `spool-video`, both under `worker/`.

// Library crates: every public item documented, and nothing `pub` that the
// crate does not export.
#![warn(missing_docs, unreachable_pub)]

pub mod builtin;
mod config;
mod counters;
mod error;
mod handler;
mod observer;
mod runtime;
mod workflow;

pub use crate::config::{DEFAULT_MAX_RESULT_BYTES, WorkerConfig};
pub use crate::counters::{CounterSnapshot, Counters};
pub use crate::error::{Error, Result};
pub use crate::handler::{Handler, TaskContext, TaskError, TaskErrorKind};
pub use crate::observer::{Observer, Outcome, TaskInfo};
pub use crate::runtime::Worker;

//! The internals of the `spool-worker` binary: its settings ([`cli`]), the
//! prefork [`supervisor`], the worker's [`heartbeat`] record in Redis and
//! its Prometheus [`metrics`]. Also the home of `spool-bench`,
//! `spool-demo` and the video benches.
//!
//! This is not a library for applications, and nothing here is a stable
//! API: an app embeds [`spool_worker`] (the runtime) and, for video,
//! [`spool_video`], as River's `cmd/river` keeps its CLI apart from the
//! library. It is a library only so that the binaries and their tests
//! share it.

pub mod cli;
mod error;
pub mod heartbeat;
pub mod metrics;
pub mod supervisor;

pub use crate::error::{Error, Result};

//! `spool-scheduler`: Spool's control plane.
//!
//! For now this is the `spoolctl` inspection CLI: the binary parses flags
//! and connects to Redis, while this library holds the reusable part, one
//! function per command in [`ctl`], each generic over
//! [`Broker`](spool_broker::Broker) so it runs as well against
//! [`MemoryBroker`](spool_broker::MemoryBroker) in tests (the job store
//! commands take a [`JobStore`](spool_broker::store::JobStore) instead, and
//! `workers` reads the Redis registry), plus the [`table`] renderer behind
//! the human output.
//!
//! Every command returns a report that renders either as a table for people
//! or as JSON for scripts ([`ctl::render`]).
//!
//! [`beat`] is the library behind `spool-beat`, the periodic scheduler:
//! entries from TOML, cron and interval schedules, the missed-tick policy,
//! and the replica that leads through a fenced lock in Redis.
//!
//! `spool-autoscaler` is a crate of its own (`scheduler/autoscaler/`), so
//! that `spoolctl` and `spool-beat` compile none of its NVML, Kubernetes
//! client or plotting code.

pub mod beat;
pub mod ctl;
mod error;
pub mod table;

pub use crate::error::{Error, Result};

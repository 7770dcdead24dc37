//! `spool-beat`, the periodic scheduler: enqueues tasks on cron
//! expressions and fixed intervals, like Celery beat, **each tick exactly
//! once** however many replicas run.
//!
//! # How
//!
//! Every replica runs [`Beat::run`] with the same [`BeatConfig`]. One takes
//! the leader lock in Redis ([`spool_broker::LeaderLock`]) with a fresh
//! fencing token; the others retry every third of the lease (at most 1 s).
//! The leader renews its lease every third of it, enqueues each entry's due
//! ticks, and sleeps until the next one. On shutdown it resigns, so a
//! standby takes over within a second; if it dies, once its lease runs
//! out (plus at most a second).
//!
//! A tick is identified by its entry and its scheduled time, which every
//! replica computes alike ([`Schedule`]). It is enqueued by one Lua script
//! on the queue's slot that refuses stale tokens (fencing), refuses a tick
//! not after the entry's last one (idempotence), and appends the task to
//! its stream, all atomically. So:
//!
//! - **never twice**: no (entry, time) is enqueued twice, whatever the
//!   pauses, partitions, clock skew or lease expiries;
//! - **never by a deposed leader** once the new one has fenced the queue,
//!   which it does before its first tick;
//! - **not lost**: a new or restarted leader resumes each entry from its
//!   last enqueued tick, kept in Redis, and handles what it missed by the
//!   entry's [`CatchUp`] policy.
//!
//! # Missed ticks
//!
//! A tick is *missed* when it is more than [`BeatConfig::grace`] late by
//! the time a leader gets to it: no beat ran, leadership was changing
//! hands, or Redis was down. Each entry says what to do: `latest` (the
//! default, like Celery beat) runs the missed period once, as its most
//! recent tick; `all` runs every missed tick; `skip` runs none. Missed
//! ticks older than the entry's `catch_up_window` (1 day by default) never
//! run. A new entry starts with its next tick.
//!
//! # Time
//!
//! Cron expressions are evaluated in UTC; intervals are aligned on the
//! Unix epoch. Ticks are computed from the leader's clock: keep the hosts'
//! clocks synchronised (NTP). Skew cannot double a tick, only move it.

mod catch_up;
mod config;
mod http;
mod metrics;
mod runner;
mod schedule;

pub use self::catch_up::{CatchUp, MAX_TICKS_PER_PASS};
pub use self::config::{BeatConfig, Entry, HEADER_ENTRY, HEADER_SCHEDULED_AT, MIN_LOCK_TTL};
pub use self::http::serve_metrics;
pub use self::metrics::BeatMetrics;
pub use self::runner::{Beat, EnqueuedTick, LOCK_NAME, Leader, Pass, default_owner};
pub use self::schedule::Schedule;

//! `spool-broker`: the heart of Spool, a distributed task queue for video
//! fleets.
//!
//! This crate defines what a task is ([`Task`], [`TaskOptions`]), what
//! travels for it ([`Envelope`]), where it goes ([`QueueName`],
//! [`Priority`]) and how it is delivered ([`Broker`]): at least once, with
//! late acknowledgement, delayed tasks and dead letters. [`RedisBroker`] is
//! the Redis Streams transport; [`MemoryBroker`] has the same semantics in
//! one process for tests and examples.
//!
//! Applications enqueue through `spool-sdk` and run handlers with
//! `spool-worker`; most never touch this crate's broker API directly.

// Library crates: every public item documented, and nothing `pub` that the
// crate does not export.
#![warn(missing_docs, unreachable_pub)]

#[cfg(all(feature = "store", not(any(feature = "sqlite", feature = "postgres"))))]
compile_error!(
    "spool-broker's `store` feature needs a backend: enable `sqlite`, `postgres` or both"
);

mod broker;
mod envelope;
mod error;
mod job;
mod memory;
mod queue;
mod redact;
mod redis;
pub mod registry;
pub mod rfc3339;
mod signing;
pub mod store;
mod task;
#[cfg(feature = "otel")]
pub mod trace_context;
pub mod workflow;

pub use crate::broker::{
    ACTIVE_CONSUMER_WINDOW, Broker, ControlMessage, ControlStream, DeadLetter, DeadLetterEntry,
    DeadReason, Delivery, DeliveryTag, FetchBatch, Malformed, QueueStats, ReclaimRequest,
    Reclaimed, TaskEvent, TaskEvents, TaskPlace,
};
pub use crate::envelope::{
    DEFAULT_MAX_ENVELOPE_BYTES, Envelope, FORMAT_VERSION, TaskId, Timestamp, decode_payload,
    encode_payload,
};
pub use crate::error::{BoxError, Error, Result};
pub use crate::job::{JobStatus, Progress, RecordPolicy};
pub use crate::memory::MemoryBroker;
pub use crate::queue::{MAX_QUEUE_NAME_LEN, Priority, QueueName};
pub use crate::redact::{HEADER_SECRET_FIELDS, REDACTED, redact_json};
pub use crate::redis::{ClientCertificate, RedisBroker, RedisConfig, TlsConfig};
pub use crate::redis::{FencingToken, LeaderLock, LockHolder, TickOutcome};
pub use crate::registry::{WorkerRecord, WorkerState};
pub use crate::signing::{MIN_SIGNING_KEY_LEN, SigningKeys};
pub use crate::task::{Backoff, RateLimit, Task, TaskOptions};

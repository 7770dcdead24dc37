//! `spool-sdk`: enqueue Spool tasks from your application.
//!
//! A [`Client`] wraps a broker connection. Define each task once as a serde
//! type implementing [`Task`], then enqueue it with per-call overrides:
//!
//! ```no_run
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use spool_sdk::{Client, Priority, QueueName, Task};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Transcode {
//!     input: String,
//!     height: u32,
//! }
//!
//! impl Task for Transcode {
//!     const NAME: &'static str = "app.transcode";
//!     type Output = String;
//! }
//!
//! # async fn demo() -> Result<(), spool_sdk::Error> {
//! let client = Client::connect("redis://127.0.0.1:6379/").await?;
//! let id = client
//!     .enqueue(Transcode { input: "uploads/cat.mp4".into(), height: 720 })
//!     .queue(QueueName::GPU)
//!     .priority(Priority::High)
//!     .countdown(Duration::from_secs(10))
//!     .tenant("acme")
//!     .await?;
//! println!("enqueued {id}");
//! # Ok(()) }
//! ```
//!
#![cfg_attr(
    feature = "store",
    doc = r#"
# Following tasks

With a job store (feature `sqlite`, `postgres` or both), the client records
what it enqueues, and a [`TaskHandle`] follows a task: its status, its
progress as a stream, and [`TaskHandle::wait`] for its typed output,
woken by the worker's notification rather than by polling:

```no_run
# use std::time::Duration;
# use serde::{Deserialize, Serialize};
# use spool_sdk::{Client, Task};
# #[derive(Serialize, Deserialize)]
# struct Transcode { input: String, height: u32 }
# impl Task for Transcode {
#     const NAME: &'static str = "app.transcode";
#     type Output = String;
# }
# async fn demo() -> Result<(), spool_sdk::Error> {
let client =
    Client::connect_with_store("redis://127.0.0.1:6379/", "sqlite://spool.db").await?;
let id = client.enqueue(Transcode { input: "uploads/cat.mp4".into(), height: 720 }).await?;
let output: String = client.task::<Transcode>(id)?.wait(Duration::from_secs(600)).await?;
# let _ = output; Ok(()) }
```

"#
)]
//! The SDK depends only on `spool-broker`: embedding it pulls in no FFmpeg,
//! CUDA, command-line or HTTP code.

// Library crates: every public item documented, and nothing `pub` that the
// crate does not export.
#![warn(missing_docs, unreachable_pub)]

mod client;
mod enqueue;
mod error;
#[cfg(feature = "store")]
mod handle;
pub mod video;
pub mod workflow;

pub use crate::client::Client;
pub use crate::enqueue::{Enqueue, EnqueueMany};
pub use crate::error::{Error, Result};
#[cfg(feature = "store")]
pub use crate::handle::{ProgressStream, TaskHandle};
#[cfg(feature = "store")]
pub use spool_broker::store::{JobRecord, JobStore};
pub use spool_broker::{
    Backoff, Broker, ClientCertificate, JobStatus, MemoryBroker, Priority, Progress, QueueName,
    RateLimit, RecordPolicy, RedisBroker, RedisConfig, SigningKeys, Task, TaskId, TaskOptions,
    Timestamp, TlsConfig,
};

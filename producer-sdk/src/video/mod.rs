//! Video tasks: typed payloads for the worker's built-in FFmpeg tasks.
//!
//! These are plain serde types with no FFmpeg inside: an application
//! enqueues them with the SDK alone, and a `spool-worker` with video tasks
//! enabled runs them.
//!
//! | task | wire name | queue | output |
//! | --- | --- | --- | --- |
//! | [`Transcode`] | `video.transcode` | `default` (`gpu` when [`HardwarePolicy::Require`]) | [`TranscodeOutput`] |
//! | [`Analyze`] | `video.analyze` | `analysis` | [`AnalysisReport`] |
//! | `Package` | `video.package` | `streaming` | HLS/DASH outputs |
//! | [`SampleEncode`] | `video.sample_encode` | `default` | [`SampleScore`] |
//! | [`CrfPick`] | `video.crf_pick` | `default` | [`CrfChoice`] |
//!
//! Each type's `validate` checks its numbers against [`limits`] (even frame
//! sizes, CRF and bitrate ranges, thread counts…); the client calls it on
//! enqueue and the worker again before FFmpeg runs, so an absurd payload
//! fails with its reason ([`Error::InvalidTask`](crate::Error::InvalidTask))
//! instead of reaching FFmpeg.
//!
//! Paths in tasks are relative to the worker's roots (`--input-root`,
//! `--output-root`) or absolute inside them; the worker rejects anything
//! else (`..`, symlinks that leave a root) with an error naming the root.
//! Wherever a path goes, an object URL may go instead ([`Location`]:
//! `s3://bucket/key`, `gs://…`, `az://…`), inside the buckets and prefixes
//! the worker allows (`--allow-bucket`).
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use spool_sdk::Client;
//! use spool_sdk::video::{Analyze, Codec, RateControl, Transcode};
//!
//! # #[cfg(feature = "store")] // the handle reads the job store
//! # async fn demo() -> Result<(), spool_sdk::Error> {
//! let client =
//!     Client::connect_with_store("redis://127.0.0.1:6379/", "sqlite://spool.db").await?;
//! let encode = Transcode::new("clip.mp4", "clip-h264.mp4", Codec::H264).rate(RateControl::Crf(28));
//! let id = client.enqueue(encode).await?;
//! let encoded = client.task::<Transcode>(id)?.wait(Duration::from_secs(600)).await?;
//! let id = client.enqueue(Analyze::new("clip.mp4", &encoded.output)).await?;
//! let report = client.task::<Analyze>(id)?.wait(Duration::from_secs(600)).await?;
//! println!("{} via {}: {:?}", encoded.output, encoded.encoder, report.vmaf);
//! # Ok(()) }
//! ```

mod analyze;
mod ingest;
mod location;
mod package;
mod targeted;
mod transcode;
mod validate;

pub use analyze::*;
pub use ingest::*;
pub use location::{Location, ObjectUrl, Parsed, Scheme};
pub use package::*;
pub use targeted::*;
pub use transcode::*;
pub use validate::limits;
pub(crate) use validate::validate_any;

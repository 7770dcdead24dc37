//! Task types shared by the example producer and worker: in an app, this is
//! the small crate both sides depend on.

use serde::{Deserialize, Serialize};
use spool_sdk::{QueueName, Task, TaskOptions};

/// Make a thumbnail of a video at a given second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thumbnail {
    /// The video, relative to the media root.
    pub video: String,
    /// Where in the video, in seconds.
    pub at_seconds: f64,
}

impl Task for Thumbnail {
    const NAME: &'static str = "example.thumbnail";
    /// The thumbnail's path.
    type Output = String;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::DEFAULT,
            max_attempts: 5,
            ..TaskOptions::default()
        }
    }
}

/// Compiles the README's example as a doc test, so it cannot drift from the
/// API.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

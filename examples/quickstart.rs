//! Define a task, enqueue it, run a worker: Spool in one file.
//!
//! ```text
//! cargo run -p spool-examples --example quickstart
//! ```
//!
//! Needs Redis (`SPOOL_REDIS_URL`, default `redis://127.0.0.1:6379/`).

use std::time::Duration;

use spool_examples::Thumbnail;
use spool_sdk::{Client, Priority};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

/// The handler: any async fn from the task and its context to a result.
async fn make_thumbnail(task: Thumbnail, ctx: TaskContext) -> Result<String, TaskError> {
    println!(
        "attempt {} of {}: {} at {}s",
        ctx.attempt(),
        ctx.name(),
        task.video,
        task.at_seconds
    );
    Ok(format!("{}.{}.jpg", task.video, task.at_seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = Client::connect(&url).await?;

    // Producer side: enqueue, with per-call overrides.
    let id = client
        .enqueue(Thumbnail {
            video: "uploads/cat.mp4".into(),
            at_seconds: 2.5,
        })
        .priority(Priority::High)
        .countdown(Duration::from_millis(500))
        .await?;
    println!("enqueued {id}");

    // Worker side: register the handler and run until the task is done.
    let worker = Worker::new(client.broker().clone(), WorkerConfig::default())
        .register::<Thumbnail, _>(make_thumbnail);
    let counters = worker.counters();
    let report = worker
        .run(async move {
            while counters.snapshot().finished() < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await?;
    println!("succeeded: {}", report.succeeded);
    Ok(())
}

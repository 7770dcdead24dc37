//! A worker process serving thumbnails until Ctrl-C (a warm shutdown: it
//! stops fetching, finishes what runs and acknowledges it).
//!
//! ```text
//! cargo run -p spool-examples --example worker
//! ```

use spool_examples::Thumbnail;
use spool_sdk::RedisBroker;
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

async fn make_thumbnail(task: Thumbnail, _ctx: TaskContext) -> Result<String, TaskError> {
    Ok(format!("{}.{}.jpg", task.video, task.at_seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let url = std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let broker = RedisBroker::connect_url(url).await?;
    let report = Worker::new(broker, WorkerConfig::default())
        .register::<Thumbnail, _>(make_thumbnail)
        .with_builtin_tasks()
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("{report:?}");
    Ok(())
}

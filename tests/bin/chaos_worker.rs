//! A real worker process for the chaos suites: the `spool-worker` runtime
//! with tasks that record every execution in Redis, so a test that SIGKILLs
//! it can count lost tasks and duplicate executions exactly.

use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use redis::AsyncCommands;
use spool_broker::{QueueName, RedisBroker, RedisConfig};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    redis_url: String,
    #[arg(long)]
    key_prefix: String,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 16)]
    prefetch: usize,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    visibility_timeout: Duration,
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    #[arg(long, default_value_t = 5)]
    max_deliveries: u32,
}

mod chaos_tasks;
use chaos_tasks::{Abort, Count};

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = RedisConfig {
        key_prefix: args.key_prefix.clone(),
        ..RedisConfig::from_url(&args.redis_url)
    };
    let broker = RedisBroker::connect(config).await?;
    let runs_key = format!("{}:chaos:runs", args.key_prefix);
    // Reconnects by itself, like Spool's own connection (on one server):
    // the counter must survive the Redis restarts the chaos suites cause.
    let counter = spool_tests::RawConnection::open(&args.redis_url).await;
    let worker = Worker::new(
        broker,
        WorkerConfig {
            queues: vec![QueueName::DEFAULT],
            concurrency: args.concurrency,
            prefetch: args.prefetch,
            poll_interval: Duration::from_millis(200),
            visibility_timeout: args.visibility_timeout,
            heartbeat_interval: args.heartbeat_interval,
            max_deliveries: args.max_deliveries,
            ..WorkerConfig::default()
        },
    )
    .register::<Count, _>(move |task: Count, _: TaskContext| {
        let mut counter = counter.clone();
        let runs_key = runs_key.clone();
        async move {
            let _: i64 = counter.hincr(&runs_key, task.seq, 1).await?;
            tokio::time::sleep(Duration::from_millis(task.ms)).await;
            Ok::<_, TaskError>(())
        }
    })
    .register::<Abort, _>(|_: Abort, _: TaskContext| async {
        std::process::abort();
        #[allow(unreachable_code)]
        Ok::<_, TaskError>(())
    });
    // SIGTERM: warm shutdown, as spool-worker does.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    worker
        .run(async move {
            terminate.recv().await;
        })
        .await?;
    Ok(())
}

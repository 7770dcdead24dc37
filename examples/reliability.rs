//! A tour of Spool's delivery guarantees on a real Redis.
//!
//! Enqueues a mix of tasks (plain work, slow work, flaky work that succeeds
//! after retries, a countdown, and one task no worker knows), runs a worker
//! until every task has an outcome, and prints what happened. Its keys live
//! under a fresh prefix that is deleted at the end.
//!
//! ```text
//! cargo run --release -p spool-examples --example reliability
//! SPOOL_TASKS=100000 cargo run --release -p spool-examples --example reliability
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use spool_sdk::Client;
use spool_sdk::{Broker, QueueName, RedisBroker, RedisConfig, Task};
use spool_worker::builtin::{Echo, Fail, Ping, Sleep};
use spool_worker::{Worker, WorkerConfig};

/// A task type no worker registers, to show dead-lettering.
#[derive(Serialize, Deserialize)]
struct Unknown {}

impl Task for Unknown {
    const NAME: &'static str = "demo.not-registered";
    type Output = ();
}

/// What the tour does, from the environment.
#[derive(Debug)]
struct Args {
    /// `SPOOL_REDIS_URL`, default `redis://127.0.0.1:6379/`.
    redis_url: String,
    /// `SPOOL_TASKS`: how many `spool.echo` tasks to enqueue, default 10,000.
    tasks: u64,
    /// Worker concurrency: 32.
    concurrency: usize,
}

impl Args {
    fn from_env() -> Result<Self> {
        let tasks = match std::env::var("SPOOL_TASKS") {
            Ok(n) => n.parse().context("SPOOL_TASKS is not a number")?,
            Err(_) => 10_000,
        };
        Ok(Self {
            redis_url: std::env::var("SPOOL_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned()),
            tasks,
            concurrency: 32,
        })
    }
}

#[derive(Debug)]
struct Outcome {
    enqueued: u64,
    succeeded: u64,
    retried: u64,
    dead_lettered: u64,
    failed: u64,
    seconds: f64,
    dead_letter_reasons: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::from_env()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let prefix = format!("spool-tour-{}", spool_sdk::TaskId::new());
    let config = RedisConfig {
        key_prefix: prefix,
        ..RedisConfig::from_url(&args.redis_url)
    };
    let broker = RedisBroker::connect(config)
        .await
        .with_context(|| format!("connecting to Redis at {}", args.redis_url))?;
    let outcome = run(&args, &broker).await;
    purge(&broker).await?;
    let outcome = outcome?;
    print(&outcome);
    Ok(())
}

async fn run(args: &Args, broker: &RedisBroker) -> Result<Outcome> {
    let client = Client::new(broker.clone());
    let started = Instant::now();
    client
        .enqueue_many((0..args.tasks).map(|n| Echo { value: n.into() }))
        .await?;
    client
        .enqueue_many((0..20).map(|_| Sleep { ms: 50 }))
        .queue(QueueName::ANALYSIS)
        .await?;
    client
        .enqueue_many((0..5).map(|_| Fail { times: 2 }))
        .await?;
    client
        .enqueue(Ping {})
        .countdown(Duration::from_secs(1))
        .await?;
    client.enqueue(Unknown {}).await?;
    let enqueued = args.tasks + 20 + 5 + 1 + 1;
    println!("enqueued {enqueued} tasks");

    let config = WorkerConfig {
        queues: vec![QueueName::DEFAULT, QueueName::ANALYSIS],
        concurrency: args.concurrency,
        prefetch: args.concurrency * 8,
        poll_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(broker.clone(), config).with_builtin_tasks();
    let counters = worker.counters();
    let watch = counters.clone();
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        worker.run(async move {
            while watch.snapshot().finished() < enqueued {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }),
    )
    .await
    .context("the demo did not finish within 2 minutes")??;

    let dead = broker.dead_letters(&QueueName::DEFAULT, 10).await?;
    let outcome = Outcome {
        enqueued,
        succeeded: report.succeeded,
        retried: report.retried,
        dead_lettered: report.dead_lettered,
        failed: report.failed,
        seconds: started.elapsed().as_secs_f64(),
        dead_letter_reasons: dead
            .iter()
            .map(|d| format!("{}: {}", d.reason, d.error))
            .collect(),
    };
    if outcome.succeeded + outcome.dead_lettered != enqueued {
        bail!("lost tasks: {outcome:?}");
    }
    Ok(outcome)
}

async fn purge(broker: &RedisBroker) -> Result<()> {
    for queue in QueueName::ROUTED {
        broker.purge(&queue).await?;
    }
    Ok(())
}

fn print(o: &Outcome) {
    println!("{} tasks, outcome after {:.2} s:", o.enqueued, o.seconds);
    println!("  succeeded      {:>8}", o.succeeded);
    println!(
        "  retried        {:>8}  (spool.fail tasks succeed on their third run)",
        o.retried
    );
    println!("  dead-lettered  {:>8}", o.dead_lettered);
    println!("  failed         {:>8}", o.failed);
    for reason in &o.dead_letter_reasons {
        println!("  dead letter: {reason}");
    }
}

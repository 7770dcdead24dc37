//! `spool-beat`: Spool's periodic scheduler, like Celery beat.
//!
//! ```text
//! spool-beat --config beat.toml                 # run a replica (run several)
//! spool-beat --config beat.toml --check         # validate, print the next ticks
//! spool-beat --config beat.toml --metrics-addr 0.0.0.0:9465
//! ```
//!
//! Replicas share the leader lock in Redis: one enqueues, the others stand
//! by, and each tick is enqueued exactly once. SIGTERM or Ctrl-C resigns
//! the lead so a standby takes over at once. The library side is
//! `spool_scheduler::beat`.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use spool_broker::store::JobStore;
use spool_broker::{RedisConfig, Timestamp};
use spool_cli_common::{ConnectionArgs, ConnectionFile, LogFormat, init_logging};
use spool_scheduler::beat::{Beat, BeatConfig, serve_metrics};

/// Enqueue tasks on cron expressions and fixed intervals, each tick once
/// across every replica.
#[derive(Debug, Parser)]
#[command(name = "spool-beat", version)]
struct Cli {
    /// The TOML file of entries (see the README's "Periodic tasks").
    #[arg(long, env = "SPOOL_BEAT_CONFIG", value_name = "FILE")]
    config: PathBuf,

    // Redis, the key prefix, the signing keys (each tick is signed with the
    // first line), TLS and the Redis timeouts, as every binary takes them.
    // (No doc comment: clap would take it for the about.)
    #[command(flatten)]
    connection: ConnectionArgs,

    /// Serve Prometheus metrics (`spool_beat_*`) on this address.
    #[arg(long, env = "SPOOL_BEAT_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Log lines for people, or one JSON object per line.
    #[arg(long, env = "SPOOL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, hide_possible_values = true)]
    log_format: LogFormat,

    /// Check the configuration, print each entry's next ticks and exit,
    /// without connecting to Redis.
    #[arg(long)]
    check: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = spool_cli_common::parse_args();
    let _telemetry = init_logging(cli.log_format, "info");
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spool-beat: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config = BeatConfig::load(&cli.config)?;
    if cli.check {
        print!("{}", describe(&config));
        return Ok(());
    }
    if config.entries.is_empty() {
        tracing::warn!("the configuration has no entries: this replica will enqueue nothing");
    }
    // A hung call must not outlive the lease it was made under.
    let command_timeout = (config.lock_ttl / 3).max(Duration::from_secs(1));
    let connection = ConnectionFile::from(cli.connection).resolve(command_timeout)?;
    let broker = connection
        .connect(RedisConfig {
            // The beat never blocks on a fetch.
            pool_size: 1,
            ..connection.redis_config()?
        })
        .await
        .context("cannot connect to Redis")?;
    let mut beat = Beat::new(broker, config)?;
    if connection.store_url.trim() != spool_cli_common::NO_STORE
        && !connection.store_url.trim().is_empty()
    {
        // The URL is not part of the error: it may hold a password.
        let store = JobStore::connect(connection.store_url.trim())
            .await
            .context("cannot open the job store")?;
        beat = beat.with_store(store);
    }
    let server = match cli.metrics_addr {
        Some(addr) => {
            let metrics = std::sync::Arc::clone(beat.metrics());
            Some(serve_metrics(addr, move || metrics.render()).await?.1)
        }
        None => None,
    };
    beat.run(shutdown_signal()).await;
    if let Some(server) = server {
        server.abort();
    }
    Ok(())
}

/// Each entry with its schedule, policy and next three ticks.
fn describe(config: &BeatConfig) -> String {
    let mut out = format!(
        "lock_ttl {}, grace {}, {} entries\n",
        humantime::format_duration(config.lock_ttl),
        humantime::format_duration(config.grace),
        config.entries.len()
    );
    let now = Timestamp::now();
    for entry in &config.entries {
        out.push_str(&format!(
            "{}: {} on queue {}, {}, catch_up {} within {}\n",
            entry.name,
            entry.call.name,
            entry.call.queue,
            entry.schedule,
            entry.catch_up,
            humantime::format_duration(entry.catch_up_window)
        ));
        let mut at = now;
        for _ in 0..3 {
            let Some(next) = entry.schedule.next_after(at) else {
                break;
            };
            out.push_str(&format!("  next {next}\n"));
            at = next;
        }
    }
    out
}

/// Completes on the first SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

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

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, ValueEnum};
use spool_broker::{RedisBroker, RedisConfig, SigningKeys, Timestamp};
use spool_cli_common::TlsArgs;
use spool_scheduler::beat::{Beat, BeatConfig, serve_metrics};

/// Enqueue tasks on cron expressions and fixed intervals, each tick once
/// across every replica.
#[derive(Parser)]
#[command(name = "spool-beat", version)]
struct Cli {
    /// The TOML file of entries (see the README's "Periodic tasks").
    #[arg(long, env = "SPOOL_BEAT_CONFIG", value_name = "FILE")]
    config: PathBuf,

    /// The Redis holding the queues; credentials in it are never printed.
    #[arg(
        long,
        env = "SPOOL_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/",
        value_name = "URL"
    )]
    redis_url: String,

    /// The first part of every Spool key, as the workers were configured.
    #[arg(
        long,
        env = "SPOOL_KEY_PREFIX",
        default_value = "spool",
        value_name = "PREFIX"
    )]
    key_prefix: String,

    /// The workers' file of HMAC signing keys, where they require signed
    /// tasks: each tick is signed with its first line.
    #[arg(long, env = "SPOOL_SIGNING_KEY_FILE", value_name = "FILE")]
    signing_key_file: Option<PathBuf>,

    #[command(flatten)]
    tls: TlsArgs,

    /// Serve Prometheus metrics (`spool_beat_*`) on this address.
    #[arg(long, env = "SPOOL_BEAT_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Log lines for people, or one JSON object per line.
    #[arg(long, env = "SPOOL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,

    /// Check the configuration, print each entry's next ticks and exit,
    /// without connecting to Redis.
    #[arg(long)]
    check: bool,
}

// By hand: the URL may hold a password.
impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("config", &self.config)
            .field("redis_url", &RedisConfig::redact(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("signing_key_file", &self.signing_key_file)
            .field("tls", &self.tls)
            .field("metrics_addr", &self.metrics_addr)
            .field("log_format", &self.log_format)
            .field("check", &self.check)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spool-beat: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let text = std::fs::read_to_string(&cli.config)
        .with_context(|| format!("cannot read {}", cli.config.display()))?;
    let config =
        BeatConfig::from_toml(&text).with_context(|| format!("in {}", cli.config.display()))?;
    if cli.check {
        print!("{}", describe(&config));
        return Ok(());
    }
    if config.entries.is_empty() {
        tracing::warn!("the configuration has no entries: this replica will enqueue nothing");
    }
    let signing = cli
        .signing_key_file
        .as_deref()
        .map(SigningKeys::from_file)
        .transpose()?;
    let broker = RedisBroker::connect(RedisConfig {
        url: cli.redis_url,
        key_prefix: cli.key_prefix,
        signing,
        tls: cli.tls.load()?,
        // The beat never blocks on a fetch.
        pool_size: 1,
        // A hung call must not outlive the lease it was made under.
        response_timeout: (config.lock_ttl / 3).max(Duration::from_secs(1)),
        ..RedisConfig::default()
    })
    .await
    .context("cannot connect to Redis")?;
    let beat = Beat::new(broker, config)?;
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

/// Logs to stderr at info unless `RUST_LOG` says otherwise.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

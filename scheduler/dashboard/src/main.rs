//! `spool-dashboard`: Spool's web dashboard.
//!
//! ```text
//! spool-dashboard --store-url sqlite:///var/lib/spool/jobs.db      # http://127.0.0.1:9470/
//! spool-dashboard --listen 0.0.0.0:9470 --token-file /etc/spool/dashboard.token
//! spool-dashboard --read-only --beat-config beat.toml --media-root /srv/media
//! ```
//!
//! On a loopback address it needs nothing; on any other it refuses to
//! start without `--token-file` or `--basic-auth-file`. The library side
//! is `spool_dashboard`.

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
use spool_broker::{QueueName, RedisConfig};
use spool_cli_common::{ConnectionArgs, LogFormat, init_logging};
use spool_dashboard::{Access, Dashboard, DashboardConfig, config};
use spool_scheduler::beat::BeatConfig;

/// Serve Spool's web dashboard: queues, tasks, workers, dead letters,
/// beat entries and workflows, live.
#[derive(Debug, Parser)]
#[command(name = "spool-dashboard", version)]
struct Cli {
    // Redis, the key prefix, the signing keys (dead letters retried from
    // the dashboard are signed with the first line), TLS, the job store
    // and the Redis timeouts, as every binary takes them. (No doc
    // comment: clap would take it for the about.)
    #[command(flatten)]
    connection: ConnectionArgs,

    /// The address to serve on; any but loopback needs --token-file or
    /// --basic-auth-file.
    #[arg(long, env = "SPOOL_DASHBOARD_LISTEN", default_value_t = config::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: SocketAddr,

    /// A file whose first line is the access token (16 characters or
    /// more): `Authorization: Bearer TOKEN`, or open the dashboard once
    /// with ?token=TOKEN.
    #[arg(
        long,
        env = "SPOOL_DASHBOARD_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "basic_auth_file"
    )]
    token_file: Option<PathBuf>,

    /// A file whose first line is `user:password` for HTTP basic
    /// authentication.
    #[arg(long, env = "SPOOL_DASHBOARD_BASIC_AUTH_FILE", value_name = "FILE")]
    basic_auth_file: Option<PathBuf>,

    /// Show the pages only: no pause, purge, revoke, retry or cancel.
    #[arg(long, env = "SPOOL_DASHBOARD_READ_ONLY")]
    read_only: bool,

    /// How often the queues are read for the overview and its live updates.
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    sample_interval: Duration,

    /// Also show this queue (repeatable); the routed, paused, known and
    /// served queues always show.
    #[arg(long = "queue", value_name = "QUEUE")]
    queues: Vec<QueueName>,

    /// Play packaged outputs found under this directory (the workers'
    /// output root, as this host sees it).
    #[arg(long, env = "SPOOL_DASHBOARD_MEDIA_ROOT", value_name = "DIR")]
    media_root: Option<PathBuf>,

    /// The spool-beat configuration whose entries the Beat page shows.
    #[arg(long, env = "SPOOL_BEAT_CONFIG", value_name = "FILE")]
    beat_config: Option<PathBuf>,

    /// Log lines for people, or one JSON object per line.
    #[arg(long, env = "SPOOL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, hide_possible_values = true)]
    log_format: LogFormat,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_millis(100) {
        return Err("must be at least 100ms".to_owned());
    }
    Ok(interval)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = spool_cli_common::parse_args();
    let _telemetry = init_logging(cli.log_format, "info");
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spool-dashboard: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let access = match (&cli.token_file, &cli.basic_auth_file) {
        (Some(path), _) => Access::token_file(path)?,
        (None, Some(path)) => Access::basic_file(path)?,
        (None, None) => Access::Open,
    };
    // Checked before connecting: a public address without credentials
    // never serves, even for a moment.
    access.check_listen(cli.listen)?;
    let beat = cli
        .beat_config
        .as_deref()
        .map(BeatConfig::load)
        .transpose()
        .context("cannot load --beat-config")?;
    let connection = cli.connection.resolve()?;
    let broker = connection
        .connect(RedisConfig {
            // Pages and the sampler take turns; the task streams
            // subscribe on connections of their own.
            pool_size: 4,
            ..connection.redis_config()?
        })
        .await
        .context("cannot connect to Redis")?;
    let store = match spool_scheduler::ctl::require_store(&connection.store_url) {
        // The URL is not part of the error: it may hold a password.
        Ok(url) => Some(
            JobStore::connect(url)
                .await
                .context("cannot open the job store")?,
        ),
        Err(_) => {
            tracing::warn!(
                "no job store (--store-url): the task, search and workflow pages are off"
            );
            None
        }
    };
    let config = DashboardConfig {
        listen: cli.listen,
        access,
        read_only: cli.read_only,
        sample_interval: cli.sample_interval,
        queues: cli.queues,
        media_root: cli.media_root,
        ..DashboardConfig::default()
    };
    let dashboard = Dashboard::new(broker, store.clone(), beat, config)?;
    dashboard.serve(shutdown_signal()).await?;
    if let Some(store) = store {
        store.close().await;
    }
    Ok(())
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

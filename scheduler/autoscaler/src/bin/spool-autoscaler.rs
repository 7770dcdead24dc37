//! `spool-autoscaler`: grows and shrinks pools of Spool workers with their
//! queues' backlog.
//!
//! ```text
//! spool-autoscaler --config autoscaler.toml              # run, acting
//! spool-autoscaler --config autoscaler.toml --dry-run    # print decisions only
//! spool-autoscaler --config autoscaler.toml --dry-run --once --json
//! spool-autoscaler simulate --profile load.toml --policy autoscaler.toml --out sim/
//! ```
//!
//! Settings come from the TOML file (`--config`), which flags and their
//! environment variables override. The library behind it is
//! `spool_autoscaler`; this file parses flags, wires the parts
//! together and prints.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use spool_autoscaler::{
    Actuator, ActuatorKind, Autoscaler, AutoscalerConfig, KubernetesActuator, LoadProfile,
    LocalActuator, SignalReader, TickReport, gpus_for, parse_optional_addr, serve_metrics,
    simulate,
};
use spool_cli_common::{
    Connection, ConnectionArgs, ConnectionFile, DEFAULT_COMMAND_TIMEOUT, LogFormat, init_logging,
};
use tokio::sync::watch;
use tracing::{info, warn};

/// Scale pools of Spool workers with their queues' backlog.
#[derive(Debug, Parser)]
#[command(
    name = "spool-autoscaler",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Settings come from the --config TOML file; flags and their environment variables override it. See ops/autoscaler.md."
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a load profile against a pool's policy, offline, and write
    /// DIR/simulation.csv and DIR/simulation.png.
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The configuration file (TOML): pools, policies, actuator.
    #[arg(long, env = "SPOOL_AUTOSCALER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    // Redis (its URL and key prefix over the file's), TLS and the Redis
    // timeouts, as every binary takes them. (No doc comment: clap would
    // take it for the about.)
    #[command(flatten)]
    connection: ConnectionArgs,

    /// How often to read the signals and decide, such as 1s or 500ms
    /// [default: the file's, else 1s].
    #[arg(long, env = "SPOOL_AUTOSCALER_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    interval: Option<Duration>,

    /// Serve Prometheus metrics on this address, or none [default: the
    /// file's, else 127.0.0.1:9466].
    #[arg(long, env = "SPOOL_AUTOSCALER_METRICS_ADDR", value_name = "ADDR", value_parser = parse_metrics_addr)]
    metrics_addr: Option<MetricsAddr>,

    /// Which actuator acts: local (spool-worker processes) or kubernetes
    /// (Deployment replicas) [default: the file's, else local].
    #[arg(long, env = "SPOOL_AUTOSCALER_ACTUATOR", value_name = "KIND", value_parser = parse_actuator)]
    actuator: Option<ActuatorKind>,

    /// The spool-worker executable for the local actuator [default: the
    /// file's, else the one next to this executable, else PATH].
    #[arg(long, env = "SPOOL_WORKER_BIN", value_name = "PATH")]
    worker_bin: Option<PathBuf>,

    /// The GPUs present, instead of counting them with NVML.
    #[arg(long, env = "SPOOL_AUTOSCALER_GPUS", value_name = "N")]
    gpus: Option<u32>,

    /// Decide and print, but start and retire nothing.
    #[arg(long)]
    dry_run: bool,

    /// Print one JSON object per tick instead of table lines (with
    /// --dry-run or --once).
    #[arg(long)]
    json: bool,

    /// Run a single tick, print it and exit.
    #[arg(long)]
    once: bool,

    /// Print the merged configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,

    /// Log format (logs go to standard error).
    #[arg(
        long,
        env = "SPOOL_LOG_FORMAT",
        value_enum,
        default_value = "human",
        hide_possible_values = true
    )]
    log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax: info, spool_autoscaler=debug).
    #[arg(long, env = "SPOOL_LOG", default_value = "info", value_name = "FILTER")]
    log_level: String,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// The load profile: TOML (phases, bursts, durations) or CSV
    /// (header t,arrivals or t,arrivals,duration).
    #[arg(long, value_name = "FILE")]
    profile: PathBuf,

    /// The autoscaler configuration whose pool policy to replay.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,

    /// Where to write simulation.csv and simulation.png (created if
    /// missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// The pool to simulate, when the configuration has several.
    #[arg(long, value_name = "NAME")]
    pool: Option<String>,

    /// Seeds the random draws, instead of the profile's seed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `--metrics-addr`: an address, or none.
#[derive(Debug, Clone, Copy)]
struct MetricsAddr(Option<SocketAddr>);

fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    parse_optional_addr(text).map(MetricsAddr)
}

fn parse_actuator(text: &str) -> Result<ActuatorKind, String> {
    text.parse()
        .map_err(|e: spool_autoscaler::Error| e.to_string())
}

fn main() -> ExitCode {
    let cli: Cli = spool_cli_common::parse_args();
    let outcome = match cli.command {
        Some(Command::Simulate(args)) => run_simulation(&args),
        None => {
            let _telemetry = init_logging(cli.run.log_format, &cli.run.log_level);
            run_daemon(&cli.run)
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spool-autoscaler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The file's settings with the flags' (and environment's) on top.
fn merged_config(args: &RunArgs) -> Result<AutoscalerConfig> {
    let mut config = match &args.config {
        Some(path) => AutoscalerConfig::load(path)?,
        None => AutoscalerConfig::default(),
    };
    if let Some(url) = &args.connection.redis_url {
        config.redis_url.clone_from(url);
    }
    if let Some(prefix) = &args.connection.key_prefix {
        config.key_prefix.clone_from(prefix);
    }
    if let Some(interval) = args.interval {
        config.interval = interval;
    }
    if let Some(MetricsAddr(addr)) = args.metrics_addr {
        config.metrics_addr = addr;
    }
    if let Some(kind) = args.actuator {
        config.actuator = kind;
    }
    if let Some(bin) = &args.worker_bin {
        config.local.worker_bin = Some(bin.clone());
    }
    if let Some(gpus) = args.gpus {
        config.gpus = Some(gpus);
    }
    if config.pools.is_empty() && args.config.is_none() {
        bail!("no pool configured: pass --config FILE (see ops/autoscaler.md)");
    }
    Ok(config.validated()?)
}

fn run_daemon(args: &RunArgs) -> Result<()> {
    let config = merged_config(args)?;
    if args.print_config {
        let mut shown = config.clone();
        shown.redis_url = redact(&shown.redis_url);
        if shown.kubernetes.token.is_some() {
            shown.kubernetes.token = Some("<redacted>".to_owned());
        }
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    if args.once && !args.dry_run && config.actuator == ActuatorKind::Local {
        bail!(
            "--once with the local actuator would retire the workers it starts as it exits: use \
             --dry-run, or the kubernetes actuator"
        );
    }
    // One thread: workers started by the local actuator get SIGTERM from
    // the kernel when the thread that started them exits, so it must live
    // as long as the process.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let connection = connection(args, &config)?;
    runtime.block_on(async {
        let broker = connection
            .connect(connection.redis_config()?)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", redact(&config.redis_url)))?;
        let reader = SignalReader::new(broker);
        let gpus = gpus_for(&config);
        match config.actuator {
            ActuatorKind::Local => {
                let local = LocalActuator::new(&config).with_tls(&connection.tls_args());
                if !args.dry_run {
                    let version = local.check().await?;
                    info!(bin = %local.worker_bin().display(), %version, "local actuator ready");
                }
                drive(Autoscaler::new(config, reader, local, gpus)?, args).await
            }
            ActuatorKind::Kubernetes => {
                let k8s = KubernetesActuator::new(&config.kubernetes)?;
                info!(
                    api = k8s.api_url(),
                    namespace = k8s.namespace(),
                    "kubernetes actuator ready"
                );
                drive(Autoscaler::new(config, reader, k8s, gpus)?, args).await
            }
        }
    })
}

/// The connection flags over the configuration's Redis URL and key prefix.
fn connection(args: &RunArgs, config: &AutoscalerConfig) -> Result<Connection> {
    let file = ConnectionFile {
        redis_url: Some(config.redis_url.clone()),
        key_prefix: Some(config.key_prefix.clone()),
        ..ConnectionFile::default()
    };
    Ok(args
        .connection
        .clone()
        .over(file)
        .resolve(DEFAULT_COMMAND_TIMEOUT)?)
}

/// Runs the autoscaler (or one tick) and prints what `--dry-run`,
/// `--once` and `--json` ask for.
async fn drive<A: Actuator>(autoscaler: Autoscaler<A>, args: &RunArgs) -> Result<()> {
    let autoscaler = autoscaler.dry_run(args.dry_run);
    let print = args.dry_run || args.once;
    let json = args.json;
    let mut header_printed = false;
    let mut on_tick = move |report: &TickReport| {
        if !print {
            return;
        }
        let mut out = io::stdout().lock();
        let written = if json {
            serde_json::to_string(report)
                .map_err(io::Error::other)
                .and_then(|line| writeln!(out, "{line}"))
        } else {
            let header = if header_printed {
                Ok(())
            } else {
                header_printed = true;
                writeln!(out, "{}", TickReport::HEADER)
            };
            header.and_then(|()| write!(out, "{}", report.to_lines()))
        };
        // A closed pipe (| head) is not worth a panic.
        let _ = written.and_then(|()| out.flush());
    };
    let server = match autoscaler.config().metrics_addr {
        Some(addr) if !args.once => Some(serve_metrics(addr, autoscaler.metrics()).await?.1),
        _ => None,
    };
    let result = if args.once {
        let mut autoscaler = autoscaler;
        let report = autoscaler.tick().await?;
        on_tick(&report);
        Ok(())
    } else {
        let signals = signal_counter()?;
        autoscaler
            .run(
                signals_reach(signals.clone(), 1),
                signals_reach(signals, 2),
                on_tick,
            )
            .await
            .map_err(anyhow::Error::from)
    };
    if let Some(server) = server {
        server.abort();
    }
    result
}

/// Counts SIGTERM and SIGINT: the first stops the autoscaler (retiring its
/// workers warmly), the second hurries them (their cold shutdown).
fn signal_counter() -> Result<watch::Receiver<u32>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (tx, rx) = watch::channel(0_u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = term.recv() => {}
                Some(()) = int.recv() => {}
                else => return,
            }
            let seen = *tx.borrow() + 1;
            if seen == 1 {
                info!(
                    "signal received: retiring the workers (warm shutdown); a second signal hurries them"
                );
            } else {
                warn!("second signal: cold shutdown");
            }
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Completes once `count` signals have arrived.
async fn signals_reach(mut rx: watch::Receiver<u32>, count: u32) {
    if rx.wait_for(|&seen| seen >= count).await.is_err() {
        // The counter is gone: no more signals can come.
        std::future::pending::<()>().await;
    }
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<credentials>@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn run_simulation(args: &SimulateArgs) -> Result<()> {
    let mut profile = LoadProfile::load(&args.profile)?;
    if let Some(seed) = args.seed {
        profile.seed = seed;
    }
    let config = AutoscalerConfig::load(&args.policy)?.validated()?;
    let run = simulate(&config, args.pool.as_deref(), &profile)?;
    let (csv, png) = run.write_to(&args.out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run.summary)?);
    } else {
        print!("{}", run.summary.to_text());
        println!("wrote {} and {}", csv.display(), png.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@redis:6379/0"),
            "redis://<credentials>@redis:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }

    #[test]
    fn flags_override_the_file() {
        let dir =
            std::env::temp_dir().join(format!("spool-autoscaler-bin-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(
            &file,
            "interval = \"5s\"\ngpus = 1\n[[pools]]\nname = \"p\"\nqueues = [\"q\"]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "spool-autoscaler",
            "--config",
            file.to_str().unwrap(),
            "--interval",
            "250ms",
            "--metrics-addr",
            "none",
            "--actuator",
            "k8s",
            "--key-prefix",
            "other",
        ])
        .unwrap();
        let config = merged_config(&cli.run).unwrap();
        assert_eq!(config.interval, Duration::from_millis(250));
        assert_eq!((config.metrics_addr, config.gpus), (None, Some(1)));
        assert_eq!(config.actuator, ActuatorKind::Kubernetes);
        assert_eq!(config.key_prefix, "other");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

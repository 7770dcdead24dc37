//! `spoolctl`: inspect and drive Spool's queues on Redis.
//!
//! ```text
//! spoolctl queues                      # tasks per queue, by state
//! spoolctl call spool.ping --count 3   # enqueue by name, like `celery call`
//! spoolctl dead list gpu               # a queue's dead letters
//! spoolctl purge gpu --yes             # delete every task of a queue
//! spoolctl dead retry gpu              # requeue a queue's dead letters
//! spoolctl dead purge gpu --yes        # delete a queue's dead letters
//! spoolctl revoke <ID>                 # tell the workers not to run a task
//! spoolctl workers                     # the worker processes and their load
//! spoolctl tasks --status failed       # the job store's records, newest first
//! spoolctl task show <ID>              # one task's record
//! ```
//!
//! `tasks` and `task show` read the job store (`--store-url`).
//!
//! Every command takes `--json` for scripts. The commands themselves live in
//! `spool_scheduler::ctl`; this file parses flags, connects and prints.

use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use spool_broker::store::{JobStatus, JobStore};
use spool_broker::{Priority, QueueName, RedisBroker, RedisConfig, TaskId};
use spool_scheduler::ctl::{
    self, CallRequest, DEFAULT_DEAD_LIMIT, DEFAULT_MAX_ATTEMPTS, DEFAULT_TASKS_LIMIT, Format,
    TasksFilter,
};

/// Inspect and drive Spool's task queues.
#[derive(Debug, Parser)]
#[command(name = "spoolctl", version, propagate_version = true)]
struct Cli {
    /// The Redis holding the queues; credentials in it are never printed.
    #[arg(
        long,
        global = true,
        env = "SPOOL_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/",
        value_name = "URL"
    )]
    redis_url: String,

    /// The first part of every Spool key, as the workers were configured.
    #[arg(
        long,
        global = true,
        env = "SPOOL_KEY_PREFIX",
        default_value = "spool",
        value_name = "PREFIX"
    )]
    key_prefix: String,

    /// The job store that `tasks` and `task show` read (sqlite://FILE or
    /// postgres://...); "none" for no store. Credentials in it are never
    /// printed.
    #[arg(
        long,
        global = true,
        env = "SPOOL_STORE_URL",
        hide_env_values = true,
        default_value = ctl::NO_STORE,
        value_name = "URL"
    )]
    store_url: String,

    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show how many tasks each queue holds: ready (per priority), pending
    /// (fetched by a worker, in flight), delayed and dead.
    Queues {
        /// Also show this queue, besides default, analysis, streaming and gpu
        /// (repeatable).
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<QueueName>,
    },

    /// Enqueue a task by name, like `celery call`, and print its id.
    Call(CallArgs),

    /// Inspect dead letters.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },

    /// Delete every task of a queue (ready, running, delayed and dead) and
    /// print how many there were.
    Purge {
        /// The queue to empty.
        queue: QueueName,
        /// Confirm the deletion; nothing is deleted without it.
        #[arg(long)]
        yes: bool,
    },

    /// Revoke a task: workers skip it, or cancel it if it runs.
    Revoke {
        /// The task's id.
        #[arg(value_parser = parse_task_id)]
        id: TaskId,
        /// How long the workers remember the revocation, such as 24h.
        #[arg(
            long,
            default_value = "24h",
            value_parser = humantime::parse_duration,
            value_name = "DURATION"
        )]
        ttl: Duration,
    },

    /// List the worker processes in the registry, with their load.
    Workers,

    /// List the job store's task records, newest first.
    Tasks(TasksArgs),

    /// Inspect one task in the job store.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Show a task's record: status, attempts, worker, progress, times,
    /// result and error.
    Show {
        /// The task's id.
        #[arg(value_parser = parse_task_id)]
        id: TaskId,
    },
}

#[derive(Debug, Args)]
struct TasksArgs {
    /// Only tasks with this status (repeatable): queued, scheduled, running,
    /// retrying, succeeded, failed, dead, revoked, expired.
    #[arg(long = "status", value_name = "STATUS", value_parser = parse_status)]
    statuses: Vec<JobStatus>,
    /// Only tasks of this queue.
    #[arg(long)]
    queue: Option<QueueName>,
    /// Only tasks of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only tasks with this name.
    #[arg(long)]
    name: Option<String>,
    /// Only tasks created at most this long ago, such as 1h or 2d.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    since: Option<Duration>,
    /// Show at most this many.
    #[arg(long, default_value_t = DEFAULT_TASKS_LIMIT, value_name = "N")]
    limit: usize,
}

impl TasksArgs {
    fn into_filter(self) -> TasksFilter {
        TasksFilter {
            statuses: self.statuses,
            queue: self.queue,
            tenant: self.tenant,
            name: self.name,
            since: self.since,
            limit: self.limit,
        }
    }
}

fn parse_task_id(text: &str) -> Result<TaskId, String> {
    text.trim().parse().map_err(|_| {
        "not a task id: expected a UUID such as 0193a7c4-5e1f-7d2a-9b3c-4d5e6f708192".to_owned()
    })
}

fn parse_status(text: &str) -> Result<JobStatus, String> {
    text.parse().map_err(|_| {
        let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of {}", all.join(", "))
    })
}

#[derive(Debug, Args)]
struct CallArgs {
    /// The task's name, such as spool.ping.
    name: String,
    /// The task's fields as a JSON object.
    #[arg(long, default_value = "{}", value_name = "JSON")]
    args: String,
    /// The queue to enqueue to.
    #[arg(long, default_value_t = QueueName::DEFAULT)]
    queue: QueueName,
    /// The priority in the queue: high, normal or low.
    #[arg(long, default_value_t = Priority::Normal, value_parser = parse_priority)]
    priority: Priority,
    /// Wait this long before the task may run, such as 10s or 5m.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    countdown: Option<Duration>,
    /// The most runs before the task is dead-lettered.
    #[arg(
        long,
        default_value_t = DEFAULT_MAX_ATTEMPTS,
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "N"
    )]
    max_attempts: u32,
    /// The tenant the task is accounted to.
    #[arg(long)]
    tenant: Option<String>,
    /// Enqueue this many copies, each with its own id.
    #[arg(long, default_value_t = 1, value_name = "N")]
    count: usize,
}

impl CallArgs {
    fn into_request(self) -> CallRequest {
        let mut request = CallRequest::new(self.name);
        request.args = self.args;
        request.queue = self.queue;
        request.priority = self.priority;
        request.countdown = self.countdown;
        request.max_attempts = self.max_attempts;
        request.tenant = self.tenant;
        request.count = self.count;
        request
    }
}

fn parse_priority(text: &str) -> Result<Priority, String> {
    text.parse()
        .map_err(|_| "expected high, normal or low".to_owned())
}

#[derive(Debug, Subcommand)]
enum DeadCommand {
    /// List a queue's dead letters, oldest first.
    List {
        /// The queue whose dead letters to list.
        queue: QueueName,
        /// Show at most this many.
        #[arg(long, default_value_t = DEFAULT_DEAD_LIMIT, value_name = "N")]
        limit: usize,
    },
    /// Send dead letters back to their queue for another round of
    /// attempts, and print how many went.
    Retry {
        /// The queue whose dead letters to requeue.
        queue: QueueName,
        /// The dead-letter entry ids to requeue, as `dead list` shows them;
        /// all of the queue's when none is given.
        #[arg(value_name = "ENTRY_ID")]
        ids: Vec<String>,
    },
    /// Delete a queue's dead letters and print how many there were.
    Purge {
        /// The queue whose dead letters to delete.
        queue: QueueName,
        /// Confirm the deletion; nothing is deleted without it.
        #[arg(long)]
        yes: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let output = match run(cli).await {
        Ok(output) => output,
        Err(err) => {
            eprintln!("spoolctl: error: {}", describe(&err));
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that stops early (`| head`) is not an error.
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            eprintln!("spoolctl: error: cannot write the output: {err}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Runs the command and returns what to print. Input is checked before
/// connecting, so a typo is reported at once, Redis up or not.
async fn run(cli: Cli) -> Result<String> {
    let format = if cli.json { Format::Json } else { Format::Text };
    let output = match cli.command {
        Command::Queues { queues } => {
            let broker = connect(cli.redis_url, cli.key_prefix).await?;
            ctl::render(&ctl::queues(&broker, &queues).await?, format)?
        }
        Command::Call(args) => {
            let request = args.into_request();
            request.validate()?;
            let broker = connect(cli.redis_url, cli.key_prefix).await?;
            ctl::render(&ctl::call(&broker, &request).await?, format)?
        }
        Command::Dead {
            command: DeadCommand::List { queue, limit },
        } => {
            let broker = connect(cli.redis_url, cli.key_prefix).await?;
            ctl::render(&ctl::dead_list(&broker, &queue, limit).await?, format)?
        }
        Command::Dead {
            command: DeadCommand::Retry { queue, ids },
        } => {
            let broker = connect(cli.redis_url, cli.key_prefix).await?;
            ctl::render(&ctl::dead_retry(&broker, &queue, &ids).await?, format)?
        }
        Command::Dead {
            command: DeadCommand::Purge { queue, yes },
        } => {
            ctl::check_dead_purge_confirmed(&queue, yes)?;
            let broker = connect(cli.redis_url, cli.key_prefix).await?;
            ctl::render(&ctl::dead_purge(&broker, &queue, yes).await?, format)?
        }
        Command::Revoke { id, ttl } => {
            let broker = connect(cli.redis_url, cli.key_prefix).await?;
            ctl::render(&ctl::revoke(&broker, id, ttl).await?, format)?
        }
        Command::Workers => {
            let broker = connect(cli.redis_url, cli.key_prefix).await?;
            ctl::render(&ctl::workers(&broker).await?, format)?
        }
        Command::Tasks(args) => {
            let filter = args.into_filter();
            filter.validate()?;
            let store = open_store(&cli.store_url).await?;
            let report = ctl::tasks(&store, &filter).await;
            store.close().await;
            ctl::render(&report?, format)?
        }
        Command::Task {
            command: TaskCommand::Show { id },
        } => {
            let store = open_store(&cli.store_url).await?;
            let report = ctl::task_show(&store, id).await;
            store.close().await;
            ctl::render(&report?, format)?
        }
        Command::Purge { queue, yes } => {
            ctl::check_purge_confirmed(&queue, yes)?;
            let broker = connect(cli.redis_url, cli.key_prefix).await?;
            ctl::render(&ctl::purge(&broker, &queue, yes).await?, format)?
        }
    };
    Ok(output)
}

/// Connects to Redis. The URL is never part of the error: it may hold a
/// password (the broker redacts it where it names it).
async fn connect(url: String, key_prefix: String) -> Result<RedisBroker> {
    let config = RedisConfig {
        url,
        key_prefix,
        // One-shot commands never block on a fetch.
        pool_size: 1,
        ..RedisConfig::default()
    };
    RedisBroker::connect(config)
        .await
        .context("cannot connect to Redis")
}

/// Opens the job store. The URL is never part of the error: it may hold a
/// password.
async fn open_store(url: &str) -> Result<JobStore> {
    let url = ctl::require_store(url)?;
    JobStore::connect(url)
        .await
        .context("cannot open the job store")
}

/// The error and its causes on one line, each cause once: errors that
/// already quote their source are not repeated.
fn describe(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// Logs to stderr, warnings and errors only unless `RUST_LOG` says more.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

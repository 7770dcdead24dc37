//! `spoolctl`: inspect and drive Spool's queues on Redis.
//!
//! ```text
//! spoolctl queues                      # backlog, in flight, oldest, rates per queue
//! spoolctl call spool.ping --count 3   # enqueue by name, like `celery call`
//! spoolctl dead list gpu               # a queue's dead letters
//! spoolctl purge gpu --yes             # delete every task of a queue
//! spoolctl dead retry gpu              # requeue a queue's dead letters
//! spoolctl dead purge gpu --yes        # delete a queue's dead letters
//! spoolctl revoke <ID>                 # tell the workers not to run a task
//! spoolctl workers                     # the worker processes and their load
//! spoolctl inspect registered          # the task names the live workers serve
//! spoolctl tasks --status failed       # the job store's records, newest first
//! spoolctl tasks --status running --follow  # their progress, live
//! spoolctl task show <ID>              # one task's record
//! spoolctl workflow show <ID>          # a workflow's graph, live and recorded
//! spoolctl workflow list               # the job store's workflows, newest first
//! spoolctl workflow cancel <ID>        # cancel a workflow's unfinished nodes
//! spoolctl workflow retry <ID>         # rerun a workflow's failed nodes
//! spoolctl pause gpu                   # workers stop fetching a queue
//! spoolctl resume gpu                  # and fetch it again
//! spoolctl top                         # queues, workers, running tasks, failures, live
//! spoolctl store migrate               # create the job store, or upgrade it
//! spoolctl completions bash            # shell completions
//! spoolctl man                         # the man page (roff)
//! ```
//!
//! `tasks` and `task show` read the job store (`--store-url`); only `store
//! migrate` creates one or changes its schema.
//!
//! Every command takes `--json` for scripts. The commands themselves live in
//! `spool_scheduler::ctl`; this file parses flags, connects and prints.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use spool_broker::store::{JobStatus, JobStore, WorkflowRecordStatus};
use spool_broker::workflow::WorkflowId;
use spool_broker::{Priority, QueueName, RedisBroker, RedisConfig, TaskId};
use spool_cli_common::{Connection, ConnectionArgs};
use spool_scheduler::ctl::{
    self, CallRequest, DEFAULT_DEAD_LIMIT, DEFAULT_MAX_ATTEMPTS, DEFAULT_TASKS_LIMIT, Format,
    TasksFilter,
};

/// What `main` does after parsing: print a report once, or run `top`.
enum Outcome {
    Print(String),
    Top(TopArgs, RedisBroker, Option<JobStore>, Format),
    Follow(TaskId, RedisBroker, JobStore, Format),
    FollowTasks(Box<TasksArgs>, RedisBroker, JobStore, Format),
    /// Print, then exit with this status.
    PrintAndExit(String, u8),
}

/// Inspect and drive Spool's task queues.
#[derive(Debug, Parser)]
#[command(name = "spoolctl", version, propagate_version = true)]
struct Cli {
    // Redis, the key prefix, the signing keys (`call` signs with the first
    // line, `dead retry` signs the next run of dead letters whose signature
    // verifies), TLS, the job store `tasks` and `task show` read, and the
    // Redis timeouts. (No doc comment: clap would take it for the about.)
    #[command(flatten)]
    connection: ConnectionArgs,

    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show each queue's backlog (ready and due delayed tasks), tasks in
    /// flight, delayed and dead, how long the oldest has waited, its
    /// consumers, its rates in and out, and whether it is paused. Shows the
    /// routed queues, the paused ones, those the live workers serve and
    /// those asked for.
    Queues {
        /// Also show this queue (repeatable).
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<QueueName>,
        /// Watch the counters this long for the rates, such as 1s or 500ms;
        /// 0s skips them.
        #[arg(
            long,
            default_value = "1s",
            value_parser = humantime::parse_duration,
            value_name = "DURATION"
        )]
        sample: Duration,
    },

    /// Pause a queue: workers stop fetching it, give back what they fetched
    /// and did not start, and finish what runs. Delayed tasks wait too.
    Pause {
        /// The queue to pause.
        queue: QueueName,
    },

    /// Resume a paused queue: workers fetch it again.
    Resume {
        /// The queue to resume.
        queue: QueueName,
    },

    /// A live view of the queues (with sparklines of their rates), the
    /// workers, the tasks running now and the recent failures, refreshed
    /// in place; keys select, show a task's detail, pause or resume a queue
    /// and revoke a task. --once prints one frame; --json one JSON object
    /// per line and refresh.
    Top(TopArgs),

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

    /// Revoke a task: workers skip it, or cancel it if it runs. The task
    /// must be in a queue (ready, running, delayed or dead: the routed
    /// queues, the paused ones and those the workers serve) or in the job
    /// store, unless --force.
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
        /// Revoke even if no task has this id yet (ahead of its enqueue):
        /// workers remember it for --ttl and skip the task when it comes.
        #[arg(long)]
        force: bool,
    },

    /// List the worker processes in the registry, with their load.
    Workers,

    /// Submit a video ingest as one workflow: probe and split, encode
    /// (in chunks across workers, or whole), analyze against the source,
    /// package HLS and DASH. Exits 1 when waited for and it failed.
    Ingest(Box<IngestArgs>),

    /// Ask the live workers, through their registry records.
    Inspect {
        #[command(subcommand)]
        command: InspectCommand,
    },

    /// List the job store's task records, newest first.
    Tasks(TasksArgs),

    /// Inspect one task in the job store.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },

    /// Show, list, cancel and retry workflows.
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
    },

    /// Manage the job store itself.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },

    /// Print shell completions for spoolctl to standard output, such as
    /// `spoolctl completions bash > /etc/bash_completion.d/spoolctl`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },

    /// Print spoolctl's man page (roff) to standard output, such as
    /// `spoolctl man > spoolctl.1`.
    Man,
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// List the task names the live workers serve (have a handler for),
    /// with how many workers serve each and from which queues.
    Registered,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Create the job store at --store-url if it does not exist (a SQLite
    /// file in an existing directory, or a PostgreSQL database) and apply
    /// the schema migrations it lacks. Workers and the other commands only
    /// open a store created so. Safe to run again.
    Migrate,
}

#[derive(Debug, Args)]
struct TopArgs {
    /// Also show this queue (repeatable).
    #[arg(long = "queue", value_name = "QUEUE")]
    queues: Vec<QueueName>,
    /// The time between refreshes, such as 1s or 500ms.
    #[arg(
        long,
        default_value = "1s",
        value_parser = parse_interval,
        value_name = "DURATION"
    )]
    interval: Duration,
    /// Print one frame and exit (read twice, --interval apart, for the
    /// rates): for scripts and screenshots.
    #[arg(long, conflicts_with = "iterations")]
    once: bool,
    /// Stop after this many refreshes, printed one after another instead of
    /// drawn in place; without it (or --once), run until q or Ctrl-C.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    iterations: Option<u64>,
    /// The width to render at, in columns; by default the terminal's, else
    /// $COLUMNS, else 80. Below about 80, columns are dropped in a set
    /// order and long names cut; no line wraps.
    #[arg(long, value_parser = clap::value_parser!(u16).range(20..), value_name = "COLUMNS")]
    width: Option<u16>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_millis(10) {
        return Err("must be at least 10ms".to_owned());
    }
    Ok(interval)
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Show a task's record: status, attempts, worker, progress, times,
    /// result and error, then the timeline of its attempts (each queue,
    /// start and outcome, with its worker and error).
    Show {
        /// The task's id.
        #[arg(value_parser = parse_task_id)]
        id: TaskId,
        /// Follow the task live: a line per state change and progress report
        /// (a JSON object each with --json) until it ends, then its record.
        /// The exit status is its outcome: 0 succeeded, 1 failed, 3 dead,
        /// 4 revoked, 5 expired (2 stays clap's usage error)
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Draw a workflow's graph, layered by depth, with each node's state,
    /// attempts, duration and progress: the live state from Redis, and
    /// with --store-url the run times and progress from the job store
    /// (either alone is enough). The exit status is the workflow's state:
    /// 0 succeeded, 1 failed, 4 cancelled, 6 still running (2 stays
    /// clap's usage error).
    Show {
        /// The workflow's id.
        #[arg(value_parser = parse_workflow_id)]
        id: WorkflowId,
    },
    /// List the job store's workflows, newest first.
    List {
        /// Only workflows with this status (repeatable): running,
        /// succeeded, failed, cancelled.
        #[arg(long = "status", value_name = "STATUS", value_parser = parse_workflow_status)]
        statuses: Vec<WorkflowRecordStatus>,
        /// Show at most this many.
        #[arg(long, default_value_t = ctl::DEFAULT_WORKFLOWS_LIMIT, value_name = "N")]
        limit: usize,
    },
    /// Cancel a running workflow: its unfinished nodes are cancelled, its
    /// queued and running tasks revoked (a running FFmpeg is stopped).
    Cancel {
        /// The workflow's id.
        #[arg(value_parser = parse_workflow_id)]
        id: WorkflowId,
    },
    /// Retry a finished workflow: its failed, dead-lettered, revoked,
    /// expired and cancelled nodes run again; succeeded nodes keep their
    /// outputs.
    Retry {
        /// The workflow's id.
        #[arg(value_parser = parse_workflow_id)]
        id: WorkflowId,
    },
}

fn parse_workflow_id(text: &str) -> Result<WorkflowId, String> {
    text.trim().parse().map_err(|_| {
        "not a workflow id: expected a UUID such as 0193a7c4-5e1f-7d2a-9b3c-4d5e6f708192".to_owned()
    })
}

fn parse_workflow_status(text: &str) -> Result<WorkflowRecordStatus, String> {
    text.parse()
        .map_err(|_| "expected one of running, succeeded, failed, cancelled".to_owned())
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
    /// Show at most this many (with --follow: follow at most this many at
    /// once, up to 100).
    #[arg(long, default_value_t = DEFAULT_TASKS_LIMIT, value_name = "N")]
    limit: usize,
    /// Follow the matching tasks live: a line for each, then one per state
    /// change and progress report (percent, stage, fps, speed, ETA), led by
    /// the task's id (a JSON object each with --json), new matches
    /// included, until interrupted.
    #[arg(long)]
    follow: bool,
    /// With --follow: stop once every task followed has ended. The exit
    /// status is then 0 when each succeeded, else that of the first that
    /// did not, as for `task show --follow` (tasks already finished when
    /// first seen are shown, not counted).
    #[arg(long, requires = "follow")]
    until_done: bool,
}

impl TasksArgs {
    fn to_filter(&self) -> TasksFilter {
        TasksFilter {
            statuses: self.statuses.clone(),
            queue: self.queue.clone(),
            tenant: self.tenant.clone(),
            name: self.name.clone(),
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
    /// The task's fields as a JSON object; @FILE reads it from a file and
    /// - from standard input (for arguments past the shell's size limit).
    #[arg(long, default_value = "{}", value_name = "JSON|@FILE|-")]
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
    /// Enqueue even if no live worker serves the task's name (see `inspect
    /// registered`), or none is registered: for workers still to come.
    #[arg(long)]
    force: bool,
    /// A field of --args that holds a secret (a name, or a dotted path
    /// such as auth.token): shown as "***" in the job store, `task show`
    /// and `dead list`. Repeat for more.
    #[arg(long, value_name = "FIELD")]
    secret: Vec<String>,
}

impl CallArgs {
    fn into_request(self) -> Result<CallRequest> {
        let mut request = CallRequest::new(self.name);
        request.args = ctl::read_args(&self.args)?;
        request.queue = self.queue;
        request.priority = self.priority;
        request.countdown = self.countdown;
        request.max_attempts = self.max_attempts;
        request.tenant = self.tenant;
        request.count = self.count;
        request.secret = self.secret;
        Ok(request)
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
    /// Show one dead letter in full: reason, error, attempts, times and
    /// arguments (secret fields redacted).
    Show {
        /// The queue it died in.
        queue: QueueName,
        /// Its entry id, as `dead list` shows it, or its task id.
        #[arg(value_name = "ID")]
        id: String,
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
    let cli: Cli = spool_cli_common::parse_args();
    let _telemetry = init_tracing();
    if let Some(output) = generated(&cli.command) {
        return match output.and_then(|text| write_out(&text)) {
            Err(err) if !is_broken_pipe(&err) => {
                eprintln!("spoolctl: error: {err:#}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        };
    }
    let connection = match cli.connection.resolve() {
        Ok(connection) => connection,
        Err(err) => {
            eprintln!("spoolctl: error: {err}");
            return ExitCode::from(2);
        }
    };
    let written = match run(cli, &connection).await {
        Ok(Outcome::Print(output)) => write_out(&output),
        Ok(Outcome::Top(args, broker, store, format)) => {
            let shown = top(args, &broker, store.as_ref(), format).await;
            if let Some(store) = store {
                store.close().await;
            }
            shown
        }
        Ok(Outcome::PrintAndExit(output, code)) => match write_out(&output) {
            Err(err) if !is_broken_pipe(&err) => Err(err),
            _ => return ExitCode::from(code),
        },
        Ok(Outcome::Follow(id, broker, store, format)) => {
            let mut stdout = io::stdout();
            let followed = ctl::task_follow(
                &broker,
                &store,
                id,
                ctl::DEFAULT_FOLLOW_POLL,
                format == Format::Json,
                &mut stdout,
            )
            .await;
            store.close().await;
            match followed {
                Ok(status) => return outcome_exit_code(status),
                Err(err) => Err(err.into()),
            }
        }
        Ok(Outcome::FollowTasks(args, broker, store, format)) => {
            let mut stdout = io::stdout();
            let followed = ctl::tasks_follow(
                &broker,
                &store,
                &args.to_filter(),
                ctl::DEFAULT_FOLLOW_POLL,
                args.until_done,
                format == Format::Json,
                &mut stdout,
            )
            .await;
            store.close().await;
            match followed {
                Ok(outcome) => {
                    return outcome
                        .first_unsuccessful()
                        .map_or(ExitCode::SUCCESS, outcome_exit_code);
                }
                Err(err) => Err(err.into()),
            }
        }
        Err(err) => Err(err),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`| head`) is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spoolctl: error: {}", describe(&err, &connection));
            ExitCode::FAILURE
        }
    }
}

/// `task show --follow`'s exit status: the task's outcome (2 is clap's).
fn outcome_exit_code(status: JobStatus) -> ExitCode {
    ExitCode::from(match status {
        JobStatus::Succeeded => 0,
        JobStatus::Dead => 3,
        JobStatus::Revoked => 4,
        JobStatus::Expired => 5,
        _ => 1,
    })
}

/// Whether `err` is a closed stdout: a reader that stopped early.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Writes `output` to stdout at once.
fn write_out(output: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => anyhow::Error::new(e),
            _ => anyhow::Error::new(e).context("cannot write the output"),
        })
}

/// Runs `top`: one frame with `--once`; on a terminal without
/// `--iterations` or `--json`, interactively; otherwise a frame every
/// interval, one after another, until `--iterations` or an interrupt. A
/// failed read is shown and retried at the next refresh, unless nothing
/// was shown yet.
async fn top(
    args: TopArgs,
    broker: &RedisBroker,
    store: Option<&JobStore>,
    format: Format,
) -> Result<()> {
    let width = top_width(args.width);
    let mut view = ctl::Top::new(broker, store, args.queues, args.interval);
    if args.once {
        // Two readings make the rates.
        view.next_frame().await?;
        tokio::time::sleep(args.interval).await;
        let frame = view.next_frame().await?;
        return write_out(&ctl::render_frame(&frame, format, width)?);
    }
    if format == Format::Text && args.iterations.is_none() && io::stdout().is_terminal() {
        return Ok(ctl::run_interactive(&mut view).await?);
    }
    let mut ticks = tokio::time::interval(args.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = 0u64;
    while args.iterations.is_none_or(|n| shown < n) {
        ticks.tick().await;
        match view.next_frame().await {
            Ok(frame) => {
                let mut text = ctl::render_frame(&frame, format, width)?;
                if format == Format::Text {
                    // Frames one after another, a blank line apart.
                    text.push('\n');
                }
                write_out(&text)?;
            }
            Err(err) if shown == 0 => return Err(err.into()),
            Err(err) => eprintln!("spoolctl: cannot refresh: {err}"),
        }
        shown += 1;
    }
    Ok(())
}

/// `top`'s width: `--width`, else the terminal's, else `$COLUMNS`, else
/// [`ctl::DEFAULT_TOP_WIDTH`].
fn top_width(flag: Option<u16>) -> u16 {
    let terminal = || {
        io::stdout()
            .is_terminal()
            .then(ratatui::crossterm::terminal::size)
            .and_then(Result::ok)
            .map(|(columns, _)| columns)
    };
    let columns = || std::env::var("COLUMNS").ok()?.trim().parse::<u16>().ok();
    flag.or_else(terminal)
        .or_else(columns)
        .filter(|w| *w > 0)
        .unwrap_or(ctl::DEFAULT_TOP_WIDTH)
}

/// Runs the command and returns what to print. Input is checked before
/// connecting, so a typo is reported at once, Redis up or not.
async fn run(cli: Cli, access: &Connection) -> Result<Outcome> {
    let format = if cli.json { Format::Json } else { Format::Text };
    let output = match cli.command {
        Command::Queues { mut queues, sample } => {
            let broker = connect(access).await?;
            // The queues the live workers serve, besides those asked for.
            let records = broker.workers().await?;
            for record in records.iter().filter(|r| r.is_live()) {
                queues.extend(record.queues.iter().cloned());
            }
            ctl::render(&ctl::queues(&broker, &queues, sample).await?, format)?
        }
        Command::Pause { queue } => {
            let broker = connect(access).await?;
            ctl::render(&ctl::pause(&broker, &queue).await?, format)?
        }
        Command::Resume { queue } => {
            let broker = connect(access).await?;
            ctl::render(&ctl::resume(&broker, &queue).await?, format)?
        }
        Command::Top(args) => {
            let broker = connect(access).await?;
            // The store, when configured, names the running tasks and
            // lists the failures.
            let store = match ctl::require_store(&access.store_url) {
                Ok(_) => Some(open_store(&access.store_url).await?),
                Err(_) => None,
            };
            return Ok(Outcome::Top(args, broker, store, format));
        }
        Command::Call(args) => {
            let force = args.force;
            let request = args.into_request()?;
            request.validate()?;
            let broker = connect(access).await?;
            // A name no worker serves would be dead-lettered as
            // `unknown_task` later: refused now, where the typo is seen.
            if !force {
                ctl::registered(&broker)
                    .await?
                    .check_callable(&request.name)?;
            }
            // With a job store, the tasks are recorded from enqueue: `task
            // show` and `tasks` know them before any worker runs them.
            let store = match ctl::require_store(&access.store_url) {
                Ok(_) => Some(open_store(&access.store_url).await?),
                Err(_) => None,
            };
            let called = ctl::call_recorded(&broker, store.as_ref(), &request).await;
            if let Some(store) = store {
                store.close().await;
            }
            match called {
                Ok(report) => ctl::render(&report, format)?,
                // Part of the batch made it: say which, then why the rest
                // did not, once.
                Err(spool_scheduler::Error::Broker(spool_broker::Error::PartialEnqueue {
                    enqueued,
                    refused,
                    source,
                })) => {
                    let report = ctl::CallReport {
                        ids: enqueued.clone(),
                    };
                    write_out(&ctl::render(&report, format)?)?;
                    return Err(spool_broker::Error::PartialEnqueue {
                        enqueued,
                        refused,
                        source,
                    }
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Dead {
            command: DeadCommand::List { queue, limit },
        } => {
            let broker = connect(access).await?;
            ctl::render(&ctl::dead_list(&broker, &queue, limit).await?, format)?
        }
        Command::Dead {
            command: DeadCommand::Show { queue, id },
        } => {
            let broker = connect(access).await?;
            ctl::render(&ctl::dead_show(&broker, &queue, &id).await?, format)?
        }
        Command::Dead {
            command: DeadCommand::Retry { queue, ids },
        } => {
            ctl::check_entry_ids(&ids)?;
            let broker = connect(access).await?;
            let store = match ctl::require_store(&access.store_url) {
                Ok(_) => Some(open_store(&access.store_url).await?),
                Err(_) => None,
            };
            let report = ctl::dead_retry_recorded(&broker, store.as_ref(), &queue, &ids).await;
            if let Some(store) = store {
                store.close().await;
            }
            ctl::render(&report?, format)?
        }
        Command::Dead {
            command: DeadCommand::Purge { queue, yes },
        } => {
            ctl::check_dead_purge_confirmed(&queue, yes)?;
            let broker = connect(access).await?;
            ctl::render(&ctl::dead_purge(&broker, &queue, yes).await?, format)?
        }
        Command::Ingest(args) => {
            let broker = connect(access).await?;
            let report = ctl::ingest(&broker, &args.to_request()).await?;
            let code = u8::try_from(report.exit_code()).unwrap_or(1);
            return Ok(Outcome::PrintAndExit(ctl::render(&report, format)?, code));
        }
        Command::Revoke { id, ttl, force } => {
            let broker = connect(access).await?;
            let mut request = ctl::RevokeRequest::new(id);
            request.ttl = ttl;
            request.force = force;
            let served: Vec<QueueName> = broker
                .workers()
                .await?
                .into_iter()
                .filter(|r| r.is_live())
                .flat_map(|r| r.queues)
                .collect();
            request.queues = ctl::queues_with_paused(&broker, &served).await?;
            let store = match ctl::require_store(&access.store_url) {
                Ok(_) => Some(open_store(&access.store_url).await?),
                Err(_) => None,
            };
            let report = ctl::revoke(&broker, store.as_ref(), &request).await;
            if let Some(store) = store {
                store.close().await;
            }
            ctl::render(&report?, format)?
        }
        Command::Workers => {
            let broker = connect(access).await?;
            ctl::render(&ctl::workers(&broker).await?, format)?
        }
        Command::Inspect {
            command: InspectCommand::Registered,
        } => {
            let broker = connect(access).await?;
            ctl::render(&ctl::registered(&broker).await?, format)?
        }
        // Handled in `main` before the connection flags are read.
        command @ (Command::Completions { .. } | Command::Man) => {
            generated(&command).unwrap_or_else(|| Ok(String::new()))?
        }
        Command::Tasks(args) if args.follow => {
            args.to_filter().validate()?;
            let broker = connect(access).await?;
            let store = open_store(&access.store_url).await?;
            return Ok(Outcome::FollowTasks(Box::new(args), broker, store, format));
        }
        Command::Tasks(args) => {
            let filter = args.to_filter();
            filter.validate()?;
            let store = open_store(&access.store_url).await?;
            let report = ctl::tasks(&store, &filter).await;
            store.close().await;
            ctl::render(&report?, format)?
        }
        Command::Task {
            command: TaskCommand::Show { id, follow: true },
        } => {
            let broker = connect(access).await?;
            let store = open_store(&access.store_url).await?;
            return Ok(Outcome::Follow(id, broker, store, format));
        }
        Command::Task {
            command: TaskCommand::Show { id, follow: false },
        } => {
            let store = open_store(&access.store_url).await?;
            let report = ctl::task_show(&store, id).await;
            store.close().await;
            ctl::render(&report?, format)?
        }
        Command::Workflow { command } => return workflow(command, access, format).await,
        Command::Store {
            command: StoreCommand::Migrate,
        } => {
            let url = ctl::require_store(&access.store_url)?;
            ctl::render(&ctl::store_migrate(url).await?, format)?
        }
        Command::Purge { queue, yes } => {
            ctl::check_purge_confirmed(&queue, yes)?;
            let broker = connect(access).await?;
            ctl::render(&ctl::purge(&broker, &queue, yes).await?, format)?
        }
    };
    Ok(Outcome::Print(output))
}

/// Runs a `workflow` command. The job store is optional but for `list`.
async fn workflow(
    command: WorkflowCommand,
    access: &Connection,
    format: Format,
) -> Result<Outcome> {
    let (id, action) = match command {
        WorkflowCommand::List { statuses, limit } => {
            ctl::check_limit(limit)?;
            let store = open_store(&access.store_url).await?;
            let report = ctl::workflow_list(&store, &statuses, limit).await;
            store.close().await;
            return Ok(Outcome::Print(ctl::render(&report?, format)?));
        }
        WorkflowCommand::Show { id } => (id, "show"),
        WorkflowCommand::Cancel { id } => (id, "cancel"),
        WorkflowCommand::Retry { id } => (id, "retry"),
    };
    let broker = connect(access).await?;
    let store = match ctl::require_store(&access.store_url) {
        Ok(_) => Some(open_store(&access.store_url).await?),
        Err(_) => None,
    };
    let store_ref = store.as_ref();
    let outcome = async {
        Ok::<_, anyhow::Error>(match action {
            "show" => {
                let report = ctl::workflow_show(&broker, store_ref, id).await?;
                let code = report.exit_code();
                Outcome::PrintAndExit(ctl::render(&report, format)?, code)
            }
            "cancel" => Outcome::Print(ctl::render(
                &ctl::workflow_cancel(&broker, store_ref, id).await?,
                format,
            )?),
            _ => Outcome::Print(ctl::render(
                &ctl::workflow_retry(&broker, store_ref, id).await?,
                format,
            )?),
        })
    }
    .await;
    if let Some(store) = store {
        store.close().await;
    }
    outcome
}

/// The shell completions or the man page, for those commands: made from
/// the flags' definitions alone, so they print even where the
/// connection flags' environment variables hold bad values.
fn generated(command: &Command) -> Option<Result<String>> {
    let mut out = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "spoolctl", &mut out);
        }
        Command::Man => {
            if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut out) {
                return Some(Err(
                    anyhow::Error::new(e).context("cannot render the man page")
                ));
            }
        }
        _ => return None,
    }
    Some(String::from_utf8(out).context("the generated text is not UTF-8"))
}

/// Connects to Redis, within the connect timeout. The URL is never part
/// of the error: it may hold a password (the broker redacts it where it
/// names it). Nor are the keys.
async fn connect(access: &Connection) -> Result<RedisBroker> {
    let config = RedisConfig {
        // One-shot commands never block on a fetch.
        pool_size: 1,
        ..access.redis_config()?
    };
    access
        .connect(config)
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
/// A Redis reply that did not come in time says which timeout that was.
fn describe(err: &anyhow::Error, connection: &Connection) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    let timed_out = err.chain().any(|cause| {
        cause
            .downcast_ref::<spool_broker::Error>()
            .or_else(|| match cause.downcast_ref::<spool_scheduler::Error>() {
                Some(spool_scheduler::Error::Broker(e)) => Some(e),
                _ => None,
            })
            .is_some_and(spool_broker::Error::is_timeout)
    });
    if timed_out {
        message.push_str(&format!(
            " ({})",
            spool_cli_common::Error::CommandTimeout(connection.redis_command_timeout)
        ));
    }
    message
}

/// Logs to stderr, warnings and errors only unless `RUST_LOG` says more;
/// exports spans when `OTEL_*` asks. Hold the guard to the end.
fn init_tracing() -> spool_cli_common::Telemetry {
    spool_cli_common::init_logging(spool_cli_common::LogFormat::Human, "warn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_timeout_names_its_flag() {
        let connection = Connection::default();
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let broker = spool_broker::Error::Connection(Box::new(redis::RedisError::from(io)));
        assert!(broker.is_timeout());
        let err = anyhow::Error::from(spool_scheduler::Error::Broker(broker)).context("queues");
        let shown = describe(&err, &connection);
        assert!(
            shown.contains("5s command timeout (--redis-command-timeout)"),
            "{shown}"
        );
        let other = anyhow::anyhow!("something else");
        assert!(!describe(&other, &connection).contains("timeout"));
    }
}

/// `spoolctl ingest`'s flags.
#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// The source, inside the workers' input roots.
    input: String,
    /// The encode (.mp4, .mkv or .mov), inside the workers' output root.
    output: String,
    /// The codec: h264, hevc or av1.
    #[arg(long, default_value = "h264", value_parser = parse_codec)]
    codec: spool_sdk::video::Codec,
    /// The constant rate factor.
    #[arg(long, default_value_t = 23)]
    crf: u8,
    /// The speed preset, as x264 names them.
    #[arg(long, default_value = "medium", value_parser = parse_preset)]
    preset: spool_sdk::video::Preset,
    /// The length chunks aim for.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    chunk: Duration,
    /// The shortest chunk.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    min_chunk: Duration,
    /// Cut at scene changes scoring above this (0 to 1) instead of at
    /// keyframes.
    #[arg(long, value_name = "SCORE")]
    scenes: Option<f32>,
    /// Encode the whole file in one FFmpeg run instead of chunks.
    #[arg(long)]
    whole: bool,
    /// Score the encode against the source (VMAF, PSNR, SSIM).
    #[arg(long)]
    analyze: bool,
    /// Package the source as HLS and DASH into this directory.
    #[arg(long, value_name = "DIR")]
    package: Option<String>,
    /// Name the chunk directory (a-z, 0-9, -): an ingest with the same key
    /// reuses the chunks an earlier one finished.
    #[arg(long)]
    key: Option<String>,
    /// Wait this long for the workflow to finish and print its outputs.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    wait: Option<Duration>,
}

impl IngestArgs {
    fn to_request(&self) -> ctl::IngestRequest {
        let mut request = ctl::IngestRequest::new(self.input.clone(), self.output.clone());
        request.codec = self.codec;
        request.crf = self.crf;
        request.preset = self.preset;
        request.chunk = (!self.whole).then_some(self.chunk);
        request.min_chunk = self.min_chunk;
        request.scene_threshold = self.scenes;
        request.analyze = self.analyze;
        request.package.clone_from(&self.package);
        request.key.clone_from(&self.key);
        request.wait = self.wait;
        request
    }
}

fn parse_codec(name: &str) -> Result<spool_sdk::video::Codec, String> {
    use spool_sdk::video::Codec;
    [Codec::H264, Codec::Hevc, Codec::Av1]
        .into_iter()
        .find(|c| c.as_str() == name)
        .ok_or_else(|| "expected h264, hevc or av1".to_owned())
}

fn parse_preset(name: &str) -> Result<spool_sdk::video::Preset, String> {
    use spool_sdk::video::Preset;
    Preset::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<_> = Preset::ALL.iter().map(|p| p.as_str()).collect();
            format!("expected one of {}", names.join(", "))
        })
}

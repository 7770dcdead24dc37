//! `spool-store-bench`: how fast the job store answers the searches of the
//! dashboard and `spoolctl tasks` with a million records.
//!
//! ```text
//! spool-store-bench                                   # PostgreSQL, 1,000,000 records
//! spool-store-bench --url sqlite:///tmp/bench.db      # SQLite
//! spool-store-bench -n 100000 --explain --json
//! spool-store-bench --url postgres://…/db --existing  # measure a store as it is
//! ```
//!
//! A run creates a throwaway store (a PostgreSQL database named by the run
//! on the server `--url` names, or the SQLite file it names), loads `-n`
//! records through the store's own batched writes (`record_enqueued`,
//! `record_started`, `record_outcomes` of 4,096 tasks per call, as
//! producers and the worker's settler write them), runs `ANALYZE`, then
//! times each search shape `--reps` times with varied parameters and
//! prints p50/p95/max per shape, as a table or with `--json` one JSON
//! object on the last line. The store is dropped at the end unless
//! `--keep`.
//!
//! The records look like a video fleet's month: task names, queues and
//! tenants with skewed frequencies, creation times spread over 30 days in
//! order, most tasks succeeded, a few failed, dead, revoked or expired, the
//! last hour still queued, scheduled, running or retrying, some tasks
//! retried, every one with JSON arguments. The generator is seeded, so two
//! runs load the same data.

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use serde::Serialize;
use spool_broker::store::{
    Cursor, Finished, IdPrefix, JobQuery, JobStatus, JobStore, NewJob, Started, StoreBackend,
    StoreOptions, WorkerId,
};
use spool_broker::{Priority, QueueName, TaskId, Timestamp, encode_payload};
use spool_scheduler::table::{Align, Table};
use sqlx::migrate::MigrateDatabase as _;
use sqlx::{Connection as _, Executor as _};

/// Time the job store's searches on a store of a million records.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version)]
struct Args {
    /// The store: a PostgreSQL server (the run creates its own database
    /// there, `spool_store_bench_<hex>`, whatever database the URL names)
    /// or a SQLite file that must not exist yet. With `--existing`, the
    /// store to measure as it is.
    #[arg(
        long,
        env = "SPOOL_STORE_BENCH_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    url: String,
    /// Records to load.
    #[arg(short, long, default_value_t = 1_000_000)]
    n: usize,
    /// Timed repetitions of each search shape.
    #[arg(long, default_value_t = 40)]
    reps: usize,
    /// At most this long per shape (at least 3 repetitions run).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    shape_budget: Duration,
    /// Records per page, as the dashboard shows them.
    #[arg(long, default_value_t = 100)]
    page: usize,
    /// Print each shape's query plan before timing it.
    #[arg(long)]
    explain: bool,
    /// Keep the store at the end (its URL is printed).
    #[arg(long)]
    keep: bool,
    /// Measure the store at `--url` as it is: no create, load or drop. It
    /// is migrated to this build's schema first.
    #[arg(long)]
    existing: bool,
    /// Only shapes whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// The span of the records' creation times.
const SPAN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Records per write call: the settler's largest group commit.
const BATCH: usize = 4096;

/// Task names and their weights.
const NAMES: &[(&str, u32)] = &[
    ("video.transcode", 3500),
    ("video.probe", 2000),
    ("thumbs.make", 1500),
    ("video.vmaf", 800),
    ("audio.normalize", 600),
    ("video.package", 500),
    ("subtitles.extract", 400),
    ("video.scene_detect", 300),
    ("video.upload", 290),
    ("video.watermark", 100),
    ("report.monthly", 10),
];

/// Queues and their weights.
const QUEUES: &[(&str, u32)] = &[
    ("default", 45),
    ("gpu", 30),
    ("cpu", 15),
    ("bulk", 9),
    ("urgent", 1),
];

/// Tenants `tenant-000` … : tenant k has weight 1/(k+1); a tenth of the
/// tasks have none.
const TENANTS: usize = 100;

#[derive(Debug, Serialize)]
struct Figures {
    backend: &'static str,
    n: usize,
    /// Whether this run loaded the records (false with `--existing`).
    loaded: bool,
    load_seconds: f64,
    load_records_per_s: f64,
    page: usize,
    shapes: Vec<ShapeFigures>,
}

#[derive(Debug, Serialize)]
struct ShapeFigures {
    shape: String,
    reps: usize,
    /// Records per answer, on average.
    rows: f64,
    p50_seconds: f64,
    p95_seconds: f64,
    max_seconds: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let figures = runtime.block_on(bench(&args))?;
    print_table(&figures);
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}

async fn bench(args: &Args) -> Result<Figures> {
    if args.n == 0 || args.reps == 0 || args.page == 0 {
        bail!("-n, --reps and --page must be positive");
    }
    let backend = StoreBackend::of_url(&args.url)?;
    let url = if args.existing {
        args.url.clone()
    } else {
        scratch_url(&args.url, backend)?
    };
    let options = StoreOptions {
        max_connections: 2,
        ..StoreOptions::default()
    };
    let store = JobStore::create_with(&url, &options)
        .await
        .with_context(|| format!("creating the job store {url}"))?;
    let measured = async {
        let (load_seconds, now) = if args.existing {
            (0.0, newest(&store).await?)
        } else {
            let now = Timestamp::now();
            let started = Instant::now();
            load(&store, args.n, now).await?;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "loaded {} records in {seconds:.1} s ({:.0}/s)",
                args.n,
                args.n as f64 / seconds
            );
            (seconds, now)
        };
        analyze(&url, backend).await?;
        let shapes = measure(args, &store, now).await?;
        Ok::<_, anyhow::Error>(Figures {
            backend: backend.as_str(),
            n: args.n,
            loaded: !args.existing,
            load_seconds,
            load_records_per_s: if args.existing {
                0.0
            } else {
                args.n as f64 / load_seconds
            },
            page: args.page,
            shapes,
        })
    }
    .await;
    store.close().await;
    if args.existing || args.keep {
        eprintln!("store kept: {url}");
    } else {
        drop_store(&url, backend).await?;
    }
    measured
}

/// The run's own store: a new database on the PostgreSQL server, or the
/// SQLite file, which must not exist.
fn scratch_url(url: &str, backend: StoreBackend) -> Result<String> {
    match backend {
        StoreBackend::Postgres => {
            let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
            let authority_end = base.find("://").map_or(0, |i| i + 3);
            let server = match base[authority_end..].find('/') {
                Some(slash) => &base[..authority_end + slash],
                None => base,
            };
            let name = format!("spool_store_bench_{:08x}", fastrand::u32(..));
            Ok(if query.is_empty() {
                format!("{server}/{name}")
            } else {
                format!("{server}/{name}?{query}")
            })
        }
        StoreBackend::Sqlite => {
            let path = sqlite_path(url);
            if std::path::Path::new(path).exists() {
                bail!("{path} exists: give a new file (or --existing to measure it)");
            }
            Ok(url.to_owned())
        }
    }
}

fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    rest.split('?').next().unwrap_or(rest)
}

async fn drop_store(url: &str, backend: StoreBackend) -> Result<()> {
    match backend {
        StoreBackend::Postgres => sqlx::Postgres::force_drop_database(url)
            .await
            .with_context(|| format!("dropping {url}"))?,
        StoreBackend::Sqlite => {
            let path = sqlite_path(url);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
    Ok(())
}

/// Fresh planner statistics, as autovacuum (PostgreSQL) or `PRAGMA
/// optimize` (SQLite) would gather them on a live store.
async fn analyze(url: &str, backend: StoreBackend) -> Result<()> {
    let started = Instant::now();
    match backend {
        StoreBackend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            conn.execute("ANALYZE").await?;
            conn.close().await?;
        }
        StoreBackend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            conn.execute("ANALYZE").await?;
            conn.close().await?;
        }
    }
    eprintln!("ANALYZE: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The creation time of the newest record: the "now" of an existing store.
async fn newest(store: &JobStore) -> Result<Timestamp> {
    let page = store.query(&JobQuery::new().limit(1)).await?;
    match page.records.first() {
        Some(record) => Ok(record.created_at),
        None => bail!("the store is empty"),
    }
}

fn pick<'a>(rng: &mut fastrand::Rng, weighted: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut roll = rng.u32(..total);
    for (item, weight) in weighted {
        if roll < *weight {
            return item;
        }
        roll -= weight;
    }
    weighted[0].0
}

fn tenant_name(k: usize) -> String {
    format!("tenant-{k:03}")
}

/// A tenant by its Zipf weight, or none for a tenth of the tasks.
fn pick_tenant(rng: &mut fastrand::Rng, cumulative: &[f64]) -> Option<String> {
    if rng.u8(..10) == 0 {
        return None;
    }
    let total = cumulative.last().copied().unwrap_or(1.0);
    let roll = rng.f64() * total;
    let k = cumulative.partition_point(|&c| c < roll).min(TENANTS - 1);
    Some(tenant_name(k))
}

/// One generated task: what its writes need.
struct Generated {
    job: NewJob,
    /// The final status, and the attempt it ends at (0: never started).
    status: JobStatus,
    attempts: u32,
    worker: WorkerId,
}

fn millis_after(t: Timestamp, ms: u64) -> Timestamp {
    Timestamp::from_millis(t.as_millis() + ms)
}

fn generate(
    rng: &mut fastrand::Rng,
    cumulative: &[f64],
    created_at: Timestamp,
    now: Timestamp,
) -> Generated {
    let age_ms = now.as_millis().saturating_sub(created_at.as_millis());
    let recent = age_ms < 3_600_000;
    let roll = rng.u32(..1000);
    let status = if recent && roll < 300 {
        JobStatus::Queued
    } else if recent && roll < 350 {
        JobStatus::Scheduled
    } else if recent && roll < 450 {
        JobStatus::Running
    } else if recent && roll < 480 {
        JobStatus::Retrying
    } else {
        match rng.u32(..1000) {
            0..40 => JobStatus::Failed,
            40..45 => JobStatus::Dead,
            45..65 => JobStatus::Revoked,
            65..80 => JobStatus::Expired,
            _ => JobStatus::Succeeded,
        }
    };
    let attempts = match status {
        JobStatus::Queued | JobStatus::Scheduled => 0,
        JobStatus::Dead => 3,
        JobStatus::Revoked | JobStatus::Expired if rng.bool() => 0,
        _ => match rng.u32(..100) {
            0..2 => 3,
            2..10 => 2,
            _ => 1,
        },
    };
    let tenant = pick_tenant(rng, cumulative);
    let name = pick(rng, NAMES);
    let height = [360, 720, 1080, 2160][rng.usize(..4)];
    let preset = ["veryfast", "fast", "medium"][rng.usize(..3)];
    let args = serde_json::json!({
        "input": format!(
            "s3://media-{}/uploads/{:08x}.mp4",
            tenant.as_deref().unwrap_or("shared"),
            rng.u32(..)
        ),
        "height": height,
        "preset": preset,
        "crf": rng.u8(18..30),
    });
    let secs = created_at.as_millis() / 1000;
    let nanos = u32::try_from(created_at.as_millis() % 1000).unwrap_or(0) * 1_000_000;
    let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos));
    Generated {
        job: NewJob {
            id: TaskId::from(id),
            name: name.to_owned(),
            queue: QueueName::new(pick(rng, QUEUES)).unwrap_or_default(),
            priority: [
                Priority::Low,
                Priority::Normal,
                Priority::Normal,
                Priority::High,
            ][rng.usize(..4)],
            tenant,
            created_at,
            eta: (status == JobStatus::Scheduled).then(|| millis_after(now, 600_000)),
            attempt: 1,
            args: Some(args),
        },
        status,
        attempts,
        worker: WorkerId::new(format!("worker-{:02}", rng.u8(..40)), rng.u32(1000..60000)),
    }
}

/// Loads `n` records created over the [`SPAN`] up to `now`, in creation
/// order, through the store's batched writes.
async fn load(store: &JobStore, n: usize, now: Timestamp) -> Result<()> {
    let mut rng = fastrand::Rng::with_seed(17);
    let mut cumulative = Vec::with_capacity(TENANTS);
    let mut sum = 0.0;
    for k in 0..TENANTS {
        sum += 1.0 / (k as f64 + 1.0);
        cumulative.push(sum);
    }
    let span_ms = u64::try_from(SPAN.as_millis()).unwrap_or(u64::MAX);
    let start = now.as_millis().saturating_sub(span_ms);
    let step = span_ms as f64 / n as f64;
    let output = encode_payload(&serde_json::json!({"bytes": 48_213_004, "vmaf": 93.4}))?;
    let errors = [
        "ffmpeg exited with status 1: Invalid data found when processing input",
        "input not found: s3 returned 404 for the object",
        "time limit of 600 s exceeded",
        "worker lost: lease expired while the task ran",
    ];
    let mut done = 0;
    let mut last_report = Instant::now();
    while done < n {
        let count = BATCH.min(n - done);
        let tasks: Vec<Generated> = (done..done + count)
            .map(|i| {
                let created = Timestamp::from_millis(start + (i as f64 * step) as u64);
                generate(&mut rng, &cumulative, created, now)
            })
            .collect();
        let jobs: Vec<NewJob> = tasks.iter().map(|t| t.job.clone()).collect();
        store.record_enqueued(&jobs).await?;
        // Revoked or expired before any attempt.
        let unstarted: Vec<Finished> = tasks
            .iter()
            .filter(|t| t.attempts == 0 && t.status.is_finished())
            .map(|t| outcome(t, 0, t.status, millis_after(t.job.created_at, 30_000)))
            .collect();
        store.record_outcomes(&unstarted).await?;
        for attempt in 1..=3 {
            let running: Vec<&Generated> = tasks.iter().filter(|t| t.attempts >= attempt).collect();
            if running.is_empty() {
                continue;
            }
            // Each attempt starts 0–5 s after the last ended (or the task
            // was created) and runs 1–120 s.
            let started_at = |t: &Generated| {
                millis_after(t.job.created_at, u64::from(attempt - 1) * 125_000 + 2_000)
            };
            let starts: Vec<Started> = running
                .iter()
                .map(|t| Started {
                    id: t.job.id,
                    name: t.job.name.clone(),
                    queue: t.job.queue.clone(),
                    priority: t.job.priority,
                    tenant: t.job.tenant.clone(),
                    created_at: t.job.created_at,
                    attempt,
                    worker: t.worker.clone(),
                    started_at: started_at(t),
                })
                .collect();
            store.record_started(&starts).await?;
            let outcomes: Vec<Finished> = running
                .iter()
                .filter(|t| t.status != JobStatus::Running || attempt < t.attempts)
                .map(|t| {
                    let status = if attempt < t.attempts {
                        JobStatus::Retrying
                    } else {
                        t.status
                    };
                    let ended = millis_after(started_at(t), 1_000 + u64::from(rng.u32(..119_000)));
                    let mut f = outcome(t, attempt, status, ended);
                    f.started_at = Some(started_at(t));
                    f.worker = Some(t.worker.clone());
                    match status {
                        JobStatus::Succeeded => f.result = Some(output.clone()),
                        JobStatus::Retrying | JobStatus::Failed | JobStatus::Dead => {
                            f.error = Some(errors[rng.usize(..errors.len())].to_owned());
                        }
                        _ => {}
                    }
                    f
                })
                .collect();
            store.record_outcomes(&outcomes).await?;
        }
        done += count;
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("loaded {done}/{n}");
            last_report = Instant::now();
        }
    }
    Ok(())
}

fn outcome(t: &Generated, attempt: u32, status: JobStatus, at: Timestamp) -> Finished {
    Finished {
        id: t.job.id,
        name: t.job.name.clone(),
        queue: t.job.queue.clone(),
        priority: t.job.priority,
        tenant: t.job.tenant.clone(),
        created_at: t.job.created_at,
        attempt,
        status,
        result: None,
        error: None,
        started_at: None,
        finished_at: at,
        worker: None,
    }
}

/// A search the dashboard or `spoolctl tasks` makes, with its parameters
/// drawn afresh for each repetition.
enum Search {
    Get,
    /// The first digits of a sampled id, the way one is pasted from a log.
    IdPrefix(usize),
    Page(Box<dyn Fn(&mut Ctx) -> JobQuery>),
    Count(Option<&'static str>),
}

/// What a shape draws its parameters from.
struct Ctx {
    rng: fastrand::Rng,
    now: Timestamp,
    page: usize,
    /// Ids sampled from the store, for the lookups.
    ids: Vec<TaskId>,
}

impl Ctx {
    /// A random time within the span.
    fn time(&mut self) -> Timestamp {
        let span = u64::try_from(SPAN.as_millis()).unwrap_or(u64::MAX);
        Timestamp::from_millis(self.now.as_millis() - self.rng.u64(..span))
    }

    /// A cursor at a random point of the span: a page deep in the history.
    fn cursor(&mut self) -> Option<Cursor> {
        Some(Cursor {
            created_at: self.time(),
            id: TaskId::new(),
        })
    }

    fn window(&mut self, width: Duration) -> (Option<Timestamp>, Option<Timestamp>) {
        let since = self.time();
        let width = u64::try_from(width.as_millis()).unwrap_or(u64::MAX);
        (
            Some(since),
            Some(Timestamp::from_millis(since.as_millis() + width)),
        )
    }

    fn small_tenant(&mut self) -> String {
        tenant_name(self.rng.usize(50..TENANTS))
    }

    fn base(&self) -> JobQuery {
        JobQuery::new().limit(self.page)
    }
}

fn q(name: &'static str) -> QueueName {
    QueueName::new(name).unwrap_or_default()
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn shapes() -> Vec<(&'static str, Search)> {
    use JobStatus::{Dead, Failed, Queued, Retrying, Running, Succeeded};
    let page = |f: fn(&mut Ctx) -> JobQuery| Search::Page(Box::new(f));
    vec![
        ("id", Search::Get),
        ("id prefix (8 digits)", Search::IdPrefix(8)),
        ("id prefix (13 digits)", Search::IdPrefix(13)),
        ("first page, no filter", page(|c| c.base())),
        (
            "status=succeeded (common)",
            page(|c| c.base().status([Succeeded])),
        ),
        ("status=failed", page(|c| c.base().status([Failed]))),
        ("status=dead (rare)", page(|c| c.base().status([Dead]))),
        (
            "status in (failed, dead)",
            page(|c| c.base().status([Failed, Dead])),
        ),
        (
            "status in (queued, running, retrying)",
            page(|c| c.base().status([Queued, Running, Retrying])),
        ),
        ("queue=gpu", page(|c| c.base().queue(q("gpu")))),
        ("queue=urgent (rare)", page(|c| c.base().queue(q("urgent")))),
        (
            "queue+status (gpu, failed)",
            page(|c| c.base().queue(q("gpu")).status([Failed])),
        ),
        ("name=video.vmaf", page(|c| c.base().name("video.vmaf"))),
        (
            "name=report.monthly (rare)",
            page(|c| c.base().name("report.monthly")),
        ),
        (
            "tenant (largest)",
            page(|c| c.base().tenant(tenant_name(0))),
        ),
        (
            "tenant (small)",
            page(|c| {
                let t = c.small_tenant();
                c.base().tenant(t)
            }),
        ),
        (
            "tenant+status (small, failed)",
            page(|c| {
                let t = c.small_tenant();
                c.base().tenant(t).status([Failed])
            }),
        ),
        (
            "time range 1 h",
            page(|c| {
                let (since, until) = c.window(HOUR);
                c.base().created_between(since, until)
            }),
        ),
        (
            "name+time range 1 d",
            page(|c| {
                let (since, until) = c.window(DAY);
                c.base().name("video.vmaf").created_between(since, until)
            }),
        ),
        (
            "queue+status+time range 1 d",
            page(|c| {
                let (since, until) = c.window(DAY);
                c.base()
                    .queue(q("gpu"))
                    .status([Failed])
                    .created_between(since, until)
            }),
        ),
        (
            "tenant+name+status",
            page(|c| {
                let t = tenant_name(c.rng.usize(0..10));
                c.base()
                    .tenant(t)
                    .name("video.transcode")
                    .status([Succeeded])
            }),
        ),
        (
            "deep page (cursor), no filter",
            page(|c| {
                let after = c.cursor();
                c.base().after(after)
            }),
        ),
        (
            "deep page, status=failed",
            page(|c| {
                let after = c.cursor();
                c.base().status([Failed]).after(after)
            }),
        ),
        (
            "deep page, tenant (small)",
            page(|c| {
                let t = c.small_tenant();
                let after = c.cursor();
                c.base().tenant(t).after(after)
            }),
        ),
        (
            "deep page, queue+status",
            page(|c| {
                let after = c.cursor();
                c.base().queue(q("cpu")).status([Succeeded]).after(after)
            }),
        ),
        ("oldest first, no filter", page(|c| c.base().oldest_first())),
        (
            "oldest first, status=failed",
            page(|c| c.base().status([Failed]).oldest_first()),
        ),
        (
            "oldest first, deep page",
            page(|c| {
                let after = c.cursor();
                c.base().oldest_first().after(after)
            }),
        ),
        (
            "oldest first, deep, name",
            page(|c| {
                let after = c.cursor();
                c.base().name("thumbs.make").oldest_first().after(after)
            }),
        ),
        ("count_by_status", Search::Count(None)),
        ("count_by_status (queue)", Search::Count(Some("gpu"))),
    ]
}

async fn measure(args: &Args, store: &JobStore, now: Timestamp) -> Result<Vec<ShapeFigures>> {
    let mut ctx = Ctx {
        rng: fastrand::Rng::with_seed(42),
        now,
        page: args.page,
        ids: Vec::new(),
    };
    // Ids to look up, from pages at random times.
    for _ in 0..50 {
        let after = ctx.cursor();
        let page = store.query(&JobQuery::new().limit(1).after(after)).await?;
        ctx.ids.extend(page.records.iter().map(|r| r.id));
    }
    if ctx.ids.is_empty() {
        bail!("the store is empty");
    }
    let mut figures = Vec::new();
    for (name, search) in shapes() {
        if args
            .only
            .as_deref()
            .is_some_and(|only| !name.contains(only))
        {
            continue;
        }
        if let (true, Search::Page(make)) = (args.explain, &search) {
            let plan = store.explain(&make(&mut ctx)).await?;
            eprintln!("-- {name}\n   {}", plan.join("\n   "));
        }
        let mut times = Vec::with_capacity(args.reps);
        let mut rows = 0;
        let started = Instant::now();
        while times.len() < args.reps && (times.len() < 3 || started.elapsed() < args.shape_budget)
        {
            let t = Instant::now();
            rows += match &search {
                Search::Get => {
                    let id = ctx.ids[ctx.rng.usize(..ctx.ids.len())];
                    usize::from(store.get(id).await?.is_some())
                }
                Search::IdPrefix(digits) => {
                    let id = ctx.ids[ctx.rng.usize(..ctx.ids.len())].to_string();
                    let prefix: IdPrefix = id[..*digits].parse()?;
                    let query = ctx.base().id_prefix(prefix);
                    store.query(&query).await?.records.len()
                }
                Search::Page(make) => store.query(&make(&mut ctx)).await?.records.len(),
                Search::Count(queue) => {
                    let queue = queue.map(q);
                    store.count_by_status(queue.as_ref()).await?.len()
                }
            };
            times.push(t.elapsed());
        }
        times.sort_unstable();
        let quantile = |p: f64| {
            let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
            times[i].as_secs_f64()
        };
        let shape = ShapeFigures {
            shape: name.to_owned(),
            reps: times.len(),
            rows: rows as f64 / times.len() as f64,
            p50_seconds: quantile(0.50),
            p95_seconds: quantile(0.95),
            max_seconds: times.last().map_or(0.0, Duration::as_secs_f64),
        };
        eprintln!(
            "{name}: p50 {:.1} ms, p95 {:.1} ms",
            shape.p50_seconds * 1e3,
            shape.p95_seconds * 1e3
        );
        figures.push(shape);
    }
    Ok(figures)
}

fn print_table(f: &Figures) {
    println!(
        "spool-store-bench  backend={}  n={}  page={}  load={}",
        f.backend,
        f.n,
        f.page,
        if f.loaded {
            format!(
                "{:.1} s ({:.0} records/s)",
                f.load_seconds, f.load_records_per_s
            )
        } else {
            "existing store".to_owned()
        }
    );
    let mut table = Table::new([
        ("SHAPE", Align::Left),
        ("REPS", Align::Right),
        ("ROWS", Align::Right),
        ("P50 MS", Align::Right),
        ("P95 MS", Align::Right),
        ("MAX MS", Align::Right),
    ]);
    for s in &f.shapes {
        table.row([
            s.shape.clone(),
            s.reps.to_string(),
            format!("{:.0}", s.rows),
            format!("{:.1}", s.p50_seconds * 1e3),
            format!("{:.1}", s.p95_seconds * 1e3),
            format!("{:.1}", s.max_seconds * 1e3),
        ]);
    }
    print!("{table}");
}

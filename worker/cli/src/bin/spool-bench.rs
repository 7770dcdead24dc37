//! `spool-bench`: measures Spool's broker and worker against a real Redis.
//!
//! In one run: (a) the raw pipelined `XADD` rate with redis-rs on the same
//! connection setup, (b) Spool's bulk enqueue rate, (c) the drain rate of
//! the tasks from (b) by one worker, (d) enqueue-to-start latency at a fixed
//! open-loop rate. Prints a table, or with `--json` one JSON object on the
//! last line. Keys live under a random prefix and are deleted afterwards.
//!
//! Then workflows, on the same Redis (`spool_bench/workflows.rs`): (f) the
//! nodes per second of a 10,000-node fan-out plus its join, against (c),
//! and as many plain tasks run the same way (enqueued in batches while a
//! fresh worker runs them), for comparison; (g) the enqueue-to-start
//! latency of each step of a 1,000-step chain.
//! `--wf-fanout 0` skips them.
//!
//! (a), (b), (c) and (f) run `--rounds` times, in turn, and their medians
//! are reported: one run of each moves by 10 % or more on a small shared
//! machine. (f) against (c) is the median of each round's ratio, the two
//! measured a second apart.
//!
//! With `--store sqlite|postgres`, (e) measures the job store: outcomes
//! recorded with `JobStore::record_outcomes` in batches of the settler's
//! group commit (4096), and a start plus an outcome per task.
//!
//! With `--trace-export`, only the drain (c) runs: `--rounds` times with
//! span export off and as often on, alternated, to an OTLP/HTTP receiver
//! in this process (`spool_bench_parts/trace_export.rs`).

// mimalloc, as every Spool binary (see `spool_cli_common::Allocator`).
#[global_allocator]
static ALLOCATOR: spool_cli_common::Allocator = spool_cli_common::Allocator;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use deadpool_redis::{Manager, Pool, Runtime};
use hdrhistogram::Histogram;
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Serialize};
use spool_broker::store::{Finished, JobStatus, JobStore, Started, WorkerId};
use spool_broker::{
    Broker, Envelope, QueueName, RedisBroker, RedisConfig, Task, TaskId, Timestamp, encode_payload,
};
use spool_sdk::Client;
use spool_worker::{CounterSnapshot, TaskContext, TaskError, Worker, WorkerConfig};

#[path = "spool_bench_parts/trace_export.rs"]
mod trace_export;
#[path = "spool_bench_parts/workflows.rs"]
mod workflows;

/// Measure Spool against a real Redis and print the figures.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version)]
struct Args {
    /// The Redis to measure against.
    #[arg(
        long,
        env = "SPOOL_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// Tasks per throughput phase (raw XADD, enqueue, drain).
    #[arg(short, long, default_value_t = 200_000)]
    n: usize,
    /// Rounds of (a), (b), (c) and (f), run in turn so that all see the
    /// same machine; their medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tasks per pipelined round trip in the enqueue phases.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// The worker's concurrency.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// The worker's prefetch bound.
    #[arg(long, default_value_t = 4_096)]
    prefetch: usize,
    /// The open-loop arrival rate of the latency phase, in tasks/s.
    #[arg(long, default_value_t = 20_000)]
    rate: u32,
    /// How long the latency phase sends, after a warm-up second.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    latency_for: Duration,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Sign every envelope with a random HMAC key (and verify on fetch), to
    /// measure what signing costs; the raw XADD baseline stays unsigned.
    #[arg(long)]
    sign: bool,
    /// Also measure the job store (phase e). `none` keeps the broker's
    /// figures comparable with earlier runs.
    #[arg(long, value_enum, default_value_t = StoreKind::None)]
    store: StoreKind,
    /// The store to measure. By default a fresh SQLite file in the temporary
    /// directory (deleted afterwards), or the PostgreSQL database
    /// `postgres://postgres@127.0.0.1:5432/spool_bench` (created if missing,
    /// emptied before and after). A URL given here should name a scratch
    /// database: the bench's records are left in it.
    #[arg(long, env = "SPOOL_BENCH_STORE_URL")]
    store_url: Option<String>,
    /// Tasks recorded per store measurement (default: `--n`).
    #[arg(long)]
    store_n: Option<usize>,
    /// Outcomes per `record_outcomes` call: the settler's group commit.
    #[arg(long, default_value_t = 4_096)]
    store_batch: usize,
    /// Measure only the drain, `--rounds` times with span export off and
    /// as often with it on (to an OTLP/HTTP receiver in this process),
    /// alternated. The sampler and batch limits follow `OTEL_TRACES_SAMPLER`
    /// and `OTEL_BSP_*`.
    #[arg(long)]
    trace_export: bool,
    /// (f) Members of the workflow fan-out (plus a join); 0 skips (f) and
    /// (g).
    #[arg(long, default_value_t = 10_000)]
    wf_fanout: usize,
    /// (g) Steps of the workflow chain.
    #[arg(long, default_value_t = 1_000)]
    wf_chain: usize,
}

/// Which job store phase (e) measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    None,
    Sqlite,
    Postgres,
}

/// The drain phase's task: does nothing.
#[derive(Serialize, Deserialize)]
struct Noop {
    seq: u64,
}

impl Task for Noop {
    const NAME: &'static str = "bench.noop";
    type Output = ();
}

/// The latency phase's task: carries when it was enqueued.
#[derive(Serialize, Deserialize)]
struct Stamp {
    /// Nanoseconds since [`epoch`] when `enqueue` was called.
    sent_ns: u64,
    /// Whether to record it (warm-up tasks are not).
    record: bool,
}

impl Task for Stamp {
    const NAME: &'static str = "bench.stamp";
    type Output = ();

    fn options() -> spool_broker::TaskOptions {
        spool_broker::TaskOptions {
            queue: latency_queue(),
            ..Default::default()
        }
    }
}

fn latency_queue() -> QueueName {
    QueueName::new("bench-latency").unwrap_or_default()
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Microseconds written as seconds.
fn micros_as_seconds<S: serde::Serializer>(us: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*us as f64 / 1e6)
}

#[derive(Debug, Serialize)]
struct Figures {
    n: usize,
    signed: bool,
    raw_xadd_per_s: f64,
    enqueue_per_s: f64,
    enqueue_vs_raw: f64,
    drain_per_s: f64,
    latency_rate_per_s: f64,
    latency_samples: u64,
    // Durations in JSON are seconds, as in every Spool report
    // (docs/operations.md); microseconds here, for the text.
    #[serde(rename = "latency_p50_seconds", serialize_with = "micros_as_seconds")]
    latency_p50_us: u64,
    #[serde(rename = "latency_p99_seconds", serialize_with = "micros_as_seconds")]
    latency_p99_us: u64,
    #[serde(rename = "latency_max_seconds", serialize_with = "micros_as_seconds")]
    latency_max_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_n: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_batch: Option<usize>,
    /// Outcomes of new tasks recorded per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    store_per_s: Option<f64>,
    /// Tasks per second recorded as a start batch then an outcome batch
    /// (the outcome updates the started row).
    #[serde(skip_serializing_if = "Option::is_none")]
    store_lifecycle_per_s: Option<f64>,
    /// (f) nodes of the fan-out workflow, and their rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_fanout_nodes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_fanout_nodes_per_s: Option<f64>,
    /// (f) the time its submit took, in ms (included in the rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_fanout_submit_ms: Option<f64>,
    /// (f) against (c): the goal is at least 0.5. The median of the
    /// rounds' ratios, each listed in `wf_fanout_vs_drain_rounds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_fanout_vs_drain: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    wf_fanout_vs_drain_rounds: Vec<f64>,
    /// (f) for comparison: as many plain tasks, enqueued in batches while
    /// a fresh worker runs them, first enqueue to last acknowledgement
    /// (median), and the fan-out's rate against it (median of the
    /// rounds' ratios).
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_fanout_plain_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_fanout_vs_plain: Option<f64>,
    /// (g) the chain's steps and each step's enqueue-to-start latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_chain_steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_chain_step_p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_chain_step_p99_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wf_chain_step_max_us: Option<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.trace_export {
        return trace_main(&args, &runtime);
    }
    let _telemetry =
        spool_worker_cli::cli::init_logging(spool_worker_cli::cli::LogFormat::Human, "warn");
    let figures = runtime.block_on(bench(&args))?;
    print_table(&args, &figures);
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}

/// `--trace-export`: the drain with span export off and on.
fn trace_main(args: &Args, runtime: &tokio::runtime::Runtime) -> Result<()> {
    if args.n == 0 || args.batch == 0 {
        bail!("--n and --batch must be positive");
    }
    let received = Arc::new(trace_export::Received::default());
    let addr = runtime.block_on(trace_export::start_receiver(Arc::clone(&received)))?;
    let switch = spool_cli_common::ExportSwitch::default();
    switch.set(false);
    let settings = spool_cli_common::OtlpSettings {
        protocol: spool_cli_common::OtlpProtocol::HttpProtobuf,
        endpoint: Some(format!("http://{addr}/v1/traces")),
        service_name: Some("spool-bench".to_owned()),
    };
    let telemetry = spool_cli_common::init_logging_with(
        spool_worker_cli::cli::LogFormat::Human,
        "warn",
        Some(&settings),
        Some(switch.clone()),
    );
    if !telemetry.is_exporting() {
        bail!("span export did not start (see the warning above)");
    }
    let figures = runtime.block_on(async {
        let (config, prefix) = bench_config(args)?;
        let broker = RedisBroker::connect(config.clone())
            .await
            .context("connecting to Redis")?;
        let client = Client::new(broker.clone());
        let result =
            trace_export::run(args, &broker, &client, &switch, &telemetry, &received).await;
        cleanup(&config, &prefix).await?;
        result
    })?;
    // Shut the exporter down while the receiver still runs.
    drop(telemetry);
    trace_export::print_table(args, &figures);
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    }
    Ok(())
}

/// The Redis configuration of a run, under a fresh key prefix.
fn bench_config(args: &Args) -> Result<(RedisConfig, String)> {
    let prefix = format!("spool-bench-{:08x}", fastrand::u32(..));
    let signing = if args.sign {
        let key: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
            .take(32)
            .collect();
        Some(spool_broker::SigningKeys::new(key)?)
    } else {
        None
    };
    let config = RedisConfig {
        key_prefix: prefix.clone(),
        signing,
        ..RedisConfig::from_url(&args.redis_url)
    };
    Ok((config, prefix))
}

async fn bench(args: &Args) -> Result<Figures> {
    if args.n == 0 || args.batch == 0 {
        bail!("--n and --batch must be positive");
    }
    let (config, prefix) = bench_config(args)?;
    let broker = RedisBroker::connect(config.clone())
        .await
        .context("connecting to Redis")?;
    let client = Client::new(broker.clone());
    let result = phases(args, &config, &broker, &client).await;
    cleanup(&config, &prefix).await?;
    result
}

async fn phases(
    args: &Args,
    config: &RedisConfig,
    broker: &RedisBroker,
    client: &Client<RedisBroker>,
) -> Result<Figures> {
    if args.wf_fanout > 0 && args.wf_chain < 2 {
        bail!("--wf-chain must be at least 2");
    }
    let opened = match args.store {
        StoreKind::None => None,
        kind => Some(open_store(args, kind).await?),
    };
    let store_result = async {
        let recorder = opened.as_ref().map(|o| &o.store);
        let workers = (args.concurrency, args.prefetch);
        let mut raw_rates = Vec::new();
        let mut enqueue_rates = Vec::new();
        let mut drain_rates = Vec::new();
        let mut fanouts = Vec::new();
        let mut ratios = Vec::new();
        for round in 1..=args.rounds.max(1) {
            raw_rates.push(raw_xadd(args, config).await?);
            enqueue_rates.push(enqueue(args, client, &QueueName::DEFAULT).await?);
            // With a store, the drain records every outcome before acking
            // it, exactly as a worker with `--store-url` does.
            let drain_per_s = drain(args, broker, recorder).await?;
            drain_rates.push(drain_per_s);
            eprintln!(
                "round {round}: raw XADD {:.0}/s, enqueue {:.0}/s, drain {drain_per_s:.0}/s",
                raw_rates[round - 1],
                enqueue_rates[round - 1],
            );
            if args.wf_fanout > 0 {
                let fanout =
                    workflows::fanout(broker, client, workers, args.wf_fanout, args.batch).await?;
                ratios.push(fanout.nodes_per_s / drain_per_s);
                fanouts.push(fanout);
            }
        }
        let latency = latency(args, broker, client).await?;
        let chain = if args.wf_fanout == 0 {
            None
        } else {
            Some(workflows::chain(broker, client, workers, args.wf_chain).await?)
        };
        let store = match &opened {
            Some(opened) => Some(store(args, opened).await?),
            None => None,
        };
        let rates = Rates {
            raw_xadd: median(&mut raw_rates),
            enqueue: median(&mut enqueue_rates),
            drain: median(&mut drain_rates),
        };
        Ok::<_, anyhow::Error>((rates, latency, (fanouts, ratios, chain), store))
    }
    .await;
    if let Some(opened) = opened {
        close_store(opened).await?;
    }
    let (rates, latency, (fanouts, ratios, chain), store) = store_result?;
    let fanout_nodes = fanouts.first().map(|f| f.nodes);
    let mut fanout_rates: Vec<f64> = fanouts.iter().map(|f| f.nodes_per_s).collect();
    let mut submit_ms: Vec<f64> = fanouts.iter().map(|f| f.submit_ms).collect();
    let mut plain_rates: Vec<f64> = fanouts.iter().map(|f| f.plain_per_s).collect();
    let mut plain_ratios: Vec<f64> = fanouts
        .iter()
        .map(|f| f.nodes_per_s / f.plain_per_s)
        .collect();
    let mut sorted_ratios = ratios.clone();
    Ok(Figures {
        n: args.n,
        signed: args.sign,
        raw_xadd_per_s: rates.raw_xadd,
        enqueue_per_s: rates.enqueue,
        enqueue_vs_raw: rates.enqueue / rates.raw_xadd,
        drain_per_s: rates.drain,
        latency_rate_per_s: latency.rate,
        latency_samples: latency.histogram.len(),
        latency_p50_us: latency.histogram.value_at_quantile(0.50),
        latency_p99_us: latency.histogram.value_at_quantile(0.99),
        latency_max_us: latency.histogram.max(),
        store: store.as_ref().map(|s| s.backend),
        store_n: store.as_ref().map(|s| s.n),
        store_batch: store.as_ref().map(|_| args.store_batch),
        store_per_s: store.as_ref().map(|s| s.outcomes_per_s),
        store_lifecycle_per_s: store.as_ref().map(|s| s.lifecycle_per_s),
        wf_fanout_nodes: fanout_nodes,
        wf_fanout_nodes_per_s: fanout_nodes.map(|_| median(&mut fanout_rates)),
        wf_fanout_vs_drain: fanout_nodes.map(|_| median(&mut sorted_ratios)),
        wf_fanout_vs_drain_rounds: ratios,
        wf_fanout_submit_ms: fanout_nodes.map(|_| median(&mut submit_ms)),
        wf_fanout_plain_per_s: fanout_nodes.map(|_| median(&mut plain_rates)),
        wf_fanout_vs_plain: fanout_nodes.map(|_| median(&mut plain_ratios)),
        wf_chain_steps: chain.as_ref().map(|c| c.steps),
        wf_chain_step_p50_us: chain.as_ref().map(|c| c.latency.value_at_quantile(0.50)),
        wf_chain_step_p99_us: chain.as_ref().map(|c| c.latency.value_at_quantile(0.99)),
        wf_chain_step_max_us: chain.as_ref().map(|c| c.latency.max()),
    })
}

/// The medians of (a), (b) and (c) over the rounds.
struct Rates {
    raw_xadd: f64,
    enqueue: f64,
    drain: f64,
}

struct StoreFigures {
    backend: &'static str,
    n: usize,
    outcomes_per_s: f64,
    lifecycle_per_s: f64,
}

/// The default PostgreSQL store of phase (e).
const BENCH_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/spool_bench";

/// A job store opened for the bench, and what to clean up after it.
struct OpenedStore {
    store: JobStore,
    scratch_file: Option<std::path::PathBuf>,
    own_database: bool,
}

/// Opens the store `--store` names: a fresh SQLite file in the temporary
/// directory, or the bench's own PostgreSQL database, emptied first.
async fn open_store(args: &Args, kind: StoreKind) -> Result<OpenedStore> {
    let scratch_file = (kind == StoreKind::Sqlite && args.store_url.is_none())
        .then(|| std::env::temp_dir().join(format!("spool-bench-{:08x}.db", fastrand::u32(..))));
    let url = match (&args.store_url, &scratch_file) {
        (Some(url), _) => url.clone(),
        (None, Some(file)) => format!("sqlite://{}", file.display()),
        (None, None) => BENCH_POSTGRES_URL.to_owned(),
    };
    let store = JobStore::create(&url)
        .await
        .with_context(|| format!("connecting to the job store {url}"))?;
    let own_database = args.store_url.is_none() && kind == StoreKind::Postgres;
    if own_database {
        empty(&store).await?;
    }
    Ok(OpenedStore {
        store,
        scratch_file,
        own_database,
    })
}

async fn close_store(opened: OpenedStore) -> Result<()> {
    if opened.own_database {
        empty(&opened.store).await?;
    }
    opened.store.close().await;
    if let Some(file) = opened.scratch_file {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = file.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// (e) The job store's own write rate, through the calls the worker's
/// settler makes: `record_outcomes` for a group commit of `store_batch`
/// outcomes, and `record_started` then `record_outcomes` per group.
async fn store(args: &Args, opened: &OpenedStore) -> Result<StoreFigures> {
    let n = args.store_n.unwrap_or(args.n);
    if n == 0 || args.store_batch == 0 {
        bail!("--store-n and --store-batch must be positive");
    }
    let (outcomes_per_s, lifecycle_per_s) = store_phases(args, &opened.store, n).await?;
    Ok(StoreFigures {
        backend: opened.store.backend().as_str(),
        n,
        outcomes_per_s,
        lifecycle_per_s,
    })
}

/// Deletes every (finished) record of the bench's own database.
async fn empty(store: &JobStore) -> Result<()> {
    store
        .prune_finished_before(Timestamp::from_millis(u64::MAX), 50_000)
        .await?;
    Ok(())
}

async fn store_phases(args: &Args, store: &JobStore, n: usize) -> Result<(f64, f64)> {
    let worker = WorkerId::new(
        gethostname::gethostname().to_string_lossy(),
        std::process::id(),
    );
    let template = Envelope::for_task(&Noop { seq: 0 })?;
    let output = encode_payload(&())?;
    let outcomes = |envelopes: &[Envelope]| -> Vec<Finished> {
        envelopes
            .iter()
            .map(|e| {
                let mut f = Finished::from_envelope(e, JobStatus::Succeeded, Timestamp::now());
                f.result = Some(output.clone());
                f.worker = Some(worker.clone());
                f
            })
            .collect()
    };
    let fresh = || -> Vec<Envelope> {
        (0..n)
            .map(|_| Envelope {
                id: TaskId::new(),
                ..template.clone()
            })
            .collect()
    };

    // Outcomes of tasks with no record yet: every row is an insert.
    let finished = outcomes(&fresh());
    let started_at = Instant::now();
    for batch in finished.chunks(args.store_batch) {
        store.record_outcomes(batch).await?;
    }
    let outcomes_per_s = per_second(n, started_at.elapsed());
    eprintln!("store outcomes: {outcomes_per_s:.0}/s");

    // A start, then an outcome that updates the started row.
    let envelopes = fresh();
    let starts: Vec<Started> = envelopes
        .iter()
        .map(|e| Started::from_envelope(e, &worker, Timestamp::now()))
        .collect();
    let finished = outcomes(&envelopes);
    let started_at = Instant::now();
    for (starts, finished) in starts
        .chunks(args.store_batch)
        .zip(finished.chunks(args.store_batch))
    {
        store.record_started(starts).await?;
        store.record_outcomes(finished).await?;
    }
    let lifecycle_per_s = per_second(n, started_at.elapsed());
    eprintln!("store start + outcome: {lifecycle_per_s:.0}/s");
    Ok((outcomes_per_s, lifecycle_per_s))
}

/// A pool built exactly as `RedisBroker` builds its own for one server.
fn raw_pool(config: &RedisConfig) -> Result<Pool> {
    let connection = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout));
    let manager = Manager::new_with_config(config.url.as_str(), connection)?;
    Ok(Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// A cluster connection to the seeds of `config`'s cluster URL, if it is
/// one.
async fn raw_cluster(
    config: &RedisConfig,
) -> Result<Option<redis::cluster_async::ClusterConnection>> {
    let Some(nodes) = config.cluster_nodes()? else {
        return Ok(None);
    };
    let client = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        .build()?;
    Ok(Some(client.get_async_connection().await?))
}

/// (a) Pipelined XADDs of a real envelope's bytes, `batch` per round trip;
/// on a cluster, to the one node that holds the key.
async fn raw_xadd(args: &Args, config: &RedisConfig) -> Result<f64> {
    match raw_cluster(config).await? {
        Some(mut conn) => raw_xadd_on(args, config, &mut conn).await,
        None => raw_xadd_on(args, config, &mut *raw_pool(config)?.get().await?).await,
    }
}

async fn raw_xadd_on(
    args: &Args,
    config: &RedisConfig,
    conn: &mut impl redis::aio::ConnectionLike,
) -> Result<f64> {
    let payload = Envelope::for_task(&Noop { seq: 0 })?.encode()?;
    let key = format!("{}:{{raw}}:normal", config.key_prefix);
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.n {
        let count = args.batch.min(args.n - sent);
        let mut pipe = redis::pipe();
        for _ in 0..count {
            pipe.xadd(&key, "*", &[("e", payload.as_slice())]).ignore();
        }
        let () = pipe.query_async(conn).await?;
        sent += count;
    }
    let rate = per_second(args.n, started.elapsed());
    let () = redis::cmd("DEL").arg(&key).query_async(conn).await?;
    Ok(rate)
}

/// (b) `enqueue_many` through the SDK, `batch` per call.
async fn enqueue(args: &Args, client: &Client<RedisBroker>, queue: &QueueName) -> Result<f64> {
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.n {
        let count = args.batch.min(args.n - sent);
        let first = sent as u64;
        client
            .enqueue_many((first..first + count as u64).map(|seq| Noop { seq }))
            .queue(queue.clone())
            .await?;
        sent += count;
    }
    Ok(per_second(args.n, started.elapsed()))
}

/// (c) One worker drains the `n` tasks enqueued by (b), recording each
/// outcome in `store` first when one is given.
async fn drain(args: &Args, broker: &RedisBroker, store: Option<&JobStore>) -> Result<f64> {
    let config = WorkerConfig {
        concurrency: args.concurrency,
        prefetch: args.prefetch,
        ..WorkerConfig::default()
    };
    let mut worker = Worker::new(broker.clone(), config)
        .register::<Noop, _>(|_task: Noop, _ctx: TaskContext| async { Ok::<_, TaskError>(()) });
    if let Some(store) = store {
        worker = worker.with_store(store.clone());
    }
    let counters = worker.counters();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let n = args.n as u64;
    // Drained means every outcome is acknowledged, not just run.
    wait_for(Duration::from_secs(600), || async {
        counters.snapshot().succeeded >= n
            && broker
                .stats(&QueueName::DEFAULT)
                .await
                .is_ok_and(|s| s.is_drained())
    })
    .await
    .context("the drain did not finish")?;
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let report: CounterSnapshot = running.await??;
    if report.succeeded != n {
        bail!("drained {} tasks, expected {n}", report.succeeded);
    }
    Ok(per_second(args.n, elapsed))
}

struct Latency {
    rate: f64,
    histogram: Histogram<u64>,
}

/// (d) Open-loop arrivals at `rate`/s; records enqueue-to-start latency.
async fn latency(
    args: &Args,
    broker: &RedisBroker,
    client: &Client<RedisBroker>,
) -> Result<Latency> {
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let recorded = Arc::clone(&histogram);
    let config = WorkerConfig {
        queues: vec![latency_queue()],
        concurrency: args.concurrency,
        prefetch: args.prefetch,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(broker.clone(), config).register::<Stamp, _>(
        move |task: Stamp, _ctx: TaskContext| {
            if task.record {
                let micros = nanos_since_epoch().saturating_sub(task.sent_ns) / 1_000;
                if let Ok(mut h) = recorded.lock() {
                    h.saturating_record(micros.max(1));
                }
            }
            async { Ok::<_, TaskError>(()) }
        },
    );
    let counters = worker.counters();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    // Pace from an OS thread: tokio's timer ticks in milliseconds, far too
    // coarse for 50 µs gaps. Each arrival is enqueued on the runtime at once.
    let interval = Duration::from_secs(1) / args.rate.max(1);
    let warmup = Duration::from_secs(1);
    let total = warmup + args.latency_for;
    let handle = tokio::runtime::Handle::current();
    let client = client.clone();
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        let mut sent = 0u64;
        let mut recorded = 0u64;
        let mut next = start;
        while next.duration_since(start) < total {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            let record = next.duration_since(start) >= warmup;
            recorded += u64::from(record);
            let client = client.clone();
            let sent_ns = nanos_since_epoch();
            handle.spawn(async move { client.enqueue(Stamp { sent_ns, record }).await });
            sent += 1;
            next += interval;
        }
        let rate = per_second(usize::try_from(sent).unwrap_or(usize::MAX), start.elapsed());
        (sent, recorded, rate)
    });
    let (sent, recorded, rate) = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    wait_for(Duration::from_secs(120), || async {
        counters.snapshot().succeeded >= sent
    })
    .await
    .context("the latency phase did not finish")?;
    let _ = stop.send(());
    running.await??;
    let histogram = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?
        .clone();
    if histogram.len() != recorded {
        bail!(
            "recorded {} latencies, expected {recorded}",
            histogram.len()
        );
    }
    Ok(Latency { rate, histogram })
}

async fn wait_for<F, Fut>(timeout: Duration, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// The median of `values` (the upper one of an even count); NaN for none.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn cleanup(config: &RedisConfig, prefix: &str) -> Result<()> {
    match raw_cluster(config).await? {
        Some(mut conn) => delete_matching(&mut conn, prefix).await,
        None => delete_matching(&mut *raw_pool(config)?.get().await?, prefix).await,
    }
}

/// Deletes the keys under `prefix`, one `DEL` each: on a cluster they
/// span slots.
async fn delete_matching(conn: &mut impl redis::aio::ConnectionLike, prefix: &str) -> Result<()> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(conn)
        .await?;
    for key in keys {
        let () = redis::cmd("DEL").arg(key).query_async(conn).await?;
    }
    Ok(())
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

fn print_table(args: &Args, f: &Figures) {
    println!(
        "spool-bench  n={}  rounds={}  batch={}  concurrency={}  prefetch={}  signed={}",
        f.n, args.rounds, args.batch, args.concurrency, args.prefetch, f.signed
    );
    println!("{:<34} {:>14}", "measure", "result");
    println!(
        "{:<34} {:>12.0}/s  (median)",
        "(a) raw pipelined XADD", f.raw_xadd_per_s
    );
    println!(
        "{:<34} {:>12.0}/s  (median, {:.2}x raw)",
        "(b) Spool bulk enqueue", f.enqueue_per_s, f.enqueue_vs_raw
    );
    println!(
        "{:<34} {:>12.0}/s  (median)",
        "(c) drain, one worker process", f.drain_per_s
    );
    println!(
        "{:<34} {:>12.0}/s  ({} samples)",
        "(d) open-loop arrival rate", f.latency_rate_per_s, f.latency_samples
    );
    println!(
        "{:<34} {:>11} us",
        "    enqueue-to-start p50", f.latency_p50_us
    );
    println!(
        "{:<34} {:>11} us",
        "    enqueue-to-start p99", f.latency_p99_us
    );
    println!(
        "{:<34} {:>11} us",
        "    enqueue-to-start max", f.latency_max_us
    );
    if let (Some(nodes), Some(rate), Some(ratio)) = (
        f.wf_fanout_nodes,
        f.wf_fanout_nodes_per_s,
        f.wf_fanout_vs_drain,
    ) {
        println!(
            "{:<34} {:>12.0}/s  (median; {nodes} nodes, {ratio:.2}x drain)",
            "(f) workflow fan-out + join", rate
        );
        if let Some(submit) = f.wf_fanout_submit_ms {
            println!("{:<34} {:>11.1} ms", "    of which the submit", submit);
        }
        if let (Some(plain), Some(ratio)) = (f.wf_fanout_plain_per_s, f.wf_fanout_vs_plain) {
            println!(
                "{:<34} {:>12.0}/s  (median; fan-out at {ratio:.2}x)",
                "    same tasks without a workflow", plain
            );
        }
    }
    if let (Some(steps), Some(p50), Some(p99), Some(max)) = (
        f.wf_chain_steps,
        f.wf_chain_step_p50_us,
        f.wf_chain_step_p99_us,
        f.wf_chain_step_max_us,
    ) {
        println!(
            "{:<34} {:>11} us  ({steps} steps)",
            "(g) chain step p50", p50
        );
        println!("{:<34} {:>11} us", "    chain step p99", p99);
        println!("{:<34} {:>11} us", "    chain step max", max);
    }
    if let (Some(store), Some(outcomes), Some(lifecycle)) =
        (f.store, f.store_per_s, f.store_lifecycle_per_s)
    {
        println!(
            "{:<34} {:>12.0}/s  ({store}, batches of {})",
            "(e) store: record outcomes", outcomes, args.store_batch
        );
        println!(
            "{:<34} {:>12.0}/s  ({store})",
            "    start + outcome per task", lifecycle
        );
    }
}

//! The autoscaler's local actuator against a real Redis, real
//! `spool-worker` processes and a SQLite job store: a pool scales up under
//! 500 `spool.sleep` tasks and back to its minimum after the drain, retiring
//! workers with their warm shutdown, and every task succeeds.
//!
//! Needs the `spool-worker` binary: a workspace test run builds it; run
//! alone, `cargo build -p spool-worker-cli --bin spool-worker` first.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spool_autoscaler::{
    Autoscaler, AutoscalerConfig, Direction, GpuCount, LocalActuator, LocalConfig, Policy,
    PoolConfig, SignalReader, TickReport,
};
use spool_broker::store::{JobStatus, JobStore};
use spool_broker::{QueueName, WorkerState};
use spool_sdk::Client;
use spool_tests::{TestRedis, bins, redis_url, wait_until};
use spool_worker::builtin::Sleep;
use tokio::time::Instant;

const POOL: &str = "scaled";
const TASKS: u64 = 500;

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spool-autoscale-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Live registry records of the pool's workers, by state.
async fn live_workers(test: &TestRedis) -> Vec<(u32, WorkerState)> {
    test.broker
        .workers()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.name == POOL && r.state != WorkerState::Stopped)
        .map(|r| (r.pid, r.state))
        .collect()
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test]
async fn a_pool_scales_up_under_load_and_back_to_its_minimum_without_losing_a_task() {
    let test = TestRedis::new().await;
    let queue = QueueName::new("autoscaled").unwrap();
    let dir = temp_dir();
    let store_url = format!("sqlite://{}/jobs.db", dir.display());
    let store = JobStore::create(&store_url).await.unwrap();
    let client = Client::new(test.broker.clone()).with_store(store.clone());

    let mut pool = PoolConfig::new(POOL, vec![queue.clone()]);
    pool.concurrency = Some(4);
    // Sleep tasks need neither the hardware probe nor FFmpeg: skipping
    // both starts a worker in tens of milliseconds.
    pool.worker_args = [
        "--no-probe",
        "--no-video",
        "--poll-interval",
        "100ms",
        "--store-url",
        &store_url,
    ]
    .map(String::from)
    .to_vec();
    pool.policy = Policy {
        min_workers: 1,
        max_workers: 4,
        target_backlog_per_worker: 20,
        scale_down_cooldown: Duration::from_secs(2),
        ..Policy::default()
    };
    let config = AutoscalerConfig {
        redis_url: redis_url(),
        key_prefix: test.prefix.clone(),
        interval: Duration::from_millis(200),
        metrics_addr: None,
        local: LocalConfig {
            worker_bin: Some(bins::spool_worker()),
            log_dir: Some(dir.clone()),
        },
        pools: vec![pool],
        ..AutoscalerConfig::default()
    }
    .validated()
    .unwrap();
    let actuator = LocalActuator::new(&config);
    let autoscaler = Autoscaler::new(
        config,
        SignalReader::new(test.broker.clone()),
        actuator,
        GpuCount::configured(0),
    )
    .unwrap();

    let reports: Arc<Mutex<Vec<(Instant, TickReport)>>> = Arc::default();
    let record = Arc::clone(&reports);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = autoscaler.run(
        async {
            let _ = stopped.await;
        },
        std::future::pending(),
        move |report| {
            record
                .lock()
                .unwrap()
                .push((Instant::now(), report.clone()))
        },
    );
    let last_workers = {
        let reports = Arc::clone(&reports);
        move || {
            reports
                .lock()
                .unwrap()
                .last()
                .map(|(_, r)| r.pools[0].workers)
        }
    };

    let scenario = async {
        wait_until(
            "the pool's minimum worker to register",
            Duration::from_secs(30),
            || async {
                let live = live_workers(&test).await;
                live.len() == 1 && live[0].1 == WorkerState::Running
            },
        )
        .await;
        wait_until(
            "the minimum worker to fetch",
            Duration::from_secs(10),
            || async { test.stats(&queue).await.consumers == 1 },
        )
        .await;

        let spike = Instant::now();
        let ids = client
            .enqueue_many((0..TASKS).map(|i| Sleep { ms: 20 + i % 31 }))
            .queue(queue.clone())
            .await
            .unwrap();
        assert_eq!(ids.len() as u64, TASKS);

        // A second consumer appears on the queue at a new worker's first
        // fetch.
        wait_until("a new worker to fetch", Duration::from_secs(20), || async {
            test.stats(&queue).await.consumers >= 2
        })
        .await;
        let new_worker_fetching = spike.elapsed();

        wait_until("every task to succeed", Duration::from_secs(60), || async {
            store.count_by_status(Some(&queue)).await.unwrap()
                == vec![(JobStatus::Succeeded, TASKS)]
        })
        .await;
        let drained = Instant::now();

        wait_until(
            "the pool back at its minimum",
            Duration::from_secs(30),
            || async { last_workers() == Some(1) && live_workers(&test).await.len() == 1 },
        )
        .await;
        let back_at_minimum = drained.elapsed();
        let _ = stop.send(());
        (spike, new_worker_fetching, back_at_minimum)
    };

    let (result, (spike, new_worker_fetching, back_at_minimum)) = tokio::join!(run, scenario);
    result.unwrap();

    // Scaled up at once to the cap (500 tasks at 20 per worker want 25),
    // then down to the minimum, never below it. (A tick may catch the
    // enqueue halfway, and scale up less at first.)
    let reports = reports.lock().unwrap().clone();
    let decided_at = reports
        .iter()
        .find(|(_, r)| r.pools[0].decision.direction == Direction::Up && r.pools[0].backlog > 0)
        .map(|(at, _)| *at)
        .expect("a scale-up after the spike");
    let up = reports
        .iter()
        .map(|(_, r)| &r.pools[0])
        .find(|p| p.decision.needed >= 4 && p.decision.direction == Direction::Up)
        .expect("a scale-up to what the spike needs");
    assert_eq!(
        (up.decision.desired, up.workers, up.decision.cap),
        (4, 4, 4)
    );
    let workers: Vec<u32> = reports.iter().map(|(_, r)| r.pools[0].workers).collect();
    assert_eq!(workers.iter().max(), Some(&4));
    assert!(workers.iter().all(|&n| n >= 1), "{workers:?}");
    assert!(
        reports
            .iter()
            .any(|(_, r)| r.pools[0].decision.direction == Direction::Down)
    );
    assert!(reports.iter().all(|(_, r)| r.pools[0].error.is_none()));

    // Nothing lost: every task has its outcome, nothing waits or died.
    let stats = test.stats(&queue).await;
    assert!(stats.is_drained(), "{stats:?}");
    assert_eq!(stats.dead, 0);
    assert!(test.dead_letters(&queue).await.is_empty());
    assert_eq!(
        store.count_by_status(Some(&queue)).await.unwrap(),
        vec![(JobStatus::Succeeded, TASKS)]
    );

    // Every worker it started stopped warmly (its last record says so),
    // and none outlives it.
    let records: Vec<_> = test
        .broker
        .workers()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.name == POOL)
        .collect();
    assert!(
        records.iter().all(|r| r.state == WorkerState::Stopped),
        "{records:?}"
    );
    let pids: BTreeSet<u32> = records.iter().map(|r| r.pid).collect();
    assert!(pids.len() >= 4, "{pids:?}");
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} outlived the autoscaler"
        );
    }

    println!(
        "autoscale local: {TASKS} tasks; spike -> scale-up decision {} ms; spike -> new worker \
         fetching {} ms; drain -> back at the minimum {} ms (cooldown 2 s, tick 200 ms); {} \
         worker processes",
        millis(decided_at.saturating_duration_since(spike)),
        millis(new_worker_fetching),
        millis(back_at_minimum),
        pids.len()
    );
    store.close().await;
    test.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// How the test stops the `spool-autoscaler` process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM: the autoscaler retires its workers and exits.
    Terminate,
    /// SIGKILL: the kernel sends each worker SIGTERM as its parent dies.
    Kill,
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Runs `spool-autoscaler` with one worker busy on four tasks, stops it
/// with `stop`, and checks that the worker finished them, stopped warmly
/// and did not outlive the autoscaler.
async fn stop_the_autoscaler_with_tasks_running(stop: Stop) {
    let test = TestRedis::new().await;
    let queue = QueueName::new("held").unwrap();
    let dir = temp_dir();
    let config = dir.join("autoscaler.toml");
    std::fs::write(
        &config,
        format!(
            "key_prefix = \"{}\"\ninterval = \"200ms\"\nmetrics_addr = \"none\"\n\
             [local]\nworker_bin = \"{}\"\nlog_dir = \"{}\"\n\
             [[pools]]\nname = \"{POOL}\"\nqueues = [\"held\"]\nconcurrency = 4\n\
             worker_args = [\"--no-probe\", \"--no-video\", \"--poll-interval\", \"100ms\"]\n\
             [pools.policy]\nmin_workers = 1\nmax_workers = 1\n",
            test.prefix,
            bins::spool_worker().display(),
            dir.display()
        ),
    )
    .unwrap();
    let stderr = std::fs::File::create(dir.join("autoscaler.log")).unwrap();
    let mut autoscaler = std::process::Command::new(bins::spool_autoscaler())
        .args([
            "--config",
            &config.display().to_string(),
            "--redis-url",
            &redis_url(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();

    let client = Client::new(test.broker.clone());
    client
        .enqueue_many((0..4).map(|_| Sleep { ms: 700 }))
        .queue(queue.clone())
        .await
        .unwrap();
    wait_until(
        "the worker to run the four tasks",
        Duration::from_secs(20),
        || async { test.stats(&queue).await.pending == 4 },
    )
    .await;
    let live = live_workers(&test).await;
    assert_eq!(live.len(), 1, "{live:?}");
    let worker = live[0].0;

    match stop {
        Stop::Terminate => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(autoscaler.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap(),
        Stop::Kill => autoscaler.kill().unwrap(),
    }
    let mut status = None;
    wait_until("the autoscaler to exit", Duration::from_secs(20), || {
        status = status.or_else(|| autoscaler.try_wait().unwrap());
        let done = status.is_some();
        async move { done }
    })
    .await;
    if stop == Stop::Terminate {
        // It waited for its worker's warm shutdown before exiting.
        assert!(status.unwrap().success(), "{status:?}");
        assert!(exited(worker), "worker {worker} outlived the autoscaler");
    }
    wait_until("the worker to exit", Duration::from_secs(20), || async {
        exited(worker)
    })
    .await;

    // The tasks it held ran to their end: nothing waits, nothing died.
    let stats = test.stats(&queue).await;
    assert!(stats.is_drained(), "{stats:?}");
    assert_eq!((stats.completed_total, stats.dead), (4, 0));
    // Its last record says it stopped on a signal, warmly.
    let records = test.broker.workers().await.unwrap();
    let record = records.iter().find(|r| r.pid == worker).unwrap();
    assert_eq!(record.state, WorkerState::Stopped);
    assert_eq!(record.succeeded, 4);
    test.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_stopped_autoscaler_retires_its_workers_warmly() {
    stop_the_autoscaler_with_tasks_running(Stop::Terminate).await;
}

#[tokio::test]
async fn a_killed_autoscaler_leaves_no_worker_behind() {
    stop_the_autoscaler_with_tasks_running(Stop::Kill).await;
}

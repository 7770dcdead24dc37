//! Unit tests of the simulation: whole runs of small profiles.

use std::time::Duration;

use super::*;
use crate::config::{AutoscalerConfig, PoolConfig};
use crate::policy::Policy;

fn config(policy: Policy, concurrency: u32) -> AutoscalerConfig {
    let mut pool = PoolConfig::new("cpu", vec![spool_broker::QueueName::DEFAULT]);
    pool.concurrency = Some(concurrency);
    pool.policy = policy;
    AutoscalerConfig {
        pools: vec![pool],
        ..AutoscalerConfig::default()
    }
    .validated()
    .unwrap()
}

fn burst(count: u64, duration: &str, fleet: &str) -> LoadProfile {
    LoadProfile::from_toml(&format!(
        "duration = \"{duration}\"\n[fleet]\n{fleet}\n[[bursts]]\nat = \"5s\"\ncount = {count}\n[durations]\nmean = \"2s\""
    ))
    .unwrap()
}

#[test]
fn a_burst_scales_up_drains_and_scales_back_down_after_the_cooldown() {
    let policy = Policy {
        min_workers: 1,
        max_workers: 10,
        target_backlog_per_worker: 8,
        scale_down_cooldown: Duration::from_secs(30),
        ..Policy::default()
    };
    let run = simulate(
        &config(policy, 4),
        None,
        &burst(400, "3m", "start_delay = \"3s\""),
    )
    .unwrap();
    let s = &run.summary;
    assert_eq!((s.tasks, s.completed, s.unfinished), (400, 400, 0));
    assert_eq!(s.max_workers, 10);
    // 400 tasks of 2 s on 40 slots: about 20 s of work once all are up.
    let drained = run
        .samples
        .iter()
        .find(|r| r.t > 5.0 && r.backlog == 0 && r.busy == 0)
        .unwrap();
    assert!(
        (20.0..40.0).contains(&drained.t),
        "drained at {}",
        drained.t
    );
    // The first worker is up at once, the others after the start delay.
    let at_6s = run.samples.iter().find(|r| r.t == 6.0).unwrap();
    assert_eq!(
        (at_6s.workers, at_6s.ready_workers, at_6s.desired),
        (10, 1, 10)
    );
    // Back at the minimum a cooldown after the drain, not before.
    let back = run
        .samples
        .iter()
        .find(|r| r.t > 6.0 && r.workers == 1)
        .unwrap();
    assert!(
        back.t >= drained.t + 20.0,
        "down at {} after drain at {}",
        back.t,
        drained.t
    );
    assert_eq!(run.samples.last().unwrap().workers, 1);
    assert!(s.wait_p95 > s.wait_p50);
    assert!(s.scale_downs >= 1);
}

#[test]
fn a_slower_start_means_longer_waits() {
    let policy = Policy {
        max_workers: 20,
        ..Policy::default()
    };
    let fast = simulate(
        &config(policy.clone(), 2),
        None,
        &burst(300, "5m", "start_delay = \"1s\""),
    )
    .unwrap();
    let slow = simulate(
        &config(policy, 2),
        None,
        &burst(300, "5m", "start_delay = \"60s\""),
    )
    .unwrap();
    assert!(slow.summary.wait_mean > fast.summary.wait_mean + 30.0);
    assert_eq!(slow.summary.completed, 300);
}

#[test]
fn the_csv_has_a_row_per_second() {
    let run = simulate(&config(Policy::default(), 1), None, &burst(10, "60s", "")).unwrap();
    let csv = run.to_csv();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "t,arrivals,backlog,workers,ready_workers,busy,desired,completed,wait_p50,wait_p95,wait_mean"
        )
    );
    assert_eq!(lines.count(), 60);
    assert_eq!(run.samples.iter().map(|s| s.arrivals).sum::<u64>(), 10);
}

#[test]
fn gpu_pools_are_capped_by_the_profiles_gpus() {
    let policy = Policy {
        max_workers: 8,
        gpus_per_worker: Some(1),
        ..Policy::default()
    };
    let run = simulate(&config(policy, 1), None, &burst(50, "2m", "gpus = 3")).unwrap();
    assert_eq!(run.summary.max_workers, 3);
}

#[test]
fn pools_must_be_named_and_known_and_have_a_concurrency() {
    let mut two = config(Policy::default(), 1);
    let mut other = two.pools[0].clone();
    other.name = "gpu".into();
    other.queues = vec![spool_broker::QueueName::GPU];
    two.pools.push(other);
    let profile = burst(1, "10s", "");
    assert!(
        simulate(&two, None, &profile)
            .unwrap_err()
            .to_string()
            .contains("--pool")
    );
    assert!(simulate(&two, Some("x"), &profile).is_err());
    assert!(simulate(&two, Some("gpu"), &profile).is_ok());
    let mut none = config(Policy::default(), 1);
    none.pools[0].concurrency = None;
    assert!(
        simulate(&none, None, &profile)
            .unwrap_err()
            .to_string()
            .contains("concurrency")
    );
}

//! Unit tests of the scaling policy.

use super::*;
use crate::signals::QueueSignals;
use spool_broker::QueueName;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A pool whose every worker is registered, `idle` of them idle.
fn pool(ready: u64, in_flight: u64, idle: u32) -> PoolSignals {
    let mut queue = QueueSignals::new(QueueName::DEFAULT);
    queue.ready = ready;
    queue.in_flight = in_flight;
    PoolSignals {
        queues: vec![queue],
        registered_workers: u32::MAX,
        idle_workers: idle,
        ..PoolSignals::new("cpu")
    }
}

fn policy() -> Policy {
    Policy {
        min_workers: 1,
        max_workers: 10,
        target_backlog_per_worker: 10,
        scale_down_cooldown: secs(30),
        ..Policy::default()
    }
}

fn decide(
    policy: &Policy,
    memory: &mut PolicyMemory,
    signals: &PoolSignals,
    current: u32,
    now: u64,
) -> Decision {
    policy.decide(
        memory,
        &Observation {
            signals,
            current,
            gpus: 0,
            now: secs(now),
        },
    )
}

#[test]
fn a_spike_scales_up_at_once_to_what_the_load_needs() {
    let mut memory = PolicyMemory::default();
    let d = decide(&policy(), &mut memory, &pool(95, 0, 0), 1, 0);
    assert_eq!((d.direction, d.desired, d.needed), (Direction::Up, 10, 10));
    let d = decide(&policy(), &mut memory, &pool(41, 0, 0), 1, 1);
    assert_eq!((d.direction, d.desired), (Direction::Up, 5));
}

#[test]
fn in_flight_tasks_count_as_load() {
    let mut memory = PolicyMemory::default();
    let d = decide(&policy(), &mut memory, &pool(0, 31, 0), 1, 0);
    assert_eq!((d.direction, d.desired), (Direction::Up, 4));
}

#[test]
fn due_delayed_tasks_are_backlog_and_paused_queues_are_not() {
    let mut queue = QueueSignals::new(QueueName::DEFAULT);
    queue.delayed_due = 30;
    let mut paused = QueueSignals::new(QueueName::ANALYSIS);
    paused.ready = 500;
    paused.in_flight = 5;
    paused.paused = true;
    let signals = PoolSignals {
        queues: vec![queue, paused],
        ..PoolSignals::new("cpu")
    };
    // 30 due + 5 still running in the paused queue.
    assert_eq!(signals.load(), 35);
    let d = decide(&policy(), &mut PolicyMemory::default(), &signals, 0, 0);
    assert_eq!(d.desired, 4);
}

#[test]
fn the_count_stays_within_min_and_max() {
    let mut memory = PolicyMemory::default();
    let d = decide(&policy(), &mut memory, &pool(100_000, 0, 0), 2, 0);
    assert_eq!((d.desired, d.cap, d.needed), (10, 10, 10_000));
    assert!(
        d.reason.contains("capped at max_workers 10"),
        "{}",
        d.reason
    );
    let d = decide(
        &policy(),
        &mut PolicyMemory::default(),
        &pool(0, 0, 0),
        0,
        0,
    );
    assert_eq!((d.direction, d.desired), (Direction::Up, 1));
    assert!(d.reason.contains("min_workers"), "{}", d.reason);
}

#[test]
fn nothing_to_do_with_no_minimum_means_no_worker() {
    let policy = Policy {
        min_workers: 0,
        ..policy()
    };
    let d = decide(&policy, &mut PolicyMemory::default(), &pool(0, 0, 0), 0, 0);
    assert_eq!((d.direction, d.desired), (Direction::Hold, 0));
    let d = decide(&policy, &mut PolicyMemory::default(), &pool(1, 0, 0), 0, 0);
    assert_eq!((d.direction, d.desired), (Direction::Up, 1));
}

#[test]
fn scale_down_waits_for_a_whole_cooldown_of_lower_need() {
    let p = policy();
    let mut memory = PolicyMemory::default();
    let busy = pool(95, 0, 0);
    let drained = pool(0, 0, 10);
    assert_eq!(decide(&p, &mut memory, &busy, 1, 0).desired, 10);
    for now in 1..=10 {
        assert_eq!(
            decide(&p, &mut memory, &busy, 10, now).direction,
            Direction::Hold
        );
    }
    // Drained at t=11: the need of t=10 is remembered for 30 s.
    for now in 11..40 {
        let d = decide(&p, &mut memory, &drained, 10, now);
        assert_eq!((d.direction, d.desired), (Direction::Hold, 10), "t={now}");
        assert!(d.reason.contains("cooldown"), "{}", d.reason);
    }
    let d = decide(&p, &mut memory, &drained, 10, 41);
    assert_eq!((d.direction, d.desired), (Direction::Down, 1));
}

#[test]
fn a_new_spike_during_the_cooldown_restarts_it() {
    let p = policy();
    let mut memory = PolicyMemory::default();
    decide(&p, &mut memory, &pool(50, 0, 0), 5, 0);
    for now in 1..25 {
        decide(&p, &mut memory, &pool(0, 0, 5), 5, now);
    }
    decide(&p, &mut memory, &pool(50, 0, 0), 5, 25);
    let d = decide(&p, &mut memory, &pool(0, 0, 5), 5, 40);
    assert_eq!(d.direction, Direction::Hold);
    // 30 s after the spike of t=25, the pool goes down to the minimum.
    let d = decide(&p, &mut memory, &pool(0, 0, 5), 5, 56);
    assert_eq!((d.direction, d.desired), (Direction::Down, 1));
}

#[test]
fn scale_down_goes_to_the_highest_need_of_the_window() {
    let p = policy();
    let mut memory = PolicyMemory::default();
    decide(&p, &mut memory, &pool(100, 0, 0), 10, 0);
    decide(&p, &mut memory, &pool(35, 0, 6), 10, 20);
    let d = decide(&p, &mut memory, &pool(0, 0, 10), 10, 45);
    // The need of t=0 (10) has left the window; t=20's (4) has not.
    assert_eq!((d.direction, d.desired), (Direction::Down, 4));
}

#[test]
fn only_idle_workers_are_retired() {
    let p = Policy {
        scale_down_cooldown: Duration::ZERO,
        ..policy()
    };
    let mut memory = PolicyMemory::default();
    // Needs 1, runs 6, of which 2 are idle: retire those 2 only.
    let d = decide(&p, &mut memory, &pool(0, 8, 2), 6, 0);
    assert_eq!((d.direction, d.desired), (Direction::Down, 4));
    assert!(
        d.reason.contains("2 idle worker(s) retired"),
        "{}",
        d.reason
    );
    let d = decide(&p, &mut memory, &pool(0, 8, 0), 6, 1);
    assert_eq!((d.direction, d.desired), (Direction::Hold, 6));
    assert!(d.reason.contains("no idle worker"), "{}", d.reason);
}

#[test]
fn workers_missing_from_the_registry_count_as_idle() {
    let p = Policy {
        scale_down_cooldown: Duration::ZERO,
        ..policy()
    };
    // 6 workers, 4 registered and busy: the 2 others run nothing.
    let mut signals = pool(0, 8, 0);
    signals.registered_workers = 4;
    let d = decide(&p, &mut PolicyMemory::default(), &signals, 6, 0);
    assert_eq!((d.direction, d.desired), (Direction::Down, 4));
    // Registry records of workers this actuator does not run (another
    // host) do not make busy workers retirable.
    signals.registered_workers = 9;
    let d = decide(&p, &mut PolicyMemory::default(), &signals, 6, 0);
    assert_eq!(d.direction, Direction::Hold);
}

#[test]
fn no_scale_down_before_a_whole_cooldown_was_observed() {
    let p = policy();
    let mut memory = PolicyMemory::default();
    // A restarted autoscaler finds 8 idle workers: it does not know
    // what the last 30 s needed, so it waits.
    let d = decide(&p, &mut memory, &pool(0, 0, 8), 8, 100);
    assert_eq!(d.direction, Direction::Hold);
    assert!(d.reason.contains("not yet observed"), "{}", d.reason);
    let d = decide(&p, &mut memory, &pool(0, 0, 8), 8, 130);
    assert_eq!((d.direction, d.desired), (Direction::Down, 1));
}

#[test]
fn gpu_pools_are_capped_by_the_devices_present() {
    let p = Policy {
        gpus_per_worker: Some(1),
        ..policy()
    };
    let signals = pool(1000, 0, 0);
    let seen = |gpus, current| Observation {
        signals: &signals,
        current,
        gpus,
        now: Duration::ZERO,
    };
    let d = p.decide(&mut PolicyMemory::default(), &seen(2, 0));
    assert_eq!((d.desired, d.cap), (2, 2));
    assert!(d.reason.contains("2 GPU(s)"), "{}", d.reason);
    // No GPU: not even min_workers.
    let d = p.decide(&mut PolicyMemory::default(), &seen(0, 0));
    assert_eq!((d.direction, d.desired, d.cap), (Direction::Hold, 0, 0));
    let two_each = Policy {
        gpus_per_worker: Some(2),
        ..p.clone()
    };
    let d = two_each.decide(&mut PolicyMemory::default(), &seen(5, 0));
    assert_eq!(d.desired, 2);
    // More GPUs than max_workers: max_workers wins.
    let d = p.decide(&mut PolicyMemory::default(), &seen(64, 0));
    assert_eq!(d.desired, 10);
}

#[test]
fn a_pool_above_its_cap_goes_down_at_once() {
    let p = Policy {
        gpus_per_worker: Some(1),
        ..policy()
    };
    let signals = pool(1000, 0, 0);
    let d = p.decide(
        &mut PolicyMemory::default(),
        &Observation {
            signals: &signals,
            current: 4,
            gpus: 2,
            now: Duration::ZERO,
        },
    );
    assert_eq!((d.direction, d.desired), (Direction::Down, 2));
    assert!(d.reason.starts_with("above the cap"), "{}", d.reason);
}

#[test]
fn an_old_task_adds_a_worker_past_max_wait() {
    let p = Policy {
        max_wait: Some(secs(10)),
        ..policy()
    };
    let mut signals = pool(5, 10, 0);
    signals.queues[0].oldest_age = Some(secs(11));
    let d = decide(&p, &mut PolicyMemory::default(), &signals, 2, 0);
    assert_eq!((d.direction, d.desired), (Direction::Up, 3));
    assert!(d.reason.contains("oldest task waited 11s"), "{}", d.reason);
    // Within max_wait: the load rules (15 tasks, 2 workers: hold).
    signals.queues[0].oldest_age = Some(secs(9));
    let d = decide(&p, &mut PolicyMemory::default(), &signals, 2, 0);
    assert_eq!((d.direction, d.desired), (Direction::Hold, 2));
    // Never past the cap.
    signals.queues[0].oldest_age = Some(secs(60));
    let d = decide(&p, &mut PolicyMemory::default(), &signals, 10, 0);
    assert_eq!((d.direction, d.desired), (Direction::Hold, 10));
}

#[test]
fn a_zero_target_reads_as_one_task_per_worker() {
    let p = Policy {
        target_backlog_per_worker: 0,
        ..policy()
    };
    let d = decide(&p, &mut PolicyMemory::default(), &pool(7, 0, 0), 0, 0);
    assert_eq!(d.desired, 7);
}

#[test]
fn a_clock_going_back_restarts_the_memory() {
    let p = policy();
    let mut memory = PolicyMemory::default();
    decide(&p, &mut memory, &pool(100, 0, 0), 10, 500);
    let d = decide(&p, &mut memory, &pool(0, 0, 10), 10, 0);
    assert_eq!(d.direction, Direction::Hold);
    let d = decide(&p, &mut memory, &pool(0, 0, 10), 10, 31);
    assert_eq!((d.direction, d.desired), (Direction::Down, 1));
}

#[test]
fn huge_loads_saturate() {
    let p = Policy {
        max_workers: u32::MAX,
        ..policy()
    };
    let d = decide(
        &p,
        &mut PolicyMemory::default(),
        &pool(u64::MAX, 0, 0),
        0,
        0,
    );
    assert_eq!((d.direction, d.desired), (Direction::Up, u32::MAX));
}

//! The discrete-event engine behind [`simulate`]: one FIFO queue, workers
//! that start after a delay and run `concurrency` tasks at once, the
//! policy ticking every `interval`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use super::profile::{LoadProfile, SimTask};
use super::{Sample, Simulation, Summary};
use crate::config::{AutoscalerConfig, PoolConfig};
use crate::error::{Error, Result};
use crate::policy::{Direction, Observation, PolicyMemory};
use crate::signals::{PoolSignals, QueueSignals};

/// Where a simulated worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Starting,
    Ready,
    /// Retired (only idle or starting workers are, so at once).
    Gone,
}

#[derive(Debug, Clone)]
struct Worker {
    life: Life,
    running: u32,
    born: Duration,
}

/// What happens at an instant; at equal times, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Complete(usize),
    Ready(usize),
    Arrival,
    Tick,
    Sample,
}

/// The wait at rank `q` (0 to 1) of sorted waits.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// The simulation's state.
struct Sim<'a> {
    pool: &'a PoolConfig,
    concurrency: u32,
    start_delay: Duration,
    gpus: u32,
    tasks: Vec<SimTask>,
    next_task: usize,
    queue: VecDeque<SimTask>,
    workers: Vec<Worker>,
    events: BinaryHeap<Reverse<(Duration, Event, u64)>>,
    seq: u64,
    memory: PolicyMemory,
    desired: u32,
    now: Duration,
    worker_seconds: f64,
    in_flight: u64,
    waits: Vec<f32>,
    period_waits: Vec<f64>,
    period_arrivals: u64,
    period_completed: u64,
    completed: u64,
    max_backlog: u64,
    max_workers: u32,
    ups: u64,
    downs: u64,
}

impl Sim<'_> {
    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, event, self.seq)));
    }

    fn count(&self, life: Life) -> u32 {
        let n = self.workers.iter().filter(|w| w.life == life).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn start_worker(&mut self) {
        let index = self.workers.len();
        self.workers.push(Worker {
            life: Life::Starting,
            running: 0,
            born: self.now,
        });
        self.schedule(self.now + self.start_delay, Event::Ready(index));
    }

    /// Hands waiting tasks to ready workers with free slots.
    fn dispatch(&mut self) {
        while !self.queue.is_empty() {
            let Some(index) = self
                .workers
                .iter()
                .position(|w| w.life == Life::Ready && w.running < self.concurrency)
            else {
                return;
            };
            let Some(task) = self.queue.pop_front() else {
                return;
            };
            let wait = self.now.saturating_sub(task.arrival).as_secs_f64();
            self.waits.push(wait as f32);
            self.period_waits.push(wait);
            self.workers[index].running += 1;
            self.in_flight += 1;
            self.schedule(self.now + task.duration, Event::Complete(index));
        }
    }

    fn tick(&mut self) {
        let ready = self.count(Life::Ready);
        let idle = self
            .workers
            .iter()
            .filter(|w| w.life == Life::Ready && w.running == 0)
            .count();
        let mut queue = QueueSignals::new(self.pool.queues[0].clone());
        queue.ready = self.queue.len() as u64;
        queue.in_flight = self.in_flight;
        queue.oldest_age = self
            .queue
            .front()
            .map(|t| self.now.saturating_sub(t.arrival));
        queue.consumers = u64::from(ready);
        let signals = PoolSignals {
            queues: vec![queue],
            registered_workers: ready,
            idle_workers: u32::try_from(idle).unwrap_or(u32::MAX),
            busy_slots: u32::try_from(self.in_flight).unwrap_or(u32::MAX),
            total_slots: ready.saturating_mul(self.concurrency),
            ..PoolSignals::new(self.pool.name.clone())
        };
        let current = ready + self.count(Life::Starting);
        let decision = self.pool.policy.decide(
            &mut self.memory,
            &Observation {
                signals: &signals,
                current,
                gpus: self.gpus,
                now: self.now,
            },
        );
        self.desired = decision.desired;
        match decision.direction {
            Direction::Up => {
                self.ups += 1;
                for _ in current..decision.desired {
                    self.start_worker();
                }
            }
            Direction::Down => {
                self.downs += 1;
                let mut order: Vec<(u8, Duration, usize)> = self
                    .workers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| match w.life {
                        Life::Ready if w.running == 0 => Some((0, w.born, i)),
                        Life::Starting => Some((1, w.born, i)),
                        _ => None,
                    })
                    .collect();
                order.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                let retire = current.saturating_sub(decision.desired) as usize;
                for (_, _, i) in order.into_iter().take(retire) {
                    self.workers[i].life = Life::Gone;
                }
            }
            Direction::Hold => {}
        }
        let alive = ready + self.count(Life::Starting);
        self.max_workers = self.max_workers.max(alive);
    }

    fn sample(&mut self) -> Sample {
        self.period_waits.sort_by(f64::total_cmp);
        let mean = (!self.period_waits.is_empty())
            .then(|| self.period_waits.iter().sum::<f64>() / self.period_waits.len() as f64);
        let sample = Sample {
            t: self.now.as_secs_f64(),
            arrivals: std::mem::take(&mut self.period_arrivals),
            backlog: self.queue.len() as u64,
            workers: self.count(Life::Ready) + self.count(Life::Starting),
            ready_workers: self.count(Life::Ready),
            busy: self.in_flight,
            desired: self.desired,
            completed: std::mem::take(&mut self.period_completed),
            wait_p50: quantile(&self.period_waits, 0.5),
            wait_p95: quantile(&self.period_waits, 0.95),
            wait_mean: mean,
        };
        self.period_waits.clear();
        sample
    }

    /// Moves the clock to `to`, adding the fleet's cost on the way.
    fn advance(&mut self, to: Duration) {
        let alive = self.workers.iter().filter(|w| w.life != Life::Gone).count();
        self.worker_seconds += alive as f64 * to.saturating_sub(self.now).as_secs_f64();
        self.now = to;
    }
}

/// Replays `profile` against the policy of `pool` (the only pool when
/// `None`) of `config`.
///
/// # Examples
///
/// ```
/// use spool_autoscaler::{AutoscalerConfig, LoadProfile, simulate};
///
/// let config = AutoscalerConfig::example().validated()?;
/// let profile = LoadProfile::from_toml(r#"
///     duration = "5m"
///     [[bursts]]
///     at = "10s"
///     count = 200
/// "#)?;
/// let run = simulate(&config, None, &profile)?;
/// assert_eq!(run.summary.completed, 200);
/// assert!(run.summary.max_workers > 1);
/// assert_eq!(run.samples.last().map(|s| s.workers), Some(0));
/// # Ok::<(), spool_autoscaler::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Config`] for an unknown pool, several pools and none
/// named, no concurrency known, or a profile too large.
pub fn simulate(
    config: &AutoscalerConfig,
    pool: Option<&str>,
    profile: &LoadProfile,
) -> Result<Simulation> {
    let pool = match pool {
        Some(name) => config.pool(name)?,
        None => match config.pools.as_slice() {
            [only] => only,
            _ => {
                let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::Config(format!(
                    "the configuration has several pools ({}): name one with --pool",
                    names.join(", ")
                )));
            }
        },
    };
    let concurrency = profile
        .fleet
        .concurrency
        .or(pool.concurrency)
        .filter(|&c| c > 0)
        .ok_or_else(|| {
            Error::Config(format!(
                "the simulation needs the workers' concurrency: set it in pool {:?} or in the \
                 profile's [fleet]",
                pool.name
            ))
        })?;
    let gpus = profile.fleet.gpus.or(config.gpus).unwrap_or(u32::MAX);
    let tasks = profile.tasks()?;
    let total = tasks.len() as u64;
    let sample_every = Duration::from_secs((profile.duration.as_secs() / 4000).max(1));
    let mut sim = Sim {
        pool,
        concurrency,
        start_delay: profile.fleet.start_delay,
        gpus,
        tasks,
        next_task: 0,
        queue: VecDeque::new(),
        workers: Vec::new(),
        events: BinaryHeap::new(),
        seq: 0,
        memory: PolicyMemory::default(),
        desired: 0,
        now: Duration::ZERO,
        worker_seconds: 0.0,
        in_flight: 0,
        waits: Vec::new(),
        period_waits: Vec::new(),
        period_arrivals: 0,
        period_completed: 0,
        completed: 0,
        max_backlog: 0,
        max_workers: 0,
        ups: 0,
        downs: 0,
    };
    let initial = profile
        .fleet
        .initial_workers
        .unwrap_or(pool.policy.min_workers);
    for _ in 0..initial {
        sim.workers.push(Worker {
            life: Life::Ready,
            running: 0,
            born: Duration::ZERO,
        });
    }
    sim.desired = initial;
    sim.max_workers = initial;
    if let Some(first) = sim.tasks.first() {
        let at = first.arrival;
        sim.schedule(at, Event::Arrival);
    }
    sim.schedule(Duration::ZERO, Event::Tick);
    sim.schedule(sample_every, Event::Sample);
    let mut samples = Vec::new();
    while let Some(Reverse((at, event, _))) = sim.events.pop() {
        if at > profile.duration {
            break;
        }
        sim.advance(at);
        match event {
            Event::Arrival => {
                while let Some(task) = sim.tasks.get(sim.next_task).copied() {
                    if task.arrival > at {
                        sim.schedule(task.arrival, Event::Arrival);
                        break;
                    }
                    sim.next_task += 1;
                    sim.period_arrivals += 1;
                    sim.queue.push_back(task);
                }
                sim.max_backlog = sim.max_backlog.max(sim.queue.len() as u64);
                sim.dispatch();
            }
            Event::Complete(index) => {
                let worker = &mut sim.workers[index];
                worker.running = worker.running.saturating_sub(1);
                sim.in_flight = sim.in_flight.saturating_sub(1);
                sim.completed += 1;
                sim.period_completed += 1;
                sim.dispatch();
            }
            Event::Ready(index) => {
                if sim.workers[index].life == Life::Starting {
                    sim.workers[index].life = Life::Ready;
                    sim.dispatch();
                }
            }
            Event::Tick => {
                sim.tick();
                sim.dispatch();
                sim.schedule(at + config.interval, Event::Tick);
            }
            Event::Sample => {
                samples.push(sim.sample());
                sim.schedule(at + sample_every, Event::Sample);
            }
        }
    }
    sim.advance(profile.duration);
    let mut waits: Vec<f64> = sim.waits.iter().map(|&w| f64::from(w)).collect();
    waits.sort_by(f64::total_cmp);
    let wait_mean = if waits.is_empty() {
        0.0
    } else {
        waits.iter().sum::<f64>() / waits.len() as f64
    };
    let summary = Summary {
        pool: pool.name.clone(),
        tasks: total,
        completed: sim.completed,
        unfinished: total.saturating_sub(sim.completed),
        wait_p50: quantile(&waits, 0.5).unwrap_or(0.0),
        wait_p95: quantile(&waits, 0.95).unwrap_or(0.0),
        wait_max: waits.last().copied().unwrap_or(0.0),
        wait_mean,
        max_backlog: sim.max_backlog,
        max_workers: sim.max_workers,
        worker_seconds: sim.worker_seconds,
        scale_ups: sim.ups,
        scale_downs: sim.downs,
        concurrency,
        start_delay_seconds: sim.start_delay.as_secs_f64(),
    };
    Ok(Simulation { summary, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let waits: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&waits, 0.5), Some(50.0));
        assert_eq!(quantile(&waits, 0.95), Some(95.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0], 0.95), Some(3.0));
    }
}

//! Fleets of real worker processes for the chaos suites: started, SIGKILLed
//! and restarted by the test, with every execution counted in Redis.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::AsyncCommands;

/// Worker processes of the `chaos-worker` binary, killed when dropped.
#[derive(Debug)]
pub struct Fleet {
    binary: String,
    args: Vec<String>,
    workers: Vec<Child>,
    /// How many workers were killed (by the test or by a poison task).
    pub deaths: u32,
}

impl Fleet {
    /// Starts `size` workers of `binary` with `args`.
    pub fn start(binary: &str, size: usize, args: &[String]) -> Self {
        let mut fleet = Self {
            binary: binary.to_owned(),
            args: args.to_vec(),
            workers: Vec::new(),
            deaths: 0,
        };
        for _ in 0..size {
            fleet.spawn();
        }
        fleet
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the chaos-worker binary is built with the tests");
        self.workers.push(child);
    }

    /// SIGKILLs one worker at random and starts its replacement.
    pub fn kill_one(&mut self) {
        let victim = fastrand::usize(..self.workers.len());
        let mut child = self.workers.swap_remove(victim);
        let _ = child.kill();
        let _ = child.wait();
        self.deaths += 1;
        self.spawn();
    }

    /// Replaces workers that died by themselves (a poison task aborted
    /// them); returns how many.
    pub fn replace_dead(&mut self) -> u32 {
        let before = self.workers.len();
        self.workers
            .retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));
        let died = before - self.workers.len();
        for _ in 0..died {
            self.spawn();
        }
        let died = u32::try_from(died).unwrap_or(u32::MAX);
        self.deaths += died;
        died
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The arguments that point `chaos-worker` at a Redis and a key prefix.
pub fn fleet_args(redis_url: &str, prefix: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--redis-url".to_owned(),
        redis_url.to_owned(),
        "--key-prefix".to_owned(),
        prefix.to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// How many times each task ran, by sequence number.
pub async fn runs(redis_url: &str, prefix: &str) -> HashMap<u32, u32> {
    let mut conn = crate::RawConnection::open(redis_url).await;
    conn.hgetall(format!("{prefix}:chaos:runs")).await.unwrap()
}

/// What a chaos run did, printed at its end and recorded in
/// docs/reliability.md.
#[derive(Debug)]
pub struct Figures {
    pub tasks: u32,
    pub kills: u32,
    pub lost: u32,
    pub duplicates: u32,
    pub seconds: f64,
}

impl Figures {
    pub fn from_runs(tasks: u32, kills: u32, runs: &HashMap<u32, u32>, seconds: f64) -> Self {
        let lost = (0..tasks).filter(|seq| !runs.contains_key(seq)).count();
        let duplicates = runs.values().map(|n| n.saturating_sub(1)).sum();
        Self {
            tasks,
            kills,
            lost: u32::try_from(lost).unwrap_or(u32::MAX),
            duplicates,
            seconds,
        }
    }

    pub fn print(&self, name: &str) {
        println!(
            "chaos {name}: tasks={} kills={} lost={} duplicate_executions={} seconds={:.1}",
            self.tasks, self.kills, self.lost, self.duplicates, self.seconds
        );
    }
}

/// A random pause of about `around` (±25 %), the rhythm of the kills.
pub fn jittered(around: Duration) -> Duration {
    around.mul_f64(0.75 + fastrand::f64() / 2.0)
}

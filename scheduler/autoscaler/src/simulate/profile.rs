//! Load profiles: when tasks arrive and how long they take, from TOML
//! (Poisson phases, bursts, a duration distribution) or CSV (recorded
//! arrivals per second).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::durations::Durations;
use crate::error::{Error, Result};

/// The most tasks one simulation may generate.
pub const MAX_TASKS: usize = 5_000_000;

/// A load to replay against a policy.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use spool_autoscaler::LoadProfile;
///
/// let profile = LoadProfile::from_toml(r#"
///     seed = 7
///     duration = "10m"
///     [durations]
///     distribution = "lognormal"
///     mean = "20s"
///     stddev = "10s"
///     [[arrivals]]
///     start = "0s"
///     end = "10m"
///     rate = 0.5
///     [[bursts]]
///     at = "2m"
///     count = 300
/// "#)?;
/// let tasks = profile.tasks()?;
/// assert!(tasks.len() > 300);
/// assert!(tasks.windows(2).all(|w| w[0].arrival <= w[1].arrival));
/// assert_eq!(profile.duration, Duration::from_secs(600));
/// # Ok::<(), spool_autoscaler::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadProfile {
    /// Seeds every random draw: the same seed replays the same load.
    /// Default: 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How much time to simulate. Required.
    #[serde(with = "spool_cli_common::text::duration")]
    pub duration: Duration,
    /// The fleet the policy drives.
    #[serde(default)]
    pub fleet: Fleet,
    /// How long tasks take. Default: [`Durations::default`].
    #[serde(default)]
    pub durations: Durations,
    /// Phases of steady (Poisson) arrivals.
    #[serde(default)]
    pub arrivals: Vec<Phase>,
    /// Bursts: many tasks at one instant (an upload batch).
    #[serde(default)]
    pub bursts: Vec<Burst>,
    /// Explicit arrivals (from a CSV profile), on top of the phases and
    /// bursts.
    #[serde(skip)]
    pub recorded: Vec<Recorded>,
}

fn default_seed() -> u64 {
    1
}

/// The simulated fleet's behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// From the decision to start a worker to its first fetch: process
    /// start and Redis connection locally, image pull and pod scheduling
    /// on Kubernetes. Default: 2 s.
    #[serde(with = "spool_cli_common::text::duration")]
    pub start_delay: Duration,
    /// Workers running when the simulation starts. Default: the pool's
    /// `min_workers`.
    pub initial_workers: Option<u32>,
    /// Slots per worker. Default: the pool's `concurrency`, which must then
    /// be set.
    pub concurrency: Option<u32>,
    /// GPUs present, for a GPU pool. Default: the configuration's `gpus`,
    /// else no GPU bound.
    pub gpus: Option<u32>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            start_delay: Duration::from_secs(2),
            initial_workers: None,
            concurrency: None,
            gpus: None,
        }
    }
}

/// Steady arrivals: a Poisson process of `rate` tasks per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// When it begins.
    #[serde(with = "spool_cli_common::text::duration")]
    pub start: Duration,
    /// When it ends.
    #[serde(with = "spool_cli_common::text::duration")]
    pub end: Duration,
    /// Tasks per second, on average.
    pub rate: f64,
}

/// Many tasks at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// When.
    #[serde(with = "spool_cli_common::text::duration")]
    pub at: Duration,
    /// How many.
    pub count: u64,
}

/// Arrivals recorded in a CSV profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// When.
    pub at: Duration,
    /// How many.
    pub count: u64,
    /// How long each takes; `None` draws from the profile's durations.
    pub duration: Option<Duration>,
}

/// One simulated task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimTask {
    /// When it is enqueued.
    pub arrival: Duration,
    /// How long it runs.
    pub duration: Duration,
}

fn bad(what: &str) -> Error {
    Error::Config(format!("load profile: {what}"))
}

impl LoadProfile {
    /// Parses a TOML profile.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid TOML, unknown keys, or values
    /// that cannot work (a phase that ends before it starts, a negative
    /// rate, min above max).
    pub fn from_toml(text: &str) -> Result<Self> {
        let profile: Self =
            toml::from_str(text).map_err(|e| Error::Config(format!("load profile: {e}")))?;
        profile.validate()?;
        Ok(profile)
    }

    /// Parses a CSV profile: a header `t,arrivals` or `t,arrivals,duration`
    /// and one row per instant, `t` and `duration` in seconds (decimals
    /// allowed). The simulated time is the last `t` plus one second.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the line that does not parse.
    pub fn from_csv(text: &str) -> Result<Self> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let Some((_, header)) = lines.next() else {
            return Err(bad("the CSV is empty"));
        };
        let columns: Vec<String> = header
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let with_duration = match columns.as_slice() {
            [t, a] if t == "t" && a == "arrivals" => false,
            [t, a, d] if t == "t" && a == "arrivals" && d == "duration" => true,
            _ => {
                return Err(bad(
                    "the CSV header must be `t,arrivals` or `t,arrivals,duration`",
                ));
            }
        };
        let seconds = |text: &str, line: usize, what: &str| -> Result<Duration> {
            text.trim()
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| {
                    bad(&format!(
                        "line {line}: {what} {text:?} is not a number of seconds"
                    ))
                })
        };
        let mut recorded = Vec::new();
        let mut end = Duration::ZERO;
        for (index, line) in lines {
            let number = index + 1;
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != columns.len() {
                return Err(bad(&format!(
                    "line {number}: {} cells, the header has {}",
                    cells.len(),
                    columns.len()
                )));
            }
            let at = seconds(cells[0], number, "t")?;
            let count = cells[1].trim().parse::<u64>().map_err(|_| {
                bad(&format!(
                    "line {number}: arrivals {:?} is not a count",
                    cells[1]
                ))
            })?;
            let duration = if with_duration {
                Some(seconds(cells[2], number, "duration")?)
            } else {
                None
            };
            end = end.max(at + Duration::from_secs(1));
            recorded.push(Recorded {
                at,
                count,
                duration,
            });
        }
        let profile = Self {
            seed: default_seed(),
            duration: end,
            fleet: Fleet::default(),
            durations: Durations::default(),
            arrivals: Vec::new(),
            bursts: Vec::new(),
            recorded,
        };
        profile.validate()?;
        Ok(profile)
    }

    /// Reads a profile: CSV when the file name ends in `.csv`, else TOML.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read, else as
    /// [`from_toml`](Self::from_toml) and [`from_csv`](Self::from_csv), the
    /// message naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("cannot read the load profile {}", path.display()),
            source,
        })?;
        let csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let parsed = if csv {
            Self::from_csv(&text)
        } else {
            Self::from_toml(&text)
        };
        parsed.map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    fn validate(&self) -> Result<()> {
        if self.duration.is_zero() {
            return Err(bad("duration must be positive"));
        }
        for phase in &self.arrivals {
            if phase.end < phase.start {
                return Err(bad("an arrivals phase ends before it starts"));
            }
            if !phase.rate.is_finite() || phase.rate < 0.0 {
                return Err(bad(
                    "an arrivals rate must be a number of tasks per second, 0 or more",
                ));
            }
        }
        self.durations.validate()
    }

    /// Every task of the profile, by arrival time (ties keep generation
    /// order), drawn with the profile's seed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the profile would generate more than
    /// [`MAX_TASKS`] tasks.
    pub fn tasks(&self) -> Result<Vec<SimTask>> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let expected: f64 = self
            .arrivals
            .iter()
            .map(|p| p.rate * (p.end.saturating_sub(p.start)).as_secs_f64())
            .sum::<f64>()
            + self.bursts.iter().map(|b| b.count as f64).sum::<f64>()
            + self.recorded.iter().map(|r| r.count as f64).sum::<f64>();
        if expected > MAX_TASKS as f64 {
            return Err(bad(&format!(
                "about {expected:.0} tasks, more than the {MAX_TASKS} a simulation handles"
            )));
        }
        let mut tasks = Vec::with_capacity(expected as usize + 16);
        for phase in &self.arrivals {
            if phase.rate <= 0.0 {
                continue;
            }
            let mut t = phase.start.as_secs_f64();
            let end = phase.end.as_secs_f64();
            loop {
                t += -(1.0 - rng.f64()).ln() / phase.rate;
                if t >= end || tasks.len() >= MAX_TASKS {
                    break;
                }
                let arrival = Duration::from_secs_f64(t);
                tasks.push(SimTask {
                    arrival,
                    duration: self.durations.draw(&mut rng),
                });
            }
        }
        for burst in &self.bursts {
            for _ in 0..burst.count {
                tasks.push(SimTask {
                    arrival: burst.at,
                    duration: self.durations.draw(&mut rng),
                });
            }
        }
        for row in &self.recorded {
            for _ in 0..row.count {
                let duration = row
                    .duration
                    .unwrap_or_else(|| self.durations.draw(&mut rng));
                tasks.push(SimTask {
                    arrival: row.at,
                    duration,
                });
            }
        }
        tasks.sort_by_key(|t| t.arrival);
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_same_seed_replays_the_same_load() {
        let text = "seed = 3\nduration = \"1h\"\n[durations]\ndistribution = \"exponential\"\nmean = \"10s\"\n[[arrivals]]\nstart = \"0s\"\nend = \"1h\"\nrate = 2.0";
        let a = LoadProfile::from_toml(text).unwrap().tasks().unwrap();
        let b = LoadProfile::from_toml(text).unwrap().tasks().unwrap();
        assert_eq!(a, b);
        let other = LoadProfile::from_toml(&text.replace("seed = 3", "seed = 4"))
            .unwrap()
            .tasks()
            .unwrap();
        assert_ne!(a, other);
        // 7200 expected; a Poisson count is within a few hundred.
        assert!((6800..7600).contains(&a.len()), "{}", a.len());
        let mean = a.iter().map(|t| t.duration.as_secs_f64()).sum::<f64>() / a.len() as f64;
        assert!((9.0..11.0).contains(&mean), "{mean}");
    }

    #[test]
    fn csv_profiles_replay_recorded_arrivals() {
        let profile =
            LoadProfile::from_csv("t,arrivals,duration\n0,3,1.5\n# a comment\n2.5,1,0.25\n")
                .unwrap();
        assert_eq!(profile.duration, Duration::from_millis(3500));
        let tasks = profile.tasks().unwrap();
        assert_eq!(tasks.len(), 4);
        assert_eq!(tasks[3].arrival, Duration::from_millis(2500));
        assert_eq!(tasks[3].duration, Duration::from_millis(250));
        let plain = LoadProfile::from_csv("t,arrivals\n0,2\n").unwrap();
        assert_eq!(plain.tasks().unwrap()[0].duration, secs(1));
    }

    #[test]
    fn bad_profiles_say_what_is_wrong() {
        let cases = [
            (LoadProfile::from_csv(""), "empty"),
            (LoadProfile::from_csv("time,n\n"), "header"),
            (
                LoadProfile::from_csv("t,arrivals\n1,x\n"),
                "line 2: arrivals",
            ),
            (LoadProfile::from_csv("t,arrivals\n-1,2\n"), "line 2: t"),
            (LoadProfile::from_csv("t,arrivals\n1\n"), "1 cells"),
            (
                LoadProfile::from_toml("duration = \"1m\"\nsurge = 1"),
                "unknown field",
            ),
            (
                LoadProfile::from_toml("[[bursts]]\nat = \"1s\"\ncount = 1"),
                "missing field `duration`",
            ),
            (
                LoadProfile::from_toml(
                    "duration = \"1m\"\n[[arrivals]]\nstart = \"2m\"\nend = \"1m\"\nrate = 1.0",
                ),
                "ends before it starts",
            ),
            (
                LoadProfile::from_toml(
                    "duration = \"1m\"\n[[arrivals]]\nstart = \"0s\"\nend = \"1m\"\nrate = -1.0",
                ),
                "0 or more",
            ),
            (
                LoadProfile::from_toml(
                    "duration = \"1m\"\n[durations]\nmin = \"2s\"\nmax = \"1s\"",
                ),
                "min is above max",
            ),
        ];
        for (result, expected) in cases {
            let e = result.unwrap_err().to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
        let huge =
            LoadProfile::from_toml("duration = \"1m\"\n[[bursts]]\nat = \"1s\"\ncount = 99999999")
                .unwrap();
        assert!(huge.tasks().unwrap_err().to_string().contains("more than"));
    }
}

//! Task durations for the simulation: a distribution and its parameters,
//! drawn from the profile's seeded generator.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shape of task durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every task takes `mean`.
    Constant,
    /// Uniform between `min` and `max`.
    Uniform,
    /// Exponential with mean `mean`.
    Exponential,
    /// Log-normal with mean `mean` and standard deviation `stddev`: most
    /// tasks short, a long tail of slow ones, as encodes are.
    Lognormal,
}

/// How long tasks take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Durations {
    /// The shape. Default: constant.
    pub distribution: Distribution,
    /// The mean. Default: 1 s.
    #[serde(with = "spool_cli_common::text::duration")]
    pub mean: Duration,
    /// The standard deviation (log-normal). Default: 0.
    #[serde(with = "spool_cli_common::text::duration")]
    pub stddev: Duration,
    /// The shortest (uniform; a floor for the others). Default: 1 ms.
    #[serde(with = "spool_cli_common::text::duration")]
    pub min: Duration,
    /// The longest (uniform; a ceiling for the others). Default: 24 h.
    #[serde(with = "spool_cli_common::text::duration")]
    pub max: Duration,
}

impl Default for Durations {
    fn default() -> Self {
        Self {
            distribution: Distribution::Constant,
            mean: Duration::from_secs(1),
            stddev: Duration::ZERO,
            min: Duration::from_millis(1),
            max: Duration::from_secs(24 * 3600),
        }
    }
}

impl Durations {
    /// Draws one duration.
    pub(super) fn draw(&self, rng: &mut fastrand::Rng) -> Duration {
        let mean = self.mean.as_secs_f64();
        let seconds = match self.distribution {
            Distribution::Constant => mean,
            Distribution::Uniform => {
                let (lo, hi) = (self.min.as_secs_f64(), self.max.as_secs_f64());
                lo + (hi - lo) * rng.f64()
            }
            Distribution::Exponential => -mean * (1.0 - rng.f64()).ln(),
            Distribution::Lognormal => {
                let sd = self.stddev.as_secs_f64();
                let sigma2 = (1.0 + (sd * sd) / (mean * mean)).ln();
                let mu = mean.ln() - sigma2 / 2.0;
                (mu + sigma2.sqrt() * standard_normal(rng)).exp()
            }
        };
        let clamped = seconds.clamp(self.min.as_secs_f64(), self.max.as_secs_f64());
        Duration::try_from_secs_f64(clamped).unwrap_or(self.max)
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.min > self.max {
            return Err(Error::Config(
                "load profile: durations: min is above max".to_owned(),
            ));
        }
        if self.mean.is_zero() && self.distribution != Distribution::Uniform {
            return Err(Error::Config(
                "load profile: durations: mean must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn lognormal_durations_have_the_asked_mean_and_a_tail() {
        let durations = Durations {
            distribution: Distribution::Lognormal,
            mean: secs(20),
            stddev: secs(15),
            ..Durations::default()
        };
        let mut rng = fastrand::Rng::with_seed(9);
        let mut draws: Vec<f64> = (0..20_000)
            .map(|_| durations.draw(&mut rng).as_secs_f64())
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((19.0..21.0).contains(&mean), "{mean}");
        draws.sort_by(f64::total_cmp);
        let median = draws[draws.len() / 2];
        assert!(median < mean, "median {median} mean {mean}");
    }

    #[test]
    fn durations_stay_within_min_and_max() {
        let durations = Durations {
            distribution: Distribution::Exponential,
            mean: secs(10),
            min: secs(2),
            max: secs(12),
            ..Durations::default()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..1000 {
            let d = durations.draw(&mut rng);
            assert!((secs(2)..=secs(12)).contains(&d), "{d:?}");
        }
    }
}

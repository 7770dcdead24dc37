//! The CRF that reaches a target VMAF, interpolated from samples at a few
//! CRFs: pure arithmetic, no FFmpeg.
//!
//! VMAF falls as the CRF rises. Between the two sampled CRFs whose VMAFs
//! bracket the target, the CRF is interpolated linearly in VMAF and
//! rounded down (the better side of the target); the VMAF at the chosen
//! CRF is interpolated linearly and the bitrate in log space, since x264,
//! x265 and SVT-AV1 all halve the bitrate every few CRF steps.

use spool_sdk::video::{CrfChoice, CrfPick};

/// One sample: its CRF, its VMAF, its bitrate in kb/s.
pub type Sample = (u8, f64, f64);

/// The choice for `pick` from `samples` (any order; those outside the
/// pick's CRF range are ignored).
///
/// # Examples
///
/// ```
/// use spool_sdk::video::{CrfPick, VmafTarget};
/// use spool_video::targeted::pick_crf;
///
/// let pick = CrfPick::new("720p", VmafTarget::new(90.0).unwrap(), (18, 40), 23);
/// let samples = [(18, 97.0, 4000.0), (26, 93.0, 2000.0), (34, 85.0, 1000.0), (40, 76.0, 600.0)];
/// let choice = pick_crf(&pick, &samples)?;
/// // 90 lies 3/8 of the way from 93 (CRF 26) to 85 (CRF 34): CRF 29.
/// assert_eq!(choice.crf, 29);
/// assert!((choice.predicted_vmaf - 90.0).abs() < 1e-9);
/// assert!(choice.saved_percent > 0.0);
/// # Ok::<(), String>(())
/// ```
///
/// # Errors
///
/// The reason, naming the rung: no sample in range, or a target above the
/// best VMAF reached (at the lowest CRF sampled).
pub fn pick_crf(pick: &CrfPick, samples: &[Sample]) -> Result<CrfChoice, String> {
    let rung = &pick.rung;
    let target = pick.target_vmaf.get();
    let mut curve: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|(crf, vmaf, kbps)| {
            (pick.crf_min..=pick.crf_max).contains(crf) && vmaf.is_finite() && kbps.is_finite()
        })
        .collect();
    curve.sort_by_key(|(crf, _, _)| *crf);
    curve.dedup_by_key(|(crf, _, _)| *crf);
    let Some(&(best_crf, best_vmaf, _)) = curve.first() else {
        return Err(format!(
            "rung {rung}: no sample within CRF {}–{} to pick from",
            pick.crf_min, pick.crf_max
        ));
    };
    // Noise can score a higher CRF above a lower one: no sample counts for
    // more than any lower CRF before it.
    let mut floor = f64::INFINITY;
    for sample in &mut curve {
        floor = floor.min(sample.1);
        sample.1 = floor;
    }
    if best_vmaf < target {
        return Err(format!(
            "rung {rung}: target VMAF {target} is out of reach within CRF {}–{}: the best \
             VMAF reached is {best_vmaf:.2}, at CRF {best_crf}",
            pick.crf_min, pick.crf_max
        ));
    }
    let &(last_crf, last_vmaf, _) = curve.last().unwrap_or(&curve[0]);
    let (crf, capped) = if last_vmaf >= target {
        (last_crf, true)
    } else {
        // The first pair with the target between them (there is one: the
        // first sample reaches it, the last does not).
        let pair = curve
            .windows(2)
            .find(|w| w[0].1 >= target && w[1].1 < target)
            .ok_or_else(|| format!("rung {rung}: the samples do not bracket VMAF {target}"))?;
        let (low, high) = (pair[0], pair[1]);
        let fraction = (low.1 - target) / (low.1 - high.1);
        let exact = f64::from(low.0) + fraction * f64::from(high.0 - low.0);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "between two u8 CRFs"
        )]
        let floor = exact.floor().clamp(f64::from(low.0), f64::from(high.0)) as u8;
        (floor, false)
    };
    let predicted_vmaf = vmaf_at(&curve, crf);
    let predicted_kbps = kbps_at(&curve, crf);
    let fixed_kbps = kbps_at(&curve, pick.fixed_crf);
    let fixed_vmaf = vmaf_at(&curve, pick.fixed_crf).clamp(0.0, 100.0);
    let saved_percent = if fixed_kbps > 0.0 {
        (1.0 - predicted_kbps / fixed_kbps) * 100.0
    } else {
        0.0
    };
    Ok(CrfChoice {
        rung: rung.clone(),
        target_vmaf: target,
        crf,
        predicted_vmaf,
        predicted_kbps,
        capped,
        fixed_crf: pick.fixed_crf,
        fixed_kbps,
        fixed_vmaf,
        saved_percent,
        samples: curve,
    })
}

/// The VMAF at `crf`, linear between samples and beyond them.
fn vmaf_at(curve: &[Sample], crf: u8) -> f64 {
    interpolate(curve, crf, |s| s.1)
}

/// The bitrate at `crf`, linear in log space between samples and beyond.
fn kbps_at(curve: &[Sample], crf: u8) -> f64 {
    interpolate(curve, crf, |s| s.2.max(f64::MIN_POSITIVE).ln()).exp()
}

/// `value` of the samples at `crf`, along the segment that holds it (the
/// first or last segment outside the samples).
fn interpolate(curve: &[Sample], crf: u8, value: impl Fn(&Sample) -> f64) -> f64 {
    let [first, .., last] = curve else {
        return curve.first().map_or(0.0, value);
    };
    if let Some(exact) = curve.iter().find(|s| s.0 == crf) {
        return value(exact);
    }
    let (low, high) = if crf < first.0 {
        (first, &curve[1])
    } else if crf > last.0 {
        (&curve[curve.len() - 2], last)
    } else {
        let index = curve
            .iter()
            .position(|s| s.0 > crf)
            .unwrap_or(curve.len() - 1);
        (&curve[index - 1], &curve[index])
    };
    let fraction = (f64::from(crf) - f64::from(low.0)) / (f64::from(high.0) - f64::from(low.0));
    value(low) + fraction * (value(high) - value(low))
}

#[cfg(test)]
mod tests {
    use spool_sdk::video::VmafTarget;

    use super::*;

    fn pick(target: f64) -> CrfPick {
        CrfPick::new("720p", VmafTarget::new(target).unwrap(), (18, 40), 23)
    }

    const CURVE: [Sample; 4] = [
        (40, 76.0, 600.0),
        (18, 97.0, 4000.0),
        (34, 85.0, 1000.0),
        (26, 93.0, 2000.0),
    ];

    #[test]
    fn interpolates_between_the_bracketing_samples() {
        let choice = pick_crf(&pick(95.0), &CURVE).unwrap();
        // 95 is half way from 97 (18) to 93 (26): CRF 22.
        assert_eq!(choice.crf, 22);
        assert!((choice.predicted_vmaf - 95.0).abs() < 1e-9);
        // Half way in log space: the geometric mean.
        assert!((choice.predicted_kbps - (4000.0_f64 * 2000.0).sqrt()).abs() < 1e-6);
        assert!(!choice.capped);
        assert_eq!(choice.samples[0].0, 18);
        // CRF 23 is 5/8 of the way from 18 to 26.
        assert!((choice.fixed_vmaf - 94.5).abs() < 1e-9);
        // CRF 22 spends more than the fixed 23.
        assert!(choice.saved_percent < 0.0);
    }

    #[test]
    fn rounds_down_to_stay_on_the_target_side() {
        let choice = pick_crf(&pick(92.0), &CURVE).unwrap();
        // 92 is 1/8 of the way from 26 to 34: 27, predicted above 92.
        assert_eq!(choice.crf, 27);
        assert!(choice.predicted_vmaf >= 92.0);
        // A target exactly on a sample picks it.
        assert_eq!(pick_crf(&pick(85.0), &CURVE).unwrap().crf, 34);
    }

    #[test]
    fn an_easy_target_takes_the_highest_crf_and_says_so() {
        let choice = pick_crf(&pick(60.0), &CURVE).unwrap();
        assert_eq!(choice.crf, 40);
        assert!(choice.capped);
        assert!(choice.saved_percent > 50.0);
    }

    #[test]
    fn an_unreachable_target_names_the_rung_and_the_best_reached() {
        let error = pick_crf(&pick(99.0), &CURVE).unwrap_err();
        assert!(error.contains("rung 720p"), "{error}");
        assert!(error.contains("target VMAF 99"), "{error}");
        assert!(error.contains("97.00, at CRF 18"), "{error}");
        let none = pick_crf(&pick(90.0), &[(50, 10.0, 10.0)]).unwrap_err();
        assert!(none.contains("no sample within CRF 18–40"), "{none}");
    }

    #[test]
    fn noise_is_evened_out_and_a_costlier_target_saves_nothing() {
        let noisy = [
            (18, 97.0, 4000.0),
            (26, 90.0, 2000.0),
            (34, 91.0, 1000.0),
            (40, 80.0, 600.0),
        ];
        let choice = pick_crf(&pick(90.5), &noisy).unwrap();
        assert!((18..26).contains(&choice.crf));
        assert_eq!(choice.samples[2].1, 90.0);
        // Above the fixed CRF's VMAF: a lower CRF, more bits.
        let costly = pick_crf(&pick(96.0), &CURVE).unwrap();
        assert!(costly.crf < 23 && costly.saved_percent < 0.0);
    }
}

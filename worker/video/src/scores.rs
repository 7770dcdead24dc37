//! Reading FFmpeg's per-frame quality logs and pooling their scores.

use serde::Deserialize;
use spool_sdk::video::{FrameScores, MetricSummary};

use super::VideoError;

/// The PSNR reported for identical frames, whose PSNR is infinite:
/// results stay finite, so they survive JSON.
pub const PSNR_CAP: f64 = 100.0;

#[derive(Debug, Deserialize)]
struct VmafLog {
    #[serde(default)]
    frames: Vec<VmafFrame>,
}

#[derive(Debug, Deserialize)]
struct VmafFrame {
    #[serde(rename = "frameNum")]
    frame_num: u64,
    metrics: VmafMetrics,
}

#[derive(Debug, Deserialize)]
struct VmafMetrics {
    vmaf: f64,
}

/// Per-frame VMAF from libvmaf's JSON log (`log_fmt=json`), in frame
/// order.
///
/// # Errors
///
/// [`VideoError::Log`] when the log does not parse.
pub fn parse_vmaf_log(json: &str) -> Result<Vec<f64>, VideoError> {
    let mut log: VmafLog = serde_json::from_str(json).map_err(|e| VideoError::Log {
        what: "libvmaf",
        message: e.to_string(),
    })?;
    log.frames.sort_by_key(|f| f.frame_num);
    Ok(log.frames.iter().map(|f| f.metrics.vmaf).collect())
}

/// Per-frame PSNR over all planes (`psnr_avg`) from the `psnr` filter's
/// `stats_file`, capped at [`PSNR_CAP`].
///
/// # Errors
///
/// [`VideoError::Log`] for a line without a readable `psnr_avg`.
pub fn parse_psnr_log(text: &str) -> Result<Vec<f64>, VideoError> {
    stats_values(text, "psnr_avg:", "psnr").map(|values| {
        values
            .into_iter()
            .map(|v| if v.is_nan() { v } else { v.min(PSNR_CAP) })
            .collect()
    })
}

/// Per-frame SSIM over all planes (`All`) from the `ssim` filter's
/// `stats_file`.
///
/// # Errors
///
/// [`VideoError::Log`] for a line without a readable `All`.
pub fn parse_ssim_log(text: &str) -> Result<Vec<f64>, VideoError> {
    stats_values(text, "All:", "ssim")
}

/// The value after `key` on each non-empty line.
fn stats_values(text: &str, key: &str, what: &'static str) -> Result<Vec<f64>, VideoError> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix(key))
                .and_then(|value| match value {
                    "inf" => Some(f64::INFINITY),
                    other => other.parse().ok(),
                })
                .ok_or_else(|| VideoError::Log {
                    what,
                    message: format!("no {key} in {line:?}"),
                })
        })
        .collect()
}

/// Pools per-frame scores: mean, min, max, harmonic mean (libvmaf's
/// `n / Σ 1/(x+1) − 1`), and the 1st, 5th and 95th percentiles (linear
/// interpolation between the closest ranks). `None` for no frames.
///
/// # Examples
///
/// ```
/// use spool_video::pool;
///
/// let summary = pool(&[90.0, 80.0, 100.0]).unwrap();
/// assert_eq!((summary.mean, summary.min, summary.max), (90.0, 80.0, 100.0));
/// assert!(summary.harmonic_mean < summary.mean);
/// assert!(pool(&[]).is_none());
/// ```
#[must_use]
pub fn pool(values: &[f64]) -> Option<MetricSummary> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    #[allow(clippy::cast_precision_loss)]
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let reciprocal: f64 = sorted.iter().map(|v| 1.0 / (v + 1.0)).sum();
    Some(MetricSummary {
        mean,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        harmonic_mean: n / reciprocal - 1.0,
        p1: percentile(&sorted, 1.0),
        p5: percentile(&sorted, 5.0),
        p95: percentile(&sorted, 95.0),
    })
}

/// The `p`th percentile of sorted values, interpolated linearly.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let rank = (p / 100.0) * (sorted.len() - 1) as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let below = rank.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let weight = rank - rank.floor();
    sorted[below] + (sorted[above] - sorted[below]) * weight
}

/// Per-frame scores side by side; a metric that was not computed (or has
/// fewer frames) is `None` there.
#[must_use]
pub fn frames(vmaf: &[f64], psnr: &[f64], ssim: &[f64]) -> Vec<FrameScores> {
    let count = vmaf.len().max(psnr.len()).max(ssim.len());
    (0..count)
        .map(|i| FrameScores {
            frame: u32::try_from(i).unwrap_or(u32::MAX),
            vmaf: vmaf.get(i).copied(),
            psnr: psnr.get(i).copied(),
            ssim: ssim.get(i).copied(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_parse() {
        let vmaf = r#"{"version": "x", "frames": [
            {"frameNum": 1, "metrics": {"integer_adm2": 0.9, "vmaf": 80.5}},
            {"frameNum": 0, "metrics": {"vmaf": 90.25}}
        ], "pooled_metrics": {}}"#;
        assert_eq!(parse_vmaf_log(vmaf).unwrap(), [90.25, 80.5]);
        assert!(parse_vmaf_log("not json").is_err());

        let psnr = "n:1 mse_avg:0.00 mse_y:0.00 psnr_avg:inf psnr_y:inf \n\
                    n:2 mse_avg:105.56 psnr_avg:27.90 psnr_y:29.21 \n";
        assert_eq!(parse_psnr_log(psnr).unwrap(), [PSNR_CAP, 27.90]);
        let ssim = "n:1 Y:0.866739 U:0.845956 V:0.877259 All:0.865029 (8.697587)\n\
                    n:2 Y:1.000000 U:1.000000 V:1.000000 All:1.000000 (inf)\n";
        assert_eq!(parse_ssim_log(ssim).unwrap(), [0.865_029, 1.0]);
        assert!(parse_ssim_log("n:1 Y:0.5\n").is_err());
    }

    #[test]
    fn pooling() {
        let values: Vec<f64> = (0..=100).map(f64::from).collect();
        let s = pool(&values).unwrap();
        assert_eq!((s.min, s.max, s.mean), (0.0, 100.0, 50.0));
        assert!((s.p1 - 1.0).abs() < 1e-9);
        assert!((s.p5 - 5.0).abs() < 1e-9);
        assert!((s.p95 - 95.0).abs() < 1e-9);
        assert!(s.harmonic_mean < s.mean && s.harmonic_mean > 0.0);
        let one = pool(&[42.0]).unwrap();
        assert_eq!((one.p1, one.p95, one.harmonic_mean), (42.0, 42.0, 42.0));
        let same = pool(&[1.0, 1.0]).unwrap();
        assert!((same.harmonic_mean - 1.0).abs() < 1e-12);
    }

    #[test]
    fn frames_line_up() {
        let rows = frames(&[90.0, 91.0], &[40.0, 41.0], &[]);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[1].frame, rows[1].vmaf, rows[1].ssim),
            (1, Some(91.0), None)
        );
    }
}

//! `video.analyze`: VMAF, PSNR and SSIM of a distorted video against its
//! reference.

use serde::{Deserialize, Serialize};

use super::Location;
use spool_broker::{QueueName, Task, TaskOptions};

/// Scores `distorted` against `reference` (`video.analyze`, queue
/// `analysis`).
///
/// The worker runs one FFmpeg pass: the distorted video is scaled to the
/// reference's size (bicubic), both start at timestamp zero, and VMAF
/// (the `libvmaf` filter), PSNR and SSIM (two separate filters) read the
/// same frames. Scores are pooled over the frames; per-frame scores come
/// back too when `per_frame` is set.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use spool_sdk::Client;
/// use spool_sdk::video::{Analyze, VmafModel};
///
/// # #[cfg(feature = "store")] // the handle reads the job store
/// # async fn demo() -> Result<(), spool_sdk::Error> {
/// let client =
///     Client::connect_with_store("redis://127.0.0.1:6379/", "sqlite://spool.db").await?;
/// let task = Analyze::new("uploads/cat.mov", "encodes/cat-720p.mp4").model(VmafModel::V061);
/// let id = client.enqueue(task).await?;
/// let report = client.task::<Analyze>(id)?.wait(Duration::from_secs(600)).await?;
/// if let Some(vmaf) = report.vmaf {
///     println!("VMAF {:.2} (worst frame {:.2})", vmaf.mean, vmaf.min);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Analyze {
    /// The pristine video, inside the worker's roots, or an object URL
    /// inside its allowed buckets.
    pub reference: Location,
    /// The video to score, inside the worker's roots, or an object URL.
    pub distorted: Location,
    /// Which metrics to compute.
    #[serde(default)]
    pub metrics: Metrics,
    /// The VMAF model.
    #[serde(default)]
    pub vmaf_model: VmafModel,
    /// Threads for libvmaf; `None` lets the worker decide (its CPUs).
    #[serde(default)]
    pub threads: Option<u16>,
    /// Whether the report carries every frame's scores.
    #[serde(default)]
    pub per_frame: bool,
    /// Score one frame in this many (1, the default: every frame).
    #[serde(default = "one")]
    pub subsample: u16,
}

fn one() -> u16 {
    1
}

impl Analyze {
    /// VMAF, PSNR and SSIM with the default model, every frame, pooled
    /// results only.
    #[must_use]
    pub fn new(reference: impl Into<Location>, distorted: impl Into<Location>) -> Self {
        Self {
            reference: reference.into(),
            distorted: distorted.into(),
            metrics: Metrics::default(),
            vmaf_model: VmafModel::default(),
            threads: None,
            per_frame: false,
            subsample: 1,
        }
    }

    /// Chooses the metrics.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Chooses the VMAF model.
    #[must_use]
    pub fn model(mut self, model: VmafModel) -> Self {
        self.vmaf_model = model;
        self
    }

    /// Sets libvmaf's thread count.
    #[must_use]
    pub fn threads(mut self, threads: u16) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Asks for per-frame scores in the report.
    #[must_use]
    pub fn per_frame(mut self, per_frame: bool) -> Self {
        self.per_frame = per_frame;
        self
    }

    /// Scores one frame in `every`.
    #[must_use]
    pub fn subsample(mut self, every: u16) -> Self {
        self.subsample = every;
        self
    }
}

impl Task for Analyze {
    const NAME: &'static str = "video.analyze";
    type Output = AnalysisReport;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::ANALYSIS,
            ..TaskOptions::default()
        }
    }
}

/// Which metrics to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// VMAF, through FFmpeg's `libvmaf` filter (needs an FFmpeg built with
    /// it).
    pub vmaf: bool,
    /// PSNR, through the `psnr` filter.
    pub psnr: bool,
    /// SSIM, through the `ssim` filter.
    pub ssim: bool,
}

impl Metrics {
    /// All three.
    pub const ALL: Self = Self {
        vmaf: true,
        psnr: true,
        ssim: true,
    };

    /// PSNR and SSIM, which any FFmpeg has.
    pub const WITHOUT_VMAF: Self = Self {
        vmaf: false,
        psnr: true,
        ssim: true,
    };

    /// Whether none is asked for.
    #[must_use]
    pub fn is_empty(self) -> bool {
        !(self.vmaf || self.psnr || self.ssim)
    }
}

impl Default for Metrics {
    /// All three.
    fn default() -> Self {
        Self::ALL
    }
}

/// The VMAF models built into libvmaf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VmafModel {
    /// `vmaf_v0.6.1`: 1080p viewed on a TV-sized screen at 3× its height.
    #[default]
    V061,
    /// `vmaf_v0.6.1neg`: the same, without credit for enhancement such as
    /// sharpening ("no enhancement gain").
    V061Neg,
    /// `vmaf_4k_v0.6.1`: 4K viewed at 1.5× the screen's height.
    V061_4k,
}

impl VmafModel {
    /// The model's libvmaf version name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V061 => "vmaf_v0.6.1",
            Self::V061Neg => "vmaf_v0.6.1neg",
            Self::V061_4k => "vmaf_4k_v0.6.1",
        }
    }
}

/// The scores of one metric, pooled over the frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Arithmetic mean.
    pub mean: f64,
    /// The worst frame.
    pub min: f64,
    /// The best frame.
    pub max: f64,
    /// Harmonic mean as libvmaf pools it, `n / Σ 1/(x+1) − 1`: it weighs
    /// bad frames more than the mean does.
    pub harmonic_mean: f64,
    /// 1st percentile (linear interpolation between frames).
    pub p1: f64,
    /// 5th percentile.
    pub p5: f64,
    /// 95th percentile.
    pub p95: f64,
}

/// One frame's scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameScores {
    /// The frame's index among the scored frames, from 0.
    pub frame: u32,
    /// VMAF, 0 to 100.
    pub vmaf: Option<f64>,
    /// PSNR in dB over all planes (capped at 100 for identical frames).
    pub psnr: Option<f64>,
    /// SSIM over all planes, 0 to 1.
    pub ssim: Option<f64>,
}

/// What `video.analyze` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisReport {
    /// VMAF, when asked for.
    pub vmaf: Option<MetricSummary>,
    /// PSNR in dB, when asked for. Identical frames have an infinite PSNR;
    /// it is capped at 100 dB so results stay finite (JSON has no
    /// infinity).
    pub psnr: Option<MetricSummary>,
    /// SSIM, when asked for.
    pub ssim: Option<MetricSummary>,
    /// Frames scored.
    pub frames: u32,
    /// The VMAF model used, when VMAF was computed.
    pub vmaf_model: Option<VmafModel>,
    /// The reference's frame size, which the distorted video was scaled to.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Every scored frame, when `per_frame` was set; else empty.
    pub per_frame: Vec<FrameScores>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_wire_form() {
        let task = Analyze::new("ref.mp4", "dist.mp4");
        assert_eq!(task.metrics, Metrics::ALL);
        assert_eq!(task.subsample, 1);
        assert_eq!(Analyze::options().queue, QueueName::ANALYSIS);
        let task = task.model(VmafModel::V061_4k).threads(2).per_frame(true);
        let bytes = spool_broker::encode_payload(&task).expect("encodes");
        let back: Analyze = spool_broker::decode_payload(&bytes).expect("decodes");
        assert_eq!(back, task);
        assert_eq!(VmafModel::V061_4k.as_str(), "vmaf_4k_v0.6.1");
        assert!(!Metrics::WITHOUT_VMAF.is_empty());
    }
}

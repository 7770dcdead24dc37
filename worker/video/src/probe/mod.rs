//! The hardware probe a worker runs at start: GPUs (NVML), a CUDA
//! self-test (cudarc + NVRTC), and FFmpeg's encoders and filters.
//!
//! Both GPU libraries are loaded at run time, so the probe runs, and
//! reports "no GPU" cleanly, on hosts without a driver. The `gpu` queue is
//! served only when a GPU passed the self-test, or with `--force-gpu`
//! ([`select_queues`]).

mod cuda;
mod ffmpeg;
mod gpu;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use spool_broker::QueueName;

pub use self::cuda::{CudaReport, SELF_TEST_TIMEOUT};
pub use self::ffmpeg::{
    CANDIDATE_ENCODERS, FfmpegReport, TRIAL_TIMEOUT, locate as locate_ffmpeg,
    probe as probe_ffmpeg, probe_listing, strip_log_context,
};
pub use self::gpu::{GpuDevice, GpuReport, GpuSample, GpuTelemetry};

/// Everything the probe found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Whether the probe ran (`--no-probe` skips it).
    pub probed: bool,
    /// GPUs found through NVML.
    pub gpu: GpuReport,
    /// The CUDA self-test.
    pub cuda: CudaReport,
    /// What FFmpeg can do.
    pub ffmpeg: FfmpegReport,
}

impl Capabilities {
    /// Whether a GPU passed the CUDA self-test: the condition for serving
    /// the `gpu` queue.
    #[must_use]
    pub fn gpu_ready(&self) -> bool {
        !self.gpu.devices.is_empty() && self.cuda.passed
    }

    /// Why the `gpu` queue cannot be served here, in words; `None` when it
    /// can.
    #[must_use]
    pub fn gpu_unavailable_because(&self) -> Option<String> {
        if !self.probed {
            return Some("the hardware probe was skipped (--no-probe)".to_owned());
        }
        if self.gpu.devices.is_empty() {
            return Some(
                self.gpu
                    .error
                    .clone()
                    .unwrap_or_else(|| "no GPU found".to_owned()),
            );
        }
        if !self.cuda.passed {
            return Some(format!("the CUDA self-test failed: {}", self.cuda.detail));
        }
        None
    }

    /// A few lines for the log and for `--probe-only`.
    #[must_use]
    pub fn summary(&self) -> String {
        if !self.probed {
            return "hardware probe skipped".to_owned();
        }
        let mut out = String::new();
        if self.gpu.devices.is_empty() {
            let why = self.gpu.error.as_deref().unwrap_or("none found");
            let _ = writeln!(out, "GPU: no GPU ({why})");
        }
        for device in &self.gpu.devices {
            let _ = writeln!(
                out,
                "GPU {}: {}, {} MiB ({} MiB used)",
                device.index,
                device.name,
                device.memory_total_bytes >> 20,
                device.memory_used_bytes >> 20
            );
        }
        let verdict = if self.cuda.passed {
            "passed"
        } else {
            "not passed"
        };
        let _ = writeln!(out, "CUDA self-test: {verdict}: {}", self.cuda.detail);
        match (&self.ffmpeg.path, &self.ffmpeg.error) {
            (None, _) => {
                let _ = writeln!(
                    out,
                    "FFmpeg: not found (set --ffmpeg or SPOOL_FFMPEG, or put ffmpeg on PATH)"
                );
            }
            (Some(path), Some(error)) => {
                let _ = writeln!(out, "FFmpeg: {} unusable: {error}", path.display());
            }
            (Some(path), None) => {
                let _ = writeln!(
                    out,
                    "FFmpeg: {} ({}); encoders that passed a trial encode: {}; libvmaf: {}",
                    path.display(),
                    self.ffmpeg.version.as_deref().unwrap_or("unknown version"),
                    if self.ffmpeg.encoders.is_empty() {
                        "none".to_owned()
                    } else {
                        self.ffmpeg.encoders.join(", ")
                    },
                    if self.ffmpeg.libvmaf { "yes" } else { "no" }
                );
                for (encoder, why) in &self.ffmpeg.rejected {
                    let _ = writeln!(
                        out,
                        "  {encoder} is compiled in but failed its trial: {why}"
                    );
                }
            }
        }
        out.trim_end().to_owned()
    }

    /// Short strings for the worker registry.
    #[must_use]
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if !self.probed {
            labels.insert("probe".to_owned(), "skipped".to_owned());
            return labels;
        }
        labels.insert("gpus".to_owned(), self.gpu.devices.len().to_string());
        if !self.gpu.devices.is_empty() {
            let names: Vec<&str> = self.gpu.devices.iter().map(|d| d.name.as_str()).collect();
            labels.insert("gpu_names".to_owned(), names.join(", "));
        }
        if let Some(driver) = &self.gpu.driver_version {
            labels.insert("nvidia_driver".to_owned(), driver.clone());
        }
        labels.insert(
            "cuda_self_test".to_owned(),
            if self.cuda.passed { "passed" } else { "failed" }.to_owned(),
        );
        if let Some(version) = &self.ffmpeg.version {
            labels.insert("ffmpeg".to_owned(), version.clone());
        }
        labels.insert("encoders".to_owned(), self.ffmpeg.encoders.join(","));
        labels.insert("libvmaf".to_owned(), self.ffmpeg.libvmaf.to_string());
        labels
    }
}

/// What to probe.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProbeOptions<'a> {
    /// An explicit FFmpeg; `None` searches `PATH`.
    pub ffmpeg: Option<&'a Path>,
}

impl<'a> ProbeOptions<'a> {
    /// Probe with this FFmpeg (`None`: search `PATH`).
    #[must_use]
    pub fn new(ffmpeg: Option<&'a Path>) -> Self {
        Self { ffmpeg }
    }
}

/// Probes GPUs, CUDA and FFmpeg (blocking: trial encodes take up to a few
/// seconds, in parallel). Never fails: what is missing is reported. Also
/// returns the NVML session for telemetry, when there is a GPU.
#[must_use]
pub fn probe(options: &ProbeOptions<'_>) -> (Capabilities, Option<GpuTelemetry>) {
    let ffmpeg_path = ffmpeg::locate(options.ffmpeg);
    let ffmpeg = std::thread::spawn(move || match ffmpeg_path {
        Some(path) => ffmpeg::probe(&path),
        None => FfmpegReport {
            error: Some("no ffmpeg on PATH".to_owned()),
            ..FfmpegReport::default()
        },
    });
    let (gpu, telemetry) = gpu::inventory();
    let cuda = if gpu.devices.is_empty() {
        CudaReport {
            passed: false,
            device: None,
            detail: format!(
                "not run: {}",
                gpu.error.as_deref().unwrap_or("no GPU found")
            ),
        }
    } else {
        cuda::self_test()
    };
    let ffmpeg = ffmpeg.join().unwrap_or_else(|_| FfmpegReport {
        error: Some("the FFmpeg probe panicked".to_owned()),
        ..FfmpegReport::default()
    });
    let capabilities = Capabilities {
        probed: true,
        gpu,
        cuda,
        ffmpeg,
    };
    (capabilities, telemetry)
}

/// The queues to serve: `wanted`, without `gpu` unless a GPU passed the
/// self-test or `force_gpu` is set. Also says why `gpu` was dropped.
#[must_use]
pub fn select_queues(
    wanted: &[QueueName],
    capabilities: &Capabilities,
    force_gpu: bool,
) -> (Vec<QueueName>, Option<String>) {
    if !wanted.contains(&QueueName::GPU) || force_gpu {
        return (wanted.to_vec(), None);
    }
    match capabilities.gpu_unavailable_because() {
        None => (wanted.to_vec(), None),
        Some(why) => (
            wanted
                .iter()
                .filter(|q| **q != QueueName::GPU)
                .cloned()
                .collect(),
            Some(why),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gpu_queue_needs_a_passing_gpu() {
        let wanted = [QueueName::DEFAULT, QueueName::GPU];
        let none = Capabilities {
            probed: true,
            gpu: GpuReport {
                error: Some("no NVIDIA driver".into()),
                ..GpuReport::default()
            },
            ..Capabilities::default()
        };
        let (queues, why) = select_queues(&wanted, &none, false);
        assert_eq!(queues, vec![QueueName::DEFAULT]);
        assert!(why.expect("a reason").contains("no NVIDIA driver"));
        assert_eq!(select_queues(&wanted, &none, true).0, wanted.to_vec());
        let (queues, why) = select_queues(&[QueueName::DEFAULT], &none, false);
        assert_eq!((queues, why), (vec![QueueName::DEFAULT], None));

        let mut ready = none.clone();
        ready.gpu.devices.push(GpuDevice {
            index: 0,
            name: "test GPU".into(),
            memory_total_bytes: 1 << 30,
            memory_used_bytes: 0,
            encoder_utilization: None,
            decoder_utilization: None,
        });
        ready.gpu.error = None;
        ready.cuda.passed = true;
        assert_eq!(
            select_queues(&wanted, &ready, false),
            (wanted.to_vec(), None)
        );
        assert!(ready.summary().contains("test GPU"));
        assert_eq!(ready.labels()["gpus"], "1");
    }

    #[test]
    fn probing_here_never_fails() {
        let (capabilities, _telemetry) =
            probe(&ProbeOptions::new(Some(Path::new("/nonexistent/ffmpeg"))));
        assert!(capabilities.probed);
        assert!(capabilities.ffmpeg.error.is_some());
        assert!(!capabilities.summary().is_empty());
    }
}

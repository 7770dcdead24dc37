//! GPU inventory and telemetry through NVML (nvml-wrapper), which loads
//! `libnvidia-ml.so` at run time: without an NVIDIA driver, `Nvml::init`
//! fails and the probe says so.

use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};
use spool_cli_common::explain_nvml_error;

/// One GPU as NVML sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GpuDevice {
    /// NVML's index.
    pub index: u32,
    /// The product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Installed memory, in bytes.
    pub memory_total_bytes: u64,
    /// Memory in use, in bytes.
    pub memory_used_bytes: u64,
    /// Video encoder utilization, 0 to 1.
    pub encoder_utilization: Option<f64>,
    /// Video decoder utilization, 0 to 1.
    pub decoder_utilization: Option<f64>,
}

/// What NVML found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GpuReport {
    /// The GPUs found.
    pub devices: Vec<GpuDevice>,
    /// The driver version, when a driver answered.
    pub driver_version: Option<String>,
    /// Why no GPU is listed, when none is.
    pub error: Option<String>,
}

/// A GPU's telemetry at one moment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GpuSample {
    /// NVML's index.
    pub index: u32,
    /// GPU utilization, 0 to 1.
    pub utilization: Option<f64>,
    /// Memory in use, in bytes.
    pub memory_used_bytes: Option<f64>,
    /// Installed memory, in bytes.
    pub memory_total_bytes: Option<f64>,
    /// Encoder utilization, 0 to 1.
    pub encoder_utilization: Option<f64>,
    /// Decoder utilization, 0 to 1.
    pub decoder_utilization: Option<f64>,
}

/// An open NVML session, for telemetry at every metrics scrape.
pub struct GpuTelemetry {
    nvml: Nvml,
    count: u32,
}

impl std::fmt::Debug for GpuTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTelemetry")
            .field("devices", &self.count)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio(percent: u32) -> f64 {
    f64::from(percent) / 100.0
}

impl GpuTelemetry {
    /// Opens NVML and counts the GPUs.
    ///
    /// # Errors
    ///
    /// Why not, in words (`no NVIDIA driver: ...`).
    pub fn init() -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| explain_nvml_error(&e))?;
        let count = nvml.device_count().map_err(|e| explain_nvml_error(&e))?;
        Ok(Self { nvml, count })
    }

    /// How many GPUs NVML sees.
    #[must_use]
    pub fn device_count(&self) -> u32 {
        self.count
    }

    /// Telemetry of every GPU now; a GPU or reading that fails is left out.
    #[must_use]
    pub fn sample(&self) -> Vec<GpuSample> {
        (0..self.count)
            .filter_map(|index| {
                let device = self.nvml.device_by_index(index).ok()?;
                let memory = device.memory_info().ok();
                #[allow(clippy::cast_precision_loss)]
                Some(GpuSample {
                    index,
                    utilization: device.utilization_rates().ok().map(|u| ratio(u.gpu)),
                    memory_used_bytes: memory.as_ref().map(|m| m.used as f64),
                    memory_total_bytes: memory.as_ref().map(|m| m.total as f64),
                    encoder_utilization: device
                        .encoder_utilization()
                        .ok()
                        .map(|u| ratio(u.utilization)),
                    decoder_utilization: device
                        .decoder_utilization()
                        .ok()
                        .map(|u| ratio(u.utilization)),
                })
            })
            .collect()
    }

    /// The inventory: names, memory, codec utilization, driver version.
    #[must_use]
    pub fn report(&self) -> GpuReport {
        let mut devices = Vec::new();
        let mut errors = Vec::new();
        for index in 0..self.count {
            match self.nvml.device_by_index(index) {
                Ok(device) => {
                    let memory = device.memory_info().ok();
                    devices.push(GpuDevice {
                        index,
                        name: device
                            .name()
                            .unwrap_or_else(|_| "unknown NVIDIA GPU".to_owned()),
                        memory_total_bytes: memory.as_ref().map_or(0, |m| m.total),
                        memory_used_bytes: memory.as_ref().map_or(0, |m| m.used),
                        encoder_utilization: device
                            .encoder_utilization()
                            .ok()
                            .map(|u| ratio(u.utilization)),
                        decoder_utilization: device
                            .decoder_utilization()
                            .ok()
                            .map(|u| ratio(u.utilization)),
                    });
                }
                Err(e) => errors.push(format!("GPU {index}: {}", explain_nvml_error(&e))),
            }
        }
        let error = if devices.is_empty() {
            Some(if errors.is_empty() {
                "the NVIDIA driver reports no GPU".to_owned()
            } else {
                errors.join("; ")
            })
        } else {
            None
        };
        GpuReport {
            devices,
            driver_version: self.nvml.sys_driver_version().ok(),
            error,
        }
    }
}

/// Inventories the GPUs; never fails (the report says why none).
#[must_use]
pub(crate) fn inventory() -> (GpuReport, Option<GpuTelemetry>) {
    match GpuTelemetry::init() {
        Ok(telemetry) => (telemetry.report(), Some(telemetry)),
        Err(error) => (
            GpuReport {
                error: Some(error),
                ..GpuReport::default()
            },
            None,
        ),
    }
}

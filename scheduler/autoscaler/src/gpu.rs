//! How many GPUs this host has, for the pools that need them: counted with
//! NVML (nvml-wrapper loads `libnvidia-ml.so` at run time, so the
//! autoscaler builds and runs without an NVIDIA driver), or given by the
//! configuration.

use nvml_wrapper::Nvml;
use serde::Serialize;
use spool_cli_common::explain_nvml_error;

/// The GPUs the GPU pools are capped by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuCount {
    /// How many.
    pub count: u32,
    /// Where the number comes from: `config` or `nvml`.
    pub source: &'static str,
    /// Why NVML found none, when it did not.
    pub note: Option<String>,
}

impl GpuCount {
    /// The count the configuration gives (`gpus = N` or `--gpus N`).
    #[must_use]
    pub fn configured(count: u32) -> Self {
        Self {
            count,
            source: "config",
            note: None,
        }
    }

    /// Counts the GPUs with NVML; zero, with the reason, when there is no
    /// driver or no device.
    ///
    /// # Examples
    ///
    /// ```
    /// let gpus = spool_autoscaler::GpuCount::detect();
    /// assert_eq!(gpus.source, "nvml");
    /// assert!(gpus.count > 0 || gpus.note.is_some());
    /// ```
    #[must_use]
    pub fn detect() -> Self {
        let counted = Nvml::init().and_then(|nvml| nvml.device_count());
        match counted {
            Ok(0) => Self {
                count: 0,
                source: "nvml",
                note: Some("the NVIDIA driver reports no GPU".to_owned()),
            },
            Ok(count) => Self {
                count,
                source: "nvml",
                note: None,
            },
            Err(e) => Self {
                count: 0,
                source: "nvml",
                note: Some(explain_nvml_error(&e)),
            },
        }
    }
}

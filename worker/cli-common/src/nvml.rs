//! NVML errors in the terms an operator acts on, for every binary that
//! counts or watches GPUs.

use nvml_wrapper::error::NvmlError;

/// Explains an NVML error in the terms an operator acts on.
#[must_use]
pub fn explain_nvml_error(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
            "no NVIDIA driver: libnvidia-ml.so cannot be loaded".to_owned()
        }
        NvmlError::DriverNotLoaded => "no NVIDIA driver is loaded".to_owned(),
        NvmlError::NoPermission => "no permission to query the NVIDIA driver".to_owned(),
        other => format!("NVML failed: {other}"),
    }
}

//! The CUDA self-test (cudarc): NVRTC compiles a small kernel, it runs on
//! GPU 0, and the result is checked on the host.
//!
//! cudarc loads `libcuda.so` and `libnvrtc.so` at run time
//! (`dynamic-loading`), so the workspace builds and tests without CUDA.
//! Its loader panics when a library is missing, so the test first asks
//! whether both load, and runs on its own thread, so that any other panic
//! or a hung driver (past [`SELF_TEST_TIMEOUT`]) is a failed self-test,
//! never a dead worker.
//!
//! This is the one module of the crate with `unsafe`: checking for the
//! libraries (loading a shared library runs its initializers) and
//! launching the kernel (the arguments must match its signature).
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use serde::{Deserialize, Serialize};

/// The longest the self-test may take (a first NVRTC compile and context
/// creation take a second or two).
pub const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The kernel: `out[i] = a[i] + 2 * b[i]`.
const KERNEL: &str = r#"
extern "C" __global__ void spool_self_test(float *out, const float *a, const float *b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = a[i] + 2.0f * b[i];
    }
}
"#;

/// Elements in the self-test's vectors.
const N: usize = 4096;

/// How the self-test went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CudaReport {
    /// Whether a kernel compiled, ran and computed the right result.
    pub passed: bool,
    /// The device it ran on, when it got that far.
    pub device: Option<String>,
    /// What happened, or why it was not run.
    pub detail: String,
}

impl CudaReport {
    fn failed(detail: impl Into<String>) -> Self {
        Self {
            passed: false,
            device: None,
            detail: detail.into(),
        }
    }
}

/// Whether the CUDA driver and NVRTC libraries can be loaded; says which
/// is missing otherwise.
fn libraries() -> Result<(), String> {
    // SAFETY: loading libcuda/libnvrtc runs their initializers, which is
    // what every CUDA program does; nothing is called through them here.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver library (libcuda.so) can be loaded".to_owned());
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("the CUDA driver is present but NVRTC (libnvrtc.so, from the CUDA toolkit or the nvidia-cuda-nvrtc wheel) cannot be loaded".to_owned());
    }
    Ok(())
}

/// Runs the self-test on GPU 0; never panics.
#[must_use]
pub(crate) fn self_test() -> CudaReport {
    if let Err(why) = libraries() {
        return CudaReport::failed(why);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("spool-cuda-self-test".to_owned())
        .spawn(move || {
            let _ = tx.send(run());
        });
    if let Err(e) = spawned {
        return CudaReport::failed(format!("cannot start the self-test thread: {e}"));
    }
    match rx.recv_timeout(SELF_TEST_TIMEOUT) {
        Ok(report) => report,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => CudaReport::failed(format!(
            "the self-test did not finish within {SELF_TEST_TIMEOUT:?}"
        )),
        // The thread dropped its sender without sending: it panicked.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => CudaReport::failed(
            "the self-test panicked inside the CUDA bindings (see the log above)",
        ),
    }
}

fn run() -> CudaReport {
    let ctx = match CudaContext::new(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            return CudaReport::failed(format!("cannot create a CUDA context on GPU 0: {e:?}"));
        }
    };
    let device = ctx.name().ok();
    let mut report = match compute(&ctx) {
        Ok(()) => CudaReport {
            passed: true,
            device: None,
            detail: format!(
                "NVRTC compiled a kernel; it ran on {N} elements and the result checked out"
            ),
        },
        Err(why) => CudaReport::failed(why),
    };
    report.device = device;
    report
}

#[allow(clippy::cast_precision_loss)]
fn compute(ctx: &Arc<CudaContext>) -> Result<(), String> {
    let ptx = cudarc::nvrtc::compile_ptx(KERNEL)
        .map_err(|e| format!("NVRTC failed to compile the kernel: {e:?}"))?;
    let module = ctx
        .load_module(ptx)
        .map_err(|e| format!("cannot load the compiled kernel: {e:?}"))?;
    let function = module
        .load_function("spool_self_test")
        .map_err(|e| format!("the kernel is missing from its module: {e:?}"))?;
    let stream = ctx.default_stream();
    let a: Vec<f32> = (0..N).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..N).map(|i| (N - i) as f32 * 0.5).collect();
    let copy = |e| format!("cannot copy to the GPU: {e:?}");
    let a_dev = stream.clone_htod(&a).map_err(copy)?;
    let b_dev = stream.clone_htod(&b).map_err(copy)?;
    let mut out_dev = stream
        .alloc_zeros::<f32>(N)
        .map_err(|e| format!("cannot allocate GPU memory: {e:?}"))?;
    let n = i32::try_from(N).map_err(|e| e.to_string())?;
    let config = LaunchConfig::for_num_elems(u32::try_from(N).map_err(|e| e.to_string())?);
    let mut launch = stream.launch_builder(&function);
    launch.arg(&mut out_dev).arg(&a_dev).arg(&b_dev).arg(&n);
    // SAFETY: the arguments match the kernel's signature (float*, const
    // float*, const float*, int), each buffer holds N elements, and the
    // kernel bounds-checks its index against n == N.
    unsafe { launch.launch(config) }.map_err(|e| format!("the kernel launch failed: {e:?}"))?;
    let out = stream
        .clone_dtoh(&out_dev)
        .map_err(|e| format!("cannot copy the result back: {e:?}"))?;
    let wrong = a
        .iter()
        .zip(&b)
        .zip(&out)
        .position(|((a, b), got)| (a + 2.0 * b - got).abs() > 1e-3);
    match wrong {
        None if out.len() == N => Ok(()),
        None => Err(format!(
            "the kernel returned {} elements, not {N}",
            out.len()
        )),
        Some(i) => Err(format!(
            "wrong result at element {i}: expected {}, got {}",
            a[i] + 2.0 * b[i],
            out[i]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_test_never_panics() {
        // Passes on a GPU host and fails cleanly, with a reason, elsewhere.
        let report = self_test();
        assert!(report.passed || !report.detail.is_empty(), "{report:?}");
    }
}

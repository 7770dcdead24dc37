//! Ties a worker process's life to the autoscaler's.
//!
//! The one place in the crate with `unsafe`: a `pre_exec` hook, which
//! Rust marks unsafe because it runs in the forked child before `exec`.
//! It asks the kernel to send the worker SIGTERM (its warm shutdown) when
//! the autoscaler dies, even by SIGKILL, so no worker outlives it as an
//! orphan; a graceful stop retires them itself first.
#![allow(unsafe_code)]

use tokio::process::Command;

/// Makes the process `command` starts receive SIGTERM when the thread that
/// starts it exits. Start workers from a thread that lives as long as the
/// autoscaler: the runtime's threads, never a `spawn_blocking` one.
pub(super) fn terminate_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = nix::unistd::getpid();
        // SAFETY: the hook runs between fork and exec, where only
        // async-signal-safe calls are allowed. It makes two system calls
        // (prctl, getppid), allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)?;
                // The parent may have died before the request was made.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

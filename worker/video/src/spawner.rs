//! Starting FFmpeg (and ffprobe) so that it dies with the worker.
//!
//! A worker killed hard (SIGKILL, the OOM killer, a crash) runs no
//! destructor, so nothing of its own can stop its encoders: they would go
//! on, reparented to PID 1, writing outputs the task's next run writes
//! too. Each child therefore asks the kernel for `SIGKILL` when its parent
//! dies (`prctl(PR_SET_PDEATHSIG)`, set between fork and exec).
//!
//! The kernel sends that signal when the *thread* that forked the child
//! exits, not the process: a child forked from one of tokio's blocking
//! threads, which exit after a while idle, would be killed mid-encode. So
//! every child is forked from one thread that lives as long as the
//! process, `spool-ffmpeg-spawner`, which takes spawn requests over a
//! channel.

use std::sync::OnceLock;
use std::sync::mpsc;

use super::VideoError;

/// A request to the spawner thread.
type Job = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue, started on first use.
fn spawner() -> Result<&'static mpsc::Sender<Job>, VideoError> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<Job>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("spool-ffmpeg-spawner".to_owned())
                .spawn(move || {
                    // Never returns while the process lives: the senders
                    // are in a static.
                    for job in rx {
                        job();
                    }
                })
                .map(|_| tx)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            VideoError::io(
                "cannot start the FFmpeg spawner thread",
                std::io::Error::other(e.clone()),
            )
        })
}

/// Runs `spawn` on the spawner thread (inside the caller's tokio runtime,
/// if any, so tokio's process types work there) and returns what it gave.
/// If the caller stopped waiting in the meantime (its future dropped),
/// `unclaimed` gets the result instead, to kill what was started.
///
/// # Errors
///
/// [`VideoError::Io`] when the spawner thread cannot be started or is
/// gone.
pub(crate) async fn on_spawner<R, F, U>(spawn: F, unclaimed: U) -> Result<R, VideoError>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
    U: FnOnce(R) + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current().ok();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _entered = runtime.as_ref().map(tokio::runtime::Handle::enter);
        if let Err(result) = tx.send(spawn()) {
            unclaimed(result);
        }
    });
    spawner()?.send(job).map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

fn gone() -> VideoError {
    VideoError::io(
        "the FFmpeg spawner thread is gone",
        std::io::Error::other("it stopped"),
    )
}

/// Makes the child `command` starts receive `SIGKILL` when the thread that
/// forks it exits (with [`on_spawner`], when the process dies), and refuse
/// to start if its parent is already gone.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = libc_pid(std::process::id());
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it calls prctl and getppid
    // and builds an io::Error from an errno, none of which allocates or
    // takes a lock.
    unsafe {
        command.pre_exec(move || die_with(parent));
    }
}

/// [`die_with_parent`] for tokio's command (ffprobe).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn die_with_parent_tokio(command: &mut tokio::process::Command) {
    let parent = libc_pid(std::process::id());
    // SAFETY: as in `die_with_parent`.
    unsafe {
        command.pre_exec(move || die_with(parent));
    }
}

/// Elsewhere: nothing (no `PR_SET_PDEATHSIG`).
#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent(_command: &mut std::process::Command) {}

/// Elsewhere: nothing (no `PR_SET_PDEATHSIG`).
#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent_tokio(_command: &mut tokio::process::Command) {}

#[cfg(target_os = "linux")]
fn libc_pid(pid: u32) -> libc::pid_t {
    libc::pid_t::try_from(pid).unwrap_or(libc::pid_t::MAX)
}

/// In the forked child: asks for SIGKILL when the parent dies, then checks
/// the parent did not die before the request (the child would have been
/// reparented already, and no signal would ever come).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with(parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no
    // pointers; getppid cannot fail.
    let (set, now) = unsafe {
        let signal = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9);
        (
            libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0),
            libc::getppid(),
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if now != parent {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A child started through the spawner carries the death signal, and
    /// starting it from a thread that then exits does not kill it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn children_carry_the_death_signal_and_outlive_short_threads() {
        let started = tokio::task::spawn_blocking(|| {
            let mut command = std::process::Command::new("sleep");
            command.arg("30");
            die_with_parent(&mut command);
            command
        })
        .await
        .unwrap();
        let mut child = on_spawner(
            move || {
                let mut command = started;
                command.spawn()
            },
            |child| {
                if let Ok(mut child) = child {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            },
        )
        .await
        .unwrap()
        .unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        // PR_SET_PDEATHSIG is not in /proc; check the child lives on after
        // the blocking thread that built the command is long gone.
        assert!(status.contains("sleep"), "{status}");
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

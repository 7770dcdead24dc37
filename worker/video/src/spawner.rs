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
//!
//! Children are reaped with `wait4` ([`reap`]), which gives the kernel's
//! count of their CPU time (user + system, every thread) along with the
//! exit status: [`RunSummary::cpu`](crate::RunSummary::cpu) for FFmpeg, and
//! for every FFmpeg and ffprobe a task reaps inside [`metered`], the sum
//! the chunk stages report. A reaped child is dropped at once, never
//! signalled again (its pid may be reused).

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

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

/// The CPU time (user + system) of a reaped child, from the kernel's
/// rusage; zero elsewhere than on Unix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ChildCpu(pub(crate) Duration);

tokio::task_local! {
    /// The CPU time of the children reaped inside [`metered`].
    static CHARGED: Cell<Duration>;
}

/// Runs `work`, counting the CPU time (user + system, from `wait4`'s
/// rusage, so exact to the microsecond) of every FFmpeg and ffprobe child
/// it reaps on its own task; returns what `work` gave and that time.
/// Children a spawned task reaps are not counted.
pub(crate) async fn metered<F: Future>(work: F) -> (F::Output, Duration) {
    let total = Cell::new(Duration::ZERO);
    CHARGED
        .scope(total, async move {
            let out = work.await;
            (out, cpu_charged())
        })
        .await
}

/// The CPU time charged so far inside the enclosing [`metered`] (zero
/// outside one): the difference of two readings is what ran between them.
pub(crate) fn cpu_charged() -> Duration {
    CHARGED.try_with(Cell::get).unwrap_or_default()
}

/// Adds a reaped child's CPU time to the enclosing [`metered`], if any.
fn charge(cpu: Duration) {
    let _ = CHARGED.try_with(|total| total.set(total.get() + cpu));
}

/// Reaps `child` if it has exited, without blocking: its exit status and
/// CPU time (also charged to the enclosing [`metered`]). `None` while it
/// runs. Once this returned `Some`, the child is gone: the caller must not
/// wait for it or signal it again (its pid may be reused), only drop it.
///
/// # Errors
///
/// The `wait4` error (`ECHILD` when something else reaped it).
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn reap(
    child: &mut std::process::Child,
) -> std::io::Result<Option<(std::process::ExitStatus, ChildCpu)>> {
    use std::os::unix::process::ExitStatusExt as _;
    let pid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data, all zeros a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes only to the two pointers given, which point
    // to live locals of the right types; `pid` is our own unreaped child.
    let got = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut usage) };
    if got == 0 {
        return Ok(None);
    }
    if got < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::Interrupted {
            return Ok(None);
        }
        return Err(error);
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    charge(cpu);
    Ok(Some((
        std::process::ExitStatus::from_raw(status),
        ChildCpu(cpu),
    )))
}

/// Elsewhere: std's `try_wait`, with no CPU time.
///
/// # Errors
///
/// The `try_wait` error.
#[cfg(not(unix))]
pub(crate) fn reap(
    child: &mut std::process::Child,
) -> std::io::Result<Option<(std::process::ExitStatus, ChildCpu)>> {
    Ok(child
        .try_wait()?
        .map(|status| (status, ChildCpu::default())))
}

/// What a captured run gave.
#[derive(Debug)]
pub(crate) struct Captured {
    /// Its exit status.
    pub(crate) status: std::process::ExitStatus,
    /// Its standard output (lossy UTF-8).
    pub(crate) stdout: String,
    /// Its standard error (lossy UTF-8).
    pub(crate) stderr: String,
}

/// How a captured run did not complete.
#[derive(Debug)]
pub(crate) enum CaptureFailed {
    /// It could not be started (or the spawner thread is gone).
    Spawn(std::io::Error),
    /// It ran past the limit, and was killed.
    TimedOut,
    /// Waiting for it failed.
    Wait(std::io::Error),
}

/// Runs `command` (ffprobe: stdin closed, stdout and stderr read whole)
/// from the spawner thread, dying with this process, for at most `limit`;
/// reaps it with [`reap`] so its CPU time is known.
///
/// # Errors
///
/// [`CaptureFailed`] when it cannot start, times out or cannot be waited
/// for.
///
/// # Cancel safety
///
/// Dropping the future (or the time limit) kills the child and reaps it.
pub(crate) async fn capture(
    mut command: std::process::Command,
    limit: Duration,
) -> Result<Captured, CaptureFailed> {
    use std::process::Stdio;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let spawned = on_spawner(
        move || command.spawn(),
        |spawned| {
            if let Ok(mut child) = spawned {
                let _ = child.kill();
                let _ = child.wait();
            }
        },
    )
    .await
    .map_err(|e| CaptureFailed::Spawn(std::io::Error::other(e.to_string())))?
    .map_err(CaptureFailed::Spawn)?;
    let mut guard = Owned(Some(spawned));
    let run = async {
        let (stdout, stderr) = match guard.0.as_mut() {
            Some(child) => (child.stdout.take(), child.stderr.take()),
            None => (None, None),
        };
        let (stdout, stderr) = tokio::join!(read_all(stdout), read_all(stderr));
        // Both pipes closed: the child is exiting.
        loop {
            let Some(child) = guard.0.as_mut() else {
                return Err(CaptureFailed::Wait(std::io::Error::other("no child")));
            };
            match reap(child) {
                Ok(Some((status, _cpu))) => {
                    // Reaped (its CPU time charged): nothing left to kill.
                    guard.0 = None;
                    return Ok(Captured {
                        status,
                        stdout,
                        stderr,
                    });
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => {
                    guard.0 = None;
                    return Err(CaptureFailed::Wait(e));
                }
            }
        }
    };
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| CaptureFailed::TimedOut)?
}

/// Reads a pipe to its end on a blocking thread (empty on error).
async fn read_all<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let read = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
    .await
    .unwrap_or_default();
    String::from_utf8_lossy(&read).into_owned()
}

/// A child not yet reaped: killed and reaped when dropped.
struct Owned(Option<std::process::Child>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

    /// A captured child's CPU time is charged to the enclosing meter, and
    /// a child killed for its time limit is reaped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn captured_children_charge_their_cpu_time() {
        let busy = || {
            let mut command = std::process::Command::new("sh");
            command.args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo done",
            ]);
            command
        };
        let (captured, cpu) = metered(async {
            let first = capture(busy(), Duration::from_secs(120)).await.unwrap();
            let charged = cpu_charged();
            let second = capture(busy(), Duration::from_secs(120)).await.unwrap();
            (first, charged, second)
        })
        .await;
        let (first, after_first, second) = captured;
        assert!(first.status.success() && second.status.success());
        assert_eq!(first.stdout.trim(), "done");
        assert!(after_first > Duration::from_millis(20), "{after_first:?}");
        assert!(cpu > after_first, "{cpu:?} after {after_first:?}");
        assert_eq!(cpu_charged(), Duration::ZERO, "no meter outside");

        let mut sleeper = std::process::Command::new("sleep");
        sleeper.arg("30");
        let timed_out = capture(sleeper, Duration::from_millis(200)).await;
        assert!(matches!(timed_out, Err(CaptureFailed::TimedOut)));
    }
}

//! The workspace's own executables (`spool-worker`, `spool-autoscaler`),
//! for suites that run them as processes. Cargo builds them into the
//! target directory whose `deps/` holds the test executable; a binary of
//! another package is only there once built, so the lookup says how to
//! build it when it is missing.

use std::path::PathBuf;

/// The path of the workspace binary `name`, built by the crate `package`.
///
/// # Panics
///
/// When the binary is not built yet, with the command that builds it.
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let mut dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build -p {package} --bin {name}` (a workspace test run \
         builds it)",
        path.display()
    );
    path
}

/// `spool-worker`.
pub fn spool_worker() -> PathBuf {
    workspace_bin("spool-worker", "spool-worker-cli")
}

/// `spool-autoscaler`.
pub fn spool_autoscaler() -> PathBuf {
    workspace_bin("spool-autoscaler", "spool-autoscaler")
}

/// `spoolctl`.
pub fn spoolctl() -> PathBuf {
    workspace_bin("spoolctl", "spool-scheduler")
}

/// Runs `command` to its end and returns its stdout, failing the test with
/// its stderr when it exits non-zero.
pub fn stdout_of(command: &mut std::process::Command) -> String {
    let out = command.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `spool-worker` serving `queues` (comma-separated) at `url` under
/// `prefix`, without video tasks, probes or a metrics port; stderr is
/// piped for [`stop_warm`].
pub fn spawn_spool_worker(url: &str, prefix: &str, queues: &str) -> std::process::Child {
    std::process::Command::new(spool_worker())
        .env("SPOOL_REDIS_URL", url)
        .env("SPOOL_KEY_PREFIX", prefix)
        .env("SPOOL_QUEUES", queues)
        .args(["--no-video", "--no-probe", "--metrics-addr", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spool-worker starts")
}

/// Sends SIGTERM (the warm shutdown), waits for the exit and returns
/// stderr, failing the test unless the process exited cleanly.
pub fn stop_warm(child: std::process::Child) -> String {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid fits i32"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let output = child.wait_with_output().expect("the process is waited on");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "no clean exit after SIGTERM: {}\n{stderr}",
        output.status
    );
    stderr
}

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
    workspace_bin("spool-worker", "spool-worker")
}

/// `spool-autoscaler`.
pub fn spool_autoscaler() -> PathBuf {
    workspace_bin("spool-autoscaler", "spool-scheduler")
}

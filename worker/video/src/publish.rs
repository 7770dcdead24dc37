//! Outputs written where no other run writes, and moved into place whole.
//!
//! Two deliveries may write the same output at once: two tasks naming one
//! path, or a task and its own redelivery after its worker was thought
//! dead. Each run therefore writes a temporary file of its own beside the
//! output (same directory, so the final `rename` is atomic and never
//! crosses file systems), hidden and named after the task id and attempt:
//! `.<name>.<task id>-<attempt>.spool-tmp`. Only a complete, validated file
//! is renamed over the output, so readers see either the old file or a
//! whole new one, and two runs never interleave their writes. The temporary
//! file is removed when the run fails, is cancelled or is dropped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::VideoError;

/// The suffix of every temporary output.
pub const TEMP_SUFFIX: &str = ".spool-tmp";

/// How much of the output's name a temporary name keeps: with the task id
/// and attempt it stays under the usual 255-byte limit.
const NAME_KEPT: usize = 160;

/// A run's temporary file for one output; removed on drop unless
/// [committed](Self::commit).
#[derive(Debug)]
pub(crate) struct TempOutput {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl TempOutput {
    /// The temporary file for `target` (absolute, inside the output root,
    /// its directory existing) in run `attempt` of task `task_id`. Leftovers
    /// of this task's earlier runs beside it (a worker that crashed) are
    /// removed.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidTask`] when `target` has no file name.
    pub(crate) fn new(target: &Path, task_id: &str, attempt: u32) -> Result<Self, VideoError> {
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(VideoError::InvalidTask(format!(
                "the output {} has no file name",
                target.display()
            )));
        };
        let name = short(name);
        let prefix = format!(".{name}.{task_id}-");
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let file = entry.file_name();
                let file = file.to_string_lossy();
                if file.starts_with(&prefix) && file.ends_with(TEMP_SUFFIX) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self {
            temp: dir.join(format!("{prefix}{attempt}{TEMP_SUFFIX}")),
            target: target.to_owned(),
            committed: false,
        })
    }

    /// Where the run writes.
    pub(crate) fn path(&self) -> &Path {
        &self.temp
    }

    /// Moves the finished file into place, replacing whatever is there.
    ///
    /// # Errors
    ///
    /// [`VideoError::NoSpace`] or [`VideoError::Io`] when the rename fails
    /// (the temporary file is removed).
    pub(crate) fn commit(mut self) -> Result<(), VideoError> {
        std::fs::rename(&self.temp, &self.target).map_err(|e| {
            VideoError::from_io(
                format!(
                    "cannot move {} to {}",
                    self.temp.display(),
                    self.target.display()
                ),
                &self.target,
                e,
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        match std::fs::remove_file(&self.temp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(path = %self.temp.display(), error = %e, "cannot remove a temporary output");
            }
            _ => {}
        }
    }
}

/// Whether the file system holding `dir` is out of space: a run whose
/// output came out short may have hit a full disk that FFmpeg never
/// reported (the HLS muxer drops a failed segment write and exits
/// cleanly). Tries to write and sync 64 KiB there; only a full disk
/// (`ENOSPC`, `EDQUOT`) makes it true.
pub(crate) fn out_of_space(dir: &Path) -> bool {
    use std::io::Write as _;
    let probe = dir.join(format!(".spool-space-check-{:016x}", fastrand::u64(..)));
    let written = std::fs::File::create(&probe).and_then(|mut file| {
        file.write_all(&[0_u8; 64 * 1024])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.is_err_and(|e| crate::error::is_no_space(&e))
}

/// The first [`NAME_KEPT`] bytes of `name` (on a character boundary).
fn short(name: &OsStr) -> String {
    let name = name.to_string_lossy();
    let mut end = name.len().min(NAME_KEPT);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temps_are_unique_per_run_and_removed_unless_committed() {
        let dir = std::env::temp_dir().join(format!("spool-publish-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.mp4");
        // A crashed earlier run of the task left its file.
        let stale = dir.join(".out.mp4.t1-1.spool-tmp");
        std::fs::write(&stale, b"partial").unwrap();
        let other_task = dir.join(".out.mp4.t2-1.spool-tmp");
        std::fs::write(&other_task, b"theirs").unwrap();

        let temp = TempOutput::new(&target, "t1", 2).unwrap();
        assert_eq!(temp.path(), dir.join(".out.mp4.t1-2.spool-tmp"));
        assert!(!stale.exists(), "the earlier run's leftover is removed");
        assert!(other_task.exists(), "another task's run is left alone");
        std::fs::write(temp.path(), b"whole").unwrap();
        let path = temp.path().to_owned();
        drop(temp);
        assert!(!path.exists() && !target.exists());

        let temp = TempOutput::new(&target, "t1", 3).unwrap();
        std::fs::write(temp.path(), b"whole").unwrap();
        temp.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        assert!(!dir.join(".out.mp4.t1-3.spool-tmp").exists());

        let long = "x".repeat(300);
        let temp = TempOutput::new(&dir.join(&long), "t1", 1).unwrap();
        let name = temp.path().file_name().unwrap().len();
        assert!(name < 255, "{name}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! A task's scratch directory: where objects are downloaded before FFmpeg
//! reads them, and where outputs are written before they are uploaded.
//! Bounded in size, and removed however the task ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

use crate::VideoError;

/// One task run's scratch directory, `<parent>/spool-<tag>-<pid>-<random>`.
///
/// Removed by [`Scratch::cleanup`] (asynchronously, on success and on a
/// handled failure) or, when the task's future is dropped (a revocation, a
/// hard time limit), by `Drop`. What is written in it is bounded by a
/// limit: downloads reserve their size before the first byte, and outputs
/// are measured after FFmpeg writes them.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    limit: u64,
    reserved: AtomicU64,
    removed: bool,
}

impl Scratch {
    /// Creates a fresh directory under `parent` (the system's temporary
    /// directory when `None`), holding at most `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`VideoError::NoSpace`] or [`VideoError::Io`] when it cannot be
    /// created.
    pub fn create(parent: Option<&Path>, tag: &str, limit: u64) -> Result<Self, VideoError> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = parent.join(format!(
            "spool-{tag}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| {
            VideoError::from_io(format!("cannot create {}", dir.display()), &dir, e)
        })?;
        Ok(Self {
            dir,
            limit,
            reserved: AtomicU64::new(0),
            removed: false,
        })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A path for `name` (a worker-made name, never the task's) inside it.
    #[must_use]
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The size limit, in bytes.
    #[must_use]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reserves `bytes` of the limit for a download.
    ///
    /// # Errors
    ///
    /// [`VideoError::ScratchFull`] when they do not fit.
    pub fn reserve(&self, bytes: u64, what: &str) -> Result<(), VideoError> {
        let mut current = self.reserved.load(Ordering::Relaxed);
        loop {
            let wanted = current.saturating_add(bytes);
            if wanted > self.limit {
                return Err(VideoError::ScratchFull {
                    what: what.to_owned(),
                    needed: wanted,
                    limit: self.limit,
                });
            }
            match self.reserved.compare_exchange(
                current,
                wanted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Checks what the directory holds now (FFmpeg's outputs included)
    /// against the limit.
    ///
    /// # Errors
    ///
    /// [`VideoError::ScratchFull`] when it holds more.
    pub fn check_usage(&self, what: &str) -> Result<u64, VideoError> {
        let used = size_under(&self.dir);
        if used > self.limit {
            return Err(VideoError::ScratchFull {
                what: what.to_owned(),
                needed: used,
                limit: self.limit,
            });
        }
        Ok(used)
    }

    /// Removes the directory and everything in it.
    pub async fn cleanup(mut self) {
        self.removed = true;
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %self.dir.display(), error = %e, "cannot remove the scratch directory");
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %self.dir.display(), error = %e, "cannot remove the scratch directory");
        }
    }
}

/// The bytes free to an unprivileged writer on the file system holding
/// `dir` (`statvfs`'s available blocks), or `None` when it cannot be read.
#[must_use]
#[allow(
    unsafe_code,
    reason = "statvfs has no safe wrapper in the workspace's crates"
)]
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and
    // `stats` points to writable memory of the struct's size, which
    // `statvfs` fills on success (checked before it is read).
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    #[allow(
        clippy::useless_conversion,
        reason = "the field types differ by platform"
    )]
    let (blocks, size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Some(blocks.saturating_mul(size))
}

impl Scratch {
    /// Checks that `needed` bytes of scratch fit both `limit` and the free
    /// space of the file system under `parent` (the system's temporary
    /// directory when `None`), before any directory is made or byte
    /// transferred.
    ///
    /// # Errors
    ///
    /// [`VideoError::ScratchFull`] naming `what`, the need and the limit
    /// (or the free space, when that is smaller).
    pub fn check_need(
        parent: Option<&Path>,
        needed: u64,
        limit: u64,
        what: &str,
    ) -> Result<(), VideoError> {
        if needed > limit {
            return Err(VideoError::ScratchFull {
                what: what.to_owned(),
                needed,
                limit,
            });
        }
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        if let Some(free) = free_space(&parent)
            && needed > free
        {
            return Err(VideoError::ScratchFull {
                what: format!(
                    "{what} (the scratch disk under {} has only {free} bytes free)",
                    parent.display()
                ),
                needed,
                limit: free,
            });
        }
        Ok(())
    }
}

/// The bytes of every file under `dir`.
pub(crate) fn size_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => size_under(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_drop_removes() {
        let scratch = Scratch::create(None, "scratch-test", 100).unwrap();
        let dir = scratch.path().to_owned();
        assert!(dir.is_dir());
        scratch.reserve(60, "a").unwrap();
        let e = scratch.reserve(50, "b").unwrap_err().to_string();
        assert!(e.contains("100"), "{e}");
        std::fs::write(scratch.file("x"), vec![0_u8; 150]).unwrap();
        assert!(scratch.check_usage("output").is_err());
        drop(scratch);
        assert!(!dir.exists());
    }

    #[test]
    fn needs_are_checked_against_the_limit_and_the_free_space() {
        let free = free_space(&std::env::temp_dir()).unwrap();
        assert!(free > 0);
        Scratch::check_need(None, 10, 100, "a split").unwrap();
        let e = Scratch::check_need(None, 300, 100, "a split")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a split") && e.contains("300") && e.contains("100"),
            "{e}"
        );
        let e = Scratch::check_need(None, free.saturating_add(1 << 40), u64::MAX, "a split")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bytes free"), "{e}");
    }
}

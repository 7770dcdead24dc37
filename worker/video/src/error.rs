//! What can go wrong in a video task, and whether retrying can help.

use std::path::PathBuf;

use spool_worker::TaskError;

/// What the libvmaf error tells an operator to do.
pub const LIBVMAF_HINT: &str = "install an FFmpeg built with libvmaf: the imageio-ffmpeg wheel \
     from PyPI ships one, and `bash ops/scripts/setup.sh` installs it and writes SPOOL_FFMPEG \
     into ~/.spool/env";

/// What the missing-FFmpeg error tells an operator to do.
pub const FFMPEG_HINT: &str = "run `bash ops/scripts/setup.sh` (it installs a static FFmpeg with \
     libvmaf from the imageio-ffmpeg wheel and writes SPOOL_FFMPEG into ~/.spool/env), or point \
     --ffmpeg / SPOOL_FFMPEG at an FFmpeg";

/// What the missing-ffprobe error tells an operator to do.
pub const FFPROBE_HINT: &str = "install ffprobe (Debian: `apt-get install ffmpeg`; \
     `bash ops/scripts/setup.sh` does it and writes SPOOL_FFPROBE into ~/.spool/env), \
     or point --ffprobe / SPOOL_FFPROBE at one";

/// A video task's error.
///
/// [`VideoError::is_transient`] says whether a retry may succeed; the
/// conversion into [`TaskError`] follows it, so bad input fails the task at
/// once and a passing fault is retried with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// The task asks for something that cannot work (a CRF out of range,
    /// an odd frame size, an unknown container).
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// A path in the task is outside the worker's roots, or otherwise not
    /// acceptable.
    #[error("{path:?} is rejected: {reason} (root: {root})")]
    Path {
        /// The path as the task gave it.
        path: String,
        /// Why it is rejected.
        reason: String,
        /// The root it was checked against, or the roots' list.
        root: String,
    },
    /// An input file does not exist inside any root.
    #[error("{path:?} not found in {roots}")]
    NotFound {
        /// The path as the task gave it.
        path: String,
        /// The roots searched.
        roots: String,
    },
    /// An input is a playlist or a list of other files (HLS, concat,
    /// DASH), or of another format FFmpeg may not read for a task: such a
    /// demuxer would open paths of its own, outside the roots.
    #[error(
        "input {path:?} is refused: {}; video tasks read media files only ({})",
        match .format {
            Some(format) => format!("FFmpeg would read it as a playlist ({format}), which opens other files"),
            None => "its format is not one video tasks may read".to_owned(),
        },
        crate::formats::INPUT_FORMATS
    )]
    Format {
        /// The input, as the task named it (or as resolved, when FFmpeg
        /// refused it).
        path: String,
        /// The playlist kind detected (`hls`, `concat`, `dash`), if known.
        format: Option<String>,
    },
    /// FFmpeg (or ffprobe) cannot be found or started.
    #[error("{what} is not available: {detail}; {hint}")]
    Missing {
        /// `ffmpeg`, `ffprobe` or `libvmaf`.
        what: &'static str,
        /// What was looked for.
        detail: String,
        /// What to install.
        hint: &'static str,
    },
    /// FFmpeg exited with an error.
    #[error("FFmpeg failed ({status}): {message}")]
    Ffmpeg {
        /// Its exit status, in words.
        status: String,
        /// FFmpeg's first error lines, without its log prefixes.
        message: String,
    },
    /// A file has no video stream (audio only, or a picture).
    #[error("{} has no video stream", .path.display())]
    NoVideo {
        /// The file probed.
        path: PathBuf,
    },
    /// ffprobe could not read a file (not a video, corrupt).
    #[error("ffprobe cannot read {path}: {message}")]
    Probe {
        /// The file probed.
        path: PathBuf,
        /// ffprobe's words, or what was missing from its answer.
        message: String,
    },
    /// The output was written but is not what was asked for.
    #[error("the output {path} failed validation: {message}")]
    Validation {
        /// The output checked.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// FFmpeg's per-frame logs could not be read back.
    #[error("cannot read the {what} log: {message}")]
    Log {
        /// Which log (`libvmaf`, `psnr`, `ssim`).
        what: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The disk (or the quota) holding an output is full.
    #[error("no space left on device writing {}", .path.display())]
    NoSpace {
        /// The output being written.
        path: PathBuf,
    },
    /// The run was cancelled (revoked, a time limit) and FFmpeg stopped.
    #[error("cancelled; FFmpeg was stopped and partial outputs removed")]
    Cancelled,
    /// The worker's configuration is unusable (an `--allow-bucket` that
    /// is no object URL).
    #[error("invalid video configuration: {0}")]
    Config(String),
    /// An object URL outside the worker's allow-list.
    #[error(
        "{url} is outside the buckets this worker may use (allow-list: {allowed}); add it with --allow-bucket"
    )]
    Forbidden {
        /// The URL as the task gave it.
        url: String,
        /// The allow-list, in words.
        allowed: String,
    },
    /// An input object does not exist.
    #[error("{url} not found: {message}")]
    ObjectNotFound {
        /// The object's URL.
        url: String,
        /// The store's words (secrets removed).
        message: String,
    },
    /// The object store failed a request, after its own retries.
    #[error("object storage failed for {url}: {message}")]
    Storage {
        /// The object (or prefix) being transferred.
        url: String,
        /// The store's words (secrets removed).
        message: String,
        /// Whether a later attempt may succeed (the store unreachable or
        /// throttling), as opposed to refused credentials or permissions.
        transient: bool,
    },
    /// A transfer or an output does not fit in the task's scratch limit.
    #[error(
        "the scratch directory's limit is exceeded by the {what}: {needed} bytes needed, {limit} allowed (--scratch-limit)"
    )]
    ScratchFull {
        /// What was being written (`download of s3://…`, `outputs`).
        what: String,
        /// The bytes it needs in all.
        needed: u64,
        /// The limit.
        limit: u64,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl VideoError {
    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// An I/O error writing `path`: [`VideoError::NoSpace`] when the disk
    /// or the quota is full, else [`VideoError::Io`] with `context`.
    pub(crate) fn from_io(
        context: impl Into<String>,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        if is_no_space(&source) {
            Self::NoSpace {
                path: path.to_owned(),
            }
        } else {
            Self::io(context, source)
        }
    }

    /// The worker's check of a task's payload
    /// ([`Transcode::validate`](spool_sdk::video::Transcode::validate) and
    /// its kin) failed: [`VideoError::InvalidTask`] with the reason, failed
    /// for good.
    pub(crate) fn from_validation(error: spool_sdk::Error) -> Self {
        match error {
            spool_sdk::Error::InvalidTask { reason, .. } => Self::InvalidTask(reason),
            other => Self::InvalidTask(other.to_string()),
        }
    }

    /// Whether a retry may succeed: I/O faults (a full disk, a file
    /// system hiccup) and cancellations are transient; bad input, FFmpeg
    /// rejecting a file and missing tools are not.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Io { .. }
                | Self::NoSpace { .. }
                | Self::Cancelled
                | Self::Storage {
                    transient: true,
                    ..
                }
        )
    }

    /// The task error this becomes: [`TaskError::retry`] when
    /// [transient](Self::is_transient), else [`TaskError::fail`]. (Plain
    /// `?` would make every error retryable.)
    #[must_use]
    pub fn into_task_error(self) -> TaskError {
        if self.is_transient() {
            TaskError::retry(self)
        } else {
            TaskError::fail(self)
        }
    }
}

/// Whether `error` is a full disk or quota (`ENOSPC`, `EDQUOT`).
pub(crate) fn is_no_space(error: &std::io::Error) -> bool {
    // 28: ENOSPC, 122: EDQUOT (Linux).
    error.kind() == std::io::ErrorKind::StorageFull
        || matches!(error.raw_os_error(), Some(28 | 122))
}

/// Whether FFmpeg's words say a write failed on a full disk.
pub(crate) fn says_no_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Disk quota exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_worker::TaskErrorKind;

    #[test]
    fn bad_input_fails_and_faults_retry() {
        let bad = VideoError::InvalidTask("crf 70 is above 51".into()).into_task_error();
        assert_eq!(bad.kind(), TaskErrorKind::Fail);
        let ffmpeg = VideoError::Ffmpeg {
            status: "exit status: 1".into(),
            message: "moov atom not found".into(),
        }
        .into_task_error();
        assert_eq!(ffmpeg.kind(), TaskErrorKind::Fail);
        assert!(ffmpeg.message().contains("moov atom not found"));
        let disk =
            VideoError::io("write out.mp4", std::io::Error::other("disk full")).into_task_error();
        assert_eq!(disk.kind(), TaskErrorKind::Retry(None));
        let missing = VideoError::Missing {
            what: "libvmaf",
            detail: "/usr/bin/ffmpeg has no libvmaf filter".into(),
            hint: LIBVMAF_HINT,
        };
        assert!(missing.to_string().contains("imageio-ffmpeg"));
    }
}

//! Where a chunked encode's pieces live between its nodes: its chunk
//! home. A path output keeps them in a directory under the output root
//! (workers share that disk); an object output keeps them under a key
//! prefix beside the output, so nodes on hosts that share no disk pass
//! them through the store, each downloading what it reads into its own
//! bounded scratch directory.
//!
//! ```text
//!  s3://b/out/movie.mp4 ──► home s3://b/out/.spool-chunks/<key>/
//!                              chunk-00000.mp4, chunk-00000.mp4.done, …, audio.mka
//!  /out/movie.mp4       ──► home <output root>/.spool-chunks/<key>/
//! ```

use std::path::PathBuf;

use spool_sdk::video::{ObjectUrl, Transcode, check_key};

use crate::storage::{Place, Scratch};
use crate::{Reporter, StageBand, VideoError, VideoTasks};
use spool_worker::TaskContext;

/// A chunked encode's chunk home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Home {
    /// A directory under the output root, created.
    Local(PathBuf),
    /// A key prefix beside the output, inside the allow-list.
    Object(ObjectUrl),
}

/// A chunked encode's input, output and chunk home, checked (roots,
/// allow-list, key rules) before anything is transferred.
#[derive(Debug, Clone)]
pub(super) struct Places {
    pub(super) input: Place,
    pub(super) output: Place,
    pub(super) home: Home,
}

/// Runs one node of a chunked encode (chunk, audio, join): checks its
/// encode settings, places it, and runs `work` with a scratch directory
/// of its own when it moves objects, removed however the run ends: after
/// `work` on success and failure, by `Drop` when the run is revoked.
///
/// # Errors
///
/// A bad encode, as [`Places::new`] and [`Places::scratch`], or `work`'s.
pub(super) async fn run_node<T>(
    tasks: &VideoTasks,
    ctx: &TaskContext,
    encode: &Transcode,
    key: &str,
    tag: &str,
    work: impl AsyncFnOnce(&Reporter, &Places, Option<&Scratch>) -> Result<T, VideoError>,
) -> Result<T, VideoError> {
    let reporter = Reporter::new(ctx);
    reporter.stage(&StageBand::PROBING);
    encode.validate().map_err(VideoError::from_validation)?;
    let places = Places::new(tasks, encode, key)?;
    let scratch = places.scratch(tasks, tag)?;
    let result = work(&reporter, &places, scratch.as_ref()).await;
    if let Some(scratch) = scratch {
        scratch.cleanup().await;
    }
    result
}

impl Places {
    /// Places `encode`'s input and output and the home of `key`.
    ///
    /// # Errors
    ///
    /// [`VideoError::InvalidTask`] for a bad key or an output over the
    /// input; [`VideoError::Forbidden`] for a URL (or a home) outside the
    /// allow-list; [`VideoError::Path`] for a path outside the roots.
    pub(super) fn new(
        tasks: &VideoTasks,
        encode: &Transcode,
        key: &str,
    ) -> Result<Self, VideoError> {
        check_key(key).map_err(VideoError::InvalidTask)?;
        let (storage, roots) = (tasks.storage(), tasks.roots());
        let input = storage.place(&encode.input, |p| roots.input(p))?;
        let output = storage.place(&encode.output, |p| roots.output(p))?;
        if input == output {
            return Err(VideoError::InvalidTask(
                "the output would overwrite the input".to_owned(),
            ));
        }
        let home = match &output {
            Place::Local(_) => Home::Local(super::chunk_dir(tasks, key)?),
            Place::Object(url) => {
                let home = object_home(url, key)?;
                storage.allowed().allow(&home)?;
                Home::Object(home)
            }
        };
        Ok(Self {
            input,
            output,
            home,
        })
    }

    /// Whether a node needs a scratch directory: an object to download or
    /// to upload.
    pub(super) fn uses_objects(&self) -> bool {
        matches!(self.input, Place::Object(_)) || matches!(self.home, Home::Object(_))
    }

    /// A scratch directory for one node's run when it
    /// [uses objects](Self::uses_objects).
    ///
    /// # Errors
    ///
    /// As [`Scratch::create`].
    pub(super) fn scratch(
        &self,
        tasks: &VideoTasks,
        tag: &str,
    ) -> Result<Option<Scratch>, VideoError> {
        if self.uses_objects() {
            tasks
                .storage()
                .scratch(tasks.config().scratch_dir.as_deref(), tag)
                .map(Some)
        } else {
            Ok(None)
        }
    }

    /// The input as a local path: itself, or downloaded into `scratch`.
    ///
    /// # Errors
    ///
    /// As the download.
    pub(super) async fn input_path(
        &self,
        tasks: &VideoTasks,
        scratch: Option<&Scratch>,
        reporter: &Reporter,
    ) -> Result<PathBuf, VideoError> {
        tasks
            .storage()
            .local_path(
                &self.input,
                scratch,
                "input",
                reporter,
                StageBand::DOWNLOADING,
            )
            .await
    }

    /// The input's size in bytes (a HEAD for an object), before anything
    /// is downloaded.
    ///
    /// # Errors
    ///
    /// [`VideoError::ObjectNotFound`] for a missing object; the store's
    /// and the file system's errors.
    pub(super) async fn input_size(&self, tasks: &VideoTasks) -> Result<u64, VideoError> {
        match &self.input {
            Place::Local(path) => std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| VideoError::io(format!("cannot read {}", path.display()), e)),
            Place::Object(url) => {
                tasks
                    .storage()
                    .size_of(url)
                    .await?
                    .ok_or_else(|| VideoError::ObjectNotFound {
                        url: url.to_string(),
                        message: "no such object".to_owned(),
                    })
            }
        }
    }

    /// The most scratch one node of this encode needs, for a source of
    /// `source` bytes: the join's, which holds the downloaded source, every
    /// chunk and the joined output before its upload. The encoded chunks
    /// are counted at the source's size: an estimate (an encode is most
    /// often smaller than its source; a lossless one may not be).
    pub(super) fn scratch_need(&self, source: u64) -> u64 {
        let mut need = 0_u64;
        if matches!(self.input, Place::Object(_)) {
            need = need.saturating_add(source);
        }
        if matches!(self.home, Home::Object(_)) {
            need = need.saturating_add(source);
        }
        if matches!(self.output, Place::Object(_)) {
            need = need.saturating_add(source);
        }
        need
    }
}

/// The home of `key` beside the object output `output`:
/// `<output's prefix>/.spool-chunks/<key>`.
fn object_home(output: &ObjectUrl, key: &str) -> Result<ObjectUrl, VideoError> {
    let prefix = output.key.rsplit_once('/').map_or("", |(dir, _)| dir);
    let beside = ObjectUrl {
        scheme: output.scheme,
        bucket: output.bucket.clone(),
        key: prefix.to_owned(),
    };
    beside
        .join(&format!("{}/{key}", super::CHUNKS_DIR))
        .map_err(|reason| VideoError::Path {
            path: format!("{beside}/{}/{key}", super::CHUNKS_DIR),
            reason,
            root: "object keys".to_owned(),
        })
}

/// The object for `file` in the home `home`.
///
/// # Errors
///
/// [`VideoError::Path`] for a name that makes no key (never, for the
/// worker's own names).
pub(super) fn object_in(home: &ObjectUrl, file: &str) -> Result<ObjectUrl, VideoError> {
    home.join(file).map_err(|reason| VideoError::Path {
        path: format!("{home}/{file}"),
        reason,
        root: home.to_string(),
    })
}

/// The `.done` marker of the object for `file`: written after the object
/// is uploaded whole, holding its size.
pub(super) fn marker_of(file: &str) -> String {
    format!("{file}.done")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_homes_sit_beside_the_output() {
        let out = ObjectUrl::parse("s3://media/out/movie.mp4").unwrap();
        let home = object_home(&out, "wf-1").unwrap();
        assert_eq!(home.to_string(), "s3://media/out/.spool-chunks/wf-1");
        let top = ObjectUrl::parse("s3://media/movie.mp4").unwrap();
        assert_eq!(
            object_home(&top, "k").unwrap().to_string(),
            "s3://media/.spool-chunks/k"
        );
        assert_eq!(
            object_in(&home, "chunk-00001.mp4").unwrap().to_string(),
            "s3://media/out/.spool-chunks/wf-1/chunk-00001.mp4"
        );
        assert!(object_in(&home, "../x").is_err());
        assert_eq!(marker_of("chunk-00001.mp4"), "chunk-00001.mp4.done");
    }

    #[test]
    fn a_home_outside_the_allow_list_is_refused() {
        let out = ObjectUrl::parse("s3://media/out/movie.mp4").unwrap();
        let home = object_home(&out, "k").unwrap();
        let prefix = crate::storage::AllowList::new(&["s3://media/out".to_owned()]).unwrap();
        assert!(prefix.allow(&home).is_ok());
        let exact =
            crate::storage::AllowList::new(&["s3://media/out/movie.mp4".to_owned()]).unwrap();
        let e = exact.allow(&home).unwrap_err().to_string();
        assert!(e.contains("s3://media/out/.spool-chunks/k"), "{e}");
    }

    #[test]
    fn the_scratch_need_counts_what_a_join_holds() {
        let object = |key: &str| Place::Object(ObjectUrl::parse(key).unwrap());
        let both = Places {
            input: object("s3://in/a.mp4"),
            output: object("s3://out/b.mp4"),
            home: Home::Object(ObjectUrl::parse("s3://out/.spool-chunks/k").unwrap()),
        };
        assert!(both.uses_objects());
        assert_eq!(both.scratch_need(100), 300);
        let download_only = Places {
            input: object("s3://in/a.mp4"),
            output: Place::Local(PathBuf::from("/o/b.mp4")),
            home: Home::Local(PathBuf::from("/o/.spool-chunks/k")),
        };
        assert_eq!(download_only.scratch_need(100), 100);
        let local = Places {
            input: Place::Local(PathBuf::from("/i/a.mp4")),
            ..download_only
        };
        assert!(!local.uses_objects());
        assert_eq!(local.scratch_need(100), 0);
    }
}

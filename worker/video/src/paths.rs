//! Confining task paths to the worker's roots.
//!
//! A task names files as strings; none reaches FFmpeg before it is
//! resolved here. A relative path is joined to a root, an absolute one must
//! lie inside a root, and either is rejected if it has a `..` component or
//! a NUL byte, or if a symlink on its way leads out of the root (the
//! existing part of the path is canonicalized, so links are followed
//! before the check). What comes out is absolute and canonical, so FFmpeg
//! can only read it as a plain file path.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::VideoError;

/// The directories a worker's video tasks may read and write.
///
/// # Examples
///
/// ```no_run
/// use spool_video::Roots;
///
/// # fn demo() -> Result<(), spool_video::VideoError> {
/// let roots = Roots::new(&["/srv/uploads".into()], "/srv/encodes".as_ref())?;
/// let input = roots.input("cats/cat.mov")?; // /srv/uploads/cats/cat.mov
/// let output = roots.output("cats/cat-720p.mp4")?; // creates /srv/encodes/cats
/// assert!(roots.input("../etc/passwd").is_err());
/// # let _ = (input, output); Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    inputs: Vec<PathBuf>,
    output: PathBuf,
}

impl Roots {
    /// Canonicalizes the roots; creates the output root if it is missing.
    ///
    /// # Errors
    ///
    /// [`VideoError::Io`] when an input root does not exist or the output
    /// root cannot be created or written.
    pub fn new(input_roots: &[PathBuf], output_root: &Path) -> Result<Self, VideoError> {
        std::fs::create_dir_all(output_root).map_err(|e| {
            VideoError::io(
                format!("cannot create the output root {}", output_root.display()),
                e,
            )
        })?;
        let output = canonical(output_root, "output root")?;
        // A root that exists but refuses writes would fail every task.
        let check = output.join(format!(
            ".spool-write-check-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::write(&check, b"")
            .and_then(|()| std::fs::remove_file(&check))
            .map_err(|e| {
                VideoError::io(
                    format!("cannot write in the output root {}", output.display()),
                    e,
                )
            })?;
        let mut inputs = Vec::with_capacity(input_roots.len());
        for root in input_roots {
            let root = canonical(root, "input root")?;
            if !inputs.contains(&root) {
                inputs.push(root);
            }
        }
        Ok(Self { inputs, output })
    }

    /// The input roots, canonical.
    #[must_use]
    pub fn input_roots(&self) -> &[PathBuf] {
        &self.inputs
    }

    /// The output root, canonical.
    #[must_use]
    pub fn output_root(&self) -> &Path {
        &self.output
    }

    /// The roots inputs may come from: the input roots, then the output
    /// root (so a task can read what an earlier one wrote).
    fn readable(&self) -> impl Iterator<Item = &PathBuf> {
        self.inputs
            .iter()
            .chain(std::iter::once(&self.output).filter(|o| !self.inputs.contains(o)))
    }

    fn readable_list(&self) -> String {
        let mut out = String::new();
        for (i, root) in self.readable().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}", root.display());
        }
        out
    }

    /// Resolves an input: an existing file inside a readable root, which
    /// is not a playlist or a list of other files.
    ///
    /// # Errors
    ///
    /// [`VideoError::Path`] for a path that is empty, has `..` or NUL, or
    /// leads outside the roots (symlinks included); [`VideoError::NotFound`]
    /// when no root holds it; [`VideoError::Format`] for an HLS playlist,
    /// a concat list or a DASH manifest, whatever its name.
    pub fn input(&self, path: &str) -> Result<PathBuf, VideoError> {
        let candidate = lexical_check(path, &self.readable_list())?;
        if candidate.is_absolute() {
            let Some(root) = self.readable().find(|root| candidate.starts_with(root)) else {
                // Maybe the root itself was named through a symlink:
                // canonicalize and check again.
                let real = existing(&candidate, path, &self.readable_list())?;
                return match self.readable().find(|root| real.starts_with(root)) {
                    Some(_) => regular_file(real, path),
                    None => Err(reject(
                        path,
                        "it is outside every root",
                        &self.readable_list(),
                    )),
                };
            };
            let real = existing(&candidate, path, &self.readable_list())?;
            if !real.starts_with(root) {
                return Err(reject(path, "a symlink leads outside the root", root));
            }
            return regular_file(real, path);
        }
        for root in self.readable() {
            let joined = root.join(&candidate);
            match std::fs::canonicalize(&joined) {
                Ok(real) if real.starts_with(root) => return regular_file(real, path),
                Ok(_) => return Err(reject(path, "a symlink leads outside the root", root)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(VideoError::io(
                        format!("cannot resolve {}", joined.display()),
                        e,
                    ));
                }
            }
        }
        Err(VideoError::NotFound {
            path: path.to_owned(),
            roots: self.readable_list(),
        })
    }

    /// Resolves an output file inside the output root and creates its
    /// parent directories there.
    ///
    /// # Errors
    ///
    /// [`VideoError::Path`] for a path that is empty, has `..` or NUL,
    /// names the root itself or a directory, or leads outside the output
    /// root (symlinks included); [`VideoError::Io`] when its directory
    /// cannot be created.
    pub fn output(&self, path: &str) -> Result<PathBuf, VideoError> {
        self.output_path(path, false)
    }

    /// Resolves an output directory (for a packager's playlists and
    /// segments) inside the output root, and creates it.
    ///
    /// # Errors
    ///
    /// As [`Roots::output`].
    pub fn output_dir(&self, path: &str) -> Result<PathBuf, VideoError> {
        self.output_path(path, true)
    }

    fn output_path(&self, path: &str, directory: bool) -> Result<PathBuf, VideoError> {
        let root = &self.output;
        let candidate = lexical_check(path, root)?;
        let relative = if candidate.is_absolute() {
            match candidate.strip_prefix(root) {
                Ok(rest) => rest.to_owned(),
                Err(_) => return Err(reject(path, "it is outside the output root", root)),
            }
        } else {
            candidate
        };
        let Some(name) = relative.file_name().map(OsStr::to_owned) else {
            return Err(reject(path, "it names the output root itself", root));
        };
        let parent = relative
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf);
        // Check the existing part before creating anything, so a symlink
        // out of the root never gets directories made through it.
        let deepest = deepest_existing(&root.join(&parent));
        let real = canonical(&deepest, "output directory")?;
        if !real.starts_with(root) {
            return Err(reject(
                path,
                "a symlink leads outside the output root",
                root,
            ));
        }
        let dir = root.join(&parent);
        std::fs::create_dir_all(&dir)
            .map_err(|e| VideoError::io(format!("cannot create {}", dir.display()), e))?;
        let dir = canonical(&dir, "output directory")?;
        if !dir.starts_with(root) {
            return Err(reject(
                path,
                "a symlink leads outside the output root",
                root,
            ));
        }
        let target = dir.join(name);
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(reject(path, "it is a symlink", root));
            }
            Ok(meta) if meta.is_dir() && !directory => {
                return Err(reject(path, "it is a directory", root));
            }
            Ok(meta) if !meta.is_dir() && directory => {
                return Err(reject(path, "it is a file, not a directory", root));
            }
            _ => {}
        }
        if directory {
            std::fs::create_dir_all(&target)
                .map_err(|e| VideoError::io(format!("cannot create {}", target.display()), e))?;
        }
        Ok(target)
    }
}

/// Rejects what no root may hold: empty paths, NUL bytes, `..`.
fn lexical_check(path: &str, root: impl DisplayPath) -> Result<PathBuf, VideoError> {
    if path.trim().is_empty() {
        return Err(reject(path, "it is empty", root));
    }
    if path.contains('\0') {
        return Err(reject(path, "it contains a NUL byte", root));
    }
    let candidate = Path::new(path);
    if candidate
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(reject(path, "`..` is not allowed", root));
    }
    // Drop `.` components so prefix checks compare like with like.
    Ok(candidate
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect())
}

/// The path canonicalized; a missing file is `NotFound`.
fn existing(candidate: &Path, path: &str, roots: &str) -> Result<PathBuf, VideoError> {
    std::fs::canonicalize(candidate).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            VideoError::NotFound {
                path: path.to_owned(),
                roots: roots.to_owned(),
            }
        } else {
            VideoError::io(format!("cannot resolve {}", candidate.display()), e)
        }
    })
}

/// Inputs must be files (FFmpeg would read a FIFO or device forever), and
/// not playlists or lists whose demuxer would open other files.
fn regular_file(real: PathBuf, path: &str) -> Result<PathBuf, VideoError> {
    if real.is_file() {
        crate::formats::refuse_playlist(&real, path)?;
        Ok(real)
    } else {
        Err(VideoError::InvalidTask(format!(
            "input {path:?} is not a regular file"
        )))
    }
}

/// The deepest ancestor of `path` (itself included) that exists.
fn deepest_existing(path: &Path) -> PathBuf {
    let mut current = path;
    loop {
        if std::fs::symlink_metadata(current).is_ok() {
            return current.to_owned();
        }
        match current.parent() {
            Some(parent) => current = parent,
            None => return current.to_owned(),
        }
    }
}

fn canonical(path: &Path, what: &str) -> Result<PathBuf, VideoError> {
    std::fs::canonicalize(path)
        .map_err(|e| VideoError::io(format!("cannot resolve the {what} {}", path.display()), e))
}

/// Something that names a root in an error.
trait DisplayPath {
    fn display_path(&self) -> String;
}

impl DisplayPath for &Path {
    fn display_path(&self) -> String {
        self.display().to_string()
    }
}

impl DisplayPath for &PathBuf {
    fn display_path(&self) -> String {
        self.display().to_string()
    }
}

impl DisplayPath for &String {
    fn display_path(&self) -> String {
        (*self).clone()
    }
}

fn reject(path: &str, reason: &str, root: impl DisplayPath) -> VideoError {
    VideoError::Path {
        path: path.to_owned(),
        reason: reason.to_owned(),
        root: root.display_path(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spool-roots-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn inputs_stay_inside_their_roots() {
        let base = scratch();
        let (uploads, out) = (base.join("uploads"), base.join("out"));
        std::fs::create_dir_all(uploads.join("a")).unwrap();
        std::fs::write(uploads.join("a/clip.mp4"), b"x").unwrap();
        std::fs::write(base.join("secret.mp4"), b"x").unwrap();
        let roots = Roots::new(std::slice::from_ref(&uploads), &out).unwrap();
        let real = std::fs::canonicalize(uploads.join("a/clip.mp4")).unwrap();
        assert_eq!(roots.input("a/clip.mp4").unwrap(), real);
        assert_eq!(roots.input("./a/clip.mp4").unwrap(), real);
        assert_eq!(roots.input(real.to_str().unwrap()).unwrap(), real);

        let e = roots.input("../secret.mp4").unwrap_err().to_string();
        assert!(e.contains("`..`") && e.contains("uploads"), "{e}");
        let outside = base.join("secret.mp4");
        let e = roots
            .input(outside.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside every root"), "{e}");
        assert!(matches!(
            roots.input("a/missing.mp4"),
            Err(VideoError::NotFound { .. })
        ));
        assert!(roots.input("a\0b").is_err());
        assert!(roots.input("").is_err());
        assert!(roots.input("a").is_err(), "a directory is not an input");

        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, uploads.join("escape.mp4")).unwrap();
            let e = roots.input("escape.mp4").unwrap_err().to_string();
            assert!(e.contains("symlink"), "{e}");
            std::os::unix::fs::symlink(&base, uploads.join("up")).unwrap();
            let e = roots.input("up/secret.mp4").unwrap_err().to_string();
            assert!(e.contains("symlink"), "{e}");
        }
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn outputs_stay_inside_the_output_root() {
        let base = scratch();
        let out = base.join("out");
        let roots = Roots::new(&[], &out).unwrap();
        let root = roots.output_root().to_owned();
        let written = roots.output("a/b/clip.mp4").unwrap();
        assert_eq!(written, root.join("a/b/clip.mp4"));
        assert!(root.join("a/b").is_dir());
        assert_eq!(
            roots.output(root.join("c.mp4").to_str().unwrap()).unwrap(),
            root.join("c.mp4")
        );
        assert!(roots.output("../c.mp4").is_err());
        assert!(roots.output("/tmp/c.mp4").is_err());
        assert!(roots.output(".").is_err());
        assert!(roots.output("a").is_err(), "a directory is not a file");
        assert_eq!(roots.output_dir("hls/cat").unwrap(), root.join("hls/cat"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&base, root.join("up")).unwrap();
            let e = roots.output("up/new/x.mp4").unwrap_err().to_string();
            assert!(e.contains("symlink"), "{e}");
            assert!(!base.join("new").exists(), "nothing is created outside");
        }
        // What an earlier task wrote is readable.
        std::fs::write(&written, b"x").unwrap();
        assert_eq!(roots.input("a/b/clip.mp4").unwrap(), written);
        std::fs::remove_dir_all(base).unwrap();
    }
}

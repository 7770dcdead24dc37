//! Where a video task reads or writes: a path under the worker's roots, or
//! an object in a bucket (`s3://`, `gs://`, `az://`).
//!
//! A [`Location`] is plain data: the task's text, sent as a string (so
//! payloads written before object storage existed, with plain paths,
//! decode unchanged). [`Location::parse`] says which kind it is and
//! rejects what no worker may accept: an unknown scheme, an empty bucket,
//! keys with `.`/`..` segments, empty segments (`//`), a leading `/`,
//! backslashes, `%` escapes, query or fragment marks and control
//! characters. The worker parses again before any transfer and checks the
//! bucket against its allow-list (`--allow-bucket`).

use std::ffi::OsStr;
use std::fmt;
use std::ops::Deref;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A task's input or output: a path, or an object URL.
///
/// # Examples
///
/// ```
/// use spool_sdk::video::{Location, Parsed, Scheme};
///
/// let local = Location::from("uploads/cat.mov");
/// assert!(matches!(local.parse(), Ok(Parsed::Path(_))));
///
/// let object = Location::from("s3://media/uploads/cat.mov");
/// match object.parse()? {
///     Parsed::Object(url) => {
///         assert_eq!((url.scheme, url.bucket.as_str(), url.key.as_str()), (Scheme::S3, "media", "uploads/cat.mov"));
///     }
///     Parsed::Path(_) => unreachable!(),
/// }
/// assert!(Location::from("s3://media/../secrets/key").parse().is_err());
/// assert!(Location::from("s3://media//etc/passwd").parse().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Location(String);

/// An object store's URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// Amazon S3 and S3-compatible stores: `s3://bucket/key`.
    S3,
    /// Google Cloud Storage: `gs://bucket/key`.
    Gcs,
    /// Azure Blob Storage: `az://container/key`.
    Azure,
}

impl Scheme {
    /// The scheme as written in URLs: `s3`, `gs` or `az`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Gcs => "gs",
            Self::Azure => "az",
        }
    }

    fn from_prefix(scheme: &str) -> Option<Self> {
        match scheme {
            "s3" => Some(Self::S3),
            "gs" => Some(Self::Gcs),
            "az" => Some(Self::Azure),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An object URL, checked: a scheme, a bucket (or Azure container) and a
/// key of plain `/`-separated segments (empty for a bucket's root).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    /// The store.
    pub scheme: Scheme,
    /// The bucket, or the Azure container.
    pub bucket: String,
    /// The key, without a leading or trailing `/`.
    pub key: String,
}

impl ObjectUrl {
    /// Parses `scheme://bucket/key`; a trailing `/` is dropped (output
    /// directories are written that way).
    ///
    /// # Errors
    ///
    /// The reason, in words, for a URL no worker accepts.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{url:?} is not an object URL (scheme://bucket/key)"
            ));
        };
        let scheme = Scheme::from_prefix(scheme).ok_or_else(|| {
            format!("the scheme {scheme:?} is not supported: use s3://, gs:// or az://, or a path")
        })?;
        if let Some(bad) = rest
            .chars()
            .find(|c| c.is_control() || matches!(c, '\\' | '%' | '?' | '#'))
        {
            return Err(format!(
                "{bad:?} is not allowed in an object URL (no escapes, queries or control characters)"
            ));
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        let key = key.strip_suffix('/').unwrap_or(key);
        if !key.is_empty() {
            for segment in key.split('/') {
                match segment {
                    "" => {
                        return Err(
                            "empty key segments (`//`, a leading `/`) are not allowed".to_owned()
                        );
                    }
                    "." | ".." => return Err(format!("`{segment}` is not allowed in a key")),
                    _ => {}
                }
            }
        }
        if key.len() > 1024 {
            return Err("the key is longer than 1024 bytes".to_owned());
        }
        Ok(Self {
            scheme,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// This URL with `name` (checked `/`-separated segments) appended to
    /// its key.
    ///
    /// # Errors
    ///
    /// As [`ObjectUrl::parse`], for a `name` with bad segments.
    pub fn join(&self, name: &str) -> Result<Self, String> {
        let joined = if self.key.is_empty() {
            format!("{}://{}/{name}", self.scheme, self.bucket)
        } else {
            format!("{}://{}/{}/{name}", self.scheme, self.bucket, self.key)
        };
        Self::parse(&joined)
    }

    /// Whether `self` is `prefix` or lies under it, at a segment boundary
    /// (`s3://b/a` covers `s3://b/a/x` but not `s3://b/ab`).
    #[must_use]
    pub fn starts_with(&self, prefix: &Self) -> bool {
        self.scheme == prefix.scheme
            && self.bucket == prefix.bucket
            && (prefix.key.is_empty()
                || self.key == prefix.key
                || self
                    .key
                    .strip_prefix(&prefix.key)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}://{}", self.scheme, self.bucket)
        } else {
            write!(f, "{}://{}/{}", self.scheme, self.bucket, self.key)
        }
    }
}

/// Bucket names as S3, GCS and Azure allow them, roughly: 1 to 222 of
/// `a-z 0-9 . - _`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if bucket.is_empty() {
        return Err("the bucket is empty".to_owned());
    }
    if bucket.len() > 222
        || !bucket.chars().all(ok_char)
        || !edge(bucket.chars().next())
        || !edge(bucket.chars().last())
        || bucket.contains("..")
    {
        return Err(format!(
            "{bucket:?} is not a bucket name (a-z, 0-9, `.`, `-`, `_`, starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// What a [`Location`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A path, checked by the worker against its roots.
    Path(&'a str),
    /// An object, checked by the worker against its allow-list.
    Object(ObjectUrl),
}

impl Location {
    /// A location from a task's text; see [`Location::parse`] for what it
    /// names.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text, as the task gave it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it looks like a URL (`scheme://`), which is never a path.
    #[must_use]
    pub fn is_url(&self) -> bool {
        self.0.contains("://")
    }

    /// Which kind of location this is, checked: a path (empty and NUL
    /// bytes rejected; the worker confines it to its roots) or an object
    /// URL ([`ObjectUrl::parse`]).
    ///
    /// # Errors
    ///
    /// The reason, in words.
    pub fn parse(&self) -> Result<Parsed<'_>, String> {
        if self.is_url() {
            return ObjectUrl::parse(&self.0).map(Parsed::Object);
        }
        if self.0.trim().is_empty() {
            return Err("path is empty".to_owned());
        }
        if self.0.contains('\0') {
            return Err("path contains a NUL byte".to_owned());
        }
        Ok(Parsed::Path(&self.0))
    }
}

impl Deref for Location {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Location {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<OsStr> for Location {
    fn as_ref(&self) -> &OsStr {
        OsStr::new(&self.0)
    }
}

impl AsRef<Path> for Location {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Location {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Location {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<&String> for Location {
    fn from(text: &String) -> Self {
        Self(text.clone())
    }
}

impl From<Location> for String {
    fn from(location: Location) -> Self {
        location.0
    }
}

impl PartialEq<str> for Location {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Location {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> ObjectUrl {
        match Location::from(text).parse() {
            Ok(Parsed::Object(url)) => url,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn object_urls_parse() {
        let url = object("gs://media-1/a/b.mp4");
        assert_eq!(
            (url.scheme, url.bucket.as_str(), url.key.as_str()),
            (Scheme::Gcs, "media-1", "a/b.mp4")
        );
        assert_eq!(url.to_string(), "gs://media-1/a/b.mp4");
        assert_eq!(object("az://c/dir/").key, "dir");
        assert_eq!(object("s3://bucket").key, "");
        assert_eq!(
            object("s3://b/x")
                .join("hls/master.m3u8")
                .unwrap()
                .to_string(),
            "s3://b/x/hls/master.m3u8"
        );
    }

    #[test]
    fn tricks_are_rejected() {
        for bad in [
            "s3://b/../x",
            "s3://b/a/./x",
            "s3://b//x",
            "s3://b/a//x",
            "s3:///x",
            "s3://B/x",
            "s3://b/a%2F..%2Fx",
            "s3://b/a\\..\\x",
            "s3://b/a?x=1",
            "s3://b/a#x",
            "s3://b/a\nb",
            "http://host/x",
            "file:///etc/passwd",
            "",
            "a\0b",
        ] {
            assert!(
                Location::from(bad).parse().is_err(),
                "{bad:?} must be rejected"
            );
        }
        assert!(object("s3://b/x").join("../y").is_err());
    }

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        let prefix = object("s3://b/in");
        assert!(object("s3://b/in/x.mp4").starts_with(&prefix));
        assert!(object("s3://b/in").starts_with(&prefix));
        assert!(!object("s3://b/inbox/x.mp4").starts_with(&prefix));
        assert!(!object("s3://c/in/x.mp4").starts_with(&prefix));
        assert!(!object("gs://b/in/x.mp4").starts_with(&prefix));
        assert!(object("s3://b/anything").starts_with(&object("s3://b")));
    }

    #[test]
    fn old_payloads_with_paths_decode() {
        let decoded: Location = serde_json::from_str("\"clips/cat.mp4\"").unwrap();
        assert_eq!(decoded, "clips/cat.mp4");
        assert_eq!(
            serde_json::to_string(&Location::from("s3://b/k")).unwrap(),
            "\"s3://b/k\""
        );
    }
}

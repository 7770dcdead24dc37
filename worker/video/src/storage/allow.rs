//! The buckets and prefixes a worker's video tasks may read and write: the
//! object-storage form of its input and output roots.

use std::fmt;

use spool_sdk::video::ObjectUrl;

use crate::VideoError;

/// The allow-list (`--allow-bucket s3://bucket/prefix`, repeatable): an
/// object URL is accepted only under one of its entries, at a segment
/// boundary. Empty: no object URL is accepted.
///
/// # Examples
///
/// ```
/// use spool_video::storage::AllowList;
///
/// let allowed = AllowList::new(&["s3://media/uploads".to_owned()])?;
/// assert!(allowed.check("s3://media/uploads/cat.mov").is_ok());
/// assert!(allowed.check("s3://media/private/key.pem").is_err());
/// # Ok::<(), spool_video::VideoError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<ObjectUrl>,
}

impl AllowList {
    /// Parses each entry (`s3://`, `gs://` or `az://`, a bucket, an
    /// optional key prefix).
    ///
    /// # Errors
    ///
    /// [`VideoError::Config`] naming the entry that is no object URL.
    pub fn new(entries: &[String]) -> Result<Self, VideoError> {
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            let url = ObjectUrl::parse(entry.trim()).map_err(|reason| {
                VideoError::Config(format!("--allow-bucket {entry:?}: {reason}"))
            })?;
            if !parsed.contains(&url) {
                parsed.push(url);
            }
        }
        Ok(Self { entries: parsed })
    }

    /// Whether no object URL is allowed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries.
    #[must_use]
    pub fn entries(&self) -> &[ObjectUrl] {
        &self.entries
    }

    /// Parses `url` and checks it against the list.
    ///
    /// # Errors
    ///
    /// [`VideoError::Path`] for a URL with a bad key or bucket;
    /// [`VideoError::Forbidden`], naming the list, for one outside it.
    pub fn check(&self, url: &str) -> Result<ObjectUrl, VideoError> {
        let parsed = ObjectUrl::parse(url).map_err(|reason| VideoError::Path {
            path: url.to_owned(),
            reason,
            root: self.to_string(),
        })?;
        self.allow(&parsed)?;
        Ok(parsed)
    }

    /// Checks a parsed URL against the list.
    ///
    /// # Errors
    ///
    /// [`VideoError::Forbidden`], naming the list, when no entry covers it.
    pub fn allow(&self, url: &ObjectUrl) -> Result<(), VideoError> {
        if self.entries.iter().any(|prefix| url.starts_with(prefix)) {
            Ok(())
        } else {
            Err(VideoError::Forbidden {
                url: url.to_string(),
                allowed: self.to_string(),
            })
        }
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("none: the worker has no --allow-bucket");
        }
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_outside_the_list_are_forbidden_naming_it() {
        let list = AllowList::new(&["s3://in/up".to_owned(), "gs://out".to_owned()]).unwrap();
        assert!(list.check("s3://in/up/a.mp4").is_ok());
        assert!(list.check("gs://out/x/y.mp4").is_ok());
        let e = list.check("s3://in/upx/a.mp4").unwrap_err().to_string();
        assert!(e.contains("s3://in/up, gs://out"), "{e}");
        assert!(matches!(
            list.check("s3://in/up/../secret"),
            Err(VideoError::Path { .. })
        ));
        let none = AllowList::default();
        assert!(
            none.check("s3://in/up/a.mp4")
                .unwrap_err()
                .to_string()
                .contains("--allow-bucket")
        );
        assert!(AllowList::new(&["/srv/x".to_owned()]).is_err());
    }
}

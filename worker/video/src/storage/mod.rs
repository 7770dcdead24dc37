//! Object storage for the video tasks: `s3://`, `gs://` and `az://`
//! inputs and outputs, through the `object_store` crate (signing,
//! multipart uploads, retries with backoff and each cloud's credential
//! chain are its own; none is written here).
//!
//! ```text
//!  task URL ─► AllowList (before any transfer) ─► download into Scratch ─► FFmpeg (file paths only)
//!                                                   (bounded, removed)        │
//!                    upload (multipart, concurrent, HEAD-checked) ◄───────────┘
//! ```
//!
//! - [`AllowList`]: the buckets and prefixes a worker may touch.
//! - [`Scratch`]: the task's bounded scratch directory, removed on every
//!   ending (cleanup on success or failure, `Drop` on revoke and time
//!   limits).
//! - [`ObjectStorage`]: the stores, one per bucket, built from the
//!   environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) so credentials are never
//!   in a task or a setting; downloads and uploads with progress.
//!   For a chunked encode's pieces it also HEADs an object's size, writes
//!   and reads small `.done` marker objects, and deletes a key prefix.
//!
//! Credentials never appear in errors: the store's messages are passed
//! through [`redact`], which drops URL query strings (where Azure SAS
//! tokens travel) and userinfo.

mod allow;
mod objects;
mod scratch;
mod transfer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{BackoffConfig, RetryConfig};
use spool_sdk::video::{ObjectUrl, Scheme};

pub use self::allow::AllowList;
pub use self::scratch::{Scratch, free_space};
pub use self::transfer::redact;

use crate::VideoError;

/// How a worker uses object storage.
///
/// # Examples
///
/// ```
/// use spool_video::storage::StorageConfig;
///
/// let config = StorageConfig {
///     allowed_buckets: vec!["s3://media/uploads".into(), "s3://media/encodes".into()],
///     ..StorageConfig::default()
/// };
/// assert_eq!(config.scratch_limit, 20 << 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The buckets and key prefixes tasks may read and write
    /// (`s3://bucket/prefix`, `gs://…`, `az://container/…`). Default:
    /// none, so no object URL is accepted.
    pub allowed_buckets: Vec<String>,
    /// The most bytes one task's scratch directory may hold (downloads and
    /// outputs). Default: 20 GiB.
    pub scratch_limit: u64,
    /// Extra `object_store` settings applied over the environment, as
    /// `(key, value)`: `aws_endpoint`, `aws_allow_http`, `aws_region`…
    /// Credentials belong in the environment or the cloud's credential
    /// chain, not here. Default: none.
    pub options: Vec<(String, String)>,
    /// Retries of one failed request inside the task (with exponential
    /// backoff from 100 ms to 15 s), before the task's own retry.
    /// Default: 10.
    pub max_retries: usize,
    /// How long one request keeps being retried. Default: 3 min.
    pub retry_timeout: Duration,
    /// Parts (and files of a package) uploaded at once. Default: 8.
    pub upload_concurrency: usize,
    /// The part size of multipart uploads; files at least this large are
    /// uploaded in parts, smaller ones in one request. S3 refuses parts
    /// under 5 MiB (but the last) when the upload completes. Default:
    /// 8 MiB.
    pub part_size: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            allowed_buckets: Vec::new(),
            scratch_limit: 20 << 30,
            options: Vec::new(),
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            upload_concurrency: 8,
            part_size: 8 << 20,
        }
    }
}

/// The smallest part this worker sends, whatever the setting says.
const MIN_PART_SIZE: usize = 1 << 10;

/// The worker's object storage: its allow-list and a store per bucket.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: StorageConfig,
    allowed: AllowList,
    stores: Mutex<HashMap<(Scheme, String), Arc<dyn ObjectStore>>>,
}

impl ObjectStorage {
    /// Checks the allow-list; stores are built on first use.
    ///
    /// # Errors
    ///
    /// [`VideoError::Config`] for an allow-list entry that is no object URL.
    pub fn new(config: StorageConfig) -> Result<Self, VideoError> {
        let allowed = AllowList::new(&config.allowed_buckets)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                allowed,
                stores: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The allow-list.
    #[must_use]
    pub fn allowed(&self) -> &AllowList {
        &self.inner.allowed
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    fn part_size(&self) -> usize {
        self.inner.config.part_size.max(MIN_PART_SIZE)
    }

    fn concurrency(&self) -> usize {
        self.inner.config.upload_concurrency.max(1)
    }

    /// The store holding `url`'s bucket, built from the environment and
    /// the configured options on first use.
    ///
    /// # Errors
    ///
    /// [`VideoError::Storage`] when the store cannot be configured (a
    /// missing region, an unknown option).
    pub fn store(&self, url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>, VideoError> {
        let key = (url.scheme, url.bucket.clone());
        let mut stores = self
            .inner
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(store) = stores.get(&key) {
            return Ok(Arc::clone(store));
        }
        let store = self.build(url).map_err(|e| VideoError::Storage {
            url: url.to_string(),
            message: redact(&e.to_string()),
            transient: false,
        })?;
        stores.insert(key, Arc::clone(&store));
        Ok(store)
    }

    fn build(&self, url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        let config = &self.inner.config;
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
        };
        let options = config.options.iter();
        Ok(match url.scheme {
            Scheme::S3 => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&url.bucket)
                    .with_retry(retry);
                for (key, value) in options {
                    builder = builder.with_config(key.to_ascii_lowercase().parse()?, value);
                }
                Arc::new(builder.build()?)
            }
            Scheme::Gcs => {
                let mut builder = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&url.bucket)
                    .with_retry(retry);
                for (key, value) in options {
                    builder = builder.with_config(key.to_ascii_lowercase().parse()?, value);
                }
                Arc::new(builder.build()?)
            }
            Scheme::Azure => {
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_container_name(&url.bucket)
                    .with_retry(retry);
                for (key, value) in options {
                    builder = builder.with_config(key.to_ascii_lowercase().parse()?, value);
                }
                Arc::new(builder.build()?)
            }
            // A scheme this worker does not know is refused, not guessed.
            other => {
                return Err(object_store::Error::NotImplemented {
                    operation: format!("{other}:// URLs"),
                    implementer: "spool-video".to_owned(),
                });
            }
        })
    }

    /// A scratch directory for one task run under `parent`, bounded by
    /// [`StorageConfig::scratch_limit`].
    ///
    /// # Errors
    ///
    /// As [`Scratch::create`].
    pub fn scratch(
        &self,
        parent: Option<&std::path::Path>,
        tag: &str,
    ) -> Result<Scratch, VideoError> {
        Scratch::create(parent, tag, self.inner.config.scratch_limit)
    }
}

/// A store's error as a task error about `url`: a missing object fails
/// for good with the store's words; refused credentials or permissions
/// and bad settings fail for good; the rest (unreachable, throttled after
/// the in-task retries) is retried by the task.
pub(crate) fn store_error(url: &ObjectUrl, error: &object_store::Error) -> VideoError {
    let message = redact(&error.to_string());
    match error {
        object_store::Error::NotFound { .. } => VideoError::ObjectNotFound {
            url: url.to_string(),
            message,
        },
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => VideoError::Storage {
            url: url.to_string(),
            message,
            transient: false,
        },
        _ => VideoError::Storage {
            url: url.to_string(),
            message,
            transient: true,
        },
    }
}

/// Where one of a task's files is: a local path, resolved in the roots, or
/// an object, checked against the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// A path inside the roots, resolved.
    Local(std::path::PathBuf),
    /// An object, allowed.
    Object(ObjectUrl),
}

impl ObjectStorage {
    /// Parses a task's location: a path (handed to `local` to be resolved
    /// in the roots) or an object URL, checked against the allow-list
    /// before anything is transferred.
    ///
    /// # Errors
    ///
    /// [`VideoError::Path`] for a bad URL, [`VideoError::Forbidden`] for
    /// one outside the allow-list, and whatever `local` returns.
    pub(crate) fn place(
        &self,
        location: &spool_sdk::video::Location,
        local: impl FnOnce(&str) -> Result<std::path::PathBuf, VideoError>,
    ) -> Result<Place, VideoError> {
        if location.is_url() {
            self.allowed().check(location).map(Place::Object)
        } else {
            local(location).map(Place::Local)
        }
    }

    /// Downloads `url` into `scratch` as `name` (with the key's extension)
    /// and checks it is a media file, not a playlist.
    ///
    /// # Errors
    ///
    /// As [`ObjectStorage::download`]; [`VideoError::Format`] for a
    /// playlist.
    pub(crate) async fn fetch(
        &self,
        url: &ObjectUrl,
        scratch: &Scratch,
        name: &str,
        reporter: &crate::Reporter,
        band: crate::StageBand,
    ) -> Result<std::path::PathBuf, VideoError> {
        let dest = scratch.file(&format!("{name}{}", extension_of(&url.key)));
        cancellable(reporter, self.download(url, &dest, scratch, reporter, band)).await?;
        crate::formats::refuse_playlist(&dest, &url.to_string())?;
        Ok(dest)
    }
}

impl ObjectStorage {
    /// A place's local path: itself, or the object downloaded into
    /// `scratch` as `name`.
    ///
    /// # Errors
    ///
    /// As [`ObjectStorage::fetch`].
    pub(crate) async fn local_path(
        &self,
        place: &Place,
        scratch: Option<&Scratch>,
        name: &str,
        reporter: &crate::Reporter,
        band: crate::StageBand,
    ) -> Result<std::path::PathBuf, VideoError> {
        match (place, scratch) {
            (Place::Local(path), _) => Ok(path.clone()),
            (Place::Object(url), Some(scratch)) => {
                self.fetch(url, scratch, name, reporter, band).await
            }
            // The callers make a scratch directory for every object.
            (Place::Object(url), None) => Err(VideoError::InvalidTask(format!(
                "{url} needs a scratch directory"
            ))),
        }
    }
}

/// `work`, stopped (dropped: an upload in flight is then aborted) when the
/// run is revoked or hits its soft time limit.
pub(crate) async fn cancellable<T>(
    reporter: &crate::Reporter,
    work: impl std::future::Future<Output = Result<T, VideoError>>,
) -> Result<T, VideoError> {
    tokio::select! {
        done = work => done,
        () = reporter.cancellation().cancelled() => Err(VideoError::Cancelled),
    }
}

/// `.ext` of a key's last segment when it is short and alphanumeric (the
/// containers FFmpeg writes are named by it), else nothing.
pub(crate) fn extension_of(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && (1..=8).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            format!(".{}", ext.to_ascii_lowercase())
        }
        _ => String::new(),
    }
}

//! Downloads into scratch and uploads out of it, with progress (bytes,
//! rate, ETA) reported as a stage of the task.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use spool_broker::Progress;
use spool_sdk::video::ObjectUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::{ObjectStorage, Scratch, store_error};
use crate::VideoError;
use crate::progress::{Reporter, StageBand};

/// The store's key for `url`.
pub(super) fn object_path(url: &ObjectUrl) -> Result<object_store::path::Path, VideoError> {
    object_store::path::Path::parse(&url.key).map_err(|e| VideoError::Path {
        path: url.to_string(),
        reason: e.to_string(),
        root: "object keys".to_owned(),
    })
}

/// Bytes moved in one stage, reported at most every 250 ms.
#[derive(Debug)]
pub(crate) struct Meter {
    reporter: Reporter,
    band: StageBand,
    total: u64,
    done: AtomicU64,
    started: Instant,
    last: Mutex<Option<Instant>>,
}

impl Meter {
    pub(crate) fn new(reporter: &Reporter, band: StageBand, total: u64) -> Self {
        reporter.stage(&band);
        Self {
            reporter: reporter.clone(),
            band,
            total,
            done: AtomicU64::new(0),
            started: Instant::now(),
            last: Mutex::new(None),
        }
    }

    fn add(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let now = Instant::now();
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if done < self.total && last.is_some_and(|at| now - at < Duration::from_millis(250)) {
                return;
            }
            *last = Some(now);
        }
        self.reporter
            .progress(self.progress(done, now - self.started));
    }

    fn progress(&self, done: u64, elapsed: Duration) -> Progress {
        #[allow(clippy::cast_precision_loss)]
        let (done_f, total_f) = (done as f64, self.total.max(1) as f64);
        let rate = if elapsed.is_zero() {
            None
        } else {
            Some(done_f / elapsed.as_secs_f64())
        };
        #[allow(clippy::cast_possible_truncation)]
        let eta = rate
            .filter(|r| *r > 0.0)
            .map(|r| ((total_f - done_f).max(0.0) / r) as f32);
        let mut message = format!("{} of {}", mib(done_f), mib(total_f));
        if let Some(rate) = rate {
            message.push_str(&format!(" at {}/s", mib(rate)));
        }
        Progress {
            stage: Some(self.band.name.to_string()),
            message: Some(message),
            eta_seconds: eta,
            ..Progress::percent(self.band.at(done_f / total_f))
        }
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1 << 20))
}

/// A multipart upload in flight: aborted if it does not complete, so no
/// orphan parts stay in the bucket (explicitly on an error, from `Drop`
/// when the task's future is dropped).
#[derive(Debug)]
struct PendingUpload {
    upload: Option<Box<dyn MultipartUpload>>,
    url: String,
    /// How long an abort keeps being tried: the store may be the reason
    /// the upload failed, and come back.
    patience: Duration,
}

impl PendingUpload {
    async fn abort(mut self) {
        if let Some(upload) = self.upload.take() {
            abort_upload(upload, std::mem::take(&mut self.url), self.patience).await;
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(abort_upload(
                upload,
                std::mem::take(&mut self.url),
                self.patience,
            ));
        }
    }
}

/// Aborts `upload`, trying again every second (beyond the store's own
/// retries) for up to `patience`.
async fn abort_upload(mut upload: Box<dyn MultipartUpload>, url: String, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        match upload.abort().await {
            Ok(()) => {
                debug!(%url, "multipart upload aborted");
                return;
            }
            Err(e) if Instant::now() >= deadline => {
                warn!(%url, error = %redact(&e.to_string()), "cannot abort the multipart upload; its parts stay until the bucket's lifecycle rule removes them");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

impl ObjectStorage {
    /// Downloads `url` to `dest` in `scratch`, after reserving its size.
    ///
    /// # Errors
    ///
    /// [`VideoError::ObjectNotFound`] with the store's words;
    /// [`VideoError::ScratchFull`]; [`VideoError::Storage`] when the store
    /// fails after its retries; [`VideoError::NoSpace`] for a full disk.
    pub(crate) async fn download(
        &self,
        url: &ObjectUrl,
        dest: &Path,
        scratch: &Scratch,
        reporter: &Reporter,
        band: StageBand,
    ) -> Result<u64, VideoError> {
        let store = self.store(url)?;
        let path = object_path(url)?;
        let meta = store.head(&path).await.map_err(|e| store_error(url, &e))?;
        scratch.reserve(meta.size, &format!("download of {url}"))?;
        let meter = Meter::new(reporter, band, meta.size);
        let got = store.get(&path).await.map_err(|e| store_error(url, &e))?;
        let mut chunks = got.into_stream();
        let io = |e: std::io::Error| {
            VideoError::from_io(format!("cannot write {}", dest.display()), dest, e)
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut written = 0_u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| store_error(url, &e))?;
            written += chunk.len() as u64;
            if written > meta.size {
                return Err(changed(url, written, meta.size));
            }
            file.write_all(&chunk).await.map_err(io)?;
            meter.add(chunk.len() as u64);
        }
        file.flush().await.map_err(io)?;
        if written != meta.size {
            return Err(changed(url, written, meta.size));
        }
        debug!(%url, bytes = written, "downloaded");
        Ok(written)
    }

    /// Uploads `src` to `url`: in one request below the part size, else
    /// as a multipart upload of concurrent parts (aborted on any failure);
    /// then checks the object's size with a HEAD.
    ///
    /// # Errors
    ///
    /// [`VideoError::Storage`] when the store fails after its retries or
    /// the size read back differs; [`VideoError::Io`] reading `src`.
    async fn upload(&self, src: &Path, url: &ObjectUrl, meter: &Meter) -> Result<u64, VideoError> {
        let store = self.store(url)?;
        let path = object_path(url)?;
        let read_error =
            |e: std::io::Error| VideoError::io(format!("cannot read {}", src.display()), e);
        let size = tokio::fs::metadata(src).await.map_err(read_error)?.len();
        let part_size = self.part_size();
        if size < part_size as u64 {
            let data = tokio::fs::read(src).await.map_err(read_error)?;
            store
                .put(&path, PutPayload::from(data))
                .await
                .map_err(|e| store_error(url, &e))?;
            meter.add(size);
        } else {
            let upload = store
                .put_multipart(&path)
                .await
                .map_err(|e| store_error(url, &e))?;
            let mut pending = PendingUpload {
                upload: Some(upload),
                url: url.to_string(),
                patience: self.config().retry_timeout,
            };
            match self
                .upload_parts(src, url, &mut pending, part_size, meter)
                .await
            {
                Ok(()) => {}
                Err(e) => {
                    pending.abort().await;
                    return Err(e);
                }
            }
            let completed = match pending.upload.as_mut() {
                Some(upload) => upload.complete().await,
                None => return Err(VideoError::Cancelled),
            };
            if let Err(e) = completed {
                pending.abort().await;
                return Err(store_error(url, &e));
            }
            pending.upload = None;
        }
        let stored = store.head(&path).await.map_err(|e| store_error(url, &e))?;
        if stored.size != size {
            return Err(VideoError::Storage {
                url: url.to_string(),
                message: format!(
                    "{} bytes were uploaded but the store holds {}",
                    size, stored.size
                ),
                transient: true,
            });
        }
        debug!(%url, bytes = size, "uploaded");
        Ok(size)
    }

    /// Reads `src` in parts and uploads them, at most
    /// [`upload_concurrency`](super::StorageConfig::upload_concurrency) at
    /// once.
    async fn upload_parts(
        &self,
        src: &Path,
        url: &ObjectUrl,
        pending: &mut PendingUpload,
        part_size: usize,
        meter: &Meter,
    ) -> Result<(), VideoError> {
        let read_error =
            |e: std::io::Error| VideoError::io(format!("cannot read {}", src.display()), e);
        let mut file = tokio::fs::File::open(src).await.map_err(read_error)?;
        let mut parts = FuturesUnordered::new();
        loop {
            let mut buffer = vec![0_u8; part_size];
            let mut filled = 0;
            while filled < part_size {
                let n = file.read(&mut buffer[filled..]).await.map_err(read_error)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            buffer.truncate(filled);
            while parts.len() >= self.concurrency() {
                if let Some(done) = parts.next().await {
                    meter.add(done_part(url, done)?);
                }
            }
            let upload = pending.upload.as_mut().ok_or(VideoError::Cancelled)?;
            let part = upload.put_part(PutPayload::from(buffer));
            parts.push(async move { part.await.map(|()| filled as u64) });
        }
        while let Some(done) = parts.next().await {
            meter.add(done_part(url, done)?);
        }
        Ok(())
    }

    /// Uploads one file, reporting on its own stage.
    ///
    /// # Errors
    ///
    /// As the upload of a package's files.
    pub(crate) async fn upload_file(
        &self,
        src: &Path,
        url: &ObjectUrl,
        reporter: &Reporter,
        band: StageBand,
    ) -> Result<u64, VideoError> {
        let size = tokio::fs::metadata(src)
            .await
            .map_err(|e| VideoError::io(format!("cannot read {}", src.display()), e))?
            .len();
        let meter = Meter::new(reporter, band, size);
        super::cancellable(reporter, self.upload(src, url, &meter)).await
    }

    /// Uploads a package built under `staging` (its `formats`
    /// directories) to `dest`: media segments first, concurrently, then
    /// the media playlists, then the master playlists and MPDs, so a player
    /// never reads a manifest whose files are missing.
    ///
    /// # Errors
    ///
    /// As [`ObjectStorage::upload_file`]; [`VideoError::Path`] for a file
    /// name that makes no key.
    pub(crate) async fn upload_package(
        &self,
        staging: &Path,
        formats: &[&str],
        masters: &[&str],
        dest: &ObjectUrl,
        reporter: &Reporter,
        band: StageBand,
    ) -> Result<(), VideoError> {
        let mut files = Vec::new();
        for format in formats {
            list_files(staging, &staging.join(format), &mut files)?;
        }
        let total = files.iter().map(|(_, _, size)| size).sum();
        let meter = Meter::new(reporter, band, total);
        let is_manifest = |key: &str| {
            Path::new(key)
                .extension()
                .is_some_and(|e| e == "m3u8" || e == "mpd")
        };
        let is_master = |key: &str| masters.iter().any(|m| key.ends_with(&format!("/{m}")));
        let (manifests, segments): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|(_, key, _)| is_manifest(key));
        let (tops, playlists): (Vec<_>, Vec<_>) = manifests
            .into_iter()
            .partition(|(_, key, _)| is_master(key));
        for phase in [segments, playlists, tops] {
            let uploads = stream::iter(phase)
                .map(|(local, key, _): (PathBuf, String, u64)| {
                    let meter = &meter;
                    async move {
                        let url = dest.join(&key).map_err(|reason| VideoError::Path {
                            path: key,
                            reason,
                            root: dest.to_string(),
                        })?;
                        self.upload(&local, &url, meter).await
                    }
                })
                .buffer_unordered(self.concurrency())
                .try_collect::<Vec<u64>>();
            super::cancellable(reporter, uploads).await?;
        }
        Ok(())
    }
}

fn done_part(url: &ObjectUrl, done: object_store::Result<u64>) -> Result<u64, VideoError> {
    done.map_err(|e| store_error(url, &e))
}

fn changed(url: &ObjectUrl, got: u64, expected: u64) -> VideoError {
    VideoError::Storage {
        url: url.to_string(),
        message: format!(
            "{got} bytes read where the object has {expected}: it changed during the download"
        ),
        transient: true,
    }
}

/// Every file under `dir`, as (path, key relative to `base`, size).
fn list_files(
    base: &Path,
    dir: &Path,
    out: &mut Vec<(PathBuf, String, u64)>,
) -> Result<(), VideoError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| VideoError::io(format!("cannot list {}", dir.display()), e))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| VideoError::io(format!("cannot list {}", dir.display()), e))?;
        let path = entry.path();
        let meta = entry
            .metadata()
            .map_err(|e| VideoError::io(format!("cannot read {}", path.display()), e))?;
        if meta.is_dir() {
            list_files(base, &path, out)?;
        } else if meta.is_file() {
            let relative = path.strip_prefix(base).unwrap_or(&path);
            let key: Vec<&str> = relative.iter().filter_map(|c| c.to_str()).collect();
            out.push((path.clone(), key.join("/"), meta.len()));
        }
    }
    Ok(())
}

/// `message` without what may carry a secret: URL query strings (Azure
/// SAS tokens, presigned signatures) and userinfo (`user:pass@`).
///
/// # Examples
///
/// ```
/// use spool_video::storage::redact;
///
/// let message = "error sending request for url (https://a.blob.core.windows.net/c/k?sv=1&sig=SECRET)";
/// assert!(!redact(message).contains("SECRET"));
/// assert!(!redact("https://user:SECRET@host/x").contains("SECRET"));
/// ```
#[must_use]
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        let url = match url.find('?') {
            Some(q) => format!("{}?<redacted>", &url[..q]),
            None => url.to_owned(),
        };
        let url = match (url.find('@'), url.find('/')) {
            (Some(at), slash) if slash.is_none_or(|s| at < s) => {
                format!("<redacted>@{}", &url[at + 1..])
            }
            _ => url,
        };
        out.push_str(&url);
        rest = tail;
    }
    out.push_str(rest);
    out
}

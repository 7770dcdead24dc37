//! Small object operations a chunked encode needs beside whole-file
//! transfers: a HEAD for a size, a marker object written and read, and a
//! prefix deleted once its objects are no longer needed.

use futures_util::StreamExt as _;
use object_store::{ObjectStoreExt as _, PutPayload};
use spool_sdk::video::ObjectUrl;
use tracing::debug;

use super::{ObjectStorage, store_error};
use crate::VideoError;

/// The most bytes a marker object may hold: it is a line of numbers.
const MARKER_LIMIT: u64 = 4096;

impl ObjectStorage {
    /// The size of the object at `url`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`VideoError::Storage`] when the store fails after its retries.
    pub(crate) async fn size_of(&self, url: &ObjectUrl) -> Result<Option<u64>, VideoError> {
        let store = self.store(url)?;
        let path = super::transfer::object_path(url)?;
        match store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(url, &e)),
        }
    }

    /// Writes `text` as the object at `url` (one request).
    ///
    /// # Errors
    ///
    /// [`VideoError::Storage`] when the store fails after its retries.
    pub(crate) async fn put_text(&self, url: &ObjectUrl, text: &str) -> Result<(), VideoError> {
        let store = self.store(url)?;
        let path = super::transfer::object_path(url)?;
        store
            .put(&path, PutPayload::from(text.as_bytes().to_vec()))
            .await
            .map_err(|e| store_error(url, &e))?;
        Ok(())
    }

    /// The text of the small object at `url`, or `None` when there is none
    /// (or it is too large or not UTF-8 to be a marker).
    ///
    /// # Errors
    ///
    /// [`VideoError::Storage`] when the store fails after its retries.
    pub(crate) async fn get_text(&self, url: &ObjectUrl) -> Result<Option<String>, VideoError> {
        let store = self.store(url)?;
        let path = super::transfer::object_path(url)?;
        let got = match store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(url, &e)),
        };
        if got.meta.size > MARKER_LIMIT {
            return Ok(None);
        }
        let bytes = got.bytes().await.map_err(|e| store_error(url, &e))?;
        Ok(String::from_utf8(bytes.to_vec()).ok())
    }

    /// Deletes every object under `prefix` (at a segment boundary);
    /// returns how many.
    ///
    /// # Errors
    ///
    /// [`VideoError::Storage`] when listing or a delete fails after the
    /// store's retries.
    pub(crate) async fn delete_prefix(&self, prefix: &ObjectUrl) -> Result<usize, VideoError> {
        let store = self.store(prefix)?;
        let path = super::transfer::object_path(prefix)?;
        let mut listed = store.list(Some(&path));
        let mut keys = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| store_error(prefix, &e))?;
            keys.push(meta.location);
        }
        for key in &keys {
            match store.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(prefix, &e)),
            }
        }
        debug!(prefix = %prefix, objects = keys.len(), "prefix deleted");
        Ok(keys.len())
    }
}

//! The worker registry on Redis.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `spool:{@workers}` | sorted set | worker ids, scored by when their record expires (ms) |
//! | `spool:{@workers}:<id>` | string | the [`WorkerRecord`] (MessagePack), with a `PX` time to live |
//!
//! Both keys share the hash tag `{@workers}` (`@` never appears in a queue
//! name), so they live on one Redis Cluster slot and the record and its
//! index entry are written in one atomic round trip.

use std::time::Duration;

use redis::AsyncCommands;

use super::{RedisBroker, map_redis};
use crate::envelope::Timestamp;
use crate::error::{Error, Result};
use crate::registry::WorkerRecord;

impl RedisBroker {
    fn workers_index(&self) -> String {
        format!("{}:{{@workers}}", self.inner.config.key_prefix)
    }

    fn worker_key(&self, id: &str) -> String {
        format!("{}:{{@workers}}:{id}", self.inner.config.key_prefix)
    }

    /// Writes (or refreshes) a worker's heartbeat record; it expires after
    /// `ttl` unless written again.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty id or a zero `ttl`, encoding and
    /// connection errors otherwise.
    pub async fn write_worker(&self, record: &WorkerRecord, ttl: Duration) -> Result<()> {
        if record.id.is_empty() {
            return Err(Error::Config("a worker record needs an id".to_owned()));
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(Error::Config(
                "a worker record needs a positive time to live".to_owned(),
            ));
        }
        let expires = Timestamp::now().saturating_add(ttl).as_millis();
        let bytes = record.encode()?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.worker_key(&record.id))
            .arg(bytes)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .zadd(self.workers_index(), &record.id, expires)
            .ignore();
        let _: () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        Ok(())
    }

    /// Every worker whose record has not expired, sorted by name then id;
    /// stopped ones included (see
    /// [`WorkerRecord::is_live`]). Prunes the index of expired entries on
    /// the way; records that do not decode are skipped.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let index = self.workers_index();
        let mut conn = self.conn();
        let now = Timestamp::now().as_millis();
        let _: u64 = conn
            .zrembyscore(&index, "-inf", now)
            .await
            .map_err(map_redis)?;
        let ids: Vec<String> = conn.zrange(&index, 0, -1).await.map_err(map_redis)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.worker_key(id)).collect();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(map_redis)?;
        let mut records = Vec::with_capacity(values.len());
        let mut gone = Vec::new();
        for (id, value) in ids.iter().zip(values) {
            match value.map(|bytes| WorkerRecord::decode(&bytes)) {
                Some(Ok(record)) => records.push(record),
                Some(Err(e)) => {
                    tracing::debug!(worker = %id, error = %e, "skipping an unreadable worker record")
                }
                None => gone.push(id.as_str()),
            }
        }
        if !gone.is_empty() {
            let _: u64 = conn.zrem(&index, &gone).await.map_err(map_redis)?;
        }
        records.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(records)
    }

    /// Removes a worker's record at once (a supervisor does this for a
    /// child that crashed). Removing an unknown id is not an error.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub async fn remove_worker(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.worker_key(id))
            .ignore()
            .zrem(self.workers_index(), id)
            .ignore();
        let _: () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(map_redis)?;
        Ok(())
    }
}

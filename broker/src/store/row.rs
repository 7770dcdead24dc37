//! Rows to records and back: decoding a job row, and the integer codes
//! times, priorities, attempts and pids are stored as.

use sqlx::Row;
use uuid::Uuid;

use super::{JobRecord, Progress, WorkerId};
use crate::envelope::{TaskId, Timestamp};
use crate::error::{Error, Result};
use crate::queue::{Priority, QueueName};

/// Decodes one row of the columns `sql::record_columns!` lists.
pub(super) fn decode_record<R>(row: &R) -> Result<JobRecord>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let bad = |e: sqlx::Error| Error::decode("job record", e);
    let id: Uuid = row.try_get(0).map_err(bad)?;
    let queue: String = row.try_get(2).map_err(bad)?;
    let priority: i16 = row.try_get(3).map_err(bad)?;
    let status: String = row.try_get(5).map_err(bad)?;
    let attempts: i32 = row.try_get(6).map_err(bad)?;
    let host: Option<String> = row.try_get(7).map_err(bad)?;
    let pid: Option<i32> = row.try_get(8).map_err(bad)?;
    let percent: Option<f32> = row.try_get(9).map_err(bad)?;
    let progress = match percent {
        Some(percent) => Some(Progress {
            percent,
            stage: row.try_get(10).map_err(bad)?,
            message: row.try_get(11).map_err(bad)?,
            fps: row.try_get(12).map_err(bad)?,
            eta_seconds: row.try_get(13).map_err(bad)?,
            // Not stored: speed lives on the progress stream only.
            speed: None,
        }),
        None => None,
    };
    let time = |i: usize| -> Result<Option<Timestamp>> {
        let millis: Option<i64> = row.try_get(i).map_err(bad)?;
        Ok(millis.map(timestamp))
    };
    Ok(JobRecord {
        id: TaskId::from(id),
        name: row.try_get(1).map_err(bad)?,
        queue: QueueName::new(queue)?,
        priority: Priority::from_index(usize::try_from(priority).unwrap_or(usize::MAX))
            .unwrap_or_default(),
        tenant: row.try_get(4).map_err(bad)?,
        status: status.parse()?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        worker: host.map(|host| WorkerId {
            host,
            pid: pid.and_then(|pid| u32::try_from(pid).ok()).unwrap_or(0),
        }),
        progress,
        created_at: time(14)?.unwrap_or(Timestamp::from_millis(0)),
        started_at: time(15)?,
        finished_at: time(16)?,
        result: row.try_get(17).map_err(bad)?,
        error: row.try_get(18).map_err(bad)?,
        args: {
            let text: Option<String> = row.try_get(19).map_err(bad)?;
            text.map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| Error::decode("job record arguments", e))?
        },
    })
}

/// A time as stored: milliseconds since the epoch, as a signed integer.
pub(crate) fn millis(time: Timestamp) -> i64 {
    i64::try_from(time.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn timestamp(millis: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(millis).unwrap_or(0))
}

pub(super) fn priority_code(priority: Priority) -> i16 {
    i16::try_from(priority.index()).unwrap_or(1)
}

pub(super) fn attempt_code(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

pub(super) fn pid_code(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

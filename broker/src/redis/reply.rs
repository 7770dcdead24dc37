//! Turning Redis replies into Spool's types.

use std::time::Duration;

use redis::Value;

use crate::broker::{
    DeadLetterEntry, DeadReason, Delivery, DeliveryTag, FetchBatch, Malformed, QueueStats,
    Reclaimed,
};
use crate::envelope::{Envelope, Timestamp};
use crate::error::{Error, Result};
use crate::queue::{Priority, QueueName};
use crate::signing::{self, SigningKeys};

fn unexpected(what: &str, value: &Value) -> Error {
    Error::Backend(format!("unexpected reply for {what}: {value:?}").into())
}

fn into_array(value: Value, what: &str) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(unexpected(what, &other)),
    }
}

fn into_string(value: Value, what: &str) -> Result<String> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|e| Error::Backend(Box::new(e)))
        }
        Value::SimpleString(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(unexpected(what, &other)),
    }
}

/// A stream entry's fields, in order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits a stream entry (`[id, [field, value, ...]]`) into its id and fields.
fn into_entry(value: Value) -> Result<(String, Fields)> {
    let (id, fields, _) = into_counted_entry(value)?;
    Ok((id, fields))
}

/// Splits an entry that may carry its delivery count as a third element
/// (`[id, [field, value, ...], deliveries]`).
fn into_counted_entry(value: Value) -> Result<(String, Fields, u32)> {
    let mut parts = into_array(value, "stream entry")?.into_iter();
    let id = into_string(parts.next().unwrap_or_default(), "entry id")?;
    let mut fields = Vec::new();
    // A pending entry that was deleted meanwhile comes back with nil fields.
    if let Some(Value::Array(flat)) = parts.next() {
        let mut flat = flat.into_iter();
        while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
            if let (Value::BulkString(f), Value::BulkString(v)) = (field, value) {
                fields.push((f, v));
            }
        }
    }
    let deliveries = match parts.next() {
        Some(Value::Int(n)) => u32::try_from(n).unwrap_or(u32::MAX),
        _ => 1,
    };
    Ok((id, fields, deliveries))
}

fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &[u8]) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_slice())
}

/// Where a queue stood when a fetch found it empty: the last id of each
/// priority stream, and when the earliest delayed task falls due.
#[derive(Debug, Clone)]
pub(crate) struct Idle {
    pub(crate) last_ids: [String; 3],
    pub(crate) next_due: Option<Timestamp>,
}

/// What the fetch script found besides the entries it claimed.
#[derive(Debug, Clone)]
pub(crate) enum Claim {
    /// It claimed something.
    Claimed,
    /// Nothing to claim: where the queue stood.
    Idle(Idle),
    /// The queue is paused: nothing was promoted or claimed.
    Paused,
}

/// How claimed entries are checked before they are decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission<'a> {
    /// The keys that must have signed them, if signing is on.
    pub(crate) signing: Option<&'a SigningKeys>,
    /// The most bytes an entry may have.
    pub(crate) max_bytes: usize,
}

/// Decodes one claimed entry into the batch: a delivery, or an entry to
/// dead-letter (oversized, undecodable, or refused by the signing keys).
fn claim(
    batch: &mut FetchBatch,
    queue: &QueueName,
    priority: Priority,
    admission: Admission<'_>,
    entry: Value,
) -> Result<()> {
    let (entry_id, fields, deliveries) = into_counted_entry(entry)?;
    let tag = DeliveryTag {
        queue: queue.clone(),
        priority,
        entry_id,
    };
    let Some(bytes) = field(&fields, b"e") else {
        batch.malformed.push(Malformed {
            tag,
            reason: DeadReason::Malformed,
            error: "the entry has no 'e' (envelope) field".into(),
        });
        return Ok(());
    };
    let decoded = signing::admit(admission.signing, admission.max_bytes, bytes);
    match decoded {
        Ok(envelope) => batch.deliveries.push(Delivery {
            tag,
            envelope,
            deliveries,
        }),
        Err(refused) => batch.malformed.push(Malformed {
            tag,
            reason: refused.reason,
            error: refused.error,
        }),
    }
    Ok(())
}

/// Parses the reply of `fetch.lua`, checking envelopes with `signing`.
pub(crate) fn fetch_batch(
    queue: &QueueName,
    admission: Admission<'_>,
    reply: Value,
) -> Result<(FetchBatch, Claim)> {
    let mut parts = into_array(reply, "fetch")?.into_iter();
    let mut batch = FetchBatch::default();
    for priority in Priority::ALL {
        let entries = match parts.next() {
            Some(Value::Array(entries)) => entries,
            Some(Value::Nil) | None => Vec::new(),
            Some(other) => return Err(unexpected("fetch entries", &other)),
        };
        for entry in entries {
            claim(&mut batch, queue, priority, admission, entry)?;
        }
    }
    let idle = match parts.next() {
        Some(Value::Array(idle)) => {
            let mut idle = idle.into_iter();
            let next_due = match idle.next() {
                Some(Value::Int(ms)) => u64::try_from(ms).ok().map(Timestamp::from_millis),
                _ => None,
            };
            let mut last_ids: [String; 3] = Default::default();
            for slot in &mut last_ids {
                *slot = into_string(idle.next().unwrap_or_default(), "last id")?;
            }
            Claim::Idle(Idle { last_ids, next_due })
        }
        _ => match parts.next() {
            Some(Value::Int(1)) => Claim::Paused,
            _ => Claim::Claimed,
        },
    };
    Ok((batch, idle))
}

/// Parses a blocking `XREADGROUP` reply over a queue's three streams
/// (`[[key, entries], ...]`, or a map of key to entries under RESP3),
/// checking envelopes with `signing`.
pub(crate) fn read_group(
    queue: &QueueName,
    streams: &[String; 3],
    admission: Admission<'_>,
    reply: Value,
) -> Result<FetchBatch> {
    let per_stream: Vec<(Value, Value)> = match reply {
        Value::Nil => Vec::new(),
        Value::Map(pairs) => pairs,
        other => into_array(other, "XREADGROUP")?
            .into_iter()
            .filter_map(|pair| match pair {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop().unwrap_or_default();
                    let key = kv.pop().unwrap_or_default();
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
    };
    let mut by_priority: [Vec<Value>; 3] = Default::default();
    for (key, entries) in per_stream {
        let key = into_string(key, "stream key")?;
        let Some(index) = streams.iter().position(|s| *s == key) else {
            return Err(unexpected("XREADGROUP stream", &Value::SimpleString(key)));
        };
        by_priority[index] = match entries {
            Value::Nil => Vec::new(),
            other => into_array(other, "XREADGROUP entries")?,
        };
    }
    let mut batch = FetchBatch::default();
    for (priority, entries) in Priority::ALL.into_iter().zip(by_priority) {
        for entry in entries {
            claim(&mut batch, queue, priority, admission, entry)?;
        }
    }
    Ok(batch)
}

/// Parses the reply of `reclaim.lua`: per priority, entries with their
/// delivery counts, then how many suspects were left waiting. Envelopes
/// are checked with `signing`.
pub(crate) fn reclaimed(
    queue: &QueueName,
    admission: Admission<'_>,
    reply: Value,
) -> Result<Reclaimed> {
    let mut parts = into_array(reply, "reclaim")?.into_iter();
    let mut batch = FetchBatch::default();
    for priority in Priority::ALL {
        let entries = match parts.next() {
            Some(Value::Array(entries)) => entries,
            _ => Vec::new(),
        };
        for entry in entries {
            claim(&mut batch, queue, priority, admission, entry)?;
        }
    }
    let suspects_waiting = match parts.next() {
        Some(Value::Int(n)) => usize::try_from(n).unwrap_or(0),
        _ => 0,
    };
    Ok(Reclaimed {
        batch,
        suspects_waiting,
    })
}

/// Parses a list of entry ids (the reply of `renew.lua`).
pub(crate) fn ids(reply: Value) -> Result<Vec<String>> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        other => into_array(other, "ids")?
            .into_iter()
            .map(|id| into_string(id, "entry id"))
            .collect(),
    }
}

/// Parses the reply of `stats.lua`.
pub(crate) fn queue_stats(reply: Value) -> Result<QueueStats> {
    let numbers = into_array(reply, "stats")?
        .into_iter()
        .map(|v| match v {
            Value::Int(i) => Ok(i),
            other => into_string(other, "stats")?
                .parse::<i64>()
                .map_err(|e| Error::Backend(Box::new(e))),
        })
        .collect::<Result<Vec<i64>>>()?;
    let at = |i: usize| numbers.get(i).copied().unwrap_or(0);
    let count = |i: usize| u64::try_from(at(i)).unwrap_or(0);
    Ok(QueueStats {
        ready: [count(0), count(1), count(2)],
        pending: count(3),
        delayed: count(4),
        dead: count(5),
        delayed_due: count(6),
        // -1: nothing runnable.
        oldest_age: u64::try_from(at(7)).ok().map(Duration::from_millis),
        consumers: count(8),
        enqueued_total: count(9),
        completed_total: count(10),
        paused: count(11) == 1,
    })
}

/// Parses an `XRANGE` reply over a dead-letter stream. A signed envelope
/// is shown unverified (the reason says whether it was refused); whether
/// it may run again is `requeue_dead`'s to check.
pub(crate) fn dead_letters(queue: &QueueName, reply: Value) -> Result<Vec<DeadLetterEntry>> {
    let entries = match reply {
        Value::Nil => Vec::new(),
        other => into_array(other, "dead letters")?,
    };
    entries
        .into_iter()
        .map(|entry| {
            let (entry_id, fields) = into_entry(entry)?;
            let text = |name: &[u8]| {
                field(&fields, name)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            let raw = field(&fields, b"e").map(<[u8]>::to_vec).unwrap_or_default();
            Ok(DeadLetterEntry {
                entry_id,
                queue: queue.clone(),
                envelope: Envelope::decode(signing::strip(&raw)).ok(),
                raw,
                reason: text(b"reason"),
                error: text(b"error"),
                attempts: text(b"attempts").parse().unwrap_or(0),
                dead_at: Timestamp::from_millis(text(b"at").parse().unwrap_or(0)),
            })
        })
        .collect()
}

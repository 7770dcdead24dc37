//! The envelope: what travels through the broker for every task.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::queue::{Priority, QueueName};
use crate::task::Task;

/// The envelope format this build writes. Readers accept this version and
/// older ones; a newer envelope is dead-lettered with a clear reason rather
/// than misread.
pub const FORMAT_VERSION: u8 = 1;

/// The encoded size of an envelope's fields besides its name and payload
/// (id, queue, times, counters), rounded up.
const ENVELOPE_OVERHEAD: usize = 64;

/// The most bytes an encoded envelope may take on the wire (the stream
/// entry's value, a signed frame's header included) unless configured
/// otherwise: 16 MiB. Spool's own tasks carry paths, codecs and rendition
/// ladders in a few KiB; 16 MiB leaves room for generous inline arguments
/// (a long keyframe list, an inline manifest) while keeping one entry from
/// holding tens of MB of Redis memory per copy, per prefetch slot on every
/// worker, and in the dead-letter stream. Larger data belongs in storage,
/// passed by path or URL.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 16 * 1024 * 1024;

/// Why an envelope with `max_attempts = 0` is refused, at enqueue and
/// when a worker reads one: no run would be allowed.
pub(crate) const ZERO_ATTEMPTS: &str = "max_attempts must be at least 1";

/// An upper bound on what the fixed fields of an envelope encode to
/// (array header, version, id, priority, counters, times, and the headers
/// of the variable-length fields).
const FIXED_FIELDS_BOUND: usize = 128;

/// An upper bound on what one string or binary field's header adds.
const FIELD_HEADER_BOUND: usize = 5;

/// A task's unique id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    /// An id no task has (all zeros): it stands for entries whose envelope
    /// could not be read.
    pub const NIL: Self = Self(Uuid::nil());

    /// A fresh id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    #[must_use]
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for TaskId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for TaskId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| Error::decode("task id", e))
    }
}

/// Milliseconds since the Unix epoch: the resolution of every time Spool
/// stores, and the unit of Redis stream ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The current time.
    #[must_use]
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// A timestamp from milliseconds since the Unix epoch.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `duration`, saturating far in the future.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// How long from `earlier` to this time; zero if `earlier` is later.
    #[must_use]
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// As a [`SystemTime`].
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self(millis)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_rfc3339_millis(self.to_system_time()), f)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Everything the broker carries for one task: identity, routing, timing,
/// and the MessagePack payload.
///
/// The envelope itself is encoded as a compact MessagePack array led by its
/// [`FORMAT_VERSION`]; the payload inside is a MessagePack map, so task types
/// can gain optional fields without stranding queued tasks.
///
/// # Examples
///
/// ```
/// use spool_broker::{Envelope, QueueName};
///
/// let envelope = Envelope::new("spool.ping", QueueName::DEFAULT, Vec::new());
/// let bytes = envelope.encode()?;
/// assert_eq!(Envelope::decode(&bytes)?, envelope);
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The format version this envelope was written with.
    pub version: u8,
    /// The task's id, stable across retries.
    pub id: TaskId,
    /// The task's wire name ([`Task::NAME`]).
    pub name: String,
    /// The queue it is routed to.
    pub queue: QueueName,
    /// Its priority in that queue.
    pub priority: Priority,
    /// Which run this is, starting at 1.
    pub attempt: u32,
    /// The most runs allowed before the task is dead-lettered.
    pub max_attempts: u32,
    /// When the producer created the task.
    pub created_at: Timestamp,
    /// Not to run before this time (countdown, ETA, or a retry's backoff).
    pub eta: Option<Timestamp>,
    /// Not to run after this time.
    pub expires_at: Option<Timestamp>,
    /// A hard limit on one run, in milliseconds.
    pub time_limit_ms: Option<u64>,
    /// The tenant the task is accounted to.
    pub tenant: Option<String>,
    /// Free-form headers, such as a W3C `traceparent`.
    pub headers: BTreeMap<String, String>,
    /// The task itself, MessagePack-encoded.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The unique key the task holds, if it was enqueued as unique: released
    /// when it reaches a final outcome.
    #[serde(default)]
    pub unique_key: Option<String>,
}

impl Envelope {
    /// A new envelope for attempt 1 with default options and no times set.
    #[must_use]
    pub fn new(name: impl Into<String>, queue: QueueName, payload: Vec<u8>) -> Self {
        Self::created_at(Timestamp::now(), name.into(), queue, payload)
    }

    fn created_at(now: Timestamp, name: String, queue: QueueName, payload: Vec<u8>) -> Self {
        Self {
            version: FORMAT_VERSION,
            id: TaskId::new(),
            name,
            queue,
            priority: Priority::Normal,
            attempt: 1,
            max_attempts: 1,
            created_at: now,
            eta: None,
            expires_at: None,
            time_limit_ms: None,
            tenant: None,
            headers: BTreeMap::new(),
            payload,
            unique_key: None,
        }
    }

    /// An envelope for `task` with the task type's default options.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the task cannot be serialized.
    pub fn for_task<T: Task>(task: &T) -> Result<Self> {
        let options = T::options();
        let now = Timestamp::now();
        let mut envelope = Self::created_at(
            now,
            T::NAME.to_owned(),
            options.queue,
            encode_payload(task)?,
        );
        envelope.priority = options.priority;
        envelope.max_attempts = options.max_attempts.max(1);
        envelope.expires_at = options.expires.map(|d| now.saturating_add(d));
        envelope.time_limit_ms = options.time_limit.map(duration_millis);
        envelope.mark_secret(T::SECRET_FIELDS);
        Ok(envelope)
    }

    /// The hard time limit of one run, if the producer set one.
    #[must_use]
    pub fn time_limit(&self) -> Option<Duration> {
        self.time_limit_ms.map(Duration::from_millis)
    }

    /// Whether the task expired before `now`.
    #[must_use]
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at < now)
    }

    /// The envelope of the next run, not before `eta` (at once if `None`).
    /// The one definition of the next attempt's number: the worker's
    /// retries and the broker's revived dead letters both count with it.
    #[must_use]
    pub fn next_attempt(&self, eta: impl Into<Option<Timestamp>>) -> Self {
        Self {
            attempt: self.attempt.saturating_add(1),
            eta: eta.into(),
            ..self.clone()
        }
    }

    /// Encodes the envelope for the wire.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if serialization fails, which only a broken
    /// `Serialize` implementation can cause.
    pub fn encode(&self) -> Result<Vec<u8>> {
        // Sized for the fixed fields up front: growing from empty would
        // reallocate several times per envelope on the enqueue hot path.
        let mut bytes = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut bytes)?;
        Ok(bytes)
    }

    /// Appends the encoded envelope to `out` (after a signed frame's
    /// header, say).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        rmp_serde::encode::write(out, self).map_err(|e| Error::encode("envelope", e))
    }

    /// Encodes the envelope as if `extra` headers were set on it (each
    /// replacing a header of the same name), without copying it: a
    /// workflow's nodes are stored and enqueued with headers of their own,
    /// and a 10,000-node workflow would otherwise clone every envelope to
    /// encode it once. `extra` must be sorted by name, as a `BTreeMap`
    /// orders its keys.
    pub(crate) fn encode_with_headers(&self, extra: &[(&str, &str)]) -> Result<Vec<u8>> {
        debug_assert!(extra.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let extra_len: usize = extra.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut bytes = Vec::with_capacity(self.encoded_len_hint() + extra_len);
        rmp_serde::encode::write(
            &mut bytes,
            &WithHeaders {
                envelope: self,
                extra,
            },
        )
        .map_err(|e| Error::encode("envelope", e))?;
        Ok(bytes)
    }

    /// At least as many bytes as [`Envelope::encode`] writes: checking a
    /// size limit against it needs no encoding, except near the limit.
    pub(crate) fn encoded_len_bound(&self) -> usize {
        let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| 2 * FIELD_HEADER_BOUND + k.len() + v.len())
            .sum();
        FIXED_FIELDS_BOUND
            + self.name.len()
            + self.queue.as_str().len()
            + optional(&self.tenant)
            + optional(&self.unique_key)
            + headers
            + self.payload.len()
    }

    /// Roughly how many bytes [`Envelope::encode`] writes.
    pub(crate) fn encoded_len_hint(&self) -> usize {
        ENVELOPE_OVERHEAD + self.name.len() + self.payload.len()
    }

    /// Decodes an envelope from the wire.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the bytes are not an envelope, or when they are
    /// one of a newer format version than this build understands.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if let Some(version) = newer_version(bytes) {
            return Err(Error::decode(
                "envelope",
                format!(
                    "format version {version} is newer than the {FORMAT_VERSION} this build reads; \
                     upgrade the worker"
                ),
            ));
        }
        let not_an_envelope =
            |e: String| Error::decode("envelope", format!("not a Spool envelope: {e}"));
        match rmp_serde::from_slice::<Self>(bytes) {
            Ok(envelope) => Ok(envelope),
            Err(e) => Err(not_an_envelope(match peek_version(bytes) {
                Err(shape) => shape,
                Ok(_) => e.to_string(),
            })),
        }
    }
}

/// The fewest fields an envelope of any version has: those of version 1
/// before `unique_key`.
const MIN_FIELDS: u32 = 14;

/// What the encoded envelope of task `id` contains: the id as MessagePack
/// binary (its 2-byte header, then its 16 bytes), to look for it in
/// stored bytes without decoding them all.
pub(crate) fn id_needle(id: TaskId) -> Vec<u8> {
    let mut needle = vec![0xc4, 16];
    needle.extend_from_slice(id.as_uuid().as_bytes());
    needle
}

/// Whether `bytes` (a stream value or a delayed member, signed or not)
/// hold the envelope of task `id`.
pub(crate) fn holds_task(bytes: &[u8], id: TaskId) -> bool {
    let unprefixed = match bytes.first() {
        Some(b'0'..=b'2') => &bytes[1..],
        _ => bytes,
    };
    Envelope::decode(crate::signing::strip(unprefixed)).is_ok_and(|e| e.id == id)
}

/// The format version of `bytes` when they are an envelope of a format
/// newer than this build's: a MessagePack array of at least
/// [`MIN_FIELDS`] whose first field is the version and whose second is a
/// 16-byte task id. Anything else is not judged by its first bytes: a
/// signed frame wrapping garbage is garbage, not a newer worker's task.
pub(crate) fn newer_version(mut bytes: &[u8]) -> Option<u8> {
    let len = rmp::decode::read_array_len(&mut bytes).ok()?;
    let version: u8 = rmp::decode::read_int(&mut bytes).ok()?;
    let id_len = rmp::decode::read_bin_len(&mut bytes).ok()?;
    (len >= MIN_FIELDS && id_len == 16 && bytes.len() >= 16 && version > FORMAT_VERSION)
        .then_some(version)
}

/// Why `bytes` are not even the start of an envelope, if they are not.
fn peek_version(mut bytes: &[u8]) -> Result<u8, String> {
    let len = rmp::decode::read_array_len(&mut bytes)
        .map_err(|e| format!("not a MessagePack array: {e}"))?;
    if len == 0 {
        return Err("empty array".into());
    }
    rmp::decode::read_int(&mut bytes).map_err(|e| format!("no format version: {e}"))
}

/// Encodes a task or an output as a MessagePack map.
///
/// # Errors
///
/// [`Error::Encode`] when serialization fails.
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(64);
    rmp_serde::encode::write_named(&mut bytes, value).map_err(|e| Error::encode("payload", e))?;
    Ok(bytes)
}

/// Decodes a task or an output encoded with [`encode_payload`].
///
/// # Errors
///
/// [`Error::Decode`] when the bytes do not hold a `T`, naming the field
/// that does not decode and what it expected (`height: invalid type:
/// string "720p", expected u32`).
pub fn decode_payload<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|plain| {
        // Decoded again only when it failed, to say which field and what
        // it expected: the common path pays nothing for it. Through a
        // generic value, serde words it ("invalid type: string "720p",
        // expected u32"); MessagePack's own error only names a marker.
        let described = rmp_serde::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(
                |value| match serde_path_to_error::deserialize::<_, T>(value) {
                    Err(e) if e.path().iter().next().is_some() => {
                        let path = e.path().to_string();
                        Some(format!("{path}: {}", e.into_inner()))
                    }
                    _ => None,
                },
            );
        match described {
            Some(described) => Error::decode("payload", described),
            None => Error::decode("payload", plain),
        }
    })
}

pub(crate) fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An envelope with extra headers, serialized exactly as the envelope
/// with those headers inserted would be (see
/// [`Envelope::encode_with_headers`]): the same fields, in the same order,
/// the headers merged in key order.
struct WithHeaders<'a> {
    envelope: &'a Envelope,
    extra: &'a [(&'a str, &'a str)],
}

impl Serialize for WithHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let e = self.envelope;
        let mut s = serializer.serialize_struct("Envelope", 15)?;
        s.serialize_field("version", &e.version)?;
        s.serialize_field("id", &e.id)?;
        s.serialize_field("name", &e.name)?;
        s.serialize_field("queue", &e.queue)?;
        s.serialize_field("priority", &e.priority)?;
        s.serialize_field("attempt", &e.attempt)?;
        s.serialize_field("max_attempts", &e.max_attempts)?;
        s.serialize_field("created_at", &e.created_at)?;
        s.serialize_field("eta", &e.eta)?;
        s.serialize_field("expires_at", &e.expires_at)?;
        s.serialize_field("time_limit_ms", &e.time_limit_ms)?;
        s.serialize_field("tenant", &e.tenant)?;
        s.serialize_field(
            "headers",
            &MergedHeaders {
                base: &e.headers,
                extra: self.extra,
            },
        )?;
        s.serialize_field("payload", serde_bytes::Bytes::new(&e.payload))?;
        s.serialize_field("unique_key", &e.unique_key)?;
        s.end()
    }
}

/// `base` with `extra` inserted, as one map in key order.
struct MergedHeaders<'a> {
    base: &'a BTreeMap<String, String>,
    extra: &'a [(&'a str, &'a str)],
}

impl Serialize for MergedHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let replaced = self
            .extra
            .iter()
            .filter(|(name, _)| self.base.contains_key(*name))
            .count();
        let mut map =
            serializer.serialize_map(Some(self.base.len() + self.extra.len() - replaced))?;
        let mut extra = self.extra.iter().peekable();
        for (name, value) in self.base {
            let mut overridden = false;
            while let Some(&(extra_name, extra_value)) =
                extra.next_if(|(extra_name, _)| *extra_name <= name.as_str())
            {
                map.serialize_entry(extra_name, extra_value)?;
                overridden |= extra_name == name;
            }
            if !overridden {
                map.serialize_entry(name, value)?;
            }
        }
        for (extra_name, extra_value) in extra {
            map.serialize_entry(extra_name, extra_value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Resize {
        width: u32,
    }

    impl Task for Resize {
        const NAME: &'static str = "test.resize";
        type Output = ();
    }

    #[test]
    fn envelope_round_trips_with_every_field() {
        let mut e = Envelope::for_task(&Resize { width: 640 }).unwrap();
        e.tenant = Some("acme".into());
        e.headers
            .insert("traceparent".into(), "00-abc-def-01".into());
        e.eta = Some(Timestamp::from_millis(42));
        let decoded = Envelope::decode(&e.encode().unwrap()).unwrap();
        assert_eq!(decoded, e);
        assert_eq!(
            decode_payload::<Resize>(&decoded.payload).unwrap(),
            Resize { width: 640 }
        );
    }

    #[test]
    fn extra_headers_encode_as_if_inserted() {
        let extra = [("m", "inserted"), ("spool-x", "1")];
        let mut full = Envelope::for_task(&Resize { width: 640 }).unwrap();
        full.tenant = Some("acme".into());
        full.eta = Some(Timestamp::from_millis(42));
        full.expires_at = Some(Timestamp::from_millis(43));
        full.time_limit_ms = Some(44);
        full.unique_key = Some("k".into());
        let header_sets: [&[(&str, &str)]; 5] = [
            &[],
            &[("a", "before")],
            &[("z", "after")],
            &[("a", "1"), ("m", "replaced"), ("n", "2"), ("spool-x", "0")],
            &[("m", "replaced"), ("zz", "3")],
        ];
        for headers in header_sets {
            for base in [
                Envelope::new("t", QueueName::DEFAULT, Vec::new()),
                full.clone(),
            ] {
                let mut envelope = base;
                for (name, value) in headers {
                    envelope.headers.insert((*name).into(), (*value).into());
                }
                let mut inserted = envelope.clone();
                for (name, value) in extra {
                    inserted.headers.insert(name.into(), value.into());
                }
                let bytes = envelope.encode_with_headers(&extra).unwrap();
                assert_eq!(bytes, inserted.encode().unwrap(), "headers {headers:?}");
                assert_eq!(Envelope::decode(&bytes).unwrap(), inserted);
            }
        }
    }

    #[test]
    fn a_payload_that_does_not_decode_names_the_field_and_the_type() {
        #[derive(Debug, Serialize)]
        struct Typo {
            width: &'static str,
        }
        let bytes = encode_payload(&Typo { width: "720p" }).unwrap();
        let err = decode_payload::<Resize>(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("width") && err.contains("\"720p\"") && err.contains("u32"),
            "{err}"
        );
        // Bytes that are no map at all: the decoder's own words.
        let err = decode_payload::<Resize>(&[0xc1]).unwrap_err().to_string();
        assert!(err.starts_with("cannot decode payload: "), "{err}");
    }

    #[test]
    fn newer_format_versions_are_refused_clearly() {
        let mut e = Envelope::new("x", QueueName::DEFAULT, vec![]);
        e.version = FORMAT_VERSION + 1;
        let err = Envelope::decode(&e.encode().unwrap()).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn only_an_envelope_shaped_array_is_called_a_newer_version() {
        // A task id is 16 bytes of MessagePack binary.
        let e = Envelope::new("x", QueueName::DEFAULT, vec![]);
        let bytes = e.encode().unwrap();
        assert_eq!(newer_version(&bytes), None);
        assert_eq!(&bytes[2..4], &[0xc4, 16]);
        // An array that merely starts with a large number is not.
        let garbage = rmp_serde::to_vec(&(103u8, "garbage", 1, 2)).unwrap();
        let err = Envelope::decode(&garbage).unwrap_err().to_string();
        assert!(err.contains("not a Spool envelope"), "{err}");
        assert!(!err.contains("newer"), "{err}");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for bytes in [&b"not msgpack"[..], &[0x90], &[]] {
            assert!(matches!(Envelope::decode(bytes), Err(Error::Decode { .. })));
        }
    }

    #[test]
    fn the_length_bound_is_never_below_the_encoded_length() {
        let mut e = Envelope::for_task(&Resize { width: u32::MAX }).unwrap();
        assert!(e.encoded_len_bound() >= e.encode().unwrap().len());
        e.tenant = Some("t".repeat(300));
        e.unique_key = Some("u".repeat(70_000));
        e.headers.insert("k".repeat(40), "v".repeat(300));
        e.headers.insert(String::new(), String::new());
        e.eta = Some(Timestamp::from_millis(u64::MAX));
        e.expires_at = Some(Timestamp::from_millis(u64::MAX));
        e.time_limit_ms = Some(u64::MAX);
        e.attempt = u32::MAX;
        e.max_attempts = u32::MAX;
        e.payload = vec![0; 70_000];
        e.priority = crate::queue::Priority::Low;
        assert!(e.encoded_len_bound() >= e.encode().unwrap().len());
    }

    #[test]
    fn task_ids_parse_back() {
        let id = TaskId::new();
        assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
    }
}

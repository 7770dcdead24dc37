//! HMAC signing of envelopes, so that someone who can write to Redis but
//! holds no key cannot inject a task.
//!
//! # The signed frame
//!
//! With [`RedisConfig::signing`](crate::RedisConfig::signing) set, the
//! bytes Redis holds for a task (a stream entry's field `e`, a delayed-set
//! member after its priority digit, a periodic tick) are a *signed frame*
//! instead of the plain MessagePack envelope:
//!
//! ```text
//! 0xC1 | version (1) | tag: 32 bytes | envelope (MessagePack, as unsigned)
//! tag = HMAC-SHA256(key, 0xC1 | version | envelope)
//! ```
//!
//! `0xC1` is the one byte MessagePack never uses, and an envelope always
//! starts with an array marker, so a frame is never mistaken for an
//! envelope, nor the reverse. The tag covers the header too, so the version
//! cannot be swapped.
//!
//! # Verification
//!
//! A broker with keys accepts an entry only if it is a frame whose tag
//! verifies with one of its keys (compared in constant time). An unsigned
//! entry or a frame that does not verify never reaches a handler: it is
//! dead-lettered with the reason [`DeadReason::Unsigned`] or
//! [`DeadReason::BadSignature`], its bytes kept exactly.
//!
//! A broker without keys accepts plain envelopes and frames alike (it
//! cannot check a frame: it only strips it). So signing is turned on
//! without downtime in this order: every process on a release that reads
//! frames, then keys on the producers (`spoolctl`, `spool-beat`, the
//! SDK's clients), then keys on the workers.
//!
//! # Rotation
//!
//! [`SigningKeys`] holds one key that signs and verifies, and older keys
//! that only verify. Rotate in three rollouts, so that no process ever
//! meets a tag it cannot check: add the new key as the *second* line of
//! every key file (everyone verifies it, nobody signs with it yet); then
//! swap the two lines (new tasks are signed with the new key); once no
//! task signed with the old key can be queued (delayed tasks and dead
//! letters included), drop the old line.
//!
//! Signing authenticates tasks; it does not hide them, and it does not stop
//! the replay of a task that was signed once (copying an entry runs the
//! task again, as an at-least-once redelivery would).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::broker::{DeadLetterEntry, DeadReason};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::queue::Priority;

/// The first byte of a signed frame: never used by MessagePack.
const MARK: u8 = 0xC1;

/// The frame version this build writes and verifies.
const VERSION: u8 = 1;

/// The length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Marker, version and tag: what a frame adds in front of the envelope.
const HEADER_LEN: usize = 2 + TAG_LEN;

/// The shortest key accepted, in bytes: HMAC-SHA256's output size, below
/// which a key is weaker than the tag it makes.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// One key: its HMAC state after absorbing the key, and a digest of it to
/// compare keys without keeping them around.
#[derive(Clone)]
struct Key {
    mac: HmacSha256,
    id: [u8; 32],
}

impl Key {
    fn new(secret: &[u8], origin: &dyn Fn() -> String) -> Result<Self> {
        if secret.len() < MIN_SIGNING_KEY_LEN {
            return Err(Error::Config(format!(
                "{} is {} bytes long; a signing key needs at least {MIN_SIGNING_KEY_LEN} (make one \
                 with `openssl rand -hex 32`)",
                origin(),
                secret.len()
            )));
        }
        let mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
            .map_err(|e| Error::Config(format!("{} cannot key HMAC-SHA256: {e}", origin())))?;
        let id = Sha256::new()
            .chain_update(b"spool signing key id\0")
            .chain_update(secret)
            .finalize()
            .into();
        Ok(Self { mac, id })
    }

    /// The HMAC of a frame's header and `envelope`.
    fn mac_of(&self, envelope: &[u8]) -> HmacSha256 {
        self.mac
            .clone()
            .chain_update([MARK, VERSION])
            .chain_update(envelope)
    }
}

/// The keys that sign and verify envelopes on the wire: one that signs and
/// verifies, and older ones still accepted for verification while a
/// rotation completes. Set them as
/// [`RedisConfig::signing`](crate::RedisConfig::signing).
///
/// A signed envelope travels as a frame that MessagePack cannot be
/// mistaken for: `0xC1`, a frame version (1), the 32-byte
/// HMAC-SHA256 tag of the version and the envelope, then the envelope. A
/// broker with keys dead-letters unsigned entries
/// ([`DeadReason::Unsigned`]) and frames whose tag no key verifies
/// ([`DeadReason::BadSignature`]) before any handler sees them; a broker
/// without keys accepts both kinds unverified. Turn signing on in that
/// order: keys on the producers first, then on the workers.
///
/// Key material never appears in `Debug` output or in errors. Cloning is
/// cheap.
///
/// # Examples
///
/// ```
/// use spool_broker::{RedisConfig, SigningKeys};
///
/// let keys = SigningKeys::new("a new key of at least thirty-two bytes!")?
///     .with_previous("the old key, still accepted for a while")?;
/// assert_eq!(format!("{keys:?}"), "SigningKeys { keys: 2, .. }");
/// let config = RedisConfig {
///     signing: Some(keys),
///     ..RedisConfig::default()
/// };
/// # drop(config);
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[derive(Clone)]
pub struct SigningKeys {
    /// The signing key first, then older keys; all verify.
    keys: Arc<[Key]>,
}

impl SigningKeys {
    /// Keys that sign with `key` (and accept only it, until
    /// [`with_previous`](Self::with_previous) adds others).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the key is shorter than
    /// [`MIN_SIGNING_KEY_LEN`] bytes.
    pub fn new(key: impl AsRef<[u8]>) -> Result<Self> {
        let key = Key::new(key.as_ref(), &|| "the signing key".to_owned())?;
        Ok(Self {
            keys: Arc::from(vec![key]),
        })
    }

    /// These keys, also accepting envelopes signed with `key` (an older key,
    /// during a rotation). Signing still uses the first key.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the key is shorter than
    /// [`MIN_SIGNING_KEY_LEN`] bytes.
    pub fn with_previous(self, key: impl AsRef<[u8]>) -> Result<Self> {
        let key = Key::new(key.as_ref(), &|| "the previous signing key".to_owned())?;
        let mut keys = self.keys.to_vec();
        keys.push(key);
        Ok(Self {
            keys: Arc::from(keys),
        })
    }

    /// Reads a key file: its first line is the signing key, each further
    /// non-empty line an older key still accepted. Lines are trimmed; each
    /// key is the line's bytes as written (a hex or base64 string of at
    /// least [`MIN_SIGNING_KEY_LEN`] characters, say).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read, its first line is
    /// empty, or a key is too short; the message names the file and the
    /// line, never a key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the signing key file {}: {e}",
                path.display()
            ))
        })?;
        Self::from_key_lines(&text, &path.display().to_string())
    }

    /// Parses a key file's text; `origin` names it in errors.
    fn from_key_lines(text: &str, origin: &str) -> Result<Self> {
        let mut lines = text.lines().map(str::trim).enumerate();
        let first = lines.next().map(|(_, line)| line).unwrap_or_default();
        if first.is_empty() {
            return Err(Error::Config(format!(
                "the signing key file {origin} has no key on its first line (make one with \
                 `openssl rand -hex 32`)"
            )));
        }
        let mut keys = vec![Key::new(first.as_bytes(), &|| {
            format!("the signing key (line 1 of {origin})")
        })?];
        for (index, line) in lines.filter(|(_, line)| !line.is_empty()) {
            keys.push(Key::new(line.as_bytes(), &|| {
                format!("the previous key on line {} of {origin}", index + 1)
            })?);
        }
        Ok(Self {
            keys: Arc::from(keys),
        })
    }

    /// How many keys are accepted, the signing one included.
    #[must_use]
    pub fn accepted(&self) -> usize {
        self.keys.len()
    }

    fn signing_key(&self) -> &Key {
        // Every constructor puts one key in.
        &self.keys[0]
    }

    /// Appends a signed frame to `out`, the envelope written by `encode`
    /// straight into place (one buffer, no copy on the enqueue path).
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(&[MARK, VERSION]);
        out.resize(start + HEADER_LEN, 0);
        encode(out)?;
        let tag = self
            .signing_key()
            .mac_of(&out[start + HEADER_LEN..])
            .finalize()
            .into_bytes();
        out[start + 2..start + HEADER_LEN].copy_from_slice(&tag);
        Ok(())
    }

    /// Whether `tag` is the tag of `envelope` under one of the keys.
    fn verifies(&self, envelope: &[u8], tag: &[u8]) -> bool {
        self.keys
            .iter()
            .any(|key| key.mac_of(envelope).verify_slice(tag).is_ok())
    }
}

impl PartialEq for SigningKeys {
    fn eq(&self, other: &Self) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(other.keys.iter())
                .all(|(a, b)| a.id == b.id)
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The bytes Redis holds for `envelope`: `prefix` (a delayed-set member's
/// priority digit), then a signed frame when `keys` are set, else the
/// plain envelope.
pub(crate) fn wire(
    envelope: &Envelope,
    keys: Option<&SigningKeys>,
    prefix: Option<u8>,
) -> Result<Vec<u8>> {
    let header = if keys.is_some() { HEADER_LEN } else { 0 };
    let mut out = Vec::with_capacity(1 + header + envelope.encoded_len_hint());
    out.extend(prefix);
    match keys {
        Some(keys) => keys.seal_into(&mut out, |out| envelope.encode_into(out))?,
        None => envelope.encode_into(&mut out)?,
    }
    Ok(out)
}

/// Refuses what no broker may enqueue: an envelope allowing no attempt,
/// or one over `limit` bytes on the wire (see [`check_wire_size`]).
///
/// # Errors
///
/// [`Error::InvalidEnvelope`] or [`Error::Oversized`].
pub(crate) fn check_for_enqueue(
    envelope: &Envelope,
    keys: Option<&SigningKeys>,
    limit: usize,
) -> Result<()> {
    if envelope.max_attempts == 0 {
        return Err(Error::InvalidEnvelope {
            what: format!("task {} ({})", envelope.id, envelope.name),
            reason: crate::envelope::ZERO_ATTEMPTS,
        });
    }
    check_wire_size(envelope, keys, limit)
}

/// Refuses `envelope` when its wire bytes (a signed frame's header
/// included, when `keys` are set) would exceed `limit`; encodes it to know
/// only when an upper bound says it might.
///
/// # Errors
///
/// [`Error::Oversized`] naming the task, its size and the limit.
pub(crate) fn check_wire_size(
    envelope: &Envelope,
    keys: Option<&SigningKeys>,
    limit: usize,
) -> Result<()> {
    let header = if keys.is_some() { HEADER_LEN } else { 0 };
    if header + envelope.encoded_len_bound() <= limit {
        return Ok(());
    }
    check_encoded_size(envelope, envelope.encode()?.len(), keys, limit)
}

/// Refuses `envelope`, already encoded (unsigned) to `encoded_len` bytes,
/// when its wire bytes would exceed `limit`, as [`check_wire_size`] does.
///
/// # Errors
///
/// [`Error::Oversized`] naming the task, its size and the limit.
pub(crate) fn check_encoded_size(
    envelope: &Envelope,
    encoded_len: usize,
    keys: Option<&SigningKeys>,
    limit: usize,
) -> Result<()> {
    let size = if keys.is_some() { HEADER_LEN } else { 0 } + encoded_len;
    if size <= limit {
        return Ok(());
    }
    Err(Error::Oversized {
        what: format!("the envelope of task {} ({})", envelope.id, envelope.name),
        size,
        limit,
    })
}

/// Refuses an entry fetched from the broker whose bytes exceed `limit`,
/// before anything parses them: the dead-letter reason and the error.
pub(crate) fn check_entry_size(bytes: &[u8], limit: usize) -> Result<(), Refused> {
    if bytes.len() <= limit {
        return Ok(());
    }
    Err(Refused {
        reason: DeadReason::Oversized,
        error: format!(
            "the entry is {} bytes, over the limit of {limit} bytes (max_envelope_bytes): not \
             decoded; pass large data by reference (a path or URL)",
            bytes.len()
        ),
    })
}

/// The envelope an entry's `bytes` hold, checked as a broker with `keys`
/// (or none) and a limit of `max_bytes` must: measured, then verified,
/// then decoded, so that an oversized or forged entry is never parsed.
/// A verified frame whose payload does not decode is called what it is,
/// not a newer format.
pub(crate) fn admit(
    keys: Option<&SigningKeys>,
    max_bytes: usize,
    bytes: &[u8],
) -> Result<Envelope, Refused> {
    check_entry_size(bytes, max_bytes)?;
    let inner = open(keys, bytes)?;
    Envelope::decode(inner).map_err(|e| {
        let error = match e {
            Error::Decode { source, .. }
                if is_signed(bytes) && crate::envelope::newer_version(inner).is_none() =>
            {
                let detail = source.to_string();
                let detail = detail
                    .strip_prefix("not a Spool envelope: ")
                    .unwrap_or(&detail);
                format!("signed payload is not a Spool envelope: {detail}")
            }
            other => other.to_string(),
        };
        Refused {
            reason: DeadReason::Malformed,
            error,
        }
    })
}

/// What `requeue_dead` appends for `letter`, and at which priority.
///
/// With keys, only a dead letter whose own signature verifies is revived
/// (and signed again); any other goes back as it is, and is refused again,
/// so requeueing never launders an injected task. Without keys, a signed
/// dead letter also goes back as it is: its signature stays valid, but its
/// attempt counters are not reset.
pub(crate) fn revive(
    letter: &DeadLetterEntry,
    keys: Option<&SigningKeys>,
) -> Result<(Priority, Vec<u8>)> {
    let authentic = match keys {
        Some(keys) => open(Some(keys), &letter.raw).is_ok(),
        None => !is_signed(&letter.raw),
    };
    match letter.next_run() {
        Some(next) if authentic => Ok((next.priority, wire(&next, keys, None)?)),
        next => {
            let priority = next.map_or(Priority::Normal, |e| e.priority);
            Ok((priority, letter.raw.clone()))
        }
    }
}

/// Why an entry was refused before decoding: the dead-letter reason and
/// what to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) reason: DeadReason,
    pub(crate) error: String,
}

/// Whether `bytes` are a signed frame (of any version).
pub(crate) fn is_signed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MARK)
}

/// The envelope inside `bytes`, checked as a broker with `keys` (or none)
/// must: see the module docs.
pub(crate) fn open<'a>(keys: Option<&SigningKeys>, bytes: &'a [u8]) -> Result<&'a [u8], Refused> {
    if !is_signed(bytes) {
        return match keys {
            None => Ok(bytes),
            Some(_) => Err(Refused {
                reason: DeadReason::Unsigned,
                error: "envelope is not signed; this worker requires HMAC-signed tasks: give \
                        their producer the same key file (SPOOL_SIGNING_KEY_FILE, \
                        --signing-key-file or RedisConfig::signing)"
                    .to_owned(),
            }),
        };
    }
    let (version, tag, envelope) = split_frame(bytes)?;
    if version != VERSION {
        return Err(Refused {
            reason: DeadReason::Malformed,
            error: format!(
                "signed frame version {version} is not the {VERSION} this build reads; upgrade \
                 the worker"
            ),
        });
    }
    match keys {
        None => {
            tracing::debug!("accepting a signed envelope unverified: this broker has no key");
            Ok(envelope)
        }
        Some(keys) if keys.verifies(envelope, tag) => Ok(envelope),
        Some(keys) => Err(Refused {
            reason: DeadReason::BadSignature,
            error: format!(
                "envelope signature does not verify with any of this worker's {} key(s): it was \
                 forged, altered, or signed with a key this worker lacks (check \
                 SPOOL_SIGNING_KEY_FILE on both sides)",
                keys.accepted()
            ),
        }),
    }
}

/// The envelope bytes of `bytes`, frame or not, unverified: for showing a
/// dead letter, never for running it.
pub(crate) fn strip(bytes: &[u8]) -> &[u8] {
    match split_frame(bytes) {
        Ok((VERSION, _, envelope)) => envelope,
        _ => bytes,
    }
}

/// A frame's version, tag and envelope.
fn split_frame(bytes: &[u8]) -> Result<(u8, &[u8], &[u8]), Refused> {
    match bytes {
        [MARK, version, rest @ ..] if rest.len() >= TAG_LEN => {
            let (tag, envelope) = rest.split_at(TAG_LEN);
            Ok((*version, tag, envelope))
        }
        _ => Err(Refused {
            reason: DeadReason::BadSignature,
            error: format!(
                "a signed frame of {} bytes is too short to hold its {TAG_LEN}-byte tag",
                bytes.len()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueName;

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const OLD: &str = "fedcba9876543210fedcba9876543210";

    fn envelope() -> Envelope {
        Envelope::new("test.sign", QueueName::DEFAULT, b"\x80".to_vec())
    }

    #[test]
    fn a_frame_round_trips_and_plain_envelopes_are_refused() {
        let keys = SigningKeys::new(KEY).unwrap();
        let e = envelope();
        let frame = wire(&e, Some(&keys), None).unwrap();
        assert_eq!(frame[0], MARK);
        assert_eq!(frame.len(), HEADER_LEN + e.encode().unwrap().len());
        let inner = open(Some(&keys), &frame).unwrap();
        assert_eq!(Envelope::decode(inner).unwrap(), e);
        // The same frame without a key: accepted, unverified.
        assert_eq!(open(None, &frame).unwrap(), inner);
        // A plain envelope with a key: refused as unsigned.
        let plain = e.encode().unwrap();
        let refused = open(Some(&keys), &plain).unwrap_err();
        assert_eq!(refused.reason, DeadReason::Unsigned);
        assert!(
            refused.error.contains("SPOOL_SIGNING_KEY_FILE"),
            "{refused:?}"
        );
        assert_eq!(open(None, &plain).unwrap(), &plain[..]);
        // A frame is never a valid envelope.
        assert!(Envelope::decode(&frame).is_err());
    }

    #[test]
    fn forged_and_altered_frames_do_not_verify() {
        let keys = SigningKeys::new(KEY).unwrap();
        let other = SigningKeys::new(OLD).unwrap();
        let forged = wire(&envelope(), Some(&other), None).unwrap();
        assert_eq!(
            open(Some(&keys), &forged).unwrap_err().reason,
            DeadReason::BadSignature
        );
        let mut altered = wire(&envelope(), Some(&keys), None).unwrap();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(
            open(Some(&keys), &altered).unwrap_err().reason,
            DeadReason::BadSignature
        );
        let truncated = [MARK, VERSION, 0, 0];
        assert_eq!(
            open(Some(&keys), &truncated).unwrap_err().reason,
            DeadReason::BadSignature
        );
        let mut newer = wire(&envelope(), Some(&keys), None).unwrap();
        newer[1] = VERSION + 1;
        let refused = open(Some(&keys), &newer).unwrap_err();
        assert_eq!(refused.reason, DeadReason::Malformed);
        assert!(refused.error.contains("upgrade"), "{refused:?}");
    }

    #[test]
    fn older_keys_verify_but_never_sign() {
        let old = SigningKeys::new(OLD).unwrap();
        let rotated = SigningKeys::new(KEY).unwrap().with_previous(OLD).unwrap();
        let by_old = wire(&envelope(), Some(&old), None).unwrap();
        assert!(open(Some(&rotated), &by_old).is_ok());
        let by_new = wire(&envelope(), Some(&rotated), None).unwrap();
        assert!(open(Some(&old), &by_new).is_err(), "the new key signs");
        assert!(open(Some(&SigningKeys::new(KEY).unwrap()), &by_new).is_ok());
    }

    #[test]
    fn delayed_members_keep_their_digit_outside_the_frame() {
        let keys = SigningKeys::new(KEY).unwrap();
        let member = wire(&envelope(), Some(&keys), Some(b'2')).unwrap();
        assert_eq!(member[0], b'2');
        assert!(open(Some(&keys), &member[1..]).is_ok());
        assert_eq!(
            Envelope::decode(strip(&member[1..])).unwrap().name,
            "test.sign"
        );
    }

    #[test]
    fn key_files_list_the_signing_key_first() {
        let text = format!("  {KEY}  \n\n{OLD}\n");
        let keys = SigningKeys::from_key_lines(&text, "keys.txt").unwrap();
        assert_eq!(keys.accepted(), 2);
        assert_eq!(
            keys,
            SigningKeys::new(KEY).unwrap().with_previous(OLD).unwrap()
        );
        let frame = wire(&envelope(), Some(&keys), None).unwrap();
        assert!(open(Some(&SigningKeys::new(KEY).unwrap()), &frame).is_ok());
    }

    #[test]
    fn bad_key_files_are_explained_without_their_keys() {
        let short = "short-secret-value";
        let e = SigningKeys::from_key_lines(&format!("{KEY}\n{short}\n"), "keys.txt").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Config(_)));
        assert!(
            text.contains("line 2 of keys.txt") && text.contains("at least 32"),
            "{text}"
        );
        assert!(!text.contains(short), "{text}");
        let e = SigningKeys::from_key_lines("\n", "keys.txt").unwrap_err();
        assert!(e.to_string().contains("first line"), "{e}");
        let e = SigningKeys::from_file("/nonexistent/spool-keys").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/spool-keys"), "{e}");
    }

    #[test]
    fn only_authentic_dead_letters_are_revived_and_signed_again() {
        let keys = SigningKeys::new(KEY).unwrap();
        let letter = |raw: Vec<u8>| DeadLetterEntry {
            entry_id: "1-0".into(),
            queue: QueueName::DEFAULT,
            envelope: Envelope::decode(strip(&raw)).ok(),
            raw,
            reason: "attempts_exhausted".into(),
            error: String::new(),
            attempts: 1,
            dead_at: crate::envelope::Timestamp::from_millis(0),
        };
        let signed = letter(wire(&envelope(), Some(&keys), None).unwrap());
        let (_, bytes) = revive(&signed, Some(&keys)).unwrap();
        let next = Envelope::decode(open(Some(&keys), &bytes).unwrap()).unwrap();
        assert_eq!(next.attempt, 2, "a fresh run, signed again");
        // Without the key, the signed bytes go back untouched.
        assert_eq!(revive(&signed, None).unwrap().1, signed.raw);
        // An injected envelope is not laundered into a signed one.
        let injected = letter(envelope().encode().unwrap());
        assert_eq!(revive(&injected, Some(&keys)).unwrap().1, injected.raw);
        let forged =
            letter(wire(&envelope(), Some(&SigningKeys::new(OLD).unwrap()), None).unwrap());
        assert_eq!(revive(&forged, Some(&keys)).unwrap().1, forged.raw);
    }

    #[test]
    fn debug_output_shows_no_key() {
        let keys = SigningKeys::new(KEY).unwrap();
        let shown = format!("{keys:?} {keys:#?}");
        assert!(!shown.contains(KEY) && !shown.contains("0123"), "{shown}");
    }
}

//! Queue names and priorities.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The longest queue name Spool accepts.
pub const MAX_QUEUE_NAME_LEN: usize = 64;

/// The name of a queue: one of the routed queues (`default`, `analysis`,
/// `streaming`, `gpu`) or any name made of ASCII letters, digits, `_`, `-`
/// and `.`, at most [`MAX_QUEUE_NAME_LEN`] bytes long.
///
/// Names are validated because they become part of Redis keys: a brace or a
/// colon would break the hash tag that keeps a queue's keys on one cluster
/// slot.
///
/// # Examples
///
/// ```
/// use spool_broker::QueueName;
///
/// let q: QueueName = "thumbnails".parse()?;
/// assert_eq!(q.as_str(), "thumbnails");
/// assert_eq!(QueueName::GPU.as_str(), "gpu");
/// assert!("bad{name}".parse::<QueueName>().is_err());
/// # Ok::<(), spool_broker::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Cow<'static, str>);

impl QueueName {
    /// The queue tasks go to unless their options say otherwise.
    pub const DEFAULT: Self = Self(Cow::Borrowed("default"));
    /// Quality analysis (VMAF, PSNR, SSIM).
    pub const ANALYSIS: Self = Self(Cow::Borrowed("analysis"));
    /// HLS/DASH packaging.
    pub const STREAMING: Self = Self(Cow::Borrowed("streaming"));
    /// Work that needs a GPU; served only by hosts whose GPU passed a self-test.
    pub const GPU: Self = Self(Cow::Borrowed("gpu"));

    /// The four routed queues every Spool deployment knows.
    pub const ROUTED: [Self; 4] = [Self::DEFAULT, Self::ANALYSIS, Self::STREAMING, Self::GPU];

    /// Validates and wraps a queue name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`] when the name is empty, too long or holds a
    /// character other than ASCII letters, digits, `_`, `-` and `.`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate(&name)?;
        Ok(Self(Cow::Owned(name)))
    }

    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "the name is empty"
    } else if name.len() > MAX_QUEUE_NAME_LEN {
        "the name is longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        "only ASCII letters, digits, '_', '-' and '.' are allowed"
    } else {
        return Ok(());
    };
    Err(Error::InvalidQueueName {
        name: name.to_owned(),
        reason,
    })
}

impl Default for QueueName {
    /// [`QueueName::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for QueueName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(Self::DEFAULT),
            "analysis" => Ok(Self::ANALYSIS),
            "streaming" => Ok(Self::STREAMING),
            "gpu" => Ok(Self::GPU),
            other => Self::new(other),
        }
    }
}

impl TryFrom<&str> for QueueName {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self> {
        s.parse()
    }
}

impl AsRef<str> for QueueName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for QueueName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QueueName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = Cow::<'de, str>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A task's priority within its queue. Each level is its own stream; a worker
/// always drains `High` before `Normal` before `Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served when nothing of higher priority waits.
    Low,
}

impl Priority {
    /// Every level, highest first.
    pub const ALL: [Self; 3] = [Self::High, Self::Normal, Self::Low];

    /// The level's index: 0 for `High`, 1 for `Normal`, 2 for `Low`.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::High => 0,
            Self::Normal => 1,
            Self::Low => 2,
        }
    }

    /// The level for an index from [`Priority::index`].
    #[must_use]
    pub const fn from_index(index: usize) -> Option<Self> {
        match index {
            0 => Some(Self::High),
            1 => Some(Self::Normal),
            2 => Some(Self::Low),
            _ => None,
        }
    }

    /// The lowercase name used in keys, logs and the CLI.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "high" | "0" => Ok(Self::High),
            "normal" | "1" => Ok(Self::Normal),
            "low" | "2" => Ok(Self::Low),
            _ => Err(Error::Config(format!(
                "unknown priority {s:?}: expected high, normal or low"
            ))),
        }
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `index` is at most 2, so the cast cannot truncate.
        serializer.serialize_u8(self.index() as u8)
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let index = u8::deserialize(deserializer)?;
        Self::from_index(usize::from(index))
            .ok_or_else(|| serde::de::Error::custom(format!("unknown priority level {index}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_queues_parse_to_their_constants() {
        for q in QueueName::ROUTED {
            assert_eq!(q.as_str().parse::<QueueName>().unwrap(), q);
        }
    }

    #[test]
    fn invalid_names_are_rejected_with_a_reason() {
        for bad in ["", "a:b", "{gpu}", "with space", &"x".repeat(65)] {
            let err = bad.parse::<QueueName>().unwrap_err();
            assert!(matches!(err, Error::InvalidQueueName { .. }), "{bad:?}");
        }
        assert!("video-hd_2.x".parse::<QueueName>().is_ok());
    }

    #[test]
    fn priority_round_trips_through_msgpack() {
        for p in Priority::ALL {
            let bytes = rmp_serde::to_vec(&p).unwrap();
            assert_eq!(rmp_serde::from_slice::<Priority>(&bytes).unwrap(), p);
        }
        assert!(rmp_serde::from_slice::<Priority>(&rmp_serde::to_vec(&7u8).unwrap()).is_err());
    }

    #[test]
    fn queue_name_deserialization_validates() {
        let bytes = rmp_serde::to_vec("no:colons").unwrap();
        assert!(rmp_serde::from_slice::<QueueName>(&bytes).is_err());
    }
}

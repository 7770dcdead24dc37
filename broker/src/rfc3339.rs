//! The one time format of Spool's JSON: RFC 3339 in UTC with milliseconds
//! (`2026-12-05T23:35:43.123Z`), for `#[serde(with = ...)]` on
//! [`Timestamp`] fields. Every `--json` output of `spoolctl` and
//! `spool-autoscaler` writes times this way (the job store's own columns
//! stay milliseconds since the epoch).
//!
//! # Examples
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use spool_broker::Timestamp;
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct Row {
//!     #[serde(with = "spool_broker::rfc3339")]
//!     at: Timestamp,
//!     #[serde(with = "spool_broker::rfc3339::option")]
//!     until: Option<Timestamp>,
//! }
//!
//! let row = Row { at: Timestamp::from_millis(1_500), until: None };
//! let json = serde_json::to_string(&row)?;
//! assert_eq!(json, r#"{"at":"1970-01-01T00:00:01.500Z","until":null}"#);
//! assert_eq!(serde_json::from_str::<Row>(&json)?, row);
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Deserializer, Serializer};

use crate::envelope::Timestamp;

/// Writes `at` as RFC 3339 with milliseconds.
///
/// # Errors
///
/// Only the serializer's own.
pub fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(at)
}

/// Reads an RFC 3339 time in UTC (`Z`; any fraction of a second).
///
/// # Errors
///
/// When the text is not an RFC 3339 time.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Parses an RFC 3339 time.
///
/// # Errors
///
/// A message saying what is wrong, when `text` is not an RFC 3339 time.
pub fn parse(text: &str) -> Result<Timestamp, String> {
    humantime::parse_rfc3339_weak(text)
        .map(Timestamp::from)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

/// The same for `Option<Timestamp>`: `null` for `None`.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::envelope::Timestamp;

    /// Writes `at` as RFC 3339 with milliseconds, or `null`.
    ///
    /// # Errors
    ///
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(
        at: &Option<Timestamp>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.collect_str(at),
            None => serializer.serialize_none(),
        }
    }

    /// Reads an RFC 3339 time or `null`.
    ///
    /// # Errors
    ///
    /// When the text is not an RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

//! Setting values as operators write them, the same in every binary: in a
//! flag, an environment variable or a TOML file. Durations are humantime
//! (`30s`, `1h 30m`), addresses `host:port` with an IP literal, and
//! optional values take `none`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Whether `text` switches an optional setting off: empty, `none`, `off`
/// or `unlimited` (any case).
#[must_use]
pub fn is_none_word(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "" | "none" | "off" | "unlimited"
    )
}

/// A human-readable duration: `30s`, `1h 30m`, `250ms`.
///
/// # Errors
///
/// A message showing the expected form.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 500ms, 30s or 1h 30m: {e}"))
}

/// An optional duration: [`parse_duration`], or `none`, `off` or `0` (any
/// zero duration) for none.
///
/// # Errors
///
/// A message for text that is neither.
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    if is_none_word(text) || text.trim() == "0" {
        return Ok(None);
    }
    parse_duration(text).map(|d| (!d.is_zero()).then_some(d))
}

/// A listen address with an IP literal (`127.0.0.1:9464`, `[::]:9464`),
/// or `none`/`off` for none.
///
/// # Errors
///
/// A message for text that is not a socket address.
pub fn parse_optional_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    if is_none_word(text) {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is not an address such as 127.0.0.1:9464 (or none)"))
}

/// A duration flag or file value: humantime text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(Self)
    }
}

/// An optional duration flag or file value: humantime text, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalDuration(pub Option<Duration>);

impl FromStr for OptionalDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_optional_duration(text).map(Self)
    }
}

/// An optional listen address: `host:port`, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl FromStr for OptionalAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_optional_addr(text).map(Self)
    }
}

/// An optional file: a path, or `none` (or nothing) for none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalPath(pub Option<PathBuf>);

impl FromStr for OptionalPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        Ok(Self(
            (!text.is_empty() && !text.eq_ignore_ascii_case("none")).then(|| PathBuf::from(text)),
        ))
    }
}

/// Serde for a [`Duration`] as humantime text (`"30s"`), so settings read
/// the way operators write them, in TOML files and printed JSON alike.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as humantime text.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Reads humantime text.
    ///
    /// # Errors
    ///
    /// A message showing the expected form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for an optional [`Duration`]: humantime text, `"none"` for none
/// (TOML has no null); null reads as none too.
pub mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes humantime text, or `"none"`.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_str("none"),
        }
    }

    /// Reads humantime text, `"none"` or null. (Unlike a flag's `0`, a
    /// zero duration stays a duration: files mean what they write.)
    ///
    /// # Errors
    ///
    /// A message showing the expected form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) if super::is_none_word(&text) => Ok(None),
            Some(text) => super::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Serde for an optional [`SocketAddr`]: text,
/// `"none"` for none; null reads as none too.
pub mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the address, or `"none"`.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str("none"),
        }
    }

    /// Reads an address, `"none"` or null.
    ///
    /// # Errors
    ///
    /// A message showing the expected form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::parse_optional_addr(&text).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_addresses_and_none() {
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_optional_duration("none"), Ok(None));
        assert_eq!(parse_optional_duration("0"), Ok(None));
        assert_eq!(
            parse_optional_duration("55m"),
            Ok(Some(Duration::from_secs(3300)))
        );
        assert_eq!(parse_optional_addr("off"), Ok(None));
        assert!(parse_optional_addr("127.0.0.1:9464").is_ok_and(|a| a.is_some()));
        assert!(parse_optional_addr("localhost").is_err());
        assert_eq!("none".parse(), Ok(OptionalPath(None)));
        assert_eq!(
            " a.pem ".parse(),
            Ok(OptionalPath(Some(PathBuf::from("a.pem"))))
        );
    }
}

//! The worker's setting values: sizes, counts, queue lists, names. Each
//! type reads the text as it came from a flag, an environment variable or
//! the TOML file ([`FromText`], and `FromStr` for clap), so every source
//! accepts the same spellings. Durations, addresses and paths are
//! `spool_cli_common::text`'s, shared with the other binaries.

use std::path::PathBuf;
use std::str::FromStr;

use spool_broker::QueueName;
use spool_cli_common::layered::FromText;
use spool_cli_common::text::is_none_word as is_none;

/// A byte size: `2GiB`, `512MiB`, `1.5G`, `64kB`, `1048576`. Binary
/// suffixes (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024; decimal ones
/// (`k`/`kB`, `M`/`MB`, `G`/`GB`, `T`/`TB`) powers of 1000.
///
/// # Errors
///
/// A message for text that is not a size.
pub fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB)"
            ));
        }
    };
    if number.is_empty() {
        return Err(format!("{text:?} is not a size, such as 2GiB"));
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    let fraction: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size, such as 2GiB"))?;
    // Exact for the sizes people write; f64 covers far beyond any RAM.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let bytes = (fraction * multiplier as f64).round() as u64;
    Ok(bytes)
}

/// An optional byte size: [`size`], or `none`/`off`/`0` for no limit.
///
/// # Errors
///
/// A message for text that is not a size.
pub fn optional_size(text: &str) -> Result<Option<u64>, String> {
    if is_none(text) {
        return Ok(None);
    }
    size(text).map(|bytes| (bytes > 0).then_some(bytes))
}

/// A count of at least `min`.
///
/// # Errors
///
/// A message for text that is not such a number.
pub fn count(text: &str, min: u64) -> Result<u64, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if n < min {
        return Err(format!("must be at least {min}, not {n}"));
    }
    Ok(n)
}

/// An optional count: a positive number, or `none`/`off`/`0` for no limit.
///
/// # Errors
///
/// A message for text that is not a number.
pub fn optional_count(text: &str) -> Result<Option<u64>, String> {
    if is_none(text) {
        return Ok(None);
    }
    count(text, 0).map(|n| (n > 0).then_some(n))
}

/// A count, or `auto` for `None` (the caller's computed default).
///
/// # Errors
///
/// A message for text that is neither.
pub fn auto_count(text: &str, min: u64) -> Result<Option<u64>, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    count(text, min).map(Some)
}

/// A comma-separated list of queue names, without duplicates, in order.
///
/// # Errors
///
/// A message naming the first invalid queue name, or for an empty list.
pub fn queues(text: &str) -> Result<Vec<QueueName>, String> {
    let mut out: Vec<QueueName> = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let queue = QueueName::new(name).map_err(|e| e.to_string())?;
        if !out.contains(&queue) {
            out.push(queue);
        }
    }
    if out.is_empty() {
        return Err("at least one queue is needed".to_owned());
    }
    Ok(out)
}

/// A worker name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`, since it
/// becomes part of consumer names and registry keys.
///
/// # Errors
///
/// A message for any other name.
pub fn name(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 64 {
        return Err("must be 1 to 64 characters".to_owned());
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "{text:?}: only ASCII letters, digits, '_', '-' and '.' are allowed"
        ));
    }
    Ok(text.to_owned())
}

/// A switch's value: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`
/// (`--no-video` alone is `true`).
///
/// # Errors
///
/// A message for anything else.
pub fn switch(text: &str) -> Result<bool, String> {
    bool::from_text(text)
}

/// Implements `FromStr` (for clap) and [`FromText`] (for the file) with
/// one parser.
macro_rules! value_type {
    ($(#[$meta:meta])* $name:ident($inner:ty) = $parse:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub $inner);

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                let parse: fn(&str) -> Result<$inner, String> = $parse;
                parse(text).map(Self)
            }
        }

        impl FromText for $name {
            fn from_text(text: &str) -> Result<Self, String> {
                text.parse()
            }
        }
    };
}

value_type!(
    /// The queues to serve: a comma-separated list (or a TOML array).
    QueueList(Vec<QueueName>) = queues
);
value_type!(
    /// A count, or `auto` for the computed default.
    AutoCount(Option<u64>) = |t| auto_count(t, 1)
);
value_type!(
    /// A count, or `none` (or `0`) for no limit.
    OptionalCount(Option<u64>) = optional_count
);
value_type!(
    /// A byte size such as `2GiB`, or `none` (or `0`) for no limit.
    OptionalSize(Option<u64>) = optional_size
);
value_type!(
    /// A byte size such as `16MiB`.
    ByteSize(u64) = size
);
value_type!(
    /// A worker name.
    WorkerName(String) = name
);
value_type!(
    /// A path, or `auto` to search for it.
    AutoPath(Option<std::path::PathBuf>) = |t| {
        let t = t.trim();
        Ok((!t.is_empty() && !t.eq_ignore_ascii_case("auto")).then(|| PathBuf::from(t)))
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("2 GiB"), Ok(2 << 30));
        assert_eq!(size("512mib"), Ok(512 << 20));
        assert_eq!(size("1.5GiB"), Ok(3 << 29));
        assert_eq!(size("2G"), Ok(2_000_000_000));
        assert_eq!(size("64kB"), Ok(64_000));
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert!(size("2 gallons").is_err());
        assert!(size("GiB").is_err());
        assert!(size("99999999999TiB").is_err());
        assert_eq!(optional_size("none"), Ok(None));
        assert_eq!(optional_size("0"), Ok(None));
        assert_eq!(optional_size("1KiB"), Ok(Some(1024)));
    }

    #[test]
    fn counts_queues_and_names() {
        assert_eq!(count("4", 1), Ok(4));
        assert!(count("0", 1).is_err());
        assert_eq!(optional_count("0"), Ok(None));
        assert_eq!(optional_count("10"), Ok(Some(10)));
        assert_eq!(auto_count("auto", 1), Ok(None));
        let q = queues("default, analysis,default").expect("valid");
        assert_eq!(q, vec![QueueName::DEFAULT, QueueName::ANALYSIS]);
        assert!(queues(" , ").is_err());
        assert!(queues("bad queue").is_err());
        assert!(name("gpu-node.1").is_ok());
        assert!(name("gpu node").is_err());
    }
}

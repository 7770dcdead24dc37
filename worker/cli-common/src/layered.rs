//! Settings in layers: flags over environment variables (clap reads
//! both) over a TOML file over defaults, each setting declared once with
//! [`layered!`](crate::layered!).

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Deserializer;
use serde::de::{self, SeqAccess, Visitor};

use crate::LogFormat;
use crate::text::{HumanDuration, OptionalAddr, OptionalDuration, OptionalPath};

/// A setting's type, read from the text an operator wrote: the same
/// spellings in a flag, an environment variable and a TOML file.
pub trait FromText: Sized {
    /// Parses `text`.
    ///
    /// # Errors
    ///
    /// A message saying what was expected.
    fn from_text(text: &str) -> Result<Self, String>;
}

impl FromText for String {
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.trim().to_owned())
    }
}

impl FromText for PathBuf {
    fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            Err("a path is needed".to_owned())
        } else {
            Ok(PathBuf::from(text))
        }
    }
}

/// A comma-separated list of paths (a TOML array is joined first).
impl FromText for Vec<PathBuf> {
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect())
    }
}

/// `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`.
impl FromText for bool {
    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" | "" => Ok(false),
            other => Err(format!("{other:?} is not true or false")),
        }
    }
}

macro_rules! count_from_text {
    ($($t:ty),*) => {$(
        impl FromText for $t {
            fn from_text(text: &str) -> Result<Self, String> {
                text.trim()
                    .parse()
                    .map_err(|_| format!("{text:?} is not a whole number"))
            }
        }
    )*};
}
count_from_text!(u32, u64, usize);

macro_rules! from_text_via_from_str {
    ($($t:ty),*) => {$(
        impl FromText for $t {
            fn from_text(text: &str) -> Result<Self, String> {
                text.parse()
            }
        }
    )*};
}
from_text_via_from_str!(HumanDuration, OptionalDuration, OptionalAddr, OptionalPath);

impl FromText for LogFormat {
    fn from_text(text: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(text.trim(), true)
            .map_err(|_| format!("{text:?} is not a log format: use human or json"))
    }
}

/// Deserializes an optional setting from a TOML value written the way the
/// flag is: a string parsed by [`FromText`], or a number, boolean or array
/// of strings (joined with commas) taken as that text, so
/// `concurrency = 4` and `concurrency = "4"` mean the same.
///
/// # Errors
///
/// The setting's parse error, or a type no flag could spell (a table, a
/// date).
pub fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromText,
{
    struct Text<T>(PhantomData<T>);

    impl<'de, T: FromText> Visitor<'de> for Text<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, number, boolean or array of strings")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            T::from_text(v).map(Some).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut parts = Vec::new();
            while let Some(part) = seq.next_element::<String>()? {
                parts.push(part);
            }
            self.visit_str(&parts.join(","))
        }
    }

    d.deserialize_any(Text(PhantomData))
}

/// Reads the TOML file at `path` into a table whose keys are spelled with
/// `_` (a file may write `max-memory-per-child` like the flag).
///
/// # Errors
///
/// A message naming the file: unreadable, not TOML, or a key given twice
/// (once with `-`, once with `_`).
pub fn read_toml_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("{} is not valid TOML: {}", path.display(), one_line(&e)))?;
    let mut out = toml::Table::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        if out.insert(id.clone(), value).is_some() {
            return Err(format!("{}: {id} is given twice", path.display()));
        }
    }
    Ok(out)
}

/// Deserializes `table` (read from `path`) into a layer.
///
/// # Errors
///
/// A message naming the file and the key: an unknown key, or a value of
/// the wrong type or that does not parse.
pub fn from_table<T: serde::de::DeserializeOwned>(
    path: &Path,
    table: toml::Table,
) -> Result<T, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e| format!("{}: {}", path.display(), one_line(&e)))
}

/// A TOML error on one line: the message, then the key it concerns.
fn one_line(e: &toml::de::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Declares settings once and derives their layers: a clap `Args` struct
/// of optional flags (`$flags`, environment variables included), a serde
/// struct of the same optional keys for a TOML file (`$file`, unknown
/// keys refused, values read by [`lenient`]), and the merge: flags over
/// the file, the caller then applying defaults. The flags' `Debug` shows
/// which are set, never their values (URLs hold passwords).
///
/// Each entry is the setting's doc comment, its `#[arg(...)]` attributes
/// and `name: Type`; the flag field is `Option<Type>`, as is the file's.
#[macro_export]
macro_rules! layered {
    (
        $(#[$flags_meta:meta])*
        pub struct $flags:ident / $file:ident {
            $(
                $(#[doc = $doc:literal])*
                #[arg($($arg:tt)*)]
                $name:ident : $ty:ty,
            )*
        }
    ) => {
        $(#[$flags_meta])*
        #[derive(::clap::Args, Clone, Default, PartialEq)]
        pub struct $flags {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $name: Option<$ty>,
            )*
        }

        /// The same settings as a TOML file's keys, each optional.
        #[derive(::serde::Deserialize, Clone, Default, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct $file {
            $(
                $(#[doc = $doc])*
                #[serde(default, deserialize_with = "::spool_cli_common::layered::lenient")]
                pub $name: Option<$ty>,
            )*
        }

        impl $file {
            /// The keys a file may hold.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($name)),*];
        }

        impl $flags {
            /// These flags (and environment variables) over `file`: each
            /// setting given here wins, the file's fills the rest.
            #[must_use]
            pub fn over(self, file: $file) -> $file {
                $file {
                    $( $name: self.$name.or(file.$name), )*
                }
            }
        }

        impl ::std::fmt::Debug for $flags {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let set: &[&str] = &[$( if self.$name.is_some() { stringify!($name) } else { "" } ),*];
                f.debug_struct(stringify!($flags))
                    .field("set", &set.iter().filter(|s| !s.is_empty()).collect::<Vec<_>>())
                    .finish()
            }
        }

        impl ::std::fmt::Debug for $file {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let set: &[&str] = &[$( if self.$name.is_some() { stringify!($name) } else { "" } ),*];
                f.debug_struct(stringify!($file))
                    .field("set", &set.iter().filter(|s| !s.is_empty()).collect::<Vec<_>>())
                    .finish()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct One {
        #[serde(default, deserialize_with = "lenient")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "lenient")]
        roots: Option<Vec<PathBuf>>,
        #[serde(default, deserialize_with = "lenient")]
        on: Option<bool>,
    }

    #[test]
    fn lenient_values_read_like_flags() {
        let one: One = toml::from_str("n = \"4\"\nroots = [\"a\", \"b\"]\non = \"yes\"").unwrap();
        assert_eq!(one.n, Some(4));
        assert_eq!(
            one.roots,
            Some(vec![PathBuf::from("a"), PathBuf::from("b")])
        );
        assert_eq!(one.on, Some(true));
        let one: One = toml::from_str("n = 4\non = true").unwrap();
        assert_eq!((one.n, one.on), (Some(4), Some(true)));
        let e = toml::from_str::<One>("n = true").unwrap_err().to_string();
        assert!(e.contains("\"true\" is not a whole number"), "{e}");
        let e = toml::from_str::<One>("n = { a = 1 }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
    }
}

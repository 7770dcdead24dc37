//! The `--config` TOML file: the connection keys and the worker's, each
//! spelled like its flag with `_` or `-`; an unknown key or a value of the
//! wrong type is an error naming the file and the key.

use std::path::Path;

use spool_cli_common::ConnectionFile;
use spool_cli_common::layered::{from_table, read_toml_table};

use super::flags::WorkerFile;
use crate::{Error, Result};

/// Reads the file at `path` into its two layers.
///
/// # Errors
///
/// [`Error::Config`] naming the file: unreadable, not TOML, an unknown key
/// (the message lists the known ones), or a bad value (naming its key).
pub(super) fn load(path: &Path) -> Result<(ConnectionFile, WorkerFile)> {
    let mut table = read_toml_table(path).map_err(Error::Config)?;
    if let Some(unknown) = table.keys().find(|k| {
        !ConnectionFile::KEYS.contains(&k.as_str()) && !WorkerFile::KEYS.contains(&k.as_str())
    }) {
        let known: Vec<&str> = ConnectionFile::KEYS
            .iter()
            .chain(WorkerFile::KEYS)
            .copied()
            .collect();
        return Err(Error::Config(format!(
            "{}: unknown key `{unknown}` (known: {})",
            path.display(),
            known.join(", ")
        )));
    }
    let mut connection = toml::Table::new();
    for key in ConnectionFile::KEYS {
        if let Some(value) = table.remove(*key) {
            connection.insert((*key).to_owned(), value);
        }
    }
    Ok((
        from_table(path, connection).map_err(Error::Config)?,
        from_table(path, table).map_err(Error::Config)?,
    ))
}

//! The `spool-worker` command line: flags, environment variables and an
//! optional TOML file merged into one [`Settings`].
//!
//! Every setting can be given three ways. The first found wins:
//!
//! 1. a flag: `--max-memory-per-child 2GiB`;
//! 2. an environment variable: `SPOOL_MAX_MEMORY_PER_CHILD=2GiB`;
//! 3. a key of the TOML file named by `--config` (or `SPOOL_CONFIG`), spelled
//!    like the flag with `_` or `-`: `max_memory_per_child = "2GiB"`;
//!
//! and otherwise its default, which `--help` shows. Durations are
//! human-readable (`30s`, `55m`, `1h 30m`), sizes too (`512MiB`, `2GiB`),
//! and limits take `none` for none.
//!
//! Each setting is declared once: the connection flags every binary shares
//! in `spool_cli_common::ConnectionArgs`, the worker's own in `flags.rs`
//! (which derives the flag, its variable and its file key from one
//! declaration); `file.rs` reads the file and `settings.rs` applies the
//! defaults and checks the result.

mod file;
mod flags;
pub mod parse;
mod settings;
#[cfg(test)]
mod tests;
mod video;

use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use spool_cli_common::ConnectionArgs;

pub use self::flags::{WorkerArgs, WorkerFile};
pub use self::settings::{MIN_MEMORY_PER_CHILD, Settings, WORKER_COMMAND_TIMEOUT};
pub use self::video::video_tasks;
pub use spool_cli_common::{LogFormat, Telemetry, init_logging};

use crate::{Error, Result};

/// The environment variable through which a supervisor hands a child its
/// [`ChildSpec`](crate::supervisor::ChildSpec).
pub const CHILD_SPEC_ENV: &str = "SPOOL_CHILD_SPEC";

/// The command line of `spool-worker`, before merging with the
/// configuration file; see [`Args::resolve`].
// (Its `Debug` output names the settings given, never their values: the
// URLs may hold passwords. Not in the doc comment, which clap would print
// as the long about.)
#[derive(Clone, Debug, Parser)]
#[command(
    name = "spool-worker",
    version,
    about = "Run Spool workers: a supervisor with prefork child processes that fetch tasks from Redis Streams and run them.",
    after_help = "Every flag can also be set with its SPOOL_* environment variable or as a key of the --config TOML file (max_memory_per_child = \"2GiB\"); flags win over the environment, which wins over the file. Durations and sizes are human-readable: 30s, 55m, 1h 30m, 512MiB, 2GiB; limits take \"none\"."
)]
pub struct Args {
    /// A TOML file of settings, keyed like the long flags.
    #[arg(long, env = "SPOOL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    // Redis, the key prefix, signing, TLS, the job store. (No doc comment:
    // clap would take it for the command's long about.)
    #[command(flatten)]
    pub connection: ConnectionArgs,

    // The worker's own settings.
    #[command(flatten)]
    pub worker: WorkerArgs,

    /// Probe the hardware, print the capabilities as JSON, and exit.
    #[arg(long, conflicts_with_all = ["print_config", "child"])]
    pub probe_only: bool,

    /// Print the merged settings as JSON, and exit.
    #[arg(long, conflicts_with = "child")]
    pub print_config: bool,

    /// Run as a supervisor's child (internal: the settings come from the
    /// supervisor through SPOOL_CHILD_SPEC).
    #[arg(long, hide = true)]
    pub child: bool,
}

impl Args {
    /// Merges the flags (and the environment, which clap has read) over
    /// the configuration file, applies the defaults and validates.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the setting and what is wrong with it, or
    /// the file and the key.
    pub fn resolve(self) -> Result<Invocation> {
        if self.child {
            return child_spec().map(|spec| Invocation::Child(Box::new(spec)));
        }
        let (connection, worker) = match &self.config {
            Some(path) => file::load(path)?,
            None => Default::default(),
        };
        let settings =
            Settings::resolve(self.connection.over(connection), self.worker.over(worker))?;
        Ok(if self.probe_only {
            Invocation::Probe(settings)
        } else if self.print_config {
            Invocation::PrintConfig(settings)
        } else {
            Invocation::Run(settings)
        })
    }
}

/// What the command line asks for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Invocation {
    /// Run workers (a supervisor, or one in-process worker).
    Run(Settings),
    /// Probe the hardware, print the capabilities, exit.
    Probe(Settings),
    /// Print the merged settings, exit.
    PrintConfig(Settings),
    /// Run as a supervisor's child.
    Child(Box<crate::supervisor::ChildSpec>),
}

impl Invocation {
    /// The settings in effect (logging is set up from them).
    #[must_use]
    pub fn settings(&self) -> &Settings {
        match self {
            Self::Run(s) | Self::Probe(s) | Self::PrintConfig(s) => s,
            Self::Child(spec) => &spec.settings,
        }
    }
}

/// The clap command, with every flag and its environment variable.
#[must_use]
pub fn command() -> clap::Command {
    Args::command()
}

fn child_spec() -> Result<crate::supervisor::ChildSpec> {
    let text = std::env::var(CHILD_SPEC_ENV).map_err(|_| {
        Error::Config(format!(
            "--child is internal: a supervisor sets {CHILD_SPEC_ENV}"
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{CHILD_SPEC_ENV} does not decode: {e}")))
}

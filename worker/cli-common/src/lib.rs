//! `spool-cli-common`: what every Spool binary shares, so each is spelled
//! once: the connection flags ([`ConnectionArgs`], resolved into a
//! [`Connection`]), settings in layers ([`layered!`]: flags over the
//! environment over a TOML file over defaults), the spellings of
//! durations, addresses and `none` ([`text`]), the logging set-up
//! ([`init_logging`], with span export over OTLP when the standard
//! `OTEL_*` variables ask for it: [`telemetry`]), flag parsing that names the environment variable a
//! bad value came from ([`parse_args`]), the `/metrics` endpoint
//! ([`serve_metrics`]) and, with the `nvml` feature, the words for NVML's
//! errors.
//!
//! This is the binaries' crate (and `spool-video`'s, for the NVML words),
//! not an application's: apps embed `spool-sdk` and `spool-worker`, which
//! compile none of clap, hyper or NVML.

// Library crates: every public item documented, and nothing `pub` that the
// crate does not export.
#![warn(missing_docs, unreachable_pub)]

// The `layered!` macro names this crate by path, from here too.
extern crate self as spool_cli_common;

mod args;
mod connection;
mod error;
pub mod layered;
mod logging;
mod metrics;
#[cfg(feature = "nvml")]
mod nvml;
pub mod telemetry;
pub mod text;
mod tls;

pub use crate::args::{name_env_source, parse as parse_args};
pub use crate::connection::{
    CONNECTION_HEADING, Connection, ConnectionArgs, ConnectionFile, DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_REDIS_URL, NO_STORE,
};
pub use crate::error::{Error, Result};
pub use crate::logging::{LogFormat, init_logging, init_logging_with};
pub use crate::metrics::{
    Readiness, process_metrics, serve_fn as serve_metrics, serve_with_readiness,
};
#[cfg(feature = "nvml")]
pub use crate::nvml::explain_nvml_error;
pub use crate::telemetry::{ExportSwitch, OtlpProtocol, OtlpSettings, Telemetry};
pub use crate::tls::TlsArgs;

/// The global allocator of Spool's binaries, mimalloc: each binary's main
/// file sets it (`#[global_allocator] static ALLOCATOR: Allocator =
/// Allocator;`), a library never does, so an application that embeds
/// `spool-worker` keeps its own. Against glibc's malloc, a tenth less CPU
/// for the same drain with span export on (docs/benchmarks.md, "Tracing").
pub use mimalloc::MiMalloc as Allocator;

//! `spool-cli-common`: what every Spool binary shares, so each is spelled
//! once: the connection flags ([`TlsArgs`]), the logging set-up
//! ([`init_logging`]), the `/metrics` endpoint ([`serve_metrics`]) and,
//! with the `nvml` feature, the words for NVML's errors.
//!
//! This is the binaries' crate (and `spool-video`'s, for the NVML words),
//! not an application's: apps embed `spool-sdk` and `spool-worker`, which
//! compile none of clap, hyper or NVML.

// Library crates: every public item documented, and nothing `pub` that the
// crate does not export.
#![warn(missing_docs, unreachable_pub)]

mod logging;
mod metrics;
#[cfg(feature = "nvml")]
mod nvml;
mod tls;

pub use crate::logging::{LogFormat, init_logging};
pub use crate::metrics::serve_fn as serve_metrics;
#[cfg(feature = "nvml")]
pub use crate::nvml::explain_nvml_error;
pub use crate::tls::TlsArgs;

//! Logging set-up, the same for every Spool binary.

use std::ffi::OsString;
use std::io::IsTerminal as _;

use serde::{Deserialize, Serialize};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::telemetry::{self, ExportSwitch, OtlpSettings, Telemetry};

/// How logs are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Sets up logging to stderr in `format`, filtered by `filter` (an
/// `EnvFilter` directive such as `info` or `spool_worker=debug`);
/// `RUST_LOG`, when set, wins. A filter that does not parse falls back to
/// `info`. Human lines are coloured only on a terminal, and never with
/// `NO_COLOR` set. Logging set up twice keeps the first.
///
/// When the standard `OTEL_*` variables ask for it, spans are also
/// exported over OTLP (see [`OtlpSettings::from_env`]); a setting Spool
/// cannot follow is logged as a warning and export stays off. Hold the
/// returned [`Telemetry`] until the end of `main`: dropping it sends the
/// spans still batched.
pub fn init_logging(format: LogFormat, filter: &str) -> Telemetry {
    match OtlpSettings::from_env() {
        Ok(export) => init_logging_with(format, filter, export.as_ref(), None),
        Err(e) => {
            let telemetry = init_logging_with(format, filter, None, None);
            tracing::warn!("spans are not exported: {e}");
            telemetry
        }
    }
}

/// [`init_logging`] with span export as `export` says (`None`: off)
/// rather than as the environment does, and, with `switch`, spans
/// recorded only while it is on. An exporter that cannot be built is
/// logged as a warning, and export stays off.
pub fn init_logging_with(
    format: LogFormat,
    filter: &str,
    export: Option<&OtlpSettings>,
    switch: Option<ExportSwitch>,
) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let exporter = export.map(telemetry::provider);
    let Some(Ok((provider, runtime))) = exporter else {
        // No export: exactly the subscriber of old, with its global filter.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        let _ = match format {
            LogFormat::Human => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        if let Some(Err(e)) = exporter {
            tracing::warn!("spans are not exported: {e}");
        }
        return Telemetry::default();
    };
    // The log filter applies to the log lines only: spans go to the
    // collector at `info` whatever the log level.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Human => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    let spans = match switch {
        None => telemetry::layer(&provider)
            .with_filter(tracing_subscriber::filter::filter_fn(telemetry::records))
            .boxed(),
        Some(switch) => telemetry::layer(&provider)
            .with_filter(tracing_subscriber::filter::dynamic_filter_fn(
                move |metadata, _| switch.is_on() && telemetry::records(metadata),
            ))
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .try_init();
    Telemetry::new(Some(provider), runtime)
}

/// Whether to colour: on a terminal, unless `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some(OsString::new())));
    }
}

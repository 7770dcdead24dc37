//! Span export over OTLP (issue 18), configured by OpenTelemetry's
//! standard environment variables and off unless they ask for it.
//!
//! Export is on when `OTEL_TRACES_EXPORTER` is `otlp`, or when it is unset
//! and an endpoint is given (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`); `OTEL_TRACES_EXPORTER=none` or
//! `OTEL_SDK_DISABLED=true` turn it off whatever else is set. When it is
//! off, nothing here runs: no exporter, no connection, no propagator and
//! no OpenTelemetry layer, so logging costs what it did before.
//!
//! When it is on, every binary's `tracing` spans at `info` and above also
//! go to an OpenTelemetry layer (whatever the log filter), batched and
//! sent by OTLP over HTTP (`http/protobuf`, the default) or gRPC
//! (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc` or its `_TRACES_` form). The
//! exporter itself reads the rest of the standard variables: headers
//! (`OTEL_EXPORTER_OTLP_HEADERS`, for an API key), timeout, compression;
//! the SDK reads the sampler (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`), the batch limits (`OTEL_BSP_*`) and the
//! resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`; the service
//! name defaults to the binary's). The W3C trace-context and baggage
//! propagators are installed globally, which is what `spool-sdk` and
//! `spool-worker` (with their `otel` feature) inject and extract with.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::error::{Error, Result};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (`http/protobuf`), to port 4318 by default: the
    /// OpenTelemetry specification's default.
    #[default]
    HttpProtobuf,
    /// gRPC (`grpc`), to port 4317 by default.
    Grpc,
}

/// Where and how spans are exported, when they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The protocol. Default: `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// The endpoint, when given here rather than by the environment: a
    /// base URL for gRPC, the full `/v1/traces` URL for HTTP. Default:
    /// none (the exporter reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, then uses localhost).
    pub endpoint: Option<String>,
    /// The `service.name` of the spans unless `OTEL_SERVICE_NAME` or
    /// `OTEL_RESOURCE_ATTRIBUTES` give one. Default: none (the binary's
    /// file name is used).
    pub service_name: Option<String>,
}

impl OtlpSettings {
    /// The settings the standard `OTEL_*` environment variables ask for,
    /// or `None` when they ask for no span export.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an exporter or protocol Spool does not
    /// support (`OTEL_TRACES_EXPORTER=zipkin`, `http/json`).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the variables read by `var`.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint_given = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None if !endpoint_given => return Ok(None),
            None => {}
            Some(exporter) => {
                // A list is allowed; Spool exports to OTLP only.
                let exporters: Vec<&str> = exporter.split(',').map(str::trim).collect();
                if exporters.contains(&"none") {
                    return Ok(None);
                }
                if let Some(other) = exporters.iter().find(|e| **e != "otlp") {
                    return Err(Error::Config(format!(
                        "OTEL_TRACES_EXPORTER={other} is not supported: Spool exports spans \
                         with otlp (or none)"
                    )));
                }
            }
        }
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
            .map(str::trim)
        {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(Error::Config(format!(
                    "OTLP protocol {other:?} is not supported: use grpc or http/protobuf"
                )));
            }
        };
        Ok(Some(Self {
            protocol,
            ..Self::default()
        }))
    }
}

/// Turns span recording on and off while a process runs, for a benchmark
/// that measures both in one run. Cloning shares the switch. On when
/// made.
#[derive(Debug, Clone)]
pub struct ExportSwitch(Arc<AtomicBool>);

impl Default for ExportSwitch {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl ExportSwitch {
    /// Records and exports spans from now on (`true`) or not.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    /// Whether spans are recorded now.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Keeps span export running; dropping it sends the spans still batched
/// and stops the exporter. Hold it until the end of `main`. Without
/// export it holds nothing.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The gRPC exporter's connections run here.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Whether spans are exported.
    #[must_use]
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans batched so far.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Flushes what is batched, waiting at most the export timeout.
            let _ = provider.shutdown();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The tracer provider for `settings`, with the runtime the gRPC exporter
/// needs.
pub(crate) fn provider(
    settings: &OtlpSettings,
) -> Result<(SdkTracerProvider, Option<tokio::runtime::Runtime>)> {
    let failed = |e: &dyn std::fmt::Display| Error::Config(format!("OTLP span exporter: {e}"));
    // The HTTP exporter's client (rustls, for https endpoints) needs a
    // crypto provider before it is built: ring, as for `rediss://` (a
    // second install is refused harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (exporter, runtime) = match settings.protocol {
        OtlpProtocol::HttpProtobuf => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(endpoint) = &settings.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            (builder.build().map_err(|e| failed(&e))?, None)
        }
        OtlpProtocol::Grpc => {
            // tonic's channel runs its connection as a tokio task; the
            // batch processor exports from a thread of its own, so the
            // channel gets a small runtime of its own too.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("spool-otlp")
                .enable_all()
                .build()
                .map_err(|e| failed(&e))?;
            let _entered = runtime.enter();
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(endpoint) = &settings.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            (builder.build().map_err(|e| failed(&e))?, Some(runtime))
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named_by_env = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    if !named_by_env {
        let name = settings.service_name.clone().or_else(binary_name);
        if let Some(name) = name {
            resource = resource.with_service_name(name);
        }
    }
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch_config(|name| std::env::var_os(name).is_some()))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build();
    let propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ];
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(propagators));
    Ok((provider, runtime))
}

/// Spans the batch processor holds before it drops new ones, unless
/// `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise: a worker ends a span per task
/// and a few settle spans per group commit, so the specification's 2,048
/// (a fiftieth of a second of a fast drain) would drop spans whenever an
/// export takes longer than that.
pub const SPAN_QUEUE_SIZE: usize = 65_536;

/// Spans per export request, unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says
/// otherwise: the specification's 512 (about 200 kB of protobuf). Larger
/// requests were tried (4,096 spans, 1.7 MB) and cost the worker more CPU
/// per span, not less: the batch, its protobuf copy and the request body
/// no longer fit the caches, and the allocator spends its time splitting
/// and merging megabyte blocks (`spool-bench --trace-export`, see
/// docs/benchmarks.md).
pub const SPAN_EXPORT_BATCH: usize = 512;

/// The batch processor's settings: the `OTEL_BSP_*` variables, with
/// Spool's queue and batch sizes where they give none (`is_set` says which
/// are given).
fn batch_config(is_set: impl Fn(&str) -> bool) -> opentelemetry_sdk::trace::BatchConfig {
    let mut config = opentelemetry_sdk::trace::BatchConfigBuilder::default();
    if !is_set("OTEL_BSP_MAX_QUEUE_SIZE") {
        config = config.with_max_queue_size(SPAN_QUEUE_SIZE);
    }
    if !is_set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        config = config.with_max_export_batch_size(SPAN_EXPORT_BATCH);
    }
    config.build()
}

/// Whether the OpenTelemetry layer records a span or event with
/// `metadata`, at `info` and above: Spool's own spans only when they are
/// operations on tasks (a task's `process`, `publish`, `settle`, a
/// workflow's submit, an FFmpeg run inside a task), not the long-lived
/// ones that hold a process's logs together (`worker`, `child`, `beat`),
/// which would come out as one span hours long; everything else as it is.
pub(crate) fn records(metadata: &tracing::Metadata<'_>) -> bool {
    if *metadata.level() > tracing::Level::INFO {
        return false;
    }
    if !metadata.is_span() || !metadata.target().starts_with("spool_") {
        return true;
    }
    matches!(
        metadata.name(),
        "task" | "publish" | "settle" | "workflow submit" | "ffmpeg"
    )
}

/// The OpenTelemetry layer over `provider`'s tracer: spans only, without
/// the per-span extras (thread, source location, idle time) that cost a
/// hot path more than they tell.
pub(crate) fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("spool"))
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
}

impl Telemetry {
    pub(crate) fn new(
        provider: Option<SdkTracerProvider>,
        runtime: Option<tokio::runtime::Runtime>,
    ) -> Self {
        Self { provider, runtime }
    }
}

/// The file name of the running binary (`spool-worker`, `spoolctl`...).
fn binary_name() -> Option<String> {
    let exe = std::env::args_os().next()?;
    let name = std::path::Path::new(&exe).file_name()?;
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>> {
        OtlpSettings::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn export_is_off_unless_asked_for() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap(),
            None
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap(),
            None
        );
    }

    #[test]
    fn an_endpoint_or_the_otlp_exporter_turns_it_on() {
        let on = Some(OtlpSettings::default());
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap(),
            on
        );
        assert_eq!(
            settings(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )])
            .unwrap(),
            on
        );
        assert_eq!(settings(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap(), on);
        let grpc = settings(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(grpc.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn the_batch_sizes_are_spools_unless_the_environment_gives_them() {
        let config = format!("{:?}", batch_config(|_| false));
        assert!(config.contains("max_queue_size: 65536"), "{config}");
        assert!(config.contains("max_export_batch_size: 512"), "{config}");
        let config = format!("{:?}", batch_config(|_| true));
        assert!(config.contains("max_queue_size: 2048"), "{config}");
        assert!(config.contains("max_export_batch_size: 512"), "{config}");
    }

    #[test]
    fn what_spool_cannot_export_is_refused_by_name() {
        let error = settings(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(error.to_string().contains("zipkin"), "{error}");
        let error = settings(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert!(error.to_string().contains("http/json"), "{error}");
    }
}

//! What a video task reports on its task span for span export (issue 18):
//! the encoder, frame rate and speed of a transcode, the scores of an
//! analysis, the renditions of a package. Without an OpenTelemetry layer
//! (no `OTEL_*` export configured) this records nothing.

use opentelemetry::KeyValue;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Sets `attributes` on the current span: the task's, where a handler runs.
pub(crate) fn record(attributes: impl IntoIterator<Item = KeyValue>) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    for attribute in attributes {
        span.set_attribute(attribute.key, attribute.value);
    }
}

//! Each task's span continues the trace its producer started (issue 18):
//! the `task` span takes the context in the envelope's headers as its
//! parent and carries the messaging attributes, and each settlement gets a
//! `settle` span under it. All of it only with the `otel` feature, and only
//! while a `tracing-opentelemetry` layer records the task span; otherwise
//! these are no-ops that cost a check of the span.

use spool_broker::Envelope;

use super::outcome::Action;
use crate::observer::Outcome;

/// What a settlement needs to open its `settle` span under the task's.
#[derive(Debug, Default)]
pub(crate) struct TaskTrace {
    #[cfg(feature = "otel")]
    recorded: Option<(opentelemetry::Context, spool_broker::TaskId)>,
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::Status;
    use spool_broker::trace_context::{self, MESSAGING_SYSTEM};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::*;

    /// Makes `span` (the `task` span, not yet entered) continue the trace
    /// in `envelope`'s headers, with the messaging attributes of a
    /// `process` operation; says what its settlement needs.
    pub(crate) fn continue_trace(span: &tracing::Span, envelope: &Envelope) -> TaskTrace {
        if !trace_context::continue_trace(span, envelope) {
            return TaskTrace::default();
        }
        span.record("otel.name", format!("process {}", envelope.queue));
        span.record("otel.kind", "consumer");
        for attribute in [
            KeyValue::new("messaging.system", MESSAGING_SYSTEM),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", envelope.queue.to_string()),
            KeyValue::new("messaging.message.id", envelope.id.to_string()),
            KeyValue::new("spool.task.name", envelope.name.clone()),
            KeyValue::new("spool.task.attempt", i64::from(envelope.attempt)),
        ] {
            span.set_attribute(attribute.key, attribute.value);
        }
        if let Some(tenant) = &envelope.tenant {
            span.set_attribute("spool.tenant", tenant.clone());
        }
        TaskTrace {
            recorded: Some((span.context(), envelope.id)),
        }
    }

    /// Records what became of the task on its span; failures set the
    /// span's status to error.
    pub(crate) fn record_outcome(
        span: &tracing::Span,
        trace: &TaskTrace,
        outcome: Outcome,
        error: Option<&str>,
    ) {
        if trace.recorded.is_none() {
            return;
        }
        span.set_attribute("spool.outcome", outcome.as_str());
        if matches!(outcome, Outcome::Failed | Outcome::DeadLettered(_)) {
            span.set_status(Status::error(error.unwrap_or_default().to_owned()));
        }
    }

    impl TaskTrace {
        /// A `settle` span under the task's span, for settling `action`
        /// in a group of `batch`; disabled when the task was not traced.
        pub(crate) fn settle_span(
            &self,
            queue: &spool_broker::QueueName,
            action: &Action,
            batch: usize,
        ) -> tracing::Span {
            let Some((parent, id)) = &self.recorded else {
                return tracing::Span::none();
            };
            let span = tracing::info_span!(
                "settle",
                otel.name = tracing::field::Empty,
                otel.kind = "client",
                messaging.system = MESSAGING_SYSTEM,
                messaging.operation.type = "settle",
                messaging.operation.name = action.verb(),
                messaging.destination.name = %queue,
                messaging.message.id = %id,
                messaging.batch.message_count = batch,
            );
            if span.is_disabled() || span.set_parent(parent.clone()).is_err() {
                return tracing::Span::none();
            }
            span.record("otel.name", format!("settle {queue}"));
            span
        }
    }

    impl Action {
        /// The settlement as a verb: `ack`, `retry`, `dead_letter`, `requeue`
        /// or `abandon`.
        pub(crate) fn verb(&self) -> &'static str {
            match self {
                Self::Ack => "ack",
                Self::Retry(_) => "retry",
                Self::DeadLetter(_) => "dead_letter",
                Self::Requeue => "requeue",
                Self::Abandon => "abandon",
            }
        }
    }
}

#[cfg(feature = "otel")]
pub(crate) use self::otel::{continue_trace, record_outcome};

/// Without the `otel` feature the task span stays as it is.
#[cfg(not(feature = "otel"))]
pub(crate) fn continue_trace(_span: &tracing::Span, _envelope: &Envelope) -> TaskTrace {
    TaskTrace::default()
}

/// Without the `otel` feature nothing is recorded.
#[cfg(not(feature = "otel"))]
pub(crate) fn record_outcome(
    _span: &tracing::Span,
    _trace: &TaskTrace,
    _outcome: Outcome,
    _error: Option<&str>,
) {
}

#[cfg(not(feature = "otel"))]
impl TaskTrace {
    /// No span without the `otel` feature.
    pub(crate) fn settle_span(
        &self,
        _queue: &spool_broker::QueueName,
        _action: &Action,
        _batch: usize,
    ) -> tracing::Span {
        tracing::Span::none()
    }
}

//! Each task's span continues the trace its producer started (issue 18):
//! the `task` span carries the messaging attributes and, with the `otel`
//! feature and a `tracing-opentelemetry` layer recording it, takes the
//! context in the envelope's headers as its parent and becomes a
//! `process` span (kind consumer). Each group commit gets `settle` spans
//! (kind client), one per queue and settlement verb, linked to the
//! `process` spans of the tasks they settle.
//!
//! The drain runs through here, so what a task pays is kept small: its
//! identifying attributes are the span's own fields (one set of names for
//! the log lines and the trace), the constant ones are static strings, the
//! outcome is written to the started span in one call, a task that is not
//! sampled is left at that, and settlements are links on a few spans
//! rather than a span each. Without the layer, all of it costs a check of
//! the span.

use spool_broker::Envelope;

use super::outcome::Action;
use crate::observer::Outcome;

/// What a settlement needs to link the task's `process` span.
#[derive(Debug, Default)]
pub(crate) struct TaskTrace {
    #[cfg(feature = "otel")]
    recorded: Option<opentelemetry::trace::SpanContext>,
}

/// The `task` span of `envelope`'s run (not yet entered), continuing the
/// trace its headers carry when OpenTelemetry records it.
pub(crate) fn task_span(envelope: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "task",
        otel.kind = tracing::field::Empty,
        spool.task.name = envelope.name.as_str(),
        messaging.message.id = %envelope.id,
        messaging.destination.name = envelope.queue.as_str(),
        spool.task.attempt = i64::from(envelope.attempt),
    );
    #[cfg(feature = "otel")]
    otel::continue_trace(&span, envelope);
    span
}

impl Action {
    /// The settlement as a verb: `ack`, `retry`, `dead_letter`, `requeue`
    /// or `abandon`.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
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

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanContext, Status, TraceContextExt as _};
    use spool_broker::QueueName;
    use spool_broker::trace_context::{self, MESSAGING_SYSTEM};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::*;

    /// The most links one `settle` span carries: the SDK's default limit
    /// (`SpanLimits::max_links_per_span`); a larger group gets more spans.
    const LINKS_PER_SETTLE_SPAN: usize = 128;

    /// Makes `span` (the `task` span, not yet entered) continue the trace
    /// in `envelope`'s headers as a `process` span.
    pub(super) fn continue_trace(span: &tracing::Span, envelope: &Envelope) {
        if !trace_context::continue_trace(span, envelope) {
            return;
        }
        // The kind only counts before the span starts.
        span.record("otel.kind", "consumer");
        // Started now, so that the sampler has decided: a task that is not
        // sampled pays for nothing more.
        let context = span.context();
        let process = context.span();
        if !process.is_recording() {
            return;
        }
        process.update_name(format!("process {}", envelope.queue));
        let workflow = envelope.workflow_node().map(|(workflow, node)| {
            [
                KeyValue::new("spool.workflow.id", workflow.to_string()),
                KeyValue::new("spool.workflow.node", node.to_string()),
            ]
        });
        process.set_attributes(
            [
                KeyValue::new("messaging.system", MESSAGING_SYSTEM),
                KeyValue::new("messaging.operation.type", "process"),
            ]
            .into_iter()
            .chain(
                envelope
                    .tenant
                    .as_ref()
                    .map(|tenant| KeyValue::new("spool.tenant", tenant.clone())),
            )
            .chain(workflow.into_iter().flatten()),
        );
    }

    /// Records what became of the task on its span (failures set the
    /// span's status to error) and says what its settlement links to:
    /// nothing when the span is not recorded (no layer, or not sampled).
    pub(crate) fn record_outcome(
        span: &tracing::Span,
        outcome: Outcome,
        error: Option<&str>,
    ) -> TaskTrace {
        if span.is_disabled() {
            return TaskTrace::default();
        }
        let context = span.context();
        let process = context.span();
        if !process.is_recording() {
            return TaskTrace::default();
        }
        process.set_attribute(KeyValue::new("spool.outcome", outcome.as_str()));
        if matches!(outcome, Outcome::Failed | Outcome::DeadLettered(_)) {
            process.set_status(Status::error(error.unwrap_or_default().to_owned()));
        }
        TaskTrace {
            recorded: Some(process.span_context().clone()),
        }
    }

    /// The links of one queue and verb's `settle` span, gathered before
    /// the span is made.
    struct SettleGroup<'a> {
        queue: &'a QueueName,
        verb: &'static str,
        links: Vec<SpanContext>,
    }

    /// The `settle` spans of one group commit: for each queue and verb
    /// among the traced tasks, a root span (kind client) linked to the
    /// `process` span of each task it settles, up to
    /// [`LINKS_PER_SETTLE_SPAN`] a span. Hold them until the group is
    /// settled. Empty (and nothing allocated) when no task was traced.
    pub(crate) fn settle_spans<'a>(
        settlements: impl Iterator<Item = (&'a TaskTrace, &'a QueueName, &'a Action)>,
    ) -> Vec<tracing::Span> {
        let mut open: Vec<SettleGroup<'a>> = Vec::new();
        let mut done = Vec::new();
        for (trace, queue, action) in settlements {
            let Some(process) = &trace.recorded else {
                continue;
            };
            let verb = action.verb();
            let index = match open.iter().position(|g| g.verb == verb && g.queue == queue) {
                Some(index) => index,
                None => {
                    open.push(SettleGroup {
                        queue,
                        verb,
                        links: Vec::new(),
                    });
                    open.len() - 1
                }
            };
            let group = &mut open[index];
            group.links.push(process.clone());
            if group.links.len() == LINKS_PER_SETTLE_SPAN {
                done.extend(settle_span(
                    group.queue,
                    group.verb,
                    std::mem::take(&mut group.links),
                ));
            }
        }
        done.extend(
            open.into_iter()
                .filter(|group| !group.links.is_empty())
                .filter_map(|group| settle_span(group.queue, group.verb, group.links)),
        );
        done
    }

    /// A `settle` span with `links`, or `None` when it is disabled.
    fn settle_span(
        queue: &QueueName,
        verb: &'static str,
        links: Vec<SpanContext>,
    ) -> Option<tracing::Span> {
        let span = tracing::info_span!(
            "settle",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            messaging.system = MESSAGING_SYSTEM,
            messaging.operation.type = "settle",
            messaging.operation.name = verb,
            messaging.destination.name = queue.as_str(),
            messaging.batch.message_count = links.len() as i64,
        );
        if span.is_disabled() {
            return None;
        }
        trace_context::start_new_trace(&span);
        span.record(
            "otel.name",
            tracing::field::display(format_args!("settle {queue}")),
        );
        // Started here, so that the links go on the OpenTelemetry span
        // itself, each a push under its lock, rather than one at a time
        // through the `tracing` registry.
        let context = span.context();
        let settle = context.span();
        if settle.is_recording() {
            for link in links {
                settle.add_link(link, Vec::new());
            }
        }
        Some(span)
    }
}

#[cfg(feature = "otel")]
pub(crate) use self::otel::{record_outcome, settle_spans};

/// Without the `otel` feature nothing is recorded.
#[cfg(not(feature = "otel"))]
pub(crate) fn record_outcome(
    _span: &tracing::Span,
    _outcome: Outcome,
    _error: Option<&str>,
) -> TaskTrace {
    TaskTrace::default()
}

/// No span without the `otel` feature.
#[cfg(not(feature = "otel"))]
pub(crate) fn settle_spans<'a>(
    _settlements: impl Iterator<Item = (&'a TaskTrace, &'a spool_broker::QueueName, &'a Action)>,
) -> Vec<tracing::Span> {
    Vec::new()
}

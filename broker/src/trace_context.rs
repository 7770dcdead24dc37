//! W3C trace context in an envelope's headers, so that a trace started by
//! a producer goes on in the worker that runs the task (issue 18).
//!
//! Spool writes and reads the headers through OpenTelemetry's *global*
//! propagator (`opentelemetry::global::set_text_map_propagator`), never by
//! hand: `traceparent` and `tracestate` with the W3C trace-context
//! propagator, `baggage` with the baggage one. Spool's binaries install
//! both when span export is configured; an application that embeds the
//! SDK or the worker installs the propagators it wants (nothing is written
//! or read until it does). Spans are `tracing` spans: their OpenTelemetry
//! context comes from the `tracing-opentelemetry` layer, and without that
//! layer there is no context to inject and nothing to continue.
//!
//! The span names and attributes follow OpenTelemetry's messaging
//! semantic conventions: `messaging.system` = `spool`,
//! `messaging.destination.name` (the queue), `messaging.message.id` (the
//! task id) and `messaging.operation.type` (`publish`, `process`,
//! `settle`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::envelope::Envelope;
use crate::queue::QueueName;
use crate::workflow::WorkflowSpec;

/// The value of `messaging.system` on every Spool span.
pub const MESSAGING_SYSTEM: &str = "spool";

/// Headers as the propagators write them.
struct HeaderInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Headers as the propagators read them.
struct HeaderExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes `span`'s trace context (`traceparent`, `tracestate`, `baggage`,
/// as the global propagator spells them) into `headers`. Writes nothing
/// when `span` has no OpenTelemetry context: it is disabled, no
/// `tracing-opentelemetry` layer is installed, or no propagator is.
pub fn inject(span: &tracing::Span, headers: &mut BTreeMap<String, String>) {
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// The trace context that `headers` carry (empty when they carry none).
///
/// When `headers` hold none of the fields the global propagator reads
/// (its [`fields`](opentelemetry::propagation::TextMapPropagator::fields):
/// `traceparent`, `tracestate` and `baggage` for Spool's), the propagator
/// is not run: a task enqueued without a trace pays for a few map
/// look-ups, not for the extraction.
#[must_use]
pub fn extract(headers: &BTreeMap<String, String>) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        if headers.is_empty() || !propagator.fields().any(|field| headers.contains_key(field)) {
            return opentelemetry::Context::current();
        }
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// The context [`extract_cached`] last extracted on this thread.
struct Extracted {
    /// The global propagator it was extracted with (its address).
    propagator: usize,
    /// The values of the propagator's fields in the headers, in the order
    /// of its `fields()`.
    values: Vec<Option<String>>,
    context: opentelemetry::Context,
}

thread_local! {
    static LAST_EXTRACTED: RefCell<Option<Extracted>> = const { RefCell::new(None) };
}

/// [`extract`] for a consumer: the context that `headers` carry, built on
/// an empty context (not on the one current here: a task's parent comes
/// from its headers alone), and reused while this thread sees the same
/// header values. The tasks of one bulk enqueue carry one `traceparent`,
/// so a worker draining them parses it once rather than once a task;
/// any other value of any field the propagator reads is extracted anew.
fn extract_cached(headers: &BTreeMap<String, String>) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        if headers.is_empty() || !propagator.fields().any(|field| headers.contains_key(field)) {
            return opentelemetry::Context::current();
        }
        // A re-entered cache (it is not) would only miss.
        LAST_EXTRACTED.with(|last| match last.try_borrow_mut() {
            Ok(mut last) => extract_through(propagator, headers, &mut last),
            Err(_) => extract_fresh(propagator, headers),
        })
    })
}

/// The context in `headers`, from `last` when it was extracted from the
/// same values by the same propagator; `last` is replaced otherwise.
fn extract_through(
    propagator: &dyn TextMapPropagator,
    headers: &BTreeMap<String, String>,
    last: &mut Option<Extracted>,
) -> opentelemetry::Context {
    let address = propagator_address(propagator);
    if let Some(hit) = last.as_ref().filter(|last| {
        last.propagator == address && {
            let mut fields = propagator.fields();
            let same = last
                .values
                .iter()
                .all(|value| fields.next().map(|field| headers.get(field)) == Some(value.as_ref()));
            same && fields.next().is_none()
        }
    }) {
        return hit.context.clone();
    }
    let context = extract_fresh(propagator, headers);
    *last = Some(Extracted {
        propagator: address,
        values: propagator
            .fields()
            .map(|field| headers.get(field).cloned())
            .collect(),
        context: context.clone(),
    });
    context
}

fn extract_fresh(
    propagator: &dyn TextMapPropagator,
    headers: &BTreeMap<String, String>,
) -> opentelemetry::Context {
    propagator.extract_with_context(&opentelemetry::Context::new(), &HeaderExtractor(headers))
}

/// Which propagator this is: another one installed since (a test's, an
/// application's) is never mistaken for it while both are alive.
fn propagator_address(propagator: &dyn TextMapPropagator) -> usize {
    std::ptr::from_ref(propagator).cast::<()>() as usize
}

/// Makes `span` continue the trace that `envelope`'s headers carry, or
/// start a trace of its own when they carry none (rather than join
/// whatever span it was created in, such as a worker's long-lived one).
/// Says whether OpenTelemetry records `span`: `false` when it is disabled
/// or no `tracing-opentelemetry` layer is installed, and then nothing was
/// done.
///
/// The context comes from the headers alone, parsed once for a run of
/// tasks with the same trace fields (the tasks of one bulk enqueue). Call
/// it before `span` is first entered.
pub fn continue_trace(span: &tracing::Span, envelope: &Envelope) -> bool {
    if span.is_disabled() {
        return false;
    }
    span.set_parent(extract_cached(&envelope.headers)).is_ok()
}

/// A `publish` span (kind producer) for `count` tasks sent to `queue`:
/// one for a single task or one for a bulk enqueue, whose tasks all carry
/// it as their parent. Record `messaging.message.id` on it for a single
/// task with [`record_message_id`].
#[must_use]
pub fn publish_span(queue: &QueueName, count: usize) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = tracing::field::Empty,
        otel.kind = "producer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "publish",
        messaging.destination.name = %queue,
        messaging.message.id = tracing::field::Empty,
        messaging.batch.message_count = tracing::field::Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("publish {queue}"));
        if count != 1 {
            span.record("messaging.batch.message_count", count);
        }
    }
    span
}

/// Makes `span` (not yet entered) the root of a trace of its own rather
/// than a child of the span it was created in: for work that a long-lived
/// span (a beat's, a worker's) starts on its own schedule.
pub fn start_new_trace(span: &tracing::Span) {
    if !span.is_disabled() {
        let _ = span.set_parent(opentelemetry::Context::new());
    }
}

/// Records the id of the one task a [`publish_span`] sends.
pub fn record_message_id(span: &tracing::Span, envelope: &Envelope) {
    if !span.is_disabled() {
        span.record(
            "messaging.message.id",
            tracing::field::display(&envelope.id),
        );
    }
}

/// Writes the trace context of `span` (a [`publish_span`]) into the
/// headers of each of `envelopes` but those that carry a `traceparent`
/// already (given by the caller, or kept from an earlier run), and records
/// the task id on `span` when there is one envelope.
pub fn inject_into(span: &tracing::Span, envelopes: &mut [Envelope]) {
    if span.is_disabled() {
        return;
    }
    if let [one] = &*envelopes {
        record_message_id(span, one);
    }
    inject_each(span, envelopes.iter_mut());
}

/// Writes `span`'s context into each envelope that carries no
/// `traceparent` yet: propagated once and copied, as it is the same for
/// all.
fn inject_each<'a>(span: &tracing::Span, envelopes: impl Iterator<Item = &'a mut Envelope>) {
    let mut context = BTreeMap::new();
    inject(span, &mut context);
    if context.is_empty() {
        return;
    }
    for envelope in envelopes {
        if !envelope.headers.contains_key("traceparent") {
            envelope
                .headers
                .extend(context.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

/// The `publish` span (kind producer) of a workflow's submission, the
/// root of the workflow's trace (or a child of the caller's span): made
/// the parent of every node's `process` span by [`inject_into_workflow`].
#[must_use]
pub fn workflow_span(spec: &WorkflowSpec) -> tracing::Span {
    tracing::info_span!(
        "workflow submit",
        otel.kind = "producer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "publish",
        messaging.operation.name = "submit_workflow",
        messaging.batch.message_count = spec.nodes.len() as i64,
        spool.workflow.id = %spec.id,
    )
}

/// Writes the context of `span` (a [`workflow_span`]) into the headers of
/// every node of `spec`. The broker keeps each node's envelope with the
/// workflow and enqueues it as it is, so a node run late, or again after
/// `spoolctl workflow retry`, has the workflow's root as its parent; the
/// children a node adds take it over with [`carry_over`].
pub fn inject_into_workflow(span: &tracing::Span, spec: &mut WorkflowSpec) {
    if !span.is_disabled() {
        inject_each(span, spec.nodes.iter_mut().map(|node| &mut node.envelope));
    }
}

/// Writes the trace context that `from` carries into `to`, through the
/// global propagator (nothing when it carries none): a dynamic workflow
/// child keeps the root its adding node has.
pub fn carry_over(from: &BTreeMap<String, String>, to: &mut BTreeMap<String, String>) {
    let context = extract(from);
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(to));
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use opentelemetry::trace::TraceContextExt as _;

    use super::*;

    #[test]
    fn without_a_propagator_or_layer_nothing_is_written_or_read() {
        let mut headers = BTreeMap::new();
        inject(&tracing::Span::current(), &mut headers);
        assert!(headers.is_empty());
        headers.insert(
            "traceparent".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        );
        // The default global propagator reads nothing.
        assert!(!extract(&headers).span().span_context().is_valid());
    }

    /// Reads `traceparent` and `tracestate` and puts what it read in the
    /// context, counting its extractions.
    #[derive(Debug)]
    struct Counting {
        extracted: std::sync::atomic::AtomicUsize,
        fields: Vec<String>,
    }

    impl Default for Counting {
        fn default() -> Self {
            Self {
                extracted: std::sync::atomic::AtomicUsize::new(0),
                fields: vec!["traceparent".to_owned(), "tracestate".to_owned()],
            }
        }
    }

    #[derive(Debug, PartialEq)]
    struct Read(Option<String>, Option<String>);

    impl TextMapPropagator for Counting {
        fn inject_context(&self, _: &opentelemetry::Context, _: &mut dyn Injector) {}

        fn extract_with_context(
            &self,
            cx: &opentelemetry::Context,
            extractor: &dyn Extractor,
        ) -> opentelemetry::Context {
            self.extracted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let read = |key| extractor.get(key).map(str::to_owned);
            cx.with_value(Read(read("traceparent"), read("tracestate")))
        }

        fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
            opentelemetry::propagation::text_map_propagator::FieldIter::new(&self.fields)
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_cached_context_is_reused_only_for_the_same_values() {
        let propagator = Counting::default();
        let mut last = None;
        let read = |h: &BTreeMap<String, String>, last: &mut Option<Extracted>| {
            let cx = extract_through(&propagator, h, last);
            cx.get::<Read>().map(|r| (r.0.clone(), r.1.clone()))
        };
        let count = || {
            propagator
                .extracted
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let a = headers(&[("traceparent", "00-a-1-01"), ("other", "x")]);
        assert_eq!(read(&a, &mut last), Some((Some("00-a-1-01".into()), None)));
        // The same trace fields (another header aside): reused.
        let a2 = headers(&[("traceparent", "00-a-1-01"), ("other", "y")]);
        assert_eq!(read(&a2, &mut last), Some((Some("00-a-1-01".into()), None)));
        assert_eq!(count(), 1);
        // Another traceparent: extracted anew, never the stale one.
        let b = headers(&[("traceparent", "00-b-1-01")]);
        assert_eq!(read(&b, &mut last), Some((Some("00-b-1-01".into()), None)));
        assert_eq!(count(), 2);
        // The same traceparent with a tracestate: extracted anew.
        let b_state = headers(&[("traceparent", "00-b-1-01"), ("tracestate", "k=v")]);
        assert_eq!(
            read(&b_state, &mut last),
            Some((Some("00-b-1-01".into()), Some("k=v".into())))
        );
        assert_eq!(count(), 3);
        // And back: extracted anew (only the last one is kept).
        assert_eq!(read(&b, &mut last), Some((Some("00-b-1-01".into()), None)));
        assert_eq!(count(), 4);
        // Another propagator with the same values: extracted anew.
        let other = Counting::default();
        let cx = extract_through(&other, &b, &mut last);
        assert!(cx.get::<Read>().is_some());
        assert_eq!(
            other.extracted.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}

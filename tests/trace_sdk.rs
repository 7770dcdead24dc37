//! Trace context from an application's own span through `spool-sdk`'s
//! enqueue and an embedded worker (issue 18): the `publish` span is a
//! child of the caller's span, each task span a child of `publish`, one
//! `publish` span for a bulk enqueue. Exported by the same set-up as the
//! binaries' (`spool_cli_common::init_logging_with`) to a real OTLP
//! receiver in this process.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::Task;
use spool_cli_common::{LogFormat, OtlpProtocol, OtlpSettings, init_logging_with};
use spool_tests::otlp::{KIND_CONSUMER, KIND_PRODUCER, OtlpReceiver, ReceivedSpan};
use spool_tests::{TestRedis, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};
use tracing::Instrument as _;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Greet {
    to: String,
}

impl Task for Greet {
    const NAME: &'static str = "test.trace.greet";
    type Output = String;
}

fn of_task<'a>(spans: &'a [ReceivedSpan], id: &str, kind: i32) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.kind == kind && s.attribute("messaging.message.id") == Some(id))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_span_goes_on_through_enqueue_and_the_worker() {
    let receiver = OtlpReceiver::start().await;
    // Before TestRedis, whose logging set-up would come first otherwise.
    let settings = OtlpSettings {
        protocol: OtlpProtocol::HttpProtobuf,
        endpoint: Some(format!("{}/v1/traces", receiver.endpoint())),
        service_name: Some("trace-sdk-test".to_owned()),
    };
    let telemetry = Arc::new(init_logging_with(
        LogFormat::Human,
        "warn",
        Some(&settings),
        None,
    ));
    assert!(telemetry.is_exporting());
    let redis = TestRedis::new().await;
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), WorkerConfig::default()).register::<Greet, _>(
            |task: Greet, _ctx: TaskContext| async move { Ok::<_, TaskError>(task.to) },
        ),
    );
    let client = redis.client();

    let request = tracing::info_span!("request", otel.kind = "server");
    // As a request handler would, awaited inside its span.
    let one = async { client.enqueue(Greet { to: "one".into() }).await }
        .instrument(request.clone())
        .await
        .unwrap()
        .to_string();
    drop(request);
    let many: Vec<String> = client
        .enqueue_many((0..3).map(|n| Greet { to: n.to_string() }))
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    worker
        .wait_for("all four run", WAIT, |c| c.succeeded == 4)
        .await;
    // This process's spans go out in batches: send them now.
    let flushing = Arc::clone(&telemetry);
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();

    let spans = receiver
        .wait_for("every span", WAIT, |spans| {
            let all = std::iter::once(&one)
                .chain(&many)
                .all(|id| of_task(spans, id, KIND_CONSUMER).is_some());
            (all && spans.iter().any(|s| s.name == "request")).then(|| spans.to_vec())
        })
        .await;
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    let publish = of_task(&spans, &one, KIND_PRODUCER).unwrap();
    let run = of_task(&spans, &one, KIND_CONSUMER).unwrap();
    assert_eq!(publish.parent_span_id, request.span_id, "{publish:#?}");
    assert_eq!(publish.trace_id, request.trace_id);
    assert_eq!(
        publish.attribute("messaging.destination.name"),
        Some("default")
    );
    assert_eq!(run.parent_span_id, publish.span_id, "{run:#?}");
    assert_eq!(run.trace_id, request.trace_id);
    assert_eq!(run.attribute("spool.task.name"), Some(Greet::NAME));

    // One publish span for the bulk enqueue, a trace of its own (no span
    // was current), parent of all three runs.
    let bulk = spans
        .iter()
        .find(|s| {
            s.kind == KIND_PRODUCER && s.attribute("messaging.batch.message_count") == Some("3")
        })
        .unwrap_or_else(|| panic!("no bulk publish span: {spans:#?}"));
    assert!(bulk.parent_span_id.is_empty());
    for id in &many {
        let run = of_task(&spans, id, KIND_CONSUMER).unwrap();
        assert_eq!(run.parent_span_id, bulk.span_id, "{run:#?}");
        assert_eq!(run.trace_id, bulk.trace_id);
    }
    worker.stop().await;
    redis.cleanup().await;
}

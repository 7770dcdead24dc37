//! A workflow is one trace (issue 18): `submit_workflow` opens the
//! workflow's `submit` span, and every node's run is its child, whether
//! the node was in the submitted graph (a chain and a fan-out here), added
//! by a running node (dynamic children and their join), or run again
//! after the failed workflow is retried. Submitted with `spool-sdk` and
//! run by a real worker on Redis, both in this process, exported by the
//! binaries' own set-up (`spool_cli_common::init_logging_with`) to a real
//! OTLP receiver.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::Task;
use spool_broker::workflow::{EdgePolicy, WorkflowState};
use spool_cli_common::{LogFormat, OtlpProtocol, OtlpSettings, Telemetry, init_logging_with};
use spool_sdk::workflow::Workflow;
use spool_tests::otlp::{KIND_CONSUMER, KIND_PRODUCER, OtlpReceiver, ReceivedSpan};
use spool_tests::{TestRedis, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Step;
impl Task for Step {
    const NAME: &'static str = "test.trace.wf.step";
    type Output = ();
}

/// Adds `chunks` children and their join.
#[derive(Serialize, Deserialize)]
struct Split {
    chunks: u32,
}
impl Task for Split {
    const NAME: &'static str = "test.trace.wf.split";
    type Output = ();
}

/// Fails while the test says so.
#[derive(Serialize, Deserialize)]
struct Flaky;
impl Task for Flaky {
    const NAME: &'static str = "test.trace.wf.flaky";
    type Output = ();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `process` spans of node `node`.
fn runs_of<'a>(spans: &'a [ReceivedSpan], node: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.kind == KIND_CONSUMER && s.attribute("spool.workflow.node") == Some(node))
        .collect()
}

/// Sends this process's batched spans now.
async fn flush(telemetry: &Arc<Telemetry>) {
    let flushing = Arc::clone(telemetry);
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_of_a_workflow_is_a_child_of_its_submit_span() {
    let receiver = OtlpReceiver::start().await;
    // Before TestRedis, whose logging set-up would come first otherwise.
    let settings = OtlpSettings {
        protocol: OtlpProtocol::HttpProtobuf,
        endpoint: Some(format!("{}/v1/traces", receiver.endpoint())),
        service_name: Some("trace-workflow-test".to_owned()),
    };
    let telemetry = Arc::new(init_logging_with(
        LogFormat::Human,
        "warn",
        Some(&settings),
        None,
    ));
    assert!(telemetry.is_exporting());
    let redis = TestRedis::new().await;
    let flaky_fails = Arc::new(AtomicBool::new(true));
    let fails = Arc::clone(&flaky_fails);
    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), WorkerConfig::default())
            .register::<Step, _>(|_: Step, _ctx: TaskContext| async { Ok::<_, TaskError>(()) })
            .register::<Split, _>(|task: Split, ctx: TaskContext| async move {
                for index in 0..task.chunks {
                    ctx.add_child(&format!("chunk-{index}"), &Step)?;
                }
                ctx.join_children("concat", &Step, EdgePolicy::Fail)?;
                Ok::<_, TaskError>(())
            })
            .register::<Flaky, _>(move |_: Flaky, _ctx: TaskContext| {
                let fail = fails.load(Ordering::SeqCst);
                async move {
                    if fail {
                        Err(TaskError::fail("not yet"))
                    } else {
                        Ok(())
                    }
                }
            }),
    );
    let client = redis.client();

    // A chain (probe, split, package) with a fan-out (encode-*) from
    // probe into package; split adds chunk-0, chunk-1 and their join.
    let mut wf = Workflow::new();
    wf.node("probe", Step);
    wf.node("split", Split { chunks: 2 });
    wf.node("package", Flaky).max_attempts(1);
    wf.chain(&["probe", "split", "package"]);
    for encode in ["encode-1", "encode-2"] {
        wf.node(encode, Step).after(&["probe"]);
    }
    wf.chord(&["encode-1", "encode-2"], "package");
    let handle = client.submit_workflow(wf).await.unwrap();
    let status = handle.finished(WAIT).await.unwrap();
    assert!(
        matches!(&status.state, WorkflowState::Failed { node, .. } if node.as_str() == "package"),
        "{status:?}"
    );
    // Retried once it fails: package runs again.
    flaky_fails.store(false, Ordering::SeqCst);
    assert_eq!(handle.retry().await.unwrap(), 1);
    let status = handle.finished(WAIT).await.unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded, "{status:?}");
    flush(&telemetry).await;

    let statics = ["probe", "split", "encode-1", "encode-2"];
    let dynamics = ["chunk-0", "chunk-1", "concat"];
    let spans = receiver
        .wait_for("the submit span and every run", WAIT, |spans| {
            let submitted = spans.iter().any(|s| s.name == "workflow submit");
            let all_ran = statics
                .iter()
                .chain(&dynamics)
                .all(|node| runs_of(spans, node).len() == 1);
            let package_twice = runs_of(spans, "package").len() == 2;
            (submitted && all_ran && package_twice).then(|| spans.to_vec())
        })
        .await;
    let submit = spans.iter().find(|s| s.name == "workflow submit").unwrap();
    assert_eq!(submit.kind, KIND_PRODUCER);
    assert!(submit.parent_span_id.is_empty(), "a root: {submit:#?}");
    assert_eq!(
        submit.attribute("spool.workflow.id"),
        Some(handle.id().to_string().as_str())
    );
    assert_eq!(
        submit.attribute("messaging.operation.type"),
        Some("publish")
    );
    assert_eq!(submit.attribute("messaging.batch.message_count"), Some("5"));

    for node in statics.iter().chain(&dynamics).chain(&["package"]) {
        for run in runs_of(&spans, node) {
            assert_eq!(
                hex(&run.trace_id),
                hex(&submit.trace_id),
                "{node}: {run:#?}"
            );
            assert_eq!(
                hex(&run.parent_span_id),
                hex(&submit.span_id),
                "{node}: {run:#?}"
            );
            assert_eq!(
                run.attribute("spool.workflow.id"),
                Some(handle.id().to_string().as_str())
            );
            assert_eq!(run.attribute("messaging.operation.type"), Some("process"));
        }
    }
    let mut outcomes: Vec<_> = runs_of(&spans, "package")
        .iter()
        .map(|run| {
            run.attribute("spool.outcome")
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["failed", "succeeded"]);
    worker.stop().await;
    redis.cleanup().await;
}

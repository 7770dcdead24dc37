//! W3C trace context through the fleet (issue 18), against a real OTLP
//! receiver in the test process and the real binaries: a trace started by
//! a producer (`spoolctl call`) goes on in `spool-worker`'s task span,
//! through a retry and through `spoolctl dead retry`, with the same trace
//! id and the publish span as parent, each settlement in a `settle` span
//! linked to its run; without `OTEL_*`, nothing connects.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command};
use std::time::Duration;

use spool_broker::QueueName;
use spool_tests::TestRedis;
use spool_tests::bins::{spoolctl, stdout_of, stop_warm};
use spool_tests::otlp::{KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, OtlpReceiver, ReceivedSpan};

const WAIT: Duration = Duration::from_secs(30);

/// The variables that point a process at `receiver`, with batches sent
/// every 50 ms instead of every 5 s.
fn otel_env(receiver: &OtlpReceiver) -> [(&'static str, String); 2] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ]
}

/// Removes every `OTEL_*` variable this process has from `command`.
fn without_otel(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
}

fn traced_worker(redis: &TestRedis, receiver: &OtlpReceiver) -> Child {
    let mut command = Command::new(spool_tests::bins::spool_worker());
    without_otel(&mut command)
        .envs(otel_env(receiver))
        .env("SPOOL_REDIS_URL", spool_tests::redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_QUEUES", "default")
        .args(["--no-video", "--no-probe", "--metrics-addr", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command.spawn().expect("spool-worker starts")
}

fn spoolctl_in(redis: &TestRedis) -> Command {
    let mut command = Command::new(spoolctl());
    without_otel(&mut command)
        .env("SPOOL_REDIS_URL", spool_tests::redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix);
    command
}

/// `spoolctl call NAME --args ARGS --max-attempts N` with `env`; the id.
fn call(
    redis: &TestRedis,
    env: &[(&str, String)],
    name: &str,
    args: &str,
    attempts: u32,
) -> String {
    let out = stdout_of(
        spoolctl_in(redis)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["call", name, "--force", "--json", "--args", args])
            .args(["--max-attempts", &attempts.to_string()]),
    );
    let ids: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    ids.into_iter().next().unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `publish` span of task `id`.
fn publish_of(spans: &[ReceivedSpan], id: &str) -> Option<ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.kind == KIND_PRODUCER && s.attribute("messaging.message.id") == Some(id))
        .cloned()
}

/// The task spans (`process`) of task `id`, by attempt.
fn runs_of(spans: &[ReceivedSpan], id: &str) -> Vec<ReceivedSpan> {
    let mut runs: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.kind == KIND_CONSUMER && s.attribute("messaging.message.id") == Some(id))
        .cloned()
        .collect();
    runs.sort_by_key(|s| s.attribute("spool.task.attempt").map(str::to_owned));
    runs
}

/// Checks that `run` continues `publish`: the same trace, `publish` its
/// parent, with the messaging attributes of a process operation.
fn assert_continues(run: &ReceivedSpan, publish: &ReceivedSpan) {
    assert_eq!(hex(&run.trace_id), hex(&publish.trace_id), "{run:#?}");
    assert_eq!(hex(&run.parent_span_id), hex(&publish.span_id), "{run:#?}");
    assert_eq!(run.service, "spool-worker");
    assert_eq!(run.name, "process default");
    assert_eq!(run.attribute("messaging.system"), Some("spool"));
    assert_eq!(run.attribute("messaging.operation.type"), Some("process"));
    assert_eq!(run.attribute("messaging.destination.name"), Some("default"));
    assert_eq!(run.attribute("spool.task.name"), Some("spool.fail"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_goes_from_the_producer_through_the_worker_and_its_retry() {
    let redis = TestRedis::new().await;
    let receiver = OtlpReceiver::start().await;
    let worker = traced_worker(&redis, &receiver);

    // Fails once (a retry 100 ms later), then succeeds.
    let id = call(
        &redis,
        &otel_env(&receiver),
        "spool.fail",
        r#"{"times":1}"#,
        3,
    );
    let (publish, runs) = receiver
        .wait_for("the publish span and both attempts", WAIT, |spans| {
            let runs = runs_of(spans, &id);
            Some((publish_of(spans, &id)?, runs)).filter(|(_, runs)| runs.len() == 2)
        })
        .await;

    assert_eq!(publish.service, "spoolctl");
    assert_eq!(publish.name, "publish default");
    assert!(publish.parent_span_id.is_empty(), "a root: {publish:#?}");
    assert_eq!(publish.attribute("messaging.system"), Some("spool"));
    assert_eq!(
        publish.attribute("messaging.operation.type"),
        Some("publish")
    );
    assert_eq!(
        publish.attribute("messaging.destination.name"),
        Some("default")
    );
    for (attempt, run) in runs.iter().enumerate() {
        assert_continues(run, &publish);
        assert_eq!(
            run.attribute("spool.task.attempt"),
            Some((attempt + 1).to_string().as_str())
        );
    }
    assert_eq!(runs[0].attribute("spool.outcome"), Some("retried"));
    assert_eq!(runs[1].attribute("spool.outcome"), Some("succeeded"));

    // Each run's settlement is in a `settle` span of its group commit, a
    // root that links to the run.
    for (run, action) in runs.iter().zip(["retry", "ack"]) {
        let settle = receiver
            .wait_for("the settle span of a run", WAIT, |spans| {
                spans
                    .iter()
                    .find(|s| {
                        s.attribute("messaging.operation.type") == Some("settle") && s.links_to(run)
                    })
                    .cloned()
            })
            .await;
        assert_eq!(settle.kind, KIND_CLIENT);
        assert_eq!(settle.name, "settle default");
        assert!(settle.parent_span_id.is_empty(), "a root: {settle:#?}");
        assert_eq!(settle.attribute("messaging.operation.name"), Some(action));
        assert_eq!(
            settle.attribute("messaging.destination.name"),
            Some("default")
        );
        assert_eq!(settle.attribute("messaging.batch.message_count"), Some("1"));
    }
    stop_warm(worker);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_retried_by_spoolctl_stays_in_its_trace() {
    let redis = TestRedis::new().await;
    let receiver = OtlpReceiver::start().await;
    let worker = traced_worker(&redis, &receiver);

    // One attempt, which fails: dead-lettered.
    let id = call(
        &redis,
        &otel_env(&receiver),
        "spool.fail",
        r#"{"times":1}"#,
        1,
    );
    let (publish, first) = receiver
        .wait_for("the failed run", WAIT, |spans| {
            Some((publish_of(spans, &id)?, runs_of(spans, &id).pop()?))
        })
        .await;
    assert_continues(&first, &publish);
    assert_eq!(first.attribute("spool.outcome"), Some("dead"));
    assert_eq!(first.status_code, 2, "an error: {first:#?}");
    spool_tests::wait_until("the dead letter", WAIT, || async {
        redis.stats(&QueueName::DEFAULT).await.dead == 1
    })
    .await;

    // Requeued by an operator whose own spoolctl exports too: the task
    // keeps its producer's context, not the operator's.
    stdout_of(
        spoolctl_in(&redis)
            .envs(otel_env(&receiver))
            .args(["dead", "retry", "default"]),
    );
    let revived = receiver
        .wait_for("the revived run", WAIT, |spans| {
            let runs = runs_of(spans, &id);
            (runs.len() == 2).then(|| runs[1].clone())
        })
        .await;
    assert_continues(&revived, &publish);
    assert_eq!(revived.attribute("spool.outcome"), Some("succeeded"));
    stop_warm(worker);
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_otel_variables_nothing_connects() {
    // On the OTLP/HTTP default port, where an exporter left on by mistake
    // would send.
    let receiver = OtlpReceiver::on("127.0.0.1:4318").await;
    let redis = TestRedis::new().await;
    let mut plain_worker = Command::new(spool_tests::bins::spool_worker());
    let worker = without_otel(&mut plain_worker)
        .env("SPOOL_REDIS_URL", spool_tests::redis_url())
        .env("SPOOL_KEY_PREFIX", &redis.prefix)
        .env("SPOOL_QUEUES", "default")
        .args(["--no-video", "--no-probe", "--metrics-addr", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    call(&redis, &[], "spool.fail", r#"{"times":1}"#, 3);
    // Export named but switched off: no connection either.
    let off = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_TRACES_EXPORTER", "none".to_owned()),
    ];
    call(&redis, &off, "spool.ping", "{}", 1);
    spool_tests::wait_until("both tasks done", WAIT, || async {
        redis.stats(&QueueName::DEFAULT).await.is_drained()
    })
    .await;
    // A process exits flushing its batches: by then any would have come.
    stop_warm(worker);
    assert_eq!(receiver.connections(), 0);
    redis.cleanup().await;
}

//! A workflow across a Redis restart (AOF, `appendfsync always`): a
//! 300-wide fan-out and its join, run by a real worker while Redis is
//! killed and restarted mid-run. The workflow finishes, every node ran, and
//! the join, whose readiness is decided by the last of 300 settlements,
//! ran exactly once.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::workflow::WorkflowState;
use spool_broker::{QueueName, Task, TaskOptions};
use spool_sdk::Client;
use spool_sdk::workflow::Workflow;
use spool_tests::{RedisServer, TestRedis, short_lease_config, spawn_worker, wait_until};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

const WIDTH: usize = 300;

#[derive(Serialize, Deserialize)]
struct Part {
    index: usize,
}

impl Task for Part {
    const NAME: &'static str = "test.chaos.part";
    type Output = usize;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 10,
            ..TaskOptions::default()
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Gather;

impl Task for Gather {
    const NAME: &'static str = "test.chaos.gather";
    type Output = usize;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::GPU,
            max_attempts: 10,
            ..TaskOptions::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_fan_out_enqueues_the_join_once() {
    let mut server = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let redis = TestRedis::at(&server.url()).await;
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let counted = Arc::clone(&runs);
    let part = move |task: Part, ctx: TaskContext| {
        *counted
            .lock()
            .unwrap()
            .entry(ctx.node().unwrap().to_string())
            .or_default() += 1;
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, TaskError>(task.index)
        }
    };
    let counted = Arc::clone(&runs);
    let gather = move |_: Gather, ctx: TaskContext| {
        *counted.lock().unwrap().entry("join".into()).or_default() += 1;
        async move { Ok::<_, TaskError>(ctx.parents().len()) }
    };
    let worker = spawn_worker(
        Worker::new(
            redis.broker.clone(),
            WorkerConfig {
                queues: vec![QueueName::DEFAULT, QueueName::GPU],
                concurrency: 4,
                prefetch: 4,
                workflow_sweep_interval: Some(Duration::from_millis(500)),
                ..short_lease_config("chaos")
            },
        )
        .register::<Part, _>(part)
        .register::<Gather, _>(gather),
    );

    let mut wf = Workflow::new();
    let names: Vec<String> = (0..WIDTH).map(|i| format!("part-{i}")).collect();
    for (index, name) in names.iter().enumerate() {
        wf.node(name, Part { index });
    }
    wf.node("join", Gather);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    wf.chord(&refs, "join");
    let handle = Client::new(redis.broker.clone())
        .submit_workflow(wf)
        .await
        .unwrap();

    wait_until(
        "a quarter of the parts to run",
        Duration::from_secs(30),
        || {
            let ran = runs.lock().unwrap().len();
            async move { ran >= WIDTH / 4 }
        },
    )
    .await;
    server.restart();

    let joined: usize = handle
        .wait::<Gather>("join", Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(joined, WIDTH);
    let status = handle.finished(Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.state, WorkflowState::Succeeded);
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), WIDTH + 1, "every node ran");
    assert_eq!(runs["join"], 1, "the join ran once");
    worker.stop().await;
}

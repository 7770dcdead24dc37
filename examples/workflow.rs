//! A workflow with a chord: probe a video, encode three renditions in
//! parallel, then package them once all three are done. Each node reads
//! its parents' outputs typed from its context.
//!
//! ```text
//! cargo run -p spool-examples --example workflow
//! ```
//!
//! Needs Redis (`SPOOL_REDIS_URL`, default `redis://127.0.0.1:6379/`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_sdk::workflow::Workflow;
use spool_sdk::{Client, Task};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};

/// Reads a video's height.
#[derive(Serialize, Deserialize)]
struct Probe {
    video: String,
}

impl Task for Probe {
    const NAME: &'static str = "example.probe";
    type Output = u32;
}

/// Encodes one rendition, no taller than the source.
#[derive(Serialize, Deserialize)]
struct Encode {
    height: u32,
}

impl Task for Encode {
    const NAME: &'static str = "example.encode";
    type Output = String;
}

/// Writes a manifest of the renditions.
#[derive(Serialize, Deserialize)]
struct Package {
    renditions: Vec<String>,
}

impl Task for Package {
    const NAME: &'static str = "example.package";
    type Output = String;
}

const RENDITIONS: [&str; 3] = ["encode-480", "encode-720", "encode-1080"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = Client::connect(&url).await?;

    // The graph: probe -> {encode-480, encode-720, encode-1080} -> package.
    let mut wf = Workflow::new();
    wf.node(
        "probe",
        Probe {
            video: "uploads/cat.mp4".into(),
        },
    );
    for height in [480, 720, 1080] {
        wf.node(&format!("encode-{height}"), Encode { height })
            .after(&["probe"]);
    }
    wf.node(
        "package",
        Package {
            renditions: RENDITIONS.iter().map(|r| (*r).to_owned()).collect(),
        },
    );
    // The chord: package runs once, after all three encodes.
    wf.chord(&RENDITIONS, "package");
    let handle = client.submit_workflow(wf).await?;
    println!("submitted workflow {}", handle.id());

    // The worker: each handler may read its parents' outputs, typed.
    let worker = Worker::new(client.broker().clone(), WorkerConfig::default())
        .register::<Probe, _>(|task: Probe, _ctx: TaskContext| async move {
            println!("probing {}", task.video);
            Ok::<_, TaskError>(1080)
        })
        .register::<Encode, _>(|task: Encode, ctx: TaskContext| async move {
            let source = ctx.parent::<Probe>("probe")?;
            let height = task.height.min(source);
            Ok::<_, TaskError>(format!("cat-{height}p.mp4"))
        })
        .register::<Package, _>(|task: Package, ctx: TaskContext| async move {
            let mut files = Vec::new();
            for rendition in &task.renditions {
                files.push(ctx.parent::<Encode>(rendition)?);
            }
            Ok::<_, TaskError>(format!("master.m3u8 <- {}", files.join(", ")))
        });
    let waiting = handle.clone();
    let running = tokio::spawn(worker.run(async move {
        let _ = waiting.finished(Duration::from_secs(60)).await;
    }));

    let manifest = handle
        .wait::<Package>("package", Duration::from_secs(60))
        .await?;
    println!("package: {manifest}");
    let _report = running.await??;
    Ok(())
}

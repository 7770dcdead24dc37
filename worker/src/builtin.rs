//! Diagnostic tasks every Spool worker serves: operators and tests use them
//! to check a fleet end to end (`spoolctl call spool.ping`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{Broker, Task};

use crate::handler::{TaskContext, TaskError};
use crate::runtime::Worker;

/// Answers `"pong"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ping {}

impl Task for Ping {
    const NAME: &'static str = "spool.ping";
    type Output = String;
}

/// Returns its value unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo {
    /// Anything JSON can hold.
    #[serde(default)]
    pub value: serde_json::Value,
}

impl Task for Echo {
    const NAME: &'static str = "spool.echo";
    type Output = serde_json::Value;
}

/// Sleeps, then returns how long it slept; stops early when cancelled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sleep {
    /// Milliseconds to sleep.
    pub ms: u64,
}

impl Task for Sleep {
    const NAME: &'static str = "spool.sleep";
    type Output = u64;
}

/// Fails with a retryable error on its first `times` attempts, then
/// succeeds. The attempt number travels with the task, so this holds
/// whichever workers run it (give it more than `times` attempts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    /// How many runs fail.
    pub times: u32,
}

impl Task for Fail {
    const NAME: &'static str = "spool.fail";
    type Output = u32;

    fn options() -> spool_broker::TaskOptions {
        spool_broker::TaskOptions {
            max_attempts: 10,
            backoff: spool_broker::Backoff {
                base: Duration::from_millis(100),
                ..spool_broker::Backoff::default()
            },
            ..spool_broker::TaskOptions::default()
        }
    }
}

/// Holds `mb` MiB of touched memory for `hold_ms`, to exercise memory
/// limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alloc {
    /// Mebibytes to allocate.
    pub mb: u64,
    /// Milliseconds to hold them. Default: 0.
    #[serde(default)]
    pub hold_ms: u64,
}

impl Task for Alloc {
    const NAME: &'static str = "spool.alloc";
    type Output = u64;
}

/// The most `spool.alloc` may take, so a typo cannot take a host down.
const MAX_ALLOC_MB: u64 = 16 * 1024;

impl<B: Broker> Worker<B> {
    /// Registers the diagnostic tasks: `spool.ping`, `spool.echo`,
    /// `spool.sleep`, `spool.fail` and `spool.alloc`.
    #[must_use]
    pub fn with_builtin_tasks(self) -> Self {
        self.register::<Ping, _>(|_: Ping, _: TaskContext| async { Ok("pong".to_owned()) })
            .register::<Echo, _>(|task: Echo, _: TaskContext| async move { Ok(task.value) })
            .register::<Sleep, _>(sleep)
            .register::<Fail, _>(|task: Fail, ctx: TaskContext| {
                std::future::ready(fail(&task, &ctx))
            })
            .register::<Alloc, _>(alloc)
    }
}

async fn sleep(task: Sleep, ctx: TaskContext) -> Result<u64, TaskError> {
    let started = tokio::time::Instant::now();
    let slept = |started: tokio::time::Instant| {
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
    };
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(task.ms)) => Ok(slept(started)),
        // Stopped short: not a success, so the run ends as what stopped it
        // (revoked, timed out, or abandoned when its lease was lost).
        () = ctx.cancellation().cancelled() => Err(TaskError::fail(format!(
            "spool.sleep: stopped after {} ms of {}",
            slept(started),
            task.ms
        ))),
    }
}

fn fail(task: &Fail, ctx: &TaskContext) -> Result<u32, TaskError> {
    if ctx.attempt() <= task.times {
        let message = format!("spool.fail: failure {} of {}", ctx.attempt(), task.times);
        return Err(TaskError::retry(message));
    }
    Ok(ctx.attempt())
}

async fn alloc(task: Alloc, ctx: TaskContext) -> Result<u64, TaskError> {
    if task.mb > MAX_ALLOC_MB {
        return Err(TaskError::fail(format!(
            "spool.alloc: {} MiB is above the {MAX_ALLOC_MB} MiB cap",
            task.mb
        )));
    }
    let bytes = usize::try_from(task.mb * 1024 * 1024)
        .map_err(|_| TaskError::fail("spool.alloc: size does not fit this platform"))?;
    // Touch every page so the memory is resident, not just reserved.
    let held = vec![1u8; bytes];
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(task.hold_ms)) => {}
        () = ctx.cancellation().cancelled() => {}
    }
    Ok(held
        .iter()
        .step_by(4096)
        .map(|&b| u64::from(b))
        .sum::<u64>()
        / 256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_broker::MemoryBroker;
    use spool_sdk::Client;

    #[tokio::test]
    async fn builtin_tasks_run() {
        let broker = MemoryBroker::new();
        let client = Client::new(broker.clone());
        client.enqueue(Ping {}).await.unwrap();
        client
            .enqueue(Echo {
                value: serde_json::json!({"a": [1, 2]}),
            })
            .await
            .unwrap();
        client.enqueue(Sleep { ms: 5 }).await.unwrap();
        client.enqueue(Alloc { mb: 1, hold_ms: 0 }).await.unwrap();
        client.enqueue(Fail { times: 2 }).await.unwrap();
        let worker =
            Worker::new(broker.clone(), crate::WorkerConfig::default()).with_builtin_tasks();
        let counters = worker.counters();
        let report = worker
            .run(async move {
                while counters.snapshot().succeeded < 5 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap();
        assert_eq!((report.succeeded, report.retried), (5, 2));
    }
}

//! The worker registry: what each worker process says about itself.
//!
//! Every worker process (each child of a `spool-worker` supervisor) keeps a
//! [`WorkerRecord`] in the broker and rewrites it on every heartbeat, with a
//! time to live of a few heartbeats: a record that stops being refreshed
//! disappears by itself, so the registry never lists a worker that died
//! without saying goodbye for longer than that. `spoolctl` and the
//! autoscaler read it with [`RedisBroker::workers`](crate::RedisBroker::workers).
//!
//! A worker that stops cleanly writes a last record in state
//! [`WorkerState::Stopped`] (its final counts), which expires like any
//! other: readers that want live capacity filter with
//! [`WorkerRecord::is_live`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::envelope::{TaskId, Timestamp};
use crate::queue::QueueName;

/// Where a worker process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Fetching and running tasks.
    Running,
    /// Recycling (task or memory budget spent): no more fetching, finishing
    /// what it holds; a replacement is already starting.
    Retiring,
    /// Warm shutdown: no more fetching, finishing what it holds.
    Stopping,
    /// Exited cleanly; the record keeps its final counts until it expires.
    Stopped,
}

impl WorkerState {
    /// A short label: `running`, `retiring`, `stopping` or `stopped`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Retiring => "retiring",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One worker process's heartbeat record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerRecord {
    /// Unique among live workers: the process's consumer name in the
    /// broker (`<name>-<pid>-<random>`).
    pub id: String,
    /// The worker's name (`--name`), shared by the children of one
    /// supervisor.
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The process id of its supervisor, when it is a child of one.
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// The queues it fetches from.
    pub queues: Vec<QueueName>,
    /// The task names it has a handler for, sorted (`spoolctl inspect
    /// registered`, and `spoolctl call`'s check). Empty in records of
    /// workers older than this field, which did not say.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Where it is in its life.
    pub state: WorkerState,
    /// Why it is retiring, stopping or stopped: `max-tasks`, `memory`
    /// (recycling), `signal`, `supervisor` (shutdown), or `exited` (it
    /// ended on its own).
    #[serde(default)]
    pub reason: Option<String>,
    /// Slots running a task now.
    pub busy: u32,
    /// Slots in all (its concurrency).
    pub slots: u32,
    /// The tasks running now.
    pub running: Vec<TaskId>,
    /// Deliveries that reached an outcome (succeeded, failed, retried,
    /// dead-lettered, expired or revoked); tasks given back unstarted,
    /// deferred by a rate limit or abandoned to another worker do not
    /// count.
    pub processed: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Deliveries that failed for good or were dead-lettered.
    pub failed: u64,
    /// Runs that failed and were scheduled again.
    pub retried: u64,
    /// Resident memory of the process, in bytes (0 when unknown).
    #[serde(default)]
    pub rss_bytes: u64,
    /// What its host can do (GPUs, CUDA, FFmpeg encoders, libvmaf), as
    /// short strings keyed by capability; see the worker's hardware probe.
    #[serde(default)]
    pub capabilities: BTreeMap<String, String>,
    /// The worker's version.
    pub version: String,
    /// When the process started.
    pub started_at: Timestamp,
    /// When this record was written.
    pub last_seen: Timestamp,
}

impl WorkerRecord {
    /// A fresh record for a process that starts now, in state
    /// [`WorkerState::Running`] with no task done.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        host: impl Into<String>,
        pid: u32,
    ) -> Self {
        let now = Timestamp::now();
        Self {
            id: id.into(),
            name: name.into(),
            host: host.into(),
            pid,
            supervisor_pid: None,
            queues: Vec::new(),
            tasks: Vec::new(),
            state: WorkerState::Running,
            reason: None,
            busy: 0,
            slots: 0,
            running: Vec::new(),
            processed: 0,
            succeeded: 0,
            failed: 0,
            retried: 0,
            rss_bytes: 0,
            capabilities: BTreeMap::new(),
            version: String::new(),
            started_at: now,
            last_seen: now,
        }
    }

    /// Whether the worker still runs (any state but
    /// [`Stopped`](WorkerState::Stopped)).
    #[must_use]
    pub fn is_live(&self) -> bool {
        self.state != WorkerState::Stopped
    }

    /// Encodes the record (MessagePack, fields by name, so readers of other
    /// versions can skip fields they do not know).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`](crate::Error::Encode) if serialization fails.
    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        rmp_serde::to_vec_named(self).map_err(|e| crate::Error::encode("worker record", e))
    }

    /// Decodes a record written by [`encode`](Self::encode).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) for bytes that are not a
    /// worker record.
    pub fn decode(bytes: &[u8]) -> crate::Result<Self> {
        rmp_serde::from_slice(bytes).map_err(|e| crate::Error::decode("worker record", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut record = WorkerRecord::new("w-1-abcd", "w", "host", 1);
        record.queues = vec![QueueName::DEFAULT, QueueName::GPU];
        record.tasks = vec!["spool.ping".into(), "video.transcode".into()];
        record.running = vec![TaskId::new()];
        record.capabilities.insert("gpus".into(), "0".into());
        record.state = WorkerState::Retiring;
        record.reason = Some("memory".into());
        let bytes = record.encode().expect("encodes");
        assert_eq!(WorkerRecord::decode(&bytes).expect("decodes"), record);
        assert!(record.is_live());
        assert!(WorkerRecord::decode(b"nope").is_err());
    }

    #[test]
    fn records_without_task_names_still_decode() {
        // A record as a worker older than the `tasks` field writes it.
        #[derive(Serialize)]
        struct Old<'a> {
            id: &'a str,
            name: &'a str,
            host: &'a str,
            pid: u32,
            queues: Vec<QueueName>,
            state: WorkerState,
            busy: u32,
            slots: u32,
            running: Vec<TaskId>,
            processed: u64,
            succeeded: u64,
            failed: u64,
            retried: u64,
            version: &'a str,
            started_at: Timestamp,
            last_seen: Timestamp,
        }
        let now = Timestamp::now();
        let old = Old {
            id: "w-1-abcd",
            name: "w",
            host: "host",
            pid: 1,
            queues: vec![QueueName::DEFAULT],
            state: WorkerState::Running,
            busy: 0,
            slots: 2,
            running: Vec::new(),
            processed: 0,
            succeeded: 0,
            failed: 0,
            retried: 0,
            version: "0.1.0",
            started_at: now,
            last_seen: now,
        };
        let bytes = rmp_serde::to_vec_named(&old).expect("encodes");
        let record = WorkerRecord::decode(&bytes).expect("decodes");
        assert!(record.tasks.is_empty());
        assert_eq!(record.slots, 2);
    }
}

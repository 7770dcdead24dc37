//! `spoolctl revoke`: tells the workers not to run a task.

use std::time::Duration;

use serde::Serialize;
use spool_broker::store::JobStore;
use spool_broker::{Broker, QueueName, TaskId};

use super::Report;
use crate::error::{Error, Result};

/// How long a revocation is remembered unless told otherwise: a day.
pub const DEFAULT_REVOKE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What `spoolctl revoke` revokes. Start from [`RevokeRequest::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevokeRequest {
    /// The task.
    pub id: TaskId,
    /// How long the workers remember the revocation. Default:
    /// [`DEFAULT_REVOKE_TTL`].
    pub ttl: Duration,
    /// The queues to look for the task in (ready, running, delayed and
    /// dead). Default: none (the caller adds the routed ones, the paused
    /// ones and those the workers serve).
    pub queues: Vec<QueueName>,
    /// Revoke even when no queue nor the job store holds the task: ahead
    /// of its enqueue, say (workers remember revocations for `ttl` and skip
    /// the task when it comes). Default: false.
    pub force: bool,
}

impl RevokeRequest {
    /// Revokes `id` for a day, if it is found.
    #[must_use]
    pub fn new(id: TaskId) -> Self {
        Self {
            id,
            ttl: DEFAULT_REVOKE_TTL,
            queues: Vec::new(),
            force: false,
        }
    }
}

/// A task that was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokeReport {
    /// The task.
    pub id: TaskId,
    /// How long the revocation is remembered, in seconds.
    pub ttl_seconds: u64,
    /// Where the task was found (`queued in gpu`, `delayed in default`,
    /// `dead in gpu`, `in the job store (running)`); null when it was
    /// revoked ahead of time with `--force`.
    pub found: Option<String>,
}

impl Report for RevokeReport {
    fn to_text(&self) -> String {
        match &self.found {
            Some(found) => format!("revoked {} ({found})\n", self.id),
            None => format!(
                "revoked {} ahead of time: no task has this id yet\n",
                self.id
            ),
        }
    }
}

/// Revokes a task for `request.ttl`: workers skip it if it has not started
/// and cancel it if it runs. The task must be found first, in one of
/// `request.queues` (ready, running, delayed or dead) or in `store`,
/// unless `request.force` is set.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a zero `ttl`, [`Error::TaskNotFound`] when
/// nothing holds the task and `force` is not set (nothing is revoked
/// then), [`Error::Broker`] when the broker or the store fails.
pub async fn revoke(
    broker: &impl Broker,
    store: Option<&JobStore>,
    request: &RevokeRequest,
) -> Result<RevokeReport> {
    if request.ttl.is_zero() {
        return Err(Error::InvalidInput("--ttl must be longer than zero".into()));
    }
    let found = find(broker, store, request).await?;
    if found.is_none() && !request.force {
        return Err(Error::TaskNotFound {
            id: request.id,
            searched: request
                .queues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            store: store.is_some(),
        });
    }
    broker.revoke(request.id, request.ttl).await?;
    Ok(RevokeReport {
        id: request.id,
        ttl_seconds: request.ttl.as_secs(),
        found,
    })
}

/// Where the task is: the first queue holding it, else the job store.
async fn find(
    broker: &impl Broker,
    store: Option<&JobStore>,
    request: &RevokeRequest,
) -> Result<Option<String>> {
    for queue in &request.queues {
        if let Some(place) = broker.find_task(queue, request.id).await? {
            return Ok(Some(format!("{place} in {queue}")));
        }
    }
    if let Some(store) = store
        && let Some(record) = store.get(request.id).await?
    {
        return Ok(Some(format!("in the job store ({})", record.status)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use spool_broker::{Envelope, MemoryBroker, Timestamp};

    use super::*;
    use crate::ctl::{Format, render};

    fn request(id: TaskId) -> RevokeRequest {
        RevokeRequest {
            queues: vec![QueueName::DEFAULT, QueueName::GPU],
            ..RevokeRequest::new(id)
        }
    }

    #[tokio::test]
    async fn a_queued_task_is_found_and_revoked() {
        let broker = MemoryBroker::new();
        let envelope = Envelope::new("x", QueueName::GPU, vec![0x80]);
        broker
            .enqueue(std::slice::from_ref(&envelope))
            .await
            .unwrap();
        let id = envelope.id;
        let report = revoke(&broker, None, &request(id)).await.unwrap();
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            format!("revoked {id} (queued in gpu)\n")
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            json!({"id": id.to_string(), "ttl_seconds": 86_400, "found": "queued in gpu"})
        );
        assert!(broker.revoked().await.unwrap().contains(&id));
    }

    #[tokio::test]
    async fn a_delayed_task_is_found() {
        let broker = MemoryBroker::new();
        let mut envelope = Envelope::new("x", QueueName::DEFAULT, vec![0x80]);
        envelope.eta = Some(Timestamp::now().saturating_add(Duration::from_secs(3600)));
        broker
            .enqueue(std::slice::from_ref(&envelope))
            .await
            .unwrap();
        let report = revoke(&broker, None, &request(envelope.id)).await.unwrap();
        assert_eq!(report.found.as_deref(), Some("delayed in default"));
    }

    #[tokio::test]
    async fn an_unknown_id_is_refused_unless_forced() {
        let broker = MemoryBroker::new();
        let id = TaskId::new();
        let err = revoke(&broker, None, &request(id)).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::TaskNotFound { .. }), "{err:?}");
        assert!(
            text.contains(&format!("no task {id}")) && text.contains("default, gpu"),
            "{text}"
        );
        assert!(text.contains("--force"), "{text}");
        assert!(broker.revoked().await.unwrap().is_empty());

        let forced = RevokeRequest {
            force: true,
            ..request(id)
        };
        let report = revoke(&broker, None, &forced).await.unwrap();
        assert_eq!(report.found, None);
        assert!(
            render(&report, Format::Text)
                .unwrap()
                .contains("ahead of time")
        );
        assert!(broker.revoked().await.unwrap().contains(&id));
    }

    #[tokio::test]
    async fn a_zero_ttl_is_refused() {
        let broker = MemoryBroker::new();
        let zero = RevokeRequest {
            ttl: Duration::ZERO,
            force: true,
            ..request(TaskId::new())
        };
        let err = revoke(&broker, None, &zero).await.unwrap_err();
        assert!(err.to_string().contains("--ttl"), "{err}");
        assert!(broker.revoked().await.unwrap().is_empty());
    }
}

//! `spoolctl revoke`: tells the workers not to run a task.

use std::time::Duration;

use serde::Serialize;
use spool_broker::{Broker, TaskId};

use super::Report;
use crate::error::{Error, Result};

/// How long a revocation is remembered unless told otherwise: a day.
pub const DEFAULT_REVOKE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A task that was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokeReport {
    /// The task.
    pub id: TaskId,
    /// How long the revocation is remembered, in seconds.
    pub ttl_seconds: u64,
}

impl Report for RevokeReport {
    fn to_text(&self) -> String {
        format!("revoked {}\n", self.id)
    }
}

/// Revokes task `id` for `ttl`: workers skip it if it has not started and
/// cancel it if it runs.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a zero `ttl`, [`Error::Broker`] when the
/// broker fails.
pub async fn revoke(broker: &impl Broker, id: TaskId, ttl: Duration) -> Result<RevokeReport> {
    if ttl.is_zero() {
        return Err(Error::InvalidInput("--ttl must be longer than zero".into()));
    }
    broker.revoke(id, ttl).await?;
    Ok(RevokeReport {
        id,
        ttl_seconds: ttl.as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use spool_broker::MemoryBroker;

    use super::*;
    use crate::ctl::{Format, render};

    #[tokio::test]
    async fn a_revoked_task_is_listed_by_the_broker() {
        let broker = MemoryBroker::new();
        let id = TaskId::new();
        let report = revoke(&broker, id, DEFAULT_REVOKE_TTL).await.unwrap();
        assert_eq!(
            render(&report, Format::Text).unwrap(),
            format!("revoked {id}\n")
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, Format::Json).unwrap()).unwrap();
        assert_eq!(json, json!({"id": id.to_string(), "ttl_seconds": 86_400}));
        assert!(broker.revoked().await.unwrap().contains(&id));
    }

    #[tokio::test]
    async fn a_zero_ttl_is_refused() {
        let broker = MemoryBroker::new();
        let err = revoke(&broker, TaskId::new(), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--ttl"), "{err}");
        assert!(broker.revoked().await.unwrap().is_empty());
    }
}

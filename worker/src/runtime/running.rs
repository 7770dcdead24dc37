//! The runs in progress, so they can be cancelled by id (revocation, a lost
//! lease) and listed (the worker registry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use spool_broker::TaskId;
use tokio_util::sync::CancellationToken;

/// Why a run was asked to stop early. The first reason given wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CancelReason {
    Revoked = 1,
    LeaseLost = 2,
    SoftTimeLimit = 3,
}

/// A run's cancellation token and the reason it fired.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunControl {
    token: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl RunControl {
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub(crate) fn cancel(&self, reason: CancelReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> Option<CancelReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(CancelReason::Revoked),
            2 => Some(CancelReason::LeaseLost),
            3 => Some(CancelReason::SoftTimeLimit),
            _ => None,
        }
    }
}

/// The runs in progress, by task id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Running {
    runs: Arc<Mutex<HashMap<TaskId, RunControl>>>,
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, HashMap<TaskId, RunControl>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a run; it stays registered until the guard drops.
    pub(crate) fn enter(&self, id: TaskId, control: RunControl) -> RunGuard {
        self.lock().insert(id, control);
        RunGuard {
            running: self.clone(),
            id,
        }
    }

    /// Cancels the run of `id`, if one is in progress; says whether one was.
    pub(crate) fn cancel(&self, id: TaskId, reason: CancelReason) -> bool {
        self.lock().get(&id).map(|run| run.cancel(reason)).is_some()
    }

    /// The ids of the runs in progress.
    #[allow(dead_code, reason = "read by the worker registry")]
    pub(crate) fn ids(&self) -> Vec<TaskId> {
        self.lock().keys().copied().collect()
    }
}

/// Unregisters a run when dropped.
#[derive(Debug)]
pub(crate) struct RunGuard {
    running: Running,
    id: TaskId,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.running.lock().remove(&self.id);
    }
}

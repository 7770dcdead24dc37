//! Actuators carry the policy's decisions out: [`LocalActuator`] starts and
//! retires `spool-worker` processes on this host, [`KubernetesActuator`]
//! sets the replicas of a Deployment per pool.

mod kubernetes;
mod local;
mod spawn;

use std::future::Future;

use spool_broker::WorkerRecord;

pub use self::kubernetes::KubernetesActuator;
pub use self::local::{LocalActuator, resolve_worker_bin, worker_args};
use super::config::PoolConfig;
use crate::error::Result;

/// What runs a pool's workers.
///
/// The daemon calls [`current`](Actuator::current) and, when the count
/// should change, [`scale`](Actuator::scale) at each tick, then
/// [`shutdown`](Actuator::shutdown) once as it stops.
pub trait Actuator: Send {
    /// A short name for logs: `local`, `kubernetes`.
    fn kind(&self) -> &'static str;

    /// The workers the pool has now, as this actuator counts them:
    /// starting ones included, retiring ones not.
    ///
    /// # Errors
    ///
    /// When the count cannot be read (the Kubernetes API fails).
    fn current(&mut self, pool: &PoolConfig) -> impl Future<Output = Result<u32>> + Send;

    /// Moves the pool towards `desired` workers and returns how many it has
    /// now. Workers are only ever retired with a warm shutdown; `workers`
    /// (the registry as read this tick) tells which are idle.
    ///
    /// # Errors
    ///
    /// When a worker cannot be started or the API refuses the change.
    fn scale(
        &mut self,
        pool: &PoolConfig,
        desired: u32,
        workers: &[WorkerRecord],
    ) -> impl Future<Output = Result<u32>> + Send;

    /// Called once when the autoscaler stops. The local actuator retires
    /// every worker it started and waits for them to finish their tasks;
    /// when `hurry` completes (a second Ctrl-C) it signals them again,
    /// which is their cold shutdown. The Kubernetes actuator leaves the
    /// Deployments as they are.
    ///
    /// # Errors
    ///
    /// When a worker cannot be signalled or waited for.
    fn shutdown(
        &mut self,
        hurry: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = Result<()>> + Send;
}

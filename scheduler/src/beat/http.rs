//! The beat's `/metrics` endpoint: the worker's server, serving what a
//! render function returns (the beat's [`BeatMetrics::render`](super::BeatMetrics::render)).

use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Binds `addr` and serves what `render` returns on `GET /metrics`
/// (anything else: 404) until the returned task is aborted. Returns the bound address
/// (useful with port 0) and the serving task.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use spool_scheduler::beat::{BeatMetrics, serve_metrics};
///
/// # async fn demo() -> spool_scheduler::Result<()> {
/// let metrics = Arc::new(BeatMetrics::new(["sweep"]));
/// let addr = "127.0.0.1:9465".parse().expect("a socket address");
/// let (addr, server) = serve_metrics(addr, move || metrics.render()).await?;
/// println!("metrics on http://{addr}/metrics");
/// server.abort();
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::InvalidInput`] when the address cannot be bound (in use, not
/// local, no permission).
pub async fn serve_metrics<F>(addr: SocketAddr, render: F) -> Result<(SocketAddr, JoinHandle<()>)>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    spool_cli_common::serve_metrics(addr, render)
        .await
        .map_err(|e| Error::InvalidInput(format!("cannot serve metrics on {addr}: {e}")))
}

//! `spool-dashboard`: Spool's web dashboard, a server in the control plane.
//!
//! Server-rendered pages ([`pages`], maud: every interpolation escaped)
//! over the same Inspector/Admin API `spoolctl` uses
//! ([`spool_scheduler::ctl`]), history and search from the job store, live
//! updates over server-sent events ([`sse`]), and the assets (a small
//! vanilla script, the stylesheet and the vendored Shaka Player) built
//! into the binary ([`assets`]). [`auth`] holds the access rules.
//!
//! # Examples
//!
//! ```no_run
//! use spool_dashboard::{DashboardConfig, Dashboard};
//!
//! # async fn run() -> spool_dashboard::Result<()> {
//! let broker = spool_broker::RedisBroker::connect(spool_broker::RedisConfig::default()).await?;
//! let dashboard = Dashboard::new(broker, None, None, DashboardConfig::default())?;
//! dashboard.serve(std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

// Library crates: every public item documented, and nothing `pub` that the
// crate does not export.
#![warn(missing_docs, unreachable_pub)]

pub mod assets;
pub mod auth;
pub mod charts;
pub mod config;
mod error;
pub mod history;
pub mod media;
pub mod pages;
pub mod routes;
pub mod sse;
pub mod state;

use std::future::Future;
use std::sync::Arc;

use spool_broker::RedisBroker;
use spool_broker::store::JobStore;
use spool_scheduler::beat::BeatConfig;

pub use crate::auth::Access;
pub use crate::config::DashboardConfig;
pub use crate::error::{Error, Result};
use crate::history::History;
use crate::state::AppState;

/// A dashboard ready to serve.
#[derive(Debug)]
pub struct Dashboard {
    state: AppState,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Dashboard {
    /// A dashboard over `broker` and, when given, the job store and the
    /// beat entries.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the configuration cannot be served safely
    /// (a non-loopback address without credentials).
    pub fn new(
        broker: RedisBroker,
        store: Option<JobStore>,
        beat: Option<BeatConfig>,
        config: DashboardConfig,
    ) -> Result<Self> {
        config.access.check_listen(config.listen)?;
        let history = History::new(config.history_len);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        Ok(Self {
            stop,
            state: AppState {
                broker,
                store,
                config: Arc::new(config),
                beat: beat.map(Arc::new),
                csrf: Arc::new(auth::new_csrf_token()),
                history,
                store_counts: Arc::default(),
                stopping,
            },
        })
    }

    /// Serves until `shutdown` completes, sampling the queues meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::Serve`] when the address cannot be bound.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the server and the sampler.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let addr = self.state.config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Serve { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Serve { addr, source })?;
        tracing::info!(
            addr = %bound,
            read_only = self.state.config.read_only,
            "spool-dashboard listening"
        );
        let sampler = tokio::spawn(history::run_sampler(
            self.state.broker.clone(),
            self.state.config.queues.clone(),
            self.state.config.sample_interval,
            self.state.history.clone(),
        ));
        let _abort = AbortOnDrop(sampler);
        let app = routes::router(self.state);
        let stop = self.stop;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop.send_replace(true);
            })
            .await
            .map_err(|source| Error::Serve { addr, source })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! The dashboard's one error type, and how each error answers a request.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What can go wrong serving the dashboard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request's input did not validate (a malformed id, an unknown
    /// status, a queue name Spool would refuse).
    #[error("{0}")]
    BadInput(String),
    /// Nothing has this id.
    #[error("{0}")]
    NotFound(String),
    /// The page needs the job store, and none is configured.
    #[error("this page needs the job store: start the dashboard with --store-url")]
    NoStore,
    /// An action (POST) refused: read-only mode, a cross-site request or a
    /// missing CSRF token.
    #[error("{0}")]
    Forbidden(String),
    /// Redis or the job store failed.
    #[error(transparent)]
    Broker(#[from] spool_broker::Error),
    /// A `spoolctl` command the dashboard shares failed.
    #[error(transparent)]
    Ctl(#[from] spool_scheduler::Error),
    /// The configuration cannot work (no credentials on a public address,
    /// an unreadable credentials file).
    #[error("{0}")]
    Config(String),
    /// The listener could not be bound or served.
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The dashboard's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status this error answers with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadInput(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NoStore => StatusCode::NOT_IMPLEMENTED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Ctl(spool_scheduler::Error::Broker(_)) | Self::Broker(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Ctl(_) => StatusCode::BAD_REQUEST,
            Self::Config(_) | Self::Serve { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let page = crate::pages::layout::error_page(status, &self.to_string());
        (status, page).into_response()
    }
}

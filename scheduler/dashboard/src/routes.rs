//! The URL map: pages (GET), actions (POST, redirecting back), live event
//! streams, the probes and the assets, all behind [`crate::auth::guard`].

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use spool_broker::Broker as _;

use crate::pages;
use crate::state::AppState;
use crate::{assets, auth, media, sse};

/// The dashboard's router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview::page))
        .route("/queues/{queue}", get(pages::queue::page))
        .route("/queues/{queue}/pause", post(pages::queue::pause))
        .route("/queues/{queue}/resume", post(pages::queue::resume))
        .route("/queues/{queue}/purge", post(pages::queue::purge))
        .route("/queues/{queue}/dead", get(pages::dead::page))
        .route("/queues/{queue}/dead/retry", post(pages::dead::retry))
        .route("/queues/{queue}/dead/purge", post(pages::dead::purge))
        .route("/tasks", get(pages::search::page))
        .route("/tasks/{id}", get(pages::task::page))
        .route("/tasks/{id}/revoke", post(pages::task::revoke))
        .route("/tasks/{id}/retry", post(pages::task::retry))
        .route("/tasks/{id}/media/{*path}", get(media::serve))
        .route("/workers", get(pages::workers::page))
        .route("/beat", get(pages::beat::page))
        .route("/workflows", get(pages::workflows::list))
        .route("/workflows/{id}", get(pages::workflows::page))
        .route("/workflows/{id}/cancel", post(pages::workflows::cancel))
        .route("/workflows/{id}/retry", post(pages::workflows::retry))
        .route("/events/overview", get(sse::overview))
        .route("/events/workers", get(sse::workers))
        .route("/events/tasks/{id}", get(sse::task))
        .route("/events/workflows/{id}", get(sse::workflow))
        .route("/assets/{*name}", get(assets::serve))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// `/healthz`: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `/readyz`: Redis answers, and the job store when one is configured.
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.broker.paused().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Redis does not answer: {e}\n"),
        )
            .into_response();
    }
    if let Some(store) = &state.store
        && let Err(e) = store.count_by_status(None).await
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the job store does not answer: {e}\n"),
        )
            .into_response();
    }
    "ready\n".into_response()
}

async fn not_found() -> crate::Error {
    crate::Error::NotFound("no such page".to_owned())
}

/// Headers every answer carries: scripts only from the dashboard itself,
/// no framing, no referrer to other sites, no sniffing. (`no-referrer`
/// would also make the browser send `Origin: null` with the dashboard's
/// own forms, which the action rules refuse.)
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; \
             worker-src 'self' blob:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

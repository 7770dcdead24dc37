//! The `/metrics` endpoint every Spool daemon serves: HTTP/1.1 on hyper,
//! one task per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info};

/// Binds `addr` and serves what `render` returns (the Prometheus text
/// format) on `GET /metrics` until the returned task is aborted: the one
/// endpoint behind every Spool daemon's `--metrics-addr`. Returns the
/// bound address (useful with port 0) and the serving task.
///
/// # Errors
///
/// The I/O error when the address cannot be bound (in use, not local, no
/// permission).
pub async fn serve_fn<F>(
    addr: SocketAddr,
    render: F,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr().unwrap_or(addr);
    info!(addr = %bound, "serving Prometheus metrics on /metrics");
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    debug!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let render = Arc::clone(&render);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let render = Arc::clone(&render);
                    async move { Ok::<_, Infallible>(respond(&*render, &request)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, error = %e, "metrics: connection ended with an error");
                }
            });
        }
    });
    Ok((bound, task))
}

fn respond(render: &dyn Fn() -> String, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, render()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "metrics are on /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let kind = if status == StatusCode::OK {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

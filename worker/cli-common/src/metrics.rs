//! The HTTP endpoint every Spool daemon serves: `/metrics` (Prometheus),
//! `/healthz` (the process answers) and `/readyz` (it is ready for work),
//! HTTP/1.1 on hyper, one task per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

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

/// Whether a daemon is ready for work, as `GET /readyz` reports it: a
/// cheap, cloneable flag with the reason it is not.
#[derive(Clone, Debug)]
pub struct Readiness {
    state: Arc<RwLock<Result<(), String>>>,
}

impl Readiness {
    /// Not ready yet, for `why` (say, "no child is serving yet").
    #[must_use]
    pub fn not_yet(why: impl Into<String>) -> Self {
        Self {
            state: Arc::new(RwLock::new(Err(why.into()))),
        }
    }

    /// Ready from the start: for daemons that serve only once connected.
    #[must_use]
    pub fn ready_now() -> Self {
        Self {
            state: Arc::new(RwLock::new(Ok(()))),
        }
    }

    /// Marks the daemon ready.
    pub fn set_ready(&self) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Ok(());
    }

    /// Marks the daemon not ready, for `why`.
    pub fn set_not_ready(&self, why: impl Into<String>) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Err(why.into());
    }

    /// `Ok` when ready, else the reason.
    ///
    /// # Errors
    ///
    /// The reason the daemon is not ready.
    pub fn check(&self) -> Result<(), String> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Binds `addr` and serves what `render` returns (the Prometheus text
/// format) on `GET /metrics` until the returned task is aborted, with
/// `/healthz` and a `/readyz` that is always ready: the endpoint behind
/// every Spool daemon's `--metrics-addr`. Returns the bound address
/// (useful with port 0) and the serving task.
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
    serve_with_readiness(addr, render, Readiness::ready_now()).await
}

/// As [`serve_fn`], with `/readyz` answering `200 ready` while `readiness`
/// is ready and `503` with its reason while it is not. `/healthz` answers
/// `200 ok` as long as the process serves at all.
///
/// # Errors
///
/// The I/O error when the address cannot be bound.
pub async fn serve_with_readiness<F>(
    addr: SocketAddr,
    render: F,
    readiness: Readiness,
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
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let render = Arc::clone(&render);
                    let readiness = readiness.clone();
                    async move { Ok::<_, Infallible>(respond(&*render, &readiness, &request)) }
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

/// This process's own metrics in the Prometheus text format, as every
/// Prometheus client library exports them: `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`
/// and `process_threads`, read from `/proc` at each scrape. Every
/// daemon's `/metrics` ends with them. Empty off Linux.
#[must_use]
pub fn process_metrics() -> String {
    #[cfg(target_os = "linux")]
    {
        use std::sync::OnceLock;

        use prometheus::{Encoder as _, Registry, TextEncoder};

        static REGISTRY: OnceLock<Option<Registry>> = OnceLock::new();
        let registry = REGISTRY.get_or_init(|| {
            let registry = Registry::new();
            let collector = prometheus::process_collector::ProcessCollector::for_self();
            registry
                .register(Box::new(collector))
                .ok()
                .map(|()| registry)
        });
        let Some(registry) = registry else {
            return String::new();
        };
        let mut text = Vec::new();
        if TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(text).unwrap_or_default()
    }
    #[cfg(not(target_os = "linux"))]
    String::new()
}

/// The daemon's own metrics followed by the process metrics.
fn with_process_metrics(mut rendered: String) -> String {
    if !rendered.is_empty() && !rendered.ends_with('\n') {
        rendered.push('\n');
    }
    rendered + &process_metrics()
}

fn respond(
    render: &dyn Fn() -> String,
    readiness: &Readiness,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let get = matches!(request.method(), &Method::GET | &Method::HEAD);
    let path = request.uri().path();
    let (status, body) = match path {
        "/metrics" | "/healthz" | "/readyz" if !get => {
            (StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned())
        }
        "/metrics" => (StatusCode::OK, with_process_metrics(render())),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match readiness.check() {
            Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "this server has /metrics, /healthz and /readyz\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let kind = if status == StatusCode::OK && path == "/metrics" {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("{method} {path} HTTP/1.0\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    }

    #[tokio::test]
    async fn readiness_follows_its_flag_and_health_always_answers() {
        let readiness = Readiness::not_yet("no child is serving yet");
        let (addr, server) = serve_with_readiness(
            "127.0.0.1:0".parse().unwrap(),
            || "spool_up 1\n".to_owned(),
            readiness.clone(),
        )
        .await
        .unwrap();
        assert_eq!(
            get(addr, "GET", "/readyz").await,
            (503, "not ready: no child is serving yet\n".to_owned())
        );
        assert_eq!(get(addr, "GET", "/healthz").await, (200, "ok\n".to_owned()));
        readiness.set_ready();
        assert_eq!(
            get(addr, "GET", "/readyz").await,
            (200, "ready\n".to_owned())
        );
        readiness.set_not_ready("stopping");
        assert_eq!(get(addr, "GET", "/readyz").await.0, 503);
        let (status, metrics) = get(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(metrics.starts_with("spool_up 1\n"), "{metrics}");
        for name in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
        ] {
            assert!(metrics.contains(name), "{name} missing: {metrics}");
        }
        assert_eq!(get(addr, "POST", "/readyz").await.0, 405);
        assert_eq!(get(addr, "GET", "/").await.0, 404);
        server.abort();

        // Daemons without a readiness of their own are ready once serving.
        let (addr, server) = serve_fn("127.0.0.1:0".parse().unwrap(), String::new)
            .await
            .unwrap();
        assert_eq!(get(addr, "GET", "/readyz").await.0, 200);
        server.abort();
    }
}

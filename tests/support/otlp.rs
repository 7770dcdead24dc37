//! A real OTLP/HTTP receiver in the test process: it accepts
//! `POST /v1/traces`, decodes each `ExportTraceServiceRequest` (protobuf)
//! and keeps the spans, and counts every connection it accepts, so a test
//! can tell that nothing connected at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The `service.name` of the process that sent it.
    pub service: String,
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent_span_id: Vec<u8>,
    /// OTLP's span kind: 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// 2 when the span's status is error.
    pub status_code: i32,
    /// Every attribute, its value as text.
    pub attributes: BTreeMap<String, String>,
    /// The spans it links to, as (trace id, span id).
    pub links: Vec<(Vec<u8>, Vec<u8>)>,
}

/// OTLP's numbers for span kinds.
pub const KIND_CLIENT: i32 = 3;
pub const KIND_PRODUCER: i32 = 4;
pub const KIND_CONSUMER: i32 = 5;

impl ReceivedSpan {
    /// The attribute `key` as text, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Whether it links to `span`.
    pub fn links_to(&self, span: &ReceivedSpan) -> bool {
        self.links
            .iter()
            .any(|(trace, id)| *trace == span.trace_id && *id == span.span_id)
    }
}

#[derive(Debug, Default)]
struct Shared {
    spans: Mutex<Vec<ReceivedSpan>>,
    connections: AtomicUsize,
    changed: Notify,
}

/// The receiver; it stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OtlpReceiver {
    /// A receiver on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::on("127.0.0.1:0").await
    }

    /// A receiver on `addr`.
    pub async fn on(addr: &str) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("the OTLP receiver cannot listen on {addr}: {e}"));
        let addr = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared::default());
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Self {
            addr,
            shared,
            server,
        }
    }

    /// The base URL to give as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.spans.lock().expect("not poisoned").clone()
    }

    /// Waits until `found` finds what it looks for in the spans received,
    /// and returns it; fails the test after `timeout`, showing the spans.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&[ReceivedSpan]) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(result) = found(&self.spans()) {
                return result;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; received: {:#?}",
                    self.spans()
                );
            }
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        shared.changed.notify_waiters();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { export(request, &shared).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn export(
    request: hyper::Request<hyper::body::Incoming>,
    shared: &Shared,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let respond = |status: u16, body: Vec<u8>| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.uri().path() != "/v1/traces" {
        return Ok(respond(404, Vec::new()));
    }
    let body = request.into_body().collect().await?.to_bytes();
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return Ok(respond(400, Vec::new()));
    };
    let mut received = Vec::new();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    kind: span.kind,
                    status_code: span.status.map_or(0, |s| s.code),
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|kv| {
                            (
                                kv.key,
                                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                            )
                        })
                        .collect(),
                    links: span
                        .links
                        .into_iter()
                        .map(|link| (link.trace_id, link.span_id))
                        .collect(),
                });
            }
        }
    }
    shared.spans.lock().expect("not poisoned").extend(received);
    shared.changed.notify_waiters();
    Ok(respond(
        200,
        ExportTraceServiceResponse::default().encode_to_vec(),
    ))
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

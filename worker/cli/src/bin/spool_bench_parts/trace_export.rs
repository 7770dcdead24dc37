//! `spool-bench --trace-export`: what exporting every task's spans costs
//! the drain (issue 18). The drain phase runs `--rounds` times with span
//! export off and as often with it on, alternated, against an OTLP/HTTP
//! receiver in this process.
//!
//! The receiver stands for a collector, which runs on a machine of its
//! own: while a drain is timed it only reads each request and keeps its
//! body, answering at once; after the timing stops (and the exporter's
//! flush) it decodes what it kept and counts the spans, so the run still
//! shows that every span arrived without the decoding coming out of the
//! drain's CPU.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, Result};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde::Serialize;
use spool_broker::{QueueName, RedisBroker};
use spool_cli_common::{ExportSwitch, Telemetry};
use spool_sdk::Client;

use super::{Args, drain, enqueue, median};

/// What the local receiver got.
#[derive(Debug, Default)]
pub(crate) struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
    /// The bodies not decoded yet, as they came.
    kept: Mutex<Vec<Bytes>>,
    /// What [`Received::decode_kept`] counted.
    counted: Mutex<Counted>,
}

/// The spans decoded from the requests.
#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    spans: u64,
    /// `process` spans: one a task.
    process: u64,
    /// Request bodies that were not an `ExportTraceServiceRequest`.
    undecodable: u64,
}

impl Received {
    /// Keeps a request's body for [`Received::decode_kept`].
    fn keep(&self, body: Bytes) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        if let Ok(mut kept) = self.kept.lock() {
            kept.push(body);
        }
    }

    /// Decodes the bodies kept so far (and drops them), adding their spans
    /// to the counts: call it outside the timed phase.
    pub(crate) fn decode_kept(&self) {
        let bodies = self
            .kept
            .lock()
            .map(|mut kept| std::mem::take(&mut *kept))
            .unwrap_or_default();
        let mut counted = Counted::default();
        for body in bodies {
            let Ok(export) = ExportTraceServiceRequest::decode(body) else {
                counted.undecodable += 1;
                continue;
            };
            for span in export
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                counted.spans += 1;
                counted.process += u64::from(span.name.starts_with("process "));
            }
        }
        if let Ok(mut total) = self.counted.lock() {
            total.spans += counted.spans;
            total.process += counted.process;
            total.undecodable += counted.undecodable;
        }
    }

    fn counted(&self) -> Counted {
        self.counted.lock().map(|c| *c).unwrap_or_default()
    }
}

/// Starts the receiver on a free port of 127.0.0.1 and returns its
/// address.
pub(crate) async fn start_receiver(received: Arc<Received>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("starting the local OTLP receiver")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let received = Arc::clone(&received);
                    async move { export(request, &received).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn export(
    request: hyper::Request<hyper::body::Incoming>,
    received: &Received,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    received.keep(body);
    // Decoded later, untimed (see the module's documentation).
    let response = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(hyper::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(response)))
        .unwrap_or_default())
}

/// The figures of a `--trace-export` run.
#[derive(Debug, Serialize)]
pub(crate) struct TraceFigures {
    n: usize,
    rounds: usize,
    /// The sampler as `OTEL_TRACES_SAMPLER` gives it (default: parentbased_always_on).
    sampler: String,
    drain_off_per_s: Vec<f64>,
    drain_on_per_s: Vec<f64>,
    drain_off_median_per_s: f64,
    drain_on_median_per_s: f64,
    /// The on median over the off median.
    on_vs_off: f64,
    /// Spans the receiver decoded, over all the rounds with export on
    /// (after each round's timing).
    spans_received: u64,
    /// Of those, `process` spans: one a task, so `tasks_traced` of them
    /// when every trace is sampled.
    process_spans_received: u64,
    /// Request bodies that did not decode (none expected).
    export_requests_undecodable: u64,
    /// Tasks drained with export on: each makes a `process` span, and
    /// each group commit a `settle` span per 128 tasks it settles.
    tasks_traced: u64,
    export_requests: u64,
    export_bytes: u64,
}

/// Drains `args.n` tasks `args.rounds` times each with span export off
/// and on, alternated (off first), enqueuing each round's tasks untimed
/// under the same setting (so with export on they carry a trace context).
pub(crate) async fn run(
    args: &Args,
    broker: &RedisBroker,
    client: &Client<RedisBroker>,
    switch: &ExportSwitch,
    telemetry: &Telemetry,
    received: &Received,
) -> Result<TraceFigures> {
    let rounds = args.rounds.max(1);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for export in [false, true] {
            switch.set(export);
            enqueue(args, client, &QueueName::DEFAULT).await?;
            let started = Instant::now();
            let rate = drain(args, broker, None).await?;
            // Send what is batched before the next measurement starts,
            // then decode what came, untimed.
            telemetry.flush();
            received.decode_kept();
            eprintln!(
                "round {round}: drain with export {}: {rate:.0}/s ({:.1} s with the flush)",
                if export { "on " } else { "off" },
                started.elapsed().as_secs_f64()
            );
            if export {
                on.push(rate)
            } else {
                off.push(rate)
            }
        }
    }
    switch.set(false);
    let counted = received.counted();
    let (off_median, on_median) = (median(&mut off.clone()), median(&mut on.clone()));
    Ok(TraceFigures {
        n: args.n,
        rounds,
        sampler: std::env::var("OTEL_TRACES_SAMPLER")
            .unwrap_or_else(|_| "parentbased_always_on".to_owned()),
        drain_off_per_s: off,
        drain_on_per_s: on,
        drain_off_median_per_s: off_median,
        drain_on_median_per_s: on_median,
        on_vs_off: on_median / off_median,
        spans_received: counted.spans,
        process_spans_received: counted.process,
        export_requests_undecodable: counted.undecodable,
        tasks_traced: (args.n * rounds) as u64,
        export_requests: received.requests.load(Ordering::Relaxed),
        export_bytes: received.bytes.load(Ordering::Relaxed),
    })
}

pub(crate) fn print_table(args: &Args, f: &TraceFigures) {
    println!(
        "spool-bench --trace-export  n={}  rounds={}  concurrency={}  prefetch={}  sampler={}",
        f.n, f.rounds, args.concurrency, args.prefetch, f.sampler
    );
    println!("{:<34} {:>14}", "measure", "result");
    println!(
        "{:<34} {:>12.0}/s  (median of {:?})",
        "(c) drain, span export off",
        f.drain_off_median_per_s,
        f.drain_off_per_s
            .iter()
            .map(|r| r.round())
            .collect::<Vec<_>>()
    );
    println!(
        "{:<34} {:>12.0}/s  (median of {:?})",
        "(c) drain, span export on",
        f.drain_on_median_per_s,
        f.drain_on_per_s
            .iter()
            .map(|r| r.round())
            .collect::<Vec<_>>()
    );
    println!("{:<34} {:>13.2}x", "    on vs off", f.on_vs_off);
    println!(
        "{:<34} {:>14}  ({} process spans of {} tasks, the rest settle spans; {} requests, {} bytes, {} undecodable)",
        "    spans received",
        f.spans_received,
        f.process_spans_received,
        f.tasks_traced,
        f.export_requests,
        f.export_bytes,
        f.export_requests_undecodable
    );
}

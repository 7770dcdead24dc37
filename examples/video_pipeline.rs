//! An app's video pipeline: an upload is transcoded, the encode is scored
//! against the upload, and the upload is packaged for streaming.
//!
//! This is the producer side, as an app embeds it: it only needs
//! `spool-sdk` (no FFmpeg). A `spool-worker` does the work; start one that
//! serves the video queues and may read and write under one directory:
//!
//! ```text
//! mkdir -p /tmp/spool-media && cp upload.mp4 /tmp/spool-media/
//! spoolctl store migrate --store-url sqlite:///tmp/spool-media/jobs.db
//! spool-worker --queues default,analysis,streaming \
//!     --input-root /tmp/spool-media --output-root /tmp/spool-media \
//!     --store-url sqlite:///tmp/spool-media/jobs.db
//! cargo run -p spool-examples --example video_pipeline -- upload.mp4 sqlite:///tmp/spool-media/jobs.db
//! ```
//!
//! Paths in tasks are relative to the worker's roots. `spool-demo` runs
//! the same pipeline with a worker of its own and a generated clip.

use std::time::Duration;

use anyhow::{Context, Result};
use spool_sdk::Client;
use spool_sdk::video::{Analyze, Codec, Package, RateControl, Transcode};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let upload = args
        .next()
        .context("usage: video_pipeline UPLOAD [STORE_URL]")?;
    let store_url = args
        .next()
        .unwrap_or_else(|| "sqlite:///tmp/spool-media/jobs.db".to_owned());
    let redis_url =
        std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    // The job store gives `wait` the task's result.
    let client = Client::connect_with_store(&redis_url, &store_url).await?;
    let patience = Duration::from_secs(30 * 60);

    let stem = upload.trim_end_matches(".mp4");
    let transcode =
        Transcode::new(&upload, format!("{stem}-h264.mp4"), Codec::H264).rate(RateControl::Crf(26));
    let id = client.enqueue(transcode).await?;
    let encoded = client.task::<Transcode>(id)?.wait(patience).await?;
    println!("encoded {} with {}", encoded.output, encoded.encoder);

    let id = client
        .enqueue(Analyze::new(&upload, &encoded.output))
        .await?;
    let scores = client.task::<Analyze>(id)?.wait(patience).await?;
    for (metric, summary) in [
        ("VMAF", &scores.vmaf),
        ("PSNR", &scores.psnr),
        ("SSIM", &scores.ssim),
    ] {
        if let Some(s) = summary {
            println!("{metric}: mean {:.3}, 5th percentile {:.3}", s.mean, s.p5);
        }
    }

    let id = client
        .enqueue(Package::new(&upload, format!("{stem}-streams")))
        .await?;
    let streams = client.task::<Package>(id)?.wait(patience).await?;
    if let Some(master) = &streams.hls_master {
        println!("HLS:  {}", master.display());
    }
    if let Some(mpd) = &streams.dash_mpd {
        println!("DASH: {}", mpd.display());
    }
    Ok(())
}

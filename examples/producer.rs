//! An application that enqueues thumbnails in bulk.
//!
//! ```text
//! cargo run -p spool-examples --example producer -- 100
//! ```

use spool_examples::Thumbnail;
use spool_sdk::Client;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: u32 = std::env::args().nth(1).map_or(Ok(10), |n| n.parse())?;
    let url = std::env::var("SPOOL_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = Client::connect(&url).await?;
    let ids = client
        .enqueue_many((0..count).map(|second| Thumbnail {
            video: "uploads/cat.mp4".into(),
            at_seconds: f64::from(second),
        }))
        .tenant("acme")
        .await?;
    println!("enqueued {} thumbnails, first {}", ids.len(), ids[0]);
    Ok(())
}

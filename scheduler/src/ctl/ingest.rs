//! `spoolctl ingest`: submits a video ingest (probe, encode whole or in
//! chunks, analyze, package) as one workflow, and optionally waits for it.

use std::time::Duration;

use serde::Serialize;
use spool_broker::Broker;
use spool_broker::workflow::WorkflowState;
use spool_sdk::video::{Boundaries, ChunkPolicy, Codec, Ingest, IngestOutput, Preset, RateControl};

use super::Report;
use crate::error::{Error, Result};

/// What `spoolctl ingest` submits. Start from [`IngestRequest::new`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IngestRequest {
    /// The source, inside the workers' input roots.
    pub input: String,
    /// The encode, inside the workers' output root.
    pub output: String,
    /// The codec. Default: H.264.
    pub codec: Codec,
    /// The constant rate factor. Default: 23.
    pub crf: u8,
    /// The speed preset. Default: medium.
    pub preset: Preset,
    /// Chunks aim for this length; `None` encodes the whole file in one
    /// run. Default: 10 s.
    pub chunk: Option<Duration>,
    /// The shortest chunk. Default: 2 s.
    pub min_chunk: Duration,
    /// Cut at scene changes above this score instead of at keyframes.
    /// Default: keyframes.
    pub scene_threshold: Option<f32>,
    /// Score the encode against the source. Default: false.
    pub analyze: bool,
    /// Package the source as HLS and DASH here. Default: none.
    pub package: Option<String>,
    /// The chunk directory's key. Default: the workflow's id.
    pub key: Option<String>,
    /// Wait this long for the workflow to finish. Default: don't wait.
    pub wait: Option<Duration>,
}

impl IngestRequest {
    /// Encodes `input` to `output` with H.264 CRF 23, medium, in 10 s
    /// chunks.
    #[must_use]
    pub fn new(input: impl Into<String>, output: impl Into<String>) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            codec: Codec::H264,
            crf: 23,
            preset: Preset::Medium,
            chunk: Some(Duration::from_secs(10)),
            min_chunk: Duration::from_secs(2),
            scene_threshold: None,
            analyze: false,
            package: None,
            key: None,
            wait: None,
        }
    }

    fn to_ingest(&self) -> Ingest {
        let mut ingest = Ingest::new(self.input.as_str(), self.output.as_str(), self.codec)
            .rate(RateControl::Crf(self.crf))
            .preset(self.preset)
            .analyze(self.analyze);
        ingest = match self.chunk {
            Some(target) => {
                let mut policy = ChunkPolicy::new(target, self.min_chunk.min(target));
                if let Some(threshold) = self.scene_threshold {
                    policy = policy.boundaries(Boundaries::Scenes { threshold });
                }
                ingest.chunked(policy)
            }
            None => ingest.whole(),
        };
        if let Some(dir) = &self.package {
            ingest = ingest.package(dir.as_str());
        }
        if let Some(key) = &self.key {
            ingest = ingest.key(key.as_str());
        }
        ingest
    }
}

/// What was submitted, and how it ended when waited for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestReport {
    /// The workflow's id.
    pub workflow: String,
    /// The nodes submitted (the split adds the chunks as it runs).
    pub nodes: Vec<String>,
    /// The workflow's state when the command returned (`running` when
    /// not waited for).
    pub state: String,
    /// The encode, once published.
    pub output: Option<String>,
    /// The chunks joined (0 for a whole encode).
    pub chunks: usize,
    /// Why the split encoded the file whole, if it did.
    pub fallback: Option<String>,
    /// The pooled VMAF, when analysed.
    pub vmaf: Option<f64>,
    /// The HLS master playlist, when packaged.
    pub hls_master: Option<String>,
    /// The DASH manifest, when packaged.
    pub dash_mpd: Option<String>,
    /// The stage that failed and its error, when it failed.
    pub error: Option<String>,
}

impl IngestReport {
    /// The exit status: 0 submitted or succeeded, 1 failed.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        i32::from(self.error.is_some())
    }
}

impl Report for IngestReport {
    fn to_text(&self) -> String {
        let mut text = format!(
            "workflow {}: {} ({})\n",
            self.workflow,
            self.state,
            self.nodes.join(", ")
        );
        if let Some(output) = &self.output {
            text.push_str(&format!("encode      {output} ({} chunks)\n", self.chunks));
        }
        if let Some(reason) = &self.fallback {
            text.push_str(&format!("whole       {reason}\n"));
        }
        if let Some(vmaf) = self.vmaf {
            text.push_str(&format!("VMAF        {vmaf:.2}\n"));
        }
        if let Some(hls) = &self.hls_master {
            text.push_str(&format!("HLS         {hls}\n"));
        }
        if let Some(dash) = &self.dash_mpd {
            text.push_str(&format!("DASH        {dash}\n"));
        }
        if let Some(error) = &self.error {
            text.push_str(&format!("failed      {error}\n"));
        }
        if self.state == "running" {
            text.push_str(&format!(
                "follow it with: spoolctl workflow show {}\n",
                self.workflow
            ));
        }
        text
    }
}

/// Submits the ingest `request` describes through `broker` and, with
/// `request.wait`, waits for it.
///
/// # Errors
///
/// [`Error::InvalidInput`] for settings a worker would refuse (a bad
/// chunk length, an odd path); the broker's errors; a timeout while
/// waiting.
pub async fn ingest<B: Broker + Clone>(
    broker: &B,
    request: &IngestRequest,
) -> Result<IngestReport> {
    let ingest = request.to_ingest();
    let workflow = ingest
        .workflow()
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
    let nodes = {
        let spec = workflow
            .clone()
            .into_spec()
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        spec.nodes.iter().map(|n| n.name.to_string()).collect()
    };
    let client = spool_sdk::Client::new(broker.clone());
    let handle = spool_sdk::video::IngestHandle::new(
        client.submit_workflow(workflow).await.map_err(sdk_error)?,
    );
    let mut report = IngestReport {
        workflow: handle.workflow().id().to_string(),
        nodes,
        state: "running".to_owned(),
        output: None,
        chunks: 0,
        fallback: None,
        vmaf: None,
        hls_master: None,
        dash_mpd: None,
        error: None,
    };
    let Some(timeout) = request.wait else {
        return Ok(report);
    };
    match handle.wait(timeout).await {
        Ok(done) => fill(&mut report, &done),
        Err(spool_sdk::Error::NodeNotSucceeded { node, state, error }) => {
            report.state = "failed".to_owned();
            report.error = Some(format!(
                "{node} {state}: {}",
                error.as_deref().unwrap_or("no error recorded")
            ));
        }
        Err(e) => return Err(sdk_error(e)),
    }
    Ok(report)
}

fn fill(report: &mut IngestReport, done: &IngestOutput) {
    report.state = WorkflowState::Succeeded.to_string();
    report.output = Some(done.output.clone());
    report.chunks = done.join.as_ref().map_or(0, |j| j.chunks as usize);
    report.fallback = done.split.as_ref().and_then(|s| s.fallback.clone());
    report.vmaf = done
        .analysis
        .as_ref()
        .and_then(|a| a.vmaf.as_ref())
        .map(|v| v.mean);
    if let Some(package) = &done.package {
        report.hls_master = package.hls_master.as_ref().map(|p| p.display().to_string());
        report.dash_mpd = package.dash_mpd.as_ref().map(|p| p.display().to_string());
    }
}

fn sdk_error(error: spool_sdk::Error) -> Error {
    match error {
        spool_sdk::Error::Broker(e) => Error::Broker(e),
        other => Error::InvalidInput(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use spool_broker::MemoryBroker;

    use super::*;

    #[tokio::test]
    async fn an_ingest_is_submitted_as_one_workflow() {
        let broker = MemoryBroker::new();
        let mut request = IngestRequest::new("in.mp4", "out.mp4");
        request.analyze = true;
        request.package = Some("streams/in".to_owned());
        let report = ingest(&broker, &request).await.unwrap();
        assert_eq!(report.nodes, ["split", "analyze", "package"]);
        assert_eq!(report.state, "running");
        assert!(report.to_text().contains("spoolctl workflow show"));
        request.chunk = Some(Duration::from_millis(100));
        assert!(matches!(
            ingest(&broker, &request).await,
            Err(Error::InvalidInput(_))
        ));
    }
}

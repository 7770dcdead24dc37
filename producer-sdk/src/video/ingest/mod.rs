//! One-call ingest: probe, encode (whole or in chunks), analyze against the
//! source and package the ladder, as ONE workflow whose stages run on their
//! routed queues, followed through one [`IngestHandle`].
//!
//! ```text
//!  split (default) ──► chunk-00000 … chunk-N (default | gpu), audio ──► join (default)
//!        │                                                               │
//!        └──────────────────────── then ─────────────────────────────────┤
//!                                   analyze (analysis)  ◄────────────────┤
//!                                   package (streaming) ◄────────────────┘
//! ```
//!
//! `split` probes the source and plans its chunks; it adds the chunk,
//! audio and join nodes as it runs (the workflow's dynamic fan-out), and
//! the workflow runs `analyze` and `package` only after the join. A whole
//! encode ([`Ingest::whole`]) has a `video.transcode` node named `encode`
//! instead of `split`.
//!
//! # Adding stages (quality-targeted ladders)
//!
//! [`Ingest::workflow`] returns the graph before it is submitted: add
//! nodes after [`Ingest::ENCODE_STAGE`]'s node (the one whose finish means
//! the encode is published), then submit it and follow it with
//! [`IngestHandle::new`]:
//!
//! ```no_run
//! # use spool_sdk::video::{Codec, Ingest};
//! # use spool_sdk::Client;
//! # async fn demo(client: Client<spool_broker::RedisBroker>) -> Result<(), spool_sdk::Error> {
//! let ingest = Ingest::new("upload.mp4", "encodes/upload.mp4", Codec::H264);
//! let mut wf = ingest.workflow()?;
//! # let extra = spool_sdk::video::Analyze::new("upload.mp4", "encodes/upload.mp4");
//! wf.node("ladder", extra).after(&[ingest.encode_stage()]);
//! let handle = spool_sdk::video::IngestHandle::new(client.submit_workflow(wf).await?);
//! # let _ = handle; Ok(()) }
//! ```
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use futures_util::StreamExt as _;
//! use spool_sdk::Client;
//! use spool_sdk::video::{ChunkPolicy, Codec, Ingest};
//!
//! # async fn demo() -> Result<(), spool_sdk::Error> {
//! let client = Client::connect("redis://127.0.0.1:6379/").await?;
//! let handle = Ingest::new("upload.mp4", "encodes/upload.mp4", Codec::H264)
//!     .chunked(ChunkPolicy::default())
//!     .analyze(true)
//!     .package("streams/upload")
//!     .submit(&client)
//!     .await?;
//! let mut progress = handle.progress();
//! while let Some(Ok(p)) = progress.next().await {
//!     println!("{}/{} frames, {:.0} fps, ETA {:?}", p.frames_done, p.frames_total, p.fps, p.eta);
//! }
//! let done = handle.wait(Duration::from_secs(3600)).await?;
//! println!("{} chunks joined into {}", done.split.map_or(0, |s| s.chunks.len()), done.output);
//! # Ok(()) }
//! ```

mod tasks;

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt as _};
use spool_broker::workflow::{NodeState, WorkflowState, WorkflowStatus};
use spool_broker::{Broker, QueueName};

pub use self::tasks::*;
use super::{
    AnalysisReport, Analyze, Audio, Codec, CrfSearch, HardwarePolicy, Location, Package,
    PackageOutput, Preset, RateControl, Size, TargetedLadder, Transcode, TranscodeOutput,
};
use crate::error::{Error, Result};
use crate::workflow::{Workflow, WorkflowHandle};

/// An ingest to submit: the encode, how it is split, and the stages after
/// it.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Ingest {
    encode: Transcode,
    chunking: Option<ChunkPolicy>,
    key: Option<String>,
    analyze: bool,
    package: Option<Package>,
    crf_search: CrfSearch,
}

impl Ingest {
    /// The name of the node whose success means the encode is published:
    /// `split` for a chunked encode (its dynamic children run before its
    /// dependents), `encode` for a whole one.
    pub const SPLIT: &'static str = "split";
    /// The whole-file encode's node (also the child a split falls back to).
    pub const ENCODE: &'static str = "encode";
    /// The join's node, added by the split.
    pub const JOIN: &'static str = "join";
    /// The audio node, added by the split.
    pub const AUDIO: &'static str = "audio";
    /// The analysis node.
    pub const ANALYZE: &'static str = "analyze";
    /// The packaging node.
    pub const PACKAGE: &'static str = "package";
    /// The prefix of chunk nodes (`chunk-00000`, …).
    pub const CHUNK_PREFIX: &'static str = "chunk-";

    /// Encodes `input` to `output` (an `.mp4`, `.mkv` or `.mov`) with
    /// `codec`: in chunks of [`ChunkPolicy::default`], no analysis, no
    /// packaging.
    pub fn new(input: impl Into<Location>, output: impl Into<Location>, codec: Codec) -> Self {
        Self {
            encode: Transcode::new(input, output, codec),
            chunking: Some(ChunkPolicy::default()),
            key: None,
            analyze: false,
            package: None,
            crf_search: CrfSearch::default(),
        }
    }

    /// Sets the rate control.
    pub fn rate(mut self, rate: RateControl) -> Self {
        self.encode = self.encode.rate(rate);
        self
    }

    /// Sets the speed preset.
    pub fn preset(mut self, preset: Preset) -> Self {
        self.encode = self.encode.preset(preset);
        if let Some(package) = self.package.take() {
            self.package = Some(package.preset(preset));
        }
        self
    }

    /// Sets the frame size.
    pub fn size(mut self, size: Size) -> Self {
        self.encode = self.encode.size(size);
        self
    }

    /// Sets the audio.
    pub fn audio(mut self, audio: Audio) -> Self {
        self.encode = self.encode.audio(audio);
        self
    }

    /// Sets the hardware policy: [`HardwarePolicy::Require`] sends chunks
    /// to the `gpu` queue.
    pub fn hardware(mut self, hardware: HardwarePolicy) -> Self {
        self.encode = self.encode.hardware(hardware);
        self
    }

    /// Encodes in chunks cut as `policy` says (the default).
    pub fn chunked(mut self, policy: ChunkPolicy) -> Self {
        self.chunking = Some(policy);
        self
    }

    /// Encodes the whole file in one FFmpeg run.
    pub fn whole(mut self) -> Self {
        self.chunking = None;
        self
    }

    /// Names the chunk home (`.spool-chunks/<key>` under the output root,
    /// or beside an object output: `s3://b/out/.spool-chunks/<key>/`)
    /// instead of the workflow's id: a second ingest with the same key
    /// reuses the chunks the first finished.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Whether to score the encode against the source (VMAF, PSNR, SSIM)
    /// on the `analysis` queue.
    pub fn analyze(mut self, analyze: bool) -> Self {
        self.analyze = analyze;
        self
    }

    /// Packages the source as an HLS and DASH ladder in `output_dir`, on
    /// the `streaming` queue, with the encode's preset.
    pub fn package(mut self, output_dir: impl Into<Location>) -> Self {
        self.package =
            Some(Package::new(self.encode.input.clone(), output_dir).preset(self.encode.preset));
        self
    }

    /// Packages with `package` as given. A ladder with per-rung targets
    /// ([`Rendition::target_vmaf`](super::Rendition::target_vmaf)) is
    /// packaged as a [`TargetedLadder`]: its CRF samples run beside the
    /// encode, searched as [`Ingest::crf_search`] says.
    pub fn package_with(mut self, package: Package) -> Self {
        self.package = Some(package);
        self
    }

    /// How a quality-targeted ladder searches its CRFs
    /// ([`CrfSearch::default`] unless set).
    pub fn crf_search(mut self, search: CrfSearch) -> Self {
        self.crf_search = search;
        self
    }

    /// The encode's settings.
    #[must_use]
    pub fn encode(&self) -> &Transcode {
        &self.encode
    }

    /// The node after which the encode is published: [`Self::SPLIT`] or
    /// [`Self::ENCODE`]. Stages added with [`Ingest::workflow`] go after
    /// it.
    #[must_use]
    pub fn encode_stage(&self) -> &'static str {
        if self.chunking.is_some() {
            Self::SPLIT
        } else {
            Self::ENCODE
        }
    }

    /// The workflow, not yet submitted.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] for settings a worker would refuse.
    pub fn workflow(&self) -> Result<Workflow> {
        let mut wf = Workflow::new();
        let stage = self.encode_stage();
        match self.chunking {
            Some(policy) => {
                let mut split = Split::new(self.encode.clone(), policy);
                split.key.clone_from(&self.key);
                split.validate()?;
                wf.node(Self::SPLIT, split);
            }
            None => {
                self.encode.validate()?;
                wf.node(Self::ENCODE, self.encode.clone())
                    .queue(self.encode.suggested_queue());
            }
        }
        if self.analyze {
            let analyze = Analyze::new(self.encode.input.clone(), self.encode.output.clone());
            analyze.validate()?;
            wf.node(Self::ANALYZE, analyze).after(&[stage]);
        }
        if let Some(package) = &self.package {
            if package.rungs().iter().any(|r| r.target_vmaf.is_some()) {
                // A quality-targeted ladder: its samples read the source, so
                // they run beside the encode; the package waits for the
                // picks. The package node keeps its name (`package`).
                TargetedLadder::new(package.clone())
                    .search(self.crf_search.clone())
                    .add_to(&mut wf, &[])?;
            } else {
                package.validate()?;
                wf.node(Self::PACKAGE, package.clone()).after(&[stage]);
            }
        }
        Ok(wf)
    }

    /// Submits the workflow.
    ///
    /// # Errors
    ///
    /// As [`Ingest::workflow`], and the broker's.
    pub async fn submit<B: Broker>(&self, client: &crate::Client<B>) -> Result<IngestHandle<B>> {
        let wf = self.workflow()?;
        Ok(IngestHandle::new(client.submit_workflow(wf).await?))
    }
}

/// Where one stage stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StageProgress {
    /// `encode` (split, chunks, audio, join), `analyze` or `package`.
    pub stage: &'static str,
    /// Its nodes that succeeded, and all of them (known so far).
    pub nodes_done: usize,
    /// Its nodes, known so far.
    pub nodes: usize,
    /// Whether a node of it failed or was cancelled.
    pub failed: bool,
}

/// The ingest's progress across all stages, in source frames: the encode
/// counts each chunk's frames once its node succeeded; analysis and
/// packaging count the source's frames each once they succeeded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IngestProgress {
    /// The workflow's state.
    pub state: WorkflowState,
    /// Frames done, over every stage.
    pub frames_done: u64,
    /// Frames to do, over every stage (0 until the split has planned).
    pub frames_total: u64,
    /// Frames done per second since the handle was made.
    pub fps: f64,
    /// The time left at that rate, once something is done.
    pub eta: Option<Duration>,
    /// Each stage's nodes.
    pub stages: Vec<StageProgress>,
}

/// What a finished ingest produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IngestOutput {
    /// The encode, as written.
    pub output: String,
    /// The split's plan (chunked encodes).
    pub split: Option<SplitOutput>,
    /// The join's report (chunked encodes that were not a fallback).
    pub join: Option<JoinOutput>,
    /// The whole-file encode's report (whole encodes and fallbacks).
    pub transcode: Option<TranscodeOutput>,
    /// The scores, when analysed.
    pub analysis: Option<AnalysisReport>,
    /// The ladder, when packaged.
    pub package: Option<PackageOutput>,
}

/// The ingest's progress, one item per change in its nodes' states.
pub type IngestProgressStream = Pin<Box<dyn Stream<Item = Result<IngestProgress>> + Send>>;

/// A submitted ingest.
#[derive(Clone)]
pub struct IngestHandle<B> {
    workflow: WorkflowHandle<B>,
    started: Instant,
}

impl<B> std::fmt::Debug for IngestHandle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestHandle")
            .field("workflow", &self.workflow)
            .finish_non_exhaustive()
    }
}

impl<B: Broker> IngestHandle<B> {
    /// Follows the ingest submitted as `workflow` (from
    /// [`Ingest::submit`], or [`Ingest::workflow`] submitted with stages
    /// added).
    #[must_use]
    pub fn new(workflow: WorkflowHandle<B>) -> Self {
        Self {
            workflow,
            started: Instant::now(),
        }
    }

    /// The workflow underneath: node states, cancel, retry.
    #[must_use]
    pub fn workflow(&self) -> &WorkflowHandle<B> {
        &self.workflow
    }

    /// The split's plan, once it succeeded.
    ///
    /// # Errors
    ///
    /// The broker's.
    pub async fn plan(&self) -> Result<Option<SplitOutput>> {
        let status = self.workflow.status().await?;
        self.plan_in(&status).await
    }

    async fn plan_in(&self, status: &WorkflowStatus) -> Result<Option<SplitOutput>> {
        match status.node(Ingest::SPLIT) {
            Some(node) if node.state == NodeState::Succeeded => Ok(Some(
                self.workflow
                    .wait::<Split>(Ingest::SPLIT, Duration::ZERO)
                    .await?,
            )),
            _ => Ok(None),
        }
    }

    /// The progress now.
    ///
    /// # Errors
    ///
    /// The broker's.
    pub async fn snapshot(&self) -> Result<IngestProgress> {
        let status = self.workflow.status().await?;
        let plan = self.plan_in(&status).await?;
        Ok(progress_of(&status, plan.as_ref(), self.started.elapsed()))
    }

    /// The progress as it changes, until the workflow finishes.
    #[must_use]
    pub fn progress(&self) -> IngestProgressStream {
        let handle = self.clone();
        Box::pin(self.workflow.progress().then(move |status| {
            let handle = handle.clone();
            async move {
                let status = status?;
                let plan = handle.plan_in(&status).await?;
                Ok(progress_of(
                    &status,
                    plan.as_ref(),
                    handle.started.elapsed(),
                ))
            }
        }))
    }

    /// Waits for the workflow to finish and collects its stages' outputs.
    ///
    /// # Errors
    ///
    /// [`Error::NodeNotSucceeded`] naming the first stage that did not
    /// succeed (its error is FFmpeg's or the validation's words);
    /// [`Error::Timeout`] after `timeout`; the broker's.
    pub async fn wait(&self, timeout: Duration) -> Result<IngestOutput> {
        let status = self.workflow.finished(timeout).await?;
        if status.state != WorkflowState::Succeeded {
            // The stage that broke, not the ones it cancelled.
            let broken = status
                .nodes
                .iter()
                .find(|n| {
                    matches!(
                        n.state,
                        NodeState::Failed
                            | NodeState::DeadLettered
                            | NodeState::Expired
                            | NodeState::Revoked
                    )
                })
                .or_else(|| {
                    status
                        .nodes
                        .iter()
                        .find(|n| n.state != NodeState::Succeeded)
                });
            if let Some(node) = broken {
                return Err(Error::NodeNotSucceeded {
                    node: node.name.clone(),
                    state: node.state,
                    error: node.error.clone(),
                });
            }
        }
        let has = |name: &str| status.node(name).is_some();
        let split = if has(Ingest::SPLIT) {
            Some(self.workflow.wait::<Split>(Ingest::SPLIT, timeout).await?)
        } else {
            None
        };
        let join = if has(Ingest::JOIN) {
            Some(self.workflow.wait::<Join>(Ingest::JOIN, timeout).await?)
        } else {
            None
        };
        let transcode = if has(Ingest::ENCODE) {
            Some(
                self.workflow
                    .wait::<Transcode>(Ingest::ENCODE, timeout)
                    .await?,
            )
        } else {
            None
        };
        let analysis = if has(Ingest::ANALYZE) {
            Some(
                self.workflow
                    .wait::<Analyze>(Ingest::ANALYZE, timeout)
                    .await?,
            )
        } else {
            None
        };
        let package = if has(Ingest::PACKAGE) {
            Some(
                self.workflow
                    .wait::<Package>(Ingest::PACKAGE, timeout)
                    .await?,
            )
        } else {
            None
        };
        let output = join
            .as_ref()
            .map(|j| j.output.clone())
            .or_else(|| transcode.as_ref().map(|t| t.output.clone()))
            .unwrap_or_default();
        Ok(IngestOutput {
            output,
            split,
            join,
            transcode,
            analysis,
            package,
        })
    }
}

/// Which stage a node belongs to.
fn stage_of(name: &str) -> &'static str {
    match name {
        Ingest::ANALYZE => "analyze",
        Ingest::PACKAGE => "package",
        // A quality-targeted ladder's sample encodes and CRF picks.
        other if other.starts_with("sample-") || other.starts_with("crf-pick-") => "package",
        Ingest::SPLIT | Ingest::ENCODE | Ingest::JOIN | Ingest::AUDIO => "encode",
        other if other.starts_with(Ingest::CHUNK_PREFIX) => "encode",
        _ => "other",
    }
}

/// The progress that `status` shows, with the split's `plan` once known.
fn progress_of(
    status: &WorkflowStatus,
    plan: Option<&SplitOutput>,
    elapsed: Duration,
) -> IngestProgress {
    let succeeded = |name: &str| {
        status
            .node(name)
            .is_some_and(|n| n.state == NodeState::Succeeded)
    };
    let mut stages: Vec<StageProgress> = Vec::new();
    for node in &status.nodes {
        let stage = stage_of(node.name.as_str());
        let at = match stages.iter().position(|s| s.stage == stage) {
            Some(at) => at,
            None => {
                stages.push(StageProgress {
                    stage,
                    nodes_done: 0,
                    nodes: 0,
                    failed: false,
                });
                stages.len() - 1
            }
        };
        let entry = &mut stages[at];
        entry.nodes += 1;
        if node.state == NodeState::Succeeded {
            entry.nodes_done += 1;
        } else if node.state.is_terminal() {
            entry.failed = true;
        }
    }
    // Frames are known once the split planned (a whole encode counts none
    // until the workflow succeeds).
    let (mut done, mut total) = (0_u64, 0_u64);
    if let Some(plan) = plan {
        let frames = plan.frames;
        let frame_stages = stages
            .iter()
            .filter(|s| s.stage == "analyze" || s.stage == "package")
            .count() as u64;
        total = frames * (1 + frame_stages);
        if plan.chunks.is_empty() {
            if succeeded(Ingest::ENCODE) {
                done += frames;
            }
        } else {
            for chunk in &plan.chunks {
                if succeeded(&chunk_node(chunk.index)) {
                    done += chunk.frames;
                }
            }
        }
        for name in [Ingest::ANALYZE, Ingest::PACKAGE] {
            if succeeded(name) {
                done += frames;
            }
        }
    }
    if status.state == WorkflowState::Succeeded {
        done = total;
    }
    let secs = elapsed.as_secs_f64();
    #[allow(
        clippy::cast_precision_loss,
        reason = "frame counts are far below 2^52"
    )]
    let fps = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    #[allow(
        clippy::cast_precision_loss,
        reason = "frame counts are far below 2^52"
    )]
    let eta =
        (fps > 0.0 && total >= done).then(|| Duration::from_secs_f64((total - done) as f64 / fps));
    IngestProgress {
        state: status.state.clone(),
        frames_done: done,
        frames_total: total,
        fps,
        eta,
        stages,
    }
}

/// The node name of chunk `index`.
#[must_use]
pub fn chunk_node(index: u32) -> String {
    format!("{}{index:05}", Ingest::CHUNK_PREFIX)
}

/// The queue a chunk of `encode` runs on.
#[must_use]
pub fn chunk_queue(encode: &Transcode) -> QueueName {
    encode.suggested_queue()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::Rendition;

    #[test]
    fn a_targeted_ladder_samples_beside_the_encode_and_packages_after_its_picks() {
        let ladder = vec![
            Rendition::new("360p", 360, 4000, 96).target_vmaf(90.0),
            Rendition::new("240p", 240, 2000, 64),
        ];
        let ingest = Ingest::new("in.mp4", "out.mp4", Codec::H264)
            .package_with(Package::new("in.mp4", "streams/in").ladder(ladder));
        let spec = ingest
            .workflow()
            .expect("valid")
            .into_spec()
            .expect("a spec");
        let node = |name: &str| {
            spec.nodes
                .iter()
                .find(|n| n.name.as_str() == name)
                .unwrap_or_else(|| panic!("no node {name}"))
        };
        let parents = |name: &str| -> Vec<String> {
            node(name)
                .parents
                .iter()
                .map(|e| e.parent.to_string())
                .collect()
        };
        let samples: Vec<&str> = spec
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| n.starts_with("sample-360p-"))
            .collect();
        assert_eq!(samples.len(), CrfSearch::default().crfs().len());
        // Only the targeted rung is sampled, and the samples wait for nothing.
        assert!(
            spec.nodes
                .iter()
                .all(|n| !n.name.as_str().starts_with("sample-240p"))
        );
        assert!(samples.iter().all(|s| parents(s).is_empty()));
        assert_eq!(parents("package"), ["crf-pick-360p"]);
        assert_eq!(stage_of("crf-pick-360p"), "package");
        assert_eq!(stage_of(samples[0]), "package");
        assert!(node("split").parents.is_empty());
    }

    #[test]
    fn the_graph_has_the_stages_on_their_queues() {
        let ingest = Ingest::new("in.mp4", "out.mp4", Codec::H264)
            .analyze(true)
            .package("streams/in");
        let spec = ingest
            .workflow()
            .expect("valid")
            .into_spec()
            .expect("a spec");
        let names: Vec<&str> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["split", "analyze", "package"]);
        let queue = |name: &str| {
            spec.nodes
                .iter()
                .find(|n| n.name.as_str() == name)
                .map(|n| n.envelope.queue.clone())
                .expect("the node")
        };
        assert_eq!(queue("split"), QueueName::DEFAULT);
        assert_eq!(queue("analyze"), QueueName::ANALYSIS);
        assert_eq!(queue("package"), QueueName::STREAMING);
        let whole = Ingest::new("in.mp4", "out.mp4", Codec::H264).whole();
        assert_eq!(whole.encode_stage(), "encode");
        assert!(
            Ingest::new("in.mp4", "out.mp4", Codec::H264)
                .chunked(ChunkPolicy::new(
                    Duration::from_secs(1),
                    Duration::from_secs(5)
                ))
                .workflow()
                .is_err()
        );
        assert_eq!(chunk_node(7), "chunk-00007");
        assert_eq!(stage_of("chunk-00007"), "encode");
    }
}

//! Quality-targeted ladders (per-title): `video.sample_encode`,
//! `video.crf_pick`, and what `video.package` does for rungs with a CRF or
//! a target VMAF.
//!
//! ```text
//!  sample_encode × (rung, CRF) ─► crf_pick × rung ─► package
//!  (sample.rs: scenes encoded     (pick.rs: the CRF   (each targeted rung at its CRF;
//!   and scored, two FFmpeg runs)   for the target)     measure.rs: achieved VMAF)
//! ```
//!
//! The task types and the workflow builder are in
//! [`spool_sdk::video`] ([`TargetedLadder`](spool_sdk::video::TargetedLadder)).

mod measure;
mod pick;
mod sample;

use std::collections::HashMap;

use spool_broker::workflow::{NodeState, ParentResult};
use spool_sdk::video::{CrfChoice, CrfPick, Package, RungQuality, SampleEncode, SampleScore};
use spool_worker::{Handler, TaskContext, TaskError};
use tracing::info;

use crate::ladder::Ladder;
use crate::progress::{Reporter, StageBand};
use crate::storage::Place;
use crate::{LIBVMAF_HINT, VideoError, VideoTasks};

pub use self::measure::{MeasuredRung, measure_rungs};
pub use self::pick::{Sample, pick_crf};
pub use self::sample::{sample_file, scene_spans, scene_starts};

/// Runs `video.sample_encode`. Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone)]
pub struct SampleEncodeHandler {
    tasks: VideoTasks,
}

impl SampleEncodeHandler {
    /// A handler sharing `tasks`' FFmpeg, ffprobe and roots.
    #[must_use]
    pub fn new(tasks: &VideoTasks) -> Self {
        Self {
            tasks: tasks.clone(),
        }
    }
}

impl Handler<SampleEncode> for SampleEncodeHandler {
    async fn call(&self, task: SampleEncode, ctx: TaskContext) -> Result<SampleScore, TaskError> {
        sample(&self.tasks, &task, &ctx)
            .await
            .map_err(VideoError::into_task_error)
    }
}

/// Checks, places the input (downloading an object into scratch), samples.
async fn sample(
    tasks: &VideoTasks,
    task: &SampleEncode,
    ctx: &TaskContext,
) -> Result<SampleScore, VideoError> {
    task.validate().map_err(VideoError::from_validation)?;
    let reporter = Reporter::new(ctx);
    reporter.stage(&StageBand::PROBING);
    let (storage, roots) = (tasks.storage(), tasks.roots());
    let input = storage.place(&task.input, |p| roots.input(p))?;
    let scratch = match &input {
        Place::Local(_) => None,
        Place::Object(_) => Some(storage.scratch(tasks.config().scratch_dir.as_deref(), "sample")?),
    };
    let sampled = async {
        let source = storage
            .local_path(
                &input,
                scratch.as_ref(),
                "input",
                &reporter,
                StageBand::DOWNLOADING,
            )
            .await?;
        sample_file(tasks, task, &source, Some(&reporter), ctx.cancellation()).await
    }
    .await;
    if let Some(scratch) = scratch {
        scratch.cleanup().await;
    }
    let score = sampled?;
    reporter.done(format!(
        "CRF {}: VMAF {:.2} at {:.0} kb/s",
        score.crf, score.vmaf, score.kbps
    ));
    Ok(score)
}

/// Runs `video.crf_pick`: reads the samples of its parents and picks.
/// Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone, Copy, Default)]
pub struct CrfPickHandler;

impl Handler<CrfPick> for CrfPickHandler {
    async fn call(&self, task: CrfPick, ctx: TaskContext) -> Result<CrfChoice, TaskError> {
        task.validate().map_err(TaskError::fail)?;
        let samples = rung_samples(&task.rung, ctx.parents())?;
        let choice = pick_crf(&task, &samples).map_err(TaskError::fail)?;
        info!(
            rung = %choice.rung,
            target = choice.target_vmaf,
            crf = choice.crf,
            predicted_vmaf = choice.predicted_vmaf,
            saved_percent = choice.saved_percent,
            "CRF picked"
        );
        Ok(choice)
    }
}

/// The samples of `rung` among `parents`' outputs.
fn rung_samples(rung: &str, parents: &[ParentResult]) -> Result<Vec<Sample>, TaskError> {
    let mut samples = Vec::new();
    for parent in parents {
        if parent.state != NodeState::Succeeded {
            return Err(TaskError::fail(format!(
                "sample {} {}: {}",
                parent.name,
                parent.state,
                parent.error.as_deref().unwrap_or("no error recorded")
            )));
        }
        let Some(bytes) = parent.output.as_deref() else {
            continue;
        };
        if let Ok(score) = spool_broker::decode_payload::<SampleScore>(bytes)
            && score.rung == rung
        {
            samples.push((score.crf, score.vmaf, score.kbps));
        }
    }
    if samples.is_empty() {
        return Err(TaskError::fail(format!(
            "no parent of this node is a video.sample_encode of rung {rung}"
        )));
    }
    Ok(samples)
}

/// The CRF of each rung of a package that asks for one, by name: its own
/// ([`Rendition::crf`](spool_sdk::video::Rendition::crf)) or, for a target
/// VMAF, the pick of a `video.crf_pick` parent.
#[derive(Debug, Clone, Default)]
pub(crate) struct RungCrfs {
    by_name: HashMap<String, (u8, Option<CrfChoice>)>,
}

impl RungCrfs {
    /// Reads them from `task` and the node's `parents`.
    pub(crate) fn resolve(
        tasks: &VideoTasks,
        task: &Package,
        parents: &[ParentResult],
    ) -> Result<Self, VideoError> {
        let mut picks: HashMap<String, CrfChoice> = parents
            .iter()
            .filter(|p| p.state == NodeState::Succeeded)
            .filter_map(|p| p.output.as_deref())
            .filter_map(|bytes| spool_broker::decode_payload::<CrfChoice>(bytes).ok())
            .map(|choice| (choice.rung.clone(), choice))
            .collect();
        let mut by_name = HashMap::new();
        for rung in task.rungs() {
            if let Some(crf) = rung.crf {
                by_name.insert(rung.name.clone(), (crf, None));
            } else if let Some(target) = rung.target_vmaf {
                let choice = picks.remove(&rung.name).ok_or_else(|| {
                    VideoError::InvalidTask(format!(
                        "rendition {} asks for VMAF {target} and no video.crf_pick parent \
                         picked its CRF (build the workflow with spool_sdk::video::TargetedLadder)",
                        rung.name
                    ))
                })?;
                by_name.insert(rung.name.clone(), (choice.crf, Some(choice)));
            }
        }
        if !by_name.is_empty() && !tasks.report().libvmaf {
            return Err(VideoError::Missing {
                what: "libvmaf",
                detail: format!(
                    "rungs at a CRF are measured with VMAF, and {} has no libvmaf filter",
                    tasks.ffmpeg().display()
                ),
                hint: LIBVMAF_HINT,
            });
        }
        Ok(Self { by_name })
    }

    /// Sets each planned rung's CRF.
    pub(crate) fn apply(&self, ladder: &mut Ladder) {
        for rung in &mut ladder.rungs {
            rung.crf = self.by_name.get(&rung.name).map(|(crf, _)| *crf);
        }
    }

    /// What the package reports of its measured rungs.
    pub(crate) fn report(&self, ladder: &Ladder, measured: &[MeasuredRung]) -> Vec<RungQuality> {
        measured
            .iter()
            .filter_map(|m| {
                let rung = ladder.rungs.get(m.index)?;
                let (crf, choice) = self.by_name.get(&rung.name)?;
                Some(RungQuality {
                    name: rung.name.clone(),
                    crf: *crf,
                    target_vmaf: choice.as_ref().map(|c| c.target_vmaf),
                    predicted_vmaf: choice.as_ref().map(|c| c.predicted_vmaf),
                    achieved_vmaf: m.vmaf,
                    kbps: m.kbps,
                    fixed_crf: choice.as_ref().map(|c| c.fixed_crf),
                    saved_percent: choice.as_ref().map(|c| c.saved_percent),
                })
            })
            .collect()
    }
}

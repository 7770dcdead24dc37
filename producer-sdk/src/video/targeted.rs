//! Quality-targeted ladders (per-title): the CRF of each rung is chosen
//! for the source, to reach a target VMAF, instead of one CRF or one
//! bitrate for every title.
//!
//! ```text
//!  sample-720p-crf18 ─┐
//!  sample-720p-crf25 ─┼─► crf-pick-720p ─┐
//!  sample-720p-crf33 ─┤                  │
//!  sample-720p-crf40 ─┘                  ├─► package (each targeted rung at its picked CRF,
//!  sample-360p-crf18 ─┐                  │            achieved VMAF measured after the encode)
//!        …            ┼─► crf-pick-360p ─┘
//! ```
//!
//! - [`SampleEncode`] (`video.sample_encode`): encodes a few short scenes of
//!   the source, starting at its scene cuts spread over its length (evenly
//!   spread points without enough cuts), at one CRF and one rung's size,
//!   and scores each against the same scene of the source scaled to that
//!   size. One task per rung and CRF, so the samples run in parallel on
//!   as many workers as there are.
//! - [`CrfPick`] (`video.crf_pick`): joins one rung's samples and
//!   interpolates the CRF whose VMAF meets the target (VMAF falls as the
//!   CRF rises). A target no CRF in range reaches fails the node, naming
//!   the rung, the target and the best VMAF reached.
//! - `video.package` with rungs that carry [`Rendition::target_vmaf`]
//!   reads the picks of its `video.crf_pick` parents, encodes each such
//!   rung at its CRF (capped at the rung's `video_kbps`), measures the
//!   achieved VMAF, and reports it in [`PackageOutput::quality`].
//!
//! [`TargetedLadder`] adds all of this to a [`Workflow`].
//!
//! [`Rendition::target_vmaf`]: super::Rendition::target_vmaf
//! [`PackageOutput::quality`]: super::PackageOutput::quality

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spool_broker::{QueueName, Task, TaskOptions};

use super::{Codec, Location, Package, Preset, VmafModel};
use crate::error::{Error, Result};
use crate::workflow::Workflow;

/// A VMAF score to reach, from 0 to 100, kept to a hundredth (so tasks
/// holding one still compare and hash). A number on the wire (`93`,
/// `93.5`).
///
/// # Examples
///
/// ```
/// use spool_sdk::video::VmafTarget;
///
/// let target = VmafTarget::new(93.5).expect("within 0–100");
/// assert_eq!(target.get(), 93.5);
/// assert!(VmafTarget::new(101.0).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmafTarget(u16);

impl VmafTarget {
    /// A value no valid target has (above 100), which validation refuses.
    pub(crate) const INVALID: Self = Self(u16::MAX);

    /// `score`, rounded to a hundredth; `None` outside 0–100 or not a
    /// number.
    #[must_use]
    pub fn new(score: f64) -> Option<Self> {
        if !(0.0..=100.0).contains(&score) {
            return None;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked to be within 0–100 just above"
        )]
        let hundredths = (score * 100.0).round() as u16;
        Some(Self(hundredths))
    }

    /// The score.
    #[must_use]
    pub fn get(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl fmt::Display for VmafTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl Serialize for VmafTarget {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.get())
    }
}

impl<'de> Deserialize<'de> for VmafTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let score = f64::deserialize(deserializer)?;
        Self::new(score).ok_or_else(|| {
            serde::de::Error::custom(format!("a VMAF target of {score} is outside 0–100"))
        })
    }
}

/// Encodes `samples` short scenes of `input` at one CRF and one rung's
/// height, and scores each against the source's same scene scaled to that
/// size (`video.sample_encode`, queue `default`).
///
/// By default ([`SamplePlacement::SceneCuts`]) the scenes start where the
/// source's scenes do: at its start and at the cuts FFmpeg's scene score
/// finds (the same detection a chunked encode's split uses), `samples` of
/// them spread over the source. With fewer scene starts than `samples`,
/// or with [`SamplePlacement::Even`], they start at evenly spread points
/// (the middle of each of `samples` equal parts). A source shorter than
/// all of them together is sampled whole, once. Like `video.package`, the
/// rung is never taller than the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SampleEncode {
    /// The source, inside the worker's roots, or an object URL.
    pub input: Location,
    /// The rung the sample is for (its name in the package's ladder).
    pub rung: String,
    /// The rung's height in pixels (even).
    pub height: u32,
    /// The CRF to encode at.
    pub crf: u8,
    /// The codec (software encoder), as the package will use.
    #[serde(default = "default_codec")]
    pub codec: Codec,
    /// The preset, as the package will use.
    #[serde(default)]
    pub preset: Preset,
    /// How many scenes. Default: 3.
    #[serde(default = "default_samples")]
    pub samples: u8,
    /// Each scene's length (seconds on the wire). Default: 2 s.
    #[serde(default = "default_sample_duration", with = "seconds")]
    pub sample_duration: Duration,
    /// The VMAF model. Default: [`VmafModel::V061`].
    #[serde(default)]
    pub vmaf_model: VmafModel,
    /// Where the scenes start. Default: at scene cuts (score 0.3).
    #[serde(default)]
    pub placement: SamplePlacement,
}

/// Where a [`SampleEncode`]'s scenes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum SamplePlacement {
    /// At the starts of the source's scenes: its first frame and the cuts
    /// where FFmpeg's scene score passes `threshold_percent` / 100 (a
    /// decode of the whole source at a small size, once per worker process
    /// and source). Too few scene starts fall back to [`Even`](Self::Even).
    SceneCuts {
        /// The scene score a cut needs, in hundredths (30: 0.3).
        threshold_percent: u8,
    },
    /// At the middle of each of `samples` equal parts of the source.
    Even,
}

impl Default for SamplePlacement {
    /// [`SceneCuts`](Self::SceneCuts) at a score of 0.3.
    fn default() -> Self {
        Self::SceneCuts {
            threshold_percent: 30,
        }
    }
}

fn default_codec() -> Codec {
    Codec::H264
}

fn default_samples() -> u8 {
    SampleEncode::DEFAULT_SAMPLES
}

fn default_sample_duration() -> Duration {
    SampleEncode::DEFAULT_SAMPLE_DURATION
}

impl SampleEncode {
    /// The default number of scenes: 3.
    pub const DEFAULT_SAMPLES: u8 = 3;
    /// The default length of a scene: 2 s.
    pub const DEFAULT_SAMPLE_DURATION: Duration = Duration::from_secs(2);
    /// The most scenes a task may ask for.
    pub const MAX_SAMPLES: u8 = 20;
    /// The longest scene a task may ask for.
    pub const MAX_SAMPLE_DURATION: Duration = Duration::from_secs(60);

    /// Samples of `input` for rung `rung` (`height` pixels tall) at `crf`,
    /// H.264 at [`Preset::Medium`], 3 scenes of 2 s.
    #[must_use]
    pub fn new(input: impl Into<Location>, rung: impl Into<String>, height: u32, crf: u8) -> Self {
        Self {
            input: input.into(),
            rung: rung.into(),
            height,
            crf,
            codec: Codec::H264,
            preset: Preset::default(),
            samples: Self::DEFAULT_SAMPLES,
            sample_duration: Self::DEFAULT_SAMPLE_DURATION,
            vmaf_model: VmafModel::default(),
            placement: SamplePlacement::default(),
        }
    }

    /// Sets the codec and preset.
    #[must_use]
    pub fn encoder(mut self, codec: Codec, preset: Preset) -> Self {
        self.codec = codec;
        self.preset = preset;
        self
    }

    /// Sets the number and length of the scenes.
    #[must_use]
    pub fn scenes(mut self, samples: u8, duration: Duration) -> Self {
        self.samples = samples;
        self.sample_duration = duration;
        self
    }

    /// Sets where the scenes start.
    #[must_use]
    pub fn placement(mut self, placement: SamplePlacement) -> Self {
        self.placement = placement;
        self
    }

    /// Checks the values: a path, an even height in the ladder's bounds, a
    /// CRF up to the codec's maximum, 1 to [`MAX_SAMPLES`](Self::MAX_SAMPLES)
    /// scenes of 0.2 s to [`MAX_SAMPLE_DURATION`](Self::MAX_SAMPLE_DURATION).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] with the reason.
    pub fn validate(&self) -> Result<()> {
        use super::limits::{MAX_RUNG_HEIGHT, MIN_RUNG_HEIGHT};
        let invalid = |reason: String| Error::InvalidTask {
            task: Self::NAME,
            reason,
        };
        self.input
            .parse()
            .map_err(|e| invalid(format!("the input {e}")))?;
        if self.height % 2 == 1 || !(MIN_RUNG_HEIGHT..=MAX_RUNG_HEIGHT).contains(&self.height) {
            return Err(invalid(format!(
                "height {} must be even, from {MIN_RUNG_HEIGHT} to {MAX_RUNG_HEIGHT}",
                self.height
            )));
        }
        check_crf(self.codec, self.crf).map_err(invalid)?;
        if !(1..=Self::MAX_SAMPLES).contains(&self.samples) {
            return Err(invalid(format!(
                "{} samples: 1 to {} are allowed",
                self.samples,
                Self::MAX_SAMPLES
            )));
        }
        if !(Duration::from_millis(200)..=Self::MAX_SAMPLE_DURATION).contains(&self.sample_duration)
        {
            return Err(invalid(format!(
                "a sample of {:?} is outside 0.2 s to {:?}",
                self.sample_duration,
                Self::MAX_SAMPLE_DURATION
            )));
        }
        if let SamplePlacement::SceneCuts { threshold_percent } = self.placement
            && !(1..=99).contains(&threshold_percent)
        {
            return Err(invalid(format!(
                "a scene threshold of {threshold_percent}/100 is outside 1 to 99"
            )));
        }
        Ok(())
    }
}

fn check_crf(codec: Codec, crf: u8) -> std::result::Result<(), String> {
    if crf > codec.max_crf() {
        return Err(format!(
            "CRF {crf} is above {}, {codec}'s maximum",
            codec.max_crf()
        ));
    }
    Ok(())
}

impl Task for SampleEncode {
    const NAME: &'static str = "video.sample_encode";
    type Output = SampleScore;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::DEFAULT,
            ..TaskOptions::default()
        }
    }
}

/// What `video.sample_encode` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleScore {
    /// The rung.
    pub rung: String,
    /// The CRF encoded at.
    pub crf: u8,
    /// The sample's frame width.
    pub width: u32,
    /// The sample's frame height.
    pub height: u32,
    /// VMAF, the mean over every frame of every scene.
    pub vmaf: f64,
    /// The encoded video's bitrate over every scene, in kb/s (the encoded
    /// files' sizes, MP4's few hundred bytes of framing included, over their
    /// duration).
    pub kbps: f64,
    /// Each scene.
    pub scenes: Vec<SceneScore>,
    /// Whether the scenes start at the source's scene starts (else they
    /// are evenly spread: asked so, or too few scene cuts).
    #[serde(default)]
    pub at_scene_cuts: bool,
}

/// One scene of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneScore {
    /// Where it starts in the source, in seconds.
    pub start: f64,
    /// Its length, in seconds.
    pub seconds: f64,
    /// Frames scored.
    pub frames: u32,
    /// Its mean VMAF.
    pub vmaf: f64,
    /// Its bitrate, in kb/s.
    pub kbps: f64,
}

/// Joins one rung's samples (its parents, each a `video.sample_encode`)
/// and picks the CRF that reaches `target_vmaf` (`video.crf_pick`, queue
/// `default`).
///
/// VMAF falls as the CRF rises; between the two sampled CRFs whose VMAF
/// brackets the target, the CRF is interpolated linearly and rounded down
/// (a lower CRF is the better side of the target), and the VMAF and
/// bitrate at the chosen CRF are predicted from the same two samples (the
/// bitrate in log space: it falls about exponentially with the CRF).
/// Samples whose VMAF does not fall with the CRF (noise) are evened out,
/// each scored no higher than the lower CRF before it.
///
/// If even the lowest sampled CRF (`crf_min`) falls short of the target,
/// the node fails, naming the rung, the target and the best VMAF reached.
/// If even the highest (`crf_max`) exceeds it, `crf_max` is chosen and
/// [`CrfChoice::capped`] says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CrfPick {
    /// The rung.
    pub rung: String,
    /// The VMAF to reach.
    pub target_vmaf: VmafTarget,
    /// The lowest CRF allowed (the best quality).
    pub crf_min: u8,
    /// The highest CRF allowed.
    pub crf_max: u8,
    /// The CRF of the fixed-CRF ladder the choice is compared with.
    pub fixed_crf: u8,
}

impl CrfPick {
    /// The pick of rung `rung`'s CRF for `target_vmaf` within
    /// `crf_min..=crf_max`, compared with `fixed_crf`.
    #[must_use]
    pub fn new(
        rung: impl Into<String>,
        target_vmaf: VmafTarget,
        (crf_min, crf_max): (u8, u8),
        fixed_crf: u8,
    ) -> Self {
        Self {
            rung: rung.into(),
            target_vmaf,
            crf_min,
            crf_max,
            fixed_crf,
        }
    }

    /// Checks that `crf_min <= crf_max`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] with the reason.
    pub fn validate(&self) -> Result<()> {
        if self.crf_min > self.crf_max {
            return Err(Error::InvalidTask {
                task: Self::NAME,
                reason: format!(
                    "rung {}: crf_min {} is above crf_max {}",
                    self.rung, self.crf_min, self.crf_max
                ),
            });
        }
        Ok(())
    }
}

impl Task for CrfPick {
    const NAME: &'static str = "video.crf_pick";
    type Output = CrfChoice;

    fn options() -> TaskOptions {
        TaskOptions {
            queue: QueueName::DEFAULT,
            ..TaskOptions::default()
        }
    }
}

/// The CRF picked for one rung, and what the samples predict of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrfChoice {
    /// The rung.
    pub rung: String,
    /// The VMAF asked for.
    pub target_vmaf: f64,
    /// The CRF chosen.
    pub crf: u8,
    /// The VMAF the samples predict at `crf`.
    pub predicted_vmaf: f64,
    /// The bitrate the samples predict at `crf`, in kb/s.
    pub predicted_kbps: f64,
    /// Whether `crf` is `crf_max` and still exceeds the target (the range
    /// allowed no cheaper encode).
    pub capped: bool,
    /// The fixed-CRF ladder's CRF.
    pub fixed_crf: u8,
    /// The samples' bitrate at `fixed_crf`, in kb/s: measured when it was
    /// sampled, else interpolated (or extrapolated) like `predicted_kbps`.
    pub fixed_kbps: f64,
    /// The samples' VMAF at `fixed_crf`, likewise.
    pub fixed_vmaf: f64,
    /// The bitrate saved against the fixed CRF on the same scenes, in
    /// percent of `fixed_kbps` (negative: the target costs more).
    pub saved_percent: f64,
    /// Every sample, lowest CRF first: (CRF, VMAF, kb/s).
    pub samples: Vec<(u8, f64, f64)>,
}

/// How a [`TargetedLadder`] searches each targeted rung's CRF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrfSearch {
    /// The lowest CRF allowed. Default: 18.
    pub crf_min: u8,
    /// The highest CRF allowed. Default: 40.
    pub crf_max: u8,
    /// How many CRFs to sample, evenly spread from `crf_min` to `crf_max`
    /// (both included). Default: 4.
    pub points: u8,
    /// The fixed-CRF ladder the result is compared with. Default: 23,
    /// x264's own default.
    pub fixed_crf: u8,
    /// Scenes per sample. Default: [`SampleEncode::DEFAULT_SAMPLES`].
    pub samples: u8,
    /// Each scene's length. Default:
    /// [`SampleEncode::DEFAULT_SAMPLE_DURATION`].
    pub sample_duration: Duration,
    /// Where the scenes start. Default: at scene cuts
    /// ([`SamplePlacement::default`]).
    pub placement: SamplePlacement,
}

impl Default for CrfSearch {
    fn default() -> Self {
        Self {
            crf_min: 18,
            crf_max: 40,
            points: 4,
            fixed_crf: 23,
            samples: SampleEncode::DEFAULT_SAMPLES,
            sample_duration: SampleEncode::DEFAULT_SAMPLE_DURATION,
            placement: SamplePlacement::default(),
        }
    }
}

impl CrfSearch {
    /// The CRFs sampled: `points` spread evenly over the range, ends
    /// included, without repeats.
    ///
    /// # Examples
    ///
    /// ```
    /// use spool_sdk::video::CrfSearch;
    ///
    /// assert_eq!(CrfSearch::default().crfs(), [18, 25, 33, 40]);
    /// ```
    #[must_use]
    pub fn crfs(&self) -> Vec<u8> {
        let (low, high) = (self.crf_min, self.crf_max.max(self.crf_min));
        let points = u32::from(self.points.max(2));
        let span = f64::from(high - low);
        let mut crfs: Vec<u8> = (0..points)
            .map(|i| {
                let at = f64::from(low) + span * f64::from(i) / f64::from(points - 1);
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "between two u8 CRFs"
                )]
                let crf = at.round() as u8;
                crf
            })
            .collect();
        crfs.dedup();
        crfs
    }
}

/// Adds a quality-targeted ladder to a [`Workflow`]: for every rung of
/// `package` with a [`target_vmaf`](super::Rendition::target_vmaf), one
/// `video.sample_encode` node per sampled CRF, and a `video.crf_pick` node
/// joining them; then the `video.package` node after every pick, which
/// encodes each targeted rung at its picked CRF.
///
/// Node names (`prefix` first, empty by default):
/// `{prefix}sample-{rung}-crf{crf}`, `{prefix}crf-pick-{rung}`,
/// `{prefix}package`.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use spool_sdk::Client;
/// use spool_sdk::video::{Package, Rendition, TargetedLadder};
/// use spool_sdk::workflow::Workflow;
///
/// # async fn demo() -> Result<(), spool_sdk::Error> {
/// let client = Client::connect("redis://127.0.0.1:6379/").await?;
/// let package = Package::new("uploads/cat.mov", "streams/cat").ladder(vec![
///     Rendition::new("1080p", 1080, 6000, 128).target_vmaf(93.0),
///     Rendition::new("540p", 540, 2000, 96).target_vmaf(90.0),
/// ]);
/// let mut wf = Workflow::new();
/// let package_node = TargetedLadder::new(package).add_to(&mut wf, &[])?;
/// let handle = client.submit_workflow(wf).await?;
/// let out = handle
///     .wait::<spool_sdk::video::Package>(&package_node, Duration::from_secs(3600))
///     .await?;
/// for rung in &out.quality {
///     println!("{}: CRF {} VMAF {:.1} (predicted {:?})", rung.name, rung.crf, rung.achieved_vmaf, rung.predicted_vmaf);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TargetedLadder {
    package: Package,
    search: CrfSearch,
    prefix: String,
}

impl TargetedLadder {
    /// The ladder of `package`, searched with [`CrfSearch::default`].
    #[must_use]
    pub fn new(package: Package) -> Self {
        Self {
            package,
            search: CrfSearch::default(),
            prefix: String::new(),
        }
    }

    /// Sets how CRFs are searched.
    #[must_use]
    pub fn search(mut self, search: CrfSearch) -> Self {
        self.search = search;
        self
    }

    /// Prefixes every node's name (to add two ladders to one workflow).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The sample node of `rung` at `crf`.
    #[must_use]
    pub fn sample_node(&self, rung: &str, crf: u8) -> String {
        format!("{}sample-{rung}-crf{crf}", self.prefix)
    }

    /// The pick node of `rung`.
    #[must_use]
    pub fn pick_node(&self, rung: &str) -> String {
        format!("{}crf-pick-{rung}", self.prefix)
    }

    /// The package node.
    #[must_use]
    pub fn package_node(&self) -> String {
        format!("{}package", self.prefix)
    }

    /// Adds the nodes to `workflow`; the samples run after every node of
    /// `after` (none: at once). Returns the package node's name, for
    /// nodes that follow it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTask`] when the package is invalid, no rung has a
    /// target, or the search's range is empty or above the codec's
    /// maximum CRF.
    pub fn add_to(&self, workflow: &mut Workflow, after: &[&str]) -> Result<String> {
        let package = &self.package;
        package.validate()?;
        let invalid = |reason: String| Error::InvalidTask {
            task: CrfPick::NAME,
            reason,
        };
        let search = &self.search;
        if search.crf_min > search.crf_max {
            return Err(invalid(format!(
                "crf_min {} is above crf_max {}",
                search.crf_min, search.crf_max
            )));
        }
        check_crf(package.codec, search.crf_max).map_err(invalid)?;
        check_crf(package.codec, search.fixed_crf).map_err(invalid)?;
        let rungs = package.rungs();
        let targeted: Vec<_> = rungs
            .iter()
            .filter_map(|r| r.target_vmaf.map(|t| (r, t)))
            .collect();
        if targeted.is_empty() {
            return Err(invalid(
                "no rung of the ladder has a target VMAF (Rendition::target_vmaf)".to_owned(),
            ));
        }
        let mut picks = Vec::with_capacity(targeted.len());
        for (rung, target) in targeted {
            let mut samples = Vec::new();
            for crf in search.crfs() {
                let node = self.sample_node(&rung.name, crf);
                let task = SampleEncode::new(package.input.clone(), &rung.name, rung.height, crf)
                    .encoder(package.codec, package.preset)
                    .scenes(search.samples, search.sample_duration)
                    .placement(search.placement);
                task.validate()?;
                workflow.node(&node, task).after(after);
                samples.push(node);
            }
            let pick = self.pick_node(&rung.name);
            let task = CrfPick::new(
                &rung.name,
                target,
                (search.crf_min, search.crf_max),
                search.fixed_crf,
            );
            let samples: Vec<&str> = samples.iter().map(String::as_str).collect();
            workflow.node(&pick, task).after(&samples);
            picks.push(pick);
        }
        let node = self.package_node();
        let picks: Vec<&str> = picks.iter().map(String::as_str).collect();
        workflow.node(&node, package.clone()).after(&picks);
        Ok(node)
    }
}

/// `Duration` as a number of seconds on the wire.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds)
            .map_err(|e| D::Error::custom(format!("{seconds} is not a number of seconds: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Rendition;
    use super::*;

    #[test]
    fn targets_round_to_hundredths_and_travel_as_numbers() {
        let target = VmafTarget::new(93.456).unwrap();
        assert_eq!(target.get(), 93.46);
        assert!(VmafTarget::new(-1.0).is_none() && VmafTarget::new(f64::NAN).is_none());
        let bytes = spool_broker::encode_payload(&target).unwrap();
        let back: f64 = spool_broker::decode_payload(&bytes).unwrap();
        assert_eq!(back, 93.46);
        let bad = spool_broker::encode_payload(&120.0_f64).unwrap();
        assert!(spool_broker::decode_payload::<VmafTarget>(&bad).is_err());
    }

    #[test]
    fn crfs_spread_over_the_range() {
        let search = |crf_min, crf_max, points| CrfSearch {
            crf_min,
            crf_max,
            points,
            ..CrfSearch::default()
        };
        assert_eq!(search(20, 32, 3).crfs(), [20, 26, 32]);
        assert_eq!(search(30, 31, 5).crfs(), [30, 31]);
        assert_eq!(search(25, 25, 4).crfs(), [25]);
        assert_eq!(search(10, 40, 1).crfs(), [10, 40]);
    }

    #[test]
    fn samples_are_checked() {
        let ok = SampleEncode::new("a.mp4", "720p", 720, 23);
        assert!(ok.validate().is_ok());
        assert!(SampleEncode::new("a.mp4", "x", 721, 23).validate().is_err());
        assert!(SampleEncode::new("a.mp4", "x", 720, 52).validate().is_err());
        assert!(
            ok.clone()
                .scenes(0, Duration::from_secs(1))
                .validate()
                .is_err()
        );
        assert!(ok.scenes(2, Duration::from_millis(10)).validate().is_err());
        assert_eq!(SampleEncode::NAME, "video.sample_encode");
        assert_eq!(CrfPick::NAME, "video.crf_pick");
    }

    #[test]
    fn the_builder_adds_samples_picks_and_the_package() {
        let package = Package::new("in.mp4", "out").ladder(vec![
            Rendition::new("720p", 720, 3000, 96).target_vmaf(93.0),
            Rendition::new("360p", 360, 800, 96),
        ]);
        let ladder = TargetedLadder::new(package.clone()).search(CrfSearch {
            points: 3,
            ..CrfSearch::default()
        });
        let mut wf = Workflow::new();
        wf.node("probe", SampleEncode::new("in.mp4", "p", 360, 23));
        let node = ladder.add_to(&mut wf, &["probe"]).unwrap();
        assert_eq!(node, "package");
        let spec = wf.into_spec().unwrap();
        let names: Vec<&str> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "probe",
                "sample-720p-crf18",
                "sample-720p-crf29",
                "sample-720p-crf40",
                "crf-pick-720p",
                "package"
            ]
        );
        let package_spec = spec.nodes.last().unwrap();
        assert_eq!(package_spec.parents.len(), 1);
        assert_eq!(package_spec.envelope.name, Package::NAME);

        let untargeted = TargetedLadder::new(Package::new("in.mp4", "out"));
        assert!(untargeted.add_to(&mut Workflow::new(), &[]).is_err());
        let backwards = TargetedLadder::new(package).search(CrfSearch {
            crf_min: 30,
            crf_max: 20,
            ..CrfSearch::default()
        });
        assert!(backwards.add_to(&mut Workflow::new(), &[]).is_err());
    }
}

//! `video.package`: an HLS and DASH ladder in one FFmpeg run, checked
//! after writing.
//!
//! ```text
//!  probe ─► plan the ladder ─► one FFmpeg run into a staging directory ─► validate ─► publish
//!           (ladder.rs)         decode once, split=N, scale per rung,      (manifest.rs)  rename into
//!                               encode each rung once, tee ─► hls + dash                  output_dir
//! ```
//!
//! **One run, one encode per rung.** The decoded video is split and scaled
//! per rung in one `filter_complex`; each rung is encoded once, and the
//! `tee` muxer hands the same packets to the `hls` muxer (`var_stream_map`,
//! `master_pl_name`) and the `dash` muxer (`adaptation_sets`, one MPD with
//! every representation). Two outputs would encode everything twice.
//!
//! **Audio.** When the source has audio, every rendition gets its own AAC
//! stream (at its rung's bitrate), named in its `var_stream_map` entry: each
//! HLS variant is then a self-contained muxed stream that any player
//! handles, and its `BANDWIDTH` counts its audio. DASH puts the AAC streams
//! in one audio adaptation set, as its bitrate ladder.
//!
//! **Staging.** FFmpeg writes under
//! `<output root>/.spool-staging/<task id>-<attempt>`, a path made of the
//! worker's root and the task's id only, so no user
//! string reaches FFmpeg's `%v`/`%05d` file-name patterns. The output is
//! validated there and renamed into `output_dir` only if it passes; on a
//! failure, a cancellation or a dropped run the staging directory is
//! removed (by the runner for FFmpeg's own failures, by a guard otherwise).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use spool_sdk::video::{
    Codec, HardwarePolicy, Package, PackageOutput, RateControl, RenditionOutput,
};
use tracing::{info, warn};

use super::encoder;
use super::ladder::{self, Ladder};
use super::manifest::{self, DashPackage, Expected, HlsPackage};
use super::progress::{Reporter, StageBand};
use super::runner::{FfmpegArgs, Input, Output, RunOptions};
use super::storage::{Place, Scratch};
use super::tee::TeeSlave;
use super::{VideoError, VideoTasks};
use spool_sdk::video::ObjectUrl;
use spool_worker::{Handler, TaskContext, TaskError};

/// The directory under the output root where runs write before they are
/// validated.
pub const STAGING_DIR: &str = ".spool-staging";

/// The HLS master playlist's name, in `<output_dir>/hls/`.
pub const HLS_MASTER: &str = "master.m3u8";

/// The DASH MPD's name, in `<output_dir>/dash/`.
pub const DASH_MPD: &str = "manifest.mpd";

/// Runs `video.package`. Registered by
/// [`Worker::with_video_tasks`](crate::WithVideoTasks::with_video_tasks).
#[derive(Debug, Clone)]
pub struct PackageHandler {
    tasks: VideoTasks,
}

impl PackageHandler {
    /// A handler sharing `tasks`' FFmpeg, ffprobe and roots.
    #[must_use]
    pub fn new(tasks: &VideoTasks) -> Self {
        Self {
            tasks: tasks.clone(),
        }
    }
}

impl Handler<Package> for PackageHandler {
    async fn call(&self, task: Package, ctx: TaskContext) -> Result<PackageOutput, TaskError> {
        package(&self.tasks, &task, &ctx)
            .await
            .map_err(VideoError::into_task_error)
    }
}

/// Probe, plan, run, validate, publish.
async fn package(
    tasks: &VideoTasks,
    task: &Package,
    ctx: &TaskContext,
) -> Result<PackageOutput, VideoError> {
    // The SDK checked it on enqueue; anything else may have enqueued it.
    task.validate().map_err(VideoError::from_validation)?;
    let reporter = Reporter::new(ctx);
    reporter.stage(&StageBand::PROBING);
    let (storage, roots) = (tasks.storage(), tasks.roots());
    // Input and output are checked, the allow-list included, before any
    // transfer.
    let input = storage.place(&task.input, |p| roots.input(p))?;
    let bucket = if task.output_dir.is_url() {
        Some(storage.allowed().check(&task.output_dir)?)
    } else {
        None
    };
    let scratch = if bucket.is_some() || matches!(input, Place::Object(_)) {
        Some(storage.scratch(tasks.config().scratch_dir.as_deref(), "package")?)
    } else {
        None
    };
    let packaged = match (&bucket, &scratch) {
        (Some(url), Some(scratch)) => {
            async {
                let input = storage
                    .local_path(
                        &input,
                        Some(scratch),
                        "input",
                        &reporter,
                        StageBand::DOWNLOADING,
                    )
                    .await?;
                let dest = Destination::Bucket { url, scratch };
                package_into(tasks, task, ctx, &reporter, &input, &dest).await
            }
            .await
        }
        _ => package_local(tasks, task, ctx, &reporter, &input, scratch.as_ref()).await,
    };
    if let Some(scratch) = scratch {
        scratch.cleanup().await;
    }
    packaged
}

/// Where a package goes.
#[derive(Debug, Clone, Copy)]
enum Destination<'a> {
    /// A directory inside the output root, which exists.
    Dir(&'a Path),
    /// A prefix in a bucket, staged in the task's scratch directory.
    Bucket {
        url: &'a ObjectUrl,
        scratch: &'a Scratch,
    },
}

impl Destination<'_> {
    /// A file of the package, as reported.
    fn file(&self, format: &str, name: &str) -> PathBuf {
        match self {
            Self::Dir(dir) => dir.join(format).join(name),
            Self::Bucket { url, .. } => PathBuf::from(format!("{url}/{format}/{name}")),
        }
    }

    /// The destination, as reported.
    fn display(&self) -> String {
        match self {
            Self::Dir(dir) => dir.display().to_string(),
            Self::Bucket { url, .. } => url.to_string(),
        }
    }
}

/// A package into a directory of the output root.
async fn package_local(
    tasks: &VideoTasks,
    task: &Package,
    ctx: &TaskContext,
    reporter: &Reporter,
    input: &Place,
    scratch: Option<&Scratch>,
) -> Result<PackageOutput, VideoError> {
    let roots = tasks.roots();
    let in_staging = || {
        VideoError::InvalidTask(format!(
            "the output directory may not be inside {STAGING_DIR}, the worker's staging area"
        ))
    };
    let wanted = Path::new(&task.output_dir);
    let relative = wanted.strip_prefix(roots.output_root()).unwrap_or(wanted);
    if relative.components().next() == Some(Component::Normal(STAGING_DIR.as_ref())) {
        return Err(in_staging());
    }
    let existed = roots.output_root().join(wanted).exists();
    // Checks the path (traversal, symlinks out of the root) before anything
    // runs, and creates the directory; it is filled only on success.
    let output_dir = roots.output_dir(&task.output_dir)?;
    let packaged = if output_dir.starts_with(roots.output_root().join(STAGING_DIR)) {
        // Through a symlinked parent.
        Err(in_staging())
    } else {
        match tasks
            .storage()
            .local_path(input, scratch, "input", reporter, StageBand::DOWNLOADING)
            .await
        {
            Ok(input) => {
                package_into(
                    tasks,
                    task,
                    ctx,
                    reporter,
                    &input,
                    &Destination::Dir(&output_dir),
                )
                .await
            }
            Err(e) => Err(e),
        }
    };
    if packaged.is_err() && !existed {
        // Only if still empty: this run created it and wrote nothing there.
        let _ = std::fs::remove_dir(&output_dir);
    }
    packaged
}

/// The package of `input` into `dest`.
async fn package_into(
    tasks: &VideoTasks,
    task: &Package,
    ctx: &TaskContext,
    reporter: &Reporter,
    input: &Path,
    dest: &Destination<'_>,
) -> Result<PackageOutput, VideoError> {
    let roots = tasks.roots();
    let staging_parent = match dest {
        Destination::Dir(_) => roots.output_root(),
        Destination::Bucket { scratch, .. } => scratch.path(),
    };
    let reported = PathBuf::from(dest.display());
    let crfs = crate::targeted::RungCrfs::resolve(tasks, task, ctx.parents())?;
    let media = tasks.ffprobe()?.probe(input).await?;
    let mut ladder = ladder::plan(
        (media.video.width, media.video.height),
        media.video.frame_rate,
        &task.rungs(),
        task.segment_duration,
        task.audio_kbps,
    )?;
    crfs.apply(&mut ladder);
    if !ladder.dropped.is_empty() {
        info!(
            dropped = ?ladder.dropped,
            source_height = media.video.height,
            "rungs taller than the source dropped"
        );
    }

    let staging = Staging::create(staging_parent, &ctx.id().to_string(), ctx.attempt()).map_err(
        |e| match e {
            VideoError::Io { source, .. } if crate::error::is_no_space(&source) => {
                VideoError::NoSpace {
                    path: reported.clone(),
                }
            }
            other => other,
        },
    )?;
    let args = package_command(
        task,
        &ladder,
        &tasks.encoders(),
        media.has_audio(),
        input,
        staging.path(),
    )?;
    let band = StageBand::PROCESSING.named(format!("package {} renditions", ladder.rungs.len()));
    let options = RunOptions::new(band, ctx.cancellation().clone())
        .duration(media.duration)
        .clean(staging.path());
    // A full disk is named as such, at the directory the task asked for.
    let no_space = || VideoError::NoSpace {
        path: reported.clone(),
    };
    let summary = tasks
        .runner()
        .run(&args, options, |progress| reporter.run(&progress))
        .await
        .map_err(|e| match e {
            VideoError::NoSpace { .. } => no_space(),
            other => other,
        })?;

    reporter.stage(&StageBand::VALIDATING);
    let fps = media.video.frame_rate.map(spool_sdk::video::Fps::as_f64);
    finish_manifests(staging.path(), task, fps).map_err(|e| match e {
        VideoError::NoSpace { .. } => no_space(),
        other => other,
    })?;
    let expected = Expected {
        duration: media.duration.as_secs_f64(),
        segment_duration: task.segment_duration.as_secs_f64(),
        sizes: ladder.rungs.iter().map(|r| (r.width, r.height)).collect(),
        audio: media.has_audio(),
        tolerance: tasks.config().tolerance_for(media.duration).as_secs_f64(),
    };
    // The HLS muxer drops a failed write and exits cleanly: a package
    // short of files because the disk filled up fails as a full disk, not
    // as a bad playlist.
    let checked = |e: VideoError| {
        if summary.no_space || crate::publish::out_of_space(staging.path()) {
            no_space()
        } else {
            e
        }
    };
    let hls = task
        .formats
        .hls
        .then(|| manifest::check_hls(&staging.path().join("hls").join(HLS_MASTER), &expected))
        .transpose();
    let hls = hls.map_err(checked)?;
    let dash = task
        .formats
        .dash
        .then(|| manifest::check_dash(&staging.path().join("dash").join(DASH_MPD), &expected))
        .transpose();
    let dash = dash.map_err(checked)?;
    let renditions = rendition_outputs(&ladder, hls.as_ref(), dash.as_ref())?;
    let duration = packaged_duration(hls.as_ref(), dash.as_ref());
    // Rungs at a CRF: the achieved quality, measured before publishing.
    let measured = crate::targeted::measure_rungs(
        tasks,
        input,
        staging.path(),
        &ladder,
        hls.is_some(),
        Some(reporter),
        ctx.cancellation(),
    )
    .await?;
    let quality = crfs.report(&ladder, &measured);

    let formats: Vec<&str> = [(task.formats.hls, "hls"), (task.formats.dash, "dash")]
        .into_iter()
        .filter_map(|(wanted, name)| wanted.then_some(name))
        .collect();
    match dest {
        Destination::Dir(output_dir) => staging.publish(output_dir, &formats)?,
        Destination::Bucket { url, scratch } => {
            scratch.check_usage("package")?;
            tasks
                .storage()
                .upload_package(
                    staging.path(),
                    &formats,
                    &[HLS_MASTER, DASH_MPD],
                    url,
                    reporter,
                    StageBand::UPLOADING,
                )
                .await?;
        }
    }
    let output = PackageOutput {
        hls_master: task.formats.hls.then(|| dest.file("hls", HLS_MASTER)),
        dash_mpd: task.formats.dash.then(|| dest.file("dash", DASH_MPD)),
        renditions,
        segment_duration: task.segment_duration,
        duration,
        quality,
    };
    info!(
        output_dir = %dest.display(),
        renditions = output.renditions.len(),
        elapsed = ?summary.elapsed,
        "packaged"
    );
    crate::trace::record([opentelemetry::KeyValue::new(
        "spool.video.renditions",
        i64::try_from(output.renditions.len()).unwrap_or(i64::MAX),
    )]);
    reporter.done(format!(
        "{} renditions in {}",
        output.renditions.len(),
        dest.display()
    ));
    Ok(output)
}

/// The one FFmpeg command of a package: decode, split and scale per rung,
/// encode each rung once, mux to HLS and/or DASH through `tee`, under
/// `out_dir` (`hls/`, `dash/`, which must exist).
///
/// `encoders` are those that passed the worker's trial encode
/// ([`VideoTasks::encoders`]); `audio` says whether the input has an audio
/// stream.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use std::time::Duration;
/// use spool_sdk::video::{Fps, Package};
/// use spool_video::{ladder, package::package_command};
///
/// let task = Package::new("clip.mp4", "streams/clip");
/// let plan = ladder::plan((1280, 720), Some(Fps::whole(25)), &task.rungs(), task.segment_duration, None)?;
/// let command = package_command(
///     &task,
///     &plan,
///     &["libx264".to_owned()],
///     true,
///     Path::new("/srv/uploads/clip.mp4"),
///     Path::new("/srv/out/.spool-staging/run"),
/// )?;
/// let args: Vec<String> = command.to_args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
/// assert_eq!(args.iter().filter(|a| *a == "-i").count(), 1);
/// assert!(args.iter().any(|a| a.starts_with("[0:v:0]format=yuv420p,split=3")));
/// # Ok::<(), spool_video::VideoError>(())
/// ```
///
/// # Errors
///
/// [`VideoError::Missing`] when the codec's software encoder is not
/// available; [`VideoError::InvalidTask`] for settings it rejects.
pub fn package_command(
    task: &Package,
    ladder: &Ladder,
    encoders: &[String],
    audio: bool,
    input: &Path,
    out_dir: &Path,
) -> Result<FfmpegArgs, VideoError> {
    let encode = LadderEncode::new(task, ladder, encoders, audio)?;
    let tee = Output::tee(tee_slaves(task, ladder, audio, out_dir))
        // The tee's own context; each slave carries its own whitelist.
        .option("-protocol_whitelist", "file");
    Ok(encode.args(input, 1).output(encode.output(tee, 0)))
}

/// A ladder's encode, whatever muxes it: the filtergraph that splits and
/// scales the video, and the encoder options of every rendition.
///
/// [`package_command`] feeds one encode to both formats through `tee`;
/// `spool-ladder-bench` also builds the alternatives from it (two outputs
/// of one run, one run per rendition) to measure them.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderEncode {
    global: Vec<(&'static str, String)>,
    pixel_filter: &'static str,
    sizes: Vec<(u32, u32)>,
    audio: bool,
    options: Vec<(&'static str, String)>,
}

impl LadderEncode {
    /// The encode of `ladder` with `task`'s codec and preset.
    ///
    /// # Errors
    ///
    /// As [`package_command`].
    pub fn new(
        task: &Package,
        ladder: &Ladder,
        encoders: &[String],
        audio: bool,
    ) -> Result<Self, VideoError> {
        let rungs = &ladder.rungs;
        let top_kbps = rungs.iter().map(|r| r.video_kbps).max().unwrap_or(1);
        // Software only: a ladder is N concurrent encodes, more than
        // consumer GPUs allow NVENC sessions, and the segments must cut
        // identically.
        let encoder = encoder::plan(task.codec, HardwarePolicy::Software, encoders)?
            .into_iter()
            .next()
            .ok_or_else(|| VideoError::InvalidTask(format!("no {} encoder", task.codec)))?;
        let setup = encoder::setup(
            &encoder,
            RateControl::Bitrate { kbps: top_kbps },
            task.preset,
        )?;
        // The encoder's own options, but one bitrate per stream instead of
        // one for all, and x265's parameters merged below.
        let mut options: Vec<(&'static str, String)> = setup
            .options
            .into_iter()
            .filter(|(name, _)| !matches!(*name, "-b:v" | "-x265-params"))
            .collect();
        for (index, rung) in rungs.iter().enumerate() {
            let stream = |name| stream_option(name, index);
            // A rung at a CRF (capped CRF: the encoder's quality mode, its
            // peak held to the rung's bitrate), else at its bitrate.
            match rung.crf {
                Some(crf) => options.push((stream(PerStream::VideoCrf), crf.to_string())),
                None => options.push((
                    stream(PerStream::VideoBitrate),
                    format!("{}k", rung.video_kbps),
                )),
            }
            // A capped peak keeps the manifests' bandwidths honest. SVT-AV1
            // takes a maximum bitrate only in CRF mode: its VBR runs
            // uncapped.
            if task.codec != Codec::Av1 || rung.crf.is_some() {
                options.push((
                    stream(PerStream::VideoMaxRate),
                    format!("{}k", rung.max_kbps()),
                ));
                options.push((
                    stream(PerStream::VideoBuffer),
                    format!("{}k", rung.buffer_kbits()),
                ));
            }
        }
        let keyframes = &ladder.keyframes;
        if let Some(interval) = keyframes.interval_frames {
            options.push(("-g", interval.to_string()));
            options.push(("-keyint_min", interval.to_string()));
        }
        options.push(("-sc_threshold", "0".to_owned()));
        options.push(("-force_key_frames", keyframes.force_expression()));
        match task.codec {
            Codec::H264 => options.push(("-forced-idr", "1".to_owned())),
            Codec::Hevc => {
                // Closed GOPs starting with an IDR at every forced keyframe,
                // no scene-cut keyframes: segments must start where the
                // others do.
                let mut params = String::from("log-level=error:scenecut=0:open-gop=0");
                if let Some(interval) = keyframes.interval_frames {
                    params.push_str(&format!(":keyint={interval}:min-keyint={interval}"));
                }
                options.push(("-forced-idr", "1".to_owned()));
                options.push(("-x265-params", params));
            }
            _ => {}
        }
        if audio {
            options.push(("-c:a", "aac".to_owned()));
            options.push(("-ac", "2".to_owned()));
            options.push(("-ar", "48000".to_owned()));
            for (index, rung) in rungs.iter().enumerate() {
                let name = stream_option(PerStream::AudioBitrate, index);
                options.push((name, format!("{}k", rung.audio_kbps)));
            }
        }
        // The muxers behind `tee` need the codecs' headers out of band
        // (MP4's avcC/hvcC); the MPEG-TS muxer puts them back in front of
        // keyframes.
        options.push(("-flags", "+global_header".to_owned()));
        Ok(Self {
            global: setup.global,
            pixel_filter: setup.pixel_filter,
            sizes: rungs.iter().map(|r| (r.width, r.height)).collect(),
            audio,
            options,
        })
    }

    /// The command's input and filtergraph, for `outputs` outputs: the
    /// decoded video is split once per rendition and output, and each copy
    /// scaled, labelled `[v<output>_<rendition>]`.
    #[must_use]
    pub fn args(&self, input: &Path, outputs: usize) -> FfmpegArgs {
        let copies = self.sizes.len() * outputs.max(1);
        let mut graph = format!("[0:v:0]{},split={copies}", self.pixel_filter);
        for copy in 0..copies {
            graph.push_str(&format!("[s{copy}]"));
        }
        // `scale` sets each rendition's sample aspect ratio so that its
        // display aspect ratio is the source's exactly, whatever the
        // even-width rounding did (854x480 of a 16:9 source is 1280:1281):
        // a DASH adaptation set must hold one display aspect ratio.
        for output in 0..outputs.max(1) {
            for (index, (width, height)) in self.sizes.iter().enumerate() {
                let copy = output * self.sizes.len() + index;
                graph.push_str(&format!(
                    ";[s{copy}]scale={width}:{height}:flags=bicubic[v{output}_{index}]"
                ));
            }
        }
        let mut args = FfmpegArgs::new()
            .input(Input::file(input))
            .filter_complex(graph);
        for (name, value) in &self.global {
            args = args.global(name, value);
        }
        args
    }

    /// `output`, the `index`th of the command's outputs, with every
    /// rendition's video (then audio) mapped and encoded.
    #[must_use]
    pub fn output(&self, mut output: Output, index: usize) -> Output {
        for rendition in 0..self.sizes.len() {
            output = output.map(format!("[v{index}_{rendition}]"));
        }
        if self.audio {
            for _ in &self.sizes {
                output = output.map("0:a:0");
            }
        }
        for (name, value) in &self.options {
            output = output.option(name, value);
        }
        output
    }
}

/// `-b:v:3`: the option `name` for the `index`th stream of its type.
/// The runner takes option names as `&'static str`, so the names a ladder
/// can use are spelled out (it has at most [`ladder::MAX_RUNGS`] rungs).
fn stream_option(name: PerStream, index: usize) -> &'static str {
    macro_rules! per_stream {
        ($name:literal) => {
            [
                concat!($name, ":0"),
                concat!($name, ":1"),
                concat!($name, ":2"),
                concat!($name, ":3"),
                concat!($name, ":4"),
                concat!($name, ":5"),
                concat!($name, ":6"),
                concat!($name, ":7"),
                concat!($name, ":8"),
                concat!($name, ":9"),
            ]
        };
    }
    const _: () = assert!(ladder::MAX_RUNGS == 10);
    let names: [&'static str; ladder::MAX_RUNGS] = match name {
        PerStream::VideoBitrate => per_stream!("-b:v"),
        PerStream::VideoCrf => per_stream!("-crf:v"),
        PerStream::VideoMaxRate => per_stream!("-maxrate:v"),
        PerStream::VideoBuffer => per_stream!("-bufsize:v"),
        PerStream::AudioBitrate => per_stream!("-b:a"),
    };
    names[index.min(ladder::MAX_RUNGS - 1)]
}

/// The per-stream options a ladder sets.
#[derive(Debug, Clone, Copy)]
enum PerStream {
    VideoBitrate,
    VideoCrf,
    VideoMaxRate,
    VideoBuffer,
    AudioBitrate,
}

/// The `tee` muxer's slaves, writing under `out_dir`: HLS (`hls/`: media
/// playlists and segments named after each rung, a master playlist) and
/// DASH (`dash/`: one MPD, a video and an audio adaptation set).
#[must_use]
pub fn tee_slaves(task: &Package, ladder: &Ladder, audio: bool, out_dir: &Path) -> Vec<TeeSlave> {
    let segment = ladder.keyframes.segment_text();
    let mut slaves = Vec::with_capacity(2);
    if task.formats.hls {
        let dir = out_dir.join("hls");
        let stream_map = ladder
            .rungs
            .iter()
            .enumerate()
            .map(|(index, rung)| {
                if audio {
                    format!("v:{index},a:{index},name:{}", rung.name)
                } else {
                    format!("v:{index},name:{}", rung.name)
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        // H.264 in MPEG-TS plays everywhere; HEVC and AV1 in HLS need
        // fragmented MP4.
        let (segment_type, extension) = match task.codec {
            Codec::H264 => ("mpegts", "ts"),
            _ => ("fmp4", "m4s"),
        };
        let mut hls = TeeSlave::new("hls", dir.join("%v.m3u8"))
            .option("hls_time", &segment)
            .option("hls_playlist_type", "vod")
            .option("hls_flags", "independent_segments")
            .option("hls_segment_type", segment_type)
            .option("master_pl_name", HLS_MASTER)
            .option(
                "hls_segment_filename",
                dir.join(format!("%v_%05d.{extension}")).to_string_lossy(),
            )
            .option("var_stream_map", stream_map);
        if segment_type == "fmp4" {
            hls = hls.option("hls_fmp4_init_filename", "%v_init.mp4");
        }
        slaves.push(hls);
    }
    if task.formats.dash {
        let sets = if audio {
            "id=0,streams=v id=1,streams=a"
        } else {
            "id=0,streams=v"
        };
        let mut dash = TeeSlave::new("dash", out_dir.join("dash").join(DASH_MPD));
        let distinct = distinct_audio(ladder);
        if audio && distinct.len() < ladder.rungs.len() {
            // Rungs at one audio bitrate carry byte-identical AAC streams:
            // DASH lists each bitrate once (HLS variants keep their own).
            let mut select = vec!["v".to_owned()];
            select.extend(distinct.iter().map(|index| format!("a:{index}")));
            dash = dash.option("select", select.join(","));
        }
        slaves.push(
            dash.option("seg_duration", &segment)
                .option("use_template", 1)
                .option("use_timeline", 1)
                .option("adaptation_sets", sets),
        );
    }
    slaves
}

/// The indices of the rungs whose audio bitrate no earlier rung has: the
/// AAC streams DASH lists.
fn distinct_audio(ladder: &Ladder) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    ladder
        .rungs
        .iter()
        .enumerate()
        .filter(|(_, rung)| seen.insert(rung.audio_kbps))
        .map(|(index, _)| index)
        .collect()
}

/// Completes what FFmpeg wrote under `dir`: `FRAME-RATE` on the HLS
/// master playlist's variants (the renditions keep the source's `fps`),
/// no `bitstreamSwitching` in the MPD.
fn finish_manifests(dir: &Path, task: &Package, fps: Option<f64>) -> Result<(), VideoError> {
    if task.formats.hls
        && let Some(fps) = fps
    {
        rewrite(&dir.join("hls").join(HLS_MASTER), |text| {
            manifest::hls::with_frame_rate(text, fps)
        })?;
    }
    if task.formats.dash {
        rewrite(
            &dir.join("dash").join(DASH_MPD),
            manifest::dash::without_bitstream_switching,
        )?;
    }
    Ok(())
}

/// Rewrites a text file through `change`, replacing it in one rename.
fn rewrite(path: &Path, change: impl FnOnce(&str) -> String) -> Result<(), VideoError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        // Missing or unreadable: validation says which.
        return Ok(());
    };
    let changed = change(&text);
    if changed == text {
        return Ok(());
    }
    let next = path.with_extension("next");
    std::fs::write(&next, changed)
        .and_then(|()| std::fs::rename(&next, path))
        .map_err(|e| VideoError::from_io(format!("cannot rewrite {}", path.display()), path, e))
}

/// One entry per rung, with what the manifests say about it.
fn rendition_outputs(
    ladder: &Ladder,
    hls: Option<&HlsPackage>,
    dash: Option<&DashPackage>,
) -> Result<Vec<RenditionOutput>, VideoError> {
    let audio_bandwidth: u64 = dash
        .map(|d| {
            d.representations
                .iter()
                .filter(|r| !r.video)
                .map(|r| r.bandwidth)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    ladder
        .rungs
        .iter()
        .map(|rung| {
            let size = (rung.width, rung.height);
            let variant = hls.and_then(|h| h.variants.iter().find(|v| (v.width, v.height) == size));
            let representation = dash.and_then(|d| {
                d.representations.iter().find(|r| {
                    r.video && (r.width, r.height) == (Some(rung.width), Some(rung.height))
                })
            });
            let (bandwidth, segments) = match (variant, representation) {
                (Some(v), _) => (v.bandwidth, v.segments),
                (None, Some(r)) => (r.bandwidth + audio_bandwidth, r.segments),
                (None, None) => {
                    return Err(VideoError::InvalidTask(format!(
                        "rendition {} is in no manifest",
                        rung.name
                    )));
                }
            };
            Ok(RenditionOutput {
                name: rung.name.clone(),
                width: rung.width,
                height: rung.height,
                bandwidth,
                segments: u32::try_from(segments).unwrap_or(u32::MAX),
            })
        })
        .collect()
}

/// The longest video rendition's duration, from the manifests.
fn packaged_duration(hls: Option<&HlsPackage>, dash: Option<&DashPackage>) -> Duration {
    let hls_longest = hls
        .into_iter()
        .flat_map(|h| h.variants.iter().map(|v| v.duration));
    let dash_longest = dash.into_iter().flat_map(|d| {
        d.representations
            .iter()
            .filter(|r| r.video)
            .map(|r| r.duration)
    });
    let seconds = hls_longest.chain(dash_longest).fold(0.0_f64, f64::max);
    Duration::try_from_secs_f64(seconds).unwrap_or_default()
}

/// A run's private directory under the output root: removed on drop
/// unless published.
#[derive(Debug)]
struct Staging {
    path: PathBuf,
}

impl Staging {
    /// `<output root>/.spool-staging/<task id>-<attempt>`, emptied first
    /// (a crashed earlier run of the same attempt may have left files).
    fn create(output_root: &Path, task_id: &str, attempt: u32) -> Result<Self, VideoError> {
        let path = output_root
            .join(STAGING_DIR)
            .join(format!("{task_id}-{attempt}"));
        remove_dir_if_present(&path)?;
        for sub in ["hls", "dash"] {
            let dir = path.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| VideoError::io(format!("cannot create {}", dir.display()), e))?;
        }
        Ok(Self { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Moves each format's directory into `output_dir`, replacing an
    /// earlier package's. The old one is moved aside first and deleted
    /// last, so the new one appears in one rename.
    fn publish(self, output_dir: &Path, formats: &[&str]) -> Result<(), VideoError> {
        for format in formats {
            let target = output_dir.join(format);
            let old = self.path.join(format!("{format}.old"));
            if std::fs::symlink_metadata(&target).is_ok() {
                std::fs::rename(&target, &old).map_err(|e| {
                    VideoError::io(
                        format!("cannot move the earlier {} aside", target.display()),
                        e,
                    )
                })?;
            }
            let built = self.path.join(format);
            std::fs::rename(&built, &target).map_err(|e| {
                VideoError::io(
                    format!("cannot move {} to {}", built.display(), target.display()),
                    e,
                )
            })?;
        }
        // Drop removes the staging directory with the old packages in it.
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = remove_dir_if_present(&self.path) {
            warn!(path = %self.path.display(), error = %e, "cannot remove the staging directory");
        }
    }
}

fn remove_dir_if_present(path: &Path) -> Result<(), VideoError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VideoError::io(
            format!("cannot remove {}", path.display()),
            e,
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use spool_sdk::video::{Fps, Preset, Rendition};

    use super::*;

    fn command(task: &Package, audio: bool) -> Vec<String> {
        let ladder = ladder::plan(
            (1280, 720),
            Some(Fps::whole(25)),
            &task.rungs(),
            task.segment_duration,
            task.audio_kbps,
        )
        .unwrap();
        let encoders = ["libx264".to_owned(), "libx265".to_owned()];
        let args = package_command(
            task,
            &ladder,
            &encoders,
            audio,
            Path::new("/in/clip.mp4"),
            Path::new("/out/.spool-staging/t-1"),
        )
        .unwrap();
        args.to_args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn value<'a>(line: &'a [String], name: &str) -> &'a str {
        let at = line
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("{name} in {line:?}"));
        &line[at + 1]
    }

    #[test]
    fn one_command_splits_encodes_and_tees_to_both_formats() {
        let task = Package::new("clip.mp4", "out").preset(Preset::VeryFast);
        let line = command(&task, true);
        assert_eq!(
            line.iter().filter(|a| *a == "-i").count(),
            1,
            "decoded once"
        );
        assert_eq!(
            value(&line, "-filter_complex"),
            "[0:v:0]format=yuv420p,split=3[s0][s1][s2];\
             [s0]scale=1280:720:flags=bicubic[v0_0];\
             [s1]scale=854:480:flags=bicubic[v0_1];\
             [s2]scale=640:360:flags=bicubic[v0_2]"
        );
        let maps: Vec<&str> = line
            .iter()
            .enumerate()
            .filter(|(_, a)| *a == "-map")
            .map(|(i, _)| line[i + 1].as_str())
            .collect();
        assert_eq!(
            maps,
            ["[v0_0]", "[v0_1]", "[v0_2]", "0:a:0", "0:a:0", "0:a:0"]
        );
        assert_eq!(value(&line, "-c:v"), "libx264");
        assert_eq!(value(&line, "-preset"), "veryfast");
        assert_eq!(value(&line, "-b:v:0"), "2800k");
        assert_eq!(value(&line, "-maxrate:v:2"), "880k");
        assert_eq!(value(&line, "-b:a:2"), "96k");
        // 25 fps x 4 s segments.
        assert_eq!(
            (value(&line, "-g"), value(&line, "-keyint_min")),
            ("100", "100")
        );
        assert_eq!(value(&line, "-force_key_frames"), "expr:gte(t,n_forced*4)");
        assert_eq!(value(&line, "-sc_threshold"), "0");
        assert_eq!(value(&line, "-f"), "tee");
        assert!(
            !line.iter().any(|a| a == "-b:v"),
            "no global bitrate: {line:?}"
        );
        let tee = line.last().unwrap();
        assert!(
            tee.starts_with("[f=hls:protocol_whitelist=file:hls_time=4:"),
            "{tee}"
        );
        assert!(
            tee.contains(r"var_stream_map=v\\:0,a\\:0,name\\:720p\\\ v\\:1,a\\:1,name\\:480p"),
            "{tee}"
        );
        assert!(
            tee.contains("hls_segment_filename=/out/.spool-staging/t-1/hls/%v_%05d.ts"),
            "{tee}"
        );
        assert!(
            tee.contains("]/out/.spool-staging/t-1/hls/%v.m3u8|[f=dash:"),
            "{tee}"
        );
        assert!(
            tee.contains(r"adaptation_sets=id=0,streams=v\\\ id=1,streams=a"),
            "{tee}"
        );
        assert!(
            tee.ends_with("]/out/.spool-staging/t-1/dash/manifest.mpd"),
            "{tee}"
        );
    }

    #[test]
    fn silent_hevc_hls_only() {
        let task = Package::new("clip.mp4", "out")
            .codec(Codec::Hevc)
            .formats(spool_sdk::video::Formats::HLS)
            .ladder(vec![Rendition::new("sd", 360, 800, 96)]);
        let line = command(&task, false);
        assert!(
            !line.iter().any(|a| a == "0:a:0" || a == "-c:a"),
            "{line:?}"
        );
        assert_eq!(value(&line, "-c:v"), "libx265");
        assert_eq!(
            value(&line, "-x265-params"),
            "log-level=error:scenecut=0:open-gop=0:keyint=100:min-keyint=100"
        );
        let tee = line.last().unwrap();
        assert!(tee.contains("hls_segment_type=fmp4"), "{tee}");
        assert!(tee.contains(r"var_stream_map=v\\:0,name\\:sd:"), "{tee}");
        assert!(!tee.contains("f=dash"), "{tee}");
    }

    #[test]
    fn a_missing_encoder_is_named() {
        let task = Package::new("clip.mp4", "out").codec(Codec::Av1);
        let ladder =
            ladder::plan((640, 360), None, &task.rungs(), task.segment_duration, None).unwrap();
        let error = LadderEncode::new(&task, &ladder, &["libx264".to_owned()], true).unwrap_err();
        assert!(error.to_string().contains("libsvtav1"), "{error}");
    }

    #[test]
    fn per_stream_option_names() {
        assert_eq!(stream_option(PerStream::VideoBitrate, 0), "-b:v:0");
        assert_eq!(stream_option(PerStream::VideoMaxRate, 9), "-maxrate:v:9");
        assert_eq!(stream_option(PerStream::VideoBuffer, 3), "-bufsize:v:3");
        assert_eq!(stream_option(PerStream::AudioBitrate, 1), "-b:a:1");
    }
}

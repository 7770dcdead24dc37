//! What the local FFmpeg can do: its version, the encoders that pass a real
//! one-frame trial encode, and whether it has libvmaf.
//!
//! FFmpeg runs as a plain subprocess with fixed arguments, never through a
//! shell. An encoder listed by `-encoders` counts only if encoding one
//! frame from `lavfi` with it succeeds: NVENC, QSV and VAAPI are compiled
//! into most builds but work only with the right hardware and driver.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The encoders tried: the software encoders, then NVENC, QSV and VAAPI
/// for H.264, HEVC and AV1.
pub const CANDIDATE_ENCODERS: [&str; 12] = [
    "libx264",
    "libx265",
    "libsvtav1",
    "h264_nvenc",
    "hevc_nvenc",
    "av1_nvenc",
    "h264_qsv",
    "hevc_qsv",
    "av1_qsv",
    "h264_vaapi",
    "hevc_vaapi",
    "av1_vaapi",
];

/// The longest one trial encode (or listing) may take.
pub const TRIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// What FFmpeg can do here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FfmpegReport {
    /// The FFmpeg binary probed.
    pub path: Option<PathBuf>,
    /// The first line of `ffmpeg -version`.
    pub version: Option<String>,
    /// Candidate encoders that encoded a frame.
    pub encoders: Vec<String>,
    /// Candidate encoders that are compiled in but failed the trial, and
    /// FFmpeg's last words about it.
    pub rejected: BTreeMap<String, String>,
    /// Whether the `libvmaf` filter is compiled in.
    pub libvmaf: bool,
    /// Why FFmpeg could not be probed, if it could not.
    pub error: Option<String>,
}

impl FfmpegReport {
    /// Rebuilds the report of the FFmpeg at `path` from the registry labels
    /// a probe produced ([`Capabilities::labels`](super::Capabilities::labels):
    /// `ffmpeg`, `encoders`, `libvmaf`), so a supervisor's children need
    /// not probe again. `None` when the labels hold no usable FFmpeg.
    #[must_use]
    pub fn from_labels(path: PathBuf, labels: &BTreeMap<String, String>) -> Option<Self> {
        let version = labels.get("ffmpeg")?.clone();
        let encoders = labels
            .get("encoders")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            path: Some(path),
            version: Some(version),
            encoders,
            rejected: BTreeMap::new(),
            libvmaf: labels.get("libvmaf").is_some_and(|v| v == "true"),
            error: None,
        })
    }
}

/// Finds FFmpeg: `explicit` (from `--ffmpeg`, `SPOOL_FFMPEG` or the config
/// file) if given, else the first `ffmpeg` on `PATH`.
#[must_use]
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("ffmpeg"))
        .find(|candidate| candidate.is_file())
}

/// Runs `ffmpeg` with `args`; its stdout on success, else why not.
fn run(ffmpeg: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(ffmpeg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", ffmpeg.display()))?;
    // Drain both pipes on threads so a chatty FFmpeg never blocks on a full
    // pipe while we wait for it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + TRIAL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("timed out after {TRIAL_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(format!("cannot wait for FFmpeg: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status? {
        status if status.success() => Ok(out),
        status => {
            // FFmpeg's first complaint names the cause ("Cannot load
            // libcuda.so.1"); the later ones are consequences.
            let first = err
                .lines()
                .map(strip_log_context)
                .find(|l| !l.is_empty())
                .unwrap_or("no output");
            Err(format!("{status}: {first}"))
        }
    }
}

/// A log line without FFmpeg's leading `[h264_nvenc @ 0x55c3…] ` tags
/// (and the `[error] ` level tag of `-loglevel level+…`).
#[must_use]
pub fn strip_log_context(line: &str) -> &str {
    let mut line = line.trim();
    while line.starts_with('[')
        && let Some(end) = line.find("] ")
    {
        line = line[end + 2..].trim_start();
    }
    line
}

/// The names in an `ffmpeg -encoders` or `-filters` listing: the second
/// word of each line after the `---` separator (or of every line with
/// flags, for `-filters`, which has no separator in older builds).
fn listed_names(listing: &str) -> Vec<String> {
    let body = listing
        .split_once("------")
        .map_or(listing, |(_, rest)| rest);
    body.lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(str::to_owned)
        .collect()
}

/// The arguments of a one-frame trial encode with `encoder`.
fn trial_args(encoder: &str) -> Vec<&str> {
    let mut args = vec!["-hide_banner", "-nostdin", "-loglevel", "error"];
    if encoder.ends_with("_vaapi") {
        args.extend(["-vaapi_device", "/dev/dri/renderD128"]);
    }
    args.extend([
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=320x240:r=25:d=0.04",
        "-frames:v",
        "1",
    ]);
    if encoder.ends_with("_vaapi") {
        args.extend(["-vf", "format=nv12,hwupload"]);
    } else if encoder.ends_with("_qsv") {
        args.extend(["-pix_fmt", "nv12"]);
    } else {
        args.extend(["-pix_fmt", "yuv420p"]);
    }
    args.extend(["-c:v", encoder, "-f", "null", "-"]);
    args
}

/// Probes the FFmpeg at `ffmpeg`: version, trial encodes (in parallel),
/// libvmaf.
#[must_use]
pub fn probe(ffmpeg: &Path) -> FfmpegReport {
    probe_with(ffmpeg, true)
}

/// Like [`probe`] without the trial encodes, for a fast start
/// (`--no-probe`): the listed software encoders count as usable (they need
/// no device), and hardware encoders are rejected as untried rather than
/// trusted because they are listed.
#[must_use]
pub fn probe_listing(ffmpeg: &Path) -> FfmpegReport {
    probe_with(ffmpeg, false)
}

/// Whether `encoder` runs on the CPU alone.
fn is_software(encoder: &str) -> bool {
    encoder.starts_with("lib")
}

fn probe_with(ffmpeg: &Path, trials: bool) -> FfmpegReport {
    let mut report = FfmpegReport {
        path: Some(ffmpeg.to_owned()),
        ..FfmpegReport::default()
    };
    match run(ffmpeg, &["-hide_banner", "-version"]) {
        Ok(out) => report.version = out.lines().next().map(str::to_owned),
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    }
    let listed = match run(ffmpeg, &["-hide_banner", "-encoders"]) {
        Ok(out) => listed_names(&out),
        Err(e) => {
            report.error = Some(format!("cannot list encoders: {e}"));
            return report;
        }
    };
    report.libvmaf = run(ffmpeg, &["-hide_banner", "-filters"])
        .map(|out| listed_names(&out).iter().any(|f| f == "libvmaf"))
        .unwrap_or(false);
    let candidates = CANDIDATE_ENCODERS
        .iter()
        .filter(|encoder| listed.iter().any(|l| l == *encoder));
    if !trials {
        for &encoder in candidates {
            if is_software(encoder) {
                report.encoders.push(encoder.to_owned());
            } else {
                report.rejected.insert(
                    encoder.to_owned(),
                    "not trial-encoded (--no-probe)".to_owned(),
                );
            }
        }
        return report;
    }
    let trials: Vec<_> = candidates
        .map(|&encoder| {
            let ffmpeg = ffmpeg.to_owned();
            (
                encoder,
                std::thread::spawn(move || run(&ffmpeg, &trial_args(encoder))),
            )
        })
        .collect();
    for (encoder, trial) in trials {
        match trial.join() {
            Ok(Ok(_)) => report.encoders.push(encoder.to_owned()),
            Ok(Err(why)) => {
                report.rejected.insert(encoder.to_owned(), why);
            }
            Err(_panic) => {
                report
                    .rejected
                    .insert(encoder.to_owned(), "the trial panicked".to_owned());
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_parsed() {
        let listing = "Encoders:\n V..... = Video\n ------\n V....D libx264  libx264 H.264\n A....D aac  AAC\n";
        assert_eq!(listed_names(listing), vec!["libx264", "aac"]);
        let filters =
            " ... libvmaf           VV->V      Calculate the VMAF between two video streams.\n";
        assert_eq!(listed_names(filters), vec!["libvmaf"]);
    }

    #[test]
    fn log_context_is_stripped() {
        assert_eq!(
            strip_log_context(
                "[vost#0:0/h264_nvenc @ 0x55] [enc:h264_nvenc @ 0x5] Cannot load libcuda.so.1"
            ),
            "Cannot load libcuda.so.1"
        );
        assert_eq!(
            strip_log_context("Device creation failed: -22."),
            "Device creation failed: -22."
        );
    }

    #[test]
    fn trial_arguments_are_fixed() {
        let args = trial_args("h264_nvenc");
        assert_eq!(args.last(), Some(&"-"));
        assert!(args.windows(2).any(|w| w == ["-c:v", "h264_nvenc"]));
        assert!(trial_args("h264_vaapi").contains(&"-vaapi_device"));
    }

    #[test]
    fn reports_come_back_from_labels() {
        let mut labels = BTreeMap::new();
        labels.insert("encoders".to_owned(), "libx264,h264_nvenc".to_owned());
        assert_eq!(FfmpegReport::from_labels("/ff".into(), &labels), None);
        labels.insert("ffmpeg".to_owned(), "ffmpeg version 9".to_owned());
        labels.insert("libvmaf".to_owned(), "true".to_owned());
        let report = FfmpegReport::from_labels("/ff".into(), &labels).expect("usable");
        assert_eq!(report.encoders, ["libx264", "h264_nvenc"]);
        assert!(report.libvmaf);
        assert_eq!(report.path.as_deref(), Some(Path::new("/ff")));
    }

    #[test]
    fn a_listing_probe_never_trusts_hardware_encoders() {
        let Some(ffmpeg) =
            locate(None).or_else(|| std::env::var_os("SPOOL_FFMPEG").map(PathBuf::from))
        else {
            eprintln!("skipped: no FFmpeg on PATH or in SPOOL_FFMPEG");
            return;
        };
        let report = probe_listing(&ffmpeg);
        assert!(report.error.is_none(), "{:?}", report.error);
        assert!(
            report.encoders.iter().all(|e| is_software(e)),
            "{:?}",
            report.encoders
        );
        assert!(report.rejected.keys().all(|e| !is_software(e)));
    }

    #[test]
    fn a_missing_ffmpeg_is_reported() {
        let report = probe(Path::new("/nonexistent/ffmpeg"));
        assert!(report.error.is_some());
        assert!(report.encoders.is_empty());
    }
}

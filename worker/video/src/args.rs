//! FFmpeg command lines built from typed parts: inputs with their
//! options, a filtergraph, outputs with their maps and options.
//!
//! Only typed values and worker-generated paths go in: option names are
//! `&'static str`, values come from typed task fields, paths from
//! [`Roots`](super::Roots) (absolute, so none reads as a protocol or an
//! option), and every file input is limited to the `file` protocol.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::VideoError;
use super::formats::INPUT_FORMATS;
use super::tee::{TeeSlave, tee_target};

/// One FFmpeg input: its options, then `-i` and the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    options: Vec<OsString>,
    source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    File(PathBuf),
    Lavfi(String),
}

impl Input {
    /// A file, read through the `file` protocol only
    /// (`-protocol_whitelist file`) and by a media container's demuxer
    /// only (`-format_whitelist`, [`INPUT_FORMATS`]), so neither a URL nor
    /// a playlist naming other files gets FFmpeg past the roots. The path
    /// must be absolute: resolve it with [`Roots`](super::Roots).
    #[must_use]
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            options: vec![
                "-protocol_whitelist".into(),
                "file".into(),
                "-format_whitelist".into(),
                INPUT_FORMATS.into(),
            ],
            source: Source::File(path.into()),
        }
    }

    /// A concat list the worker wrote itself (`ffconcat version 1.0`,
    /// absolute paths of files it wrote): FFmpeg's `concat` demuxer with
    /// `-safe 0` (the paths are absolute), the `file` protocol only, and
    /// the listed files read by [`INPUT_FORMATS`] demuxers only. Never for
    /// a user's file: [`formats`](super::formats) refuses those.
    #[must_use]
    pub fn concat_list(path: impl Into<PathBuf>) -> Self {
        Self {
            options: vec![
                "-protocol_whitelist".into(),
                "file".into(),
                // The concat demuxer passes the list to the files it opens.
                "-format_whitelist".into(),
                format!("concat,{INPUT_FORMATS}").into(),
                "-f".into(),
                "concat".into(),
                "-safe".into(),
                "0".into(),
            ],
            source: Source::File(path.into()),
        }
    }

    /// A graph of FFmpeg's `lavfi` device (`testsrc2=s=320x240:d=2`), for
    /// generated test media. No protocol is allowed.
    #[must_use]
    pub fn lavfi(graph: impl Into<String>) -> Self {
        Self {
            options: vec!["-f".into(), "lavfi".into()],
            source: Source::Lavfi(graph.into()),
        }
    }

    /// An input option and its value (`-ss`, `1.5`), before `-i`.
    #[must_use]
    pub fn option(mut self, name: &'static str, value: impl ToString) -> Self {
        self.options.push(name.into());
        self.options.push(value.to_string().into());
        self
    }

    /// An input option without a value.
    #[must_use]
    pub fn flag(mut self, name: &'static str) -> Self {
        self.options.push(name.into());
        self
    }
}

/// One FFmpeg output: its maps and options, then the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    maps: Vec<String>,
    options: Vec<OsString>,
    target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    File(PathBuf),
    Null,
    Tee(Vec<TeeSlave>),
}

impl Output {
    /// A file. The path must be absolute: resolve it with
    /// [`Roots`](super::Roots). A muxer that writes several files (HLS,
    /// DASH) names the others from this one and from its options.
    #[must_use]
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            maps: Vec::new(),
            options: Vec::new(),
            target: Target::File(path.into()),
        }
    }

    /// FFmpeg's null muxer (`-f null -`): decode and filter, write nothing.
    #[must_use]
    pub fn null() -> Self {
        Self {
            maps: Vec::new(),
            options: vec!["-f".into(), "null".into()],
            target: Target::Null,
        }
    }

    /// FFmpeg's `tee` muxer (`-f tee`): the same encoded streams written by
    /// each of `slaves` (HLS and DASH from one encode). Each slave's path
    /// must be absolute, like a file's.
    #[must_use]
    pub fn tee(slaves: Vec<TeeSlave>) -> Self {
        Self {
            maps: Vec::new(),
            options: vec!["-f".into(), "tee".into()],
            target: Target::Tee(slaves),
        }
    }

    /// A `-map`: `[v]` (a filtergraph output) or `0:a:0?`.
    #[must_use]
    pub fn map(mut self, spec: impl Into<String>) -> Self {
        self.maps.push(spec.into());
        self
    }

    /// An output option and its value (`-c:v`, `libx264`).
    #[must_use]
    pub fn option(mut self, name: &'static str, value: impl ToString) -> Self {
        self.options.push(name.into());
        self.options.push(value.to_string().into());
        self
    }

    /// An output option whose value is a path (`-hls_segment_filename`);
    /// the path must be absolute and worker-generated.
    #[must_use]
    pub fn option_path(mut self, name: &'static str, path: impl AsRef<Path>) -> Self {
        self.options.push(name.into());
        self.options.push(path.as_ref().as_os_str().to_owned());
        self
    }

    /// An output option without a value (`-an`).
    #[must_use]
    pub fn flag(mut self, name: &'static str) -> Self {
        self.options.push(name.into());
        self
    }

    fn paths(&self) -> Vec<&Path> {
        match &self.target {
            Target::File(path) => vec![path],
            Target::Null => Vec::new(),
            Target::Tee(slaves) => slaves.iter().map(TeeSlave::path).collect(),
        }
    }
}

/// A whole FFmpeg command line, built from typed parts.
///
/// The runner adds `-hide_banner`, `-y`, the log level ffmpeg-sidecar
/// parses and `-stats_period`; `-nostdin` is never set, because a graceful
/// stop writes `q` to FFmpeg's stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FfmpegArgs {
    global: Vec<OsString>,
    inputs: Vec<Input>,
    filter_complex: Option<String>,
    outputs: Vec<Output>,
}

impl FfmpegArgs {
    /// No inputs, no outputs yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A global option before the inputs (`-vaapi_device`, `-threads`).
    #[must_use]
    pub fn global(mut self, name: &'static str, value: impl ToString) -> Self {
        self.global.push(name.into());
        self.global.push(value.to_string().into());
        self
    }

    /// Adds an input; inputs are numbered from 0 in the order added.
    #[must_use]
    pub fn input(mut self, input: Input) -> Self {
        self.inputs.push(input);
        self
    }

    /// Sets the `-filter_complex` graph. Escape any path inside it with
    /// [`escape_filter_value`].
    #[must_use]
    pub fn filter_complex(mut self, graph: impl Into<String>) -> Self {
        self.filter_complex = Some(graph.into());
        self
    }

    /// Adds an output.
    #[must_use]
    pub fn output(mut self, output: Output) -> Self {
        self.outputs.push(output);
        self
    }

    /// The input files, in order (generated inputs left out).
    #[must_use]
    pub fn input_paths(&self) -> Vec<&Path> {
        self.inputs
            .iter()
            .filter_map(|i| match &i.source {
                Source::File(path) => Some(path.as_path()),
                Source::Lavfi(_) => None,
            })
            .collect()
    }

    /// The output files, in order.
    #[must_use]
    pub fn output_paths(&self) -> Vec<&Path> {
        self.outputs.iter().flat_map(Output::paths).collect()
    }

    /// Checks that the command can run safely: at least one input and
    /// output, and absolute file paths (so none reads as a protocol or an
    /// option).
    pub(crate) fn validate(&self) -> Result<(), VideoError> {
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err(VideoError::InvalidTask(
                "an FFmpeg command needs an input and an output".to_owned(),
            ));
        }
        let files = self
            .inputs
            .iter()
            .filter_map(|i| match &i.source {
                Source::File(path) => Some(path.as_path()),
                Source::Lavfi(_) => None,
            })
            .chain(self.output_paths());
        for path in files {
            if !path.is_absolute() {
                return Err(VideoError::InvalidTask(format!(
                    "FFmpeg paths must be absolute (resolved inside the roots): {}",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// The arguments after the runner's own, in FFmpeg's order: global
    /// options, inputs, the filtergraph, outputs.
    #[must_use]
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = self.global.clone();
        for input in &self.inputs {
            args.extend(input.options.iter().cloned());
            args.push("-i".into());
            args.push(match &input.source {
                Source::File(path) => path.as_os_str().to_owned(),
                Source::Lavfi(graph) => graph.into(),
            });
        }
        if let Some(graph) = &self.filter_complex {
            args.push("-filter_complex".into());
            args.push(graph.into());
        }
        for output in &self.outputs {
            for map in &output.maps {
                args.push("-map".into());
                args.push(map.into());
            }
            args.extend(output.options.iter().cloned());
            args.push(match &output.target {
                Target::File(path) => path.as_os_str().to_owned(),
                Target::Null => "-".into(),
                Target::Tee(slaves) => tee_target(slaves),
            });
        }
        args
    }
}

/// Escapes `value` for use as an option value inside a filtergraph
/// (`log_path=…`): first for the filter's option parser (`\ ' :`), then
/// for the graph parser (`\ ' [ ] , ;`).
///
/// # Examples
///
/// ```
/// use spool_video::escape_filter_value;
///
/// assert_eq!(escape_filter_value("/tmp/a:b"), r"/tmp/a\\:b");
/// assert_eq!(escape_filter_value("/tmp/plain.json"), "/tmp/plain.json");
/// ```
#[must_use]
pub fn escape_filter_value(value: &str) -> String {
    let escape = |text: &str, special: &[char]| {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if special.contains(&c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    let option_level = escape(value, &['\\', '\'', ':']);
    escape(&option_level, &['\\', '\'', '[', ']', ',', ';'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FfmpegRunner;

    #[test]
    fn arguments_are_ordered() {
        let args = FfmpegArgs::new()
            .global("-threads", 2)
            .input(Input::file("/in/a.mp4").option("-ss", 1.5))
            .filter_complex("[0:v]null[v]")
            .output(
                Output::file("/out/b.mp4")
                    .map("[v]")
                    .option("-c:v", "libx264")
                    .flag("-an"),
            );
        let line: Vec<String> = FfmpegRunner::new("ffmpeg")
            .command_line(&args)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let expected = [
            "-loglevel",
            "level+info",
            "-hide_banner",
            "-y",
            "-stats_period",
            "0.500",
            "-threads",
            "2",
            "-protocol_whitelist",
            "file",
            "-format_whitelist",
            INPUT_FORMATS,
            "-ss",
            "1.5",
            "-i",
            "/in/a.mp4",
            "-filter_complex",
            "[0:v]null[v]",
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-an",
            "/out/b.mp4",
        ];
        assert_eq!(line, expected);
        assert!(!line.iter().any(|a| a == "-nostdin"));
        assert!(args.validate().is_ok());
        assert_eq!(args.output_paths(), vec![Path::new("/out/b.mp4")]);
    }

    #[test]
    fn relative_paths_are_refused() {
        let args = FfmpegArgs::new()
            .input(Input::file("a.mp4"))
            .output(Output::null());
        assert!(matches!(args.validate(), Err(VideoError::InvalidTask(_))));
        let lavfi = FfmpegArgs::new()
            .input(Input::lavfi("testsrc2=d=1"))
            .output(Output::null());
        assert!(lavfi.validate().is_ok());
        assert!(FfmpegArgs::new().output(Output::null()).validate().is_err());
    }

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(escape_filter_value("a'b"), r"a\\\'b");
        assert_eq!(escape_filter_value("x[1],y;z"), r"x\[1\]\,y\;z");
        assert_eq!(escape_filter_value(r"c:\d"), r"c\\:\\\\d");
    }
}

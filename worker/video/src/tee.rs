//! FFmpeg's `tee` muxer: the same encoded streams written by several
//! muxers, so one encode feeds both HLS and DASH.
//!
//! Two outputs of one FFmpeg run would each encode their own copy of every
//! stream (an output cannot take another output's encoded packets); the
//! `tee` pseudo-muxer takes the packets once and hands them to each of its
//! muxers (its "slaves"). `spool-ladder-bench` measures the difference: on
//! a four-rung ladder, two outputs cost twice the CPU of one `tee`.
//!
//! The slave list is one argument, parsed by FFmpeg twice: it is split at
//! `|` (first unescaping), then each slave's `[key=value:…]` options are
//! split at `:` and `]` (second unescaping). Option values are escaped for
//! both levels and file names for the first, so a path with `:`, `|`,
//! quotes or spaces reaches the muxer intact.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// One muxer of a `tee` output: its format, options and file.
///
/// # Examples
///
/// ```
/// use spool_video::TeeSlave;
///
/// let dash = TeeSlave::new("dash", "/srv/out/dash/manifest.mpd").option("seg_duration", 4);
/// assert_eq!(
///     dash.spec(),
///     "[f=dash:protocol_whitelist=file:seg_duration=4]/srv/out/dash/manifest.mpd"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeeSlave {
    format: &'static str,
    options: Vec<(&'static str, String)>,
    path: PathBuf,
}

impl TeeSlave {
    /// A slave writing `path` (absolute, worker-generated) with the muxer
    /// `format` (`hls`, `dash`), through the `file` protocol only.
    ///
    /// The whitelist is the slave's own option: a slave does not inherit
    /// the `tee` output's `-protocol_whitelist` (FFmpeg 9 opens the
    /// slave's files, segments included, with the slave's settings).
    #[must_use]
    pub fn new(format: &'static str, path: impl Into<PathBuf>) -> Self {
        Self {
            format,
            options: vec![("protocol_whitelist", "file".to_owned())],
            path: path.into(),
        }
    }

    /// A muxer option (`hls_time`, `4`), without the leading `-`.
    #[must_use]
    pub fn option(mut self, name: &'static str, value: impl ToString) -> Self {
        self.options.push((name, value.to_string()));
        self
    }

    /// The file it writes.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This slave in the `tee` muxer's syntax, escaped for both of its
    /// parsers: `[f=hls:hls_time=4]/srv/out/hls/%v.m3u8`.
    #[must_use]
    pub fn spec(&self) -> String {
        let mut spec = format!("[f={}", self.format);
        for (name, value) in &self.options {
            spec.push(':');
            spec.push_str(name);
            spec.push('=');
            spec.push_str(&escape(&escape(value, &[':', ']']), &['|']));
        }
        spec.push(']');
        spec.push_str(&escape(&self.path.to_string_lossy(), &['|']));
        spec
    }
}

/// The `tee` muxer's target argument: every slave's spec, joined by `|`.
#[must_use]
pub(crate) fn tee_target(slaves: &[TeeSlave]) -> OsString {
    slaves
        .iter()
        .map(TeeSlave::spec)
        .collect::<Vec<_>>()
        .join("|")
        .into()
}

/// Backslash-escapes `\`, `'`, whitespace and `special`: what FFmpeg's
/// `av_get_token` unescapes.
fn escape(text: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' || c == '\'' || c.is_whitespace() || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_are_escaped_twice_and_paths_once() {
        let hls = TeeSlave::new("hls", "/out/a b|c/%v.m3u8")
            .option("var_stream_map", "v:0,a:0,name:720p v:1,a:1,name:360p")
            .option("hls_segment_filename", "/out/it's/%v_%05d.ts");
        assert_eq!(
            hls.spec(),
            r"[f=hls:protocol_whitelist=file:var_stream_map=v\\:0,a\\:0,name\\:720p\\\ v\\:1,a\\:1,name\\:360p:hls_segment_filename=/out/it\\\'s/%v_%05d.ts]/out/a\ b\|c/%v.m3u8"
        );
    }

    #[test]
    fn slaves_are_joined_with_bars() {
        let target = tee_target(&[
            TeeSlave::new("hls", "/o/hls/%v.m3u8").option("hls_time", 4),
            TeeSlave::new("dash", "/o/dash/manifest.mpd")
                .option("adaptation_sets", "id=0,streams=v id=1,streams=a"),
        ]);
        assert_eq!(
            target,
            r"[f=hls:protocol_whitelist=file:hls_time=4]/o/hls/%v.m3u8|[f=dash:protocol_whitelist=file:adaptation_sets=id=0,streams=v\\\ id=1,streams=a]/o/dash/manifest.mpd"
        );
    }
}

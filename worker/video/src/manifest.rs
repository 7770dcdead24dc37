//! Validates a packaged output after FFmpeg wrote it: the HLS master
//! playlist and its media playlists, the DASH MPD, and every segment they
//! name. A package that a player would choke on fails its job here, not in
//! a viewer's browser.
//!
//! Parsing is pure (`hls`, `dash`: text in, structure out); the checks here
//! read the files the manifests name and compare them with what was asked
//! for: every rendition listed, every segment present and non-empty, the
//! playlists complete, the durations and segment counts consistent with the
//! source's duration.

pub mod dash;
pub mod hls;

use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::VideoError;

/// The error for a package that is incomplete or inconsistent.
fn invalid(file: &Path, problem: impl fmt::Display) -> VideoError {
    VideoError::Validation {
        path: file.to_owned(),
        message: problem.to_string(),
    }
}

/// What the package should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// The source's duration, in seconds.
    pub duration: f64,
    /// The target segment duration, in seconds.
    pub segment_duration: f64,
    /// The video renditions' sizes (width, height), one per rendition.
    pub sizes: Vec<(u32, u32)>,
    /// Whether the renditions carry audio.
    pub audio: bool,
    /// How far a rendition's duration may stray from the source's, in
    /// seconds: segments end on frame and AAC frame boundaries, never
    /// exactly where the source ends (the worker uses
    /// [`VideoConfig::tolerance_for`](super::VideoConfig::tolerance_for)).
    pub tolerance: f64,
}

impl Expected {
    /// The segment count a rendition should have: the duration over the
    /// segment duration, rounded up.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        // A thousandth of slack: 8.0004 s in 4 s segments is two, not three.
        let count = (self.duration / self.segment_duration - 1e-3).ceil();
        if count.is_finite() && count >= 1.0 {
            count as usize
        } else {
            1
        }
    }

    /// Checks a rendition's segment count and total duration. A count one
    /// off is accepted: FFmpeg cuts only on keyframes (video) or AAC frames
    /// (audio), so the last cut may fall just past a boundary and leave a
    /// sliver segment.
    fn check_timing(&self, what: &str, segments: usize, duration: f64) -> Result<(), String> {
        let expected = self.segment_count();
        if segments.abs_diff(expected) > 1 {
            return Err(format!(
                "{what} has {segments} segments; {:.3} s in {:.3} s segments should give {expected}",
                self.duration, self.segment_duration
            ));
        }
        if (duration - self.duration).abs() > self.tolerance {
            return Err(format!(
                "{what} lasts {duration:.3} s, the source {:.3} s",
                self.duration
            ));
        }
        Ok(())
    }
}

/// A valid HLS package.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsPackage {
    /// The master playlist.
    pub master: PathBuf,
    /// Its variants, in playlist order.
    pub variants: Vec<HlsVariant>,
}

/// One variant of a valid HLS package.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsVariant {
    /// Its media playlist.
    pub playlist: PathBuf,
    /// `BANDWIDTH` from the master playlist: peak bits per second.
    pub bandwidth: u64,
    /// `RESOLUTION` from the master playlist.
    pub width: u32,
    /// `RESOLUTION` from the master playlist.
    pub height: u32,
    /// How many segments it has.
    pub segments: usize,
    /// The sum of its segments' durations, in seconds.
    pub duration: f64,
}

/// Validates an HLS package from its master playlist.
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
/// use spool_video::manifest::{Expected, check_hls};
///
/// let expected = Expected {
///     duration: 10.0,
///     segment_duration: 4.0,
///     sizes: vec![(1280, 720), (640, 360)],
///     audio: true,
///     tolerance: 0.7,
/// };
/// let package = check_hls(Path::new("/srv/out/cat/hls/master.m3u8"), &expected)?;
/// for variant in &package.variants {
///     println!("{}x{}: {} segments", variant.width, variant.height, variant.segments);
/// }
/// # Ok::<(), spool_video::VideoError>(())
/// ```
///
/// # Errors
///
/// [`VideoError::Validation`] naming the file and the problem: a playlist missing
/// or unparsable, a variant without `BANDWIDTH` or `RESOLUTION`, a rendition
/// in `expected` that no variant has, a media playlist without
/// `#EXT-X-ENDLIST`, a segment longer than the target duration, missing or
/// empty, or a segment count or duration that does not match the source.
pub fn check_hls(master: &Path, expected: &Expected) -> Result<HlsPackage, VideoError> {
    let text = read_text(master)?;
    let playlist = hls::parse_master(&text).map_err(|e| invalid(master, e))?;
    let dir = parent_dir(master);
    let mut variants = Vec::with_capacity(playlist.variants.len());
    for variant in &playlist.variants {
        let (width, height) = variant
            .resolution
            .ok_or_else(|| invalid(master, format!("variant {} has no RESOLUTION", variant.uri)))?;
        if variant.bandwidth == 0 {
            return Err(invalid(
                master,
                format!("variant {} has BANDWIDTH=0", variant.uri),
            ));
        }
        let media_path = resolve(master, dir, &variant.uri)?;
        let media = check_media_playlist(&media_path, expected)?;
        variants.push(HlsVariant {
            playlist: media_path,
            bandwidth: variant.bandwidth,
            width,
            height,
            segments: media.segments.len(),
            duration: media.duration(),
        });
    }
    for uri in &playlist.media_uris {
        check_media_playlist(&resolve(master, dir, uri)?, expected)?;
    }
    let listed = variants
        .iter()
        .map(|variant| (variant.width, variant.height))
        .collect::<Vec<_>>();
    check_sizes(master, "variant", &listed, &expected.sizes)?;
    Ok(HlsPackage {
        master: master.to_owned(),
        variants,
    })
}

fn check_media_playlist(
    path: &Path,
    expected: &Expected,
) -> Result<hls::MediaPlaylist, VideoError> {
    let text = read_text(path)?;
    let media = hls::parse_media(&text).map_err(|e| invalid(path, e))?;
    if !media.ended {
        return Err(invalid(
            path,
            "no #EXT-X-ENDLIST: the playlist is incomplete",
        ));
    }
    let dir = parent_dir(path);
    if let Some(uri) = &media.map_uri {
        check_segment_file(path, &resolve(path, dir, uri)?)?;
    }
    for segment in &media.segments {
        // RFC 8216 4.3.3.1: each EXTINF, rounded, is at most the target.
        if segment.duration.round() > media.target_duration as f64 {
            return Err(invalid(
                path,
                format!(
                    "segment {} lasts {:.3} s, over #EXT-X-TARGETDURATION {}",
                    segment.uri, segment.duration, media.target_duration
                ),
            ));
        }
        check_segment_file(path, &resolve(path, dir, &segment.uri)?)?;
    }
    expected
        .check_timing("the playlist", media.segments.len(), media.duration())
        .map_err(|e| invalid(path, e))?;
    Ok(media)
}

/// A valid DASH package.
#[derive(Debug, Clone, PartialEq)]
pub struct DashPackage {
    /// The MPD.
    pub mpd: PathBuf,
    /// Every representation, video first, in MPD order.
    pub representations: Vec<DashRepresentation>,
}

/// One representation of a valid DASH package.
#[derive(Debug, Clone, PartialEq)]
pub struct DashRepresentation {
    /// Its `id`.
    pub id: String,
    /// Whether it is video (else audio).
    pub video: bool,
    /// `bandwidth`, in bits per second.
    pub bandwidth: u64,
    /// `width`, for video.
    pub width: Option<u32>,
    /// `height`, for video.
    pub height: Option<u32>,
    /// How many media segments it has.
    pub segments: usize,
    /// Their total duration, in seconds.
    pub duration: f64,
}

/// Validates a DASH package from its MPD.
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
/// use spool_video::manifest::{Expected, check_dash};
///
/// let expected = Expected {
///     duration: 10.0,
///     segment_duration: 4.0,
///     sizes: vec![(1280, 720), (640, 360)],
///     audio: true,
///     tolerance: 0.7,
/// };
/// let package = check_dash(Path::new("/srv/out/cat/dash/manifest.mpd"), &expected)?;
/// assert_eq!(package.representations.iter().filter(|r| r.video).count(), 2);
/// # Ok::<(), spool_video::VideoError>(())
/// ```
///
/// # Errors
///
/// [`VideoError::Validation`] naming the file and the problem: the MPD missing or
/// unparsable, a rendition in `expected` without its video representation,
/// a video representation without width, height or bandwidth, audio
/// missing or unexpected, an initialisation or media segment missing or
/// empty, or a segment count or duration that does not match the source.
pub fn check_dash(mpd_path: &Path, expected: &Expected) -> Result<DashPackage, VideoError> {
    let text = read_text(mpd_path)?;
    let mpd = dash::parse_mpd(&text).map_err(|e| invalid(mpd_path, e))?;
    if let Some(duration) = mpd.duration
        && (duration - expected.duration).abs() > expected.tolerance
    {
        return Err(invalid(
            mpd_path,
            format!(
                "mediaPresentationDuration is {duration:.3} s, the source {:.3} s",
                expected.duration
            ),
        ));
    }
    let dir = parent_dir(mpd_path);
    let mut representations = Vec::new();
    for set in &mpd.adaptation_sets {
        for rep in &set.representations {
            let video = match rep.content_type.as_deref() {
                Some("video") => true,
                Some("audio") => false,
                other => {
                    return Err(invalid(
                        mpd_path,
                        format!("representation {} has content type {other:?}", rep.id),
                    ));
                }
            };
            if video && (rep.width.is_none() || rep.height.is_none()) {
                return Err(invalid(
                    mpd_path,
                    format!("video representation {} has no width or height", rep.id),
                ));
            }
            let init = rep.initialization.as_deref().ok_or_else(|| {
                invalid(
                    mpd_path,
                    format!("representation {} has no initialization segment", rep.id),
                )
            })?;
            check_segment_file(mpd_path, &resolve(mpd_path, dir, init)?)?;
            for segment in &rep.segments {
                check_segment_file(mpd_path, &resolve(mpd_path, dir, segment)?)?;
            }
            expected
                .check_timing(
                    &format!("representation {}", rep.id),
                    rep.segments.len(),
                    rep.duration,
                )
                .map_err(|e| invalid(mpd_path, e))?;
            representations.push(DashRepresentation {
                id: rep.id.clone(),
                video,
                bandwidth: rep.bandwidth,
                width: rep.width,
                height: rep.height,
                segments: rep.segments.len(),
                duration: rep.duration,
            });
        }
    }
    representations.sort_by_key(|rep| !rep.video);
    let listed = representations
        .iter()
        .filter_map(|rep| Some((rep.width?, rep.height?)))
        .collect::<Vec<_>>();
    check_sizes(mpd_path, "video representation", &listed, &expected.sizes)?;
    let has_audio = representations.iter().any(|rep| !rep.video);
    if has_audio != expected.audio {
        return Err(invalid(
            mpd_path,
            if expected.audio {
                "no audio representation, but the source has audio"
            } else {
                "an audio representation, but the source has none"
            },
        ));
    }
    Ok(DashPackage {
        mpd: mpd_path.to_owned(),
        representations,
    })
}

/// Every expected size listed exactly once, and nothing else.
fn check_sizes(
    file: &Path,
    what: &str,
    listed: &[(u32, u32)],
    expected: &[(u32, u32)],
) -> Result<(), VideoError> {
    let show = |sizes: &[(u32, u32)]| {
        sizes
            .iter()
            .map(|(w, h)| format!("{w}x{h}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut listed_sorted = listed.to_vec();
    let mut expected_sorted = expected.to_vec();
    listed_sorted.sort_unstable();
    expected_sorted.sort_unstable();
    if listed_sorted == expected_sorted {
        Ok(())
    } else {
        Err(invalid(
            file,
            format!(
                "lists {what}s [{}], expected [{}]",
                show(listed),
                show(expected)
            ),
        ))
    }
}

fn read_text(path: &Path) -> Result<String, VideoError> {
    std::fs::read_to_string(path).map_err(|e| invalid(path, format!("cannot read: {e}")))
}

fn parent_dir(path: &Path) -> &Path {
    path.parent().unwrap_or_else(|| Path::new("."))
}

/// The file a manifest's relative URI names, in `dir` or below it. A URL,
/// an absolute path or a `..` is refused: every file of a package lies
/// beside or under its manifest.
fn resolve(manifest: &Path, dir: &Path, uri: &str) -> Result<PathBuf, VideoError> {
    let relative = Path::new(uri);
    let escapes = uri.is_empty()
        || uri.contains("://")
        || relative
            .components()
            .any(|part| !matches!(part, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(invalid(
            manifest,
            format!("URI {uri:?} does not name a file beside the manifest"),
        ));
    }
    Ok(dir.join(relative))
}

fn check_segment_file(manifest: &Path, file: &Path) -> Result<(), VideoError> {
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_file() && meta.len() > 0 => Ok(()),
        Ok(meta) if meta.is_file() => {
            Err(invalid(manifest, format!("{} is empty", file.display())))
        }
        Ok(_) => Err(invalid(
            manifest,
            format!("{} is not a file", file.display()),
        )),
        Err(e) => Err(invalid(
            manifest,
            format!("{} is missing: {e}", file.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A validation error's file and problem.
    struct Failure {
        file: PathBuf,
        problem: String,
    }

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}: {}", self.file.display(), self.problem)
        }
    }

    fn failure<T: fmt::Debug>(result: Result<T, VideoError>) -> Failure {
        match result {
            Err(VideoError::Validation { path, message }) => Failure {
                file: path,
                problem: message,
            },
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "spool-manifest-{}-{:016x}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn expected(duration: f64, sizes: &[(u32, u32)], audio: bool) -> Expected {
        Expected {
            duration,
            segment_duration: 4.0,
            sizes: sizes.to_vec(),
            audio,
            tolerance: 0.5 + duration * 0.02,
        }
    }

    fn media_playlist(name: &str, durations: &[f64]) -> String {
        let mut text = String::from(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n",
        );
        for (index, duration) in durations.iter().enumerate() {
            text.push_str(&format!("#EXTINF:{duration:.6},\n{name}_{index:05}.ts\n"));
        }
        text.push_str("#EXT-X-ENDLIST\n");
        text
    }

    /// A two-variant HLS package of 10 s in 4 s segments, on disk.
    fn hls_package(scratch: &Scratch) -> PathBuf {
        for name in ["720p", "360p"] {
            scratch.write(
                &format!("{name}.m3u8"),
                &media_playlist(name, &[4.0, 4.0, 2.0]),
            );
            for index in 0..3 {
                scratch.write(&format!("{name}_{index:05}.ts"), "segment");
            }
        }
        scratch.write(
            "master.m3u8",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720\n720p.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360\n360p.m3u8\n",
        )
    }

    #[test]
    fn a_complete_hls_package_passes() {
        let scratch = Scratch::new();
        let master = hls_package(&scratch);
        let package =
            check_hls(&master, &expected(10.0, &[(1280, 720), (640, 360)], true)).unwrap();
        assert_eq!(package.variants.len(), 2);
        assert_eq!(package.variants[0].segments, 3);
        assert_eq!(package.variants[1].bandwidth, 900_000);
        assert!((package.variants[1].duration - 10.0).abs() < 1e-9);
        assert_eq!(package.variants[0].playlist, scratch.0.join("720p.m3u8"));
    }

    #[test]
    fn hls_problems_fail_with_the_file_and_reason() {
        let scratch = Scratch::new();
        let master = hls_package(&scratch);
        let sizes = [(1280, 720), (640, 360)];

        let missing_rung = failure(check_hls(
            &master,
            &expected(10.0, &[(1920, 1080), (1280, 720), (640, 360)], true),
        ));
        assert!(
            missing_rung.problem.contains("expected [1920x1080"),
            "{missing_rung}"
        );

        let wrong_duration = failure(check_hls(&master, &expected(20.0, &sizes, true)));
        assert!(
            wrong_duration.problem.contains("should give 5"),
            "{wrong_duration}"
        );
        assert_eq!(wrong_duration.file, scratch.0.join("720p.m3u8"));

        std::fs::write(scratch.0.join("360p_00001.ts"), "").unwrap();
        let empty = failure(check_hls(&master, &expected(10.0, &sizes, true)));
        assert!(empty.problem.ends_with("360p_00001.ts is empty"), "{empty}");

        std::fs::remove_file(scratch.0.join("360p_00001.ts")).unwrap();
        let missing = failure(check_hls(&master, &expected(10.0, &sizes, true)));
        assert!(
            missing.problem.contains("360p_00001.ts is missing"),
            "{missing}"
        );

        scratch.write(
            "360p.m3u8",
            &media_playlist("360p", &[4.0, 4.0, 2.0]).replace("#EXT-X-ENDLIST\n", ""),
        );
        let live = failure(check_hls(&master, &expected(10.0, &sizes, true)));
        assert!(live.problem.contains("no #EXT-X-ENDLIST"), "{live}");

        scratch.write("360p.m3u8", &media_playlist("360p", &[6.0, 4.0]));
        let long = failure(check_hls(&master, &expected(10.0, &sizes, true)));
        assert!(
            long.problem.contains("over #EXT-X-TARGETDURATION 4"),
            "{long}"
        );

        std::fs::remove_file(scratch.0.join("360p.m3u8")).unwrap();
        let no_playlist = failure(check_hls(&master, &expected(10.0, &sizes, true)));
        assert_eq!(no_playlist.file, scratch.0.join("360p.m3u8"));
        assert!(no_playlist.problem.contains("cannot read"), "{no_playlist}");
    }

    #[test]
    fn uris_outside_the_package_are_refused() {
        let scratch = Scratch::new();
        for uri in [
            "../other/x.ts",
            "/etc/passwd",
            "https://cdn.example/x.ts",
            "",
        ] {
            let error = failure(resolve(Path::new("m.m3u8"), &scratch.0, uri));
            assert!(
                error.problem.contains("does not name a file"),
                "{uri}: {error}"
            );
        }
        assert_eq!(
            resolve(Path::new("m.m3u8"), &scratch.0, "./a/b.ts").unwrap(),
            scratch.0.join("./a/b.ts")
        );
    }

    const MPD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT10.0S">
  <Period id="0" start="PT0.0S">
    <AdaptationSet id="0" contentType="video">
      <Representation id="0" mimeType="video/mp4" bandwidth="2800000" width="1280" height="720">
        <SegmentTemplate timescale="15360" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1">
          <SegmentTimeline><S t="0" d="61440" r="1" /><S d="30720" /></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio">
      <Representation id="1" mimeType="audio/mp4" bandwidth="128000">
        <SegmentTemplate timescale="48000" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1">
          <SegmentTimeline><S t="0" d="191488" /><S d="192512" /><S d="96000" /></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

    fn dash_package(scratch: &Scratch) -> PathBuf {
        for rep in 0..2 {
            scratch.write(&format!("init-stream{rep}.m4s"), "init");
            for number in 1..=3 {
                scratch.write(&format!("chunk-stream{rep}-{number:05}.m4s"), "media");
            }
        }
        scratch.write("manifest.mpd", MPD)
    }

    #[test]
    fn a_complete_dash_package_passes() {
        let scratch = Scratch::new();
        let mpd = dash_package(&scratch);
        let package = check_dash(&mpd, &expected(10.0, &[(1280, 720)], true)).unwrap();
        assert_eq!(package.representations.len(), 2);
        let video = &package.representations[0];
        assert!(video.video);
        assert_eq!(
            (video.width, video.height, video.segments),
            (Some(1280), Some(720), 3)
        );
        assert!(!package.representations[1].video);
    }

    #[test]
    fn dash_problems_fail_with_the_file_and_reason() {
        let scratch = Scratch::new();
        let mpd = dash_package(&scratch);
        let sizes = [(1280, 720)];

        let no_audio_expected = failure(check_dash(&mpd, &expected(10.0, &sizes, false)));
        assert!(
            no_audio_expected.problem.contains("the source has none"),
            "{no_audio_expected}"
        );

        let other_size = failure(check_dash(&mpd, &expected(10.0, &[(640, 360)], true)));
        assert!(
            other_size
                .problem
                .contains("lists video representations [1280x720], expected [640x360]"),
            "{other_size}"
        );

        let longer = failure(check_dash(&mpd, &expected(30.0, &sizes, true)));
        assert!(
            longer
                .problem
                .contains("mediaPresentationDuration is 10.000 s"),
            "{longer}"
        );

        std::fs::remove_file(scratch.0.join("chunk-stream1-00003.m4s")).unwrap();
        let missing = failure(check_dash(&mpd, &expected(10.0, &sizes, true)));
        assert!(
            missing
                .problem
                .contains("chunk-stream1-00003.m4s is missing"),
            "{missing}"
        );

        std::fs::write(scratch.0.join("init-stream0.m4s"), "").unwrap();
        let empty_init = failure(check_dash(&mpd, &expected(10.0, &sizes, true)));
        assert!(
            empty_init.problem.contains("init-stream0.m4s is empty"),
            "{empty_init}"
        );

        scratch.write("manifest.mpd", &MPD.replace(r#" width="1280""#, ""));
        let no_width = failure(check_dash(&mpd, &expected(10.0, &sizes, true)));
        assert!(
            no_width.problem.contains("no width or height"),
            "{no_width}"
        );
    }

    #[test]
    fn segment_count_rounds_up_with_slack() {
        assert_eq!(expected(10.0, &[], false).segment_count(), 3);
        assert_eq!(expected(8.0004, &[], false).segment_count(), 2);
        assert_eq!(expected(8.1, &[], false).segment_count(), 3);
        assert_eq!(expected(0.5, &[], false).segment_count(), 1);
        assert_eq!(expected(0.0, &[], false).segment_count(), 1);
        let e = expected(10.0, &[], false);
        assert!(e.check_timing("x", 4, 10.2).is_ok());
        assert!(e.check_timing("x", 2, 10.0).is_ok());
        assert!(e.check_timing("x", 5, 10.0).is_err());
        assert!(e.check_timing("x", 3, 9.0).is_err());
    }
}

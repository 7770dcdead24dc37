//! HLS playlists (RFC 8216): the master playlist's variants and each media
//! playlist's segments, parsed from text.

/// A master playlist: the variants a player chooses from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MasterPlaylist {
    /// `#EXT-X-STREAM-INF` entries, in playlist order.
    pub variants: Vec<VariantStream>,
    /// URIs of `#EXT-X-MEDIA` renditions (audio groups, say) that have one.
    pub media_uris: Vec<String>,
}

/// One `#EXT-X-STREAM-INF` entry and the URI on the line after it.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantStream {
    /// The media playlist's URI, relative to the master playlist.
    pub uri: String,
    /// `BANDWIDTH`: peak bits per second.
    pub bandwidth: u64,
    /// `RESOLUTION`: width and height, if given.
    pub resolution: Option<(u32, u32)>,
    /// `CODECS`, if given.
    pub codecs: Option<String>,
    /// `FRAME-RATE`, if given.
    pub frame_rate: Option<f64>,
}

/// A media playlist: the segments of one variant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylist {
    /// `#EXT-X-TARGETDURATION`, in seconds.
    pub target_duration: u64,
    /// The segments in order.
    pub segments: Vec<MediaSegment>,
    /// The `#EXT-X-MAP` URI (fragmented MP4 initialisation), if any.
    pub map_uri: Option<String>,
    /// Whether `#EXT-X-ENDLIST` is present: the playlist is complete.
    pub ended: bool,
}

impl MediaPlaylist {
    /// The sum of the segments' `#EXTINF` durations, in seconds.
    #[must_use]
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|segment| segment.duration).sum()
    }
}

/// One segment: its `#EXTINF` duration and URI.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSegment {
    /// Its URI, relative to the media playlist.
    pub uri: String,
    /// Its `#EXTINF` duration in seconds.
    pub duration: f64,
}

/// Lines that are neither blank nor comments (`#` not followed by `EXT`).
fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| {
            !line.is_empty() && (!line.starts_with('#') || line.starts_with("#EXT"))
        })
}

fn check_header(text: &str) -> Result<(), String> {
    match meaningful_lines(text).next() {
        Some((_, "#EXTM3U")) => Ok(()),
        _ => Err("not a playlist: the first line is not #EXTM3U".to_owned()),
    }
}

/// Parses a master playlist.
///
/// # Examples
///
/// ```
/// use spool_video::manifest::hls::parse_master;
///
/// let master = parse_master(
///     "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=942632,RESOLUTION=640x360\n360p.m3u8\n",
/// )?;
/// assert_eq!(master.variants[0].uri, "360p.m3u8");
/// assert_eq!(master.variants[0].resolution, Some((640, 360)));
/// # Ok::<(), String>(())
/// ```
///
/// # Errors
///
/// A problem in words, with its line number, when the text is not a master
/// playlist or a variant lacks its URI or `BANDWIDTH`.
pub fn parse_master(text: &str) -> Result<MasterPlaylist, String> {
    check_header(text)?;
    let mut playlist = MasterPlaylist::default();
    let mut pending: Option<(usize, Vec<(String, String)>)> = None;
    for (line_no, line) in meaningful_lines(text) {
        if let Some(attributes) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            if pending.is_some() {
                return Err(format!(
                    "line {line_no}: #EXT-X-STREAM-INF without a URI before it"
                ));
            }
            pending = Some((line_no, parse_attributes(attributes)));
        } else if let Some(attributes) = line.strip_prefix("#EXT-X-MEDIA:") {
            if let Some(uri) = attribute(&parse_attributes(attributes), "URI") {
                playlist.media_uris.push(uri.to_owned());
            }
        } else if line.starts_with("#EXTINF") {
            return Err(format!(
                "line {line_no}: #EXTINF in a master playlist (is it a media playlist?)"
            ));
        } else if !line.starts_with('#') {
            let Some((tag_line, attributes)) = pending.take() else {
                return Err(format!(
                    "line {line_no}: URI {line:?} without #EXT-X-STREAM-INF"
                ));
            };
            let bandwidth = attribute(&attributes, "BANDWIDTH")
                .ok_or_else(|| format!("line {tag_line}: variant without BANDWIDTH"))?
                .parse::<u64>()
                .map_err(|e| format!("line {tag_line}: BANDWIDTH: {e}"))?;
            let resolution = attribute(&attributes, "RESOLUTION")
                .map(|value| {
                    parse_resolution(value).ok_or_else(|| {
                        format!("line {tag_line}: RESOLUTION {value:?} is not WIDTHxHEIGHT")
                    })
                })
                .transpose()?;
            playlist.variants.push(VariantStream {
                uri: line.to_owned(),
                bandwidth,
                resolution,
                codecs: attribute(&attributes, "CODECS").map(str::to_owned),
                frame_rate: attribute(&attributes, "FRAME-RATE").and_then(|v| v.parse().ok()),
            });
        }
    }
    if let Some((tag_line, _)) = pending {
        return Err(format!(
            "line {tag_line}: #EXT-X-STREAM-INF without a URI after it"
        ));
    }
    if playlist.variants.is_empty() {
        return Err("no #EXT-X-STREAM-INF variant".to_owned());
    }
    Ok(playlist)
}

/// `text`, a master playlist, with `FRAME-RATE` (3 decimals, as RFC 8216
/// asks) added to every `#EXT-X-STREAM-INF` that lacks it: FFmpeg's HLS
/// muxer leaves it out when its streams come through `tee`, and players
/// then guess (one guessed 10 fps for 360p).
///
/// # Examples
///
/// ```
/// use spool_video::manifest::hls::with_frame_rate;
///
/// let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000,RESOLUTION=640x360\n360p.m3u8\n";
/// assert_eq!(
///     with_frame_rate(master, 30000.0 / 1001.0),
///     "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000,RESOLUTION=640x360,FRAME-RATE=29.970\n360p.m3u8\n"
/// );
/// ```
#[must_use]
pub fn with_frame_rate(text: &str, fps: f64) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let end = &line[body.len()..];
        if body.starts_with("#EXT-X-STREAM-INF:") && !body.contains("FRAME-RATE=") {
            out.push_str(body);
            out.push_str(&format!(",FRAME-RATE={fps:.3}"));
            out.push_str(end);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Parses a media playlist.
///
/// # Examples
///
/// ```
/// use spool_video::manifest::hls::parse_media;
///
/// let media = parse_media(
///     "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\na_0.ts\n#EXTINF:1.5,\na_1.ts\n#EXT-X-ENDLIST\n",
/// )?;
/// assert_eq!(media.segments.len(), 2);
/// assert_eq!(media.duration(), 5.5);
/// assert!(media.ended);
/// # Ok::<(), String>(())
/// ```
///
/// # Errors
///
/// A problem in words, with its line number, when the text is not a media
/// playlist, lacks `#EXT-X-TARGETDURATION`, or a segment lacks its
/// `#EXTINF` or URI.
pub fn parse_media(text: &str) -> Result<MediaPlaylist, String> {
    check_header(text)?;
    let mut playlist = MediaPlaylist::default();
    let mut target_duration = None;
    let mut pending: Option<(usize, f64)> = None;
    for (line_no, line) in meaningful_lines(text) {
        if let Some(value) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target_duration = Some(
                value
                    .parse::<u64>()
                    .map_err(|e| format!("line {line_no}: #EXT-X-TARGETDURATION: {e}"))?,
            );
        } else if let Some(value) = line.strip_prefix("#EXTINF:") {
            if pending.is_some() {
                return Err(format!("line {line_no}: #EXTINF without a URI before it"));
            }
            let seconds = value.split(',').next().unwrap_or_default().trim();
            let duration = seconds
                .parse::<f64>()
                .ok()
                .filter(|d| d.is_finite() && *d >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "line {line_no}: #EXTINF duration {seconds:?} is not a number of seconds"
                    )
                })?;
            pending = Some((line_no, duration));
        } else if let Some(attributes) = line.strip_prefix("#EXT-X-MAP:") {
            let uri = attribute(&parse_attributes(attributes), "URI")
                .map(str::to_owned)
                .ok_or_else(|| format!("line {line_no}: #EXT-X-MAP without URI"))?;
            playlist.map_uri = Some(uri);
        } else if line == "#EXT-X-ENDLIST" {
            playlist.ended = true;
        } else if line.starts_with("#EXT-X-STREAM-INF") {
            return Err(format!(
                "line {line_no}: #EXT-X-STREAM-INF in a media playlist (is it a master playlist?)"
            ));
        } else if !line.starts_with('#') {
            let Some((_, duration)) = pending.take() else {
                return Err(format!("line {line_no}: segment {line:?} without #EXTINF"));
            };
            playlist.segments.push(MediaSegment {
                uri: line.to_owned(),
                duration,
            });
        }
    }
    if let Some((tag_line, _)) = pending {
        return Err(format!("line {tag_line}: #EXTINF without a URI after it"));
    }
    playlist.target_duration =
        target_duration.ok_or_else(|| "no #EXT-X-TARGETDURATION".to_owned())?;
    Ok(playlist)
}

/// An attribute's value by name.
fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Splits an attribute list (`A=1,B="x,y",C=2`): commas inside quoted
/// strings do not separate, and quotes are removed.
fn parse_attributes(list: &str) -> Vec<(String, String)> {
    let mut attributes = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let Some((key, after_key)) = rest.split_once('=') else {
            break;
        };
        let (value, after_value) = if let Some(quoted) = after_key.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((value, after)) => (value, after),
                None => (quoted, ""),
            }
        } else {
            match after_key.split_once(',') {
                Some((value, after)) => (value, after),
                None => (after_key, ""),
            }
        };
        attributes.push((key.trim().to_owned(), value.to_owned()));
        rest = after_value.trim_start_matches(',').trim_start();
    }
    attributes
}

fn parse_resolution(value: &str) -> Option<(u32, u32)> {
    let (width, height) = value.split_once('x')?;
    Some((width.parse().ok()?, height.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    // What FFmpeg 9's hls muxer writes with var_stream_map and master_pl_name.
    const MASTER: &str = "#EXTM3U
#EXT-X-VERSION:3
#EXT-X-STREAM-INF:BANDWIDTH=3056504,AVERAGE-BANDWIDTH=3056504,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\"
720p.m3u8

#EXT-X-STREAM-INF:BANDWIDTH=942632,AVERAGE-BANDWIDTH=942632,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\"
360p.m3u8
";

    const MEDIA: &str = "#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXTINF:4.000000,
720p_00000.ts
#EXTINF:4.000000,
720p_00001.ts
#EXTINF:2.000000,
720p_00002.ts
#EXT-X-ENDLIST
";

    #[test]
    fn master_lists_variants_with_bandwidth_resolution_and_codecs() {
        let master = parse_master(MASTER).unwrap();
        assert_eq!(master.variants.len(), 2);
        assert_eq!(
            master.variants[0],
            VariantStream {
                uri: "720p.m3u8".into(),
                bandwidth: 3_056_504,
                resolution: Some((1280, 720)),
                codecs: Some("avc1.64001f,mp4a.40.2".into()),
                frame_rate: None,
            }
        );
        assert_eq!(master.variants[1].uri, "360p.m3u8");
        assert_eq!(master.variants[1].resolution, Some((640, 360)));
        assert!(master.media_uris.is_empty());
    }

    #[test]
    fn master_collects_audio_group_uris() {
        let text = "#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"audio\",DEFAULT=YES,URI=\"audio.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360,AUDIO=\"aud\"
360p.m3u8
";
        let master = parse_master(text).unwrap();
        assert_eq!(master.media_uris, ["audio.m3u8"]);
        assert_eq!(master.variants[0].bandwidth, 900_000);
    }

    #[test]
    fn master_errors_name_the_problem() {
        assert!(parse_master("").unwrap_err().contains("#EXTM3U"));
        assert!(
            parse_master("#EXTM3U\n")
                .unwrap_err()
                .contains("no #EXT-X-STREAM-INF")
        );
        let no_bandwidth = "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=640x360\na.m3u8\n";
        assert_eq!(
            parse_master(no_bandwidth).unwrap_err(),
            "line 2: variant without BANDWIDTH"
        );
        let no_uri = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n";
        assert!(
            parse_master(no_uri)
                .unwrap_err()
                .contains("without a URI after it")
        );
        let bad_resolution = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=640\na.m3u8\n";
        assert!(
            parse_master(bad_resolution)
                .unwrap_err()
                .contains("WIDTHxHEIGHT")
        );
        assert!(
            parse_master(MEDIA)
                .unwrap_err()
                .contains("#EXTINF in a master playlist")
        );
    }

    #[test]
    fn media_playlist_segments_and_duration() {
        let media = parse_media(MEDIA).unwrap();
        assert_eq!(media.target_duration, 4);
        assert!(media.ended);
        assert_eq!(media.segments.len(), 3);
        assert_eq!(media.segments[2].uri, "720p_00002.ts");
        assert!((media.duration() - 10.0).abs() < 1e-9);
        assert_eq!(media.map_uri, None);
    }

    #[test]
    fn media_playlist_without_endlist_is_not_ended() {
        let live = MEDIA.replace("#EXT-X-ENDLIST\n", "");
        assert!(!parse_media(&live).unwrap().ended);
    }

    #[test]
    fn media_playlist_reads_fmp4_map() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init_0.mp4\"\n#EXTINF:4.0,\nseg_0.m4s\n#EXT-X-ENDLIST\n";
        let media = parse_media(text).unwrap();
        assert_eq!(media.map_uri.as_deref(), Some("init_0.mp4"));
    }

    #[test]
    fn media_errors_name_the_problem() {
        let no_target = MEDIA.replace("#EXT-X-TARGETDURATION:4\n", "");
        assert_eq!(
            parse_media(&no_target).unwrap_err(),
            "no #EXT-X-TARGETDURATION"
        );
        let orphan = "#EXTM3U\n#EXT-X-TARGETDURATION:4\nseg.ts\n";
        assert!(parse_media(orphan).unwrap_err().contains("without #EXTINF"));
        let bad = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:four,\nseg.ts\n";
        assert!(parse_media(bad).unwrap_err().contains("line 3"));
        assert!(parse_media(MASTER).unwrap_err().contains("master playlist"));
    }

    #[test]
    fn attribute_lists_keep_commas_inside_quotes() {
        let attributes = parse_attributes("A=1,CODECS=\"x,y\",B=two");
        assert_eq!(
            attributes,
            [
                ("A".to_owned(), "1".to_owned()),
                ("CODECS".to_owned(), "x,y".to_owned()),
                ("B".to_owned(), "two".to_owned()),
            ]
        );
    }
}

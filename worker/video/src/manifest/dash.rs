//! DASH MPDs (ISO/IEC 23009-1): every representation of every adaptation
//! set, with its segment URLs resolved from `SegmentTemplate` and
//! `SegmentTimeline`, parsed from XML text.

use roxmltree::{Document, Node};

/// An MPD's representations and timing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mpd {
    /// `mediaPresentationDuration` in seconds, if given.
    pub duration: Option<f64>,
    /// Adaptation sets of every period, in document order.
    pub adaptation_sets: Vec<AdaptationSet>,
}

/// One `AdaptationSet`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdaptationSet {
    /// Its `id`, if given.
    pub id: Option<String>,
    /// `contentType`, else the type half of `mimeType` (`video`, `audio`).
    pub content_type: Option<String>,
    /// Its representations, in document order.
    pub representations: Vec<Representation>,
}

/// One `Representation`, with the files a player fetches for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    /// Its `id`.
    pub id: String,
    /// `contentType`/`mimeType` of the representation or its set.
    pub content_type: Option<String>,
    /// `bandwidth` in bits per second.
    pub bandwidth: u64,
    /// `width`, for video.
    pub width: Option<u32>,
    /// `height`, for video.
    pub height: Option<u32>,
    /// The initialisation segment's URL, relative to the MPD.
    pub initialization: Option<String>,
    /// Media segment URLs in order, relative to the MPD.
    pub segments: Vec<String>,
    /// The segments' total duration in seconds.
    pub duration: f64,
}

/// `text`, an MPD, without `bitstreamSwitching="true"`: FFmpeg's DASH
/// muxer writes it on every adaptation set, though each representation
/// has its own initialisation segment, so a player may not switch
/// representations without reinitialising.
///
/// # Examples
///
/// ```
/// use spool_video::manifest::dash::without_bitstream_switching;
///
/// let set = r#"<AdaptationSet id="0" segmentAlignment="true" bitstreamSwitching="true" par="16:9">"#;
/// assert_eq!(
///     without_bitstream_switching(set),
///     r#"<AdaptationSet id="0" segmentAlignment="true" par="16:9">"#
/// );
/// ```
#[must_use]
pub fn without_bitstream_switching(text: &str) -> String {
    text.replace(" bitstreamSwitching=\"true\"", "")
}

/// Parses an MPD and resolves every representation's segment URLs.
///
/// Only what FFmpeg's `dash` muxer writes is addressed: segments described
/// by a `SegmentTemplate` (with a `SegmentTimeline` or a fixed `duration`),
/// on the representation, its adaptation set or its period.
///
/// # Examples
///
/// ```
/// use spool_video::manifest::dash::parse_mpd;
///
/// let mpd = parse_mpd(r#"<MPD mediaPresentationDuration="PT6S"><Period>
///   <AdaptationSet contentType="video">
///     <Representation id="0" bandwidth="800000" width="640" height="360">
///       <SegmentTemplate timescale="1000" initialization="init-$RepresentationID$.m4s"
///                        media="chunk-$RepresentationID$-$Number%05d$.m4s">
///         <SegmentTimeline><S t="0" d="4000"/><S d="2000"/></SegmentTimeline>
///       </SegmentTemplate>
///     </Representation>
///   </AdaptationSet></Period></MPD>"#)?;
/// let rep = &mpd.adaptation_sets[0].representations[0];
/// assert_eq!(rep.initialization.as_deref(), Some("init-0.m4s"));
/// assert_eq!(rep.segments, ["chunk-0-00001.m4s", "chunk-0-00002.m4s"]);
/// assert_eq!(rep.duration, 6.0);
/// # Ok::<(), String>(())
/// ```
///
/// # Errors
///
/// A problem in words when the XML does not parse, is not an MPD, a
/// representation lacks its `id` or `bandwidth`, or its segments cannot be
/// resolved.
pub fn parse_mpd(text: &str) -> Result<Mpd, String> {
    let document = Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = document.root_element();
    if root.tag_name().name() != "MPD" {
        return Err(format!(
            "root element is <{}>, not <MPD>",
            root.tag_name().name()
        ));
    }
    let duration = root
        .attribute("mediaPresentationDuration")
        .map(|value| {
            parse_iso_duration(value).ok_or_else(|| {
                format!("mediaPresentationDuration {value:?} is not an ISO 8601 duration")
            })
        })
        .transpose()?;
    let mut mpd = Mpd {
        duration,
        adaptation_sets: Vec::new(),
    };
    let root_base = base_url(root, "")?;
    for period in children(root, "Period") {
        let period_duration = period
            .attribute("duration")
            .map(|value| {
                parse_iso_duration(value)
                    .ok_or_else(|| format!("Period duration {value:?} is not an ISO 8601 duration"))
            })
            .transpose()?
            .or(duration);
        let period_base = base_url(period, &root_base)?;
        for set in children(period, "AdaptationSet") {
            let set_base = base_url(set, &period_base)?;
            let set_type = content_type(set);
            let mut adaptation_set = AdaptationSet {
                id: set.attribute("id").map(str::to_owned),
                content_type: set_type.clone(),
                representations: Vec::new(),
            };
            for node in children(set, "Representation") {
                let id = node
                    .attribute("id")
                    .ok_or_else(|| "a Representation without id".to_owned())?
                    .to_owned();
                let bandwidth = number_attribute::<u64>(node, "bandwidth")?
                    .ok_or_else(|| format!("Representation {id}: no bandwidth"))?;
                let templates = [Some(node), Some(set), Some(period)]
                    .into_iter()
                    .flatten()
                    .filter_map(|owner| children(owner, "SegmentTemplate").next())
                    .collect::<Vec<_>>();
                if templates.is_empty() {
                    return Err(format!(
                        "Representation {id}: no SegmentTemplate (only template-addressed MPDs are supported)"
                    ));
                }
                let context = TemplateContext {
                    representation_id: &id,
                    bandwidth,
                };
                let addressing = resolve_segments(&templates, &context, period_duration)
                    .map_err(|e| format!("Representation {id}: {e}"))?;
                let base = base_url(node, &set_base)?;
                adaptation_set.representations.push(Representation {
                    content_type: content_type(node).or_else(|| set_type.clone()),
                    bandwidth,
                    width: number_attribute(node, "width")?.or(number_attribute(set, "width")?),
                    height: number_attribute(node, "height")?.or(number_attribute(set, "height")?),
                    initialization: addressing.initialization.map(|url| format!("{base}{url}")),
                    segments: addressing
                        .segments
                        .into_iter()
                        .map(|url| format!("{base}{url}"))
                        .collect(),
                    duration: addressing.duration,
                    id,
                });
            }
            mpd.adaptation_sets.push(adaptation_set);
        }
    }
    if mpd
        .adaptation_sets
        .iter()
        .all(|set| set.representations.is_empty())
    {
        return Err("no Representation".to_owned());
    }
    Ok(mpd)
}

fn children<'a, 'input: 'a>(
    node: Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children()
        .filter(move |child| child.is_element() && child.tag_name().name() == name)
}

fn content_type(node: Node<'_, '_>) -> Option<String> {
    node.attribute("contentType")
        .map(str::to_owned)
        .or_else(|| {
            node.attribute("mimeType")
                .and_then(|mime| mime.split('/').next())
                .map(str::to_owned)
        })
}

fn number_attribute<T: std::str::FromStr>(
    node: Node<'_, '_>,
    name: &str,
) -> Result<Option<T>, String> {
    node.attribute(name)
        .map(|value| {
            value.parse::<T>().map_err(|_| {
                format!(
                    "<{}> {name}={value:?} is not a number",
                    node.tag_name().name()
                )
            })
        })
        .transpose()
}

/// The `BaseURL` of `node` joined to its parent's: relative ones only, since
/// every file of a package must lie beside its MPD.
fn base_url(node: Node<'_, '_>, parent: &str) -> Result<String, String> {
    match children(node, "BaseURL")
        .next()
        .and_then(|base| base.text())
    {
        None => Ok(parent.to_owned()),
        Some(url) if url.contains("://") || url.starts_with('/') => {
            Err(format!("BaseURL {url:?} is not relative to the MPD"))
        }
        Some(url) => Ok(format!("{parent}{}", url.trim())),
    }
}

/// The values a template's `$Identifier$`s stand for.
struct TemplateContext<'a> {
    representation_id: &'a str,
    bandwidth: u64,
}

struct Addressing {
    initialization: Option<String>,
    segments: Vec<String>,
    duration: f64,
}

/// Resolves the segments from `templates`, nearest (the representation's)
/// first: each attribute is inherited from the nearest template that sets
/// it.
fn resolve_segments(
    templates: &[Node<'_, '_>],
    context: &TemplateContext<'_>,
    period_duration: Option<f64>,
) -> Result<Addressing, String> {
    let inherited = |name: &str| {
        templates
            .iter()
            .find_map(|template| template.attribute(name))
    };
    let timescale = match inherited("timescale") {
        None => 1,
        Some(value) => value
            .parse::<u64>()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| format!("timescale {value:?} is not a positive integer"))?,
    };
    let start_number = match inherited("startNumber") {
        None => 1,
        Some(value) => value
            .parse::<u64>()
            .map_err(|_| format!("startNumber {value:?} is not a number"))?,
    };
    let media = inherited("media").ok_or_else(|| "SegmentTemplate without media".to_owned())?;
    let initialization = inherited("initialization")
        .map(|template| expand_template(template, context, None, None))
        .transpose()?;
    let timeline = templates
        .iter()
        .find_map(|template| children(*template, "SegmentTimeline").next());
    // Start time and duration of each segment, in timescale units.
    let times: Vec<(u64, u64)> = if let Some(timeline) = timeline {
        let end = period_duration.map(|seconds| seconds * timescale as f64);
        expand_timeline(timeline, end)?
    } else {
        let duration = inherited("duration")
            .ok_or_else(|| "SegmentTemplate with neither SegmentTimeline nor duration".to_owned())?
            .parse::<u64>()
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| "SegmentTemplate duration is not a positive integer".to_owned())?;
        let total = period_duration.ok_or_else(|| {
            "SegmentTemplate duration without a period or presentation duration".to_owned()
        })? * timescale as f64;
        let count = (total / duration as f64).ceil() as u64;
        (0..count)
            .map(|index| (index * duration, duration))
            .collect()
    };
    let mut segments = Vec::with_capacity(times.len());
    for (index, (time, _)) in (0_u64..).zip(&times) {
        segments.push(expand_template(
            media,
            context,
            Some(start_number + index),
            Some(*time),
        )?);
    }
    let duration = times.iter().map(|(_, d)| *d).sum::<u64>() as f64 / timescale as f64;
    Ok(Addressing {
        initialization,
        segments,
        duration,
    })
}

/// The segments a `SegmentTimeline` describes: `<S t d r>`, where `r`
/// repeats the entry and `r="-1"` repeats it up to the next entry's `t`
/// or the end of the period.
fn expand_timeline(timeline: Node<'_, '_>, end: Option<f64>) -> Result<Vec<(u64, u64)>, String> {
    let entries = children(timeline, "S").collect::<Vec<_>>();
    let mut times = Vec::new();
    let mut next_time = 0_u64;
    for (position, entry) in entries.iter().enumerate() {
        let time = number_attribute::<u64>(*entry, "t")?.unwrap_or(next_time);
        let duration = number_attribute::<u64>(*entry, "d")?
            .filter(|d| *d > 0)
            .ok_or_else(|| "SegmentTimeline <S> without a positive d".to_owned())?;
        let repeat = number_attribute::<i64>(*entry, "r")?.unwrap_or(0);
        let count = if repeat >= 0 {
            repeat.unsigned_abs() + 1
        } else {
            let until = match entries
                .get(position + 1)
                .map(|next| number_attribute::<u64>(*next, "t"))
            {
                Some(Ok(Some(next))) => next as f64,
                Some(Err(e)) => return Err(e),
                _ => {
                    end.ok_or_else(|| "SegmentTimeline r=-1 with no end to repeat to".to_owned())?
                }
            };
            ((until - time as f64) / duration as f64).ceil().max(0.0) as u64
        };
        for index in 0..count {
            times.push((time + index * duration, duration));
        }
        next_time = time + count * duration;
    }
    Ok(times)
}

/// Expands `$RepresentationID$`, `$Bandwidth$`, `$Number$`, `$Time$`
/// (the last three with an optional `%0Nd` width) and `$$`.
fn expand_template(
    template: &str,
    context: &TemplateContext<'_>,
    number: Option<u64>,
    time: Option<u64>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('$')
            .ok_or_else(|| format!("template {template:?} has an unclosed $"))?;
        let identifier = &after[..end];
        rest = &after[end + 1..];
        if identifier.is_empty() {
            out.push('$');
            continue;
        }
        let (name, width) = match identifier.split_once('%') {
            None => (identifier, 0),
            Some((name, format)) => {
                let digits = format
                    .strip_suffix('d')
                    .and_then(|width| width.parse::<usize>().ok())
                    .ok_or_else(|| {
                        format!("template {template:?}: format %{format} is not %0Nd")
                    })?;
                (name, digits)
            }
        };
        let value = match name {
            "RepresentationID" if width == 0 => {
                out.push_str(context.representation_id);
                continue;
            }
            "Bandwidth" => context.bandwidth,
            "Number" => number.ok_or_else(|| {
                format!("template {template:?}: $Number$ in an initialisation URL")
            })?,
            "Time" => time
                .ok_or_else(|| format!("template {template:?}: $Time$ in an initialisation URL"))?,
            _ => {
                return Err(format!(
                    "template {template:?}: unknown identifier ${identifier}$"
                ));
            }
        };
        out.push_str(&format!("{value:0width$}"));
    }
    out.push_str(rest);
    Ok(out)
}

/// Seconds in an ISO 8601 duration of days, hours, minutes and seconds
/// (`PT1H2M3.5S`, `P1DT2S`), as MPDs write them.
///
/// # Examples
///
/// ```
/// use spool_video::manifest::dash::parse_iso_duration;
///
/// assert_eq!(parse_iso_duration("PT1M4.5S"), Some(64.5));
/// assert_eq!(parse_iso_duration("4 seconds"), None);
/// ```
#[must_use]
pub fn parse_iso_duration(text: &str) -> Option<f64> {
    let body = text.trim().strip_prefix('P')?;
    let (date, time) = match body.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (body, None),
    };
    let mut seconds = 0.0;
    let mut any = false;
    for (part, units) in [
        (Some(date), &[('D', 86_400.0)][..]),
        (time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let Some(mut part) = part else { continue };
        for (unit, scale) in units {
            if let Some(position) = part.find(*unit) {
                let value = part[..position]
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)?;
                seconds += value * scale;
                any = true;
                part = &part[position + 1..];
            }
        }
        if !part.is_empty() {
            return None;
        }
    }
    any.then_some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    // What FFmpeg 9's dash muxer writes for two video and one audio
    // representations (trimmed of its empty elements).
    const MPD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011"
	type="static" mediaPresentationDuration="PT10.0S" maxSegmentDuration="PT4.0S" minBufferTime="PT8.0S">
	<Period id="0" start="PT0.0S">
		<AdaptationSet id="0" contentType="video" startWithSAP="1" segmentAlignment="true" frameRate="30/1" maxWidth="1280" maxHeight="720" par="16:9">
			<Representation id="0" mimeType="video/mp4" codecs="avc1.64001f" bandwidth="2800000" width="1280" height="720" sar="1:1">
				<SegmentTemplate timescale="15360" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1">
					<SegmentTimeline>
						<S t="0" d="61440" r="1" />
						<S d="30720" />
					</SegmentTimeline>
				</SegmentTemplate>
			</Representation>
			<Representation id="1" mimeType="video/mp4" codecs="avc1.64001e" bandwidth="800000" width="640" height="360" sar="1:1">
				<SegmentTemplate timescale="15360" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1">
					<SegmentTimeline>
						<S t="0" d="61440" r="1" />
						<S d="30720" />
					</SegmentTimeline>
				</SegmentTemplate>
			</Representation>
		</AdaptationSet>
		<AdaptationSet id="1" contentType="audio" startWithSAP="1" segmentAlignment="true" lang="und">
			<Representation id="2" mimeType="audio/mp4" codecs="mp4a.40.2" bandwidth="128000" audioSamplingRate="48000">
				<SegmentTemplate timescale="48000" initialization="init-stream$RepresentationID$.m4s" media="chunk-stream$RepresentationID$-$Number%05d$.m4s" startNumber="1">
					<SegmentTimeline>
						<S t="0" d="191488" />
						<S d="192512" />
						<S d="96000" />
					</SegmentTimeline>
				</SegmentTemplate>
			</Representation>
		</AdaptationSet>
	</Period>
</MPD>"#;

    #[test]
    fn every_representation_with_its_segments() {
        let mpd = parse_mpd(MPD).unwrap();
        assert_eq!(mpd.duration, Some(10.0));
        assert_eq!(mpd.adaptation_sets.len(), 2);
        let video = &mpd.adaptation_sets[0];
        assert_eq!(video.content_type.as_deref(), Some("video"));
        assert_eq!(video.representations.len(), 2);
        let top = &video.representations[0];
        assert_eq!(
            (top.id.as_str(), top.bandwidth, top.width, top.height),
            ("0", 2_800_000, Some(1280), Some(720))
        );
        assert_eq!(top.initialization.as_deref(), Some("init-stream0.m4s"));
        assert_eq!(
            top.segments,
            [
                "chunk-stream0-00001.m4s",
                "chunk-stream0-00002.m4s",
                "chunk-stream0-00003.m4s"
            ]
        );
        assert!((top.duration - 10.0).abs() < 1e-9);
        assert_eq!(
            video.representations[1].segments[2],
            "chunk-stream1-00003.m4s"
        );
        let audio = &mpd.adaptation_sets[1].representations[0];
        assert_eq!(audio.content_type.as_deref(), Some("audio"));
        assert_eq!((audio.width, audio.height), (None, None));
        assert_eq!(audio.segments.len(), 3);
        assert!((audio.duration - 10.0).abs() < 1e-9);
    }

    #[test]
    fn template_inherited_from_the_adaptation_set_with_fixed_duration() {
        let text = r#"<MPD mediaPresentationDuration="PT9S"><Period>
            <AdaptationSet mimeType="video/mp4">
              <BaseURL>video/</BaseURL>
              <SegmentTemplate timescale="1000" duration="4000" startNumber="0" media="$RepresentationID$/$Bandwidth$-$Number%03d$.m4s" initialization="$RepresentationID$/init.mp4"/>
              <Representation id="hi" bandwidth="5000" width="1920" height="1080"/>
            </AdaptationSet></Period></MPD>"#;
        let mpd = parse_mpd(text).unwrap();
        let rep = &mpd.adaptation_sets[0].representations[0];
        assert_eq!(rep.content_type.as_deref(), Some("video"));
        assert_eq!(rep.initialization.as_deref(), Some("video/hi/init.mp4"));
        assert_eq!(
            rep.segments,
            [
                "video/hi/5000-000.m4s",
                "video/hi/5000-001.m4s",
                "video/hi/5000-002.m4s"
            ]
        );
        assert!(
            (rep.duration - 12.0).abs() < 1e-9,
            "whole segments: {}",
            rep.duration
        );
    }

    #[test]
    fn timeline_repeat_to_end_and_time_addressing() {
        let text = r#"<MPD mediaPresentationDuration="PT10S"><Period><AdaptationSet contentType="audio">
              <Representation id="a" bandwidth="1">
                <SegmentTemplate timescale="10" media="seg-$Time$.m4s">
                  <SegmentTimeline><S t="0" d="40" r="-1"/></SegmentTimeline>
                </SegmentTemplate>
              </Representation></AdaptationSet></Period></MPD>"#;
        let rep = &parse_mpd(text).unwrap().adaptation_sets[0].representations[0];
        assert_eq!(rep.segments, ["seg-0.m4s", "seg-40.m4s", "seg-80.m4s"]);
        assert_eq!(rep.initialization, None);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse_mpd("<MPD").unwrap_err().starts_with("not XML"));
        assert!(parse_mpd("<html/>").unwrap_err().contains("not <MPD>"));
        assert_eq!(
            parse_mpd("<MPD><Period/></MPD>").unwrap_err(),
            "no Representation"
        );
        let no_bandwidth = MPD.replace(r#" bandwidth="800000""#, "");
        assert_eq!(
            parse_mpd(&no_bandwidth).unwrap_err(),
            "Representation 1: no bandwidth"
        );
        let no_template = r#"<MPD><Period><AdaptationSet><Representation id="x" bandwidth="1"/></AdaptationSet></Period></MPD>"#;
        assert!(
            parse_mpd(no_template)
                .unwrap_err()
                .contains("no SegmentTemplate")
        );
        let bad_identifier = MPD.replace("$Number%05d$", "$Nmber$");
        assert!(
            parse_mpd(&bad_identifier)
                .unwrap_err()
                .contains("unknown identifier $Nmber$")
        );
        let absolute = MPD.replace(
            "<Period id=\"0\" start=\"PT0.0S\">",
            "<Period><BaseURL>https://cdn.example/</BaseURL>",
        );
        assert!(parse_mpd(&absolute).unwrap_err().contains("not relative"));
    }

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration("PT4.0S"), Some(4.0));
        assert_eq!(parse_iso_duration("PT1H2M3.5S"), Some(3723.5));
        assert_eq!(parse_iso_duration("P1DT2S"), Some(86_402.0));
        assert_eq!(parse_iso_duration("PT10M"), Some(600.0));
        assert_eq!(parse_iso_duration("4S"), None);
        assert_eq!(parse_iso_duration("PT"), None);
        assert_eq!(parse_iso_duration("PT4X"), None);
        assert_eq!(parse_iso_duration("P1Y"), None);
    }
}

//! The checks a joined encode passes before it is published: the frames
//! of the source, no more and no fewer; a duration within one frame;
//! decode times that only increase; presentation times without repeats
//! or gaps; a keyframe where every chunk starts; the audio starting with
//! the video and lasting as long as the audio encoded.

use spool_sdk::video::ChunkSpan;

use super::index::PacketIndex;

/// What the checks measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct JoinReport {
    /// Video frames in the output.
    pub(crate) frames: u64,
    /// The output video's length, in seconds.
    pub(crate) length: f64,
    /// The audio's start less the video's, in milliseconds (0 without
    /// audio).
    pub(crate) av_offset_ms: f64,
}

/// Checks `output` (the joined file's index) against `source` (the
/// source's), the `chunks` joined and `audio` (the separately encoded
/// audio's start and length, seconds), if any.
///
/// # Errors
///
/// The first failed check, in words.
pub(crate) fn check_join(
    output: &PacketIndex,
    source: &PacketIndex,
    chunks: &[ChunkSpan],
    audio: Option<(f64, f64)>,
) -> Result<JoinReport, String> {
    let frames = output.frames.len() as u64;
    let expected = source.frames.len() as u64;
    if frames != expected {
        return Err(format!(
            "it has {frames} video frames where the source has {expected}"
        ));
    }
    let interval = source
        .frame_interval()
        .ok_or_else(|| "the source's frame interval is unknown".to_owned())?;
    let (length, source_length) = (output.video_length(), source.video_length());
    // Timestamps are rounded to the container's timescale: allow a frame
    // and a millisecond.
    if (length - source_length).abs() > interval + 1e-3 {
        return Err(format!(
            "its video lasts {length:.3} s where the source's lasts {source_length:.3} s \
             (more than one frame apart)"
        ));
    }
    let mut last_dts: Option<f64> = None;
    for (i, dts) in output.dts.iter().enumerate() {
        if let Some(dts) = dts {
            if last_dts.is_some_and(|last| *dts <= last) {
                return Err(format!(
                    "its decode timestamps go back at packet {i} ({dts:.6} s)"
                ));
            }
            last_dts = Some(*dts);
        }
    }
    for (i, pair) in output.frames.windows(2).enumerate() {
        let step = pair[1].pts - pair[0].pts;
        if step <= interval * 0.5 {
            return Err(format!(
                "frames {i} and {} share a presentation time ({:.6} s): a repeated frame",
                i + 1,
                pair[1].pts
            ));
        }
        if step >= interval * 1.5 {
            return Err(format!(
                "a gap of {step:.3} s between frames {i} and {} (at {:.3} s)",
                i + 1,
                pair[0].pts
            ));
        }
    }
    for chunk in chunks {
        let at = usize::try_from(chunk.first_frame).unwrap_or(usize::MAX);
        match output.frames.get(at) {
            Some(frame) if frame.key => {}
            Some(frame) => {
                return Err(format!(
                    "chunk {} starts at frame {at} ({:.3} s), which is no keyframe",
                    chunk.index, frame.pts
                ));
            }
            None => {
                return Err(format!(
                    "chunk {} starts at frame {at}, past the end",
                    chunk.index
                ));
            }
        }
    }
    let video_start = output.first_pts();
    let mut av_offset_ms = 0.0;
    match (audio, output.audio) {
        (None, None) => {}
        (Some(_), None) => return Err("its audio track is missing".to_owned()),
        (None, Some(_)) => return Err("it has an audio track none was encoded for".to_owned()),
        (Some((_, encoded_length)), Some((start, muxed_length))) => {
            av_offset_ms = (start - video_start) * 1e3;
            if (start - video_start).abs() > interval {
                return Err(format!(
                    "its audio starts {av_offset_ms:.1} ms from its video (more than one frame)"
                ));
            }
            if (muxed_length - encoded_length).abs() > interval.max(0.05) {
                return Err(format!(
                    "its audio lasts {muxed_length:.3} s where {encoded_length:.3} s were encoded"
                ));
            }
        }
    }
    Ok(JoinReport {
        frames,
        length,
        av_offset_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::super::index::Frame;
    use super::*;

    fn index(pts: &[f64], keys: &[usize], audio: Option<(f64, f64)>) -> PacketIndex {
        PacketIndex {
            frames: pts
                .iter()
                .enumerate()
                .map(|(i, &pts)| Frame {
                    pts,
                    key: keys.contains(&i),
                })
                .collect(),
            dts: pts.iter().map(|&p| Some(p)).collect(),
            durations: vec![0.04; pts.len()],
            start_time: 0.0,
            audio,
            avg_rate: Some(25.0),
            audio_codec: None,
        }
    }

    fn span(index: u32, first_frame: u64, frames: u64) -> ChunkSpan {
        ChunkSpan {
            index,
            first_frame,
            frames,
            start_us: 0,
            duration_us: 0,
            seek_us: 0,
        }
    }

    #[test]
    fn a_whole_join_passes_and_each_fault_is_named() {
        let pts: Vec<f64> = (0..100).map(|i| f64::from(i) * 0.04).collect();
        let source = index(&pts, &[0], Some((0.0, 4.0)));
        let chunks = [span(0, 0, 50), span(1, 50, 50)];
        let good = index(&pts, &[0, 50], Some((0.0, 4.0)));
        let report = check_join(&good, &source, &chunks, Some((0.0, 4.0))).unwrap();
        assert_eq!(report.frames, 100);

        let no_key = index(&pts, &[0], Some((0.0, 4.0)));
        let err = check_join(&no_key, &source, &chunks, Some((0.0, 4.0))).unwrap_err();
        assert!(err.contains("no keyframe"), "{err}");

        let mut repeated = pts.clone();
        repeated[51] = repeated[50];
        let mut repeated = index(&repeated, &[0, 50], None);
        // Decode times still increase: only presentation repeats.
        repeated.dts = pts.iter().map(|&p| Some(p)).collect();
        let err = check_join(&repeated, &source, &chunks, None).unwrap_err();
        assert!(err.contains("repeated"), "{err}");

        let mut gap = pts.clone();
        for p in gap.iter_mut().skip(50) {
            *p += 0.04;
        }
        let err = check_join(&index(&gap, &[0, 50], None), &source, &chunks, None).unwrap_err();
        assert!(err.contains("lasts") || err.contains("gap"), "{err}");

        let short = index(&pts[..99], &[0, 50], None);
        let err = check_join(&short, &source, &chunks, None).unwrap_err();
        assert!(err.contains("99 video frames"), "{err}");

        let late_audio = index(&pts, &[0, 50], Some((0.2, 4.0)));
        let err = check_join(&late_audio, &source, &chunks, Some((0.0, 4.0))).unwrap_err();
        assert!(err.contains("audio starts"), "{err}");
        let err = check_join(&good, &source, &chunks, None).unwrap_err();
        assert!(err.contains("none was encoded"), "{err}");

        let mut backwards = good.clone();
        backwards.dts[10] = Some(0.0);
        let err = check_join(&backwards, &source, &chunks, Some((0.0, 4.0))).unwrap_err();
        assert!(err.contains("go back"), "{err}");
    }
}

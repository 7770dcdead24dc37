//! Cutting a source into chunks: pure arithmetic on its frame index.

use spool_sdk::video::{ChunkPolicy, ChunkSpan};

use super::index::Frame;

/// Why a source is encoded whole instead of in chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Whole {
    /// One chunk only: the reason in words.
    Because(String),
}

impl Whole {
    pub(crate) fn reason(self) -> String {
        match self {
            Self::Because(reason) => reason,
        }
    }
}

/// How far a frame interval may stray from the median before the source
/// counts as variable frame rate: 10 % (container timescales round a
/// constant rate by far less).
const VFR_TOLERANCE: f64 = 0.10;

/// Whether the frames come at a variable rate: some interval off the
/// median by more than [`VFR_TOLERANCE`].
pub(crate) fn is_variable_rate(frames: &[Frame], interval: f64) -> bool {
    interval > 0.0
        && frames
            .windows(2)
            .any(|w| ((w[1].pts - w[0].pts) - interval).abs() > interval * VFR_TOLERANCE)
}

/// The chunks of `frames` (presentation order) cut at `cuts` (frame
/// indices, ascending), each at least `policy.target` long where a cut
/// allows, the last merged into the one before when shorter than
/// `policy.min`; `interval` is the frame interval in seconds. Returns the
/// chunks in output order.
///
/// # Errors
///
/// [`Whole`] with the reason when the plan has a single chunk.
pub(crate) fn plan(
    frames: &[Frame],
    cuts: &[usize],
    interval: f64,
    container_start: f64,
    policy: &ChunkPolicy,
) -> Result<Vec<ChunkSpan>, Whole> {
    let total = frames.len();
    if total == 0 {
        return Err(Whole::Because("the source has no video frames".to_owned()));
    }
    let target = policy.target.as_secs_f64();
    let min = policy.min.as_secs_f64();
    let origin = frames[0].pts;
    let end_pts = frames[total - 1].pts + interval;
    let pts = |i: usize| if i >= total { end_pts } else { frames[i].pts };
    let mut starts = vec![0_usize];
    for &cut in cuts {
        let last = *starts.last().unwrap_or(&0);
        if cut > last && cut < total && pts(cut) - pts(last) >= target - interval / 2.0 {
            starts.push(cut);
        }
    }
    // A short tail joins the chunk before it.
    while starts.len() > 1 {
        let last = starts[starts.len() - 1];
        if end_pts - pts(last) < min - interval / 2.0 {
            starts.pop();
        } else {
            break;
        }
    }
    if starts.len() < 2 {
        let length = end_pts - origin;
        let reason = if cuts.iter().all(|&c| c == 0) && length > target {
            format!(
                "the source ({length:.2} s) has no boundary after its first frame to cut at; \
                 encoding it whole"
            )
        } else {
            format!(
                "the source ({length:.2} s) makes a single chunk of at least {target:.2} s; \
                 encoding it whole"
            )
        };
        return Err(Whole::Because(reason));
    }
    let micros = |seconds: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "non-negative media times far below u64::MAX µs"
        )]
        let us = (seconds.max(0.0) * 1e6).round() as u64;
        us
    };
    let mut spans = Vec::with_capacity(starts.len());
    for (i, &first) in starts.iter().enumerate() {
        let next = starts.get(i + 1).copied().unwrap_or(total);
        spans.push(ChunkSpan {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            first_frame: first as u64,
            frames: (next - first) as u64,
            start_us: micros(pts(first) - origin),
            duration_us: micros(pts(next) - pts(first)),
            seek_us: micros(pts(first) - container_start - interval / 2.0),
        });
    }
    Ok(spans)
}

/// The keyframes of `frames` as cut candidates (frame indices).
pub(crate) fn keyframe_cuts(frames: &[Frame]) -> Vec<usize> {
    frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.key)
        .map(|(i, _)| i)
        .collect()
}

/// The frame indices whose presentation times are nearest each of
/// `times` (seconds, ascending): scene cuts onto the frame index.
pub(crate) fn cuts_at_times(frames: &[Frame], times: &[f64]) -> Vec<usize> {
    let mut cuts: Vec<usize> = times
        .iter()
        .filter_map(|&t| {
            let i = frames.partition_point(|f| f.pts < t);
            let candidates = [i.checked_sub(1), Some(i).filter(|&i| i < frames.len())];
            candidates.into_iter().flatten().min_by(|&a, &b| {
                (frames[a].pts - t)
                    .abs()
                    .total_cmp(&(frames[b].pts - t).abs())
            })
        })
        .collect();
    cuts.dedup();
    cuts
}

/// The chunks in the order to enqueue them: longest first (ties in output
/// order), so the longest is not the last to start.
pub(crate) fn longest_first(spans: &[ChunkSpan]) -> Vec<ChunkSpan> {
    let mut ordered = spans.to_vec();
    ordered.sort_by(|a, b| b.frames.cmp(&a.frames).then(a.index.cmp(&b.index)));
    ordered
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frames(n: usize, fps: f64, keys: &[usize]) -> Vec<Frame> {
        (0..n)
            .map(|i| Frame {
                pts: i as f64 / fps,
                key: keys.contains(&i),
            })
            .collect()
    }

    fn policy(target: u64, min: u64) -> ChunkPolicy {
        ChunkPolicy::new(Duration::from_secs(target), Duration::from_secs(min))
    }

    #[test]
    fn chunks_cut_at_the_first_keyframe_past_the_target() {
        // 10 s at 25 fps, keyframes every second.
        let keys: Vec<usize> = (0..10).map(|s| s * 25).collect();
        let f = frames(250, 25.0, &keys);
        let spans = plan(&f, &keyframe_cuts(&f), 0.04, 0.0, &policy(3, 1)).unwrap();
        let firsts: Vec<u64> = spans.iter().map(|s| s.first_frame).collect();
        assert_eq!(firsts, [0, 75, 150, 225]);
        assert_eq!(spans.iter().map(|s| s.frames).sum::<u64>(), 250);
        assert_eq!(spans[1].start_us, 3_000_000);
        assert_eq!(spans[3].duration_us, 1_000_000);
        // A tail under the minimum is merged.
        let spans = plan(&f, &keyframe_cuts(&f), 0.04, 0.0, &policy(3, 2)).unwrap();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[2].frames, 100);
    }

    #[test]
    fn no_keyframe_or_a_short_source_is_encoded_whole() {
        let f = frames(250, 25.0, &[0]);
        let Err(Whole::Because(why)) = plan(&f, &keyframe_cuts(&f), 0.04, 0.0, &policy(3, 1))
        else {
            panic!("expected a fallback");
        };
        assert!(why.contains("no boundary"), "{why}");
        let short = frames(50, 25.0, &[0, 25]);
        assert!(plan(&short, &keyframe_cuts(&short), 0.04, 0.0, &policy(10, 2)).is_err());
        assert!(plan(&[], &[], 0.04, 0.0, &policy(10, 2)).is_err());
    }

    #[test]
    fn variable_rates_and_scene_times_are_recognised() {
        let f = frames(100, 25.0, &[0]);
        assert!(!is_variable_rate(&f, 0.04));
        let mut vfr = f.clone();
        for (i, frame) in vfr.iter_mut().enumerate().skip(50) {
            frame.pts = 2.0 + (i - 50) as f64 / 12.5;
        }
        assert!(is_variable_rate(&vfr, 0.04));
        assert_eq!(cuts_at_times(&f, &[1.01, 2.0, 2.0]), [25, 50]);
        let spans = [
            ChunkSpan {
                index: 0,
                first_frame: 0,
                frames: 10,
                start_us: 0,
                duration_us: 1,
                seek_us: 0,
            },
            ChunkSpan {
                index: 1,
                first_frame: 10,
                frames: 30,
                start_us: 1,
                duration_us: 1,
                seek_us: 0,
            },
            ChunkSpan {
                index: 2,
                first_frame: 40,
                frames: 10,
                start_us: 2,
                duration_us: 1,
                seek_us: 0,
            },
        ];
        let order: Vec<u32> = longest_first(&spans).iter().map(|s| s.index).collect();
        assert_eq!(order, [1, 0, 2]);
    }
}

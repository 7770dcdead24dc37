//! Chunked ingest end to end: one `Ingest` workflow on two real
//! `spool-worker` processes, on a generated clip with three scenes and
//! motion, against the same encode done whole.
//!
//! Two comparisons, each sound for what it checks:
//!
//! - Quality: a lossy chunked encode's VMAF is within 0.5 of a whole
//!   encode's with the same settings. Chunks restart the encoder's rate
//!   control and reference frames, so the two files differ bit for bit;
//!   their scores against the source must not.
//! - Seamless joins: decoded frame hashes can only be compared where the
//!   encodes are bit-exact, so this runs the same ingest losslessly (x264
//!   CRF 0): a correct encode of any kind then decodes to the source's
//!   own pictures, and the chunked output's frames around every join
//!   (three before, three after) must hash equal to the whole encode's at
//!   the same index. A frozen, repeated, dropped or shifted frame at a
//!   join changes the hash at that index.

#[path = "video_chunk_common.rs"]
mod common;

use std::time::Duration;

use futures::StreamExt as _;
use spool_sdk::video::{
    ChunkOutput, ChunkPolicy, Codec, EncodeChunk, Ingest, IngestOutput, Preset, RateControl,
    chunk_node,
};
use spool_sdk::workflow::WorkflowState;
use spool_tests::TestRedis;
use spool_tests::video::{VideoEnv, ffmpeg_or_skip, no_ffmpeg, report};

use common::{
    frame_hashes, has_audio, keyframe_times, kill_hard, scene_clip, video_worker_process,
};

const WAIT: Duration = Duration::from_secs(300);

/// 1 s chunks (the clip has a keyframe every second), 0.5 s at least.
fn one_second_chunks() -> ChunkPolicy {
    ChunkPolicy::new(Duration::from_secs(1), Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_ingest_on_two_processes_matches_a_single_pass() {
    let test = "a_chunked_ingest_on_two_processes_matches_a_single_pass";
    let Some(ffmpeg) = ffmpeg_or_skip(test) else {
        return;
    };
    if !report(&ffmpeg).libvmaf {
        no_ffmpeg(test, "an FFmpeg with libvmaf");
        return;
    }
    let redis = TestRedis::new().await;
    let env = VideoEnv::new(ffmpeg).await;
    // Three 2 s scenes at 25 fps: 150 frames, a keyframe every second.
    let source = scene_clip(&env, "scenes.mp4", (320, 240), 25, 2.0, true).await;
    let workers = [
        video_worker_process(&redis, &env, &[]),
        video_worker_process(&redis, &env, &[]),
    ];
    let pids: Vec<u32> = workers.iter().map(common::WorkerProcess::id).collect();
    let client = env.client(&redis);

    let ingest = |output: &str, crf: u8| {
        Ingest::new("scenes.mp4", output, Codec::H264)
            .rate(RateControl::Crf(crf))
            .preset(Preset::Fast)
            .chunked(one_second_chunks())
    };
    let chunked = ingest("chunked.mp4", 26)
        .analyze(true)
        .submit(&client)
        .await
        .unwrap();
    let whole = ingest("whole.mp4", 26)
        .whole()
        .analyze(true)
        .submit(&client)
        .await
        .unwrap();
    let chunked_lossless = ingest("chunked-lossless.mp4", 0)
        .submit(&client)
        .await
        .unwrap();
    let whole_lossless = ingest("whole-lossless.mp4", 0)
        .whole()
        .submit(&client)
        .await
        .unwrap();

    // Progress across stages, as the chunked ingest runs.
    let mut progress = chunked.progress();
    let mut seen = Vec::new();
    while let Some(item) = tokio::time::timeout(WAIT, progress.next()).await.unwrap() {
        seen.push(item.unwrap());
    }
    let last = seen.last().expect("at least one snapshot");
    assert_eq!(
        last.state,
        WorkflowState::Succeeded,
        "{:?}",
        chunked.workflow().status().await
    );
    assert_eq!(
        last.frames_total,
        150 * 2,
        "encode and analysis count the source's frames"
    );
    assert_eq!(last.frames_done, last.frames_total);
    assert!(
        seen.windows(2)
            .all(|w| w[0].frames_done <= w[1].frames_done),
        "progress only moves forward: {:?}",
        seen.iter().map(|p| p.frames_done).collect::<Vec<_>>()
    );
    assert!(
        last.stages
            .iter()
            .any(|s| s.stage == "encode" && s.nodes == 6 + 3)
    );

    let done: IngestOutput = chunked.wait(WAIT).await.unwrap();
    let split = done.split.clone().expect("a split");
    assert_eq!(split.fallback, None);
    assert_eq!(split.frames, 150);
    let starts: Vec<u64> = split.chunks.iter().map(|c| c.first_frame).collect();
    assert_eq!(
        starts,
        [0, 25, 50, 75, 100, 125],
        "cut at each keyframe past 1 s"
    );
    let join = done.join.clone().expect("a join");
    assert_eq!((join.frames, join.chunks, join.audio), (150, 6, true));
    assert!(join.reencoded.is_empty());
    // Each stage reports its children's CPU time (their rusage).
    let spent = |cpu: Option<Duration>| cpu.is_some_and(|c| c > Duration::ZERO);
    assert!(spent(split.plan_cpu), "{split:?}");
    assert!(spent(join.join_cpu) && spent(join.validate_cpu), "{join:?}");
    let output = env.outputs.join("chunked.mp4");
    assert!(has_audio(&output));
    let keys = keyframe_times(&output);
    for chunk in &split.chunks {
        let at = chunk.start().as_secs_f64();
        assert!(
            keys.iter().any(|k| (k - at).abs() < 0.005),
            "a keyframe at chunk {}'s start ({at} s): {keys:?}",
            chunk.index
        );
    }
    assert!(
        !env.outputs.join(".spool-chunks").join(&split.key).exists(),
        "the chunks are removed once the output is published"
    );

    // Chunks ran in both worker processes.
    let mut ran_in = Vec::new();
    for handle in [&chunked, &chunked_lossless] {
        for chunk in 0..6 {
            let out: ChunkOutput = handle
                .workflow()
                .wait::<EncodeChunk>(&chunk_node(chunk), WAIT)
                .await
                .unwrap();
            assert!(
                pids.contains(&out.worker_pid),
                "{} not in {pids:?}",
                out.worker_pid
            );
            assert!(!out.reused);
            assert!(
                out.encode_cpu.is_some_and(|c| c > Duration::ZERO) && out.check_cpu.is_some(),
                "{out:?}"
            );
            ran_in.push(out.worker_pid);
        }
    }
    ran_in.sort_unstable();
    ran_in.dedup();
    assert_eq!(ran_in.len(), 2, "12 chunks spread over both processes");

    // Quality: within 0.5 VMAF of the whole encode.
    let whole_done = whole.wait(WAIT).await.unwrap();
    assert!(whole_done.split.is_none() && whole_done.transcode.is_some());
    let vmaf = |out: &IngestOutput| out.analysis.as_ref().unwrap().vmaf.as_ref().unwrap().mean;
    let (chunked_vmaf, whole_vmaf) = (vmaf(&done), vmaf(&whole_done));
    eprintln!("VMAF: chunked {chunked_vmaf:.3}, whole {whole_vmaf:.3}");
    assert!(
        (chunked_vmaf - whole_vmaf).abs() <= 0.5,
        "chunked VMAF {chunked_vmaf:.3} vs whole {whole_vmaf:.3}"
    );

    // Seamless joins: lossless encodes decode to the same pictures.
    let lossless = chunked_lossless.wait(WAIT).await.unwrap();
    whole_lossless.wait(WAIT).await.unwrap();
    let chunked_hashes = frame_hashes(&env.ffmpeg, &env.outputs.join("chunked-lossless.mp4"));
    let whole_hashes = frame_hashes(&env.ffmpeg, &env.outputs.join("whole-lossless.mp4"));
    let source_hashes = frame_hashes(&env.ffmpeg, &source);
    assert_eq!(chunked_hashes.len(), 150);
    assert_eq!(
        whole_hashes, source_hashes,
        "a lossless whole encode is the source's pictures"
    );
    for chunk in lossless.split.unwrap().chunks.iter().skip(1) {
        let at = usize::try_from(chunk.first_frame).unwrap();
        for i in at - 3..at + 3 {
            assert_eq!(
                chunked_hashes[i], whole_hashes[i],
                "frame {i}, near the join at frame {at}, differs from the single pass"
            );
        }
    }
    // Every frame matches too; the joins above are what this suite is for.
    assert_eq!(chunked_hashes, whole_hashes);

    for worker in workers {
        kill_hard(worker);
    }
    redis.cleanup().await;
}

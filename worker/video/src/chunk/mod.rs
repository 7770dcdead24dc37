//! Chunked encoding: `video.split`, `video.encode_chunk` (and
//! `video.encode_chunk_gpu`), `video.encode_audio` and `video.join`.
//!
//! ```text
//!  split ──► packet index (ffprobe, no decode) or scene scores (FFmpeg)
//!        ──► plan: cut at the first boundary past the target, longest first
//!        ──► adds chunk-NNNNN ×N, audio, join (the workflow's dynamic fan-out)
//!  chunk ──► -ss to just before its first frame, -frames:v N, no audio
//!            ──► <home>/chunk-NNNNN.mp4 (reused when whole)
//!  audio ──► <home>/audio.mka, once
//!  join  ──► concat demuxer, stream copy, audio muxed ──► validated ──► output
//! ```
//!
//! Chunks live in the encode's chunk home (`home`), named by the
//! workflow's id (or the split's key): for a path output, a directory
//! under the output root; for an object output (`s3://…`), a key prefix
//! beside it, so the nodes need no shared disk: each downloads the input
//! into a scratch directory of its own (bounded by `--scratch-limit`,
//! removed however the run ends), encodes its span and uploads its chunk,
//! then a `.done` marker holding the chunk's size. A chunk task that
//! finds its chunk whole (a run that crashed after writing it, a retried
//! workflow) reuses it: on disk, checked with ffprobe; in a bucket, its
//! marker and a HEAD of the same size. FFmpeg writes to a file of the
//! run's own, renamed into place when whole, so a killed run leaves
//! nothing that looks whole. The join removes the directory (or deletes
//! the prefix) once the output is published.
//!
//! The split checks the scratch a node may need (the join's: source,
//! chunks and output) against `--scratch-limit` and the scratch disk's
//! free space before anything is downloaded.
//!
//! - `plan`: cutting a frame index into chunks.
//! - `index`: ffprobe's packet index of a file.
//! - `validate`: the checks on a joined output.

mod encode;
mod home;
mod index;
mod join;
mod plan;
mod split;
mod validate;

use std::path::PathBuf;

use spool_broker::{Broker, Task as _};
use spool_sdk::video::{EncodeAudio, EncodeChunk, EncodeChunkOnGpu, Join, Split, check_key};
use spool_worker::Worker;

pub use self::encode::{EncodeAudioHandler, EncodeChunkHandler};
pub use self::join::JoinHandler;
pub use self::split::SplitHandler;
pub(crate) use self::split::scene_times;
use super::{VideoError, VideoTasks};

/// The wire names of the chunked-encoding tasks.
pub const TASK_NAMES: [&str; 5] = [
    Split::NAME,
    EncodeChunk::NAME,
    EncodeChunkOnGpu::NAME,
    EncodeAudio::NAME,
    Join::NAME,
];

/// The directory, under the output root, that holds every chunk
/// directory.
pub const CHUNKS_DIR: &str = ".spool-chunks";

/// Registers the chunked-encoding tasks.
pub(crate) fn register<B: Broker>(worker: Worker<B>, tasks: &VideoTasks) -> Worker<B> {
    worker
        .register::<Split, _>(SplitHandler::new(tasks))
        .register::<EncodeChunk, _>(EncodeChunkHandler::new(tasks))
        .register::<EncodeChunkOnGpu, _>(EncodeChunkHandler::new(tasks))
        .register::<EncodeAudio, _>(EncodeAudioHandler::new(tasks))
        .register::<Join, _>(JoinHandler::new(tasks))
}

/// The chunk directory of `key` (checked: `a-z 0-9 -`), created.
fn chunk_dir(tasks: &VideoTasks, key: &str) -> Result<PathBuf, VideoError> {
    check_key(key).map_err(VideoError::InvalidTask)?;
    let dir = tasks.roots().output_root().join(CHUNKS_DIR).join(key);
    std::fs::create_dir_all(&dir)
        .map_err(|e| VideoError::from_io(format!("cannot create {}", dir.display()), &dir, e))?;
    Ok(dir)
}

/// Chunk `index`'s file name.
fn chunk_file(index: u32) -> String {
    format!("chunk-{index:05}.mp4")
}

/// The audio's file name: Matroska holds whatever codec a copy brings.
const AUDIO_FILE: &str = "audio.mka";

/// The path of a file in the chunk directory, relative to the output
/// root (what outputs report).
fn relative(key: &str, file: &str) -> String {
    format!("{CHUNKS_DIR}/{key}/{file}")
}

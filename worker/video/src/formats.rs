//! Which of FFmpeg's demuxers may read a task's input.
//!
//! `-protocol_whitelist file` alone does not confine FFmpeg: the `file`
//! protocol is allowed, and some demuxers open other paths themselves. An
//! HLS playlist (`hls`) opens its segment URIs, a concat list (`concat`)
//! the files it lists, a DASH manifest its segments; FFmpeg picks them by
//! probing the content, so a playlist named `clip.mp4` inside an input
//! root would read any file the worker can read into a rendition.
//!
//! Every user input is therefore read with `-format_whitelist`
//! [`INPUT_FORMATS`]: container demuxers that read the one file they are
//! given. Playlists and lists are refused before FFmpeg runs, with their
//! kind named ([`refuse_playlist`]); whatever else FFmpeg would detect as a
//! format outside the list fails in FFmpeg with "Format not on whitelist",
//! which the runner and ffprobe turn into the same error.

use std::io::Read as _;
use std::path::Path;

use super::VideoError;

/// The demuxers a user input may be read with, as FFmpeg names them
/// (`-format_whitelist`). Each reads media from the one file it is given:
/// MP4/MOV (`mov` and its aliases; MOV data references stay off, FFmpeg's
/// default), Matroska/WebM, AVI, MPEG-TS, MPEG-PS, FLV, ASF/WMV, MXF, Ogg,
/// NUT, DV, IVF and AV1 OBU, Y4M, and raw H.264/HEVC/MPEG-4/MPEG video
/// elementary streams. Playlist and list demuxers (`hls`, `concat`,
/// `dash`, `image2`, `tee`…) are not in it.
pub const INPUT_FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,\
     asf,mxf,ogg,nut,dv,ivf,obu,yuv4mpegpipe,h264,hevc,m4v,mpegvideo";

/// How many bytes of a file are read to recognise a playlist.
const SNIFF_BYTES: usize = 4096;

/// What FFmpeg says when a file's detected format is not in the list.
const NOT_ON_WHITELIST: &str = "not on whitelist";

/// Refuses a file whose content FFmpeg would read as a playlist or a list
/// of other files: `real` is the resolved path, `given` the path as the
/// task named it.
///
/// # Errors
///
/// [`VideoError::Format`] naming the kind of playlist;
/// [`VideoError::Io`] when the file cannot be read.
pub fn refuse_playlist(real: &Path, given: &str) -> Result<(), VideoError> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    std::fs::File::open(real)
        .and_then(|file| file.take(SNIFF_BYTES as u64).read_to_end(&mut head))
        .map_err(|e| VideoError::io(format!("cannot read {}", real.display()), e))?;
    match playlist_kind(&head) {
        Some(format) => Err(VideoError::Format {
            path: given.to_owned(),
            format: Some(format.to_owned()),
        }),
        None => Ok(()),
    }
}

/// The FFmpeg demuxer that would read `head` as a playlist or a list of
/// other files, if any.
fn playlist_kind(head: &[u8]) -> Option<&'static str> {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let text = &text[start..];
    let starts = |prefix: &[u8]| {
        text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    if starts(b"#EXTM3U") {
        Some("hls")
    } else if starts(b"ffconcat version") {
        Some("concat")
    } else if text.windows(4).any(|w| w == b"<MPD") {
        Some("dash")
    } else if starts(b"<?xml") && text.windows(6).any(|w| w == b"<smil ") {
        Some("smil")
    } else {
        None
    }
}

/// Whether FFmpeg's (or ffprobe's) words say a file's format is not in
/// [`INPUT_FORMATS`].
#[must_use]
pub(crate) fn not_allowed(message: &str) -> bool {
    message.contains(NOT_ON_WHITELIST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_are_recognised() {
        assert_eq!(
            playlist_kind(b"#EXTM3U\n#EXTINF:1,\n/etc/x.ts\n"),
            Some("hls")
        );
        assert_eq!(playlist_kind(b"\xEF\xBB\xBF  #extm3u\n"), Some("hls"));
        assert_eq!(
            playlist_kind(b"ffconcat version 1.0\nfile /x.mp4\n"),
            Some("concat")
        );
        assert_eq!(
            playlist_kind(b"<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash\">"),
            Some("dash")
        );
        assert_eq!(playlist_kind(b"\x00\x00\x00\x20ftypisom"), None);
        assert_eq!(playlist_kind(b""), None);
    }

    #[test]
    fn the_list_has_no_playlist_demuxer() {
        for refused in ["hls", "concat", "dash", "image2", "tee", "lavfi", "data"] {
            assert!(
                !INPUT_FORMATS.split(',').any(|f| f == refused),
                "{refused} is allowed"
            );
        }
        assert!(not_allowed("Format not on whitelist 'mov,mp4'"));
    }
}

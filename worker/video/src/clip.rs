//! Synthetic clips from FFmpeg's `lavfi` sources, for demos, benchmarks and
//! tests: one generator, so they all measure the same kind of input.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::error::VideoError;
use super::progress::StageBand;
use super::runner::{FfmpegArgs, FfmpegRunner, Input, Output, RunOptions};

/// A test clip: `testsrc2` (a moving pattern with a frame counter) and,
/// optionally, a 440 Hz tone, as near-lossless H.264 (CRF 12) and AAC in
/// MP4, so it can serve as the reference of a quality score.
///
/// # Examples
///
/// ```
/// use spool_video::TestClip;
///
/// let clip = TestClip::new(1280, 720).seconds(4.0);
/// assert_eq!(clip.frames(), 100);
/// let args = clip.args("/tmp/clip.mp4".as_ref());
/// assert!(args.to_args().iter().any(|a| a == "lavfi"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestClip {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second. Default: 25.
    pub fps: u32,
    /// Length in seconds. Default: 2.
    pub seconds: f64,
    /// Whether it has the tone. Default: yes.
    pub audio: bool,
}

impl TestClip {
    /// A 2 s, 25 fps clip of `width`×`height` with audio.
    #[must_use]
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            fps: 25,
            seconds: 2.0,
            audio: true,
        }
    }

    /// The same clip, `seconds` long.
    #[must_use]
    pub fn seconds(mut self, seconds: f64) -> Self {
        self.seconds = seconds;
        self
    }

    /// The same clip at `fps`.
    #[must_use]
    pub fn fps(mut self, fps: u32) -> Self {
        self.fps = fps;
        self
    }

    /// The same clip, silent.
    #[must_use]
    pub fn without_audio(mut self) -> Self {
        self.audio = false;
        self
    }

    /// How many video frames it has.
    #[must_use]
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a clip's frame count is small and positive"
    )]
    pub fn frames(&self) -> u64 {
        (self.seconds * f64::from(self.fps)).round() as u64
    }

    /// The FFmpeg command that writes the clip to `out`.
    #[must_use]
    pub fn args(&self, out: &Path) -> FfmpegArgs {
        let video = format!(
            "testsrc2=size={}x{}:rate={}:duration={}",
            self.width, self.height, self.fps, self.seconds
        );
        let mut args = FfmpegArgs::new().input(Input::lavfi(video));
        let mut output = Output::file(out)
            .map("0:v")
            .option("-c:v", "libx264")
            .option("-preset", "ultrafast")
            .option("-crf", 12)
            .option("-pix_fmt", "yuv420p");
        if self.audio {
            args = args.input(Input::lavfi(format!(
                "sine=frequency=440:sample_rate=48000:duration={}",
                self.seconds
            )));
            output = output
                .map("1:a")
                .option("-c:a", "aac")
                .option("-b:a", "96k");
        }
        args.output(output.option("-f", "mp4"))
    }

    /// Writes the clip to `out` (absolute) with `runner`.
    ///
    /// # Errors
    ///
    /// FFmpeg's own message when it cannot write the clip.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops FFmpeg and removes the partial file.
    pub async fn write(&self, runner: &FfmpegRunner, out: &Path) -> Result<(), VideoError> {
        let options = RunOptions::new(StageBand::PROCESSING, CancellationToken::new());
        runner.run(&self.args(out), options, |_| {}).await?;
        Ok(())
    }
}

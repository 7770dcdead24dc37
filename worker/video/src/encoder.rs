//! Choosing an encoder and speaking its dialect.
//!
//! The choice comes from the encoders that passed the worker's one-frame
//! trial encode ([`FfmpegReport::encoders`](crate::probe::FfmpegReport)),
//! never from FFmpeg's `-encoders` listing: NVENC is compiled into most
//! builds, and works only where a GPU and its driver are. Hardware first
//! (NVENC, then QSV, then VAAPI), then software (`libx264`, `libx265`,
//! `libsvtav1`); under [`HardwarePolicy::Auto`] a failed hardware encode
//! falls back to software.
//!
//! Presets and rate control are mapped per encoder: CRF becomes `-crf` in
//! software, `-cq` for NVENC, `-global_quality` for QSV and `-qp` for
//! VAAPI.

use std::fmt;

use spool_sdk::video::{Codec, HardwarePolicy, Preset, RateControl};

use super::VideoError;

/// The device VAAPI encoders open.
pub const VAAPI_DEVICE: &str = "/dev/dri/renderD128";

/// An encoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncoderKind {
    /// NVIDIA NVENC.
    Nvenc,
    /// Intel Quick Sync Video.
    Qsv,
    /// VA-API (Intel, AMD on Linux).
    Vaapi,
    /// A CPU encoder.
    Software,
}

impl EncoderKind {
    /// The family of the encoder named `name`.
    #[must_use]
    pub fn of(name: &str) -> Self {
        if name.ends_with("_nvenc") {
            Self::Nvenc
        } else if name.ends_with("_qsv") {
            Self::Qsv
        } else if name.ends_with("_vaapi") {
            Self::Vaapi
        } else {
            Self::Software
        }
    }

    /// Whether this is a hardware encoder.
    #[must_use]
    pub fn is_hardware(self) -> bool {
        self != Self::Software
    }
}

/// An encoder for a codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoder {
    /// FFmpeg's name for it (`h264_nvenc`).
    pub name: String,
    /// Its family.
    pub kind: EncoderKind,
    /// The codec it writes.
    pub codec: Codec,
}

impl fmt::Display for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The software encoder of `codec`.
#[must_use]
pub fn software_encoder(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 => "libx264",
        Codec::Hevc => "libx265",
        Codec::Av1 => "libsvtav1",
    }
}

/// The hardware encoders of `codec`, best first.
#[must_use]
pub fn hardware_encoders(codec: Codec) -> [&'static str; 3] {
    match codec {
        Codec::H264 => ["h264_nvenc", "h264_qsv", "h264_vaapi"],
        Codec::Hevc => ["hevc_nvenc", "hevc_qsv", "hevc_vaapi"],
        Codec::Av1 => ["av1_nvenc", "av1_qsv", "av1_vaapi"],
    }
}

/// The encoders to try for `codec` under `policy`, in order, from the
/// `available` ones (those that passed the trial encode): under `Auto` the
/// best hardware encoder then the software one, under `Software` the
/// software one, under `Require` every working hardware encoder.
///
/// # Errors
///
/// [`VideoError::Missing`] when none of them is available.
///
/// # Examples
///
/// ```
/// use spool_sdk::video::{Codec, HardwarePolicy};
/// use spool_video::encoder::plan;
///
/// let available = ["libx264".to_owned(), "h264_nvenc".to_owned()];
/// let names: Vec<String> = plan(Codec::H264, HardwarePolicy::Auto, &available)
///     .unwrap()
///     .into_iter()
///     .map(|e| e.name)
///     .collect();
/// assert_eq!(names, ["h264_nvenc", "libx264"]);
/// assert!(plan(Codec::Av1, HardwarePolicy::Auto, &available).is_err());
/// ```
pub fn plan(
    codec: Codec,
    policy: HardwarePolicy,
    available: &[String],
) -> Result<Vec<Encoder>, VideoError> {
    let has = |name: &str| available.iter().any(|a| a == name);
    let encoder = |name: &str| Encoder {
        name: name.to_owned(),
        kind: EncoderKind::of(name),
        codec,
    };
    let hardware: Vec<Encoder> = hardware_encoders(codec)
        .into_iter()
        .filter(|name| has(name))
        .map(encoder)
        .collect();
    let software = Some(software_encoder(codec))
        .filter(|name| has(name))
        .map(encoder);
    let plan: Vec<Encoder> = match policy {
        HardwarePolicy::Software => software.into_iter().collect(),
        HardwarePolicy::Require => hardware,
        HardwarePolicy::Auto => hardware.into_iter().take(1).chain(software).collect(),
    };
    if plan.is_empty() {
        let wanted = match policy {
            HardwarePolicy::Software => software_encoder(codec).to_owned(),
            HardwarePolicy::Require => hardware_encoders(codec).join(", "),
            HardwarePolicy::Auto => {
                let mut all = hardware_encoders(codec).to_vec();
                all.push(software_encoder(codec));
                all.join(", ")
            }
        };
        return Err(VideoError::Missing {
            what: "encoder",
            detail: format!(
                "no {codec} encoder for this task ({wanted}) passed the trial encode; \
                 working encoders here: {}",
                if available.is_empty() {
                    "none".to_owned()
                } else {
                    available.join(", ")
                }
            ),
            hint: "use an FFmpeg built with it (the imageio-ffmpeg build has x264, x265 and \
                   SVT-AV1), or a host with the hardware",
        });
    }
    Ok(plan)
}

/// How frames must reach an encoder, and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderSetup {
    /// Global options before the inputs (`-vaapi_device`).
    pub global: Vec<(&'static str, String)>,
    /// The last filters of the video chain (`format=yuv420p`, or
    /// `format=nv12,hwupload` for VAAPI).
    pub pixel_filter: &'static str,
    /// Output options: codec, preset, rate control.
    pub options: Vec<(&'static str, String)>,
}

/// The setup of `encoder` for `rate` and `preset`.
///
/// # Errors
///
/// [`VideoError::InvalidTask`] for a CRF above the codec's maximum or a
/// zero bitrate.
pub fn setup(
    encoder: &Encoder,
    rate: RateControl,
    preset: Preset,
) -> Result<EncoderSetup, VideoError> {
    check_rate(encoder.codec, rate)?;
    let name = encoder.name.clone();
    let mut options: Vec<(&'static str, String)> = vec![("-c:v", name)];
    let mut global = Vec::new();
    let mut pixel_filter = "format=yuv420p";
    let bitrate = |kbps: u32| format!("{kbps}k");
    match encoder.kind {
        EncoderKind::Software => match encoder.codec {
            Codec::H264 | Codec::Hevc => {
                options.push(("-preset", preset.as_str().to_owned()));
                if encoder.codec == Codec::Hevc {
                    // x265 writes its own banner and stats to stderr.
                    options.push(("-x265-params", "log-level=error".to_owned()));
                }
                match rate {
                    RateControl::Crf(crf) => options.push(("-crf", crf.to_string())),
                    RateControl::Bitrate { kbps } => options.push(("-b:v", bitrate(kbps))),
                }
            }
            Codec::Av1 => {
                options.push(("-preset", svt_av1_preset(preset).to_string()));
                match rate {
                    RateControl::Crf(crf) => options.push(("-crf", crf.to_string())),
                    RateControl::Bitrate { kbps } => options.push(("-b:v", bitrate(kbps))),
                }
            }
        },
        EncoderKind::Nvenc => {
            options.push(("-preset", format!("p{}", nvenc_preset(preset))));
            options.push(("-rc", "vbr".to_owned()));
            match rate {
                RateControl::Crf(crf) => {
                    options.push(("-cq", crf.to_string()));
                    // Quality-driven: no bitrate target.
                    options.push(("-b:v", "0".to_owned()));
                }
                RateControl::Bitrate { kbps } => options.push(("-b:v", bitrate(kbps))),
            }
        }
        EncoderKind::Qsv => {
            pixel_filter = "format=nv12";
            options.push(("-preset", qsv_preset(preset).to_owned()));
            match rate {
                RateControl::Crf(crf) => options.push(("-global_quality", crf.to_string())),
                RateControl::Bitrate { kbps } => options.push(("-b:v", bitrate(kbps))),
            }
        }
        EncoderKind::Vaapi => {
            global.push(("-vaapi_device", VAAPI_DEVICE.to_owned()));
            pixel_filter = "format=nv12,hwupload";
            match rate {
                RateControl::Crf(crf) => {
                    options.push(("-rc_mode", "CQP".to_owned()));
                    options.push(("-qp", crf.to_string()));
                }
                RateControl::Bitrate { kbps } => {
                    options.push(("-rc_mode", "VBR".to_owned()));
                    options.push(("-b:v", bitrate(kbps)));
                }
            }
        }
    }
    if encoder.codec == Codec::Hevc {
        // The tag Apple players need for HEVC in MP4/MOV.
        options.push(("-tag:v", "hvc1".to_owned()));
    }
    Ok(EncoderSetup {
        global,
        pixel_filter,
        options,
    })
}

/// Rejects a CRF above the codec's range and a zero bitrate.
fn check_rate(codec: Codec, rate: RateControl) -> Result<(), VideoError> {
    match rate {
        RateControl::Crf(crf) if crf > codec.max_crf() => Err(VideoError::InvalidTask(format!(
            "crf {crf} is above {}'s maximum of {}",
            codec,
            codec.max_crf()
        ))),
        RateControl::Bitrate { kbps: 0 } => {
            Err(VideoError::InvalidTask("a bitrate of 0 kb/s".to_owned()))
        }
        _ => Ok(()),
    }
}

/// NVENC's `p1` (fastest) … `p7` (slowest).
fn nvenc_preset(preset: Preset) -> u8 {
    [1, 1, 2, 3, 3, 4, 5, 6, 7][usize::from(preset.rank()).min(8)]
}

/// SVT-AV1's 12 (fastest here) … 4 (slow; 0 is impractically slow).
fn svt_av1_preset(preset: Preset) -> u8 {
    [12, 11, 10, 9, 8, 7, 6, 5, 4][usize::from(preset.rank()).min(8)]
}

/// QSV's presets run from `veryfast` to `veryslow`.
fn qsv_preset(preset: Preset) -> &'static str {
    match preset {
        Preset::UltraFast | Preset::SuperFast | Preset::VeryFast => "veryfast",
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(plan: &[Encoder]) -> Vec<&str> {
        plan.iter().map(|e| e.name.as_str()).collect()
    }

    fn available(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn plans_follow_the_trial_encodes() {
        let cpu = available(&["libx264", "libx265", "libsvtav1"]);
        let gpu = available(&["libx264", "h264_vaapi", "h264_nvenc", "hevc_qsv", "libx265"]);
        assert_eq!(
            names(&plan(Codec::H264, HardwarePolicy::Auto, &cpu).unwrap()),
            ["libx264"]
        );
        assert_eq!(
            names(&plan(Codec::H264, HardwarePolicy::Auto, &gpu).unwrap()),
            ["h264_nvenc", "libx264"]
        );
        assert_eq!(
            names(&plan(Codec::H264, HardwarePolicy::Require, &gpu).unwrap()),
            ["h264_nvenc", "h264_vaapi"]
        );
        assert_eq!(
            names(&plan(Codec::Hevc, HardwarePolicy::Software, &gpu).unwrap()),
            ["libx265"]
        );
        let e = plan(Codec::H264, HardwarePolicy::Require, &cpu).unwrap_err();
        assert!(e.to_string().contains("h264_nvenc"), "{e}");
        assert!(plan(Codec::Av1, HardwarePolicy::Auto, &gpu).is_err());
    }

    #[test]
    fn rate_control_is_mapped_per_encoder() {
        let of = |name: &str, codec| Encoder {
            name: name.to_owned(),
            kind: EncoderKind::of(name),
            codec,
        };
        let crf = RateControl::Crf(28);
        let has =
            |s: &EncoderSetup, k: &str, v: &str| s.options.iter().any(|(a, b)| *a == k && b == v);
        let x264 = setup(&of("libx264", Codec::H264), crf, Preset::Fast).unwrap();
        assert!(has(&x264, "-crf", "28") && has(&x264, "-preset", "fast"));
        let nvenc = setup(&of("h264_nvenc", Codec::H264), crf, Preset::Slow).unwrap();
        assert!(has(&nvenc, "-cq", "28") && has(&nvenc, "-preset", "p5"));
        let qsv = setup(&of("hevc_qsv", Codec::Hevc), crf, Preset::UltraFast).unwrap();
        assert!(has(&qsv, "-global_quality", "28") && has(&qsv, "-preset", "veryfast"));
        assert!(has(&qsv, "-tag:v", "hvc1"));
        let vaapi = setup(&of("h264_vaapi", Codec::H264), crf, Preset::Medium).unwrap();
        assert!(has(&vaapi, "-qp", "28"));
        assert_eq!(vaapi.pixel_filter, "format=nv12,hwupload");
        assert_eq!(
            vaapi.global,
            vec![("-vaapi_device", VAAPI_DEVICE.to_owned())]
        );
        let svt = setup(
            &of("libsvtav1", Codec::Av1),
            RateControl::Bitrate { kbps: 500 },
            Preset::VeryFast,
        )
        .unwrap();
        assert!(has(&svt, "-b:v", "500k") && has(&svt, "-preset", "10"));
        assert!(
            setup(
                &of("libx264", Codec::H264),
                RateControl::Crf(52),
                Preset::Fast
            )
            .is_err()
        );
        assert!(
            setup(
                &of("libsvtav1", Codec::Av1),
                RateControl::Crf(63),
                Preset::Fast
            )
            .is_ok()
        );
        assert!(
            setup(
                &of("libx264", Codec::H264),
                RateControl::Bitrate { kbps: 0 },
                Preset::Fast
            )
            .is_err()
        );
    }
}

//! The video tasks' own views: an analysis's per-frame quality chart with
//! its pooled figures, and a package's HLS and DASH outputs played in the
//! page (the vendored Shaka Player) with a rendition switcher.

use maud::{Markup, html};
use spool_broker::store::JobRecord;
use spool_sdk::video::{AnalysisReport, FrameScores, MetricSummary, PackageOutput};

use crate::charts::{Chart, Series, line_chart};
use crate::media;
use crate::state::AppState;

/// The per-frame chart and pooled figures of a `video.analyze` result.
#[must_use]
pub fn analysis(record: &JobRecord) -> Markup {
    let report = match record.output::<AnalysisReport>() {
        Ok(Some(report)) => report,
        Ok(None) => return html! {},
        Err(_) => return html! { p.error { "The analysis report cannot be decoded." } },
    };
    let chart = |title: &str,
                 y_range: Option<(f64, f64)>,
                 unit: &str,
                 pick: fn(&FrameScores) -> Option<f64>,
                 class: &'static str| {
        let points: Vec<(f64, Option<f64>)> = report
            .per_frame
            .iter()
            .map(|f| (f64::from(f.frame), pick(f)))
            .collect();
        if points.iter().all(|p| p.1.is_none()) {
            return html! {};
        }
        line_chart(
            &Chart {
                title,
                size: (640, 180),
                y_range,
                unit,
            },
            &[Series {
                label: title.to_owned(),
                class,
                points,
            }],
        )
    };
    html! {
        section #quality {
            h2 { "Quality" }
            p { (report.frames) " frames at " (report.width) "×" (report.height)
                @if let Some(model) = &report.vmaf_model { ", VMAF model " code { (format!("{model:?}")) } } }
            table.pooled {
                thead { tr { th { "Metric" } th.num { "Mean" } th.num { "Harmonic mean" } th.num { "Min" } th.num { "Max" } } }
                tbody {
                    (pooled_row("VMAF", report.vmaf.as_ref()))
                    (pooled_row("PSNR (dB)", report.psnr.as_ref()))
                    (pooled_row("SSIM", report.ssim.as_ref()))
                }
            }
            @if report.per_frame.is_empty() {
                p.none { "No per-frame scores (the task asked for pooled figures only)." }
            } @else {
                div.charts.per-frame {
                    (chart("VMAF per frame", Some((0.0, 100.0)), "", |f| f.vmaf, "s0"))
                    (chart("PSNR per frame (dB)", None, "", |f| f.psnr, "s1"))
                    (chart("SSIM per frame", Some((0.0, 1.0)), "", |f| f.ssim, "s2"))
                }
            }
        }
    }
}

fn pooled_row(name: &str, summary: Option<&MetricSummary>) -> Markup {
    html! {
        @if let Some(s) = summary {
            tr data-metric=(name) {
                td { (name) }
                td.num { (format!("{:.3}", s.mean)) }
                td.num { (format!("{:.3}", s.harmonic_mean)) }
                td.num { (format!("{:.3}", s.min)) }
                td.num { (format!("{:.3}", s.max)) }
            }
        }
    }
}

/// The player of a `video.package` result, when its outputs lie under the
/// dashboard's `--media-root`.
#[must_use]
pub fn player(state: &AppState, record: &JobRecord) -> Markup {
    let output = match record.output::<PackageOutput>() {
        Ok(Some(output)) => output,
        Ok(None) => return html! {},
        Err(_) => return html! { p.error { "The package output cannot be decoded." } },
    };
    let base = match media::package_base(state, &output) {
        Ok(base) => base,
        Err(why) => {
            return html! {
                section #player { h2 { "Outputs" } p.none { (why) } (renditions(&output)) }
            };
        }
    };
    let url_of = |manifest: &Option<std::path::PathBuf>| {
        manifest
            .as_ref()
            .and_then(|m| m.strip_prefix(&base).ok())
            .map(|rel| format!("/tasks/{}/media/{}", record.id, rel.to_string_lossy()))
    };
    let hls = url_of(&output.hls_master);
    let dash = url_of(&output.dash_mpd);
    html! {
        section #player {
            h2 { "Outputs" }
            div.player data-hls=[hls.as_deref()] data-dash=[dash.as_deref()] {
                video #video controls muted playsinline width="640" {}
                div.controls {
                    label { "Format "
                        select #format {
                            @if hls.is_some() { option value="hls" { "HLS" } }
                            @if dash.is_some() { option value="dash" { "DASH" } }
                        }
                    }
                    " "
                    label { "Rendition "
                        select #rendition { option value="auto" { "auto" } }
                    }
                    " "
                    span #player-state.none { "loading…" }
                }
            }
            script src=(crate::assets::url("vendor/shaka-player/shaka-player.compiled.js")) {}
            (renditions(&output))
            p.small { "Player: Shaka Player (Apache-2.0, "
                a href=(crate::assets::url("vendor/shaka-player/LICENSE")) { "license" } ")." }
        }
    }
}

fn renditions(output: &PackageOutput) -> Markup {
    html! {
        table.renditions {
            thead { tr { th { "Rendition" } th.num { "Size" } th.num { "Bandwidth" } th.num { "Segments" } } }
            tbody {
                @for r in &output.renditions {
                    tr { td { (r.name) } td.num { (r.width) "×" (r.height) }
                         td.num { (r.bandwidth / 1000) " kb/s" } td.num { (r.segments) } }
                }
            }
        }
    }
}

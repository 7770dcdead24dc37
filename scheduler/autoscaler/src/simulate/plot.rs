//! The simulation's plot: backlog, workers and waits over time, three
//! panels in one PNG, drawn with plotters' bitmap backend. Text is
//! rendered with ab_glyph from a font embedded in the binary (DejaVu Sans
//! Mono, `scheduler/assets/`), so no system font or fontconfig is needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::Simulation;
use crate::error::{Error, Result};

/// The embedded font; its license is in `scheduler/assets/`.
static FONT: &[u8] = include_bytes!("../../../assets/DejaVuSansMono.ttf");

/// The plot's size in pixels.
pub(crate) const PLOT_SIZE: (u32, u32) = (1200, 900);

/// Registers the embedded font as plotters' `sans-serif`, once.
fn font_ready() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Plot("the embedded font does not load".to_owned()))
    }
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// One line of a panel: its legend, its colour, its points.
type Line<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// One panel's lines.
struct Panel<'a> {
    title: &'a str,
    y_label: &'a str,
    lines: Vec<Line<'a>>,
}

/// Draws `simulation` as a PNG at `path`.
///
/// # Errors
///
/// [`Error::Plot`] when the font does not load or the file cannot be
/// written.
pub fn plot(simulation: &Simulation, path: &Path) -> Result<()> {
    font_ready()?;
    let samples = &simulation.samples;
    let series = |f: &dyn Fn(&super::Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t, v)))
            .collect()
    };
    #[allow(clippy::cast_precision_loss)]
    let panels = [
        Panel {
            title: "Backlog and arrivals",
            y_label: "tasks",
            lines: vec![
                ("backlog", BLUE, series(&|s| Some(s.backlog as f64))),
                (
                    "arrivals per sample",
                    RGBColor(140, 140, 140),
                    series(&|s| Some(s.arrivals as f64)),
                ),
            ],
        },
        Panel {
            title: "Workers",
            y_label: "workers",
            // Drawn in this order: the decision under what followed it.
            lines: vec![
                (
                    "desired",
                    RGBColor(250, 180, 60),
                    series(&|s| Some(f64::from(s.desired))),
                ),
                (
                    "workers (starting included)",
                    RED,
                    series(&|s| Some(f64::from(s.workers))),
                ),
                (
                    "ready",
                    RGBColor(0, 150, 0),
                    series(&|s| Some(f64::from(s.ready_workers))),
                ),
            ],
        },
        Panel {
            title: "Wait before start",
            y_label: "seconds",
            lines: vec![
                ("p50", RGBColor(0, 120, 200), series(&|s| s.wait_p50)),
                ("p95", RGBColor(200, 0, 120), series(&|s| s.wait_p95)),
            ],
        },
    ];
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let summary = &simulation.summary;
    let title = format!(
        "pool {}: {} tasks, wait p95 {:.1}s, max {} workers, {:.0} worker-seconds",
        summary.pool, summary.tasks, summary.wait_p95, summary.max_workers, summary.worker_seconds
    );
    let root = root
        .titled(&title, ("sans-serif", 22))
        .map_err(plot_error)?;
    let end = samples.last().map_or(1.0, |s| s.t).max(1.0);
    for (area, panel) in root.split_evenly((3, 1)).iter().zip(panels) {
        let top = panel
            .lines
            .iter()
            .flat_map(|(_, _, points)| points.iter().map(|&(_, y)| y))
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc(panel.y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| {
                if top > 10.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_error)?;
        for (index, (label, color, points)) in panel.lines.into_iter().enumerate() {
            let width = if index == 0 { 4 } else { 2 };
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(width)))
                .map_err(plot_error)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

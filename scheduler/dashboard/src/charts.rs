//! Charts drawn on the server as SVG (through maud, so every label is
//! escaped): line charts of the queues over time and of a video's
//! per-frame quality.

use std::fmt::Write as _;

use maud::{Markup, html};

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name in the legend.
    pub label: String,
    /// Its CSS class (the color).
    pub class: &'static str,
    /// Its points, `(x, y)`, x increasing; `None` y leaves a gap.
    pub points: Vec<(f64, Option<f64>)>,
}

/// A line chart's frame.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    /// The chart's title, also its accessible name.
    pub title: &'a str,
    /// Width and height in CSS pixels.
    pub size: (u32, u32),
    /// The y range; `None` fits the data (from zero).
    pub y_range: Option<(f64, f64)>,
    /// The unit after the y labels.
    pub unit: &'a str,
}

const PAD_LEFT: f64 = 44.0;
const PAD_RIGHT: f64 = 8.0;
const PAD_TOP: f64 = 8.0;
const PAD_BOTTOM: f64 = 18.0;

/// Draws `series` in `chart`.
#[must_use]
pub fn line_chart(chart: &Chart<'_>, series: &[Series]) -> Markup {
    let (width, height) = (f64::from(chart.size.0), f64::from(chart.size.1));
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x_min, x_max) = bounds(xs).unwrap_or((0.0, 1.0));
    let (y_min, y_max) = chart.y_range.unwrap_or_else(|| {
        let ys = series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.1));
        let (_, max) = bounds(ys).unwrap_or((0.0, 1.0));
        (0.0, nice_ceiling(max))
    });
    let x_span = if x_max > x_min { x_max - x_min } else { 1.0 };
    let y_span = if y_max > y_min { y_max - y_min } else { 1.0 };
    let plot_w = width - PAD_LEFT - PAD_RIGHT;
    let plot_h = height - PAD_TOP - PAD_BOTTOM;
    let x_of = |x: f64| PAD_LEFT + (x - x_min) / x_span * plot_w;
    let y_of = |y: f64| PAD_TOP + (1.0 - (y.clamp(y_min, y_max) - y_min) / y_span) * plot_h;
    let paths: Vec<(String, &Series)> = series
        .iter()
        .map(|s| {
            let mut d = String::new();
            let mut pen_down = false;
            for (x, y) in &s.points {
                match y {
                    Some(y) => {
                        let cmd = if pen_down { 'L' } else { 'M' };
                        let _ = write!(d, "{cmd}{:.1},{:.1} ", x_of(*x), y_of(*y));
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            (d, s)
        })
        .collect();
    let ticks = [y_min, y_min + y_span / 2.0, y_max];
    html! {
        figure.chart {
            svg role="img" aria-label=(chart.title) width=(chart.size.0) height=(chart.size.1)
                viewBox={ "0 0 " (chart.size.0) " " (chart.size.1) } {
                title { (chart.title) }
                @for t in ticks {
                    line.grid x1=(PAD_LEFT) x2=(width - PAD_RIGHT) y1=(fmt1(y_of(t))) y2=(fmt1(y_of(t))) {}
                    text.tick x=(PAD_LEFT - 4.0) y=(fmt1(y_of(t) + 4.0)) text-anchor="end" {
                        (short(t)) (chart.unit)
                    }
                }
                @for (d, s) in &paths {
                    path class={ "line " (s.class) } d=(d) {}
                }
            }
            figcaption {
                (chart.title)
                @if series.len() > 1 {
                    @for s in series {
                        " " span class={ "key " (s.class) } { "■ " (s.label) }
                    }
                }
            }
        }
    }
}

fn fmt1(v: f64) -> String {
    format!("{v:.1}")
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// A round number at or above `value`, for the top of an axis.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * magnitude >= value {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// A label short enough for an axis.
fn short(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_lines_drawn() {
        let chart = Chart {
            title: "<script>alert(1)</script>",
            size: (300, 100),
            y_range: None,
            unit: "",
        };
        let series = [
            Series {
                label: "a&b".into(),
                class: "s0",
                points: vec![(0.0, Some(1.0)), (1.0, None), (2.0, Some(3.0))],
            },
            Series {
                label: "flat".into(),
                class: "s1",
                points: vec![(0.0, None)],
            },
        ];
        let svg = line_chart(&chart, &series).into_string();
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("a&amp;b"));
        // The gap starts a new subpath.
        assert_eq!(svg.matches("M").count(), 2);
    }

    #[test]
    fn axis_tops_are_round() {
        assert!((nice_ceiling(7.3) - 10.0).abs() < 1e-9);
        assert!((nice_ceiling(130.0) - 200.0).abs() < 1e-9);
        assert!((nice_ceiling(0.0) - 1.0).abs() < 1e-9);
    }
}

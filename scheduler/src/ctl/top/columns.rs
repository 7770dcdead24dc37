//! Fitting `top`'s tables to the terminal's width: which columns stay,
//! how wide each is, and the cells cut to fit, so that no line wraps.
//!
//! A table's columns each have a natural width (the widest of the header
//! and the cells). When they do not all fit, in this order:
//! 1. the flexible columns (names, errors, stages) shrink to their
//!    preferred width;
//! 2. the droppable columns go, highest [`Column::drop`] rank first (the
//!    order each table documents in `render.rs`);
//! 3. the flexible columns shrink to their minimum, cut with `…`.
//!
//! Room left over after a drop goes back to the flexible columns, first
//! to last, up to their natural width.

use ratatui::layout::Alignment;
use ratatui::text::Span;

/// The space between two columns.
pub(super) const SPACING: u16 = 1;

/// How a cell too wide for its column is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// Keep the start: `video.transc…`.
    End,
    /// Keep the end: `…6f708192` (task ids, whose start is a timestamp
    /// shared by the tasks of one moment).
    Start,
}

/// One column of a `top` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Column {
    /// The header.
    pub header: &'static str,
    /// Numbers right, text left.
    pub align: Alignment,
    /// 0: never dropped; otherwise dropped before the columns of lower rank.
    pub drop: u8,
    /// For a flexible column: its preferred and its minimum width. A
    /// column that is not flexible keeps its natural width.
    pub flex: Option<(u16, u16)>,
    /// How its cells are cut.
    pub cut: Cut,
}

impl Column {
    /// A fixed column, right-aligned (numbers), dropped at rank `drop`.
    pub const fn number(header: &'static str, drop: u8) -> Self {
        Self {
            header,
            align: Alignment::Right,
            drop,
            flex: None,
            cut: Cut::End,
        }
    }

    /// A fixed column, left-aligned, dropped at rank `drop`.
    pub const fn text(header: &'static str, drop: u8) -> Self {
        Self {
            header,
            align: Alignment::Left,
            drop,
            flex: None,
            cut: Cut::End,
        }
    }

    /// A flexible, left-aligned column.
    pub const fn flex(header: &'static str, drop: u8, preferred: u16, min: u16) -> Self {
        Self {
            header,
            align: Alignment::Left,
            drop,
            flex: Some((preferred, min)),
            cut: Cut::End,
        }
    }

    /// The same column, cut at the start.
    pub const fn cut_start(mut self) -> Self {
        self.cut = Cut::Start;
        self
    }
}

/// The display width of `text` in terminal cells.
pub(super) fn text_width(text: &str) -> u16 {
    u16::try_from(Span::raw(text).width()).unwrap_or(u16::MAX)
}

/// The width each column gets within `width`, `None` for a dropped one.
pub(super) fn fit(columns: &[Column], rows: &[Vec<String>], width: u16) -> Vec<Option<u16>> {
    let natural: Vec<u16> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .filter_map(|row| row.get(i))
                .map(|cell| text_width(cell))
                .fold(text_width(c.header), u16::max)
        })
        .collect();
    let mut widths: Vec<Option<u16>> = natural.iter().copied().map(Some).collect();
    let total = |widths: &[Option<u16>]| -> u32 {
        let kept: Vec<u16> = widths.iter().flatten().copied().collect();
        let spaces = u32::from(SPACING) * u32::try_from(kept.len().saturating_sub(1)).unwrap_or(0);
        kept.iter().map(|w| u32::from(*w)).sum::<u32>() + spaces
    };
    let width = u32::from(width);
    // 1. Flexible columns to their preferred width.
    if total(&widths) > width {
        shrink_flex(columns, &mut widths, width, total, |(preferred, _)| {
            preferred
        });
    }
    // 2. Drop columns, highest rank first.
    while total(&widths) > width {
        let victim = columns
            .iter()
            .enumerate()
            .filter(|(i, c)| c.drop > 0 && widths[*i].is_some())
            .max_by_key(|(i, c)| (c.drop, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        match victim {
            Some(i) => widths[i] = None,
            None => break,
        }
    }
    // 3. Flexible columns to their minimum.
    if total(&widths) > width {
        shrink_flex(columns, &mut widths, width, total, |(_, min)| min);
    }
    // 4. What a drop freed, back to the flexible columns.
    for (i, column) in columns.iter().enumerate() {
        let (Some(_), Some(current)) = (column.flex, widths[i]) else {
            continue;
        };
        let room = width.saturating_sub(total(&widths));
        let grow = u16::try_from(room)
            .unwrap_or(u16::MAX)
            .min(natural[i] - current);
        widths[i] = Some(current + grow);
    }
    widths
}

/// Shrinks the flexible columns, the last first, towards `target`'s width
/// until the table fits `width` or they all reach it.
fn shrink_flex(
    columns: &[Column],
    widths: &mut [Option<u16>],
    width: u32,
    total: impl Fn(&[Option<u16>]) -> u32,
    target: impl Fn((u16, u16)) -> u16,
) {
    for (i, column) in columns.iter().enumerate().rev() {
        let (Some(flex), Some(current)) = (column.flex, widths[i]) else {
            continue;
        };
        let over = total(widths).saturating_sub(width);
        if over == 0 {
            return;
        }
        let floor = target(flex).min(current);
        let cut = u16::try_from(over).unwrap_or(u16::MAX).min(current - floor);
        widths[i] = Some(current - cut);
    }
}

/// `text` cut to `width` cells with `…` where it was cut.
pub(super) fn cut(text: &str, width: u16, how: Cut) -> String {
    if text_width(text) <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let room = usize::from(width - 1);
    let mut kept = String::new();
    let mut used = 0;
    let chars: Vec<char> = match how {
        Cut::End => text.chars().collect(),
        Cut::Start => text.chars().rev().collect(),
    };
    for c in chars {
        let w = Span::raw(c.to_string()).width();
        if used + w > room {
            break;
        }
        used += w;
        kept.push(c);
    }
    match how {
        Cut::End => format!("{kept}…"),
        Cut::Start => format!("…{}", kept.chars().rev().collect::<String>()),
    }
}

/// The levels of a sparkline, lowest first.
const LEVELS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of `values` (oldest first) as text, one cell each, scaled
/// to their maximum; a value above zero shows at least the lowest bar.
pub(super) fn sparkline(values: &[f64]) -> String {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|&v| {
            if max <= 0.0 || v <= 0.0 {
                '▁'
            } else {
                // 1..=8 by construction: the cast cannot overflow.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let level = ((v / max) * 8.0).ceil().clamp(1.0, 8.0) as usize;
                LEVELS[level]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(cells: &[&[&str]]) -> Vec<Vec<String>> {
        cells
            .iter()
            .map(|r| r.iter().map(|c| (*c).to_owned()).collect())
            .collect()
    }

    #[test]
    fn everything_fits_at_natural_width() {
        let columns = [Column::text("NAME", 1), Column::number("N", 2)];
        let rows = rows(&[&["video.transcode", "12"]]);
        assert_eq!(fit(&columns, &rows, 80), [Some(15), Some(2)]);
    }

    #[test]
    fn flexible_columns_shrink_then_columns_drop_in_rank_order() {
        let columns = [
            Column::flex("NAME", 0, 8, 4),
            Column::number("A", 1),
            Column::number("B", 2),
            Column::number("C", 0),
        ];
        let rows = rows(&[&["abcdefghijklmnop", "1111", "2222", "3333"]]);
        // 16 + 4 + 4 + 4 + 3 spaces = 31.
        assert_eq!(
            fit(&columns, &rows, 31),
            [Some(16), Some(4), Some(4), Some(4)]
        );
        // The name shrinks to 8 first: 23.
        assert_eq!(
            fit(&columns, &rows, 23),
            [Some(8), Some(4), Some(4), Some(4)]
        );
        // Then B (rank 2) goes, then A; the name takes back what is left.
        assert_eq!(fit(&columns, &rows, 22), [Some(12), Some(4), None, Some(4)]);
        assert_eq!(fit(&columns, &rows, 17), [Some(12), None, None, Some(4)]);
        assert_eq!(fit(&columns, &rows, 13), [Some(8), None, None, Some(4)]);
        // Then the name shrinks to its minimum, and no further.
        assert_eq!(fit(&columns, &rows, 10), [Some(5), None, None, Some(4)]);
        assert_eq!(fit(&columns, &rows, 3), [Some(4), None, None, Some(4)]);
    }

    #[test]
    fn cells_are_cut_with_an_ellipsis_at_either_end() {
        assert_eq!(cut("video.transcode", 8, Cut::End), "video.t…");
        assert_eq!(cut("0193a7c4-6f708192", 9, Cut::Start), "…6f708192");
        assert_eq!(cut("short", 8, Cut::End), "short");
        assert_eq!(cut("ab", 0, Cut::End), "");
    }

    #[test]
    fn sparklines_scale_to_their_maximum() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0, 8.0]), "▁▁▂▄█");
        assert_eq!(sparkline(&[0.0, 0.0]), "▁▁");
        assert_eq!(sparkline(&[]), "");
    }
}

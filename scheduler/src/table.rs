//! A tiny column renderer for `spoolctl`'s human output.

use std::fmt::{self, Write as _};

/// How the cells of a column line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Padded on the right: text.
    Left,
    /// Padded on the left: numbers.
    Right,
}

/// A header row and rows of text cells, displayed as aligned columns two
/// spaces apart, without trailing whitespace.
///
/// Cells are made safe for a terminal: control characters (newlines, escape
/// sequences) become spaces or `?`, so data read from the broker cannot
/// break the layout or drive the terminal.
///
/// # Examples
///
/// ```
/// use spool_scheduler::table::{Align, Table};
///
/// let mut table = Table::new([("QUEUE", Align::Left), ("READY", Align::Right)]);
/// table.row(["default", "12"]).row(["gpu", "3"]);
/// assert_eq!(table.to_string(), "QUEUE    READY\ndefault     12\ngpu          3\n");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Table {
    aligns: Vec<Align>,
    lines: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    #[must_use]
    pub fn new<S: AsRef<str>>(columns: impl IntoIterator<Item = (S, Align)>) -> Self {
        let (header, aligns) = columns
            .into_iter()
            .map(|(name, align)| (clean(name.as_ref()), align))
            .unzip();
        Self {
            aligns,
            lines: vec![header],
        }
    }

    /// Appends a row. Missing cells are left blank; cells beyond the last
    /// column are dropped.
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        let mut row: Vec<String> = cells.into_iter().map(|c| clean(c.as_ref())).collect();
        row.resize(self.aligns.len(), String::new());
        self.lines.push(row);
        self
    }

    /// How many rows there are, the header aside.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lines.len() - 1
    }

    /// Whether there is no row besides the header.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |col: usize| self.lines.iter().map(|l| l[col].chars().count()).max();
        let widths: Vec<usize> = (0..self.aligns.len())
            .map(|c| width(c).unwrap_or(0))
            .collect();
        for line in &self.lines {
            let mut out = String::new();
            for (col, cell) in line.iter().enumerate() {
                let sep = if col == 0 { "" } else { "  " };
                let w = widths[col];
                match self.aligns[col] {
                    Align::Left => write!(out, "{sep}{cell:<w$}")?,
                    Align::Right => write!(out, "{sep}{cell:>w$}")?,
                }
            }
            writeln!(f, "{}", out.trim_end())?;
        }
        Ok(())
    }
}

/// `text` cut to at most `max` characters, an ellipsis marking the cut.
#[must_use]
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Replaces control characters: whitespace ones by a space, others by `?`.
pub(crate) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if !c.is_control() => c,
            c if c.is_whitespace() => ' ',
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_spaces() {
        let mut table = Table::new([
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("NOTE", Align::Left),
        ]);
        table
            .row(["a", "1000", ""])
            .row(["longer", "7", "x"])
            .row(["short"]);
        assert_eq!(
            table.to_string(),
            "NAME       N  NOTE\n\
             a       1000\n\
             longer     7  x\n\
             short\n"
        );
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn control_characters_cannot_break_the_layout() {
        let mut table = Table::new([("A", Align::Left), ("B", Align::Left)]);
        table.row(["two\nlines\t", "\u{1b}[31mred", "dropped"]);
        assert_eq!(table.to_string(), "A           B\ntwo lines   ?[31mred\n");
    }

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("short", 5), "short");
        assert_eq!(truncate("élégant", 4), "élé…");
        assert_eq!(truncate("abc", 1), "…");
        assert_eq!(truncate("abc", 0), "");
    }
}

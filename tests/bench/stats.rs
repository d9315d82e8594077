//! Summaries of repeated measurements and the lines that report them.

use std::io::Write as _;

/// Median, extremes and count of a series of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    /// How many measurements there were.
    pub(crate) count: usize,
    /// The middle value (the mean of the two middle ones for an even count).
    pub(crate) median: f64,
    /// The smallest value.
    pub(crate) min: f64,
    /// The largest value.
    pub(crate) max: f64,
}

impl Summary {
    /// Summarises `values`, or `None` when there are none.
    pub(crate) fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|value| value.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median =
            if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 };
        Some(Summary { count: sorted.len(), median, min: sorted[0], max: sorted[sorted.len() - 1] })
    }

    /// The slowest run relative to the median.
    pub(crate) fn spread(&self) -> f64 {
        if self.median > 0.0 { self.max / self.median } else { f64::NAN }
    }
}

/// Writes one line to stdout at once, so that progress shows while the benchmark runs.
pub(crate) fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (say, `| head`) must not abort a run that is cleaning up namespaces.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// A plain text table with right-aligned columns after the first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with the given header.
    pub(crate) fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()] }
    }

    /// Appends a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, the header underlined.
    pub(crate) fn render(&self) -> Vec<String> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut lines = Vec::new();
        for (index, row) in self.rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(column, cell)| {
                    if column == 0 {
                        format!("{cell:<width$}", width = widths[column])
                    } else {
                        format!("{cell:>width$}", width = widths[column])
                    }
                })
                .collect();
            lines.push(cells.join("  ").trim_end().to_owned());
            if index == 0 {
                let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
                lines.push("-".repeat(total));
            }
        }
        lines
    }

    /// Prints the table.
    pub(crate) fn print(&self) {
        for line in self.render() {
            say(&line);
        }
    }
}

/// Milliseconds without decimals, for tables.
pub(crate) fn ms(value: f64) -> String {
    if value.is_finite() { format!("{value:.0}") } else { "-".to_owned() }
}

/// A ratio with two decimals.
pub(crate) fn ratio(value: f64) -> String {
    if value.is_finite() { format!("{value:.2}") } else { "-".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_middle_and_the_extremes() {
        let odd = Summary::of(&[30.0, 10.0, 20.0]).unwrap();
        assert_eq!((odd.count, odd.median, odd.min, odd.max), (3, 20.0, 10.0, 30.0));
        let even = Summary::of(&[40.0, 10.0, 20.0, 30.0]).unwrap();
        assert_eq!(even.median, 25.0);
        assert!((even.spread() - 1.6).abs() < 1e-9);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }

    #[test]
    fn tables_align_their_columns() {
        let mut table = Table::new(&["config", "median"]);
        table.row(vec!["fechter".to_owned(), "612".to_owned()]);
        table.row(vec!["keepalived default".to_owned(), "3540".to_owned()]);
        let lines = table.render();
        assert_eq!(lines[0], "config              median");
        assert_eq!(lines[1], "-".repeat(26));
        assert_eq!(lines[2], "fechter                612");
        assert_eq!(lines[3], "keepalived default    3540");
        assert_eq!(ms(f64::NAN), "-");
        assert_eq!(ratio(0.1234), "0.12");
    }
}

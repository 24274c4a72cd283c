//! How the CLI prints: a table of columns, or one JSON object per line.

use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Left-aligned columns separated by two spaces; a column of numbers ("SECONDS") is right-aligned.
pub fn write_columns<const N: usize>(
    header: &[String; N],
    rows: &[[String; N]],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == N - 1 {
                line.push_str(cell);
            } else if header[i] == "SECONDS" {
                line.push_str(&format!("{}{cell}  ", " ".repeat(pad)));
            } else {
                line.push_str(&format!("{cell}{}  ", " ".repeat(pad)));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

//! The output: machine facts, then one row per metric, as an aligned table or as CSV.

use std::io::{self, Write};

use crate::scenario::Metric;

/// One metric's medians: raw's and Tachyon's, or the one server's in `--url` mode.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) metric: &'static Metric,
    pub(crate) medians: Medians,
}

#[derive(Debug)]
pub(crate) enum Medians {
    Compared { raw: f64, tachyon: f64 },
    Single(f64),
}

/// One compared row per metric of `metrics`: the median over the rounds of each side's runs
/// (`runs[side][round][metric]`, side 0 the baseline).
pub(crate) fn compared(metrics: &'static [Metric], runs: &[Vec<Vec<f64>>; 2]) -> Vec<Row> {
    let median_of = |side: usize, index: usize| {
        let mut values: Vec<f64> = runs[side].iter().map(|values| values[index]).collect();
        median(&mut values)
    };
    metrics
        .iter()
        .enumerate()
        .map(|(index, metric)| Row {
            metric,
            medians: Medians::Compared {
                raw: median_of(0, index),
                tachyon: median_of(1, index),
            },
        })
        .collect()
}

/// The middle value (the mean of the two middle ones for an even count).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

/// `name: value` lines, or `# name: value` ahead of CSV.
pub(crate) fn write_facts(
    out: &mut impl Write,
    facts: &[(&str, String)],
    csv: bool,
) -> io::Result<()> {
    let prefix = if csv { "# " } else { "" };
    for (name, value) in facts {
        writeln!(out, "{prefix}{name}: {value}")?;
    }
    if !csv {
        writeln!(out)?;
    }
    Ok(())
}

pub(crate) fn write_rows(out: &mut impl Write, rows: &[Row], csv: bool) -> io::Result<()> {
    let compared = rows
        .iter()
        .all(|row| matches!(row.medians, Medians::Compared { .. }));
    let header: Vec<&str> = if compared {
        vec![
            "scenario",
            "unit",
            "raw (median)",
            "tachyon (median)",
            "ratio",
            "target",
            "met?",
        ]
    } else {
        vec!["scenario", "unit", "median"]
    };
    let mut table = vec![
        header
            .iter()
            .map(|&cell| cell.to_owned())
            .collect::<Vec<_>>(),
    ];
    for row in rows {
        let Metric {
            name,
            unit,
            decimals,
            goal,
        } = *row.metric;
        let value = |value: f64| format!("{value:.decimals$}");
        table.push(match row.medians {
            Medians::Compared { raw, tachyon } => {
                let met = match goal.is_met(raw, tachyon) {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                };
                vec![
                    name.to_owned(),
                    unit.to_owned(),
                    value(raw),
                    value(tachyon),
                    format!("{:.3}", tachyon / raw),
                    goal.describe(unit),
                    met.to_owned(),
                ]
            }
            Medians::Single(median) => vec![name.to_owned(), unit.to_owned(), value(median)],
        });
    }
    if csv {
        for line in &table {
            writeln!(out, "{}", line.join(","))?;
        }
        return Ok(());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            table
                .iter()
                .map(|line| line[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in &table {
        let mut text = String::new();
        for (column, (cell, width)) in line.iter().zip(&widths).enumerate() {
            // Numbers (the medians and the ratio) right, words left.
            if (2..5).contains(&column) {
                text.push_str(&format!("{cell:>width$}  "));
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}

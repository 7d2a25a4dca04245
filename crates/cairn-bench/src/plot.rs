//! SVG latency plots (plotters, SVG backend only): the latency-by-percentile spectrum of one
//! or more runs on top, their per-second p50/p99 below.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::Report;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// x of a percentile on the spectrum axis: −log10(1 − p/100) (0 → 0 %, 2 → 99 %, 3 → 99.9 %).
fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).max(1e-9).log10()
}

fn percentile_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Writes an SVG of the runs (each labelled) to `path`.
pub fn write_svg(path: &Path, title: &str, runs: &[(&str, &Report)]) -> Result<()> {
    let e = |err: &dyn std::fmt::Display| anyhow!("plotting {}: {err}", path.display());
    let root = SVGBackend::new(path, (900, 820)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(440);

    // Spectrum (the max, at 100 %, is in the table; a log axis cannot place it).
    let points: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, r)| {
            r.percentiles
                .iter()
                .filter(|(p, _)| *p < 100.0)
                .map(|&(p, ms)| (nines(p), ms.max(0.001)))
                .collect()
        })
        .collect();
    let x_max = points.iter().flatten().map(|p| p.0).fold(1.0f64, f64::max).ceil();
    let y_max = points.iter().flatten().map(|p| p.1).fold(0.01f64, f64::max) * 1.5;
    let y_min = points.iter().flatten().map(|p| p.1).fold(f64::INFINITY, f64::min).min(y_max / 10.0) / 1.5;
    let mut chart = ChartBuilder::on(&top)
        .caption("latency by percentile", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&percentile_label)
        .y_desc("ms")
        .x_desc("percentile")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, ((name, _), pts)) in runs.iter().zip(&points).enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;

    // Timeline.
    let t_max = runs.iter().flat_map(|(_, r)| r.timeline.iter().map(|s| s.t_s)).fold(1.0f64, f64::max);
    let y2_max =
        runs.iter().flat_map(|(_, r)| r.timeline.iter().map(|s| s.p99_ms)).fold(0.01f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("p50 (solid) and p99 (dashed) per second", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..t_max, 0f64..y2_max)
        .map_err(|x| e(&x))?;
    chart.configure_mesh().y_desc("ms").x_desc("seconds").draw().map_err(|x| e(&x))?;
    for (i, (name, r)) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(r.timeline.iter().map(|s| (s.t_s, s.p50_ms)), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                r.timeline.iter().map(|s| (s.t_s, s.p99_ms)),
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_round_trips() {
        assert_eq!(percentile_label(&nines(99.0)), "99%");
        assert_eq!(percentile_label(&nines(99.9)), "99.9%");
        assert_eq!(percentile_label(&0.0), "0%");
    }
}

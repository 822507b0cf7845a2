//! SVG charts with plotters' SVG backend (no system fonts: text is left to the SVG viewer):
//! latency CDFs per target and level, and output throughput and p99 TTFT against load.

use crate::bench::BenchReport;
use crate::metrics::{itl_gaps, tpot, ttft};
use crate::record::RequestRecord;
use crate::BenchError;
use plotters::prelude::*;

const SIZE: (u32, u32) = (900, 560);

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Report(format!("drawing a chart: {e}"))
}

/// Draws line series on linear axes; returns the SVG text.
fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_max: Option<f64>,
) -> Result<String, BenchError> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = y_max.unwrap_or(if y1 > 0.0 { y1 * 1.08 } else { 1.0 });
    let x0 = if x0 > 0.0 && x0 < 0.2 * x1 { 0.0 } else { x0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, 0f64..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            if s.points.len() <= 16 {
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(err)?;
            }
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Empirical CDF as a step function, in milliseconds.
fn cdf(mut values_s: Vec<f64>) -> Vec<(f64, f64)> {
    values_s.retain(|v| v.is_finite());
    values_s.sort_by(f64::total_cmp);
    let n = values_s.len() as f64;
    let mut pts = Vec::with_capacity(values_s.len() * 2);
    for (i, v) in values_s.iter().enumerate() {
        pts.push((v * 1e3, i as f64 / n));
        pts.push((v * 1e3, (i + 1) as f64 / n));
    }
    pts
}

type Metric = fn(&RequestRecord) -> Vec<f64>;

const CDFS: &[(&str, &str, Metric)] = &[
    ("ttft_cdf.svg", "TTFT", |r| {
        ttft(&r.chunks).into_iter().collect()
    }),
    ("tpot_cdf.svg", "TPOT", |r| {
        ttft(&r.chunks)
            .and_then(|t| tpot(t, r.end, r.output_tokens()))
            .into_iter()
            .collect()
    }),
    ("itl_cdf.svg", "Inter-token latency", |r| {
        itl_gaps(&r.chunks)
    }),
    ("e2e_cdf.svg", "End-to-end latency", |r| vec![r.end]),
];

pub fn charts(r: &BenchReport) -> Result<Vec<(String, String)>, BenchError> {
    let mut out = Vec::new();
    for (file, title, metric) in CDFS {
        let series: Vec<Series> = r
            .targets
            .iter()
            .flat_map(|t| t.levels.iter().map(move |l| (t, l)))
            .map(|(t, l)| Series {
                name: format!("{} {}", t.label, l.name),
                points: cdf(l
                    .records
                    .iter()
                    .filter(|x| x.ok())
                    .flat_map(metric)
                    .collect()),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        let svg = line_chart(
            &format!("{title} CDF"),
            "milliseconds",
            "fraction",
            &series,
            Some(1.0),
        )?;
        out.push((file.to_string(), svg));
    }
    let x_desc = if r
        .load
        .levels
        .iter()
        .all(|l| matches!(l, crate::LoadLevel::Closed { .. }))
    {
        "concurrency"
    } else {
        "load level (concurrency or requests/s)"
    };
    let per_level = |f: fn(&crate::Summary) -> Option<f64>| -> Vec<Series> {
        r.targets
            .iter()
            .map(|t| Series {
                name: t.label.clone(),
                points: t
                    .levels
                    .iter()
                    .filter_map(|l| Some((l.level.x(), f(&l.summary)?)))
                    .collect(),
            })
            .collect()
    };
    let thr = per_level(|s| Some(s.output_token_throughput));
    out.push((
        "throughput.svg".into(),
        line_chart("Output throughput", x_desc, "output tokens/s", &thr, None)?,
    ));
    let p99 = per_level(|s| s.ttft_ms.map(|t| t.p99));
    out.push((
        "ttft_p99.svg".into(),
        line_chart("p99 TTFT", x_desc, "milliseconds", &p99, None)?,
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cdf_steps_reach_one() {
        let p = super::cdf(vec![0.003, 0.001, 0.002]);
        assert_eq!(p.first(), Some(&(1.0, 0.0)));
        assert_eq!(p.last(), Some(&(3.0, 1.0)));
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn chart_is_svg_with_the_labels() {
        let s = super::Series {
            name: "gpu-a c=4".into(),
            points: vec![(1.0, 10.0), (4.0, 30.0)],
        };
        let svg = super::line_chart("T", "x", "y", &[s], None).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("gpu-a c=4"));
        let empty = super::line_chart("T", "x", "y", &[], None).unwrap();
        assert!(empty.contains("</svg>"));
    }
}

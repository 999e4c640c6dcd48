//! Request latency over time around a switch, several runs on one chart, as an SVG.

use std::error::Error;
use std::io;
use std::path::Path;

use plotters::prelude::*;

use crate::Sample;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 550;
/// Time buckets across the x axis; each series draws its slowest successful request per bucket.
const BUCKETS: usize = 700;
const PALETTE: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];
const FAILURE: RGBColor = RGBColor(214, 39, 40);

/// The samples of one run that start from `before_us` before `window` until `after_us`
/// after it, re-based so that the window starts at `before_us`: the returned window and
/// samples of several runs (each cut around its own switch) then share one time axis.
pub fn around(
    samples: &[Sample],
    window: (u64, u64),
    before_us: u64,
    after_us: u64,
) -> (Vec<Sample>, (u64, u64)) {
    let from = window.0.saturating_sub(before_us);
    let to = window.1.saturating_add(after_us);
    let shift = |t: u64| t + before_us - window.0; // t >= from, so never negative
    let cut = samples
        .iter()
        .filter(|s| (from..to).contains(&s.start_us))
        .map(|s| Sample {
            start_us: shift(s.start_us),
            ..s.clone()
        })
        .collect();
    (cut, (shift(window.0), shift(window.1)))
}

/// Draws request latency (ms, log scale) over time: per series a line through the slowest
/// successful request of each time bucket (a round width, about 1/700 of the time axis; the
/// line breaks where a bucket has failures and no success), each failed request as a red x
/// at its start and latency, the windows shaded. Time is in ms since the start of the first window (a switch begins at 0),
/// or since the run start when there are no windows.
pub fn svg_chart(
    series: &[(&str, &[Sample])],
    windows: &[(u64, u64)],
    path: &Path,
) -> io::Result<()> {
    draw(series, windows, path).map_err(|e| io::Error::other(e.to_string()))
}

fn latency_ms(s: &Sample) -> f64 {
    (s.latency_us as f64 / 1000.0).max(0.001)
}

fn tick(v: &f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A round bucket width (1, 2 or 5 × 10ⁿ ms) giving at most about [`BUCKETS`] buckets.
fn bucket_width(span_ms: f64) -> f64 {
    let want = (span_ms / BUCKETS as f64).max(1e-3);
    let decade = 10f64.powf(want.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|w| *w >= want * 0.999)
        .unwrap_or(10.0 * decade)
}

/// The points of one series' line: per time bucket, the slowest successful request at the
/// bucket's middle; `None` (a break in the line) for a bucket with failures and no success;
/// buckets where no request started are skipped.
fn line_points(
    samples: &[Sample],
    x: &impl Fn(u64) -> f64,
    x0: f64,
    width: f64,
    buckets: usize,
) -> Vec<Option<(f64, f64)>> {
    let mut slowest = vec![None::<f64>; buckets];
    let mut failed = vec![false; buckets];
    for s in samples {
        let b = (((x(s.start_us) - x0) / width) as usize).min(buckets - 1);
        if s.outcome.is_ok() {
            let v = latency_ms(s);
            slowest[b] = Some(slowest[b].map_or(v, |m| m.max(v)));
        } else {
            failed[b] = true;
        }
    }
    let middle = |b: usize| x0 + (b as f64 + 0.5) * width;
    (0..buckets)
        .filter(|&b| slowest[b].is_some() || failed[b])
        .map(|b| slowest[b].map(|v| (middle(b), v)))
        .collect()
}

fn draw(
    series: &[(&str, &[Sample])],
    windows: &[(u64, u64)],
    path: &Path,
) -> Result<(), Box<dyn Error>> {
    let origin = windows.first().map_or(0, |w| w.0) as f64;
    let x = |us: u64| (us as f64 - origin) / 1000.0;
    let samples = || series.iter().flat_map(|(_, s)| s.iter());
    let xs = samples()
        .map(|s| x(s.start_us))
        .chain(windows.iter().flat_map(|&(a, b)| [x(a), x(b)]));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (x0, x1) = if x0 < x1 {
        (x0, x1)
    } else {
        (x0.min(0.0), x0.max(0.0) + 1.0)
    };
    let width = bucket_width(x1 - x0);
    let buckets = (((x1 - x0) / width).ceil() as usize).max(1);
    let lines: Vec<_> = series
        .iter()
        .map(|(_, samples)| line_points(samples, &x, x0, width, buckets))
        .collect();
    // The y range covers what is drawn: those maxima and every failure.
    let drawn = lines
        .iter()
        .flatten()
        .flatten()
        .map(|p| p.1)
        .chain(samples().filter(|s| !s.outcome.is_ok()).map(latency_ms));
    let (y0, y1) = drawn.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y0, y1) = if y0 <= y1 {
        (y0 / 1.5, y1 * 1.5)
    } else {
        (0.01, 1.0)
    };

    let y_desc = format!(
        "latency, ms (log scale): slowest request per {} ms",
        tick(&width)
    );
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("request latency over time", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(if windows.is_empty() {
            "request start, ms since the run started"
        } else {
            "request start, ms since the switch began"
        })
        .y_desc(y_desc.as_str())
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    let shade = RGBAColor(255, 190, 0, 0.25);
    chart
        .draw_series(
            windows
                .iter()
                .map(|&(a, b)| Rectangle::new([(x(a), y0), (x(b), y1)], shade.filled())),
        )?
        .label("switch window")
        .legend(move |(px, py)| Rectangle::new([(px, py - 6), (px + 16, py + 6)], shade.filled()));

    for (i, ((label, samples), points)) in series.iter().zip(&lines).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let failed = samples.iter().filter(|s| !s.outcome.is_ok()).count();
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())?
            .label(format!(
                "{label}: {} requests, {failed} failed",
                samples.len()
            ))
            .legend(move |(px, py)| {
                PathElement::new([(px, py), (px + 16, py)], color.stroke_width(2))
            });
        for run in points.split(Option::is_none).filter(|r| !r.is_empty()) {
            let run: Vec<(f64, f64)> = run.iter().flatten().copied().collect();
            if run.len() == 1 {
                chart.draw_series([Circle::new(run[0], 2, color.filled())])?;
            } else {
                chart.draw_series(LineSeries::new(run, color.stroke_width(1)))?;
            }
        }
        chart.draw_series(
            samples
                .iter()
                .filter(|s| !s.outcome.is_ok())
                .map(|s| Cross::new((x(s.start_us), latency_ms(s)), 4, FAILURE.stroke_width(2))),
        )?;
    }
    if series
        .iter()
        .any(|(_, s)| s.iter().any(|s| !s.outcome.is_ok()))
    {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())?
            .label("failed request (at its start)")
            .legend(|(px, py)| Cross::new((px + 8, py), 4, FAILURE.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

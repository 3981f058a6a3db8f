//! The incident chart: failure rate and baseline per evaluation step, the
//! incident's span shaded, rendered in-process to PNG.
//!
//! plotters draws into an RGB buffer and the `png` crate encodes it. Text is
//! drawn with plotters' `ab_glyph` backend from a font compiled into the
//! binary (DejaVu Sans Mono, Bitstream Vera licence, in `assets/fonts/`), so a
//! container without fontconfig or any system font still gets labelled charts.

use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::incident::{Incident, SeriesPoint};

/// Chart width, pixels.
pub const WIDTH: u32 = 800;
/// Chart height, pixels.
pub const HEIGHT: u32 = 400;
/// The failure-rate line's colour.
pub const RATE_COLOUR: RGBColor = RGBColor(214, 39, 40);
/// The baseline line's colour.
pub const BASELINE_COLOUR: RGBColor = RGBColor(31, 119, 180);
/// The incident span's fill.
const SPAN_COLOUR: RGBColor = RGBColor(253, 228, 228);

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSansMono.ttf");

/// Why no chart could be made.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The incident has no series points yet.
    #[error("no series points to chart")]
    NoData,
    /// The embedded font could not be registered.
    #[error("the embedded font is unusable")]
    Font,
    /// Drawing failed.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// PNG encoding failed.
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    })
}

fn draw_err(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Renders the chart of `inc` over `series` as a `WIDTH` x `HEIGHT` PNG.
pub fn render(inc: &Incident, series: &[SeriesPoint]) -> Result<Vec<u8>, ChartError> {
    if series.is_empty() {
        return Err(ChartError::NoData);
    }
    if !font_ready() {
        return Err(ChartError::Font);
    }
    let volume = inc
        .root_causes
        .first()
        .is_some_and(|c| c.expected_events.is_some());
    // Rates are drawn in percent; volumes as counts.
    let scale = if volume { 1.0 } else { 100.0 };
    // The chart starts a step or more before the episode began: a "before"
    // to compare with.
    let began = inc.episode.began_at.unwrap_or(inc.opened_at);
    let step = series
        .windows(2)
        .map(|w| (w[1].at - w[0].at).abs())
        .min()
        .filter(|d| *d > Duration::zero())
        .unwrap_or(Duration::minutes(1));
    let origin: DateTime<Utc> = series
        .iter()
        .map(|p| p.at)
        .min()
        .unwrap_or(inc.opened_at)
        .min(began - step);
    let minutes = |t: DateTime<Utc>| (t - origin).num_milliseconds() as f64 / 60_000.0;
    let mut pts: Vec<(f64, f64, f64)> = series
        .iter()
        .map(|p| {
            (
                minutes(p.at),
                finite(p.value) * scale,
                finite(p.baseline) * scale,
            )
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x_last = pts.last().map(|p| p.0).unwrap_or(0.0);
    let (x0, x1) = (-0.5, x_last.max(1.0) + 0.5);
    let y_max = pts
        .iter()
        .map(|p| p.1.max(p.2))
        .fold(0.0f64, f64::max)
        .max(if volume { 1.0 } else { 0.1 })
        * 1.15;
    let span_start = minutes(began).max(x0);
    let opened_x = minutes(inc.opened_at);
    let span_end = inc.resolved_at.map(minutes).unwrap_or(x1).min(x1);

    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let title = crate::notify::slack::blocks::truncate(
            &crate::redact::redact(&format!(
                "{} · {}",
                inc.rule,
                inc.root_causes
                    .first()
                    .map(|c| super::blocks::dims_text(&c.dims))
                    .unwrap_or_default()
            )),
            70,
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17).into_font())
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, 0f64..y_max)
            .map_err(draw_err)?;
        let fmt_x = |x: &f64| {
            (origin + Duration::milliseconds((*x * 60_000.0) as i64))
                .format("%H:%M")
                .to_string()
        };
        let y_desc = if volume {
            "events per window"
        } else {
            "failure rate, %"
        };
        chart
            .configure_mesh()
            .x_desc("event time (UTC)")
            .y_desc(y_desc)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&|y| {
                if volume {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .x_labels(8)
            .y_labels(6)
            .light_line_style(RGBColor(238, 238, 238))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(draw_err)?;
        if span_end > span_start {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(span_start, 0.0), (span_end, y_max)],
                    SPAN_COLOUR.filled(),
                )))
                .map_err(draw_err)?
                .label("incident")
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 16, y + 5)], SPAN_COLOUR.filled())
                });
        }
        // The baseline band: normal, under the baseline line.
        chart
            .draw_series(std::iter::once(Polygon::new(
                pts.iter()
                    .map(|p| (p.0, p.2))
                    .chain(pts.last().map(|p| (p.0, 0.0)))
                    .chain(pts.first().map(|p| (p.0, 0.0)))
                    .collect::<Vec<_>>(),
                BASELINE_COLOUR.mix(0.18).filled(),
            )))
            .map_err(draw_err)?;
        // The opening, inside the episode's span (which starts when it began).
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(opened_x, 0.0), (opened_x, y_max)],
                BLACK.mix(0.6).stroke_width(1),
            )))
            .map_err(draw_err)?
            .label("opened")
            .legend(|(x, y)| {
                PathElement::new(vec![(x + 8, y - 6), (x + 8, y + 6)], BLACK.mix(0.6))
            });
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.2)),
                BASELINE_COLOUR.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(if volume { "expected" } else { "baseline" })
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], BASELINE_COLOUR.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                RATE_COLOUR.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(if volume { "observed" } else { "failure rate" })
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], RATE_COLOUR.stroke_width(2))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    encode_png(&buf)
}

fn finite(x: f64) -> f64 {
    if x.is_finite() && x >= 0.0 {
        x
    } else {
        0.0
    }
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::with_capacity(64 * 1024);
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| ChartError::Encode(e.to_string()))?;
        w.write_image_data(rgb)
            .map_err(|e| ChartError::Encode(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{ts, Status};
    use crate::store::memory::fixtures::incident;

    /// Decodes a PNG into (width, height, RGB bytes).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut img = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut img).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        img.truncate(info.buffer_size());
        (info.width, info.height, img)
    }

    #[test]
    fn chart_decodes_and_draws_the_spike_high() {
        // One hour of steps: flat 0.5% baseline, a 40% spike in minutes 25..35.
        let start = 1_772_409_600_000i64;
        let series: Vec<SeriesPoint> = (0..60)
            .map(|m| {
                let spike = (25..35).contains(&m);
                SeriesPoint {
                    at: ts(start + m * 60_000),
                    events: 1000,
                    failures: if spike { 400 } else { 5 },
                    value: if spike { 0.40 } else { 0.005 },
                    baseline: 0.005,
                }
            })
            .collect();
        let mut inc = incident("inc_chart", start + 25 * 60_000);
        inc.status = Status::Resolved;
        inc.resolved_at = Some(ts(start + 35 * 60_000));
        let png = render(&inc, &series).unwrap();
        let (w, h, rgb) = decode(&png);
        assert_eq!((w, h), (WIDTH, HEIGHT));

        let px = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            RGBColor(rgb[i], rgb[i + 1], rgb[i + 2])
        };
        let rate: Vec<(u32, u32)> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| px(x, y) == RATE_COLOUR)
            .collect();
        assert!(rate.len() > 200, "rate line has {} pixels", rate.len());
        // The highest rate pixels sit over the spike: the middle of the x axis,
        // in the top quarter of the image. The legend swatch (top right) is
        // excluded by taking only pixels left of the legend.
        let plotted: Vec<&(u32, u32)> = rate.iter().filter(|(x, _)| *x < w * 3 / 4).collect();
        let top = plotted.iter().map(|(_, y)| *y).min().unwrap();
        assert!(top < h / 4, "top of the rate line at y={top}");
        let top_xs: Vec<u32> = plotted
            .iter()
            .filter(|(_, y)| *y <= top + 2)
            .map(|(x, _)| *x)
            .collect();
        let mid = top_xs.iter().sum::<u32>() / top_xs.len() as u32;
        assert!(
            (w * 3 / 10..w * 7 / 10).contains(&mid),
            "spike drawn at x={mid}, expected mid-chart"
        );
        // Outside the spike the rate line runs near the bottom.
        let early: Vec<u32> = plotted
            .iter()
            .filter(|(x, _)| *x < w / 5 && *x > w / 8)
            .map(|(_, y)| *y)
            .collect();
        assert!(
            !early.is_empty() && early.iter().all(|y| *y > h / 2),
            "{early:?}"
        );
        // Text was drawn: dark pixels beyond the axes' lines.
        let dark = rgb
            .chunks(3)
            .filter(|p| p[0] < 80 && p[1] < 80 && p[2] < 80)
            .count();
        assert!(dark > 1500, "only {dark} dark pixels: labels missing?");
    }

    #[test]
    fn empty_series_is_no_chart() {
        let inc = incident("inc_chart", 1_772_409_600_000);
        assert!(matches!(render(&inc, &[]), Err(ChartError::NoData)));
    }
}

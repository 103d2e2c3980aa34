//! One PNG figure per agreement report, drawn with `plotters` on its bitmap backend. Text is
//! rendered by `ab_glyph` from a TrueType file read at run time ([`FONT_PATH`], or the file
//! `LABELFLEET_FONT` names), so no fontconfig or freetype library is needed.
//!
//! Layout, for labelers L1..Ln:
//! - top row, one panel per labeler: its confusion matrix against the human grades as a
//!   heatmap; the colour is the share of the human grade's row, the numbers are raw counts
//!   (and the row share);
//! - bottom left: calibration, the mean labeler score (expected grade) for each human grade,
//!   every labeler as a line, with the diagonal a calibrated labeler would follow;
//! - bottom right: every measure as grouped bars, one colour per labeler, with the bootstrap
//!   interval as error bars.

use crate::bootstrap::LabelerReport;
use crate::Measure;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The font the figures use: Debian's `fonts-dejavu-core` (installed by `scripts/setup.sh`).
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Environment variable naming another TrueType file to use instead of [`FONT_PATH`].
pub const FONT_ENV: &str = "LABELFLEET_FONT";

const FONT: &str = "sans-serif";
/// One colour per labeler, in order (matplotlib's tab10).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
/// The heatmap's colour for a full row (white for an empty one).
const HEAT: RGBColor = RGBColor(8, 69, 148);

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(
        "font {path} not found: install Debian's fonts-dejavu-core (scripts/setup.sh does), \
         or set {FONT_ENV} to a TrueType file"
    )]
    FontMissing { path: PathBuf },
    #[error("font {path}: {reason}")]
    FontInvalid { path: PathBuf, reason: String },
    #[error("nothing to plot: no labeler given")]
    NoLabeler,
    #[error("labelers on different scales: {first} has {a} grades, {other} has {b}")]
    Scales {
        first: String,
        a: usize,
        other: String,
        b: usize,
    },
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

/// The size in pixels of the figure for `labelers` labelers.
pub fn figure_size(labelers: usize) -> (u32, u32) {
    (labelers.max(2) as u32 * 600, 1100)
}

/// Draws the figure of `labelers` (at least one, all on the same grade scale) to `path` as a
/// PNG of [`figure_size`], under `title`.
pub fn render_png(path: &Path, title: &str, labelers: &[LabelerReport]) -> Result<(), PlotError> {
    let first = labelers.first().ok_or(PlotError::NoLabeler)?;
    let levels = first.cis.agreement.confusion.len();
    for l in labelers {
        let b = l.cis.agreement.confusion.len();
        if b != levels {
            return Err(PlotError::Scales {
                first: first.name.clone(),
                a: levels,
                other: l.name.clone(),
                b,
            });
        }
    }
    load_font()?;
    draw(path, title, labelers, levels).map_err(|e| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads the TrueType file once per process and registers it with plotters.
fn load_font() -> Result<(), PlotError> {
    static LOADED: OnceLock<()> = OnceLock::new();
    if LOADED.get().is_some() {
        return Ok(());
    }
    let path = std::env::var_os(FONT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FONT_PATH));
    let bytes = read_font(&path)?;
    // plotters keeps a 'static reference; the font is loaded once per process
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes).map_err(|_| {
        PlotError::FontInvalid {
            path: path.clone(),
            reason: "not a TrueType font ab_glyph can read".into(),
        }
    })?;
    LOADED.get_or_init(|| ());
    Ok(())
}

/// A linear axis whose ticks sit at the given points only (the grades, or one per measure).
struct TickedAxis {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl TickedAxis {
    /// `-pad..count - 1 + pad`, ticks at `0..count`.
    fn integers(count: usize, pad: f64) -> TickedAxis {
        TickedAxis {
            range: -pad..count.saturating_sub(1) as f64 + pad,
            ticks: (0..count).map(|i| i as f64).collect(),
        }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (t * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

fn read_font(path: &Path) -> Result<Vec<u8>, PlotError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PlotError::FontMissing {
            path: path.to_path_buf(),
        },
        _ => PlotError::FontInvalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

fn font(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().into()
}

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn draw(
    path: &Path,
    title: &str,
    labelers: &[LabelerReport],
    levels: usize,
) -> Result<(), Box<dyn Error>> {
    let (width, height) = figure_size(labelers.len());
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, font(28))?;
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let cells = top.split_evenly((1, labelers.len()));
    for (l, area) in labelers.iter().zip(&cells) {
        heatmap(area, l, levels)?;
    }
    let (left, right) = bottom.split_horizontally(width * 2 / 5);
    calibration(&left, labelers, levels)?;
    measures(&right, labelers)?;
    root.present()?;
    Ok(())
}

fn heatmap(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    l: &LabelerReport,
    levels: usize,
) -> Result<(), Box<dyn Error>> {
    let agr = &l.cis.agreement;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{}: confusion with the human grades", l.name),
            font(20),
        )
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            TickedAxis::integers(levels, 0.5),
            TickedAxis::integers(levels, 0.5),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("labeler grade   (colour and %: share of the row)")
        .y_desc("human grade")
        .axis_desc_style(font(17))
        .label_style(font(16))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (h, row) in agr.confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (p, &count) in row.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                count as f64 / total as f64
            };
            let fill = blend(WHITE, HEAT, share);
            let (x, y) = (p as f64, h as f64);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                fill.filled(),
            )))?;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                WHITE.stroke_width(2),
            )))?;
            let ink = if share > 0.5 { WHITE } else { BLACK };
            let centre = Pos::new(HPos::Center, VPos::Center);
            chart.draw_series([
                Text::new(
                    count.to_string(),
                    (x, y + 0.1),
                    font(22).color(&ink).pos(centre),
                ),
                Text::new(
                    if total == 0 {
                        "-".to_string()
                    } else {
                        format!("{:.0}%", share * 100.0)
                    },
                    (x, y - 0.22),
                    font(14).color(&ink).pos(centre),
                ),
            ])?;
        }
    }
    Ok(())
}

fn blend(from: RGBColor, to: RGBColor, t: f64) -> RGBColor {
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t.clamp(0.0, 1.0)).round() as u8;
    RGBColor(mix(from.0, to.0), mix(from.1, to.1), mix(from.2, to.2))
}

fn calibration(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    labelers: &[LabelerReport],
    levels: usize,
) -> Result<(), Box<dyn Error>> {
    let top = levels.saturating_sub(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("Calibration: mean expected grade per human grade", font(20))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            TickedAxis::integers(levels, 0.25),
            TickedAxis::integers(levels, 0.25),
        )?;
    chart
        .configure_mesh()
        .x_desc("human grade")
        .y_desc("labeler's mean expected grade")
        .axis_desc_style(font(17))
        .label_style(font(16))
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (top, top)],
            BLACK.mix(0.45).stroke_width(2),
        ))?
        .label("calibrated (y = x)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 22, y)], BLACK.mix(0.45).stroke_width(2)));
    let mut skipped = vec![];
    for (i, l) in labelers.iter().enumerate() {
        if !l.scores_on_grade_scale {
            skipped.push(l.name.as_str());
            continue;
        }
        let c = colour(i);
        let points: Vec<(f64, f64)> = l
            .calibration
            .iter()
            .filter(|p| p.pairs > 0)
            .map(|p| (p.human as f64, p.mean_score))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(3)))?
            .label(l.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], c.stroke_width(3)));
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 5, c.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(font(16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    if !skipped.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            format!(
                "not shown (scores not on the grade scale): {}",
                skipped.join(", ")
            ),
            (top + 0.2, -0.2),
            font(13).pos(Pos::new(HPos::Right, VPos::Bottom)),
        )))?;
    }
    Ok(())
}

fn measures(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    labelers: &[LabelerReport],
) -> Result<(), Box<dyn Error>> {
    let n = labelers.len();
    let lowest = labelers
        .iter()
        .flat_map(|l| l.cis.measures.iter())
        .flat_map(|m| [m.value, m.ci.lo])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::min);
    let y_min = if lowest < 0.0 { lowest - 0.05 } else { 0.0 };
    // above 1, room for the legend: a share `room` of the axis, by legend line
    let room = (0.065 * (n + 1) as f64).min(0.5);
    let y_max = (1.02 - room * y_min) / (1.0 - room);
    let resamples = labelers[0].cis.config.resamples;
    let confidence = labelers[0].cis.config.confidence;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Agreement with the human grades ({:.0}% CI, {resamples} query resamples)",
                confidence * 100.0
            ),
            font(20),
        )
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            TickedAxis::integers(Measure::ALL.len(), 0.5),
            // ticks every 0.2 up to 1 (no measure exceeds it); the headroom above holds the
            // legend, one line per labeler
            TickedAxis {
                range: y_min..y_max,
                ticks: (((y_min / 0.2).ceil() as i32)..=5)
                    .map(|i| i as f64 * 0.2)
                    .collect(),
            },
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("value")
        .axis_desc_style(font(17))
        .label_style(font(15))
        .light_line_style(WHITE)
        .x_label_formatter(&|x| {
            Measure::ALL
                .get(x.round() as usize)
                .map(|m| m.label().to_string())
                .unwrap_or_default()
        })
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    let group = 0.8;
    let bar = group / n as f64;
    for (i, l) in labelers.iter().enumerate() {
        let c = colour(i);
        let left = |m: usize| m as f64 - group / 2.0 + i as f64 * bar;
        let values: Vec<(usize, f64, f64, f64)> = l
            .cis
            .measures
            .iter()
            .enumerate()
            .filter(|(_, m)| m.value.is_finite())
            .map(|(k, m)| (k, m.value, m.ci.lo, m.ci.hi))
            .collect();
        chart
            .draw_series(values.iter().map(|&(k, v, _, _)| {
                Rectangle::new(
                    [(left(k) + 0.01, 0.0), (left(k) + bar - 0.01, v)],
                    c.filled(),
                )
            }))?
            .label(l.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
        // the value at the foot of its bar, where bars are wide enough to hold it
        if n <= 3 {
            chart.draw_series(values.iter().filter(|v| v.1 > 0.12).map(|&(k, v, _, _)| {
                Text::new(
                    format!("{v:.2}"),
                    (left(k) + bar / 2.0, 0.015),
                    font(14)
                        .color(&WHITE)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))?;
        }
        let whisker = BLACK.stroke_width(2);
        for &(k, _, lo, hi) in values.iter().filter(|v| v.2.is_finite() && v.3.is_finite()) {
            let mid = left(k) + bar / 2.0;
            let cap = bar / 5.0;
            chart.draw_series([
                PathElement::new([(mid, lo), (mid, hi)], whisker),
                PathElement::new([(mid - cap, lo), (mid + cap, lo)], whisker),
                PathElement::new([(mid - cap, hi), (mid + cap, hi)], whisker),
            ])?;
        }
    }
    if y_min < 0.0 {
        chart.draw_series(LineSeries::new(
            [(-0.5, 0.0), (Measure::ALL.len() as f64 - 0.5, 0.0)],
            BLACK.stroke_width(1),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_font_is_named_with_its_remedy() {
        let err = read_font(Path::new("/nonexistent/DejaVuSans.ttf")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/DejaVuSans.ttf"), "{msg}");
        assert!(msg.contains("fonts-dejavu-core"), "{msg}");
    }

    #[test]
    fn the_ticked_axis_maps_linearly_and_ticks_the_integers() {
        let axis = TickedAxis::integers(4, 0.5);
        assert_eq!(axis.range(), -0.5..3.5);
        assert_eq!(axis.map(&-0.5, (0, 400)), 0);
        assert_eq!(axis.map(&1.5, (0, 400)), 200);
        assert_eq!(axis.map(&3.5, (400, 0)), 0);
        assert_eq!(axis.key_points(4usize), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn the_heat_colour_runs_from_white_to_blue() {
        assert_eq!(blend(WHITE, HEAT, 0.0), WHITE);
        assert_eq!(blend(WHITE, HEAT, 1.0), HEAT);
        assert_eq!(blend(WHITE, HEAT, 2.0), HEAT);
    }
}

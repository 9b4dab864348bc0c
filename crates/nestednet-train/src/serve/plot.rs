//! The accuracy-vs-MACs plot of a report (PNG).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Result, TrainError};
use crate::serve::report::Report;
use crate::trainer::run::RunDir;

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`), embedded so the
/// plot has labels on machines without fonts.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is known-good; failure would only mean unlabelled text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws test accuracy against MACs per sample, one labelled point per level. When every
/// level has the same MACs (levels that differ by their weight masks only, which the dense
/// kernels do not skip), the x axis is the parameter count instead.
pub fn plot_accuracy_vs_macs(report: &Report, path: &Path) -> Result<()> {
    register_font();
    let err = |e: String| TrainError::Plot { path: path.to_path_buf(), message: e };
    let levels = &report.levels;
    if levels.is_empty() {
        return Err(err("the report has no level".into()));
    }
    let by_params = levels.len() > 1 && levels.iter().all(|l| l.macs == levels[0].macs);
    let x_of = |l: &crate::serve::report::LevelReport| if by_params { l.params } else { l.macs } as f64;
    let (what, unit) = if by_params { ("parameters", "parameters") } else { ("MACs", "MACs per sample") };
    let max_macs = levels.iter().map(|l| x_of(l) as usize).max().unwrap_or(1) as f64;
    let min_acc = levels.iter().map(|l| l.accuracy).fold(1.0, f64::min);
    let y_low = ((min_acc * 100.0 - 2.0).floor()).max(0.0);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} on {}: accuracy vs {what} per level", report.model, report.dataset),
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        // Room on the right for the last point's label.
        .build_cartesian_2d(0.0..max_macs * 1.5 / 1e6, y_low..100.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(format!("{unit} (millions)"))
        .y_desc("test accuracy (%)")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let points: Vec<(f64, f64)> = levels.iter().map(|l| (x_of(l) / 1e6, l.accuracy * 100.0)).collect();
    chart
        .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(levels.iter().zip(&points).map(|(l, &(x, y))| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 6, BLUE.filled())
                + Text::new(
                    format!("level {} ({:.2}%, {:.0}k params)", l.level, y, l.params as f64 / 1e3),
                    (8, 8),
                    ("sans-serif", 15),
                )
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Draws the early-exit sweep: accuracy against mean MACs per sample, one point per threshold,
/// with every level alone for reference.
pub fn plot_early_exit(report: &Report, path: &Path) -> Result<()> {
    register_font();
    let err = |e: String| TrainError::Plot { path: path.to_path_buf(), message: e };
    if report.early_exit.is_empty() || report.levels.is_empty() {
        return Err(err("the report has no early-exit sweep".into()));
    }
    let levels: Vec<(f64, f64)> =
        report.levels.iter().map(|l| (l.macs as f64 / 1e6, l.accuracy * 100.0)).collect();
    let sweep: Vec<(f64, f64)> =
        report.early_exit.iter().map(|e| (e.mean_macs / 1e6, e.accuracy * 100.0)).collect();
    let max_x = levels.iter().chain(&sweep).map(|p| p.0).fold(0.0, f64::max);
    let min_y = levels.iter().chain(&sweep).map(|p| p.1).fold(100.0, f64::min);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} on {}: early exit", report.model, report.dataset), ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x * 1.3, (min_y - 1.0).floor().max(0.0)..100.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("mean MACs per sample (millions)")
        .y_desc("test accuracy (%)")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart.draw_series(LineSeries::new(sweep.clone(), RED.stroke_width(2))).map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(report.early_exit.iter().zip(&sweep).map(|(e, &(x, y))| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 4, RED.filled())
                + Text::new(format!("t={}", e.threshold), (6, -14), ("sans-serif", 13))
        }))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(report.levels.iter().zip(&levels).map(|(l, &(x, y))| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 6, BLUE.filled())
                + Text::new(format!("level {} alone", l.level), (8, 6), ("sans-serif", 14))
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Writing a report into its run folder, plots included.
impl Report {
    /// Writes `report.json`, the accuracy-vs-MACs plot and, when the report has an early-exit
    /// sweep, `early_exit.png` into the run folder.
    pub fn write_to_run(&self, run: &RunDir) -> Result<()> {
        self.write_json(&run.report_path())?;
        crate::serve::plot::plot_accuracy_vs_macs(self, &run.plot_path())?;
        if !self.early_exit.is_empty() {
            crate::serve::plot::plot_early_exit(self, &run.path().join("early_exit.png"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::report::LevelReport;

    #[test]
    fn plot_is_a_png_with_every_level() {
        let level = |k: usize, acc: f64, macs: usize| LevelReport {
            level: k,
            name: format!("L{k}"),
            classes: 10,
            accuracy: acc,
            loss: 0.1,
            correct: 0,
            total: 0,
            params: 1000 * (k + 1),
            density: 0.5,
            macs,
            export_bytes: 10,
            latency_ms_b1: 0.1,
            latency_ms_b256: 1.0,
            widths: vec![],
            layers: vec![],
            dense_bytes: 0,
            sparse_bytes: 0,
            bits_per_byte: None,
        };
        let report = Report {
            model: "mnist-cnn".into(),
            dataset: "mnist".into(),
            backend: "flex".into(),
            levels: vec![level(0, 0.95, 300_000), level(1, 0.97, 4_000_000)],
            train_seconds_per_epoch: None,
            method: "channels".into(),
            hierarchy: None,
            consensus: Vec::new(),
            early_exit: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        plot_accuracy_vs_macs(&report, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let empty = Report { levels: vec![], ..report };
        assert!(plot_accuracy_vs_macs(&empty, &path).is_err());
    }
}

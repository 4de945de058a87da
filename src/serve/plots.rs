//! Plots drawn on the server as SVG: a histogram of sizes, a bar chart of counts per class,
//! and counts over the run's time. Plain strings, no JavaScript; every label is escaped.

use super::pages::escape;
use std::fmt::Write;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 12.0;

/// Equal-width bins over `values` (finite ones only): (lower edge, upper edge, count).
pub fn bins(values: &[f64], count: usize) -> Vec<(f64, f64, usize)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (Some(lo), Some(hi)) = (
        finite.iter().copied().reduce(f64::min),
        finite.iter().copied().reduce(f64::max),
    ) else {
        return Vec::new();
    };
    let count = count.max(1);
    let width = if hi > lo {
        (hi - lo) / count as f64
    } else {
        1.0
    };
    let mut out: Vec<(f64, f64, usize)> = (0..count)
        .map(|i| (lo + i as f64 * width, lo + (i + 1) as f64 * width, 0))
        .collect();
    for v in finite {
        let i = (((v - lo) / width) as usize).min(count - 1);
        out[i].2 += 1;
    }
    out
}

/// A bar chart: one bar per (label, count), the labels under the bars, `title` above the
/// axis. An empty series draws the axes and says so.
pub fn bars(title: &str, unit: &str, series: &[(String, usize)]) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"><title>{}</title>"#,
        escape(title)
    );
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{y}" x2="{x2}" y2="{y}" stroke="#444"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y}" stroke="#444"/>"##,
        y = TOP + plot_h,
        x2 = LEFT + plot_w
    );
    let max = series.iter().map(|(_, n)| *n).max().unwrap_or(0);
    if max == 0 {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
        return svg;
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end" font-size="10">{max}</text><text x="{}" y="{}" text-anchor="end" font-size="10">0</text>"#,
        LEFT - 4.0,
        TOP + 8.0,
        LEFT - 4.0,
        TOP + plot_h
    );
    let step = plot_w / series.len() as f64;
    // Label every bar when they fit, else about ten of them.
    let label_every = (series.len() / 10).max(1);
    for (i, (label, n)) in series.iter().enumerate() {
        let h = plot_h * *n as f64 / max as f64;
        let x = LEFT + i as f64 * step;
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#3b7dd8"><title>{}: {n}</title></rect>"##,
            x + 1.0,
            TOP + plot_h - h,
            (step - 2.0).max(1.0),
            h,
            escape(label)
        );
        if i % label_every == 0 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                x + step / 2.0,
                TOP + plot_h + 14.0,
                escape(label)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text></svg>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 4.0,
        escape(unit)
    );
    svg
}

/// A histogram of `values` in `bins` equal bins, labelled by their lower edges.
pub fn histogram(title: &str, unit: &str, values: &[f64], count: usize) -> String {
    let series: Vec<(String, usize)> = bins(values, count)
        .into_iter()
        .map(|(lo, _, n)| (format!("{lo:.0}"), n))
        .collect();
    bars(title, unit, &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_count_every_finite_value_once() {
        let b = bins(&[0.0, 1.0, 2.0, 3.0, 4.0, f64::NAN, 10.0], 5);
        assert_eq!(b.len(), 5);
        assert_eq!(b.iter().map(|b| b.2).sum::<usize>(), 6);
        assert_eq!(b[0], (0.0, 2.0, 2));
        assert_eq!(b[4].2, 1);
        assert!(bins(&[], 5).is_empty());
        assert_eq!(bins(&[3.0, 3.0], 4)[0].2, 2);
    }

    #[test]
    fn labels_are_escaped() {
        let svg = bars("t", "u", &[("<script>".to_string(), 3)]);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }
}

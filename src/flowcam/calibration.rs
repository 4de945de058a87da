//! The pixel size of a session's images, established from the particles themselves.
//!
//! A FlowCam `.lst` row holds measurements in pixels (`raw_perimeter`, `raw_area`,
//! `raw_feret_max`, ...) beside calibrated ones in micrometres (`perimeter`, `abd_area`,
//! `length`, ...), and the `cal_const` the software used. Of the pairs, the perimeter is
//! the one the software scales by the calibration alone: on the real session in
//! `../shared`, `perimeter / raw_perimeter` is 9.2500 on all 8,976 particles and equal to
//! their `cal_const`, while the areas and lengths are not plain multiples (ABD removes the
//! fringe, `length` is not the Feret maximum). So the ratio is checked on every particle
//! that has both values, and the pixel size is proven when they all agree with each other
//! and with `cal_const`.
//!
//! The side files are weaker witnesses: `.ctx`'s `[Fluid] CalibrationConstant` is left at
//! 1.0000 by some software versions, and the run summary's `Calibration Factor` is a
//! copy of it. They are used only when the rows prove nothing, and a disagreement is a
//! warning.

use serde::{Deserialize, Serialize};

/// How close a particle's ratio must be to the session's value: the `.lst` prints four
/// decimals, so a perimeter of a few pixels rounds to about 1e-4 relative.
pub const TOLERANCE: f64 = 1e-3;

/// Where the pixel size came from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelSizeSource {
    /// `perimeter / raw_perimeter` on the particles, equal to their `cal_const`.
    ParticleMeasurements,
    /// The particles' `cal_const`, one value, with no measurement pair to check it.
    ParticleCalConst,
    /// `.ctx` `[Fluid] CalibrationConstant`.
    Ctx,
    /// The run summary's `Calibration Factor`.
    RunSummary,
}

/// The pixel size and the evidence for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PixelSize {
    /// Micrometres per pixel.
    pub um_per_pixel: f64,
    pub source: PixelSizeSource,
    /// Particles whose ratio could be checked.
    pub particles_checked: usize,
    /// Of those, the ones whose ratio (and `cal_const`) agree with `um_per_pixel`.
    pub particles_agreeing: usize,
}

/// One particle's witnesses: `perimeter`, `raw_perimeter`, `cal_const`, as read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Witness {
    pub perimeter: Option<f64>,
    pub raw_perimeter: Option<f64>,
    pub cal_const: Option<f64>,
}

/// What the rows and the side files say, and what was concluded.
#[derive(Debug, Clone, Default)]
pub struct Finding {
    pub pixel_size: Option<PixelSize>,
    /// Disagreements worth a warning, in words.
    pub warnings: Vec<String>,
}

/// The pixel sizes taken for real, in micrometres: FlowCam objectives give about 0.1 to 10;
/// anything outside this is a damaged file (and `1e305` would not even survive rounding).
pub const PLAUSIBLE_UM_PER_PIXEL: std::ops::RangeInclusive<f64> = 0.01..=10_000.0;

fn agrees(value: f64, reference: f64) -> bool {
    (value - reference).abs() <= TOLERANCE * reference.abs()
}

/// A side file's calibration, unless it is the placeholder 1.0 or not a size.
fn usable(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && *v > 0.0 && !agrees(*v, 1.0))
}

/// The pixel size of a session from its particles (`ids` names them in warnings), its
/// `.ctx` CalibrationConstant and its run summary's Calibration Factor.
pub fn establish<Id: AsRef<str>>(
    particles: impl IntoIterator<Item = (Id, Witness)>,
    ctx: Option<f64>,
    run_summary: Option<f64>,
) -> Finding {
    let mut survey = Survey::default();
    let mut ids = Vec::new();
    for (row, (id, w)) in particles.into_iter().enumerate() {
        survey.add(row, w);
        ids.push(id);
    }
    survey.establish(|row| ids[row].as_ref().to_string(), ctx, run_summary)
}

/// What the pixel size needs of the particles, gathered row by row: each usable ratio
/// with its `cal_const` and row (32 bytes a particle), and whether the `cal_const`s agree.
/// A million particles' ids would take tens of MB more: the one a warning cites is asked
/// for by its row.
#[derive(Debug, Default)]
pub struct Survey {
    ratios: Vec<Ratio>,
    /// The first usable `cal_const`, and whether every later one agrees with it.
    cal_const: Option<(f64, bool)>,
}

#[derive(Debug, Clone, Copy)]
struct Ratio {
    row: usize,
    ratio: f64,
    /// As read (a `NaN` read is not none: it disagrees).
    cal_const: Option<f64>,
}

impl Survey {
    /// Adds the particle of row `row` (rows counted from 0).
    pub fn add(&mut self, row: usize, w: Witness) {
        if let Some(c) = w.cal_const.filter(|c| c.is_finite() && *c > 0.0) {
            match &mut self.cal_const {
                None => self.cal_const = Some((c, true)),
                Some((first, all)) => *all &= agrees(c, *first),
            }
        }
        if let (Some(p), Some(raw)) = (w.perimeter, w.raw_perimeter)
            && p.is_finite()
            && raw.is_finite()
            && raw > 0.0
            && p > 0.0
        {
            self.ratios.push(Ratio {
                row,
                ratio: p / raw,
                cal_const: w.cal_const,
            });
        }
    }

    /// The finding; `id_of(row)` names the particle of a row in a warning.
    pub fn establish(
        &self,
        id_of: impl FnOnce(usize) -> String,
        ctx: Option<f64>,
        run_summary: Option<f64>,
    ) -> Finding {
        let mut finding = Finding::default();
        let ratios = &self.ratios;
        if !ratios.is_empty() {
            // The value most particles agree on: the median ratio.
            let mut sorted: Vec<f64> = ratios.iter().map(|r| r.ratio).collect();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            drop(sorted);
            let disagrees = |r: &Ratio| {
                !agrees(r.ratio, median) || r.cal_const.is_some_and(|c| !agrees(c, median))
            };
            let disagreeing = ratios.iter().filter(|r| disagrees(r)).count();
            let agreeing = ratios.len() - disagreeing;
            if let Some(first) = ratios.iter().find(|r| disagrees(r)) {
                finding.warnings.push(format!(
                    "{} of {} particles do not have perimeter / raw_perimeter = cal_const = {} \
                     (the first: particle {}, ratio {:.4}{})",
                    disagreeing,
                    ratios.len(),
                    round4(median),
                    id_of(first.row),
                    first.ratio,
                    first
                        .cal_const
                        .map(|c| format!(", cal_const {c}"))
                        .unwrap_or_default()
                ));
            }
            // Proven only when (nearly) every particle agrees; a split session is
            // reported, and its pixel size left to the instrument's own record.
            if agreeing * 100 >= ratios.len() * 99 {
                finding.pixel_size = Some(PixelSize {
                    um_per_pixel: round4(median),
                    source: PixelSizeSource::ParticleMeasurements,
                    particles_checked: ratios.len(),
                    particles_agreeing: agreeing,
                });
            }
        }
        if finding.pixel_size.is_none()
            && let Some((first, true)) = self.cal_const
            && !agrees(first, 1.0)
        {
            finding.pixel_size = Some(PixelSize {
                um_per_pixel: round4(first),
                source: PixelSizeSource::ParticleCalConst,
                particles_checked: 0,
                particles_agreeing: 0,
            });
        }
        finish(finding, ctx, run_summary)
    }
}

/// The side files' part: a fallback when the particles prove nothing, a plausibility
/// check, and warnings where they disagree.
fn finish(mut finding: Finding, ctx: Option<f64>, run_summary: Option<f64>) -> Finding {
    if finding.pixel_size.is_none() {
        let (value, source) = match (usable(ctx), usable(run_summary)) {
            (Some(v), _) => (Some(v), PixelSizeSource::Ctx),
            (None, Some(v)) => (Some(v), PixelSizeSource::RunSummary),
            (None, None) => (None, PixelSizeSource::Ctx),
        };
        finding.pixel_size = value.map(|v| PixelSize {
            um_per_pixel: round4(v),
            source,
            particles_checked: 0,
            particles_agreeing: 0,
        });
    }
    if let Some(size) = finding.pixel_size.take() {
        if PLAUSIBLE_UM_PER_PIXEL.contains(&size.um_per_pixel) {
            finding.pixel_size = Some(size);
        } else {
            finding.warnings.push(format!(
                "a pixel size of {} µm ({}) is not plausible (outside {} to {} µm): none is \
                 recorded",
                size.um_per_pixel,
                source_words(size.source),
                PLAUSIBLE_UM_PER_PIXEL.start(),
                PLAUSIBLE_UM_PER_PIXEL.end()
            ));
        }
    }
    if let Some(size) = &finding.pixel_size {
        for (name, value) in [
            (".ctx [Fluid] CalibrationConstant", ctx),
            ("the run summary's Calibration Factor", run_summary),
        ] {
            if let Some(v) = usable(value)
                && !agrees(v, size.um_per_pixel)
            {
                finding.warnings.push(format!(
                    "{name} is {v}, but the pixel size is {} µm ({}); using {}",
                    size.um_per_pixel,
                    source_words(size.source),
                    size.um_per_pixel
                ));
            }
        }
    }
    finding
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// How a source reads in a sentence.
pub fn source_words(source: PixelSizeSource) -> &'static str {
    match source {
        PixelSizeSource::ParticleMeasurements => {
            "perimeter / raw_perimeter = cal_const on the particles"
        }
        PixelSizeSource::ParticleCalConst => "the particles' cal_const",
        PixelSizeSource::Ctx => ".ctx CalibrationConstant",
        PixelSizeSource::RunSummary => "the run summary's Calibration Factor",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_implausible_pixel_size_is_none_with_a_warning() {
        for bad in [1e305, 1e-9, 20_000.0] {
            let finding = establish(std::iter::empty::<(&str, Witness)>(), Some(bad), None);
            assert_eq!(finding.pixel_size, None, "{bad}");
            assert!(finding.warnings[0].contains("not plausible"), "{bad}");
        }
        let cal = |c: f64| Witness {
            cal_const: Some(c),
            ..Witness::default()
        };
        let finding = establish([("1".to_string(), cal(1e305))], None, None);
        assert_eq!(finding.pixel_size, None);
    }

    fn particle(id: usize, perimeter: f64, raw: f64, cal: f64) -> (String, Witness) {
        (
            id.to_string(),
            Witness {
                perimeter: Some(perimeter),
                raw_perimeter: Some(raw),
                cal_const: Some(cal),
            },
        )
    }

    #[test]
    fn every_particle_agreeing_proves_the_pixel_size() {
        let rows = (1..=50).map(|i| particle(i, i as f64 * 9.25, i as f64, 9.25));
        let finding = establish(rows, Some(1.0), None);
        let size = finding.pixel_size.unwrap();
        assert_eq!(size.um_per_pixel, 9.25);
        assert_eq!(size.source, PixelSizeSource::ParticleMeasurements);
        assert_eq!((size.particles_checked, size.particles_agreeing), (50, 50));
        // 1.0 is the placeholder some versions leave: not a disagreement.
        assert!(finding.warnings.is_empty(), "{:?}", finding.warnings);
    }

    #[test]
    fn a_disagreeing_side_file_or_particle_is_a_warning() {
        let mut rows: Vec<_> = (1..=200)
            .map(|i| particle(i, i as f64 * 2.5, i as f64, 2.5))
            .collect();
        rows.push(particle(999, 30.0, 10.0, 2.5));
        let finding = establish(rows, Some(9.25), Some(2.5));
        assert_eq!(finding.pixel_size.unwrap().um_per_pixel, 2.5);
        assert!(
            finding.warnings[0].starts_with("1 of 201 particles")
                && finding.warnings[0].contains("particle 999"),
            "{:?}",
            finding.warnings
        );
        assert!(
            finding.warnings[1].contains("CalibrationConstant is 9.25"),
            "{:?}",
            finding.warnings
        );
    }

    #[test]
    fn without_measurements_the_side_files_are_used_unless_placeholders() {
        let none = std::iter::empty::<(&str, Witness)>();
        assert_eq!(establish(none, Some(1.0), None).pixel_size, None);
        let size = establish(std::iter::empty::<(&str, Witness)>(), Some(1.0), Some(0.58))
            .pixel_size
            .unwrap();
        assert_eq!(
            (size.um_per_pixel, size.source),
            (0.58, PixelSizeSource::RunSummary)
        );
        // A split session proves nothing and falls back.
        let rows = (1..=10).map(|i| particle(i, i as f64 * (1.0 + (i % 2) as f64), i as f64, 7.0));
        let finding = establish(rows, Some(3.0), None);
        let size = finding.pixel_size.unwrap();
        assert_eq!(size.source, PixelSizeSource::ParticleCalConst);
        assert_eq!(size.um_per_pixel, 7.0);
    }
}

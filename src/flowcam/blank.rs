//! Blank vignettes: crops whose pixels are uniform (an empty frame, no particle).
//!
//! # The measure
//!
//! One pass counts the crop's luma in a 256-bin histogram ([`luma_histogram`]: grey as is,
//! RGB(A) as integer BT.601, exact for the equal channels FlowCam writes). The **spread** is
//! the distance in grey levels between the darkest and the brightest luma once
//! [`OUTLIER_FRACTION`] (0.5%) of the pixels at each end are set aside, so that a hot or
//! dead pixel cannot make a blank look busy. A crop is blank when its spread is at most
//! [`BLANK_MAX_SPREAD`] (7 grey levels) and it has at least [`MIN_PIXELS`] pixels.
//! [`Uniformity`] also keeps min, max, mean and standard deviation for callers to record.
//!
//! The test is conservative: a crop that cannot be measured, or is too small to judge, is
//! never blank. Setting aside 0.5% per end cannot hide a particle the instrument segmented:
//! in the real session below the smallest segmented area (`raw_area`) is 2.1% of its crop.
//!
//! # The threshold, measured
//!
//! `cargo run --example uniformity` (dev profile) on the real session
//! `19_10_Tank25_blanksremoved` (8,976 crops on 9 RGB8 pages):
//!
//! | spread of real crops | min | 0.1% | 1% | 5% | median |
//! |----------------------|-----|------|----|----|--------|
//! | all 8,976            | 8   | 10   | 15 | 43 | 111    |
//! | 1,464 "blank images" | 9   | 10   | 15 | 39 | 112    |
//! | the other 7,512      | 8   | 10   | 15 | 44 | 111    |
//!
//! Synthetic crops (background 240): uniform 0; sensor noise of +-2 and +-3 levels 4 and 6;
//! a background ramp of 6 levels 6 (ramp and +-3 noise together: 12, not blank); a faint
//! blob (radius 3) 10 to 15 levels darker than the background 10 to 19, in 24x24 and 64x48
//! crops, grey or RGB alike.
//!
//! So 7 makes the noise and ramp blanks blank with one level to spare, leaves a faint
//! particle 3 levels above it, and leaves every real crop not blank, the lowest (8) one level
//! above it. That real margin is thin, and cannot be wider: the lowest real crops (ids 4444, 5419,
//! 8320, 4401, 2835; spread 8 and 9, standard deviation 1.6 to 1.8) hold no structure at all
//! — their pixels are sensor noise, and the instrument's own `sigma_intensity` for them is
//! 1.05 to 1.54 and `edge_gradient` at most 5.7 (median particle: 49). The session's sensor
//! noise (standard deviation about 1.7, tails to +-5) is wider than +-3, so real empty frames
//! measure 8 to 11 and pass as not blank: the test misses them rather than ever flagging a
//! particle. Raising the threshold to catch them would also catch specks a few pixels across
//! and 20 levels dark (e.g. id 4363), since nothing in the spreads separates the two.
//!
//! # Class lists
//!
//! [`list_agrees`] decides whether a class list said to hold blanks (the `.cla` list
//! "blank images") fits the pixels. In this session it does not: 0 of its 1,464 existing
//! particles measure blank, and their spreads are distributed like everyone else's, so by
//! the rule the list is stale and must not be applied.

use crate::flowcam::{Collage, PixelFormat};
use std::collections::BTreeSet;
use std::path::Path;

/// The share of pixels set aside at each end of the luma histogram before the spread is
/// read (rounded down: a crop under 200 pixels keeps all of them).
pub const OUTLIER_FRACTION: f64 = 0.005;

/// The widest spread, in grey levels, a blank crop may have.
pub const BLANK_MAX_SPREAD: u8 = 7;

/// Crops with fewer pixels are never blank: too small to tell from a particle.
pub const MIN_PIXELS: u64 = 16;

/// The share of a class list's existing particles that must measure blank for the list to
/// fit the pixels.
pub const LIST_MIN_BLANK_SHARE: f64 = 0.9;

/// What one pass over a crop measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uniformity {
    /// Pixels measured (`width * height`).
    pub pixels: u64,
    /// Darkest and brightest luma.
    pub min: u8,
    pub max: u8,
    /// Luma of the darkest and brightest pixel once [`OUTLIER_FRACTION`] of the pixels at
    /// each end are set aside.
    pub low: u8,
    pub high: u8,
    pub mean: f64,
    pub std_dev: f64,
}

/// The luma of every pixel, counted: grey is the value; RGB(A) is BT.601 in integers
/// (`(77 R + 150 G + 29 B + 128) >> 8`, exact for equal channels), alpha ignored. `None` if
/// `pixels` is not `width * height` pixels of `format`, or there are none.
pub fn luma_histogram(
    pixels: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
) -> Option<[u64; 256]> {
    let c = format.channels();
    let n = (width as usize).checked_mul(height as usize)?;
    if n == 0 || n.checked_mul(c)? != pixels.len() {
        return None;
    }
    let mut hist = [0u64; 256];
    match format {
        PixelFormat::Gray8 => pixels.iter().for_each(|&v| hist[v as usize] += 1),
        PixelFormat::Rgb8 | PixelFormat::Rgba8 => {
            for p in pixels.chunks_exact(c) {
                let y = (77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32 + 128) >> 8;
                hist[y as usize] += 1;
            }
        }
    }
    Some(hist)
}

impl Uniformity {
    /// Measures a crop as [`crate::flowcam::Collage::crop`] cuts it. `None` as for
    /// [`luma_histogram`].
    pub fn measure(pixels: &[u8], width: u32, height: u32, format: PixelFormat) -> Option<Self> {
        Self::from_histogram(&luma_histogram(pixels, width, height, format)?)
    }

    /// Reads the figures off a luma histogram; `None` if it counts no pixel.
    pub fn from_histogram(hist: &[u64; 256]) -> Option<Self> {
        let n: u64 = hist.iter().sum();
        if n == 0 {
            return None;
        }
        let skip = (n as f64 * OUTLIER_FRACTION) as u64;
        let (sum, sq) = hist.iter().enumerate().fold((0.0, 0.0), |(s, q), (v, &k)| {
            let (v, k) = (v as f64, k as f64);
            (s + v * k, q + v * v * k)
        });
        let mean = sum / n as f64;
        let var = (sq / n as f64 - mean * mean).max(0.0);
        Some(Uniformity {
            pixels: n,
            min: quantile(hist, 0),
            max: quantile(hist, n - 1),
            low: quantile(hist, skip),
            high: quantile(hist, n - 1 - skip),
            mean,
            std_dev: var.sqrt(),
        })
    }

    /// The robust luma spread, `high - low`.
    pub fn spread(&self) -> u8 {
        self.high - self.low
    }

    /// Whether these figures are those of a blank crop: at least [`MIN_PIXELS`] pixels and
    /// a spread of at most [`BLANK_MAX_SPREAD`].
    pub fn is_blank(&self) -> bool {
        self.pixels >= MIN_PIXELS && self.spread() <= BLANK_MAX_SPREAD
    }
}

/// The luma of the pixel of rank `rank` (0 = darkest) in the histogram.
pub fn quantile(hist: &[u64; 256], rank: u64) -> u8 {
    let mut seen = 0;
    for (v, &k) in hist.iter().enumerate() {
        seen += k;
        if seen > rank {
            return v as u8;
        }
    }
    255
}

/// Whether the crop is blank; a crop that cannot be measured is not.
pub fn is_blank(pixels: &[u8], width: u32, height: u32, format: PixelFormat) -> bool {
    Uniformity::measure(pixels, width, height, format).is_some_and(|u| u.is_blank())
}

/// How a class list's particles measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCheck {
    /// Listed particles that exist (were measured).
    pub listed: usize,
    /// Of those, how many measure blank.
    pub blank: usize,
    /// Whether the list fits the pixels.
    pub agrees: bool,
}

/// Whether a "blank images" class list fits the pixels, given [`is_blank`] for each listed
/// particle that exists in the `.lst` (ids the list names but the `.lst` lacks are left
/// out by the caller).
///
/// The rule: the list agrees when it has at least one existing particle and at least
/// [`LIST_MIN_BLANK_SHARE`] (90%) of them measure blank. Otherwise the list is stale and
/// must not be applied. Since [`is_blank`] is conservative (it misses empty frames noisier
/// than +-3 levels), a list of true blanks may fall short and be refused; a list of
/// particles never passes.
pub fn list_agrees(blank_flags_of_listed_particles: impl Iterator<Item = bool>) -> ListCheck {
    let (mut listed, mut blank) = (0, 0);
    for flag in blank_flags_of_listed_particles {
        listed += 1;
        blank += flag as usize;
    }
    let agrees = listed > 0 && blank as f64 >= LIST_MIN_BLANK_SHARE * listed as f64;
    ListCheck {
        listed,
        blank,
        agrees,
    }
}

/// One particle's rectangle on its collage page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub id: u64,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// What measuring particles found: one page's, or a session's once added up.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sift {
    /// Particles whose crop was measured.
    pub measured: usize,
    /// Particles that could not be (their page unreadable, their rectangle off the page).
    pub unmeasured: usize,
    /// The ids of the measured particles whose crop is blank.
    pub blank: BTreeSet<u64>,
    /// Why particles went unmeasured, one line per page.
    pub problems: Vec<String>,
}

impl Sift {
    /// Adds another page's findings.
    pub fn add(&mut self, page: Sift) {
        self.measured += page.measured;
        self.unmeasured += page.unmeasured;
        self.blank.extend(page.blank);
        self.problems.extend(page.problems);
    }
}

/// Measures the crops of one collage page's particles (`collage_file` in the session
/// folder `folder`). A page that cannot be read leaves its particles unmeasured (not blank)
/// and says why; it fails nothing, since cutting that page reports it again. With
/// `hand_over`, the decoded page is then kept for the task that cuts it
/// ([`Collage::hand_over`]).
pub fn sift_page(
    folder: &Path,
    collage_file: &str,
    particles: &[Placement],
    hand_over: bool,
) -> Sift {
    let mut sift = Sift::default();
    let page = crate::flowcam::lst::check_plain_file_name(collage_file)
        .map_err(anyhow::Error::msg)
        .and_then(|()| Collage::open(&folder.join(collage_file), folder));
    let page = match page {
        Ok(page) => page,
        Err(e) => {
            sift.unmeasured = particles.len();
            sift.problems.push(format!(
                "{collage_file}: {} particles not measured: {e:#}",
                particles.len()
            ));
            return sift;
        }
    };
    let mut outside = 0;
    for p in particles {
        match page.crop(p.x, p.y, p.w, p.h) {
            Some(pixels) => {
                sift.measured += 1;
                if is_blank(&pixels, p.w, p.h, page.format) {
                    sift.blank.insert(p.id);
                }
            }
            None => outside += 1,
        }
    }
    if outside > 0 {
        sift.unmeasured += outside;
        sift.problems.push(format!(
            "{collage_file}: {outside} particles lie outside the {}x{} page",
            page.width, page.height
        ));
    }
    if hand_over {
        page.hand_over();
    }
    sift
}

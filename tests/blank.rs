//! The blank-vignette test ([`flowcam_pipeline::flowcam::blank`]) on synthetic crops and on
//! every crop of the real session.

use flowcam_pipeline::flowcam::blank::{
    self, BLANK_MAX_SPREAD, ListCheck, MIN_PIXELS, Uniformity, is_blank, list_agrees,
};
use flowcam_pipeline::flowcam::{Collage, ParticleList, PixelFormat};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

const FIXTURE: &str = "19_10_Tank25_blanksremoved";

/// Uniform in `-amp..=amp`, deterministic.
struct Lcg(u64);

impl Lcg {
    fn noise(&mut self, amp: i32) -> i32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % (2 * amp as u64 + 1)) as i32 - amp
    }
}

const BG: i32 = 240;

/// A `w` x `h` grey crop of the levels `f(x, y, noise)` gives.
fn grey(w: u32, h: u32, f: impl Fn(i32, i32, &mut Lcg) -> i32) -> Vec<u8> {
    let mut rng = Lcg(7);
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h as i32 {
        for x in 0..w as i32 {
            out.push(f(x, y, &mut rng).clamp(0, 255) as u8);
        }
    }
    out
}

/// The crop in every pixel format: grey, RGB and RGBA with equal channels.
fn layouts(pixels: &[u8]) -> [(PixelFormat, Vec<u8>); 3] {
    [
        (PixelFormat::Gray8, pixels.to_vec()),
        (
            PixelFormat::Rgb8,
            pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        ),
        (
            PixelFormat::Rgba8,
            pixels.iter().flat_map(|&v| [v, v, v, 255]).collect(),
        ),
    ]
}

/// 0 at the left edge, `levels` at the right.
fn ramp(x: i32, w: u32, levels: i32) -> i32 {
    let w = w as i32;
    (x * levels + (w - 1) / 2) / (w - 1)
}

/// `depth` darker inside a disc of radius `r` at the centre.
fn blob(x: i32, y: i32, w: u32, h: u32, r: i32, depth: i32) -> i32 {
    let (dx, dy) = (2 * x - w as i32 + 1, 2 * y - h as i32 + 1);
    if dx * dx + dy * dy <= 4 * r * r {
        -depth
    } else {
        0
    }
}

const SIZES: [(u32, u32); 3] = [(24, 24), (64, 48), (17, 26)];

fn assert_blank(name: &str, blank: bool, make: impl Fn(u32, u32) -> Vec<u8>) {
    for (w, h) in SIZES {
        let pixels = make(w, h);
        for (format, bytes) in layouts(&pixels) {
            let u = Uniformity::measure(&bytes, w, h, format).unwrap();
            assert_eq!(
                u.is_blank(),
                blank,
                "{name} {w}x{h} {format:?}: {u:?} (spread {})",
                u.spread()
            );
            assert_eq!(is_blank(&bytes, w, h, format), blank);
        }
    }
}

#[test]
fn uniform_noisy_and_ramp_crops_are_blank() {
    assert_blank("uniform", true, |w, h| grey(w, h, |_, _, _| BG));
    assert_blank("noise +-2", true, |w, h| {
        grey(w, h, |_, _, r| BG + r.noise(2))
    });
    assert_blank("noise +-3", true, |w, h| {
        grey(w, h, |_, _, r| BG + r.noise(3))
    });
    assert_blank("ramp of 6", true, |w, h| {
        grey(w, h, |x, _, _| BG - ramp(x, w, 6))
    });
    assert_blank("ramp of 6, other way", true, |w, h| {
        grey(w, h, |x, _, _| 200 + ramp(x, w, 6))
    });
    assert_blank("dark uniform", true, |w, h| {
        grey(w, h, |_, _, r| 60 + r.noise(3))
    });
}

#[test]
fn a_hot_or_dead_pixel_leaves_a_blank_blank() {
    assert_blank("noise +-3 and one dead pixel", true, |w, h| {
        grey(
            w,
            h,
            |x, y, r| if (x, y) == (5, 5) { 0 } else { BG + r.noise(3) },
        )
    });
    assert_blank("noise +-3 and one hot pixel", true, |w, h| {
        grey(w, h, |x, y, r| {
            if (x, y) == (9, 3) {
                255
            } else {
                BG - 10 + r.noise(3)
            }
        })
    });
}

#[test]
fn a_faint_particle_is_not_blank() {
    for depth in [10, 12, 15] {
        assert_blank(&format!("blob {depth} darker"), false, |w, h| {
            grey(w, h, |x, y, _| BG + blob(x, y, w, h, 3, depth))
        });
        assert_blank(&format!("blob {depth} darker, noise +-3"), false, |w, h| {
            grey(w, h, |x, y, r| BG + blob(x, y, w, h, 3, depth) + r.noise(3))
        });
        assert_blank(&format!("blob {depth} darker, ramp of 6"), false, |w, h| {
            grey(w, h, |x, y, _| {
                BG + blob(x, y, w, h, 3, depth) - ramp(x, w, 6)
            })
        });
        assert_blank(&format!("blob {depth} lighter"), false, |w, h| {
            grey(w, h, |x, y, _| 200 - blob(x, y, w, h, 3, depth))
        });
    }
}

#[test]
fn rgb_luma_weighs_the_channels() {
    // A red-on-grey mark whose luma differs by 17 levels is seen; equal channels are exact.
    let (w, h) = (24u32, 24u32);
    let mut rgb: Vec<u8> = (0..w * h).flat_map(|_| [200, 200, 200]).collect();
    for i in 0..60 {
        rgb[i * 3] = 255; // luma (77*255 + 150*200 + 29*200 + 128) >> 8 = 217
    }
    let u = Uniformity::measure(&rgb, w, h, PixelFormat::Rgb8).unwrap();
    assert_eq!((u.min, u.max), (200, 217));
    assert!(!u.is_blank());
    let grey = vec![123u8; (w * h) as usize];
    let u = Uniformity::measure(&grey, w, h, PixelFormat::Gray8).unwrap();
    assert_eq!(
        (u.min, u.max, u.low, u.high, u.mean, u.std_dev),
        (123, 123, 123, 123, 123.0, 0.0)
    );
}

#[test]
fn what_cannot_be_measured_or_judged_is_not_blank() {
    let pixels = vec![240u8; 24 * 24 * 3];
    // The wrong length for the format or the size, or no pixels at all.
    assert!(Uniformity::measure(&pixels, 24, 24, PixelFormat::Gray8).is_none());
    assert!(!is_blank(&pixels, 24, 24, PixelFormat::Rgba8));
    assert!(!is_blank(&pixels, 25, 24, PixelFormat::Rgb8));
    assert!(!is_blank(&[], 0, 0, PixelFormat::Gray8));
    assert!(blank::luma_histogram(&[], 0, 5, PixelFormat::Gray8).is_none());
    // Too small to tell from a particle.
    let side = (MIN_PIXELS as f64).sqrt() as u32 - 1;
    let tiny = vec![240u8; (side * side) as usize];
    assert!(!is_blank(&tiny, side, side, PixelFormat::Gray8));
    assert!(is_blank(&pixels, 24, 24, PixelFormat::Rgb8));
}

#[test]
fn a_class_list_agrees_only_when_nine_in_ten_measure_blank() {
    let check = |blank: usize, of: usize| list_agrees((0..of).map(|i| i < blank));
    assert_eq!(
        check(9, 10),
        ListCheck {
            listed: 10,
            blank: 9,
            agrees: true
        }
    );
    assert!(check(10, 10).agrees);
    assert!(check(900, 1000).agrees);
    assert!(!check(899, 1000).agrees);
    assert!(!check(8, 10).agrees);
    assert!(!check(0, 1464).agrees);
    // A list none of whose particles exist says nothing about the pixels.
    assert!(!check(0, 0).agrees);
}

/// The spread of every crop of the session in `folder`, by particle id.
fn measure_session(folder: &Path) -> BTreeMap<String, Uniformity> {
    let folder = folder.canonicalize().unwrap();
    let lists = flowcam_pipeline::flowcam::lst::files_in(&folder).unwrap();
    let list = ParticleList::read(&lists[0]).unwrap();
    let col = |name: &str| list.field_index(name).unwrap();
    let (id, x, y, w, h, file) = (
        col("id"),
        col("image_x"),
        col("image_y"),
        col("image_w"),
        col("image_h"),
        col("collage_file"),
    );
    let mut pages: BTreeMap<&str, Vec<&Vec<String>>> = BTreeMap::new();
    for row in &list.rows {
        pages.entry(&row[file]).or_default().push(row);
    }
    let mut out = BTreeMap::new();
    for (page, rows) in pages {
        let collage = Collage::open(&folder.join(page), &folder).unwrap();
        for row in rows {
            let n = |c: usize| row[c].parse::<u32>().unwrap();
            let (cw, ch) = (n(w), n(h));
            let pixels = collage.crop(n(x), n(y), cw, ch).unwrap();
            let u = Uniformity::measure(&pixels, cw, ch, collage.format).unwrap();
            out.insert(row[id].clone(), u);
        }
    }
    out
}

/// The ids of the `.cla` class list "blank images" (one value per line: the name, `OR`, `0`,
/// the count, then the ids).
fn blank_images_list(folder: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(folder.join(format!("{FIXTURE}.cla"))).unwrap();
    let mut lines = text.lines().map(str::trim);
    lines.by_ref().find(|l| *l == "blank images").unwrap();
    let head: Vec<&str> = lines.by_ref().take(3).collect();
    let count: usize = head[2].parse().unwrap();
    lines.take(count).map(str::to_string).collect()
}

fn check_real_session(folder: &Path, particles: usize) -> BTreeMap<String, Uniformity> {
    let measured = measure_session(folder);
    assert_eq!(measured.len(), particles);
    let (lowest_id, lowest) = measured
        .iter()
        .min_by_key(|(_, u)| u.spread())
        .map(|(id, u)| (id.clone(), *u))
        .unwrap();
    for (id, u) in &measured {
        assert!(!u.is_blank(), "particle {id} measures blank: {u:?}");
    }
    // The margin the threshold was chosen with (see the module's documentation).
    assert!(
        lowest.spread() > BLANK_MAX_SPREAD,
        "lowest: particle {lowest_id}, {lowest:?}"
    );
    let listed = blank_images_list(folder);
    let check = list_agrees(
        measured
            .iter()
            .filter(|(id, _)| listed.contains(*id))
            .map(|(_, u)| u.is_blank()),
    );
    assert!(!check.agrees, "{check:?}");
    assert_eq!(check.blank, 0);
    eprintln!(
        "{particles} crops, lowest spread {} (particle {lowest_id}), \"blank images\": {check:?}",
        lowest.spread()
    );
    measured
}

#[test]
fn no_crop_of_the_committed_real_page_is_blank() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(FIXTURE);
    check_real_session(&folder, 102);
}

#[test]
fn no_crop_of_the_whole_real_session_is_blank() {
    let folder: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/flowcam")
        .join(FIXTURE);
    if !folder.is_dir() {
        eprintln!("skipped: ../shared/fixtures/flowcam/{FIXTURE} is not on this machine");
        return;
    }
    let measured = check_real_session(&folder, 8976);
    assert_eq!(
        measured.values().map(|u| u.spread()).min(),
        Some(8),
        "the documented lowest spread"
    );
    let listed = blank_images_list(&folder);
    assert_eq!(listed.len(), 1675);
    assert_eq!(
        measured.keys().filter(|id| listed.contains(*id)).count(),
        1464
    );
}

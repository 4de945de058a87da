//! Measures how uniform every crop of a FlowCam session is ([`flowcam_pipeline::flowcam::blank`]),
//! and the same on synthetic blanks and a faint synthetic particle.
//!
//! ```text
//! uniformity [SESSION_FOLDER]
//! ```
//!
//! The folder defaults to `../shared/fixtures/flowcam/19_10_Tank25_blanksremoved`; it is only
//! read. Prints the distribution of the robust spread (and, for comparison, of the untrimmed
//! range, a 0.1% trimmed range and the standard deviation) over all crops, the 20 lowest
//! particles, and the distribution for the particles of the `.cla` class list
//! "blank images" against the rest.

use anyhow::{Context, Result, bail};
use flowcam_pipeline::flowcam::blank::{self, BLANK_MAX_SPREAD, OUTLIER_FRACTION, Uniformity};
use flowcam_pipeline::flowcam::{Collage, ParticleList, PixelFormat};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

struct Measured {
    id: String,
    page: String,
    u: Uniformity,
    /// The instrument's own `sigma_intensity` and `edge_gradient` of the particle.
    sigma: f64,
    edge: f64,
    /// Range with 1% of the pixels set aside at each end.
    range_1: u8,
}

fn main() -> Result<()> {
    let folder = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/flowcam/19_10_Tank25_blanksremoved")
        });
    let folder = folder
        .canonicalize()
        .with_context(|| folder.display().to_string())?;
    let measured = measure_session(&folder)?;
    println!(
        "{} crops of {} measured (spread = luma range of the pixels less OUTLIER_FRACTION = {OUTLIER_FRACTION} at each end)",
        measured.len(),
        folder.display()
    );
    let all: Vec<&Measured> = measured.iter().collect();
    distribution("all crops", &all);

    let mut lowest = all.clone();
    lowest.sort_by(|a, b| {
        (a.u.spread(), a.u.std_dev)
            .partial_cmp(&(b.u.spread(), b.u.std_dev))
            .unwrap()
    });
    let count: usize = std::env::var("LOWEST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("\nthe {count} lowest (by spread, then std dev; LOWEST=N for more):");
    println!("  id     spread  low..high  min..max  range1%  std_dev  mean    pixels  page");
    for m in lowest.iter().take(count) {
        println!(
            "  {:<6} {:>6}  {:>3}..{:<3}   {:>3}..{:<3}  {:>9}  {:>7.2}  {:>6.1}  {:>6}  {}",
            m.id,
            m.u.spread(),
            m.u.low,
            m.u.high,
            m.u.min,
            m.u.max,
            m.range_1,
            m.u.std_dev,
            m.u.mean,
            m.u.pixels,
            m.page
        );
    }

    let listed = blank_images_list(&folder)?;
    let (inside, outside): (Vec<&Measured>, Vec<&Measured>) =
        all.iter().partition(|m| listed.contains(&m.id));
    println!(
        "\n.cla \"blank images\": {} ids, {} of them in the .lst",
        listed.len(),
        inside.len()
    );
    distribution("listed as \"blank images\"", &inside);
    distribution("not listed", &outside);
    println!(
        "\nper spread value up to 24: crops, of them listed, the instrument's sigma_intensity and edge_gradient (max over the bin):"
    );
    for s in 0..=24u8 {
        let bin: Vec<&&Measured> = all.iter().filter(|m| m.u.spread() == s).collect();
        if bin.is_empty() {
            continue;
        }
        let listed_n = bin.iter().filter(|m| listed.contains(&m.id)).count();
        let smax = bin.iter().map(|m| m.sigma).fold(f64::MIN, f64::max);
        let emax = bin.iter().map(|m| m.edge).fold(f64::MIN, f64::max);
        let smin = bin.iter().map(|m| m.sigma).fold(f64::MAX, f64::min);
        println!(
            "  spread {s:>2}: {:>4} crops, {:>3} listed, sigma_intensity {smin:>5.2}..{smax:<6.2} edge_gradient max {emax:>6.2}",
            bin.len(),
            listed_n
        );
    }
    let flags = inside.iter().map(|m| m.u.is_blank());
    println!(
        "list_agrees (listed particles measuring blank): {:?}",
        blank::list_agrees(flags)
    );

    println!("\nsynthetic crops (background 240; blank iff spread <= {BLANK_MAX_SPREAD}):");
    for (name, w, h, format, pixels) in synthetic() {
        let u = Uniformity::measure(&pixels, w, h, format).unwrap();
        println!(
            "  {name:<46} spread {:>3}  min..max {:>3}..{:<3}  std_dev {:>5.2}  blank {}",
            u.spread(),
            u.min,
            u.max,
            u.std_dev,
            u.is_blank()
        );
    }
    Ok(())
}

fn measure_session(folder: &Path) -> Result<Vec<Measured>> {
    let lists = flowcam_pipeline::flowcam::lst::files_in(folder)?;
    let [lst] = lists.as_slice() else {
        bail!(
            "{}: expected one .lst, found {}",
            folder.display(),
            lists.len()
        );
    };
    let list = ParticleList::read(lst)?;
    let col = |name: &str| list.field_index(name).with_context(|| format!("no {name}"));
    let (id, x, y, w, h, file) = (
        col("id")?,
        col("image_x")?,
        col("image_y")?,
        col("image_w")?,
        col("image_h")?,
        col("collage_file")?,
    );
    let (sigma, edge) = (col("sigma_intensity")?, col("edge_gradient")?);
    let mut pages: BTreeMap<&str, Vec<&Vec<String>>> = BTreeMap::new();
    for row in &list.rows {
        pages.entry(row[file].as_str()).or_default().push(row);
    }
    let mut out = Vec::with_capacity(list.rows.len());
    for (page, rows) in pages {
        let collage = Collage::open(&folder.join(page), folder)?;
        for row in rows {
            let n = |c: usize| row[c].parse::<u32>().context("not a u32");
            let (cx, cy, cw, ch) = (n(x)?, n(y)?, n(w)?, n(h)?);
            let pixels = collage
                .crop(cx, cy, cw, ch)
                .with_context(|| format!("particle {} is outside {page}", row[id]))?;
            let hist = blank::luma_histogram(&pixels, cw, ch, collage.format).unwrap();
            let u = Uniformity::from_histogram(&hist).unwrap();
            out.push(Measured {
                id: row[id].clone(),
                page: page.to_string(),
                u,
                sigma: row[sigma].parse().unwrap_or(f64::NAN),
                edge: row[edge].parse().unwrap_or(f64::NAN),
                range_1: trimmed_range(&hist, 0.01),
            });
        }
    }
    Ok(out)
}

fn trimmed_range(hist: &[u64; 256], fraction: f64) -> u8 {
    let n: u64 = hist.iter().sum();
    let skip = (n as f64 * fraction) as u64;
    blank::quantile(hist, n - 1 - skip) - blank::quantile(hist, skip)
}

/// The ids of the class list "blank images" of the session's `.cla`: one value per line;
/// after the line `blank images` come `OR`, `0`, the count, then the ids.
fn blank_images_list(folder: &Path) -> Result<HashSet<String>> {
    let cla = std::fs::read_dir(folder)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("cla")))
        .context("no .cla")?;
    let text = std::fs::read_to_string(&cla)?;
    let mut lines = text.lines().map(str::trim);
    lines
        .by_ref()
        .find(|l| *l == "blank images")
        .context("no \"blank images\" list")?;
    let head: Vec<&str> = lines.by_ref().take(3).collect();
    let count: usize = head.get(2).context("truncated list")?.parse()?;
    let ids: HashSet<String> = lines
        .take(count)
        .map(|l| l.parse::<u64>().map(|n| n.to_string()))
        .collect::<Result<_, _>>()?;
    if ids.len() != count {
        bail!("the list claims {count} ids, {} found", ids.len());
    }
    Ok(ids)
}

fn distribution(name: &str, of: &[&Measured]) {
    println!("\n{name}: {} crops", of.len());
    if of.is_empty() {
        return;
    }
    let show = |what: &str, mut values: Vec<f64>| {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        println!(
            "  {what:<22} min {:>6.1}  0.1% {:>6.1}  1% {:>6.1}  5% {:>6.1}  median {:>6.1}  max {:>6.1}",
            values[0],
            q(0.001),
            q(0.01),
            q(0.05),
            q(0.5),
            values[values.len() - 1]
        );
    };
    show(
        "spread (0.5%..99.5%)",
        of.iter().map(|m| m.u.spread() as f64).collect(),
    );
    show(
        "range (1%..99%)",
        of.iter().map(|m| m.range_1 as f64).collect(),
    );
    show(
        "range (min..max)",
        of.iter().map(|m| (m.u.max - m.u.min) as f64).collect(),
    );
    show("std dev", of.iter().map(|m| m.u.std_dev).collect());
    show("mean luma", of.iter().map(|m| m.u.mean).collect());
    show("pixels", of.iter().map(|m| m.u.pixels as f64).collect());
    let blank = of.iter().filter(|m| m.u.is_blank()).count();
    println!("  measuring blank: {blank}");
}

/// A small deterministic generator for sensor noise.
struct Lcg(u64);

impl Lcg {
    /// Uniform in `-amp..=amp`.
    fn noise(&mut self, amp: i32) -> i32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % (2 * amp as u64 + 1)) as i32 - amp
    }
}

type Synthetic = (String, u32, u32, PixelFormat, Vec<u8>);

/// The synthetic cases at a typical crop size (24x24, the session's median is 560 pixels)
/// and a larger one (64x48), as grey and as RGB with equal channels. The same cases are
/// asserted in `tests/blank.rs`.
fn synthetic() -> Vec<Synthetic> {
    type Case = (
        &'static str,
        Box<dyn Fn(i32, i32, i32, i32, &mut Lcg) -> i32>,
    );
    let bg = 240;
    // A disc of radius r, `depth` levels darker, at the centre.
    let blob = |x: i32, y: i32, w: i32, h: i32, r: i32, depth: i32| {
        let (dx, dy) = (2 * x - w + 1, 2 * y - h + 1);
        if dx * dx + dy * dy <= 4 * r * r {
            -depth
        } else {
            0
        }
    };
    // 0 at the left edge, `levels` at the right.
    let ramp = |x: i32, w: i32, levels: i32| (x * levels + (w - 1) / 2) / (w - 1);
    let cases: Vec<Case> = vec![
        ("uniform", Box::new(move |_, _, _, _, _| bg)),
        ("noise +-2", Box::new(move |_, _, _, _, r| bg + r.noise(2))),
        ("noise +-3", Box::new(move |_, _, _, _, r| bg + r.noise(3))),
        (
            "ramp of 6",
            Box::new(move |x, _, w, _, _| bg - ramp(x, w, 6)),
        ),
        (
            "ramp of 6 + noise +-3",
            Box::new(move |x, _, w, _, r| bg - ramp(x, w, 6) + r.noise(3)),
        ),
        (
            "blob r=3, 10 darker",
            Box::new(move |x, y, w, h, _| bg + blob(x, y, w, h, 3, 10)),
        ),
        (
            "blob r=3, 10 darker + noise +-2",
            Box::new(move |x, y, w, h, r| bg + blob(x, y, w, h, 3, 10) + r.noise(2)),
        ),
        (
            "blob r=3, 12 darker + noise +-3",
            Box::new(move |x, y, w, h, r| bg + blob(x, y, w, h, 3, 12) + r.noise(3)),
        ),
        (
            "blob r=3, 15 darker + ramp of 6",
            Box::new(move |x, y, w, h, _| bg + blob(x, y, w, h, 3, 15) - ramp(x, w, 6)),
        ),
    ];
    let mut out = Vec::new();
    for (w, h) in [(24u32, 24u32), (64, 48)] {
        for (name, f) in &cases {
            let mut rng = Lcg(1);
            let grey: Vec<u8> = (0..h as i32)
                .flat_map(|y| (0..w as i32).map(move |x| (x, y)))
                .map(|(x, y)| f(x, y, w as i32, h as i32, &mut rng).clamp(0, 255) as u8)
                .collect();
            let rgb: Vec<u8> = grey.iter().flat_map(|&v| [v, v, v]).collect();
            out.push((
                format!("{name} {w}x{h} grey"),
                w,
                h,
                PixelFormat::Gray8,
                grey,
            ));
            out.push((format!("{name} {w}x{h} RGB"), w, h, PixelFormat::Rgb8, rgb));
        }
    }
    out
}

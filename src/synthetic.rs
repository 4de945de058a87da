//! Synthetic FlowCam sessions for tests and scale benchmarks.
//!
//! The one real session we ship (`fixtures/19_10_Tank25_blanksremoved`) is small and has no
//! coordinates in its folder name. [`SyntheticSession`] writes sessions of any size, with or
//! without a position, that look like VisualSpreadsheet 4.10.8 output: a format-017 `.lst`
//! with the same 53 fields (plus optional extra fields, so readers cannot rely on a fixed
//! field count) and LZW-compressed RGB8 collage pages with three equal channels.
//!
//! Everything is derived from `seed`, so a session can be regenerated exactly, and the pixel
//! content of every particle is known ([`SyntheticSession::pixel`]), so crops can be checked
//! pixel by pixel without keeping the pages around.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use rayon::prelude::*;
use tiff::encoder::{Compression, TiffEncoder, colortype::RGB8};

/// The 53 `.lst` fields of VisualSpreadsheet 4.10.8 (format 017), in file order, as
/// `(name, type)`. Copied from the real session so synthetic files parse like real ones.
pub const LST_FIELDS: [(&str, &str); 53] = [
    ("id", "int32"),
    ("image_x", "int32"),
    ("image_y", "int32"),
    ("image_w", "int32"),
    ("image_h", "int32"),
    ("src_x", "int32"),
    ("src_y", "int32"),
    ("src_image", "int32"),
    ("cal_image", "int32"),
    ("ppc", "int32"),
    ("camera", "int32"),
    ("cal_const", "double"),
    ("fringe_size", "double"),
    ("sphere_count", "int32"),
    ("raw_sphere_volume", "double"),
    ("raw_sphere_complement", "double"),
    ("raw_sphere_unknown", "double"),
    ("raw_area", "double"),
    ("raw_feret_max", "double"),
    ("raw_feret_min", "double"),
    ("raw_feret_mean", "double"),
    ("raw_perimeter", "double"),
    ("raw_convex_perimeter", "double"),
    ("raw_legendre_major", "double"),
    ("raw_legendre_minor", "double"),
    ("abd_area", "double"),
    ("abd_diameter", "double"),
    ("length", "double"),
    ("width", "double"),
    ("esd_diameter", "double"),
    ("fd_diameter", "double"),
    ("perimeter", "double"),
    ("convex_perimeter", "double"),
    ("intensity", "double"),
    ("sigma_intensity", "double"),
    ("sum_intensity", "double"),
    ("compactness", "double"),
    ("elongation", "double"),
    ("roughness", "double"),
    ("edge_gradient", "double"),
    ("elapsed_time", "double"),
    ("circle_fit", "double"),
    ("symmetry", "double"),
    ("circularity_hu", "double"),
    ("intensity_calimage", "double"),
    ("raw_convex_hull_area", "double"),
    ("raw_filled_area", "double"),
    ("filled_area", "double"),
    ("feret_max_angle", "double"),
    ("feret_min_angle", "double"),
    ("timestamp", "timestamp"),
    ("collage_file", "string"),
    ("image_id", "guid"),
];

/// Line ending of the `.lst`: the real VisualSpreadsheet export uses plain `\n`
/// (only `_run_summary.txt` uses CRLF).
const EOL: &str = "\n";
/// Collage background grey level (real collages are about 240-250 around particles).
pub const BACKGROUND: u8 = 240;
/// Gap in pixels around and between particles on a page, as in real collages.
const GAP: u32 = 2;
/// Particle crop sizes are drawn from `MIN_SIZE..=MAX_SIZE` pixels (capped by the page width).
const MIN_SIZE: u32 = 8;
const MAX_SIZE: u32 = 64;
/// Camera frame size, bounding the `src_x`/`src_y` values.
const FRAME: (u32, u32) = (1152, 1920);
/// Micrometres per pixel used to turn pixel measurements into plausible physical ones.
const UM_PER_PX: f64 = 5.4;

/// Parameters of one synthetic session.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSession {
    /// Number of particles (ids `1..=particles`).
    pub particles: usize,
    /// Number of collage pages; particles are spread evenly over them (pages may be empty).
    pub pages: usize,
    /// `(latitude, longitude, date, depth in metres)`, encoded in the folder name the way our
    /// field teams name sessions; the date also sets the start of the timestamps.
    pub position: Option<(f64, f64, NaiveDate, Option<f64>)>,
    /// Folder name (or its first part when `position` is set).
    pub prefix: String,
    /// Seed for sizes, measurements, GUIDs and pixel patterns.
    pub seed: u64,
    /// Collage page width in pixels (real pages are about 2048).
    pub page_width: u32,
    /// Extra `extra_k|double` fields inserted before `timestamp`, to vary the field count.
    pub extra_fields: usize,
}

impl Default for SyntheticSession {
    fn default() -> Self {
        Self {
            particles: 100,
            pages: 1,
            position: None,
            prefix: "synthetic".into(),
            seed: 1,
            page_width: 2048,
            extra_fields: 0,
        }
    }
}

/// Where one particle sits: page index (0-based) and pixel rectangle inside that page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub id: usize,
    pub page: usize,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// Result of packing the particles onto pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// One entry per particle, in id order (and therefore page order).
    pub placements: Vec<Placement>,
    /// Height of each page; every page is `page_width` wide.
    pub page_heights: Vec<u32>,
}

impl SyntheticSession {
    /// Folder name: `<prefix>_<lat:.4>_<lon:.4>_<DDMMYYYY>[_<depth>]` when `position` is set,
    /// else `<prefix>`. The `.lst` and collages are named after it, as the instrument does.
    pub fn folder_name(&self) -> String {
        match &self.position {
            None => self.prefix.clone(),
            Some((lat, lon, date, depth)) => {
                let mut name = format!(
                    "{}_{lat:.4}_{lon:.4}_{}",
                    self.prefix,
                    date.format("%d%m%Y")
                );
                if let Some(depth) = depth {
                    name.push_str(&format!("_{depth}"));
                }
                name
            }
        }
    }

    /// File name of collage page `page` (0-based): `<folder_name>_images_000001.tif`, ….
    pub fn collage_name(&self, page: usize) -> String {
        format!("{}_images_{:06}.tif", self.folder_name(), page + 1)
    }

    /// Grey level of pixel `(dx, dy)` inside particle `id`'s rectangle.
    ///
    /// A ramp whose offset and slopes depend on `id` and `seed`, always darker than
    /// [`BACKGROUND`]: crops of different particles differ (unless their ids are a multiple of
    /// 1440 apart) and compress well, so benchmark pages stay realistic in size.
    pub fn pixel(&self, id: usize, dx: u32, dy: u32) -> u8 {
        let id = id as u64;
        let base = 16 + (id.wrapping_mul(97).wrapping_add(self.seed) % 160) as u32;
        let (sx, sy) = (1 + (id / 160 % 3) as u32, 1 + (id / 480 % 3) as u32);
        (base + (dx * sx + dy * sy) % 48) as u8
    }

    /// Draws particle sizes (deterministic in `seed`) and shelf-packs them left to right,
    /// top to bottom, on each page; page heights are what the packing needs (at least 1).
    pub fn layout(&self) -> Result<Layout> {
        ensure!(self.pages >= 1, "a session needs at least one page");
        ensure!(
            self.page_width >= MIN_SIZE + 2 * GAP,
            "page width {} is below the minimum {}",
            self.page_width,
            MIN_SIZE + 2 * GAP
        );
        let max_size = MAX_SIZE.min(self.page_width - 2 * GAP);
        let mut rng = XorShift::new(self.seed);
        let mut placements = Vec::with_capacity(self.particles);
        let mut page_heights = Vec::with_capacity(self.pages);
        for page in 0..self.pages {
            let count =
                (page + 1) * self.particles / self.pages - page * self.particles / self.pages;
            let (mut x, mut y, mut shelf) = (GAP, GAP, 0);
            for _ in 0..count {
                let w = rng.range(MIN_SIZE, max_size);
                let h = rng.range(MIN_SIZE, MAX_SIZE);
                if x + w + GAP > self.page_width {
                    (x, y, shelf) = (GAP, y + shelf + GAP, 0);
                }
                let id = placements.len() + 1;
                placements.push(Placement {
                    id,
                    page,
                    x,
                    y,
                    w,
                    h,
                });
                x += w + GAP;
                shelf = shelf.max(h);
            }
            page_heights.push(if count == 0 { 1 } else { y + shelf + GAP });
        }
        Ok(Layout {
            placements,
            page_heights,
        })
    }

    /// Writes `<parent>/<folder_name>/` with `<folder_name>.lst` and the collage pages
    /// `<folder_name>_images_000001.tif`, … and returns the session path. Existing files of the
    /// same names are overwritten. The `.lst` and the pages are written in parallel.
    pub fn write(&self, parent: &Path) -> Result<PathBuf> {
        let layout = self.layout()?;
        let dir = parent.join(self.folder_name());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lst = dir.join(format!("{}.lst", self.folder_name()));
        let write_lst = || {
            self.write_lst(&lst, &layout.placements)
                .with_context(|| format!("writing {}", lst.display()))
        };
        let write_pages = || {
            layout
                .page_heights
                .par_iter()
                .enumerate()
                .try_for_each(|(page, &height)| {
                    let path = dir.join(self.collage_name(page));
                    let start = layout.placements.partition_point(|p| p.page < page);
                    let end = layout.placements.partition_point(|p| p.page <= page);
                    self.write_page(&path, height, &layout.placements[start..end])
                        .with_context(|| format!("writing {}", path.display()))
                })
        };
        let (lst_result, pages_result) = rayon::join(write_lst, write_pages);
        lst_result.and(pages_result)?;
        Ok(dir)
    }

    fn write_page(&self, path: &Path, height: u32, particles: &[Placement]) -> Result<()> {
        let width = self.page_width as usize;
        let mut buf = vec![BACKGROUND; width * height as usize * 3];
        for p in particles {
            for dy in 0..p.h {
                let row = (p.y + dy) as usize * width;
                for dx in 0..p.w {
                    let i = (row + (p.x + dx) as usize) * 3;
                    buf[i..i + 3].fill(self.pixel(p.id, dx, dy));
                }
            }
        }
        let mut encoder = TiffEncoder::new(BufWriter::new(File::create(path)?))?
            .with_compression(Compression::Lzw);
        encoder.write_image::<RGB8>(self.page_width, height, &buf)?;
        Ok(())
    }

    fn write_lst(&self, path: &Path, placements: &[Placement]) -> Result<()> {
        let extras: Vec<String> = (1..=self.extra_fields)
            .map(|k| format!("extra_{k}"))
            .collect();
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(LST_FIELDS.len() + extras.len());
        for &(name, ty) in &LST_FIELDS {
            if name == "timestamp" {
                fields.extend(extras.iter().map(|e| (e.as_str(), "double")));
            }
            fields.push((name, ty));
        }

        let mut out = BufWriter::new(File::create(path)?);
        write!(out, "017{EOL}num-fields|{}{EOL}", fields.len())?;
        for (name, ty) in &fields {
            write!(out, "{name}|{ty}{EOL}")?;
        }

        let date = self.position.map(|(_, _, date, _)| date);
        let start = date
            .or(NaiveDate::from_ymd_opt(2023, 12, 20))
            .and_then(|date| date.and_hms_opt(14, 3, 6))
            .context("invalid start time")?;
        let collages: Vec<String> = (0..self.pages).map(|p| self.collage_name(p)).collect();
        let mut time = XorShift::new(self.seed ^ 0x7469_6d65);
        let mut elapsed_ms = 0u64;
        let mut line = String::new();
        for p in placements {
            // ~10 ms between particles, like the real session (8,976 particles in 90 s).
            elapsed_ms += time.range(5, 20);
            let row = Row::new(self, p, &collages[p.page], start, elapsed_ms);
            line.clear();
            for (i, (name, ty)) in fields.iter().enumerate() {
                if i > 0 {
                    line.push('|');
                }
                row.push_value(name, ty, &mut line);
            }
            line.push_str(EOL);
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
        Ok(())
    }
}

/// Measurements of one particle, derived from its rectangle and a per-particle random stream
/// so that the `.lst` columns are mutually consistent and plausible.
struct Row<'a> {
    session: &'a SyntheticSession,
    p: &'a Placement,
    collage: &'a str,
    time: NaiveDateTime,
    elapsed_s: f64,
    frame: u64,
    src: (u64, u64),
    major: f64,
    minor: f64,
    area: f64,
    perimeter: f64,
    convex_perimeter: f64,
    intensity: f64,
    rng: XorShift,
}

impl<'a> Row<'a> {
    fn new(
        session: &'a SyntheticSession,
        p: &'a Placement,
        collage: &'a str,
        start: NaiveDateTime,
        ms: u64,
    ) -> Self {
        let mut rng = XorShift::new(splitmix(session.seed) ^ p.id as u64);
        // The object sits inside its crop with a small margin, like real vignettes.
        let (major, minor) = (
            f64::from(p.w.max(p.h).saturating_sub(4).max(1)),
            f64::from(p.w.min(p.h).saturating_sub(4).max(1)),
        );
        let (a, b) = (major / 2.0, minor / 2.0);
        // Ramanujan's ellipse perimeter; real outlines are rougher than their convex hull.
        let convex_perimeter =
            std::f64::consts::PI * (3.0 * (a + b) - ((3.0 * a + b) * (a + 3.0 * b)).sqrt());
        let perimeter = convex_perimeter * (1.05 + 0.5 * rng.unit());
        Self {
            session,
            p,
            collage,
            time: start + TimeDelta::milliseconds(ms as i64),
            elapsed_s: ms as f64 / 1000.0,
            frame: ms * 9 / 1000 + 1,
            src: (
                rng.range(0, u64::from(FRAME.0 - p.w)),
                rng.range(0, u64::from(FRAME.1 - p.h)),
            ),
            major,
            minor,
            area: (std::f64::consts::FRAC_PI_4 * major * minor)
                .round()
                .max(1.0),
            perimeter,
            convex_perimeter,
            intensity: 150.0 + 70.0 * rng.unit(),
            rng,
        }
    }

    /// Appends the value of field `name` of type `ty`, formatted like VisualSpreadsheet does:
    /// integers plain, doubles with 4 decimals.
    fn push_value(&self, name: &str, ty: &str, out: &mut String) {
        use std::fmt::Write as _;
        let _ = match ty {
            "int32" => write!(out, "{}", self.int(name)),
            "timestamp" => write!(out, "{}", self.time.format("%Y-%m-%dT%H:%M:%S%.3f")),
            "string" => write!(out, "{}", self.collage),
            "guid" => write!(out, "{}", self.guid()),
            _ => write!(out, "{:.4}", self.double(name)),
        };
    }

    fn int(&self, name: &str) -> u64 {
        let p = self.p;
        match name {
            "id" => p.id as u64,
            "image_x" => p.x.into(),
            "image_y" => p.y.into(),
            "image_w" => p.w.into(),
            "image_h" => p.h.into(),
            "src_x" => self.src.0,
            "src_y" => self.src.1,
            "src_image" => self.frame,
            "cal_image" | "ppc" => 1,
            _ => 0, // camera, sphere_count
        }
    }

    fn double(&self, name: &str) -> f64 {
        use std::f64::consts::PI;
        let abd_area = self.area * UM_PER_PX * UM_PER_PX;
        // Fields that are noise rather than geometry draw from a stream keyed by the field
        // name, so their values do not depend on which other fields are present.
        let noise = |lo: f64, hi: f64| lo + (hi - lo) * self.rng.fork(name).unit();
        match name {
            "cal_const" => 9.25,
            "fringe_size" => 4.5,
            "raw_area" | "raw_filled_area" => self.area,
            "raw_feret_max" | "raw_legendre_major" => self.major,
            "raw_feret_min" | "raw_legendre_minor" => self.minor,
            "raw_feret_mean" => (self.major + self.minor) / 2.0,
            "raw_perimeter" => self.perimeter,
            "raw_convex_perimeter" => self.convex_perimeter,
            "raw_convex_hull_area" => self.area * 1.1,
            "abd_area" | "filled_area" => abd_area,
            "abd_diameter" | "fd_diameter" => (4.0 * abd_area / PI).sqrt(),
            "esd_diameter" => (self.major + self.minor) / 2.0 * UM_PER_PX,
            "length" => self.major * UM_PER_PX,
            "width" => self.minor * UM_PER_PX,
            "perimeter" => self.perimeter * UM_PER_PX,
            "convex_perimeter" => self.convex_perimeter * UM_PER_PX,
            "intensity" => self.intensity,
            "sum_intensity" => (self.intensity * self.area).round(),
            "compactness" => self.perimeter * self.perimeter / (4.0 * PI * self.area),
            "elongation" => self.major / self.minor,
            "roughness" => self.perimeter / self.convex_perimeter,
            "elapsed_time" => self.elapsed_s,
            "sigma_intensity" => noise(1.0, 40.0),
            "edge_gradient" => noise(20.0, 200.0),
            "feret_max_angle" | "feret_min_angle" => noise(0.0, 36.0).floor() * 5.0 - 90.0,
            "circle_fit" | "symmetry" | "circularity_hu" => noise(0.0, 1.0),
            "raw_sphere_volume"
            | "raw_sphere_complement"
            | "raw_sphere_unknown"
            | "intensity_calimage" => 0.0,
            _ => noise(0.0, 1000.0), // extra_k fields
        }
    }

    /// GUID-shaped id derived from seed and particle id, with the version-4 and variant bits
    /// set like the instrument's random GUIDs.
    fn guid(&self) -> String {
        let hi = splitmix(self.session.seed ^ splitmix(self.p.id as u64));
        let lo = splitmix(hi);
        let hi = (hi & !0xF000) | 0x4000;
        let lo = (lo & !(0xC_u64 << 60)) | (0x8 << 60);
        format!(
            "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            hi >> 32,
            (hi >> 16) & 0xFFFF,
            hi & 0xFFFF,
            lo >> 48,
            lo & 0xFFFF_FFFF_FFFF
        )
    }
}

/// SplitMix64 finaliser: turns any seed (including 0) into a well-mixed 64-bit value.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Tiny xorshift64 generator: deterministic across platforms and releases, no `rand` needed.
#[derive(Debug, Clone, Copy)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(splitmix(seed).max(1)) // xorshift must not start at 0
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi` (modulo bias is irrelevant here).
    fn range<T: Into<u64> + TryFrom<u64>>(&mut self, lo: T, hi: T) -> T {
        let (lo, hi) = (lo.into(), hi.into());
        let v = lo + self.next() % (hi - lo + 1);
        T::try_from(v).ok().expect("value within lo..=hi fits")
    }

    /// Uniform in `0.0..1.0`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Independent stream keyed by `key`.
    fn fork(&self, key: &str) -> Self {
        let h = key.bytes().fold(self.0, |h, b| splitmix(h ^ u64::from(b)));
        Self::new(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_page(path: &Path) -> (u32, u32, Vec<u8>) {
        let mut dec = tiff::decoder::Decoder::new(File::open(path).unwrap()).unwrap();
        let (w, h) = dec.dimensions().unwrap();
        assert_eq!(dec.colortype().unwrap(), tiff::ColorType::RGB(8));
        match dec.read_image().unwrap() {
            tiff::decoder::DecodingResult::U8(buf) => (w, h, buf),
            other => panic!("unexpected sample type {other:?}"),
        }
    }

    #[test]
    fn field_table_and_line_ending_match_real_session() {
        let lst = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/19_10_Tank25_blanksremoved/19_10_Tank25_blanksremoved.lst");
        let lst = fs::read_to_string(lst).unwrap();
        let expected: Vec<String> = ["017".to_string(), "num-fields|53".to_string()]
            .into_iter()
            .chain(LST_FIELDS.iter().map(|(name, ty)| format!("{name}|{ty}")))
            .collect();
        let real: Vec<&str> = lst.split_terminator(EOL).take(expected.len()).collect();
        assert_eq!(real, expected);
    }

    #[test]
    fn writes_consistent_session() {
        let tmp = tempfile::tempdir().unwrap();
        let s = SyntheticSession {
            particles: 250,
            pages: 3,
            page_width: 300,
            extra_fields: 2,
            seed: 7,
            ..Default::default()
        };
        let dir = s.write(tmp.path()).unwrap();
        assert_eq!(dir, tmp.path().join("synthetic"));

        let lst = fs::read_to_string(dir.join("synthetic.lst")).unwrap();
        let lines: Vec<&str> = lst.split_terminator(EOL).collect();
        let n = LST_FIELDS.len() + 2;
        assert_eq!(lines[0], "017");
        assert_eq!(lines[1], format!("num-fields|{n}"));
        assert_eq!(lines.len(), 2 + n + s.particles);
        assert_eq!(lines[2 + n - 4], "extra_2|double");
        assert_eq!(lines[2 + n - 3], "timestamp|timestamp");

        let names: Vec<&str> = lines[2..2 + n]
            .iter()
            .map(|l| l.split('|').next().unwrap())
            .collect();
        let col = |name: &str| names.iter().position(|n| *n == name).unwrap();
        let pages: Vec<_> = (0..s.pages)
            .map(|p| read_page(&dir.join(s.collage_name(p))))
            .collect();
        let heights = s.layout().unwrap().page_heights;
        for (page, (w, h, buf)) in pages.iter().enumerate() {
            assert_eq!((*w, *h), (s.page_width, heights[page]));
            assert_eq!(buf.len(), (w * h * 3) as usize);
        }

        let mut last_time = String::new();
        for (i, row) in lines[2 + n..].iter().enumerate() {
            let v: Vec<&str> = row.split('|').collect();
            assert_eq!(v.len(), n);
            assert_eq!(v[col("id")], (i + 1).to_string());
            let num = |name: &str| v[col(name)].parse::<u32>().unwrap();
            let (x, y, w, h) = (
                num("image_x"),
                num("image_y"),
                num("image_w"),
                num("image_h"),
            );
            let page = (1..=s.pages)
                .position(|p| v[col("collage_file")] == s.collage_name(p - 1))
                .unwrap();
            let (pw, ph, buf) = &pages[page];
            assert!(w > 0 && h > 0 && x + w <= *pw && y + h <= *ph, "row {row}");
            // Crop content matches the documented pattern, corners included.
            for (dx, dy) in [
                (0, 0),
                (w - 1, 0),
                (0, h - 1),
                (w - 1, h - 1),
                (w / 2, h / 2),
            ] {
                let at = (((y + dy) * pw + x + dx) * 3) as usize;
                let expected = s.pixel(i + 1, dx, dy);
                assert_eq!(&buf[at..at + 3], &[expected; 3]);
            }
            let ts = v[col("timestamp")];
            assert!(NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.3f").is_ok());
            assert_eq!(ts.len(), 23);
            assert!(ts > last_time.as_str());
            last_time = ts.to_string();
            let guid = v[col("image_id")];
            assert_eq!(guid.len(), 36);
            assert!(
                guid.chars()
                    .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase())
            );
            assert!(v[col("abd_diameter")].split_once('.').unwrap().1.len() == 4);
        }
        // Particles are spread evenly over the pages.
        for page in 0..s.pages {
            let name = s.collage_name(page);
            let count = lines[2 + n..].iter().filter(|l| l.contains(&name)).count();
            assert!((83..=84).contains(&count), "{count} on page {page}");
        }
    }

    #[test]
    fn folder_name_and_determinism() {
        let date = NaiveDate::from_ymd_opt(2024, 5, 3).unwrap();
        let mut s = SyntheticSession {
            particles: 5,
            position: Some((56.5, -3.25, date, Some(12.5))),
            prefix: "tay".into(),
            ..Default::default()
        };
        assert_eq!(s.folder_name(), "tay_56.5000_-3.2500_03052024_12.5");
        s.position = Some((56.5, -3.25, date, None));
        assert_eq!(s.folder_name(), "tay_56.5000_-3.2500_03052024");

        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let name = format!("{}.lst", s.folder_name());
        let lst_a = fs::read(s.write(a.path()).unwrap().join(&name)).unwrap();
        let lst_b = fs::read(s.write(b.path()).unwrap().join(&name)).unwrap();
        assert_eq!(lst_a, lst_b);
        assert!(
            String::from_utf8(lst_a)
                .unwrap()
                .contains("|2024-05-03T14:03:")
        );
    }

    #[test]
    fn empty_pages_and_bad_parameters() {
        let tmp = tempfile::tempdir().unwrap();
        let s = SyntheticSession {
            particles: 1,
            pages: 2,
            ..Default::default()
        };
        let dir = s.write(tmp.path()).unwrap();
        // Remainders go to the later pages, so the first page is the empty one.
        assert_eq!(read_page(&dir.join(s.collage_name(0))).1, 1);
        assert!(read_page(&dir.join(s.collage_name(1))).1 > 8);
        assert!(
            SyntheticSession {
                pages: 0,
                ..Default::default()
            }
            .layout()
            .is_err()
        );
        assert!(
            SyntheticSession {
                page_width: 5,
                ..Default::default()
            }
            .layout()
            .is_err()
        );
    }
}

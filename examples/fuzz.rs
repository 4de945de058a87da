//! A fuzz driver for the local pipeline (ReadMetadata + DecollageImages, no upload), on
//! stable Rust and without a fuzzing crate.
//!
//! ```text
//! fuzz [SECONDS] [--seed N] [--jobs J] [--timeout S] [--cases N] [--known TAG]...
//!      [--failures DIR] [--verbose]
//! fuzz --replay DIR
//! ```
//!
//! Each case starts from a valid session (the committed fixture, or a synthetic session from
//! [`flowcam_pipeline::synthetic`]), applies one to four mutations drawn from a seeded
//! xorshift generator (the `.lst`: respelt integers, duplicate ids, line endings, field order,
//! geometry, huge and negative numbers, odd doubles, timestamps, Latin-1 and UTF-16, header
//! damage, byte flips, truncation; the side files `.ctx`, `.cla`, `_run_summary.txt`,
//! `_notes.txt`; the collage pages: re-encoded planar, tiled, in strips of odd heights,
//! 16-bit, grey, RGBA, big-endian, several pages, compressed, with tags of wrong types or
//! absurd values, byte flips and truncation), writes the session to a scratch folder and
//! runs the library's `pass::run_session` on it in a child process (so that a hang is
//! killed after `--timeout` and a panic or abort is seen as one).
//!
//! The child checks what the run says against what it wrote: a session the driver built
//! valid (every mutation it carries keeps it valid) must be accepted; a rejection must be an
//! error that is not a panic, with no manifest left; an accepted session must have exactly
//! one vignette per particle of the list (read by the driver's own parser), named by its
//! canonical id, listed in the manifest with its size, decoding with the `tiff` crate to
//! `w x h` pixels equal to the crop of the page the driver decoded itself (with
//! `read_image_to_buffer`, planes interleaved), with readable EXIF whose ImageDescription is
//! JSON naming the particle; and a rerun must find everything complete.
//!
//! A failure is saved under `target/fuzz-failures/` with the case's files, its description
//! (`case.json`), the child's stderr and verdict, and the command that replays it is printed.
//! `--known TAG` counts failures of cases carrying TAG (e.g. `planar`) as known rather than
//! failing the run, while a fix lands; by default every failure fails the run (exit 1).
//! FIFOs are never generated: they are not bytes to fuzz.

use flowcam_pipeline::TOOL_VERSION;
use flowcam_pipeline::engine::Runner;
use flowcam_pipeline::pass::{self, Outcome, PassOptions};
use flowcam_pipeline::synthetic::SyntheticSession;
use flowcam_pipeline::tasks::PipelineOptions;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::encoder::{Compression, TiffEncoder, colortype};

const USAGE: &str = "usage: fuzz [SECONDS] [--seed N] [--jobs J] [--timeout S] [--cases N] \
[--known TAG]... [--failures DIR] [--verbose] | fuzz --replay DIR";

const FIXTURE: &str = "19_10_Tank25_blanksremoved";
/// Side-file suffixes of a session: the library does not read them yet, so no mutation of
/// them may change a run's outcome.
const SIDE_FILES: [&str; 4] = [".ctx", ".cla", "_run_summary.txt", "_notes.txt"];
/// Failures of one class saved (and printed) at most; the rest are only counted.
const SAVED_PER_CLASS: usize = 5;

// --- Seeded randomness ----------------------------------------------------------------

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64*: tiny, deterministic across platforms and releases.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(splitmix(seed).max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// --- A case: a session held in memory --------------------------------------------------

/// A collage page: its file bytes and, while they are a faithful encoding, its pixels.
#[derive(Clone)]
struct Page {
    name: String,
    bytes: Vec<u8>,
    width: u32,
    height: u32,
    /// RGB8, row-major: the pixels the page was made from (for re-encoding).
    rgb: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Utf8,
    Latin1,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
}

struct Case {
    folder: String,
    lst_name: String,
    /// The `.lst` as lines, until a byte-level mutation renders it into `lst_raw`.
    lines: Vec<String>,
    crlf: bool,
    /// Every third line (or so) ends in CRLF, the others in LF.
    mixed_eol: bool,
    final_newline: bool,
    blank_tail: usize,
    encoding: Encoding,
    lst_raw: Option<Vec<u8>>,
    pages: Vec<Page>,
    /// Pages replaced by a folder of the same name.
    page_dirs: Vec<String>,
    /// Everything else in the folder (side files, extra files).
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
    /// Every mutation keeps the session valid: it must be accepted.
    valid: bool,
    tags: BTreeSet<&'static str>,
    notes: Vec<String>,
}

/// What `case.json` records about a case, for the child and for a replay.
#[derive(Serialize, Deserialize)]
struct CaseInfo {
    seed: u64,
    case: u64,
    folder: String,
    valid: bool,
    tags: Vec<String>,
    notes: Vec<String>,
}

impl Case {
    fn note(&mut self, tag: &'static str, keeps_valid: bool, what: String) {
        self.tags.insert(tag);
        self.valid &= keeps_valid;
        self.notes.push(format!("{tag}: {what}"));
    }

    fn render_lst(&self) -> Vec<u8> {
        if let Some(raw) = &self.lst_raw {
            return raw.clone();
        }
        let eol = if self.crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                let mixed = self.mixed_eol && splitmix(i as u64).is_multiple_of(3);
                text.push_str(if mixed { "\r\n" } else { eol });
            }
            text.push_str(line);
        }
        if self.final_newline {
            text.push_str(eol);
        }
        for _ in 0..self.blank_tail {
            text.push_str(eol);
        }
        match self.encoding {
            Encoding::Utf8 => text.into_bytes(),
            Encoding::Utf8Bom => [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat(),
            // A name beyond Latin-1 (another mutation's) keeps the file UTF-8.
            Encoding::Latin1 if text.chars().all(|c| u32::from(c) < 256) => {
                text.chars().map(|c| u32::from(c) as u8).collect()
            }
            Encoding::Latin1 => text.into_bytes(),
            Encoding::Utf16Le => [0xFEFF]
                .into_iter()
                .chain(text.encode_utf16())
                .flat_map(u16::to_le_bytes)
                .collect(),
            Encoding::Utf16Be => [0xFEFF]
                .into_iter()
                .chain(text.encode_utf16())
                .flat_map(u16::to_be_bytes)
                .collect(),
        }
    }

    /// Writes the session folder into `parent`; returns its path.
    fn write(&self, parent: &Path) -> std::io::Result<PathBuf> {
        let dir = parent.join(&self.folder);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&self.lst_name), self.render_lst())?;
        for page in &self.pages {
            if self.page_dirs.contains(&page.name) {
                std::fs::create_dir_all(dir.join(&page.name))?;
            } else {
                std::fs::write(dir.join(&page.name), &page.bytes)?;
            }
        }
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes)?;
        }
        for name in &self.dirs {
            std::fs::create_dir_all(dir.join(name))?;
        }
        Ok(dir)
    }

    /// The declared fields `(name, type)`, when the header is intact.
    fn fields(&self) -> Option<Vec<(String, String)>> {
        let n: usize = self
            .lines
            .get(1)?
            .strip_prefix("num-fields|")?
            .parse()
            .ok()?;
        let declared = self.lines.get(2..2 + n)?;
        declared
            .iter()
            .map(|l| {
                l.split_once('|')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect()
    }

    fn field(&self, name: &str) -> Option<usize> {
        self.fields()?.iter().position(|(n, _)| n == name)
    }

    /// Line indices of the rows.
    fn rows(&self) -> std::ops::Range<usize> {
        let n = self.fields().map_or(0, |f| f.len());
        (2 + n).min(self.lines.len())..self.lines.len()
    }

    fn cell(&self, row: usize, field: usize) -> Option<&str> {
        self.lines[row].split('|').nth(field)
    }

    fn set_cell(&mut self, row: usize, field: usize, value: &str) {
        let mut cells: Vec<&str> = self.lines[row].split('|').collect();
        if let Some(cell) = cells.get_mut(field) {
            *cell = value;
        }
        self.lines[row] = cells.join("|");
    }

    fn page(&self, name: &str) -> Option<&Page> {
        self.pages.iter().find(|p| p.name == name)
    }
}

// --- Bases --------------------------------------------------------------------------

struct Bases {
    fixture_files: BTreeMap<String, Vec<u8>>,
    fixture_page: Page,
    scratch: PathBuf,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(FIXTURE)
}

/// Decodes an RGB8 chunky page (the fixture's, a synthetic one) for re-encoding.
fn decode_rgb(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let mut decoder = Decoder::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions().map_err(|e| e.to_string())?;
    match decoder.read_image().map_err(|e| e.to_string())? {
        DecodingResult::U8(rgb) if rgb.len() == (w * h * 3) as usize => Ok((w, h, rgb)),
        _ => Err("not RGB8".into()),
    }
}

impl Bases {
    fn load(scratch: PathBuf) -> Result<Bases, String> {
        let mut fixture_files = BTreeMap::new();
        let entries = std::fs::read_dir(fixture_dir()).map_err(|e| e.to_string())?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            fixture_files.insert(name.into_owned(), bytes);
        }
        let page_name = format!("{FIXTURE}_images_000009.tif");
        let bytes = fixture_files
            .remove(&page_name)
            .ok_or("the fixture's collage page is missing")?;
        let (width, height, rgb) = decode_rgb(&bytes)?;
        Ok(Bases {
            fixture_files,
            fixture_page: Page {
                name: page_name,
                bytes,
                width,
                height,
                rgb,
            },
            scratch,
        })
    }

    fn side_files(&self, folder: &str) -> BTreeMap<String, Vec<u8>> {
        SIDE_FILES
            .iter()
            .filter_map(|suffix| {
                let bytes = self.fixture_files.get(&format!("{FIXTURE}{suffix}"))?;
                Some((format!("{folder}{suffix}"), bytes.clone()))
            })
            .collect()
    }

    fn case(&self, rng: &mut Rng, number: u64) -> Result<Case, String> {
        let mut case = if rng.chance(25) {
            let lst = &self.fixture_files[&format!("{FIXTURE}.lst")];
            let mut case = empty_case(FIXTURE, lst);
            case.pages.push(self.fixture_page.clone());
            case.files = self.side_files(FIXTURE);
            case.notes.push("base: the committed fixture".into());
            case
        } else {
            self.synthetic(rng, number)?
        };
        case.tags.insert("base");
        Ok(case)
    }

    fn synthetic(&self, rng: &mut Rng, number: u64) -> Result<Case, String> {
        let position = rng.chance(50).then(|| {
            let date = chrono::NaiveDate::from_ymd_opt(2023, 5, 4).expect("a date");
            let depth = rng.chance(50).then_some(rng.range(0, 40) as f64);
            (54.0143, -2.777, date, depth)
        });
        let session = SyntheticSession {
            particles: rng.range(1, 40) as usize,
            pages: rng.range(1, 3) as usize,
            position,
            prefix: "fz".into(),
            seed: rng.next(),
            page_width: rng.range(24, 300) as u32,
            extra_fields: rng.range(0, 2) as usize,
        };
        let parent = self.scratch.join(format!("base-{number}"));
        let dir = session.write(&parent).map_err(|e| format!("{e:#}"))?;
        let folder = session.folder_name();
        let lst = std::fs::read(dir.join(format!("{folder}.lst"))).map_err(|e| e.to_string())?;
        let mut case = empty_case(&folder, &lst);
        for page in 0..session.pages {
            let name = session.collage_name(page);
            let bytes = std::fs::read(dir.join(&name)).map_err(|e| e.to_string())?;
            let (width, height, rgb) = decode_rgb(&bytes)?;
            case.pages.push(Page {
                name,
                bytes,
                width,
                height,
                rgb,
            });
        }
        let _ = std::fs::remove_dir_all(&parent);
        case.files = self.side_files(&folder);
        case.notes.push(format!("base: {session:?}"));
        Ok(case)
    }
}

fn empty_case(folder: &str, lst: &[u8]) -> Case {
    let text = String::from_utf8_lossy(lst);
    let lines: Vec<String> = text
        .strip_suffix('\n')
        .unwrap_or(&text)
        .split('\n')
        .map(str::to_string)
        .collect();
    Case {
        folder: folder.to_string(),
        lst_name: format!("{folder}.lst"),
        lines,
        crlf: false,
        mixed_eol: false,
        final_newline: true,
        blank_tail: 0,
        encoding: Encoding::Utf8,
        lst_raw: None,
        pages: Vec::new(),
        page_dirs: Vec::new(),
        files: BTreeMap::new(),
        dirs: Vec::new(),
        valid: true,
        tags: BTreeSet::new(),
        notes: Vec::new(),
    }
}

// --- Byte-level mutations -----------------------------------------------------------

const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    0x7F,
    0xFF,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0xFFFF_FFFE,
    0x1000_0000,
];

/// One to eight random byte edits: bit flips, interesting bytes and words, truncation,
/// deletion, insertion, duplication.
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) -> String {
    let mut done = Vec::new();
    for _ in 0..rng.range(1, 8) {
        let len = bytes.len();
        let at = rng.below(len.max(1));
        match rng.below(8) {
            0 | 1 if len > 0 => {
                bytes[at] ^= 1 << rng.below(8);
                done.push(format!("flip@{at}"));
            }
            2 if len > 0 => {
                bytes[at] = *rng.pick(&[0, 0xFF, 0x7F, 0x80, b'|', b'\n', b'-', b'9']);
                done.push(format!("byte@{at}"));
            }
            3 if len >= 4 => {
                let at = at.min(len - 4);
                let word = *rng.pick(&INTERESTING_U32);
                let word = if rng.chance(50) {
                    word.to_le_bytes()
                } else {
                    word.to_be_bytes()
                };
                bytes[at..at + 4].copy_from_slice(&word);
                done.push(format!("word@{at}"));
            }
            4 => {
                bytes.truncate(at);
                done.push(format!("truncate@{at}"));
            }
            5 if len > 0 => {
                let end = (at + rng.range(1, 64) as usize).min(len);
                bytes.drain(at..end);
                done.push(format!("delete@{at}..{end}"));
            }
            6 => {
                let junk: Vec<u8> = (0..rng.range(1, 32)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, junk);
                done.push(format!("insert@{at}"));
            }
            _ if len > 0 => {
                let end = (at + rng.range(1, 256) as usize).min(len);
                let copy = bytes[at..end].to_vec();
                let to = rng.below(bytes.len());
                bytes.splice(to..to, copy);
                done.push(format!("duplicate {at}..{end}@{to}"));
            }
            _ => {}
        }
    }
    done.join(" ")
}

// --- TIFF pages in layouts of our choosing ------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Chunks {
    Strips(u32),
    Tiles(u32, u32),
}

#[derive(Clone, Copy, Debug)]
struct Layout {
    samples: u16,
    bits: u16,
    planar: bool,
    chunks: Chunks,
    big_endian: bool,
    photometric: u16,
}

/// One IFD entry: the value bytes are in the file's byte order.
struct Entry {
    tag: u16,
    ty: u16,
    count: u32,
    data: Vec<u8>,
}

const SHORT: u16 = 3;
const LONG: u16 = 4;

/// The page's samples, chunky, `samples` per pixel: channels made to differ (a decoder that
/// mixes planes up shows), 16-bit values spread over both bytes.
fn samples_of(page: &Page, samples: u16, bits: u16) -> Vec<u16> {
    let mut out = Vec::with_capacity(page.rgb.len() / 3 * samples as usize);
    for px in page.rgb.chunks_exact(3) {
        let v = px[0];
        let channels = [v, v ^ 0x5A, 255 - v, v / 2 + 100];
        let chosen: &[u8] = match samples {
            1 => &channels[..1],
            3 => &channels[..3],
            _ => &channels[..4],
        };
        for &c in chosen {
            out.push(if bits == 16 {
                (u16::from(c) * 257) ^ 0x0101
            } else {
                u16::from(c)
            });
        }
    }
    out
}

/// An uncompressed TIFF of the given pages, chunk by chunk, every tag written by us, so that
/// layouts the `tiff` encoder does not make (planar, tiles) and tag damage are possible.
fn write_tiff(
    pages: &[(Layout, u32, u32, Vec<u16>)],
    mut damage: impl FnMut(&mut Vec<Entry>),
) -> Vec<u8> {
    let be = pages.first().is_some_and(|p| p.0.big_endian);
    let u16b = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut out: Vec<u8> = if be {
        b"MM\0*".to_vec()
    } else {
        b"II*\0".to_vec()
    };
    let mut next_pointer = out.len();
    out.extend_from_slice(&[0; 4]);
    for (index, (layout, w, h, data)) in pages.iter().enumerate() {
        let (w, h) = (*w, *h);
        let spp = layout.samples as usize;
        let planes: Vec<Option<usize>> = if layout.planar {
            (0..spp).map(Some).collect()
        } else {
            vec![None]
        };
        let (cw, ch) = match layout.chunks {
            Chunks::Strips(rows) => (w, rows.max(1)),
            Chunks::Tiles(tw, th) => (tw.max(1), th.max(1)),
        };
        let across = w.div_ceil(cw);
        let down = h.div_ceil(ch);
        let mut offsets = Vec::new();
        let mut counts = Vec::new();
        for plane in &planes {
            for ty in 0..down {
                for tx in 0..across {
                    let start = out.len();
                    let (x0, y0) = (tx * cw, ty * ch);
                    let rows = match layout.chunks {
                        Chunks::Strips(_) => ch.min(h - y0),
                        Chunks::Tiles(..) => ch,
                    };
                    for y in y0..y0 + rows {
                        for x in x0..x0 + cw {
                            let inside = x < w && y < h;
                            let range = match plane {
                                Some(s) => *s..*s + 1,
                                None => 0..spp,
                            };
                            for s in range {
                                let v = if inside {
                                    data[(y as usize * w as usize + x as usize) * spp + s]
                                } else {
                                    0
                                };
                                if layout.bits == 16 {
                                    out.extend_from_slice(&u16b(v));
                                } else {
                                    out.push(v as u8);
                                }
                            }
                        }
                    }
                    offsets.push(start as u32);
                    counts.push((out.len() - start) as u32);
                }
            }
        }
        if out.len() % 2 == 1 {
            out.push(0);
        }
        let shorts = |values: &[u16]| values.iter().flat_map(|&v| u16b(v)).collect::<Vec<u8>>();
        let longs = |values: &[u32]| values.iter().flat_map(|&v| u32b(v)).collect::<Vec<u8>>();
        let entry = |tag: u16, ty: u16, count: usize, data: Vec<u8>| Entry {
            tag,
            ty,
            count: count as u32,
            data,
        };
        let mut entries = vec![
            entry(256, LONG, 1, longs(&[w])),
            entry(257, LONG, 1, longs(&[h])),
            entry(258, SHORT, spp, shorts(&vec![layout.bits; spp])),
            entry(259, SHORT, 1, shorts(&[1])),
            entry(262, SHORT, 1, shorts(&[layout.photometric])),
            entry(277, SHORT, 1, shorts(&[layout.samples])),
            entry(284, SHORT, 1, shorts(&[if layout.planar { 2 } else { 1 }])),
        ];
        match layout.chunks {
            Chunks::Strips(_) => {
                entries.push(entry(273, LONG, offsets.len(), longs(&offsets)));
                entries.push(entry(278, LONG, 1, longs(&[ch])));
                entries.push(entry(279, LONG, counts.len(), longs(&counts)));
            }
            Chunks::Tiles(..) => {
                entries.push(entry(322, LONG, 1, longs(&[cw])));
                entries.push(entry(323, LONG, 1, longs(&[ch])));
                entries.push(entry(324, LONG, offsets.len(), longs(&offsets)));
                entries.push(entry(325, LONG, counts.len(), longs(&counts)));
            }
        }
        if spp == 4 {
            entries.push(entry(338, SHORT, 1, shorts(&[2])));
        }
        entries.sort_by_key(|e| e.tag);
        if index == 0 {
            damage(&mut entries);
        }
        let ifd = out.len() as u32;
        out[next_pointer..next_pointer + 4].copy_from_slice(&u32b(ifd));
        let mut external = ifd as usize + 2 + 12 * entries.len() + 4;
        let mut tail = Vec::new();
        out.extend_from_slice(&u16b(entries.len() as u16));
        for e in &entries {
            out.extend_from_slice(&u16b(e.tag));
            out.extend_from_slice(&u16b(e.ty));
            out.extend_from_slice(&u32b(e.count));
            if e.data.len() <= 4 {
                let mut inline = e.data.clone();
                inline.resize(4, 0);
                out.extend_from_slice(&inline);
            } else {
                out.extend_from_slice(&u32b(external as u32));
                tail.extend_from_slice(&e.data);
                if tail.len() % 2 == 1 {
                    tail.push(0);
                }
                external = ifd as usize + 2 + 12 * entries.len() + 4 + tail.len();
            }
        }
        next_pointer = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&tail);
    }
    out
}

/// Breaks one tag of the first page: a wrong type, a count that does not fit, a huge or
/// negative value, an offset past the end.
fn damage_tags(rng: &mut Rng, entries: &mut Vec<Entry>, what: &mut String) {
    if entries.is_empty() {
        return;
    }
    let i = rng.below(entries.len());
    let e = &mut entries[i];
    match rng.below(6) {
        0 => {
            e.ty = *rng.pick(&[0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 0xFFFF]);
            *what = format!("tag {} type {}", e.tag, e.ty);
        }
        1 => {
            e.count = *rng.pick(&[0, 2, 3, 1000, 0x3FFF_FFFF, 0xFFFF_FFFF]);
            *what = format!("tag {} count {}", e.tag, e.count);
        }
        2 => {
            let v = *rng.pick(&INTERESTING_U32);
            let bytes = if rng.chance(50) {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let n = e.data.len().min(4);
            e.data[..n].copy_from_slice(&bytes[..n]);
            *what = format!("tag {} value {v:#x}", e.tag);
        }
        3 => {
            // Negative numbers: a signed type with a value of -1.
            e.ty = *rng.pick(&[6, 8, 9]);
            e.data = vec![0xFF; e.data.len().max(1)];
            *what = format!("tag {} negative (type {})", e.tag, e.ty);
        }
        4 => {
            let tag = e.tag;
            entries.remove(i);
            *what = format!("tag {tag} removed");
        }
        _ => {
            let copy = Entry {
                tag: e.tag,
                ty: e.ty,
                count: e.count,
                data: e.data.clone(),
            };
            *what = format!("tag {} repeated", copy.tag);
            entries.insert(i, copy);
        }
    }
}

/// Extra small pages after the first, of random sizes and layouts.
fn extra_pages(rng: &mut Rng, layout: Layout) -> Vec<(Layout, u32, u32, Vec<u16>)> {
    (0..rng.range(1, 2))
        .map(|_| {
            let (w, h) = (rng.range(1, 40) as u32, rng.range(1, 40) as u32);
            let data: Vec<u16> = (0..w * h * u32::from(layout.samples))
                .map(|_| (rng.next() % 256) as u16)
                .collect();
            let layout = Layout {
                chunks: Chunks::Strips(rng.range(1, 8) as u32),
                ..layout
            };
            (layout, w, h, data)
        })
        .collect()
}

/// Re-encodes one page in a layout of our own writing (uncompressed).
fn reencode_own(rng: &mut Rng, case: &mut Case, index: usize) {
    let page = &case.pages[index];
    let samples = *rng.pick(&[1, 3, 3, 4]);
    let bits = if rng.chance(15) { 16 } else { 8 };
    let planar = samples > 1 && rng.chance(50);
    let tiled = rng.chance(35);
    let odd_tiles = tiled && rng.chance(25);
    let chunks = if !tiled {
        let rows = match rng.below(5) {
            0 => 1,
            1 => page.height,
            2 => page.height + rng.range(1, 5) as u32,
            _ => rng.range(1, u64::from(page.height.max(2))) as u32 | 1,
        };
        Chunks::Strips(rows)
    } else if odd_tiles {
        Chunks::Tiles(rng.range(1, 40) as u32 | 1, rng.range(1, 40) as u32 | 1)
    } else {
        Chunks::Tiles(16 * rng.range(1, 4) as u32, 16 * rng.range(1, 4) as u32)
    };
    let white_is_zero = samples == 1 && rng.chance(10);
    let layout = Layout {
        samples,
        bits,
        planar,
        chunks,
        big_endian: rng.chance(30),
        photometric: if samples == 1 {
            u16::from(!white_is_zero)
        } else {
            2
        },
    };
    let mut pages = vec![(
        layout,
        page.width,
        page.height,
        samples_of(page, samples, bits),
    )];
    let multi = rng.chance(20);
    if multi {
        pages.extend(extra_pages(rng, layout));
    }
    let damaged = rng.chance(25);
    let mut what = String::new();
    let bytes = write_tiff(&pages, |entries| {
        if damaged {
            damage_tags(rng, entries, &mut what);
        }
    });
    let name = page.name.clone();
    case.pages[index].bytes = bytes;
    let supported = bits == 8 && !odd_tiles && !white_is_zero;
    case.note(
        "reencode",
        supported,
        format!("{name} as {layout:?}, {} page(s)", pages.len()),
    );
    for (on, tag) in [
        (planar, "planar"),
        (tiled && !odd_tiles, "tiles"),
        (odd_tiles, "odd-tiles"),
        (!tiled, "strips"),
        (bits == 16, "16bit"),
        (samples == 1, "gray"),
        (samples == 4, "rgba"),
        (layout.big_endian, "big-endian"),
        (multi, "multi-page"),
        (white_is_zero, "white-is-zero"),
    ] {
        if on {
            case.tags.insert(tag);
        }
    }
    if damaged {
        case.note("tiff-tags", false, format!("{name}: {what}"));
    }
}

/// Re-encodes one page with the `tiff` crate's encoder: compressed, chunky, strips.
fn reencode_crate(rng: &mut Rng, case: &mut Case, index: usize) {
    let page = &case.pages[index];
    let compression = *rng.pick(&[
        Compression::Uncompressed,
        Compression::Lzw,
        Compression::Deflate(Default::default()),
        Compression::Packbits,
    ]);
    let kind = rng.below(5);
    let rows = rng.range(1, u64::from(page.height) + 2) as u32;
    let pages = if rng.chance(20) { 2 } else { 1 };
    let (w, h) = (page.width, page.height);
    let mut cursor = Cursor::new(Vec::new());
    let result = (|| -> tiff::TiffResult<()> {
        let mut encoder = TiffEncoder::new(&mut cursor)?.with_compression(compression);
        for _ in 0..pages {
            match kind {
                0 => {
                    let data: Vec<u8> = samples_of(page, 1, 8).iter().map(|&v| v as u8).collect();
                    let mut image = encoder.new_image::<colortype::Gray8>(w, h)?;
                    image.rows_per_strip(rows)?;
                    image.write_data(&data)?;
                }
                1 | 2 => {
                    let data: Vec<u8> = samples_of(page, 3, 8).iter().map(|&v| v as u8).collect();
                    let mut image = encoder.new_image::<colortype::RGB8>(w, h)?;
                    image.rows_per_strip(rows)?;
                    image.write_data(&data)?;
                }
                3 => {
                    let data: Vec<u8> = samples_of(page, 4, 8).iter().map(|&v| v as u8).collect();
                    let mut image = encoder.new_image::<colortype::RGBA8>(w, h)?;
                    image.rows_per_strip(rows)?;
                    image.write_data(&data)?;
                }
                _ => {
                    let data = samples_of(page, 3, 16);
                    let mut image = encoder.new_image::<colortype::RGB16>(w, h)?;
                    image.rows_per_strip(rows)?;
                    image.write_data(&data)?;
                }
            }
        }
        Ok(())
    })();
    let name = page.name.clone();
    if let Err(e) = result {
        case.notes.push(format!(
            "reencode-crate: {name}: encoder refused ({e}), kept"
        ));
        return;
    }
    case.pages[index].bytes = cursor.into_inner();
    let kinds = ["gray8", "rgb8", "rgb8", "rgba8", "rgb16"];
    case.note(
        "compressed",
        kind != 4,
        format!(
            "{name} as {} {:?} in strips of {rows}, {pages} page(s)",
            kinds[kind],
            tiff_compression_name(compression)
        ),
    );
    for (on, tag) in [
        (kind == 0, "gray"),
        (kind == 3, "rgba"),
        (kind == 4, "16bit"),
        (pages > 1, "multi-page"),
    ] {
        if on {
            case.tags.insert(tag);
        }
    }
}

fn tiff_compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Uncompressed => "none",
        Compression::Lzw => "lzw",
        Compression::Deflate(_) => "deflate",
        Compression::Packbits => "packbits",
    }
}

// --- Mutations ----------------------------------------------------------------------

/// A respelling of an integer with the same value: `+N`, `0N`, `00N`, `-0`.
fn respell(rng: &mut Rng, value: &str) -> Option<String> {
    let n: i64 = value.parse().ok()?;
    Some(match (n, rng.below(3)) {
        (0, 0) => "-0".into(),
        (0, 1) => "+0".into(),
        (0, _) => "00".into(),
        (n, _) if n < 0 => format!("-0{}", n.unsigned_abs()),
        (n, 0) => format!("+{n}"),
        (n, 1) => format!("0{n}"),
        (n, _) => format!("+00{n}"),
    })
}

fn integer_fields(case: &Case) -> Vec<usize> {
    case.fields()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, (_, ty))| ty == "int32" || ty == "int64")
        .map(|(i, _)| i)
        .collect()
}

fn random_row(rng: &mut Rng, case: &Case) -> Option<usize> {
    let rows = case.rows();
    (!rows.is_empty()).then(|| rows.start + rng.below(rows.len()))
}

/// The mutations, each `(phase, function)`: structured edits of the `.lst` first (phase 0),
/// then its encoding (1), then byte-level edits (2), and the pages and side files anywhere.
type Mutation = fn(&mut Rng, &mut Case);

const MUTATIONS: [(u8, Mutation); 24] = [
    (0, m_respell_integers),
    (0, m_respelt_duplicate_id),
    (0, m_line_endings),
    (0, m_reorder_fields),
    (0, m_drop_rows),
    (0, m_geometry_inside),
    (0, m_geometry_outside),
    (0, m_huge_numbers),
    (0, m_odd_doubles),
    (0, m_timestamps),
    (0, m_rename_page),
    (0, m_bad_collage),
    (0, m_header),
    (0, m_extra_field),
    (1, m_encoding),
    (2, m_lst_bytes),
    (3, m_reencode_page),
    (3, m_reencode_page),
    (3, m_reencode_page_crate),
    (3, m_page_bytes),
    (3, m_page_missing),
    (3, m_side_files),
    (3, m_side_files),
    (3, m_folder_extras),
];

fn m_respell_integers(rng: &mut Rng, case: &mut Case) {
    let ints = integer_fields(case);
    if ints.is_empty() {
        return;
    }
    let mut done = 0;
    for _ in 0..rng.range(1, 6) {
        let (Some(row), field) = (random_row(rng, case), *rng.pick(&ints)) else {
            return;
        };
        let respelt = case.cell(row, field).and_then(|v| respell(rng, v));
        if let Some(v) = respelt {
            case.set_cell(row, field, &v);
            done += 1;
        }
    }
    // A column of zeros somewhere (image_x of the first row, say) spelt -0.
    if let (Some(row), Some(x)) = (random_row(rng, case), case.field("image_x"))
        && rng.chance(30)
    {
        case.set_cell(row, x, "-0");
        done += 1;
    }
    case.note("signed-int", true, format!("{done} integers respelt"));
}

fn m_respelt_duplicate_id(rng: &mut Rng, case: &mut Case) {
    let (Some(row), Some(id)) = (random_row(rng, case), case.field("id")) else {
        return;
    };
    let mut copy = case.lines[row].clone();
    if let Some(v) = case.cell(row, id).and_then(|v| respell(rng, v)) {
        let mut cells: Vec<&str> = copy.split('|').collect();
        cells[id] = &v;
        copy = cells.join("|");
    }
    let at = case.rows().end.min(row + 1 + rng.below(3));
    case.lines.insert(at, copy);
    case.note(
        "dup-id",
        false,
        format!("line {} repeated, id respelt", row + 1),
    );
}

fn m_line_endings(rng: &mut Rng, case: &mut Case) {
    match rng.below(4) {
        0 => case.crlf = true,
        1 => case.mixed_eol = true,
        2 => case.final_newline = false,
        _ => case.blank_tail = rng.range(1, 3) as usize,
    }
    case.note(
        "crlf",
        true,
        format!(
            "crlf {} mixed {} final newline {} blank lines {}",
            case.crlf, case.mixed_eol, case.final_newline, case.blank_tail
        ),
    );
}

fn m_reorder_fields(rng: &mut Rng, case: &mut Case) {
    let Some(fields) = case.fields() else { return };
    let n = fields.len();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for (k, &i) in order.iter().enumerate() {
        case.lines[2 + k] = format!("{}|{}", fields[i].0, fields[i].1);
    }
    for row in case.rows() {
        let cells: Vec<&str> = case.lines[row].split('|').collect();
        if cells.len() == n {
            case.lines[row] = order
                .iter()
                .map(|&i| cells[i])
                .collect::<Vec<_>>()
                .join("|");
        }
    }
    case.note("reorder", true, format!("fields in order {order:?}"));
}

fn m_drop_rows(rng: &mut Rng, case: &mut Case) {
    let rows = case.rows();
    let keep: Vec<String> = case.lines[rows.clone()]
        .iter()
        .filter(|_| rng.chance(60))
        .cloned()
        .collect();
    let dropped = rows.len() - keep.len();
    if keep.is_empty() {
        case.tags.insert("no-particles");
    }
    case.lines.splice(rows, keep);
    case.note("drop-rows", true, format!("{dropped} rows dropped"));
}

/// The row's collage page and its size, when the row names one we have.
fn row_page(case: &Case, row: usize) -> Option<(u32, u32)> {
    let collage = case.cell(row, case.field("collage_file")?)?;
    case.page(collage).map(|p| (p.width, p.height))
}

fn set_rect(case: &mut Case, row: usize, rect: [String; 4]) {
    for (name, v) in ["image_x", "image_y", "image_w", "image_h"]
        .iter()
        .zip(rect)
    {
        if let Some(i) = case.field(name) {
            case.set_cell(row, i, &v);
        }
    }
}

fn m_geometry_inside(rng: &mut Rng, case: &mut Case) {
    let Some(row) = random_row(rng, case) else {
        return;
    };
    let Some((pw, ph)) = row_page(case, row) else {
        return;
    };
    // Anywhere on the page, edges and corners included.
    let w = rng.range(1, u64::from(pw)) as u32;
    let h = rng.range(1, u64::from(ph)) as u32;
    let x = if rng.chance(30) {
        pw - w
    } else {
        rng.range(0, u64::from(pw - w)) as u32
    };
    let y = if rng.chance(30) {
        ph - h
    } else {
        rng.range(0, u64::from(ph - h)) as u32
    };
    set_rect(case, row, [x, y, w, h].map(|v| v.to_string()));
    case.note(
        "geometry",
        true,
        format!("line {} at {x},{y} {w}x{h}", row + 1),
    );
}

fn m_geometry_outside(rng: &mut Rng, case: &mut Case) {
    let Some(row) = random_row(rng, case) else {
        return;
    };
    let Some((pw, ph)) = row_page(case, row) else {
        return;
    };
    let rect = match rng.below(4) {
        0 => [pw - 1, 0, 2, 1],
        1 => [0, ph, 1, 1],
        2 => [0, 0, pw + 1, 1],
        _ => [0, 0, 1, ph + 1],
    };
    set_rect(case, row, rect.map(|v| v.to_string()));
    case.note(
        "geometry-out",
        false,
        format!("line {} at {rect:?}", row + 1),
    );
}

fn m_huge_numbers(rng: &mut Rng, case: &mut Case) {
    let Some(row) = random_row(rng, case) else {
        return;
    };
    let name = *rng.pick(&["id", "image_x", "image_y", "image_w", "image_h"]);
    let value = *rng.pick(&[
        "2147483647",
        "2147483648",
        "-2147483648",
        "-2147483649",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "99999999999999999999",
        "-1",
        "1e3",
        "0x10",
        " 5",
        "",
        "٣",
    ]);
    let Some(i) = case.field(name) else { return };
    case.set_cell(row, i, value);
    // An id may be any integer; geometry must fit the page.
    let keeps = name == "id"
        && value.parse::<i32>().is_ok()
        && !case.rows().any(|r| {
            r != row && case.cell(r, i).and_then(|v| v.parse::<i64>().ok()) == value.parse().ok()
        });
    case.note(
        "huge-numbers",
        keeps,
        format!("line {} {name} = {value:?}", row + 1),
    );
}

fn m_odd_doubles(rng: &mut Rng, case: &mut Case) {
    let doubles: Vec<usize> = case
        .fields()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, (_, ty))| ty == "double" || ty == "float")
        .map(|(i, _)| i)
        .collect();
    if doubles.is_empty() {
        return;
    }
    let mut done = Vec::new();
    for _ in 0..rng.range(1, 5) {
        let (Some(row), field) = (random_row(rng, case), *rng.pick(&doubles)) else {
            return;
        };
        let v = *rng.pick(&[
            "NaN", "inf", "-inf", "1e999", "-0.0", "+.5", "5.", "1E-7", "-00.50", "+1e+5",
        ]);
        case.set_cell(row, field, v);
        done.push(v);
    }
    if done.contains(&"1e999") {
        // Beyond f64: JSON readers such as serde_json refuse the number as written.
        case.tags.insert("double-overflow");
    }
    case.note("odd-doubles", true, done.join(" "));
}

fn m_timestamps(rng: &mut Rng, case: &mut Case) {
    let (Some(row), Some(i)) = (random_row(rng, case), case.field("timestamp")) else {
        return;
    };
    let (v, ok) = *rng.pick(&[
        ("2023-12-20 14:04:37.675", true),
        ("2023-12-20T14:04:37", true),
        ("2023-12-20T14:04:37.1", true),
        ("2023-12-20T14:04:37.123456789", true),
        ("2024-02-29T23:59:59.999", true),
        ("2023-02-30T14:04:37.675", false),
        ("2023-12-20T24:00:00", false),
        ("2023-12-20T14:04:37.", false),
        ("2023-12-20", false),
        ("", false),
    ]);
    case.set_cell(row, i, v);
    case.note(
        if ok { "timestamp" } else { "bad-timestamp" },
        ok,
        format!("line {} {v:?}", row + 1),
    );
}

fn m_rename_page(rng: &mut Rng, case: &mut Case) {
    let Some(collage) = case.field("collage_file") else {
        return;
    };
    if case.pages.is_empty() {
        return;
    }
    let index = rng.below(case.pages.len());
    let old = case.pages[index].name.clone();
    let latin1 = rng.chance(50);
    let new = if latin1 {
        format!("\u{e9}chantillon \u{b5}m {index}.tif")
    } else {
        format!("p\u{e2}ge \u{1F9A0} {index}.TIF")
    };
    for row in case.rows() {
        if case.cell(row, collage) == Some(old.as_str()) {
            case.set_cell(row, collage, &new);
        }
    }
    case.pages[index].name = new.clone();
    if latin1 {
        case.encoding = Encoding::Latin1;
        case.note("latin1", true, format!("{old} -> {new:?}, .lst in Latin-1"));
    } else {
        case.note("unicode-name", true, format!("{old} -> {new:?}"));
    }
}

fn m_bad_collage(rng: &mut Rng, case: &mut Case) {
    let (Some(row), Some(i)) = (random_row(rng, case), case.field("collage_file")) else {
        return;
    };
    let v = *rng.pick(&[
        "../x.tif",
        "/etc/passwd",
        "missing_000001.tif",
        "",
        "a\\b.tif",
        "C:x.tif",
        ".",
    ]);
    case.set_cell(row, i, v);
    case.note("bad-collage", false, format!("line {} {v:?}", row + 1));
}

fn m_header(rng: &mut Rng, case: &mut Case) {
    let Some(fields) = case.fields() else { return };
    let n = fields.len();
    let what = match rng.below(7) {
        0 => {
            case.lines[1] = format!("num-fields|{}", n + 1);
            "count + 1".to_string()
        }
        1 => {
            case.lines[1] = format!("num-fields|{}", n.saturating_sub(1));
            "count - 1".to_string()
        }
        2 => {
            case.lines[1] = "num-fields|99999999999999".into();
            "huge count".to_string()
        }
        3 => {
            let i = rng.below(n);
            let ty = *rng.pick(&["double", "string", "int16", "guid", "timestamp", ""]);
            case.lines[2 + i] = format!("{}|{ty}", fields[i].0);
            format!("{} declared {ty:?}", fields[i].0)
        }
        4 => {
            let i = rng.below(n);
            let j = rng.below(n);
            case.lines[2 + i] = format!("{}|{}", fields[j].0, fields[i].1);
            format!("field {i} named {}", fields[j].0)
        }
        5 => {
            case.lines[0] = rng
                .pick(&["", "18", "v017", "017 ", "\u{feff}017"])
                .to_string();
            format!("version {:?}", case.lines[0])
        }
        _ => {
            case.lines.truncate(rng.range(0, (n + 2) as u64) as usize);
            "cut in the header".to_string()
        }
    };
    // Some of these keep a valid list ("017 " is trimmed; a field renamed to itself).
    case.note("header", false, what);
}

fn m_extra_field(rng: &mut Rng, case: &mut Case) {
    let Some(fields) = case.fields() else { return };
    let at = rng.below(fields.len() + 1);
    let (ty, values): (&str, &[&str]) = *rng.pick(&[
        ("int32", &["0", "-5", "+7", "0012", "-0", "2147483647"][..]),
        ("int64", &["-9223372036854775808", "+1", "00"][..]),
        (
            "string",
            &["", "x y", "caf\u{e9}", "\"quoted\", comma", "\\"][..],
        ),
        ("float", &["1.5", "NaN", "-0"][..]),
        ("guid", &["{73C848A3-582F-4813-B05B-8299DD907A0C}"][..]),
    ]);
    let name = format!("extra_fuzz_{}", fields.len());
    case.lines.insert(2 + at, format!("{name}|{ty}"));
    case.lines[1] = format!("num-fields|{}", fields.len() + 1);
    let rows = case.rows();
    for row in rows {
        let mut cells: Vec<String> = case.lines[row].split('|').map(str::to_string).collect();
        if cells.len() == fields.len() {
            cells.insert(at, rng.pick(values).to_string());
        }
        case.lines[row] = cells.join("|");
    }
    case.note("extra-field", true, format!("{name}|{ty} at {at}"));
}

fn m_encoding(rng: &mut Rng, case: &mut Case) {
    case.encoding = *rng.pick(&[Encoding::Utf8Bom, Encoding::Utf16Le, Encoding::Utf16Be]);
    let name = match case.encoding {
        Encoding::Utf8Bom => "UTF-8 with BOM",
        Encoding::Utf16Le => "UTF-16LE",
        _ => "UTF-16BE",
    };
    case.note("encoding", false, name.to_string());
}

fn m_lst_bytes(rng: &mut Rng, case: &mut Case) {
    let mut bytes = case.render_lst();
    let what = mutate_bytes(rng, &mut bytes);
    case.lst_raw = Some(bytes);
    case.note("lst-bytes", false, what);
}

fn m_reencode_page(rng: &mut Rng, case: &mut Case) {
    if !case.pages.is_empty() {
        let index = rng.below(case.pages.len());
        reencode_own(rng, case, index);
    }
}

fn m_reencode_page_crate(rng: &mut Rng, case: &mut Case) {
    if !case.pages.is_empty() {
        let index = rng.below(case.pages.len());
        reencode_crate(rng, case, index);
    }
}

fn m_page_bytes(rng: &mut Rng, case: &mut Case) {
    if case.pages.is_empty() {
        return;
    }
    let index = rng.below(case.pages.len());
    let page = &mut case.pages[index];
    let what = if rng.chance(30) {
        let at = rng.below(page.bytes.len() + 1);
        page.bytes.truncate(at);
        format!("truncated at {at}")
    } else {
        // Aim at the header and first directory as often as at the pixels.
        let head = page.bytes.len().min(512);
        let mut part = page.bytes[..head].to_vec();
        if rng.chance(50) {
            let what = mutate_bytes(rng, &mut part);
            page.bytes.splice(..head, part);
            format!("head: {what}")
        } else {
            mutate_bytes(rng, &mut page.bytes)
        }
    };
    let name = page.name.clone();
    case.note("tiff-bytes", false, format!("{name}: {what}"));
}

fn m_page_missing(rng: &mut Rng, case: &mut Case) {
    if case.pages.is_empty() {
        return;
    }
    let index = rng.below(case.pages.len());
    let name = case.pages[index].name.clone();
    if rng.chance(50) {
        case.page_dirs.push(name.clone());
        case.note("page-dir", false, format!("{name} is a folder"));
    } else {
        case.pages[index].bytes.clear();
        case.note("tiff-bytes", false, format!("{name} is empty"));
    }
}

fn m_side_files(rng: &mut Rng, case: &mut Case) {
    let names: Vec<String> = case.files.keys().cloned().collect();
    if names.is_empty() {
        return;
    }
    let name = rng.pick(&names).clone();
    let what = match rng.below(7) {
        0 => {
            case.files.remove(&name);
            "removed".to_string()
        }
        1 => {
            let bytes = case.files.get_mut(&name).expect("listed");
            let what = mutate_bytes(rng, bytes);
            what.to_string()
        }
        2 => {
            let text = String::from_utf8_lossy(&case.files[&name]).into_owned();
            let utf16: Vec<u8> = [0xFEFF]
                .into_iter()
                .chain(text.encode_utf16())
                .flat_map(u16::to_le_bytes)
                .collect();
            case.files.insert(name.clone(), utf16);
            "UTF-16LE".to_string()
        }
        3 => {
            let text = String::from_utf8_lossy(&case.files[&name]).into_owned();
            let flipped = if text.contains("\r\n") {
                text.replace("\r\n", "\n")
            } else {
                text.replace('\n', "\r\n")
            };
            case.files.insert(name.clone(), flipped.into_bytes());
            "line endings swapped".to_string()
        }
        4 => {
            let junk: Vec<u8> = (0..rng.range(1, 1 << 17))
                .map(|_| rng.next() as u8)
                .collect();
            let len = junk.len();
            case.files.insert(name.clone(), junk);
            format!("{len} random bytes")
        }
        5 => {
            let bytes = case.files.get_mut(&name).expect("listed");
            bytes.extend_from_slice(
                b"\r\n[Extra]\r\nkey=\xe9t\xe9 \xb5m\r\nempty=\r\n=novalue\r\n[",
            );
            "Latin-1 INI section appended".to_string()
        }
        _ => {
            case.files.insert(name.clone(), Vec::new());
            "empty".to_string()
        }
    };
    case.note("side-files", true, format!("{name}: {what}"));
}

fn m_folder_extras(rng: &mut Rng, case: &mut Case) {
    match rng.below(4) {
        0 => {
            case.dirs.push("subfolder".into());
            case.note("subdir", true, "an empty subfolder".into());
        }
        1 => {
            case.files
                .insert(format!("{}.edg", case.folder), vec![0; 100]);
            case.note("side-files", true, "an .edg file".into());
        }
        2 => {
            case.files.insert("backup.LST".into(), case.render_lst());
            case.note("second-lst", false, "a second .lst (upper case)".into());
        }
        _ => {
            case.files.insert(".DS_Store".into(), vec![0, 0, 0, 1]);
            case.note("side-files", true, "a hidden file".into());
        }
    }
}

/// Case `number` of the run seeded `seed`: a base and one to four mutations.
fn generate(bases: &Bases, seed: u64, number: u64) -> Result<Case, String> {
    let mut rng = Rng::new(seed ^ splitmix(number));
    let mut case = bases.case(&mut rng, number)?;
    let mut chosen: Vec<(u8, Mutation)> = (0..rng.range(1, 4))
        .map(|_| *rng.pick(&MUTATIONS))
        .collect();
    chosen.sort_by_key(|(phase, _)| *phase);
    for (phase, mutation) in chosen {
        if phase < 2 && case.lst_raw.is_some() {
            continue;
        }
        mutation(&mut rng, &mut case);
    }
    Ok(case)
}

// --- The child: run the library, check what it made ---------------------------------

#[derive(Serialize, Deserialize, Debug)]
struct Verdict {
    /// `accepted`, `rejected`, or the failure's class.
    class: String,
    detail: String,
}

impl Verdict {
    fn is_failure(&self) -> bool {
        self.class != "accepted" && self.class != "rejected"
    }
}

fn child(case_dir: &Path) -> Verdict {
    let fail = |class: &str, detail: String| Verdict {
        class: class.to_string(),
        detail,
    };
    let info: CaseInfo = match std::fs::read(case_dir.join("case.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(info) => info,
        Err(e) => return fail("harness", format!("case.json: {e}")),
    };
    let input = case_dir.join("session").join(&info.folder);
    let output_root = case_dir.join("out");
    let options = PassOptions {
        output_root: output_root.clone(),
        experiment_name: None,
        sessions: 1,
        settle: Duration::ZERO,
        wait_for_collages: false,
        force: false,
        skip_complete: false,
        pipeline: PipelineOptions::default(),
        delivery: None,
        on_failure: None,
    };
    let runner = Runner::new(TOOL_VERSION, 1);
    let outcome = pass::run_session(&input, &options, &runner);
    let output = output_root.join(&info.folder);
    match &outcome.outcome {
        Outcome::Ran => {}
        Outcome::Failed { errors } => {
            let all = errors.join("\n");
            if all.contains("panic") {
                return fail("panic", all);
            }
            if errors.is_empty() || errors.iter().any(|e| e.trim().is_empty()) {
                return fail(
                    "wrong-output",
                    format!("failed without a message: {errors:?}"),
                );
            }
            if output.join("manifest.csv").exists() {
                return fail(
                    "wrong-output",
                    format!("failed, yet wrote a manifest: {all}"),
                );
            }
            if info.valid {
                return fail("rejected-valid", all);
            }
            return Verdict {
                class: "rejected".into(),
                detail: all,
            };
        }
        other => return fail("wrong-output", format!("first run: {other:?}")),
    }
    // The oracle is the harness's own code: a panic in it (or in the `tiff` crate under it)
    // is reported as such rather than taken for the library's.
    let checked = std::panic::catch_unwind(|| check_outputs(&input, &output, &info.folder));
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return fail("wrong-output", e),
        Err(_) => {
            return fail(
                "oracle-panic",
                "the output checks panicked (see stderr)".into(),
            );
        }
    }
    let again = pass::run_session(&input, &options, &runner);
    if !matches!(again.outcome, Outcome::Complete) {
        return fail(
            "wrong-output",
            format!("a rerun found work to do: {:?}", again.outcome),
        );
    }
    Verdict {
        class: "accepted".into(),
        detail: String::new(),
    }
}

struct Particle {
    line: usize,
    id: i64,
    rect: [i64; 4],
    collage: String,
}

/// The list read by the harness's own rules (the format's, not the library's code): what
/// an accepted session must have made a vignette for.
fn oracle_list(bytes: &[u8]) -> Result<(Vec<String>, Vec<Particle>), String> {
    let text: String = match std::str::from_utf8(bytes) {
        Ok(t) => t.to_string(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    };
    let mut lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let n: usize = lines
        .get(1)
        .and_then(|l| l.strip_prefix("num-fields|"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or("no num-fields line")?;
    let names: Vec<String> = lines
        .get(2..2 + n)
        .ok_or("fewer field lines than declared")?
        .iter()
        .map(|l| l.split_once('|').map_or(*l, |(a, _)| a).trim().to_string())
        .collect();
    let col = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .ok_or(format!("no {name} field"))
    };
    let cols = [
        col("id")?,
        col("image_x")?,
        col("image_y")?,
        col("image_w")?,
        col("image_h")?,
    ];
    let collage = col("collage_file")?;
    let mut particles = Vec::new();
    for (i, line) in lines[2 + n..].iter().enumerate() {
        let line_no = 3 + n + i;
        let cells: Vec<&str> = line.split('|').collect();
        if cells.len() != n {
            return Err(format!("line {line_no}: {} fields", cells.len()));
        }
        let mut numbers = [0i64; 5];
        for (k, &c) in cols.iter().enumerate() {
            numbers[k] = cells[c]
                .parse()
                .map_err(|_| format!("line {line_no}: {:?} is not an integer", cells[c]))?;
        }
        particles.push(Particle {
            line: line_no,
            id: numbers[0],
            rect: [numbers[1], numbers[2], numbers[3], numbers[4]],
            collage: cells[collage].to_string(),
        });
    }
    Ok((names, particles))
}

/// Decodes the first image of a TIFF as 8-bit chunky samples: (width, height, channels,
/// samples), planes interleaved when the file is planar.
fn decode_page(path: &Path) -> Result<(u32, u32, usize, Vec<u8>), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut d = Decoder::new(std::io::BufReader::new(file))
        .map_err(|e| e.to_string())?
        .with_limits(Limits::default());
    let (w, h) = d.dimensions().map_err(|e| e.to_string())?;
    let channels = match d.colortype().map_err(|e| e.to_string())? {
        tiff::ColorType::Gray(8) => 1,
        tiff::ColorType::RGB(8) => 3,
        tiff::ColorType::RGBA(8) => 4,
        other => return Err(format!("colour type {other:?}")),
    };
    let planar = d
        .find_tag(tiff::tags::Tag::PlanarConfiguration)
        .ok()
        .flatten()
        .and_then(|v| v.into_u16().ok())
        == Some(2);
    if planar && channels > 1 && matches!(d.get_chunk_type(), tiff::decoder::ChunkType::Tile) {
        return planar_tiles(&mut d, w, h, channels).map(|pixels| (w, h, channels, pixels));
    }
    let mut buffer = DecodingResult::U8(Vec::new());
    let layout = d
        .read_image_to_buffer(&mut buffer)
        .map_err(|e| e.to_string())?;
    let DecodingResult::U8(data) = buffer else {
        return Err("not 8-bit samples".into());
    };
    let pixels = w as usize * h as usize;
    if data.len() < layout.complete_len || data.len() < pixels * channels {
        return Err(format!(
            "decoded {} bytes of {} ({pixels} pixels x {channels})",
            data.len(),
            layout.complete_len
        ));
    }
    if planar && channels > 1 {
        let mut chunky = vec![0; pixels * channels];
        for s in 0..channels {
            for i in 0..pixels {
                chunky[i * channels + s] = data[s * pixels + i];
            }
        }
        return Ok((w, h, channels, chunky));
    }
    Ok((w, h, channels, data[..pixels * channels].to_vec()))
}

/// Planar tiles, which the `tiff` crate's whole-image reader cannot read (it trips an
/// assertion): tile by tile, each placed by the oracle's own arithmetic (tiles across, then
/// down, plane after plane), the padding beyond the page's edge dropped.
fn planar_tiles<R: std::io::Read + std::io::Seek>(
    d: &mut Decoder<R>,
    w: u32,
    h: u32,
    channels: usize,
) -> Result<Vec<u8>, String> {
    let (tw, th) = d.chunk_dimensions();
    if tw == 0 || th == 0 {
        return Err("tiles of no size".into());
    }
    let across = w.div_ceil(tw) as usize;
    let down = h.div_ceil(th) as usize;
    let (w, h, tw, th) = (w as usize, h as usize, tw as usize, th as usize);
    let mut out = vec![0u8; w * h * channels];
    for s in 0..channels {
        for t in 0..across * down {
            let index = (s * across * down + t) as u32;
            let DecodingResult::U8(tile) = d.read_chunk(index).map_err(|e| e.to_string())? else {
                return Err("not 8-bit samples".into());
            };
            let (x0, y0) = ((t % across) * tw, (t / across) * th);
            let (cw, ch) = (tw.min(w - x0), th.min(h - y0));
            let stride = if t % across == across - 1 { w - x0 } else { tw };
            if tile.len() < stride * ch {
                return Err(format!("tile {index}: {} bytes", tile.len()));
            }
            for y in 0..ch {
                for x in 0..cw {
                    out[((y0 + y) * w + x0 + x) * channels + s] = tile[y * stride + x];
                }
            }
        }
    }
    Ok(out)
}

fn check_outputs(input: &Path, output: &Path, experiment: &str) -> Result<(), String> {
    let lst = flowcam_pipeline::flowcam::lst::files_in(input)
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or("no .lst")?;
    let bytes = std::fs::read(&lst).map_err(|e| e.to_string())?;
    let (names, particles) =
        oracle_list(&bytes).map_err(|e| format!("accepted a list the oracle cannot read: {e}"))?;
    let mut seen = HashMap::new();
    for p in &particles {
        if let Some(first) = seen.insert(p.id, p.line) {
            return Err(format!(
                "accepted id {} twice (lines {first} and {})",
                p.id, p.line
            ));
        }
    }
    // Exactly one vignette per particle, named by its canonical id, in the folder of its
    // page, nothing else.
    let expected: BTreeSet<String> = particles
        .iter()
        .map(|p| format!("{}/{experiment}_{}.tif", p.collage, p.id))
        .collect();
    let dir = output.join("vignettes");
    let mut found: BTreeSet<String> = BTreeSet::new();
    for page in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = page.file_name().to_string_lossy().into_owned();
        match std::fs::read_dir(page.path()) {
            Ok(files) => found.extend(
                files
                    .flatten()
                    .map(|f| format!("{name}/{}", f.file_name().to_string_lossy())),
            ),
            Err(_) => {
                found.insert(name);
            }
        }
    }
    if found != expected {
        let extra: Vec<_> = found.difference(&expected).take(5).collect();
        let missing: Vec<_> = expected.difference(&found).take(5).collect();
        return Err(format!(
            "vignettes: {} found, {} expected; unexpected {extra:?}, missing {missing:?}",
            found.len(),
            expected.len()
        ));
    }
    // metadata.csv: the rows in order, ids canonical.
    let mut metadata = csv::Reader::from_path(output.join("metadata.csv"))
        .map_err(|e| format!("metadata.csv: {e}"))?;
    let header: Vec<String> = metadata
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_string)
        .collect();
    if header != names {
        return Err(format!("metadata.csv header {header:?}, fields {names:?}"));
    }
    let id_col = names.iter().position(|n| n == "id").ok_or("no id")?;
    let ids: Vec<String> = metadata
        .records()
        .map(|r| r.map(|r| r[id_col].to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let want: Vec<String> = particles.iter().map(|p| p.id.to_string()).collect();
    if ids != want {
        return Err(format!("metadata.csv ids {ids:?}, the list's {want:?}"));
    }
    // The manifest lists each vignette once, with its geometry and size.
    let mut manifest = csv::Reader::from_path(output.join("manifest.csv"))
        .map_err(|e| format!("manifest.csv: {e}"))?;
    let mut listed = HashSet::new();
    let by_name: HashMap<String, &Particle> = particles
        .iter()
        .map(|p| (format!("{experiment}_{}.tif", p.id), p))
        .collect();
    for record in manifest.records() {
        let r = record.map_err(|e| format!("manifest.csv: {e}"))?;
        let file = r.get(0).unwrap_or_default().to_string();
        let p = by_name
            .get(&file)
            .ok_or(format!("manifest lists {file:?}"))?;
        let size = std::fs::metadata(dir.join(&p.collage).join(&file))
            .map_err(|e| e.to_string())?
            .len();
        let row: Vec<&str> = r.iter().collect();
        let want = [
            file.clone(),
            p.id.to_string(),
            p.collage.clone(),
            p.rect[2].to_string(),
            p.rect[3].to_string(),
            size.to_string(),
        ];
        if row.len() < 6 || row[..6] != want {
            return Err(format!("manifest row {row:?}, expected {want:?}"));
        }
        if !listed.insert(file.clone()) {
            return Err(format!("manifest lists {file} twice"));
        }
    }
    if listed.len() != particles.len() {
        return Err(format!(
            "manifest lists {} vignettes of {}",
            listed.len(),
            particles.len()
        ));
    }
    // Pixels against an independent crop, EXIF readable and naming the particle.
    let mut pages: HashMap<&str, (u32, u32, usize, Vec<u8>)> = HashMap::new();
    for p in &particles {
        if !pages.contains_key(p.collage.as_str()) {
            let page = decode_page(&input.join(&p.collage)).map_err(|e| {
                format!(
                    "accepted {}, which the oracle cannot decode: {e}",
                    p.collage
                )
            })?;
            pages.insert(&p.collage, page);
        }
        let (pw, ph, channels, page) = &pages[p.collage.as_str()];
        let [x, y, w, h] = p.rect;
        if x < 0 || y < 0 || w < 1 || h < 1 || x + w > i64::from(*pw) || y + h > i64::from(*ph) {
            return Err(format!(
                "line {}: accepted {x},{y} {w}x{h} on a {pw}x{ph} page",
                p.line
            ));
        }
        let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
        let path = dir
            .join(&p.collage)
            .join(format!("{experiment}_{}.tif", p.id));
        let (vw, vh, vc, pixels) =
            decode_page(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if (vw as usize, vh as usize, vc) != (w, h, *channels) {
            return Err(format!(
                "particle {}: vignette {vw}x{vh}x{vc}, expected {w}x{h}x{channels}",
                p.id
            ));
        }
        let stride = *pw as usize * channels;
        for dy in 0..h {
            let start = (y + dy) * stride + x * channels;
            let want = &page[start..start + w * channels];
            let got = &pixels[dy * w * channels..(dy + 1) * w * channels];
            if want != got {
                return Err(format!(
                    "particle {} (line {}): row {dy} of the vignette differs from the page",
                    p.id, p.line
                ));
            }
        }
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let exif = exif::Reader::new()
            .read_from_container(&mut std::io::BufReader::new(file))
            .map_err(|e| format!("particle {}: EXIF: {e}", p.id))?;
        let field = exif
            .get_field(exif::Tag::ImageDescription, exif::In::PRIMARY)
            .ok_or(format!("particle {}: no ImageDescription", p.id))?;
        let exif::Value::Ascii(parts) = &field.value else {
            return Err(format!("particle {}: ImageDescription not ASCII", p.id));
        };
        let json: serde_json::Value = serde_json::from_slice(parts.first().ok_or("empty")?)
            .map_err(|e| format!("particle {}: ImageDescription is not JSON: {e}", p.id))?;
        // The row's fields, and besides them only the annotations DecollageImages adds
        // from session.json: the class of a list that fits, and the blank mark.
        let row_fields = json.as_object().map(|o| {
            o.iter()
                .filter(|(k, v)| {
                    names.iter().any(|n| n == k.as_str())
                        || !((k.as_str() == "class" && v.is_string())
                            || (k.as_str() == "blank" && v == &&serde_json::Value::Bool(true)))
                })
                .count()
        });
        if json["id"].as_i64() != Some(p.id) || row_fields != Some(names.len()) {
            return Err(format!(
                "particle {}: ImageDescription says id {} with {:?} fields",
                p.id,
                json["id"],
                json.as_object().map(|o| o.len())
            ));
        }
    }
    Ok(())
}

// --- The driver ---------------------------------------------------------------------

struct Args {
    seconds: f64,
    seed: Option<u64>,
    jobs: usize,
    timeout: f64,
    cases: Option<u64>,
    known: BTreeSet<String>,
    failures: PathBuf,
    verbose: bool,
    replay: Option<PathBuf>,
    child: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 60.0,
        seed: None,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        timeout: 30.0,
        cases: None,
        known: BTreeSet::new(),
        failures: Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures"),
        verbose: false,
        replay: None,
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        let number =
            |name: &str, v: String| v.parse::<f64>().map_err(|_| format!("bad {name} {v:?}"));
        match arg.as_str() {
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--seed" => {
                let v = value("--seed")?;
                args.seed = Some(v.parse().map_err(|_| format!("bad --seed {v:?}"))?);
            }
            "--jobs" => args.jobs = number("--jobs", value("--jobs")?)?.max(1.0) as usize,
            "--timeout" => args.timeout = number("--timeout", value("--timeout")?)?,
            "--cases" => args.cases = Some(number("--cases", value("--cases")?)? as u64),
            "--known" => {
                args.known.insert(value("--known")?);
            }
            "--failures" => args.failures = PathBuf::from(value("--failures")?),
            "--verbose" | "-v" => args.verbose = true,
            "--replay" => args.replay = Some(PathBuf::from(value("--replay")?)),
            "--child" => args.child = Some(PathBuf::from(value("--child")?)),
            seconds if !seconds.starts_with('-') => args.seconds = number("SECONDS", arg)?,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

struct Running {
    number: u64,
    dir: PathBuf,
    child: Child,
    started: Instant,
    tags: Vec<String>,
}

/// Starts the child on a case folder (`case.json` + `session/`).
fn spawn(dir: &Path, backtrace: bool) -> std::io::Result<Child> {
    let stderr = std::fs::File::create(dir.join("stderr.txt"))?;
    Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(dir)
        .env("RUST_BACKTRACE", if backtrace { "1" } else { "0" })
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
}

/// The child's verdict once it has ended (killed after `timeout`: a hang), else `None`.
fn poll(running: &mut Running, timeout: Duration) -> Option<Verdict> {
    let status = match running.child.try_wait() {
        Ok(Some(status)) => status,
        Ok(None) if running.started.elapsed() < timeout => return None,
        _ => {
            let _ = running.child.kill();
            let _ = running.child.wait();
            return Some(Verdict {
                class: "hang".into(),
                detail: format!("no verdict after {:.0} s; killed", timeout.as_secs_f64()),
            });
        }
    };
    let verdict = std::fs::read(running.dir.join("verdict.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Verdict>(&b).ok());
    Some(verdict.unwrap_or_else(|| {
        let stderr = std::fs::read_to_string(running.dir.join("stderr.txt")).unwrap_or_default();
        let first: String = stderr.lines().take(3).collect::<Vec<_>>().join(" | ");
        Verdict {
            class: if stderr.contains("panicked") {
                "panic".into()
            } else {
                "crash".into()
            },
            detail: format!("child exited with {status} without a verdict: {first}"),
        }
    }))
}

fn replay_command(dir: &Path) -> String {
    format!("cargo run --example fuzz -- --replay {}", dir.display())
}

fn replay(dir: &Path, timeout: Duration) -> i32 {
    let work = std::env::temp_dir().join(format!("flowcam-fuzz-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let prepared = copy_tree(&dir.join("session"), &work.join("session"))
        .and_then(|()| std::fs::copy(dir.join("case.json"), work.join("case.json")).map(|_| ()));
    if let Err(e) = prepared {
        eprintln!("cannot prepare the replay of {}: {e}", dir.display());
        return 2;
    }
    let info = std::fs::read_to_string(dir.join("case.json")).unwrap_or_default();
    println!("replaying {}\n{info}", dir.display());
    let verdict = match spawn(&work, true) {
        Ok(child) => {
            let mut running = Running {
                number: 0,
                dir: work.clone(),
                child,
                started: Instant::now(),
                tags: Vec::new(),
            };
            loop {
                match poll(&mut running, timeout) {
                    Some(v) => break v,
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        Err(e) => {
            eprintln!("cannot start the child: {e}");
            return 2;
        }
    };
    let stderr = std::fs::read_to_string(work.join("stderr.txt")).unwrap_or_default();
    if !stderr.is_empty() {
        println!("--- child stderr ---\n{stderr}");
    }
    println!("verdict: {}\n{}", verdict.class, verdict.detail);
    let _ = std::fs::remove_dir_all(&work);
    i32::from(verdict.is_failure())
}

#[derive(Default)]
struct Figures {
    cases: u64,
    accepted: u64,
    rejected: u64,
    valid: u64,
    failures: BTreeMap<String, u64>,
    known: BTreeMap<String, u64>,
    /// Cases carrying each tag, and how many of them failed.
    tags: BTreeMap<String, (u64, u64)>,
}

/// The scratch folder: memory-backed when the machine has one (the pipeline syncs every
/// file it writes), else the system's temporary folder.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("flowcam-fuzz-{}", std::process::id()))
}

fn drive(args: &Args, timeout: Duration) -> i32 {
    let seed = args.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        splitmix(now.as_nanos() as u64 ^ u64::from(std::process::id())) % 1_000_000_000
    });
    let known: Vec<&str> = args.known.iter().map(String::as_str).collect();
    println!(
        "fuzz: seed {seed} (rerun with --seed {seed}), {:.0} s, {} jobs, {:.0} s per case{}",
        args.seconds,
        args.jobs,
        timeout.as_secs_f64(),
        if known.is_empty() {
            String::new()
        } else {
            format!(", known: {}", known.join(","))
        }
    );
    let scratch = scratch_root();
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        eprintln!("cannot make {}: {e}", scratch.display());
        return 2;
    }
    let bases = match Bases::load(scratch.join("bases")) {
        Ok(bases) => bases,
        Err(e) => {
            eprintln!("cannot load the fixture: {e}");
            return 2;
        }
    };
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(args.seconds);
    let mut figures = Figures::default();
    let mut running: Vec<Running> = Vec::new();
    let mut saved: BTreeMap<String, usize> = BTreeMap::new();
    let mut next = 0u64;
    loop {
        let more = start.elapsed() < deadline && args.cases.is_none_or(|n| next < n);
        while more && running.len() < args.jobs {
            let number = next;
            next += 1;
            let dir = scratch.join(format!("case-{number}"));
            let started = generate(&bases, seed, number).and_then(|case| {
                let info = CaseInfo {
                    seed,
                    case: number,
                    folder: case.folder.clone(),
                    valid: case.valid,
                    tags: case.tags.iter().map(|t| t.to_string()).collect(),
                    notes: case.notes.clone(),
                };
                let json = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                std::fs::write(dir.join("case.json"), json).map_err(|e| e.to_string())?;
                case.write(&dir.join("session"))
                    .map_err(|e| e.to_string())?;
                let child = spawn(&dir, false).map_err(|e| e.to_string())?;
                if case.valid {
                    figures.valid += 1;
                }
                Ok(Running {
                    number,
                    dir: dir.clone(),
                    child,
                    started: Instant::now(),
                    tags: info.tags,
                })
            });
            match started {
                Ok(r) => running.push(r),
                Err(e) => {
                    eprintln!("case {number}: cannot set up: {e}");
                    *figures.failures.entry("harness".into()).or_default() += 1;
                }
            }
        }
        if running.is_empty() {
            break;
        }
        let mut i = 0;
        while i < running.len() {
            let Some(verdict) = poll(&mut running[i], timeout) else {
                i += 1;
                continue;
            };
            let r = running.swap_remove(i);
            figures.cases += 1;
            let failed = verdict.is_failure();
            for tag in &r.tags {
                let entry = figures.tags.entry(tag.clone()).or_default();
                entry.0 += 1;
                entry.1 += u64::from(failed);
            }
            match verdict.class.as_str() {
                "accepted" => figures.accepted += 1,
                "rejected" => figures.rejected += 1,
                class => {
                    let is_known = r.tags.iter().any(|t| args.known.contains(t));
                    let counts = if is_known {
                        &mut figures.known
                    } else {
                        &mut figures.failures
                    };
                    *counts.entry(class.to_string()).or_default() += 1;
                    let n = saved.entry(class.to_string()).or_default();
                    if !is_known && *n < SAVED_PER_CLASS {
                        *n += 1;
                        report_failure(args, seed, &r, &verdict);
                    }
                }
            }
            if args.verbose {
                println!("case {} [{}] {}", r.number, verdict.class, r.tags.join(","));
            }
            let _ = std::fs::remove_dir_all(&r.dir);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let elapsed = start.elapsed().as_secs_f64();
    let failures: u64 = figures.failures.values().sum();
    let known_count: u64 = figures.known.values().sum();
    println!("\n===== fuzz figures (seed {seed}) =====");
    println!(
        "cases {}  in {elapsed:.1} s  = {:.1} cases/s",
        figures.cases,
        figures.cases as f64 / elapsed.max(1e-9)
    );
    println!(
        "accepted (outputs checked) {}  rejected with a clean error {}  built valid {}",
        figures.accepted, figures.rejected, figures.valid
    );
    println!("failures {failures}  {:?}", figures.failures);
    if known_count > 0 {
        println!(
            "known (allowed by --known) {known_count}  {:?}",
            figures.known
        );
    }
    let failing_tags: Vec<String> = figures
        .tags
        .iter()
        .filter(|(_, (_, f))| *f > 0)
        .map(|(t, (n, f))| format!("{t} {f}/{n}"))
        .collect();
    if !failing_tags.is_empty() {
        println!(
            "failing cases by tag (failed/run): {}",
            failing_tags.join(", ")
        );
    }
    if failures > 0 {
        println!(
            "FAILED: reproducers in {} (replay: {})",
            args.failures.display(),
            replay_command(Path::new("DIR"))
        );
        1
    } else {
        println!("ok");
        0
    }
}

/// Saves the case (files, description, stderr, verdict) and prints how to replay it.
fn report_failure(args: &Args, seed: u64, r: &Running, verdict: &Verdict) {
    let dest = args
        .failures
        .join(format!("seed{seed}-case{}-{}", r.number, verdict.class));
    let _ = std::fs::remove_dir_all(&dest);
    let saved = copy_tree(&r.dir, &dest).and_then(|()| {
        let _ = std::fs::remove_dir_all(dest.join("out"));
        std::fs::write(
            dest.join("verdict.json"),
            serde_json::to_vec_pretty(verdict).unwrap_or_default(),
        )
    });
    let first: String = verdict
        .detail
        .lines()
        .take(4)
        .collect::<Vec<_>>()
        .join("\n    ");
    println!(
        "FAIL case {} [{}] tags {}\n    {first}",
        r.number,
        verdict.class,
        r.tags.join(",")
    );
    match saved {
        Ok(()) => println!("    replay: {}", replay_command(&dest)),
        Err(e) => println!("    (could not save the case to {}: {e})", dest.display()),
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    if let Some(dir) = &args.child {
        let verdict = child(dir);
        let json = serde_json::to_vec_pretty(&verdict).expect("a verdict serialises");
        if let Err(e) = std::fs::write(dir.join("verdict.json"), json) {
            eprintln!("cannot write the verdict: {e}");
            std::process::exit(3);
        }
        return;
    }
    if let Some(dir) = &args.replay {
        std::process::exit(replay(dir, timeout));
    }
    std::process::exit(drive(&args, timeout));
}

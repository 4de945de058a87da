//! A region of interest cut out of a collage page, for an order that asks for more (or
//! other) pixels than one particle's vignette: the rectangle as given, in the page's pixel
//! format, as a TIFF carrying the session's EXIF (position, instrument, pixel size) and, in
//! ImageDescription, where on which page it was cut.

use crate::flowcam::{Collage, input, vignette};
use crate::tasks::Session;
use crate::tasks::extract_metadata::{SessionRecord, SessionTags};
use anyhow::{Context, bail};
use std::path::Path;

/// The largest region cut, in pixels (a page of today's instruments is about 2048x2000).
pub const MAX_PIXELS: u64 = 4096 * 4096;

/// A rectangle of a page, in pixels from its top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    /// Every reason the region cannot be cut from a page of `width` x `height`.
    pub fn problems(&self, width: u32, height: u32) -> Vec<String> {
        let mut problems = Vec::new();
        if self.width == 0 || self.height == 0 {
            problems.push("`width` and `height` must be at least 1".to_string());
        }
        if u64::from(self.width) * u64::from(self.height) > MAX_PIXELS {
            problems.push(format!(
                "the region is {}x{} pixels; at most {MAX_PIXELS} pixels are cut at once",
                self.width, self.height
            ));
        }
        if u64::from(self.x) + u64::from(self.width) > u64::from(width) {
            problems.push(format!(
                "`x` + `width` = {} is past the page's width of {width} pixels",
                u64::from(self.x) + u64::from(self.width)
            ));
        }
        if u64::from(self.y) + u64::from(self.height) > u64::from(height) {
            problems.push(format!(
                "`y` + `height` = {} is past the page's height of {height} pixels",
                u64::from(self.y) + u64::from(self.height)
            ));
        }
        problems
    }
}

/// The width and height of the page at `path` (a regular file inside `folder`, canonical),
/// read from its header without decoding it.
pub fn page_size(path: &Path, folder: &Path) -> anyhow::Result<(u32, u32)> {
    let file = input::open_regular(path, folder)?;
    let mut decoder = tiff::decoder::Decoder::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a TIFF page", name_of(path)))?;
    decoder
        .dimensions()
        .with_context(|| format!("{}: no page size", name_of(path)))
}

/// Cuts `region` out of the page `collage` of `session` (a file of its folder) as a TIFF.
pub fn cut(session: &Session, collage: &Path, region: Region) -> anyhow::Result<Vec<u8>> {
    // The session's folder is canonical already.
    let page = Collage::open(collage, &session.input)?;
    let problems = region.problems(page.width, page.height);
    if !problems.is_empty() {
        bail!("{}: {}", name_of(collage), problems.join("; "));
    }
    let pixels = page
        .crop(region.x, region.y, region.width, region.height)
        .context("a checked region left the page")?;
    let record = SessionRecord::load_for(session)?;
    let tags = SessionTags::of(session, record.as_ref());
    let description = serde_json::json!({
        "session": session.experiment,
        "collage": name_of(collage),
        "x": region.x,
        "y": region.y,
        "width": region.width,
        "height": region.height,
    })
    .to_string();
    let description = vignette::is_tag_text(&description).then_some(description);
    vignette::encode(
        &pixels,
        region.width,
        region.height,
        page.format,
        &tags.vignette_tags(description.as_deref(), None, None),
    )
    .context("encoding the region")
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

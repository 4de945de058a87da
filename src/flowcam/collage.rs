//! Collage pages: the TIFF images in which the instrument packs particle images side by side.

use crate::budget::{MemoryBudget, Reservation};
use crate::flowcam::{input, kept_pages};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use tiff::ColorType;
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::Tag;

/// The pixel layouts we decode and write back unchanged. The samples we have are RGB with
/// three equal channels; grey pages exist on other instruments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Gray8,
    Rgb8,
    Rgba8,
}

impl PixelFormat {
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 => 4,
        }
    }
}

/// One decoded collage page.
pub struct Collage {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Row-major and interleaved, exactly `width * height * channels` bytes.
    pub pixels: Vec<u8>,
    /// Where the pixels' buffer goes back when the page is dropped.
    budget: Option<&'static MemoryBudget>,
    /// The page's share of the process's memory budget, held while the page lives.
    _memory: Option<Reservation>,
    /// The file it was decoded from, as it was then (for [`Collage::hand_over`]).
    source: Option<(std::path::PathBuf, kept_pages::FileStamp)>,
}

impl Drop for Collage {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.give_back(std::mem::take(&mut self.pixels));
        }
    }
}

impl Collage {
    /// Decodes the first page of the TIFF at `path`, which must be a regular file inside
    /// the session folder `folder` (canonical), within the process's page memory budget.
    ///
    /// A page handed over by an earlier task of the run ([`Collage::hand_over`]) is taken
    /// instead of decoded again, if its file is unchanged.
    pub fn open(path: &Path, folder: &Path) -> anyhow::Result<Collage> {
        let file = input::open_regular(path, folder)?;
        let stamp = file
            .metadata()
            .map(|meta| kept_pages::FileStamp::of(&meta))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let budget = MemoryBudget::pages();
        let mut page = match kept_pages::take(path, stamp) {
            Some(mut kept) => {
                kept._memory = Some(budget.reserve(kept.pixels.len().saturating_mul(2)));
                kept
            }
            None => Self::read(file, Some(budget))?,
        };
        page.source = Some((path.to_path_buf(), stamp));
        Ok(page)
    }

    /// Keeps the page for the next task of this run that opens the same file (see
    /// [`kept_pages`]), if it fits in the pages' share of the budget; else drops it.
    pub fn hand_over(mut self) {
        let Some((path, stamp)) = self.source.take() else {
            return;
        };
        // Changed while it was decoded: these pixels may be of neither version.
        let now = std::fs::metadata(&path).map(|meta| kept_pages::FileStamp::of(&meta));
        if now.is_ok_and(|now| now == stamp) {
            let limit = self.budget.map_or(0, |b| b.limit());
            kept_pages::keep(&path, stamp, self, limit);
        }
    }

    /// The page without its share of the budget (kept pages hold none).
    pub(crate) fn without_reservation(mut self) -> Collage {
        self._memory = None;
        self
    }

    /// Decodes the first page of an already opened TIFF.
    pub fn read(file: File, budget: Option<&'static MemoryBudget>) -> anyhow::Result<Collage> {
        // The decoder has assertions that hostile files can trip (seen with planar tiles):
        // a page it cannot read is an error naming the page, never a crash of the worker.
        let reader = Buffered {
            inner: BufReader::with_capacity(1 << 16, file),
            position: 0,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::decode(reader, budget)
        }))
        .unwrap_or_else(|panic| {
            let message = crate::engine::runner::panic_message(panic.as_ref());
            Err(format!("the TIFF decoder gave up on this file ({message})"))
        })
        .map_err(|e| anyhow::anyhow!("cannot decode collage: {e}"))
    }

    fn decode<R: std::io::Read + std::io::Seek>(
        reader: R,
        budget: Option<&'static MemoryBudget>,
    ) -> Result<Collage, String> {
        // The default limits (256 MiB per decoded image) refuse absurd pages rather than
        // exhausting memory; a real page is about 12 MB.
        let mut decoder = Decoder::new(reader)
            .map_err(|e| e.to_string())?
            .with_limits(Limits::default());
        let (width, height) = decoder.dimensions().map_err(|e| e.to_string())?;
        let format = match decoder.colortype().map_err(|e| e.to_string())? {
            ColorType::Gray(8) => PixelFormat::Gray8,
            ColorType::RGB(8) => PixelFormat::Rgb8,
            ColorType::RGBA(8) => PixelFormat::Rgba8,
            other => return Err(format!("unsupported pixel layout {other:?}")),
        };
        let channels = format.channels();
        let expected = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(channels))
            .ok_or_else(|| format!("a {width}x{height} page is too large"))?;
        // Refused before anything is allocated: the header's size is untrusted.
        let most = Limits::default().decoding_buffer_size;
        if expected > most {
            return Err(format!(
                "a {width}x{height} page of {channels} channels needs {expected} bytes, over \
                 the {most} a page may take"
            ));
        }
        // The decoded page and, at most, its crops: reserved before decoding.
        let memory = budget.map(|b| b.reserve(expected.saturating_mul(2)));
        let planar = decoder
            .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
            .map_err(|e| e.to_string())?
            == Some(2);
        if planar && channels > 1 {
            let pixels = read_planar(&mut decoder, width, height, channels)?;
            return Ok(Collage {
                width,
                height,
                format,
                pixels,
                budget: None,
                _memory: memory,
                source: None,
            });
        }
        let layout = decoder.image_buffer_layout().map_err(|e| e.to_string())?;
        if layout.planes > 1 || layout.complete_len != expected {
            return Err(format!(
                "the decoder lays the page out in {} planes of {} bytes, not one of {expected}",
                layout.planes, layout.len
            ));
        }
        let mut pixels = match budget {
            Some(budget) => budget.buffer(expected),
            None => vec![0; expected],
        };
        if let Err(e) = decoder.read_image_bytes(&mut pixels) {
            if let Some(budget) = budget {
                budget.give_back(pixels);
            }
            return Err(e.to_string());
        }
        // Whatever the decoder did, a crop must never read outside the page or see pixels
        // of the wrong layout: the buffer is exactly what the header promises, or an error.
        if pixels.len() != expected {
            return Err(format!(
                "decoded {} bytes where a {width}x{height} page of {channels} channels has \
                 {expected}",
                pixels.len()
            ));
        }
        Ok(Collage {
            width,
            height,
            format,
            pixels,
            budget,
            _memory: memory,
            source: None,
        })
    }

    /// Whether the rectangle is not empty and lies wholly inside the page.
    pub fn contains(&self, x: u32, y: u32, w: u32, h: u32) -> bool {
        let fits = |start: u32, len: u32, limit: u32| {
            len > 0 && start.checked_add(len).is_some_and(|end| end <= limit)
        };
        fits(x, w, self.width) && fits(y, h, self.height)
    }

    /// The pixels of the rectangle, or `None` if it does not lie wholly inside the page.
    /// Whether every pixel of a colour page has its channels equal (a grey image stored as
    /// RGB, as the FlowCam stores its pages): then one channel holds all of it.
    pub fn channels_equal(&self) -> bool {
        match self.format {
            PixelFormat::Gray8 => true,
            PixelFormat::Rgb8 => self
                .pixels
                .chunks_exact(3)
                .all(|p| p[0] == p[1] && p[1] == p[2]),
            PixelFormat::Rgba8 => false,
        }
    }

    pub fn crop(&self, x: u32, y: u32, w: u32, h: u32) -> Option<Vec<u8>> {
        if !self.contains(x, y, w, h) {
            return None;
        }
        let c = self.format.channels();
        let stride = self.width as usize * c;
        let row_len = w as usize * c;
        let mut out = Vec::with_capacity(row_len * h as usize);
        for row in y as usize..(y + h) as usize {
            let start = row * stride + x as usize * c;
            out.extend_from_slice(&self.pixels[start..start + row_len]);
        }
        Some(out)
    }
}

/// Items grouped by the collage page they lie on, pages in order of first appearance (as
/// the `.lst` lists them): the unit of work of every task that reads pages.
#[derive(Debug)]
pub struct ByPage<T> {
    pages: Vec<(String, Vec<T>)>,
    index: std::collections::HashMap<String, usize>,
}

impl<T> Default for ByPage<T> {
    fn default() -> Self {
        ByPage {
            pages: Vec::new(),
            index: Default::default(),
        }
    }
}

impl<T> ByPage<T> {
    /// Adds `item` to `page`'s group.
    pub fn push(&mut self, page: &str, item: T) {
        let at = match self.index.get(page) {
            Some(&at) => at,
            None => {
                self.pages.push((page.to_string(), Vec::new()));
                self.index.insert(page.to_string(), self.pages.len() - 1);
                self.pages.len() - 1
            }
        };
        self.pages[at].1.push(item);
    }

    /// (page, its items), in order of first appearance.
    pub fn into_pages(self) -> Vec<(String, Vec<T>)> {
        self.pages
    }
}

/// A planar page (PlanarConfiguration=2: all of channel 0, then all of channel 1, ...,
/// each cut in strips or tiles) decoded chunk by chunk into interleaved pixels. Every chunk
/// must be there, hold the samples its place in the page needs, and lie inside the page.
fn read_planar<R: std::io::Read + std::io::Seek>(
    decoder: &mut Decoder<R>,
    width: u32,
    height: u32,
    channels: usize,
) -> Result<Vec<u8>, String> {
    let (chunk_w, chunk_h) = decoder.chunk_dimensions();
    if chunk_w == 0 || chunk_h == 0 {
        return Err("strips or tiles of no size".to_string());
    }
    let across = width.div_ceil(chunk_w) as usize;
    let per_plane = across * height.div_ceil(chunk_h) as usize;
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0u8; w * h * channels];
    for plane in 0..channels {
        for j in 0..per_plane {
            let index = u32::try_from(plane * per_plane + j).map_err(|e| e.to_string())?;
            let (data_w, data_h) = decoder.chunk_data_dimensions(index);
            let DecodingResult::U8(data) = decoder
                .read_chunk(index)
                .map_err(|e| format!("plane {plane}, chunk {j}: {e}"))?
            else {
                return Err("not 8 bits per sample".to_string());
            };
            let (data_w, data_h) = (data_w as usize, data_h as usize);
            if data.len() < data_w * data_h {
                return Err(format!(
                    "plane {plane}, chunk {j}: {} bytes for {data_w}x{data_h} samples",
                    data.len()
                ));
            }
            let x0 = (j % across) * chunk_w as usize;
            let y0 = (j / across) * chunk_h as usize;
            if x0 >= w || y0 >= h {
                return Err(format!("plane {plane}, chunk {j} lies outside the page"));
            }
            // Tiles are stored whole; the decoder sizes the last row of tiles of planes
            // after the first with their padding, which is cut off here.
            let (used_w, used_h) = (data_w.min(w - x0), data_h.min(h - y0));
            for row in 0..used_h {
                let source = &data[row * data_w..row * data_w + used_w];
                let start = ((y0 + row) * w + x0) * channels + plane;
                for (k, &v) in source.iter().enumerate() {
                    out[start + k * channels] = v;
                }
            }
        }
    }
    Ok(out)
}

/// A buffered file whose seeks to where the buffer already is cost no system call: the
/// decoder seeks to each strip before reading it, and a page's strips follow one another,
/// so a plain `BufReader` (which drops its buffer on every seek) made two calls a strip,
/// about 3,800 for a real page.
struct Buffered {
    inner: BufReader<File>,
    /// Where the next read starts, from the start of the file.
    position: u64,
}

impl std::io::Read for Buffered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Buffered {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        use std::io::SeekFrom;
        match to {
            SeekFrom::Start(offset) => {
                let delta = i64::try_from(offset)
                    .ok()
                    .and_then(|o| o.checked_sub(self.position as i64));
                match delta {
                    Some(delta) => self.inner.seek_relative(delta)?,
                    None => {
                        self.inner.seek(to)?;
                    }
                }
                self.position = offset;
            }
            other => self.position = self.inner.seek(other)?,
        }
        Ok(self.position)
    }
}

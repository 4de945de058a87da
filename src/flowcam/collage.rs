//! Collage pages: the TIFF images in which the instrument packs particle images side by side.

use crate::budget::{MemoryBudget, Reservation};
use crate::flowcam::input;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use tiff::ColorType;
use tiff::decoder::{Decoder, DecodingResult, Limits};

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
    /// The page's share of the process's memory budget, held while the page lives.
    _memory: Option<Reservation>,
}

impl Collage {
    /// Decodes the first page of the TIFF at `path`, which must be a regular file inside
    /// the session folder `folder` (canonical), within the process's page memory budget.
    pub fn open(path: &Path, folder: &Path) -> anyhow::Result<Collage> {
        let file = input::open_regular(path, folder)?;
        Self::read(file, Some(MemoryBudget::pages()))
    }

    /// Decodes the first page of an already opened TIFF.
    pub fn read(file: File, budget: Option<&'static MemoryBudget>) -> anyhow::Result<Collage> {
        Self::decode(BufReader::with_capacity(1 << 16, file), budget)
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
        // The decoded page and, at most, its crops: reserved before decoding.
        let memory = budget.map(|b| b.reserve(expected.saturating_mul(2)));
        let mut result = DecodingResult::U8(Vec::new());
        let layout = decoder
            .read_image_to_buffer(&mut result)
            .map_err(|e| e.to_string())?;
        let DecodingResult::U8(mut pixels) = result else {
            return Err("not 8 bits per sample".to_string());
        };
        if pixels.len() < layout.complete_len {
            return Err(format!(
                "decoded only {} of the page's {} bytes (a planar page over the decoder's \
                 limits?)",
                pixels.len(),
                layout.complete_len
            ));
        }
        if layout.planes > 1 {
            // PlanarConfiguration=2: one plane per channel (RRR.. GGG.. BBB..); interleave.
            let plane = layout
                .plane_stride
                .map_or(pixels.len() / layout.planes, |s| s.get());
            pixels = interleave(&pixels, layout.planes, plane, expected / channels).ok_or_else(
                || {
                    format!(
                        "{} planes of {plane} bytes do not make a {width}x{height} page of \
                         {channels} channels",
                        layout.planes
                    )
                },
            )?;
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
            _memory: memory,
        })
    }

    /// The pixels of the rectangle, or `None` if it does not lie wholly inside the page.
    pub fn crop(&self, x: u32, y: u32, w: u32, h: u32) -> Option<Vec<u8>> {
        let fits = |start: u32, len: u32, limit: u32| {
            len > 0 && start.checked_add(len).is_some_and(|end| end <= limit)
        };
        if !fits(x, w, self.width) || !fits(y, h, self.height) {
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

/// `planes` planes of `plane` bytes each, `pixels` samples used per plane, as interleaved
/// pixels; `None` when the buffer is too short for that.
fn interleave(data: &[u8], planes: usize, plane: usize, pixels: usize) -> Option<Vec<u8>> {
    if plane < pixels || data.len() < plane.checked_mul(planes)? {
        return None;
    }
    let mut out = vec![0u8; pixels * planes];
    for p in 0..planes {
        let source = &data[p * plane..p * plane + pixels];
        for (i, &v) in source.iter().enumerate() {
            out[i * planes + p] = v;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_interleave_into_pixels() {
        let planar = [1, 2, 3, 10, 20, 30, 100, 200, 255];
        assert_eq!(
            interleave(&planar, 3, 3, 3).unwrap(),
            vec![1, 10, 100, 2, 20, 200, 3, 30, 255]
        );
        assert!(interleave(&planar, 3, 4, 3).is_none());
    }
}

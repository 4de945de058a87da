//! Collage pages: the TIFF images in which the instrument packs particle images side by side.

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
    /// Row-major, `width * height * channels` bytes.
    pub pixels: Vec<u8>,
}

impl Collage {
    /// Decodes the first page of the TIFF at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Collage> {
        let file = File::open(path).map_err(|e| anyhow::anyhow!("cannot open collage: {e}"))?;
        Self::decode(BufReader::with_capacity(1 << 16, file))
            .map_err(|e| anyhow::anyhow!("cannot decode collage: {e}"))
    }

    fn decode<R: std::io::Read + std::io::Seek>(reader: R) -> Result<Collage, tiff::TiffError> {
        // The default limits (256 MiB per decoded image) refuse absurd pages rather than
        // exhausting memory; a real page is about 12 MB.
        let mut decoder = Decoder::new(reader)?.with_limits(Limits::default());
        let (width, height) = decoder.dimensions()?;
        let format = match decoder.colortype()? {
            ColorType::Gray(8) => PixelFormat::Gray8,
            ColorType::RGB(8) => PixelFormat::Rgb8,
            ColorType::RGBA(8) => PixelFormat::Rgba8,
            other => {
                return Err(tiff::TiffError::UnsupportedError(
                    tiff::TiffUnsupportedError::UnsupportedColorType(other),
                ));
            }
        };
        let pixels = match decoder.read_image()? {
            DecodingResult::U8(pixels) => pixels,
            _ => {
                return Err(tiff::TiffError::FormatError(
                    tiff::TiffFormatError::InvalidTagValueType(tiff::tags::Tag::BitsPerSample),
                ));
            }
        };
        Ok(Collage {
            width,
            height,
            format,
            pixels,
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

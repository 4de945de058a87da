//! PNGs of vignettes for the browser, made from the TIFFs on request and kept in a bounded
//! cache in memory; each carries an `ETag` from the TIFF's size and time, so a browser that
//! has it is answered 304.

use crate::engine::Digest;
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The longest side of a gallery thumbnail, in pixels.
pub const THUMBNAIL: u32 = 128;

/// What the cache may hold before it starts again (the server stays small).
pub const CACHE_BYTES: usize = 32 << 20;

/// A PNG and its entity tag.
#[derive(Debug, Clone)]
pub struct Picture {
    pub etag: String,
    pub png: Arc<Vec<u8>>,
}

/// The pictures by (TIFF, longest side), and their bytes in all.
type Entries = (HashMap<(PathBuf, u32), Picture>, usize);

/// PNGs by (TIFF, longest side), forgotten all at once when they pass [`CACHE_BYTES`].
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<Entries>,
}

impl Cache {
    /// The PNG of `tiff` scaled to at most `side` pixels (0: full size): from the cache
    /// when the TIFF has not changed since, else made now.
    pub fn get(&self, tiff: &Path, side: u32) -> anyhow::Result<Picture> {
        let meta = std::fs::metadata(tiff).with_context(|| tiff.display().to_string())?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let etag = format!(
            "\"{}\"",
            &Digest::new()
                .str(&tiff.display().to_string())
                .str(&format!("{} {modified} {side}", meta.len()))
                .hex()[..32]
        );
        let key = (tiff.to_path_buf(), side);
        if let Some(hit) = self.lock().0.get(&key)
            && hit.etag == etag
        {
            return Ok(hit.clone());
        }
        let png = Arc::new(png_of(tiff, side)?);
        let picture = Picture { etag, png };
        let mut entries = self.lock();
        if entries.1 + picture.png.len() > CACHE_BYTES {
            entries.0.clear();
            entries.1 = 0;
        }
        entries.1 += picture.png.len();
        if let Some(old) = entries.0.insert(key, picture.clone()) {
            entries.1 -= old.png.len();
        }
        Ok(picture)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Decodes an 8-bit grey, RGB or RGBA TIFF and encodes it as a PNG of the same layout,
/// its longest side scaled down (by averaging) to at most `side` pixels (0: as it is).
pub fn png_of(tiff: &Path, side: u32) -> anyhow::Result<Vec<u8>> {
    use tiff::decoder::{Decoder, DecodingResult};
    let file = std::fs::File::open(tiff).with_context(|| tiff.display().to_string())?;
    let mut decoder = Decoder::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a TIFF", tiff.display()))?;
    let (width, height) = decoder.dimensions()?;
    let (color, channels) = match decoder.colortype()? {
        tiff::ColorType::Gray(8) => (png::ColorType::Grayscale, 1),
        tiff::ColorType::RGB(8) => (png::ColorType::Rgb, 3),
        tiff::ColorType::RGBA(8) => (png::ColorType::Rgba, 4),
        other => bail!("{}: unsupported pixel format {other:?}", tiff.display()),
    };
    let DecodingResult::U8(pixels) = decoder.read_image()? else {
        bail!("{}: not 8 bits per sample", tiff.display());
    };
    if pixels.len() != width as usize * height as usize * channels {
        bail!("{}: pixels do not fill the image", tiff.display());
    }
    let (w, h, pixels) = shrink(&pixels, width, height, channels, side);
    let mut out = Vec::with_capacity(pixels.len() / 2 + 256);
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

/// The image scaled so that its longest side is at most `side` (0 or already small: as
/// it is), each output pixel the mean of the input pixels it covers.
fn shrink(pixels: &[u8], w: u32, h: u32, channels: usize, side: u32) -> (u32, u32, Vec<u8>) {
    let longest = w.max(h);
    if side == 0 || longest <= side {
        return (w, h, pixels.to_vec());
    }
    let scale = side as f64 / longest as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let mut out = Vec::with_capacity(nw as usize * nh as usize * channels);
    for y in 0..nh {
        let (y0, y1) = (y * h / nh, ((y + 1) * h / nh).max(y * h / nh + 1));
        for x in 0..nw {
            let (x0, x1) = (x * w / nw, ((x + 1) * w / nw).max(x * w / nw + 1));
            for c in 0..channels {
                let mut sum = 0u64;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        sum +=
                            pixels[(yy as usize * w as usize + xx as usize) * channels + c] as u64;
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as u64;
                out.push(((sum + n / 2) / n) as u8);
            }
        }
    }
    (nw, nh, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_keeps_the_aspect_and_averages() {
        let pixels: Vec<u8> = (0..400u32 * 200).map(|i| (i % 2 * 200) as u8).collect();
        let (w, h, out) = shrink(&pixels, 400, 200, 1, 100);
        assert_eq!((w, h), (100, 50));
        assert_eq!(out.len(), 100 * 50);
        assert!(out.iter().all(|&v| v == 100), "{:?}", &out[..4]);
        let (w, h, same) = shrink(&pixels[..60], 10, 6, 1, 128);
        assert_eq!((w, h, same.len()), (10, 6, 60));
    }
}

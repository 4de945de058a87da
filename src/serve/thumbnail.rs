//! PNGs of vignettes for the browser, made from the TIFFs on request and kept in a bounded
//! cache in memory; each carries an `ETag` from the TIFF's (or its page's) size and time,
//! so a browser that has it is answered 304.

use super::source::Tiff;
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The longest side of a gallery thumbnail, in pixels.
pub const THUMBNAIL: u32 = 128;

/// What the cache may hold before it starts again (the server stays small).
pub const CACHE_BYTES: usize = 32 << 20;

/// A PNG larger than this is made for each request and never kept.
pub const CACHE_ONE: usize = CACHE_BYTES / 8;

/// The most pixels a vignette may have to be shown (a FlowCam vignette has thousands; a
/// file that claims more is not decoded, so one request cannot take the server's memory).
pub const MAX_PIXELS: u64 = 2048 * 2048;

/// Pictures made at the same time: each holds a decoded vignette in memory.
pub const MAKING_AT_ONCE: usize = 2;

/// A PNG and its entity tag.
#[derive(Debug, Clone)]
pub struct Picture {
    pub etag: String,
    pub png: axum::body::Bytes,
}

/// The pictures by (TIFF, longest side), and their bytes in all.
type Entries = (HashMap<(PathBuf, u32), Picture>, usize);

/// PNGs by (TIFF, longest side), forgotten all at once when they pass [`CACHE_BYTES`].
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<Entries>,
    /// Pictures being made now, at most [`MAKING_AT_ONCE`].
    making: Mutex<usize>,
    made: std::sync::Condvar,
}

impl Cache {
    /// The PNG of `tiff` scaled to at most `side` pixels (0: full size): from the cache
    /// when the TIFF has not changed since, else made now (two at a time at most) from the
    /// bytes `read` gives.
    pub fn get(
        &self,
        tiff: &Tiff,
        side: u32,
        read: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Picture> {
        let etag = tiff.etag(side)?;
        let key = (tiff.key(), side);
        let cached = |cache: &Cache| {
            cache
                .lock()
                .0
                .get(&key)
                .filter(|hit| hit.etag == etag)
                .cloned()
        };
        if let Some(hit) = cached(self) {
            return Ok(hit);
        }
        let _slot = self.slot();
        // Another request may have made it while this one waited.
        if let Some(hit) = cached(self) {
            return Ok(hit);
        }
        let label = tiff.key();
        let png = axum::body::Bytes::from(png_of(&read()?, &label, side)?);
        let picture = Picture { etag, png };
        if picture.png.len() <= CACHE_ONE {
            let mut entries = self.lock();
            if entries.1 + picture.png.len() > CACHE_BYTES {
                entries.0.clear();
                entries.1 = 0;
            }
            entries.1 += picture.png.len();
            if let Some(old) = entries.0.insert(key, picture.clone()) {
                entries.1 -= old.png.len();
            }
        }
        Ok(picture)
    }

    /// Waits for one of the [`MAKING_AT_ONCE`] slots; it is given back when dropped.
    fn slot(&self) -> Slot<'_> {
        let mut making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        while *making >= MAKING_AT_ONCE {
            making = self.made.wait(making).unwrap_or_else(|e| e.into_inner());
        }
        *making += 1;
        Slot(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A picture-making slot, given back when dropped.
struct Slot<'a>(&'a Cache);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut making = self.0.making.lock().unwrap_or_else(|e| e.into_inner());
        *making -= 1;
        self.0.made.notify_one();
    }
}

/// Decodes an 8-bit grey, RGB or RGBA TIFF and encodes it as a PNG of the same layout,
/// its longest side scaled down (by averaging) to at most `side` pixels (0: as it is).
/// `tiff` names the vignette in errors.
pub fn png_of(bytes: &[u8], tiff: &Path, side: u32) -> anyhow::Result<Vec<u8>> {
    use crate::flowcam::vignette::{png_color, read_pixels};
    let mut decoder = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes))
        .with_context(|| format!("{}: not a TIFF", tiff.display()))?;
    let (width, height) = decoder.dimensions()?;
    if width as u64 * height as u64 > MAX_PIXELS {
        bail!(
            "{}: {width}x{height} pixels is more than a vignette has",
            tiff.display()
        );
    }
    let image = read_pixels(&mut decoder).with_context(|| tiff.display().to_string())?;
    let (color, channels, pixels) = (
        png_color(image.format),
        image.format.channels(),
        image.pixels,
    );
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
    // In u64: (y + 1) * h overflows u32 for tall images.
    let (w64, h64, nw64, nh64) = (w as u64, h as u64, nw as u64, nh as u64);
    for y in 0..nh64 {
        let y0 = (y * h64 / nh64) as u32;
        let y1 = (((y + 1) * h64 / nh64) as u32).max(y0 + 1);
        for x in 0..nw64 {
            let x0 = (x * w64 / nw64) as u32;
            let x1 = (((x + 1) * w64 / nw64) as u32).max(x0 + 1);
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

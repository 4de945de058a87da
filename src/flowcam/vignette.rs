//! Encoding one vignette: a TIFF in the collage's pixel format whose EXIF and GPS
//! directories are written in the same pass as the image, so no second tool (the Python
//! pipeline started one exiftool per file) ever touches it.
//!
//! Conventions (see DESIGN.md): GPS latitude/longitude as unsigned degree/minute/second
//! rationals with N/S and E/W references; depth as GPSAltitude with GPSAltitudeRef = 1
//! (below sea level); the sample date as GPSDateStamp; the particle's capture time as
//! DateTimeOriginal + SubSecTimeOriginal; its measurements as JSON in ImageDescription;
//! the instrument as Make/Model (and BodySerialNumber); the pixel size as X/YResolution in
//! pixels per centimetre (ResolutionUnit 3), `10^8 / (um_per_pixel * 10^4)`, exact to a
//! ten-thousandth of a micrometre.

use crate::flowcam::{PixelFormat, SamplePosition};
use std::io::Cursor;
use tiff::encoder::colortype::{ColorType, Gray8, RGB8, RGBA8};
use tiff::encoder::{DirectoryEncoder, Rational, TiffEncoder, TiffKindStandard};
use tiff::tags::{Tag, Type};

// EXIF and GPS tags the `tiff` crate has no names for.
const DATE_TIME_ORIGINAL: u16 = 0x9003;
const SUB_SEC_TIME_ORIGINAL: u16 = 0x9291;
const COLOR_SPACE: u16 = 0xA001;
const FLASHPIX_VERSION: u16 = 0xA000;
/// EXIF BodySerialNumber (the `tiff` crate has no name for it).
pub const BODY_SERIAL_NUMBER: u16 = 0xA431;
const GPS_VERSION_ID: u16 = 0x0000;
const GPS_LATITUDE_REF: u16 = 0x0001;
const GPS_LATITUDE: u16 = 0x0002;
const GPS_LONGITUDE_REF: u16 = 0x0003;
const GPS_LONGITUDE: u16 = 0x0004;
const GPS_ALTITUDE_REF: u16 = 0x0005;
const GPS_ALTITUDE: u16 = 0x0006;
const GPS_PROCESSING_METHOD: u16 = 0x001B;
const GPS_DATE_STAMP: u16 = 0x001D;

/// Everything that goes into a vignette's tags besides its pixels.
#[derive(Debug, Clone, Default)]
pub struct VignetteTags<'a> {
    /// ImageDescription, e.g. the particle's measurements as JSON. Must be ASCII.
    pub description: Option<&'a str>,
    /// `YYYY:MM:DD HH:MM:SS`, for DateTimeOriginal (and DateTime).
    pub taken: Option<&'a str>,
    /// Digits of the fraction of a second, for SubSecTimeOriginal.
    pub taken_subsec: Option<&'a str>,
    pub position: Option<&'a SamplePosition>,
    /// Software tag.
    pub software: &'a str,
    /// Make and Model: the instrument's maker and model.
    pub make: Option<&'a str>,
    pub model: Option<&'a str>,
    /// BodySerialNumber.
    pub serial_number: Option<&'a str>,
    /// Micrometres per pixel, for XResolution/YResolution.
    pub um_per_pixel: Option<f64>,
}

/// Pixels per centimetre as a rational, for X/YResolution with ResolutionUnit 3: `None`
/// for a size that is not a positive number or that the rational cannot hold.
pub fn pixels_per_centimetre(um_per_pixel: f64) -> Option<(u32, u32)> {
    // 1 cm = 10^4 um; the denominator carries four decimals of the pixel size.
    let d = (um_per_pixel * 10_000.0).round();
    (um_per_pixel.is_finite() && d >= 1.0 && d <= u32::MAX as f64)
        .then_some((100_000_000, d as u32))
}

/// Encodes an uncompressed TIFF with EXIF and, when a position is known, GPS directories.
pub fn encode(
    pixels: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
    tags: &VignetteTags,
) -> Result<Vec<u8>, tiff::TiffError> {
    let mut buffer = Cursor::new(Vec::with_capacity(pixels.len() + 2048));
    {
        let mut tiff = TiffEncoder::new(&mut buffer)?;
        let mut exif = tiff.extra_directory()?;
        write_exif(&mut exif, tags)?;
        let exif = exif.finish_with_offsets()?;
        let gps = match tags.position {
            Some(position) => {
                let mut gps = tiff.extra_directory()?;
                write_gps(&mut gps, position)?;
                Some(gps.finish_with_offsets()?)
            }
            None => None,
        };
        match format {
            PixelFormat::Gray8 => {
                write_image::<Gray8>(&mut tiff, pixels, width, height, tags, exif.offset, gps)
            }
            PixelFormat::Rgb8 => {
                write_image::<RGB8>(&mut tiff, pixels, width, height, tags, exif.offset, gps)
            }
            PixelFormat::Rgba8 => {
                write_image::<RGBA8>(&mut tiff, pixels, width, height, tags, exif.offset, gps)
            }
        }?;
    }
    Ok(buffer.into_inner())
}

type Encoder<'a> = TiffEncoder<&'a mut Cursor<Vec<u8>>>;
type Directory<'a, 'b> = DirectoryEncoder<'a, &'b mut Cursor<Vec<u8>>, TiffKindStandard>;

fn write_image<C: ColorType<Inner = u8>>(
    tiff: &mut Encoder,
    pixels: &[u8],
    width: u32,
    height: u32,
    tags: &VignetteTags,
    exif_offset: u32,
    gps: Option<tiff::encoder::DirectoryOffset<TiffKindStandard>>,
) -> Result<(), tiff::TiffError> {
    let mut image = tiff.new_image::<C>(width, height)?;
    match tags.um_per_pixel.and_then(pixels_per_centimetre) {
        Some((n, d)) => image.resolution(tiff::tags::ResolutionUnit::Centimeter, Rational { n, d }),
        None => image.resolution(tiff::tags::ResolutionUnit::None, Rational { n: 1, d: 1 }),
    }
    let dir = image.encoder();
    if let Some(description) = tags.description {
        write_ascii(dir, Tag::ImageDescription, description)?;
    }
    if let Some(make) = tags.make.filter(|t| is_tag_text(t)) {
        write_ascii(dir, Tag::Make, make)?;
    }
    if let Some(model) = tags.model.filter(|t| is_tag_text(t)) {
        write_ascii(dir, Tag::Model, model)?;
    }
    write_ascii(dir, Tag::Software, tags.software)?;
    if let Some(taken) = tags.taken {
        write_ascii(dir, Tag::DateTime, taken)?;
    }
    dir.write_tag(Tag::ExifDirectory, exif_offset)?;
    if let Some(gps) = gps {
        dir.write_tag(Tag::GpsDirectory, gps.offset)?;
    }
    let mut at = 0;
    while image.next_strip_sample_count() > 0 {
        let n = image.next_strip_sample_count() as usize;
        image.write_strip(&pixels[at..at + n])?;
        at += n;
    }
    // The values written after the strips (BitsPerSample, ...) must start word-aligned too.
    align(image.encoder())?;
    image.finish()
}

fn write_exif(dir: &mut Directory, tags: &VignetteTags) -> Result<(), tiff::TiffError> {
    write_undefined(dir, Tag::ExifVersion, b"0232")?;
    if let Some(taken) = tags.taken {
        write_ascii(dir, Tag::Unknown(DATE_TIME_ORIGINAL), taken)?;
        if let Some(subsec) = tags.taken_subsec {
            write_ascii(dir, Tag::Unknown(SUB_SEC_TIME_ORIGINAL), subsec)?;
        }
    }
    write_undefined(dir, Tag::Unknown(FLASHPIX_VERSION), b"0100")?;
    dir.write_tag(Tag::Unknown(COLOR_SPACE), 1u16)?; // sRGB
    if let Some(serial) = tags.serial_number.filter(|t| is_tag_text(t)) {
        write_ascii(dir, Tag::Unknown(BODY_SERIAL_NUMBER), serial)?;
    }
    Ok(())
}

fn write_gps(dir: &mut Directory, position: &SamplePosition) -> Result<(), tiff::TiffError> {
    dir.write_tag(Tag::Unknown(GPS_VERSION_ID), &[2u8, 3, 0, 0][..])?;
    let lat_ref = if position.latitude < 0.0 { "S" } else { "N" };
    let lon_ref = if position.longitude < 0.0 { "W" } else { "E" };
    write_ascii(dir, Tag::Unknown(GPS_LATITUDE_REF), lat_ref)?;
    align(dir)?;
    dir.write_tag(Tag::Unknown(GPS_LATITUDE), &degrees(position.latitude)[..])?;
    write_ascii(dir, Tag::Unknown(GPS_LONGITUDE_REF), lon_ref)?;
    align(dir)?;
    dir.write_tag(
        Tag::Unknown(GPS_LONGITUDE),
        &degrees(position.longitude)[..],
    )?;
    if let Some(depth) = position.depth_m {
        dir.write_tag(Tag::Unknown(GPS_ALTITUDE_REF), 1u8)?; // below sea level
        let millimetres = (depth * 1000.0).round() as u32;
        align(dir)?;
        dir.write_tag(
            Tag::Unknown(GPS_ALTITUDE),
            Rational {
                n: millimetres,
                d: 1000,
            },
        )?;
    }
    // The position was typed into the folder name, not measured by a receiver.
    write_undefined(
        dir,
        Tag::Unknown(GPS_PROCESSING_METHOD),
        b"ASCII\0\0\0MANUAL",
    )?;
    let date = position.date.format("%Y:%m:%d").to_string();
    write_ascii(dir, Tag::Unknown(GPS_DATE_STAMP), &date)
}

/// The Software tag of every vignette, TIFF or PNG.
pub const SOFTWARE: &str = concat!("flowcam-pipeline ", env!("CARGO_PKG_VERSION"));

/// |value| as (numerator, denominator) pairs degrees/1, minutes/1, seconds/10000: exact to
/// well below the 4 decimals of a degree (about 1 cm) that folder names carry. Shared by
/// the TIFF and PNG writers so their GPS tags agree.
pub fn degrees_minutes_seconds(value: f64) -> [(u32, u32); 3] {
    let total = (value.abs() * 3600.0 * 10_000.0).round() as u64; // 1/10000 arc-seconds
    let per_degree = 3600 * 10_000;
    let per_minute = 60 * 10_000;
    [
        ((total / per_degree) as u32, 1),
        (((total % per_degree) / per_minute) as u32, 1),
        ((total % per_minute) as u32, 10_000),
    ]
}

fn degrees(value: f64) -> [Rational; 3] {
    degrees_minutes_seconds(value).map(|(n, d)| Rational { n, d })
}

/// Pads the file to an even offset. The encoder writes values back to back, but TIFF wants
/// each value to start on a word boundary, and the EXIF counts of ASCII tags are exact (so
/// padding the strings themselves is not an option).
fn align(dir: &mut Directory) -> Result<(), tiff::TiffError> {
    let at = dir.write_data(&[] as &[u8])?;
    if at % 2 == 1 {
        dir.write_data(0u8)?;
    }
    Ok(())
}

/// Whether a side file's text can be a tag of its own: ASCII without NUL (anything else is
/// left out rather than failing the vignette).
pub fn is_tag_text(text: &str) -> bool {
    !text.is_empty() && text.is_ascii() && !text.contains('\0')
}

/// A NUL-terminated ASCII value, word-aligned.
fn write_ascii(dir: &mut Directory, tag: Tag, text: &str) -> Result<(), tiff::TiffError> {
    if !text.is_ascii() || text.contains('\0') {
        return Err(tiff::TiffError::FormatError(
            tiff::TiffFormatError::InvalidTag,
        ));
    }
    let mut bytes = Vec::with_capacity(text.len() + 2);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(0);
    align(dir)?;
    let entry = dir.write_entry_bytes(Type::ASCII, &bytes)?;
    dir.extend_from(&tiff::Directory::from_iter([(tag, entry)]));
    Ok(())
}

fn write_undefined(dir: &mut Directory, tag: Tag, bytes: &[u8]) -> Result<(), tiff::TiffError> {
    align(dir)?;
    let entry = dir.write_entry_bytes(Type::UNDEFINED, bytes)?;
    dir.extend_from(&tiff::Directory::from_iter([(tag, entry)]));
    Ok(())
}

/// A vignette as read back: its size, pixel format and pixels (row-major, interleaved).
#[derive(Debug, Clone)]
pub struct DecodedVignette {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub pixels: Vec<u8>,
}

/// Reads the pixels of an 8-bit grey, RGB or RGBA TIFF (the formats [`encode`] writes),
/// checking that they fill the image.
pub fn read_pixels<R: std::io::Read + std::io::Seek>(
    decoder: &mut tiff::decoder::Decoder<R>,
) -> anyhow::Result<DecodedVignette> {
    let (width, height) = decoder.dimensions()?;
    let format = match decoder.colortype()? {
        tiff::ColorType::Gray(8) => PixelFormat::Gray8,
        tiff::ColorType::RGB(8) => PixelFormat::Rgb8,
        tiff::ColorType::RGBA(8) => PixelFormat::Rgba8,
        other => anyhow::bail!("unsupported pixel format {other:?}"),
    };
    let tiff::decoder::DecodingResult::U8(pixels) = decoder.read_image()? else {
        anyhow::bail!("not 8 bits per sample");
    };
    if pixels.len() != width as usize * height as usize * format.channels() {
        anyhow::bail!(
            "{width}x{height} image with {} bytes of pixels",
            pixels.len()
        );
    }
    Ok(DecodedVignette {
        width,
        height,
        format,
        pixels,
    })
}

/// The PNG colour type that holds a pixel format's samples as they are.
pub fn png_color(format: PixelFormat) -> png::ColorType {
    match format {
        PixelFormat::Gray8 => png::ColorType::Grayscale,
        PixelFormat::Rgb8 => png::ColorType::Rgb,
        PixelFormat::Rgba8 => png::ColorType::Rgba,
    }
}

/// A TIFF's ResolutionUnit and XResolution as (unit, numerator, denominator), when it has
/// both (a vignette's X and Y are equal).
pub fn read_resolution<R: std::io::Read + std::io::Seek>(
    decoder: &mut tiff::decoder::Decoder<R>,
) -> tiff::TiffResult<Option<(u16, u32, u32)>> {
    use tiff::decoder::ifd::Value;
    let unit = match decoder.find_tag(Tag::ResolutionUnit)? {
        Some(Value::Short(unit)) => unit,
        Some(Value::Unsigned(unit)) => unit as u16,
        _ => return Ok(None),
    };
    Ok(match decoder.find_tag(Tag::XResolution)? {
        Some(Value::Rational(n, d)) if d > 0 && n > 0 => Some((unit, n, d)),
        _ => None,
    })
}

/// Pixels per centimetre from a resolution [`read_resolution`] read, when it is a pixel
/// size (unit 3, centimetres, as [`encode`] writes it).
pub fn pixels_per_centimetre_of(resolution: Option<(u16, u32, u32)>) -> Option<f64> {
    match resolution {
        Some((3, n, d)) => Some(n as f64 / d as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrees_split_into_dms() {
        let [d, m, s] = degrees(-2.7770);
        assert_eq!((d.n, m.n), (2, 46));
        let back = d.n as f64 + m.n as f64 / 60.0 + s.n as f64 / s.d as f64 / 3600.0;
        assert!((back - 2.777).abs() < 1e-7);
    }
}

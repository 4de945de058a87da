//! Blank crops and class lists made to order on a copy of the bundled real page.

use super::FIXTURE;
use flowcam_pipeline::flowcam::ParticleList;
use std::path::Path;

/// The bundled session's one collage page.
pub const PAGE: &str = "19_10_Tank25_blanksremoved_images_000009.tif";

/// The page's particles: (id, x, y, w, h), in list order.
pub fn particles(folder: &Path) -> Vec<(u64, u32, u32, u32, u32)> {
    let list = ParticleList::read(&folder.join(format!("{FIXTURE}.lst"))).unwrap();
    let col = |name: &str| list.field_index(name).unwrap();
    let (id, x, y, w, h) = (
        col("id"),
        col("image_x"),
        col("image_y"),
        col("image_w"),
        col("image_h"),
    );
    list.rows
        .iter()
        .map(|r| {
            let n = |c: usize| r[c].parse::<u32>().unwrap();
            (r[id].parse().unwrap(), n(x), n(y), n(w), n(h))
        })
        .collect()
}

/// Paints each rectangle of the RGB page with a flat grey and a little sensor noise
/// (+-2 levels): an empty frame.
pub fn paint_uniform(page: &Path, rects: &[(u64, u32, u32, u32, u32)]) {
    use tiff::decoder::{Decoder, DecodingResult};
    let mut decoder = Decoder::new(std::fs::File::open(page).unwrap()).unwrap();
    let (width, height) = decoder.dimensions().unwrap();
    assert_eq!(decoder.colortype().unwrap(), tiff::ColorType::RGB(8));
    let DecodingResult::U8(mut pixels) = decoder.read_image().unwrap() else {
        panic!("not 8-bit");
    };
    let mut state = 11u64;
    for &(_, x, y, w, h) in rects {
        for row in y..y + h {
            for col in x..x + w {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                let v = (200 + ((state >> 33) % 5) as i32 - 2) as u8;
                let at = (row as usize * width as usize + col as usize) * 3;
                pixels[at..at + 3].fill(v);
            }
        }
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(page).unwrap());
    tiff::encoder::TiffEncoder::new(&mut out)
        .unwrap()
        .write_image::<tiff::encoder::colortype::RGB8>(width, height, &pixels)
        .unwrap();
}

/// A `.cla` in VisualSpreadsheet's layout (one value per line, CRLF) with the given lists of
/// one class each.
pub fn class_file(lists: &[(&str, &str, &[u64])]) -> String {
    let mut lines = vec!["v3".to_string(), lists.len().to_string()];
    for (list, class, ids) in lists {
        lines.extend([list.to_string(), "1".into(), class.to_string(), "OR".into()]);
        lines.extend(["0".to_string(), ids.len().to_string()]);
        lines.extend(ids.iter().map(u64::to_string));
    }
    lines.join("\r\n") + "\r\n"
}

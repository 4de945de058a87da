//! Decoded collage pages kept for the next task of the same run that reads them.
//!
//! ExtractMetadata decodes every page for the blank test, then DecollageImages decodes
//! every page again to cut it: on the real session, decoding (LZW and the TIFF predictor)
//! is about 40% of the whole run's CPU, half of it the second decode. A page the first
//! task hands over ([`keep`]) is taken by the second ([`take`]) instead of decoded again.
//!
//! What is kept is bounded: at most [`SHARE`] of the page budget (64 MiB of the default
//! 512 MiB: 5 of the real session's 12.3 MB pages), pages that do not fit are not kept,
//! and a page kept longer than [`MAX_AGE`] is dropped at the next keep or take. A kept page
//! holds no share of the budget (so it never blocks a decode); whoever takes it reserves
//! its bytes again. A page is taken only for the same path and the same file: size,
//! modification and change times, inode and device as before and after it was decoded.
//! The task that would take them, and the run of the session, discard what is left of the
//! session's when they end ([`discard`]).

use crate::flowcam::Collage;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The share of the page budget that kept pages may take (one eighth).
pub const SHARE: usize = 8;

/// A page kept longer than this is dropped: its reader did not come.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// What a page's file was when it was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    /// The change time, which no one can set back (a file rewritten with its size and
    /// modification time put back still changes it).
    pub ctime_ns: i128,
    pub inode: u64,
    pub device: u64,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            inode: meta.ino(),
            device: meta.dev(),
        }
    }
}

struct Kept {
    path: PathBuf,
    stamp: FileStamp,
    page: Collage,
    since: Instant,
}

static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

fn kept() -> std::sync::MutexGuard<'static, Vec<Kept>> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

fn drop_old(pages: &mut Vec<Kept>) {
    pages.retain(|k| k.since.elapsed() < MAX_AGE);
}

/// Keeps `page`, decoded from `path` as it was at `stamp`, for [`take`], if it fits in
/// the share of `limit` (the page budget's limit, in bytes) that kept pages may use.
pub fn keep(path: &Path, stamp: FileStamp, page: Collage, limit: usize) {
    let mut pages = kept();
    drop_old(&mut pages);
    pages.retain(|k| k.path != path);
    let held: usize = pages.iter().map(|k| k.page.pixels.len()).sum();
    if held.saturating_add(page.pixels.len()) > limit / SHARE {
        return;
    }
    pages.push(Kept {
        path: path.to_path_buf(),
        stamp,
        page: page.without_reservation(),
        since: Instant::now(),
    });
}

/// The page kept for `path`, if its file is still as it was (`stamp`); a page kept for
/// another version of the file is dropped.
pub fn take(path: &Path, stamp: FileStamp) -> Option<Collage> {
    let mut pages = kept();
    drop_old(&mut pages);
    let at = pages.iter().position(|k| k.path == path)?;
    let found = pages.swap_remove(at);
    (found.stamp == stamp).then_some(found.page)
}

/// Drops every page kept from files under `folder`.
pub fn discard(folder: &Path) {
    kept().retain(|k| !k.path.starts_with(folder));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `width` x 4 grey page whose pixels are `value`, written to `path`.
    fn page(path: &Path, width: u32, value: u8) {
        let mut file = std::fs::File::create(path).unwrap();
        tiff::encoder::TiffEncoder::new(&mut file)
            .unwrap()
            .write_image::<tiff::encoder::colortype::Gray8>(
                width,
                4,
                &vec![value; width as usize * 4],
            )
            .unwrap();
    }

    #[test]
    fn a_page_is_taken_once_and_only_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().canonicalize().unwrap();
        let path = folder.join("page.tif");
        page(&path, 8, 7);
        let stamp = FileStamp::of(&std::fs::metadata(&path).unwrap());
        let opened = Collage::open(&path, &folder).unwrap();
        assert_eq!(opened.pixels, vec![7; 32]);
        opened.hand_over();
        let taken = take(&path, stamp).expect("kept");
        assert_eq!(taken.pixels, vec![7; 32]);
        assert!(take(&path, stamp).is_none(), "taken once");

        // A kept page whose file changed since is not taken: the file is decoded.
        Collage::open(&path, &folder).unwrap().hand_over();
        std::thread::sleep(Duration::from_millis(10));
        page(&path, 8, 9);
        assert_eq!(Collage::open(&path, &folder).unwrap().pixels, vec![9; 32]);

        // Discarded with its folder.
        Collage::open(&path, &folder).unwrap().hand_over();
        discard(&folder);
        let stamp = FileStamp::of(&std::fs::metadata(&path).unwrap());
        assert!(take(&path, stamp).is_none());
    }

    #[test]
    fn pages_over_the_share_of_the_budget_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().canonicalize().unwrap();
        let path = folder.join("wide.tif");
        page(&path, 1000, 1);
        let opened = Collage::open(&path, &folder).unwrap();
        let stamp = FileStamp::of(&std::fs::metadata(&path).unwrap());
        // 4,000 bytes against a share of 31,999 / 8, then of 40,000 / 8 (room for the
        // other test's small page, kept at the same time).
        keep(&path, stamp, opened, 31_999);
        assert!(take(&path, stamp).is_none());
        let opened = Collage::open(&path, &folder).unwrap();
        keep(&path, stamp, opened, 40_000);
        assert!(take(&path, stamp).is_some());
    }
}

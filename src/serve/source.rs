//! Where the dashboard reads a vignette's TIFF: its file in `vignettes/`, or, for a session
//! run with `--no-local-vignettes` (which has no such file), its collage page, cut again
//! as DecollageImages cut it. A cut page is kept whole for the next requests (a gallery
//! asks for a page's vignettes together), a few pages at most.

use crate::engine::Digest;
use crate::tasks::{DecollageImages, DecollageOptions, ReadMetadata, Session};
use anyhow::{Context, bail};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Cut pages kept in memory (a page's vignettes are a few MB).
pub const PAGES_KEPT: usize = 4;

/// A vignette the manifest lists, and where its TIFF is.
#[derive(Debug, Clone)]
pub enum Tiff {
    File(PathBuf),
    /// Not on disk: cut from `collage` of the session `folder` on request.
    Page {
        folder: PathBuf,
        collage: String,
        file: String,
        /// Its size as the manifest recorded it (a cut of another size is not it).
        bytes: u64,
    },
}

impl Tiff {
    /// What names this vignette in caches: its file, or where it would be.
    pub fn key(&self) -> PathBuf {
        match self {
            Tiff::File(path) => path.clone(),
            Tiff::Page {
                folder,
                collage,
                file,
                ..
            } => folder.join(collage).join(file),
        }
    }

    /// The entity tag of the vignette as it is now, scaled to `side`, known without
    /// decoding anything: the file's size and time, or the page's and the manifest's size.
    pub fn etag(&self, side: u32) -> anyhow::Result<String> {
        let (path, extra) = match self {
            Tiff::File(path) => (path.clone(), String::new()),
            Tiff::Page {
                folder,
                collage,
                file,
                bytes,
            } => (folder.join(collage), format!("{file} {bytes}")),
        };
        let meta = std::fs::metadata(&path).with_context(|| path.display().to_string())?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(format!(
            "\"{}\"",
            &Digest::new()
                .str(&path.display().to_string())
                .str(&format!("{} {modified} {side} {extra}", meta.len()))
                .hex()[..32]
        ))
    }
}

/// A page's vignettes by file name, with the page's size and time when it was cut.
type CutPage = (
    PathBuf,
    u64,
    Option<SystemTime>,
    Arc<HashMap<String, Vec<u8>>>,
);

/// The pages cut lately, newest last.
#[derive(Debug, Default)]
pub struct Cuts {
    pages: Mutex<VecDeque<CutPage>>,
}

impl Cuts {
    /// The TIFF bytes of `tiff`; a page is cut with `options`, the sessions' outputs being
    /// under `output_root`.
    pub fn read(
        &self,
        tiff: &Tiff,
        output_root: &Path,
        options: &DecollageOptions,
    ) -> anyhow::Result<Vec<u8>> {
        let (folder, collage, file, bytes) = match tiff {
            Tiff::File(path) => {
                return std::fs::read(path).with_context(|| path.display().to_string());
            }
            Tiff::Page {
                folder,
                collage,
                file,
                bytes,
            } => (folder, collage, file, *bytes),
        };
        let page = folder.join(collage);
        let meta = std::fs::metadata(&page).with_context(|| page.display().to_string())?;
        let stamp = (meta.len(), meta.modified().ok());
        let known = self
            .lock()
            .iter()
            .find(|(p, len, time, _)| *p == page && (*len, *time) == stamp)
            .map(|(_, _, _, cut)| cut.clone());
        let cut = match known {
            Some(cut) => cut,
            None => {
                let cut = Arc::new(cut_page(folder, collage, output_root, options)?);
                let mut pages = self.lock();
                pages.retain(|(p, ..)| *p != page);
                if pages.len() >= PAGES_KEPT {
                    pages.pop_front();
                }
                pages.push_back((page.clone(), stamp.0, stamp.1, cut.clone()));
                cut
            }
        };
        let tiff = cut
            .get(file)
            .with_context(|| format!("{} does not cut to {file}", page.display()))?;
        if tiff.len() as u64 != bytes {
            bail!(
                "{file} cut from {} has {} bytes, the manifest says {bytes}: the dashboard's \
                 options are not those of the run",
                page.display(),
                tiff.len()
            );
        }
        Ok(tiff.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<CutPage>> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every vignette of one page of the session `folder`, by file name.
fn cut_page(
    folder: &Path,
    collage: &str,
    output_root: &Path,
    options: &DecollageOptions,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let session = Arc::new(Session::new(folder, output_root, None)?);
    let metadata = Arc::new(ReadMetadata::new(session.clone()));
    let decollage = DecollageImages::new(session, metadata, *options);
    let cutter = decollage.cutter()?;
    let vignettes = cutter
        .cut_page(collage)?
        .with_context(|| format!("{}: no page {collage}", folder.display()))?;
    Ok(vignettes.into_iter().collect())
}

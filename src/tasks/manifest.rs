//! `manifest.csv`: one row per particle of the session, written by DecollageImages and read
//! by everything after it (the upload, the EcoTaxa export, the operation bridge, `status`).
//! One typed reader, so that all of them agree on what a row says and refuse the same
//! damage with the same message.

use crate::flowcam::lst::check_plain_file_name;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The manifest's columns, in order.
pub const MANIFEST_HEADER: [&str; 9] = [
    "file",
    "particle_id",
    "collage",
    "width",
    "height",
    "bytes",
    "captured_at",
    "class",
    "blank",
];

/// One particle's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// The vignette's file name (and object name), in its page's folder
    /// `vignettes/<collage>/`; empty when none was written (a blank left out with
    /// `--blanks skip`).
    pub file: String,
    pub particle_id: String,
    /// The collage page the particle was cut from.
    pub collage: String,
    pub width: u32,
    pub height: u32,
    /// The vignette's size in bytes (0 when none was written).
    pub bytes: u64,
    /// The particle's `.lst` timestamp as ISO 8601, or empty.
    #[serde(default)]
    pub captured_at: String,
    /// The particle's class from a `.cla` list that fits the session, or empty.
    #[serde(default)]
    pub class: String,
    /// Whether the particle is blank (uniform pixels, or in a fitting blank list).
    #[serde(default)]
    pub blank: bool,
}

impl ManifestRow {
    /// Whether a vignette file was written for this particle.
    pub fn has_vignette(&self) -> bool {
        !self.file.is_empty()
    }

    /// Where its vignette is under the session's `vignettes` folder.
    pub fn path_in(&self, vignettes: &Path) -> PathBuf {
        vignette_path(vignettes, &self.collage, &self.file)
    }
}

/// The folder of one collage page's vignettes: `vignettes/<collage>/`, named after the
/// page's file so that it joins back to the manifest's `collage` column. A folder per page
/// lets the pages be cut in parallel without queueing on one folder (each page's folder is
/// written whole: see [`crate::engine::Staging::owning`]).
pub fn page_folder(vignettes: &Path, collage: &str) -> PathBuf {
    vignettes.join(collage)
}

/// The page folders in `vignettes`, sorted: real folders, not the hidden ones of pages
/// being written.
pub fn page_folders(vignettes: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(vignettes)?
        .flatten()
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && !crate::engine::atomic::is_temp_name(&e.file_name().to_string_lossy())
        })
        .map(|e| e.path())
        .collect();
    pages.sort();
    Ok(pages)
}

/// Where the vignette `file` of page `collage` is: `vignettes/<collage>/<file>`.
pub fn vignette_path(vignettes: &Path, collage: &str, file: &str) -> PathBuf {
    page_folder(vignettes, collage).join(file)
}

/// A collage name that can name a page's folder: a plain file name that is not one of the
/// hidden names of temporaries.
pub fn check_page_name(collage: &str) -> Result<(), String> {
    check_plain_file_name(collage)?;
    if crate::engine::atomic::is_temp_name(collage) {
        return Err(format!(
            "{collage:?} is named like a temporary (.NAME.partial)"
        ));
    }
    // Its folder's hidden sibling, `.NAME.partial`, must fit a file name (255 bytes).
    if collage.len() > MAX_PAGE_NAME {
        return Err(format!(
            "the collage name {collage:?} is {} bytes long: at most {MAX_PAGE_NAME} can name \
             its vignettes' folder",
            collage.len()
        ));
    }
    Ok(())
}

/// The longest collage name that can name a page's folder (and its hidden sibling).
pub const MAX_PAGE_NAME: usize = 240;

/// A manifest as read: its rows in file order, each with its line number.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub path: PathBuf,
    pub rows: Vec<ManifestRow>,
    /// The line of each row, for messages.
    pub lines: Vec<u64>,
}

impl Manifest {
    /// Reads and checks a manifest: every row typed, file names and particle ids plain
    /// (never a path out of `vignettes/`), each particle once. Errors name file and line.
    pub fn read(path: &Path) -> anyhow::Result<Manifest> {
        let context = || path.display().to_string();
        let mut reader = csv::Reader::from_path(path).with_context(context)?;
        let header = reader.headers().with_context(context)?.clone();
        for required in ["file", "particle_id", "collage"] {
            if !header.iter().any(|h| h == required) {
                bail!(
                    "{}: no {required} column (not a manifest of this tool, or from an old \
                     version: rerun with --force)",
                    path.display()
                );
            }
        }
        let mut manifest = Manifest {
            path: path.to_path_buf(),
            ..Manifest::default()
        };
        let mut seen = HashSet::new();
        for record in reader.records() {
            let record = record.with_context(context)?;
            let line = record.position().map_or(0, |p| p.line());
            let row: ManifestRow = record
                .deserialize(Some(&header))
                .map_err(|e| anyhow::anyhow!("{}:{line}: {e}", path.display()))?;
            check_plain_file_name(&row.particle_id)
                .and_then(|()| {
                    if row.has_vignette() {
                        check_plain_file_name(&row.file)
                            .and_then(|()| check_page_name(&row.collage))
                    } else {
                        Ok(())
                    }
                })
                .map_err(|e| anyhow::anyhow!("{}:{line}: {e}", path.display()))?;
            if !seen.insert(row.particle_id.clone()) {
                bail!(
                    "{}:{line}: particle {} is listed twice",
                    path.display(),
                    row.particle_id
                );
            }
            manifest.rows.push(row);
            manifest.lines.push(line);
        }
        Ok(manifest)
    }

    /// The rows that have a vignette file.
    pub fn vignettes(&self) -> impl Iterator<Item = &ManifestRow> {
        self.rows.iter().filter(|r| r.has_vignette())
    }

    /// The manifest's bytes for `rows`.
    /// A writer of manifest rows to `out`, the header written: rows go out one at a time,
    /// so a session of a million particles never holds its manifest in memory.
    pub fn writer<W: std::io::Write>(out: W) -> csv::Result<csv::Writer<W>> {
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        writer.write_record(MANIFEST_HEADER)?;
        Ok(writer)
    }

    pub fn encode(rows: &[ManifestRow]) -> anyhow::Result<Vec<u8>> {
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::with_capacity(rows.len() * 96 + 80));
        writer.write_record(MANIFEST_HEADER)?;
        for row in rows {
            writer.serialize(row)?;
        }
        Ok(writer.into_inner()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> ManifestRow {
        ManifestRow {
            file: format!("S_{id}.tif"),
            particle_id: id.into(),
            collage: "S_images_000001.tif".into(),
            width: 3,
            height: 4,
            bytes: 120,
            captured_at: String::new(),
            class: "Daphnia, big".into(),
            blank: false,
        }
    }

    #[test]
    fn a_page_folder_name_is_plain_not_hidden_and_fits() {
        assert!(check_page_name("S_images_000001.tif").is_ok());
        assert!(check_page_name(".S.tif.partial").is_err());
        assert!(check_page_name("../S.tif").is_err());
        assert!(check_page_name(&"a".repeat(MAX_PAGE_NAME)).is_ok());
        let long = check_page_name(&"a".repeat(MAX_PAGE_NAME + 1)).unwrap_err();
        assert!(long.contains("241 bytes long"), "{long}");
        assert_eq!(
            row("5").path_in(Path::new("v")),
            Path::new("v/S_images_000001.tif/S_5.tif")
        );
    }

    #[test]
    fn rows_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.csv");
        let mut skipped = row("2");
        skipped.file.clear();
        skipped.bytes = 0;
        skipped.blank = true;
        let rows = vec![row("1"), skipped];
        std::fs::write(&path, Manifest::encode(&rows).unwrap()).unwrap();
        let manifest = Manifest::read(&path).unwrap();
        assert_eq!(manifest.rows, rows);
        assert_eq!(manifest.lines, vec![2, 3]);
        assert_eq!(manifest.vignettes().count(), 1);
    }

    #[test]
    fn damage_is_named_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.csv");
        let header = MANIFEST_HEADER.join(",");
        for (body, expected) in [
            (
                "a.tif,1,p,1,1,1,,,false\na.tif,1,p,1,1,1,,,false\n",
                ":3: particle 1 is listed twice",
            ),
            ("../x.tif,1,p,1,1,1,,,false\n", ":2: "),
            ("a.tif,1,p,wide,1,1,,,false\n", ":2: "),
        ] {
            std::fs::write(&path, format!("{header}\n{body}")).unwrap();
            let error = format!("{:#}", Manifest::read(&path).unwrap_err());
            assert!(error.contains(expected), "{error}");
            assert!(error.contains("manifest.csv"), "{error}");
        }
        std::fs::write(&path, "name,size\n").unwrap();
        let error = Manifest::read(&path).unwrap_err().to_string();
        assert!(error.contains("no file column"), "{error}");
    }
}

//! Cheap identities for files and for the data a task item depends on.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// What the engine remembers about an input file: size and modification time (nanoseconds
/// since the epoch). Like make and n2, a change of either means "changed"; this is what lets a
/// no-op rerun decide in a few `stat` calls instead of reading gigabytes of images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileFingerprint {
    /// The fingerprint of `path`, or `None` when it does not exist.
    pub fn of(path: &Path) -> io::Result<Option<FileFingerprint>> {
        match std::fs::metadata(path) {
            Ok(meta) => Self::of_metadata(&meta).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The fingerprint of a file whose metadata is already at hand.
    pub fn of_metadata(meta: &std::fs::Metadata) -> io::Result<FileFingerprint> {
        let mtime_ns = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Ok(FileFingerprint {
            size: meta.len(),
            mtime_ns,
        })
    }
}

/// An incremental BLAKE3 digest over length-prefixed parts, so that ("ab", "c") and
/// ("a", "bc") never collide.
#[derive(Clone, Default)]
pub struct Digest(blake3::Hasher);

impl Digest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(mut self, part: &[u8]) -> Self {
        self.update(part);
        self
    }

    /// Mixes in one part in place (for a digest kept in a collection).
    pub fn update(&mut self, part: &[u8]) {
        self.0.update(&(part.len() as u64).to_le_bytes());
        self.0.update(part);
    }

    pub fn str(self, part: &str) -> Self {
        self.bytes(part.as_bytes())
    }

    /// Mixes in a file's fingerprint (or its absence) under its path.
    pub fn file(self, path: &Path, fingerprint: Option<FileFingerprint>) -> Self {
        let this = self.str(&path.to_string_lossy());
        match fingerprint {
            Some(f) => this
                .bytes(&f.size.to_le_bytes())
                .bytes(&f.mtime_ns.to_le_bytes()),
            None => this.str("<missing>"),
        }
    }

    pub fn hex(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

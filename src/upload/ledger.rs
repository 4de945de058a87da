//! The upload ledger: one line per object the destination confirmed, appended as each
//! confirmation arrives, so that a rerun sends only what is missing.
//!
//! ```text
//! # flowcam-pipeline upload ledger for s3://bucket/prefix at http://127.0.0.1:3900
//! <md5 hex>\t<size>\t<local mtime ns>\t<object key>
//! ```
//!
//! Each append is one `write` on a file opened with `O_APPEND`, made before the next item
//! starts, so killing the process at any moment loses at most the objects still in flight.
//! The file is synced at most every [`SYNC_EVERY`] and when the ledger is dropped, so a
//! power cut loses at most that long of confirmations: those objects are sent again, which
//! is harmless. A line torn by a power cut does not parse and is ignored. Later lines win.
//! The local modification time lets a rerun trust the recorded MD5 without reading the file
//! again; a file whose size or time differ is hashed and sent again if its content changed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a confirmation may stay unsynced.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// What the ledger knows of one confirmed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// MD5 of the content, lowercase hex (the ETag of a single-part S3 upload).
    pub md5: String,
    pub size: u64,
    /// The local file's modification time when it was sent.
    pub mtime_ns: i64,
}

pub struct Ledger {
    path: PathBuf,
    entries: HashMap<String, LedgerEntry>,
    file: Mutex<Appender>,
}

struct Appender {
    file: File,
    last_sync: Instant,
    unsynced: bool,
}

impl Ledger {
    /// Opens (or starts) the ledger at `path` for `destination`, which the first line names
    /// for people reading the file.
    pub fn open(path: &Path, destination: &str) -> io::Result<Ledger> {
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(with_path)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(with_path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(with_path)?;
        let (entries, records) = parse(&text);
        // Files re-sent or touched append new lines for the same keys; keep the file about
        // as long as what it knows.
        if records > 2 * entries.len() + 1000 {
            drop(file);
            let mut current: Vec<(String, LedgerEntry)> = entries.into_iter().collect();
            current.sort_by(|a, b| a.0.cmp(&b.0));
            return Ledger::rewrite(path, destination, &current);
        }
        if text.is_empty() {
            file.write_all(header(destination).as_bytes())
                .map_err(with_path)?;
        } else if text.last() != Some(&b'\n') {
            // A line torn by a power cut: end it, so the next record starts on its own line.
            file.write_all(b"\n").map_err(with_path)?;
        }
        file.seek(SeekFrom::End(0)).map_err(with_path)?;
        Ok(Ledger {
            path: path.to_path_buf(),
            entries,
            file: Mutex::new(Appender {
                file,
                last_sync: Instant::now(),
                unsynced: false,
            }),
        })
    }

    /// Replaces the ledger at `path` with exactly `entries` (after checking the destination
    /// itself), atomically, and opens it.
    pub fn rewrite(
        path: &Path,
        destination: &str,
        entries: &[(String, LedgerEntry)],
    ) -> io::Result<Ledger> {
        let mut text = header(destination);
        for (key, entry) in entries {
            text.push_str(&line(key, entry));
        }
        crate::engine::write_file(path, text.as_bytes())?;
        Ledger::open(path, destination)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the ledger held when it was opened.
    pub fn entries(&self) -> &HashMap<String, LedgerEntry> {
        &self.entries
    }

    /// Appends confirmed objects in one write.
    pub fn record(&self, confirmed: &[(&str, &LedgerEntry)]) -> io::Result<()> {
        let mut text = String::new();
        for (key, entry) in confirmed {
            text.push_str(&line(key, entry));
        }
        let mut appender = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let with_path =
            |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", self.path.display()));
        appender
            .file
            .write_all(text.as_bytes())
            .map_err(with_path)?;
        appender.unsynced = true;
        if appender.last_sync.elapsed() >= SYNC_EVERY {
            appender.file.sync_data().map_err(with_path)?;
            appender.last_sync = Instant::now();
            appender.unsynced = false;
        }
        Ok(())
    }

    /// Makes every recorded line durable.
    pub fn sync(&self) -> io::Result<()> {
        let mut appender = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if appender.unsynced {
            appender.file.sync_data()?;
            appender.unsynced = false;
            appender.last_sync = Instant::now();
        }
        Ok(())
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// What the ledger at `path` records, read only (none when there is no ledger).
pub fn read_entries(path: &Path) -> io::Result<HashMap<String, LedgerEntry>> {
    match std::fs::read(path) {
        Ok(text) => Ok(parse(&text).0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// The number of objects the fullest ledger in `dir` records, read only (for `status`).
pub fn largest_in(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "tsv"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|text| parse(&text).0.len() as u64)
        .max()
}

fn header(destination: &str) -> String {
    format!("# flowcam-pipeline upload ledger for {destination}\n")
}

fn line(key: &str, entry: &LedgerEntry) -> String {
    format!("{}\t{}\t{}\t{key}\n", entry.md5, entry.size, entry.mtime_ns)
}

/// Every well-formed line (later lines win), and how many there were; torn or foreign lines
/// are skipped.
fn parse(text: &[u8]) -> (HashMap<String, LedgerEntry>, usize) {
    let mut entries = HashMap::new();
    let mut records = 0;
    let text = String::from_utf8_lossy(text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The text after the last newline is a torn line, never a record.
    lines.pop();
    for line in lines {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(4, '\t');
        let (Some(md5), Some(size), Some(mtime), Some(key)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let md5_ok = md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit());
        let (Ok(size), Ok(mtime_ns)) = (size.parse(), mtime.parse()) else {
            continue;
        };
        if md5_ok && !key.is_empty() {
            records += 1;
            entries.insert(
                key.to_string(),
                LedgerEntry {
                    md5: md5.to_ascii_lowercase(),
                    size,
                    mtime_ns,
                },
            );
        }
    }
    (entries, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> LedgerEntry {
        LedgerEntry {
            md5: format!("{n:032x}"),
            size: n,
            mtime_ns: n as i64 * 1000,
        }
    }

    #[test]
    fn records_survive_reopening_and_later_lines_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ledger.tsv");
        let ledger = Ledger::open(&path, "s3://b").unwrap();
        assert!(ledger.entries().is_empty());
        ledger
            .record(&[("a/x.tif", &entry(1)), ("a/y.tif", &entry(2))])
            .unwrap();
        ledger.record(&[("a/x.tif", &entry(3))]).unwrap();
        drop(ledger);
        let ledger = Ledger::open(&path, "s3://b").unwrap();
        assert_eq!(ledger.entries().len(), 2);
        assert_eq!(ledger.entries()["a/x.tif"], entry(3));
        assert_eq!(ledger.entries()["a/y.tif"], entry(2));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# flowcam-pipeline upload ledger for s3://b\n"));
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_terminated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.tsv");
        let ledger = Ledger::open(&path, "s3://b").unwrap();
        ledger.record(&[("k1", &entry(1))]).unwrap();
        drop(ledger);
        // A power cut in the middle of the second record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"0000000000000000000000000000000f\t15\t1")
            .unwrap();
        drop(file);
        let ledger = Ledger::open(&path, "s3://b").unwrap();
        assert_eq!(ledger.entries().len(), 1);
        ledger.record(&[("k2", &entry(2))]).unwrap();
        drop(ledger);
        let ledger = Ledger::open(&path, "s3://b").unwrap();
        assert_eq!(ledger.entries().len(), 2, "{:?}", ledger.entries());
        assert_eq!(ledger.entries()["k2"], entry(2));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = b"# header\nnot a record\nzz\t1\t1\tk\n0000000000000000000000000000000a\tx\t1\tk\n0000000000000000000000000000000A\t10\t5\tkey with spaces\n";
        let (entries, records) = parse(text);
        assert_eq!((entries.len(), records), (1, 1));
        assert_eq!(entries["key with spaces"].md5, format!("{:032x}", 10));
    }

    #[test]
    fn a_ledger_of_mostly_superseded_lines_is_compacted_on_opening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.tsv");
        let ledger = Ledger::open(&path, "s3://b").unwrap();
        for n in 0..1500 {
            ledger
                .record(&[("same", &entry(n)), ("other", &entry(1))])
                .unwrap();
        }
        drop(ledger);
        let ledger = Ledger::open(&path, "s3://b").unwrap();
        assert_eq!(ledger.entries()["same"], entry(1499));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn rewrite_replaces_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.tsv");
        let ledger = Ledger::open(&path, "s3://b").unwrap();
        ledger.record(&[("old", &entry(1))]).unwrap();
        drop(ledger);
        let ledger = Ledger::rewrite(&path, "s3://b", &[("new".to_string(), entry(2))]).unwrap();
        assert_eq!(ledger.entries().len(), 1);
        assert_eq!(ledger.entries()["new"], entry(2));
    }
}

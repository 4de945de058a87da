//! Where each collage page's rows are in `metadata.csv`, so that a task can plan one item
//! per page from one pass over the file and read a page's rows back when it runs it,
//! holding no more than a page's rows at a time, whatever the number of particles.

use crate::engine::Digest;
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;

/// One page's rows: runs of consecutive rows (one, when the `.lst` lists a page's
/// particles together, as the instrument does), and the digest of what the task read of
/// them.
pub struct PageRows {
    pub collage: String,
    pub runs: Vec<RowRun>,
    /// Its rows.
    pub count: usize,
    /// The hex digest the task made of its rows (its item's fingerprint).
    pub fingerprint: String,
}

pub struct RowRun {
    /// Where the run's first row starts.
    pub position: csv::Position,
    /// Its index among all rows.
    pub first: usize,
    pub count: usize,
}

/// Gathers [`PageRows`] as the rows go by, in order of each page's first row.
pub struct PageIndex {
    pages: Vec<PageRows>,
    digests: Vec<Digest>,
    page_of: HashMap<String, usize>,
    /// What every page's digest starts from.
    seed: Digest,
}

impl PageIndex {
    /// An index whose page digests all start from `seed`.
    pub fn new(seed: Digest) -> Self {
        PageIndex {
            pages: Vec::new(),
            digests: Vec::new(),
            page_of: HashMap::new(),
            seed,
        }
    }

    /// Notes that row `row`, which starts at `position`, is on `collage`; returns its
    /// page's digest, for the caller to mix the row into.
    pub fn add(&mut self, collage: &str, position: &csv::Position, row: usize) -> &mut Digest {
        let p = match self.page_of.get(collage) {
            Some(&p) => p,
            None => {
                self.page_of.insert(collage.to_string(), self.pages.len());
                self.pages.push(PageRows {
                    collage: collage.to_string(),
                    runs: Vec::new(),
                    count: 0,
                    fingerprint: String::new(),
                });
                self.digests.push(self.seed.clone());
                self.pages.len() - 1
            }
        };
        let page = &mut self.pages[p];
        match page.runs.last_mut() {
            Some(run) if run.first + run.count == row => run.count += 1,
            _ => page.runs.push(RowRun {
                position: position.clone(),
                first: row,
                count: 1,
            }),
        }
        page.count += 1;
        &mut self.digests[p]
    }

    /// The pages, in order of first appearance, with their fingerprints.
    pub fn into_pages(self) -> Vec<PageRows> {
        let mut pages = self.pages;
        for (page, digest) in pages.iter_mut().zip(self.digests) {
            page.fingerprint = digest.hex();
        }
        pages
    }
}

impl PageRows {
    /// The page's rows, read back from `path` (whose column `collage_column` names the
    /// page) where the plan found them, each with its index among all rows. A row that is
    /// not there any more, or is of another page, means the file changed under the task.
    pub fn read(
        &self,
        path: &Path,
        collage_column: usize,
    ) -> anyhow::Result<Vec<(usize, csv::StringRecord)>> {
        let changed =
            || anyhow::anyhow!("{} changed while the task ran; run again", path.display());
        let mut reader =
            csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
        let mut rows = Vec::with_capacity(self.count);
        for run in &self.runs {
            reader
                .seek(run.position.clone())
                .with_context(|| path.display().to_string())?;
            for k in 0..run.count {
                let mut record = csv::StringRecord::new();
                let read = reader
                    .read_record(&mut record)
                    .with_context(|| path.display().to_string())?;
                if !read || record.get(collage_column) != Some(self.collage.as_str()) {
                    return Err(changed());
                }
                rows.push((run.first + k, record));
            }
        }
        Ok(rows)
    }
}

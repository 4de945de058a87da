//! ReadMetadata: the session's `.lst` -> `metadata.csv` (+ the field types, so later tasks
//! can tell numbers from text).

use crate::engine::{Parameters, Plan, Staging, Task};
use crate::flowcam::lst::{self, Field};
use crate::tasks::Session;
use crate::tasks::registry::TaskEntry;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::Arc;

pub struct ReadMetadata {
    session: Arc<Session>,
}

/// `metadata.schema.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    pub source: PathBuf,
    pub lst_version: String,
    pub particles: usize,
    pub fields: Vec<Field>,
}

impl ReadMetadata {
    pub fn new(session: Arc<Session>) -> ReadMetadata {
        ReadMetadata { session }
    }

    /// The session's one `.lst` file.
    fn lst(&self) -> anyhow::Result<PathBuf> {
        let dir = &self.session.input;
        let mut found = lst::files_in(dir).with_context(|| format!("{}", dir.display()))?;
        match found.len() {
            1 => Ok(found.pop().expect("one")),
            0 => bail!("no .lst particle list in session folder {}", dir.display()),
            _ => bail!(
                "several .lst files in session folder {}: {}; keep one per session",
                dir.display(),
                found
                    .iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl Task for ReadMetadata {
    fn name(&self) -> &'static str {
        "ReadMetadata"
    }

    fn id(&self) -> String {
        format!("ReadMetadata({})", self.session.experiment)
    }

    fn parameters(&self) -> Parameters {
        Parameters::from([(
            "session".to_string(),
            self.session.input.display().to_string(),
        )])
    }

    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(vec![self.lst()?])
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.session.metadata_csv(), self.session.metadata_schema()]
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }

    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(WriteCsv { task: self }))
    }
}

struct WriteCsv<'a> {
    task: &'a ReadMetadata,
}

impl Plan for WriteCsv<'_> {
    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        let session = &self.task.session;
        let lst = self.task.lst()?;
        // A FIFO or a link out of the session folder is refused; what is checked is the
        // file then read, so nothing can be swapped in between.
        let file = crate::flowcam::input::open_regular(&lst, &session.input)?;
        // Straight from the list to the table on disk, a line at a time.
        let mut read = None;
        let streamed = out.stream(session.metadata_csv(), |w| {
            let result = lst::write_csv(&lst, file, w);
            let failed = result.is_err();
            read = Some(result);
            match failed {
                true => Err(std::io::Error::other("the list could not be read")),
                false => Ok(()),
            }
        });
        let header = match read {
            Some(result) => result?,
            None => return Err(streamed.expect_err("nothing read").into()),
        };
        streamed?;
        let schema = Schema {
            source: lst,
            lst_version: header.version,
            particles: header.particles,
            fields: header.fields,
        };
        out.write(
            session.metadata_schema(),
            &serde_json::to_vec_pretty(&schema)?,
        )?;
        Ok(())
    }
}

/// ReadMetadata in the registry: alone, it reads the `.lst` of the folder its `lst` input
/// is in.
pub(super) const ENTRY: TaskEntry = TaskEntry {
    name: "ReadMetadata",
    source: include_str!("../../tasks/ReadMetadata.json"),
    session_input: "lst",
    check: |bridge| {
        let dir = &bridge.session_dir;
        match lst::files_in(dir).map_or(0, |f| f.len()) {
            0 | 1 => Vec::new(),
            n => vec![format!(
                "input `lst`: its folder {} holds {n} .lst files; a session folder holds one",
                dir.display()
            )],
        }
    },
    build: |bridge| Ok(Arc::new(ReadMetadata::new(bridge.session()?))),
    owned: |session| vec![session.metadata_csv(), session.metadata_schema()],
};

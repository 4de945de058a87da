//! One session: the instrument's folder (read only) and the output folder made from it.

use crate::flowcam::SessionName;
use crate::flowcam::lst::check_plain_file_name;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session folder {}: {reason}", .path.display())]
    Input { path: PathBuf, reason: String },
    #[error("{0}")]
    Name(String),
    #[error("output folder {} lies inside the session folder {}; the input folder is never written, choose another --output-directory", .output.display(), .input.display())]
    OutputInsideInput { output: PathBuf, input: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Session {
    /// The instrument's folder, canonical. Never written.
    pub input: PathBuf,
    /// `<output root>/<experiment>`: everything this session's tasks write.
    pub output: PathBuf,
    /// Names the output folder and prefixes vignette names; defaults to the folder name.
    pub experiment: String,
    pub name: SessionName,
}

impl Session {
    pub fn new(
        input: &Path,
        output_root: &Path,
        experiment: Option<&str>,
    ) -> Result<Session, SessionError> {
        let (input, name, experiment) = Session::identify(input, experiment)?;
        let output = absolute(output_root).join(&experiment);
        Session::checked(input, output, experiment, name)
    }

    /// A session whose outputs go to exactly `output` (one operation's folder) rather than
    /// to `<output root>/<experiment>`.
    pub fn at(
        input: &Path,
        output: &Path,
        experiment: Option<&str>,
    ) -> Result<Session, SessionError> {
        let (input, name, experiment) = Session::identify(input, experiment)?;
        Session::checked(input, absolute(output), experiment, name)
    }

    /// The input folder (canonical), what its name says, and the experiment name.
    fn identify(
        input: &Path,
        experiment: Option<&str>,
    ) -> Result<(PathBuf, SessionName, String), SessionError> {
        let input_error = |reason: String| SessionError::Input {
            path: input.to_path_buf(),
            reason,
        };
        let canonical = input
            .canonicalize()
            .map_err(|e| input_error(e.to_string()))?;
        if !canonical.is_dir() {
            return Err(input_error("is not a folder".into()));
        }
        // The name the folder was given, not its link target's: a session reached through
        // a symlink (`latest -> Survey_..._04052023`) is named, positioned and dated by
        // the link's name, as the user wrote it. `.` and `..` fall back to the real name.
        let given = std::path::absolute(input).unwrap_or_else(|_| input.to_path_buf());
        let folder = given
            .file_name()
            .or_else(|| canonical.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| input_error("has no folder name".into()))?;
        let name = SessionName::parse(&folder).map_err(SessionError::Name)?;
        let experiment = experiment.unwrap_or(&folder).to_string();
        check_plain_file_name(&experiment)
            .map_err(|e| SessionError::Name(format!("experiment name: {e}")))?;
        Ok((canonical, name, experiment))
    }

    fn checked(
        input: PathBuf,
        output: PathBuf,
        experiment: String,
        name: SessionName,
    ) -> Result<Session, SessionError> {
        if output.starts_with(&input) {
            return Err(SessionError::OutputInsideInput { output, input });
        }
        Ok(Session {
            input,
            output,
            experiment,
            name,
        })
    }

    pub fn metadata_csv(&self) -> PathBuf {
        self.output.join("metadata.csv")
    }

    pub fn metadata_schema(&self) -> PathBuf {
        self.output.join("metadata.schema.json")
    }

    /// What the instrument wrote about the run (ExtractMetadata).
    pub fn session_json(&self) -> PathBuf {
        self.output.join("session.json")
    }

    pub fn vignettes_dir(&self) -> PathBuf {
        self.output.join("vignettes")
    }

    pub fn manifest(&self) -> PathBuf {
        self.output.join("manifest.csv")
    }

    pub fn run_report(&self) -> PathBuf {
        self.output.join("run-report.json")
    }

    /// Upload ledgers, one per destination.
    pub fn uploads_dir(&self) -> PathBuf {
        self.output.join("uploads")
    }

    /// Stamps and item markers.
    pub fn state_dir(&self) -> PathBuf {
        self.output.join(".state")
    }

    /// The top-level entries of the output folder that belong to the runs rather than to
    /// one task (each task's are in its registry entry), for `clean`.
    pub fn run_outputs(&self) -> Vec<PathBuf> {
        vec![
            self.run_report(),
            self.output.join("runs"),
            self.output.join("pipeline.log"),
            self.state_dir(),
        ]
    }
}

/// `path` made absolute on real locations, so that "inside the input folder" cannot be
/// dodged with `..` or a symlink: the deepest part that exists is canonicalized and the
/// rest (which cannot be a symlink yet) appended, with `..` and `.` resolved by name.
pub fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut out = canonical;
            for part in rest.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return path.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_reached_through_dotdot_or_a_symlink_is_still_inside_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("S_54.0_-2.0_04052023");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        let dotdot = dir.path().join("other/../S_54.0_-2.0_04052023/out");
        assert!(matches!(
            Session::new(&input, &dotdot, None),
            Err(SessionError::OutputInsideInput { .. })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert!(matches!(
            Session::new(&input, &link.join("out"), None),
            Err(SessionError::OutputInsideInput { .. })
        ));
        assert!(Session::new(&input, &dir.path().join("other/out"), None).is_ok());
    }
}

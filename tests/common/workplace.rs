//! A working folder for runs against the shared Garage: the server's `.env`, an input
//! session, and output folders by name; the binary run there with none of the test's own
//! AWS variables.

use super::copy_fixture;
use super::garage::Garage;
use flowcam_pipeline::synthetic::SyntheticSession;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A folder name that carries a position: 54.0143 N, 2.7770 W, 4 May 2023, 1 m deep.
pub const POSITIONED: &str = "Tank25_54.0143_-2.7770_04052023_1";

/// A key prefix no other test (or earlier run against the same server) uses.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{name}-{}-{nanos}", std::process::id())
}

pub struct Workplace {
    pub dir: tempfile::TempDir,
    pub input: PathBuf,
    pub experiment: String,
}

impl Workplace {
    pub fn with_fixture(garage: &Garage, folder: &str) -> Workplace {
        let dir = tempfile::tempdir().unwrap();
        let input = copy_fixture(dir.path(), folder);
        Workplace::new(garage, dir, input, folder)
    }

    pub fn with_synthetic(
        garage: &Garage,
        particles: usize,
        pages: usize,
        name: &str,
    ) -> Workplace {
        let dir = tempfile::tempdir().unwrap();
        let synthetic = SyntheticSession {
            particles,
            pages,
            prefix: name.into(),
            ..SyntheticSession::default()
        };
        let input = synthetic.write(dir.path()).unwrap();
        let experiment = input.file_name().unwrap().to_string_lossy().into_owned();
        Workplace::new(garage, dir, input, &experiment)
    }

    fn new(garage: &Garage, dir: tempfile::TempDir, input: PathBuf, experiment: &str) -> Workplace {
        std::fs::write(dir.path().join(".env"), garage.dotenv()).unwrap();
        Workplace {
            dir,
            input,
            experiment: experiment.to_string(),
        }
    }

    /// The output root called `name`.
    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The session's folder under the output root `out`.
    pub fn session_out(&self, out: &str) -> PathBuf {
        self.out(out).join(&self.experiment)
    }

    /// The binary, run in the working folder (so it reads the `.env` there) on the input,
    /// into the output root `out`, with no AWS variables of the test's own environment.
    pub fn command(&self, out: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowcam-pipeline"));
        command
            .current_dir(self.dir.path())
            .args(["-d", self.input.to_str().unwrap()])
            .args(["-o", self.out(out).to_str().unwrap()])
            .args(args)
            .env("HOME", self.dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("RUST_LOG");
        for (name, _) in std::env::vars() {
            if name.starts_with("AWS_") && name != "AWS_EC2_METADATA_DISABLED" {
                command.env_remove(name);
            }
        }
        command
    }

    pub fn run(&self, out: &str, args: &[&str]) -> Output {
        self.command(out, args).output().unwrap()
    }

    /// Runs into `out` and asserts that the run succeeded (exit code 0), showing its output
    /// when it did not.
    pub fn succeed(&self, out: &str, args: &[&str]) -> Output {
        let output = self.run(out, args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{out}: {}",
            super::text(&output)
        );
        output
    }

    /// The last run's `run-report.json` under `out`.
    pub fn report(&self, out: &str) -> serde_json::Value {
        let path = self.session_out(out).join("run-report.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The task called `name` in the last run's report under `out`.
    pub fn task(&self, out: &str, name: &str) -> serde_json::Value {
        let report = self.report(out);
        report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    }

    /// The one ledger of the session under `out` (the tests use one destination each).
    pub fn ledger_path(&self, out: &str) -> PathBuf {
        let dir = self.session_out(out).join("uploads");
        let mut ledgers: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        ledgers.retain(|p| p.extension().is_some_and(|e| e == "tsv"));
        assert!(ledgers.len() <= 1, "{ledgers:?}");
        ledgers.pop().unwrap_or_else(|| dir.join("none.tsv"))
    }

    /// Key -> MD5 of every well-formed line of that ledger.
    pub fn ledger(&self, out: &str) -> HashMap<String, String> {
        let text = std::fs::read_to_string(self.ledger_path(out)).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let parts: Vec<&str> = l.splitn(4, '\t').collect();
                (parts.len() == 4).then(|| (parts[3].to_string(), parts[0].to_string()))
            })
            .collect()
    }
}

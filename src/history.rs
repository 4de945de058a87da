//! What happened to a session over time: every run's JSON report (the last [`KEEP`]
//! kept) and a human log of its runs, both in the session's output folder, so that
//! `status` can say when a session last failed and why, and `log` can show the last run.
//!
//! ```text
//! <session output>/run-report.json        the last run
//! <session output>/runs/<time>.json       the last KEEP runs
//! <session output>/pipeline.log           each run's summary, appended; bounded to LOG_LIMIT
//! ```

use crate::engine::{RunReport, TaskState, write_file};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Run reports kept per session.
pub const KEEP: usize = 20;
/// When the log grows past this, its older half is dropped.
pub const LOG_LIMIT: u64 = 1 << 20;
/// Starts every run's section of `pipeline.log`.
pub const RUN_MARKER: &str = "=== run ";

pub fn report_path(session_out: &Path) -> PathBuf {
    session_out.join("run-report.json")
}

pub fn runs_dir(session_out: &Path) -> PathBuf {
    session_out.join("runs")
}

pub fn log_path(session_out: &Path) -> PathBuf {
    session_out.join("pipeline.log")
}

/// Keeps `report` as the session's last run and, when the run did something (work or a
/// failure), in its history and log; a run that found everything complete changes
/// neither, so cron's no-op passes do not push real runs out of the history.
pub fn record(session_out: &Path, report: &RunReport) -> io::Result<()> {
    // The shares of a session split across array tasks end side by side: one record at a
    // time (a lock on the folder of runs), or they would write through each other's
    // temporaries and appends.
    let runs = runs_dir(session_out);
    std::fs::create_dir_all(&runs)?;
    let folder = std::fs::File::open(&runs)?;
    folder.lock()?;
    let json = serde_json::to_vec_pretty(report).expect("report serializes");
    write_file(&report_path(session_out), &json)?;
    if !report.did_work() {
        return Ok(());
    }
    // RFC 3339 times sort as text; ':' is kept out of file names for other systems' sake.
    let name = format!("{}.json", report.started_at.replace(':', ""));
    write_file(&runs.join(name), &json)?;
    prune(&runs)?;
    append_log(session_out, report)
}

fn prune(runs: &Path) -> io::Result<()> {
    let mut reports: Vec<PathBuf> = std::fs::read_dir(runs)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    reports.sort();
    let excess = reports.len().saturating_sub(KEEP);
    for old in &reports[..excess] {
        // A concurrent share of the same session may have pruned it already.
        if let Err(e) = std::fs::remove_file(old)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(e);
        }
    }
    Ok(())
}

fn append_log(session_out: &Path, report: &RunReport) -> io::Result<()> {
    let path = log_path(session_out);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_LIMIT) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        let half = bytes.len() / 2;
        // Cut at a run boundary so the kept part starts with a whole run (searched as bytes:
        // the middle may fall inside a character).
        let marker = RUN_MARKER.as_bytes();
        let cut = bytes[half..]
            .windows(marker.len())
            .position(|w| w == marker)
            .map_or(bytes.len(), |i| half + i);
        write_file(&path, &bytes[cut..])?;
    }
    let verdict = if report.succeeded() {
        "ok"
    } else if report.interrupted {
        "INTERRUPTED"
    } else {
        "FAILED"
    };
    let mut entry = format!(
        "{RUN_MARKER}{} (flowcam-pipeline {}, pid {}) ===\n",
        report.started_at,
        report.tool_version,
        std::process::id()
    );
    entry.push_str(&report.summary());
    entry.push_str(&format!(
        "=== end: {verdict} in {:.2} s ===\n",
        report.duration_ms as f64 / 1000.0
    ));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    file.write_all(entry.as_bytes())
}

/// The session's runs, oldest first (unreadable reports are skipped).
pub fn runs(session_out: &Path) -> Vec<RunReport> {
    let Ok(entries) = std::fs::read_dir(runs_dir(session_out)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
        .collect()
}

pub fn last_run(session_out: &Path) -> Option<RunReport> {
    serde_json::from_slice(&std::fs::read(report_path(session_out)).ok()?).ok()
}

/// When the session last failed, and the first error of that run.
pub fn last_failure(session_out: &Path) -> Option<(String, String)> {
    runs(session_out).into_iter().rev().find_map(|run| {
        let failed = run.tasks.iter().find(|t| t.state == TaskState::Failed)?;
        let error = failed
            .errors
            .first()
            .map(|e| format!("{}: {e}", failed.id))
            .unwrap_or_else(|| failed.id.clone());
        Some((run.started_at.clone(), error))
    })
}

/// The last run's section of the session's log.
pub fn last_log(session_out: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log_path(session_out)).ok()?;
    let start = text.rfind(RUN_MARKER)?;
    Some(text[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ItemCounts, TaskReport};

    fn report(started_at: &str, failed: bool) -> RunReport {
        RunReport {
            tool_version: "0.1.0".into(),
            started_at: started_at.into(),
            duration_ms: 1500,
            interrupted: false,
            tasks: vec![TaskReport {
                id: "DecollageImages(s)".into(),
                name: "DecollageImages".into(),
                state: if failed {
                    TaskState::Failed
                } else {
                    TaskState::Ran
                },
                reason: None,
                items: ItemCounts::default(),
                errors: if failed {
                    vec!["page 3 is corrupt".into()]
                } else {
                    Vec::new()
                },
                notes: Vec::new(),
                duration_ms: 1000,
            }],
        }
    }

    #[test]
    fn history_is_bounded_and_remembers_the_last_failure() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..KEEP + 5 {
            let failed = i == 3 || i == 10;
            record(
                dir.path(),
                &report(&format!("2026-11-22T10:{i:02}:00+00:00"), failed),
            )
            .unwrap();
        }
        let runs = runs(dir.path());
        assert_eq!(runs.len(), KEEP);
        assert_eq!(runs.last().unwrap().started_at, "2026-11-22T10:24:00+00:00");
        let (when, error) = last_failure(dir.path()).unwrap();
        assert_eq!(when, "2026-11-22T10:10:00+00:00");
        assert_eq!(error, "DecollageImages(s): page 3 is corrupt");
        assert_eq!(
            last_run(dir.path()).unwrap().started_at,
            "2026-11-22T10:24:00+00:00"
        );
    }

    #[test]
    fn the_log_shows_the_last_run_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), &report("2026-11-22T10:00:00+00:00", true)).unwrap();
        record(dir.path(), &report("2026-11-22T11:00:00+00:00", false)).unwrap();
        let last = last_log(dir.path()).unwrap();
        assert!(
            last.starts_with("=== run 2026-11-22T11:00:00+00:00"),
            "{last}"
        );
        assert!(last.contains("=== end: ok in 1.50 s ==="), "{last}");
        assert!(!last.contains("page 3 is corrupt"));

        std::fs::write(log_path(dir.path()), "x".repeat(LOG_LIMIT as usize + 10)).unwrap();
        record(dir.path(), &report("2026-11-22T12:00:00+00:00", false)).unwrap();
        let size = std::fs::metadata(log_path(dir.path())).unwrap().len();
        assert!(size < 10_000, "{size}");
        assert!(last_log(dir.path()).unwrap().contains("12:00:00"));

        // Trimming never cuts inside a character, whatever the log holds.
        std::fs::write(log_path(dir.path()), "é".repeat(LOG_LIMIT as usize)).unwrap();
        record(dir.path(), &report("2026-11-22T13:00:00+00:00", false)).unwrap();
        assert!(last_log(dir.path()).unwrap().contains("13:00:00"));
    }
}

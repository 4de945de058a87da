//! What happened in a run: for people (a Luigi-style summary) and for machines (JSON).

use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Targets existed and the stamp matched: nothing done.
    AlreadyComplete,
    Ran,
    Failed,
    /// Not attempted because a requirement failed.
    Blocked,
    /// Stopped by a signal (SIGTERM, SIGINT) before all its items ran, or never started
    /// because of it; a rerun resumes it.
    Interrupted,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ItemCounts {
    pub total: usize,
    /// Already done by an earlier run (per-item resume).
    pub skipped: usize,
    pub ran: usize,
    pub failed: usize,
    /// Not attempted because an item stopped the task (see `engine::StopTask`).
    #[serde(default)]
    pub not_attempted: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    pub id: String,
    pub name: String,
    pub state: TaskState,
    /// Why the task ran (what was stale) or why it was blocked.
    pub reason: Option<String>,
    pub items: ItemCounts,
    /// One line per failure, each naming what failed.
    pub errors: Vec<String>,
    /// What the task told about its work (`Plan::notes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub tool_version: String,
    pub started_at: String,
    pub duration_ms: u64,
    /// The run was stopped by a signal before everything was done.
    #[serde(default)]
    pub interrupted: bool,
    pub tasks: Vec<TaskReport>,
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.tasks
            .iter()
            .all(|t| matches!(t.state, TaskState::AlreadyComplete | TaskState::Ran))
    }

    /// True when the run did any work at all.
    pub fn did_work(&self) -> bool {
        self.tasks
            .iter()
            .any(|t| t.state != TaskState::AlreadyComplete)
    }

    pub fn task(&self, name: &str) -> Option<&TaskReport> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// The execution summary printed at the end of a run, in the shape Luigi users know.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "===== execution summary =====");
        let _ = writeln!(out, "Scheduled {} tasks of which:", self.tasks.len());
        let groups = [
            (TaskState::AlreadyComplete, "complete ones were encountered"),
            (TaskState::Ran, "ran successfully"),
            (TaskState::Failed, "failed"),
            (
                TaskState::Blocked,
                "were left pending because a requirement failed",
            ),
            (
                TaskState::Interrupted,
                "were interrupted (a rerun resumes them)",
            ),
        ];
        for (state, label) in groups {
            let tasks: Vec<_> = self.tasks.iter().filter(|t| t.state == state).collect();
            if tasks.is_empty() {
                continue;
            }
            let _ = writeln!(out, "* {} {label}:", tasks.len());
            for t in tasks {
                let _ = write!(out, "    - {}", t.id);
                if t.items.total > 0 {
                    let _ = write!(
                        out,
                        " [{} items: {} ran, {} already done, {} failed",
                        t.items.total, t.items.ran, t.items.skipped, t.items.failed
                    );
                    if t.items.not_attempted > 0 {
                        let _ = write!(out, ", {} not attempted", t.items.not_attempted);
                    }
                    out.push(']');
                }
                if state != TaskState::AlreadyComplete {
                    let _ = write!(out, " in {:.2} s", t.duration_ms as f64 / 1000.0);
                }
                let _ = writeln!(out);
                for note in &t.notes {
                    let _ = writeln!(out, "        {note}");
                }
                if let Some(reason) = &t.reason {
                    let _ = writeln!(out, "        because {reason}");
                }
                for e in &t.errors {
                    let _ = writeln!(out, "        error: {e}");
                }
            }
        }
        let verdict = if self.succeeded() {
            "This progress looks :) because there were no failed tasks"
        } else if self.interrupted && !self.tasks.iter().any(|t| t.state == TaskState::Failed) {
            "This progress looks :| because the run was interrupted"
        } else {
            "This progress looks :( because there were failed tasks"
        };
        let _ = writeln!(out, "\n{verdict}");
        out
    }
}

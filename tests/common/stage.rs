//! The stage tester: runs one task (and whatever it requires) through the engine, the way
//! survey pipeline harnesses test one stage at a time, and hands back the run's report and
//! the task's declared outputs.
//!
//! A task built on [`given`] runs truly alone: its requirement is a stand-in that is
//! complete by construction, so the task reads inputs a test (or an earlier stage) put in
//! place and nothing upstream runs.

use flowcam_pipeline::TOOL_VERSION;
use flowcam_pipeline::engine::{RunReport, Runner, Task, TaskRef, TaskReport};
use flowcam_pipeline::tasks::Session;
use std::path::PathBuf;
use std::sync::Arc;

/// What running one task alone gave: the run's report (the task's requirements included)
/// and the task's declared outputs.
pub struct TaskRun {
    pub report: RunReport,
    pub outputs: Vec<PathBuf>,
}

impl TaskRun {
    /// The report of the task named `name` (panics with the run's summary when absent).
    pub fn task(&self, name: &str) -> &TaskReport {
        self.report
            .task(name)
            .unwrap_or_else(|| panic!("no {name} in the run:\n{}", self.report.summary()))
    }

    /// Panics with the run's summary unless every task completed.
    pub fn assert_succeeded(&self) -> &TaskRun {
        assert!(self.report.succeeded(), "{}", self.report.summary());
        self
    }
}

/// Runs `task` and whatever it requires on the inputs already in place, and returns the
/// report and the task's outputs (each checked to exist when the run succeeded).
pub fn run_task_alone(task: TaskRef) -> TaskRun {
    let report = Runner::new(TOOL_VERSION, 2).run(&task).unwrap();
    let outputs = task.outputs();
    if report.succeeded() {
        for output in &outputs {
            assert!(output.exists(), "{} is missing", output.display());
        }
    }
    TaskRun { report, outputs }
}

/// A requirement whose outputs are already in place: complete by construction, so the task
/// that requires it runs alone on what the test put in the session's output folder.
pub struct Given {
    state_dir: PathBuf,
}

impl Task for Given {
    fn name(&self) -> &'static str {
        "Given"
    }

    fn outputs(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }
}

/// The stand-in requirement for a task of `session` whose inputs are given.
pub fn given(session: &Session) -> TaskRef {
    Arc::new(Given {
        state_dir: session.state_dir(),
    })
}

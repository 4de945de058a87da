//! `serve --watch SECONDS`: the service runs the cron pass itself on that period, the same
//! pass (`pass::run`) with the same settle rules and session locks, so a lab can run one
//! service instead of cron. The dashboard shows the last pass and when the next one starts.

use crate::engine::Runner;
use crate::pass::{self, Outcome, PassOptions};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the last pass did, for the dashboard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassSummary {
    pub started_at: String,
    pub finished_at: String,
    pub sessions: usize,
    pub ran: usize,
    pub complete: usize,
    pub failed: usize,
    pub waiting: usize,
    pub busy: usize,
    /// A pass that could not even list the root says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The watcher's state, shared with the pages.
#[derive(Debug, Default, Serialize)]
pub struct WatchState {
    pub period_s: u64,
    /// A pass is running now.
    pub running: bool,
    pub last: Option<PassSummary>,
    pub next_at: Option<String>,
}

/// The handle the pages read.
pub type Watch = Arc<Mutex<WatchState>>;

/// Starts the watcher: a pass now, then one `period` after each pass ends, over the
/// folders `folders` lists at that moment.
pub fn spawn(
    period: Duration,
    folders: impl Fn() -> std::io::Result<Vec<PathBuf>> + Send + 'static,
    options: PassOptions,
    runner: Runner,
) -> Watch {
    let watch: Watch = Arc::new(Mutex::new(WatchState {
        period_s: period.as_secs(),
        ..WatchState::default()
    }));
    let shared = watch.clone();
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            loop {
                lock(&shared).running = true;
                // A panic outside the engine's own guard must not end the watching: it is
                // this pass's error, and the next pass comes as planned.
                let summary = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    one_pass(&folders, &options, &runner)
                }))
                .unwrap_or_else(|panic| PassSummary {
                    error: Some(format!(
                        "internal error (panic): {}",
                        crate::engine::runner::panic_message(panic.as_ref())
                    )),
                    finished_at: Utc::now().to_rfc3339(),
                    ..PassSummary::default()
                });
                let next: Option<DateTime<Utc>> = chrono::Duration::from_std(period)
                    .ok()
                    .and_then(|d| Utc::now().checked_add_signed(d));
                {
                    let mut state = lock(&shared);
                    state.running = false;
                    state.last = Some(summary);
                    state.next_at = next.map(|n| n.to_rfc3339());
                }
                std::thread::sleep(period);
            }
        })
        .expect("a thread for the watcher");
    watch
}

fn lock(watch: &Watch) -> std::sync::MutexGuard<'_, WatchState> {
    watch.lock().unwrap_or_else(|e| e.into_inner())
}

fn one_pass(
    folders: &impl Fn() -> std::io::Result<Vec<PathBuf>>,
    options: &PassOptions,
    runner: &Runner,
) -> PassSummary {
    let mut summary = PassSummary {
        started_at: Utc::now().to_rfc3339(),
        ..PassSummary::default()
    };
    match folders() {
        Ok(folders) => {
            let outcomes = pass::run(&folders, options, runner);
            summary.sessions = outcomes.len();
            for o in &outcomes {
                match o.outcome {
                    Outcome::Complete => summary.complete += 1,
                    Outcome::Ran => summary.ran += 1,
                    Outcome::Failed { .. } => summary.failed += 1,
                    Outcome::Waiting { .. } | Outcome::Interrupted => summary.waiting += 1,
                    Outcome::Busy { .. } => summary.busy += 1,
                }
            }
        }
        Err(e) => {
            tracing::error!("watch: {e}");
            summary.error = Some(e.to_string());
        }
    }
    summary.finished_at = Utc::now().to_rfc3339();
    summary
}

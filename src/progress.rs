//! Progress display for runs, as an [`Observer`] of the [`Runner`](crate::engine::Runner).
//!
//! Why three displays: a person at a terminal wants live bars (counts, rate, ETA) to see
//! that a long decollage or upload is moving and when it will end; a log file wants a few
//! plain lines (`--progress=plain`), since bars redrawn with escape codes make a log
//! unreadable; a cron job or a pipe wants nothing at all (`off`, or `--quiet`), its run
//! report and summary are enough.
//!
//! Both bars and plain lines go to **stderr**, so that stdout keeps only the execution
//! summary and can be piped or captured cleanly. The choice of *whether* to show bars
//! (`auto`) looks at stdout, as the issue asks: when stdout is not a terminal the run is
//! scripted and gets no bars. Bars are drawn through `indicatif`, which also draws nothing
//! when stderr itself is not a terminal, so `--progress=bars 2>file` leaves no escape codes
//! in `file`; use `plain` for log files.
//!
//! Only tasks that start with items to do are shown (complete tasks, wrappers and tasks with
//! nothing left to do get no bar and no lines); the summary at the end of a run covers every
//! task.
//!
//! [`Observer::item_finished`] is called from every worker thread at once, so its path is
//! kept cheap: a shared read lock to find the task, atomic counters, and the writer's mutex
//! only when a plain line is due.

use crate::engine::report::{TaskReport, TaskState};
use crate::engine::runner::Observer;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How a run shows its progress (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars when stdout is a terminal, nothing otherwise.
    #[default]
    Auto,
    /// Live progress bars on stderr, one per running task.
    Bars,
    /// A plain line on stderr per task now and then (every 10 s at most), for log files.
    Plain,
    /// No progress display.
    Off,
}

impl ProgressMode {
    /// The mode to use: `quiet` turns progress off whatever was asked, and `Auto` becomes
    /// `Bars` when stdout is a terminal and `Off` when it is not.
    pub fn resolve(self, quiet: bool) -> ProgressMode {
        if quiet {
            return ProgressMode::Off;
        }
        match self {
            ProgressMode::Auto if std::io::stdout().is_terminal() => ProgressMode::Bars,
            ProgressMode::Auto => ProgressMode::Off,
            other => other,
        }
    }
}

/// How often plain mode prints a line per running task, at most.
pub const DEFAULT_PLAIN_INTERVAL: Duration = Duration::from_secs(10);

/// Progress display for a run: pass it to
/// [`Runner::observer`](crate::engine::Runner::observer) as `Box::new(Progress::new(mode))`.
pub struct Progress {
    sink: Sink,
    /// Tasks running now, by task id. Several sessions may run at once, hence a map.
    tasks: RwLock<HashMap<String, Arc<Tracked>>>,
}

enum Sink {
    Off,
    Bars(MultiProgress),
    Plain {
        out: Mutex<Box<dyn Write + Send>>,
        interval_ms: u64,
    },
}

/// One running task.
struct Tracked {
    /// Items to do when the task started.
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    started: Instant,
    /// Plain mode: milliseconds after `started` when the next periodic line is due.
    next_line_ms: AtomicU64,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A display in `mode`; `Auto` is resolved here (without `--quiet`, see
    /// [`ProgressMode::resolve`]). Bars and plain lines go to stderr.
    pub fn new(mode: ProgressMode) -> Progress {
        match mode.resolve(false) {
            ProgressMode::Bars => Progress::bars_to(ProgressDrawTarget::stderr()),
            ProgressMode::Plain => {
                Progress::plain_to(Box::new(std::io::stderr()), DEFAULT_PLAIN_INTERVAL)
            }
            _ => Progress::off(),
        }
    }

    /// A display that shows nothing.
    pub fn off() -> Progress {
        Progress::with_sink(Sink::Off)
    }

    /// Plain lines to `out`, a periodic one per task at most every `interval`.
    pub fn plain_to(out: Box<dyn Write + Send>, interval: Duration) -> Progress {
        Progress::with_sink(Sink::Plain {
            out: Mutex::new(out),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Bars drawn on `target`.
    pub fn bars_to(target: ProgressDrawTarget) -> Progress {
        Progress::with_sink(Sink::Bars(MultiProgress::with_draw_target(target)))
    }

    fn with_sink(sink: Sink) -> Progress {
        Progress {
            sink,
            tasks: RwLock::new(HashMap::new()),
        }
    }

    /// The mode this display works in (never `Auto`).
    pub fn mode(&self) -> ProgressMode {
        match self.sink {
            Sink::Off => ProgressMode::Off,
            Sink::Bars(_) => ProgressMode::Bars,
            Sink::Plain { .. } => ProgressMode::Plain,
        }
    }

    /// Writes one plain line; a failing writer (a closed log) must not fail the run.
    fn line(&self, text: &str) {
        if let Sink::Plain { out, .. } = &self.sink {
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    #[cfg(test)]
    fn tracked(&self, task: &str) -> Option<Arc<Tracked>> {
        let tasks = self.tasks.read().unwrap_or_else(|e| e.into_inner());
        tasks.get(task).cloned()
    }

    #[cfg(test)]
    fn counts(&self, task: &str) -> Option<(usize, usize)> {
        self.tracked(task).map(|t| {
            (
                t.done.load(Ordering::Relaxed),
                t.failed.load(Ordering::Relaxed),
            )
        })
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg} [{wide_bar}] {human_pos}/{human_len} items ({percent}%) {rate} ETA {eta}",
    )
    .expect("valid progress template")
    .progress_chars("=> ")
    // indicatif's own `{per_sec}` prints four decimals.
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}/s", state.per_sec());
        },
    )
}

impl Observer for Progress {
    fn task_started(&self, task: &str, items: usize) {
        if items == 0 || matches!(self.sink, Sink::Off) {
            return;
        }
        let bar = match &self.sink {
            Sink::Bars(multi) => {
                let bar = multi.add(ProgressBar::new(items as u64));
                bar.set_style(bar_style());
                bar.set_message(task.to_string());
                // Redraws the rate and ETA while slow items (a big upload batch) run.
                bar.enable_steady_tick(Duration::from_secs(1));
                Some(bar)
            }
            _ => None,
        };
        let interval_ms = match &self.sink {
            Sink::Plain { interval_ms, .. } => *interval_ms,
            _ => u64::MAX,
        };
        let tracked = Arc::new(Tracked {
            total: items,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            started: Instant::now(),
            next_line_ms: AtomicU64::new(interval_ms),
            bar,
        });
        let previous = self
            .tasks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task.to_string(), tracked);
        if let (Some(previous), Sink::Bars(multi)) = (previous, &self.sink)
            && let Some(bar) = &previous.bar
        {
            bar.finish_and_clear();
            multi.remove(bar);
        }
        self.line(&format!("progress {task}: started, {items} items to do"));
    }

    fn item_finished(&self, task: &str, _item: &str, ok: bool) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        let tasks = self.tasks.read().unwrap_or_else(|e| e.into_inner());
        let Some(t) = tasks.get(task) else {
            return;
        };
        let done = t.done.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = if ok {
            t.failed.load(Ordering::Relaxed)
        } else {
            t.failed.fetch_add(1, Ordering::Relaxed) + 1
        };
        if let Some(bar) = &t.bar {
            bar.inc(1);
            if !ok {
                bar.set_message(format!("{task} ({failed} failed)"));
            }
            return;
        }
        // Plain: the last item is told by the end line instead.
        if done >= t.total {
            return;
        }
        let elapsed = t.started.elapsed();
        let now_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let due = t.next_line_ms.load(Ordering::Relaxed);
        if now_ms < due {
            return;
        }
        let Sink::Plain { interval_ms, .. } = &self.sink else {
            return;
        };
        // One thread wins the line; the others go back to work.
        let next = now_ms.saturating_add(*interval_ms);
        if t.next_line_ms
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let line = periodic_line(task, done, t.total, failed, elapsed);
        drop(tasks);
        self.line(&line);
    }

    fn task_finished(&self, report: &TaskReport) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        let Some(t) = self
            .tasks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&report.id)
        else {
            return;
        };
        let items = &report.items;
        let secs = report.duration_ms as f64 / 1000.0;
        let failed = report.state == TaskState::Failed;
        let mut outcome = if failed {
            format!(
                "failed in {secs:.1} s: {} of {} items done, {} failed",
                items.ran, t.total, items.failed
            )
        } else {
            format!("done, {} items in {secs:.1} s", items.ran)
        };
        if items.not_attempted > 0 {
            outcome.push_str(&format!(", {} not attempted", items.not_attempted));
        }
        match &self.sink {
            Sink::Bars(multi) => {
                if let Some(bar) = &t.bar {
                    let mark = if failed { '✗' } else { '✓' };
                    let _ = multi.println(format!("{mark} {}: {outcome}", report.id));
                    bar.finish_and_clear();
                    multi.remove(bar);
                }
            }
            _ => self.line(&format!("progress {}: {outcome}", report.id)),
        }
    }
}

impl Drop for Progress {
    /// Clears bars of tasks that never finished (the run ended early), so they do not stay
    /// drawn above whatever comes next.
    fn drop(&mut self) {
        if let Sink::Bars(multi) = &self.sink {
            let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
            for (_, t) in tasks.drain() {
                if let Some(bar) = &t.bar {
                    bar.finish_and_clear();
                    multi.remove(bar);
                }
            }
        }
    }
}

/// `progress DecollageImages(s1): 3/9 items (33%), 2.1/s, ETA 3 s`
fn periodic_line(
    task: &str,
    done: usize,
    total: usize,
    failed: usize,
    elapsed: Duration,
) -> String {
    let percent = done * 100 / total.max(1);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let eta = if rate > 0.0 {
        human_duration(Duration::from_secs_f64(
            (total.saturating_sub(done)) as f64 / rate,
        ))
    } else {
        "?".to_string()
    };
    let mut line =
        format!("progress {task}: {done}/{total} items ({percent}%), {rate:.1}/s, ETA {eta}");
    if failed > 0 {
        line.push_str(&format!(", {failed} failed"));
    }
    line
}

/// `42 s`, `3 min 5 s`, `2 h 10 min`: rounded up, an ETA should not promise too early.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::report::ItemCounts;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    fn report(id: &str, state: TaskState, ran: usize, failed: usize) -> TaskReport {
        TaskReport {
            id: id.to_string(),
            name: "DecollageImages".to_string(),
            state,
            reason: None,
            items: ItemCounts {
                total: ran + failed,
                ran,
                failed,
                ..ItemCounts::default()
            },
            errors: Vec::new(),
            notes: Vec::new(),
            duration_ms: 5600,
        }
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Progress>();
    }

    #[test]
    fn plain_prints_start_periodic_and_end_lines() {
        let out = Captured::default();
        let progress = Progress::plain_to(Box::new(out.clone()), Duration::ZERO);
        assert_eq!(progress.mode(), ProgressMode::Plain);
        let task = "DecollageImages(s1)";
        progress.task_started(task, 3);
        for item in ["a", "b", "c"] {
            progress.item_finished(task, item, true);
        }
        progress.task_finished(&report(task, TaskState::Ran, 3, 0));

        let lines = out.lines();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert_eq!(
            lines[0],
            "progress DecollageImages(s1): started, 3 items to do"
        );
        assert!(
            lines[1].starts_with("progress DecollageImages(s1): 1/3 items (33%), "),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("/s, ETA "), "{}", lines[1]);
        assert!(lines[2].starts_with("progress DecollageImages(s1): 2/3 items (66%), "));
        assert_eq!(
            lines[3],
            "progress DecollageImages(s1): done, 3 items in 5.6 s"
        );
    }

    #[test]
    fn plain_respects_the_interval_and_tells_failures() {
        let out = Captured::default();
        let progress = Progress::plain_to(Box::new(out.clone()), Duration::from_secs(3600));
        let task = "UploadToS3(s1)";
        progress.task_started(task, 5);
        for i in 0..5 {
            progress.item_finished(task, &i.to_string(), i != 2);
        }
        progress.task_finished(&report(task, TaskState::Failed, 4, 1));
        let lines = out.lines();
        assert_eq!(
            lines,
            [
                "progress UploadToS3(s1): started, 5 items to do",
                "progress UploadToS3(s1): failed in 5.6 s: 4 of 5 items done, 1 failed",
            ]
        );
    }

    #[test]
    fn periodic_line_shows_failures_and_eta() {
        let line = periodic_line("T(x)", 3, 9, 1, Duration::from_secs(3));
        assert_eq!(
            line,
            "progress T(x): 3/9 items (33%), 1.0/s, ETA 6 s, 1 failed"
        );
        assert_eq!(human_duration(Duration::from_millis(59_400)), "1 min 0 s");
        assert_eq!(human_duration(Duration::from_secs(7800)), "2 h 10 min");
    }

    #[test]
    fn tasks_without_items_print_nothing() {
        let out = Captured::default();
        let progress = Progress::plain_to(Box::new(out.clone()), Duration::ZERO);
        progress.task_started("ReadMetadata(s1)", 0);
        progress.task_finished(&report("ReadMetadata(s1)", TaskState::Ran, 0, 0));
        progress.task_finished(&report(
            "FlowCamPipeline(s1)",
            TaskState::AlreadyComplete,
            0,
            0,
        ));
        assert!(out.lines().is_empty());
    }

    #[test]
    fn counts_are_right_under_concurrent_items() {
        let out = Captured::default();
        let progress = Arc::new(Progress::plain_to(Box::new(out.clone()), Duration::ZERO));
        let threads = 16;
        let per_thread = 500;
        let total = threads * per_thread;
        progress.task_started("A(s1)", total);
        progress.task_started("B(s2)", total);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let progress = &progress;
                scope.spawn(move || {
                    for i in 0..per_thread {
                        let ok = i % 10 != 0;
                        progress.item_finished("A(s1)", "item", ok);
                        progress.item_finished("B(s2)", "item", true);
                        progress.item_finished("unknown", "item", true);
                    }
                });
            }
        });
        assert_eq!(progress.counts("A(s1)"), Some((total, total / 10)));
        assert_eq!(progress.counts("B(s2)"), Some((total, 0)));
        // Lines written from many threads stay whole.
        for line in out.lines() {
            assert!(line.starts_with("progress "), "{line}");
            assert!(
                line.ends_with("items to do") || line.contains("/s, ETA "),
                "{line}"
            );
        }
        progress.task_finished(&report("A(s1)", TaskState::Failed, total - total / 10, 0));
        assert_eq!(progress.counts("A(s1)"), None);
    }

    #[test]
    fn bars_follow_tasks_and_go_away() {
        let progress = Progress::bars_to(ProgressDrawTarget::hidden());
        assert_eq!(progress.mode(), ProgressMode::Bars);
        progress.task_started("DecollageImages(s1)", 4);
        progress.task_started("DecollageImages(s2)", 2);
        progress.task_started("ReadMetadata(s1)", 0);
        assert!(progress.tracked("ReadMetadata(s1)").is_none());
        for _ in 0..3 {
            progress.item_finished("DecollageImages(s1)", "x", true);
        }
        progress.item_finished("DecollageImages(s2)", "x", false);
        let bar = progress
            .tracked("DecollageImages(s1)")
            .unwrap()
            .bar
            .clone()
            .unwrap();
        assert_eq!((bar.position(), bar.length()), (3, Some(4)));
        let bar2 = progress
            .tracked("DecollageImages(s2)")
            .unwrap()
            .bar
            .clone()
            .unwrap();
        assert_eq!(bar2.message(), "DecollageImages(s2) (1 failed)");
        progress.task_finished(&report("DecollageImages(s1)", TaskState::Ran, 4, 0));
        assert!(bar.is_finished());
        assert!(progress.tracked("DecollageImages(s1)").is_none());
        drop(progress);
        assert!(bar2.is_finished());
    }

    #[test]
    fn off_prints_nothing() {
        let progress = Progress::new(ProgressMode::Off);
        assert_eq!(progress.mode(), ProgressMode::Off);
        progress.task_started("T", 5);
        progress.item_finished("T", "a", true);
        progress.task_finished(&report("T", TaskState::Ran, 1, 0));
        assert!(progress.tracked("T").is_none());
    }

    #[test]
    fn quiet_resolves_to_off() {
        for mode in [
            ProgressMode::Auto,
            ProgressMode::Bars,
            ProgressMode::Plain,
            ProgressMode::Off,
        ] {
            assert_eq!(mode.resolve(true), ProgressMode::Off);
        }
        assert_eq!(ProgressMode::Plain.resolve(false), ProgressMode::Plain);
        assert_eq!(ProgressMode::Bars.resolve(false), ProgressMode::Bars);
        assert_ne!(ProgressMode::Auto.resolve(false), ProgressMode::Auto);
    }
}

//! The task engine on toy tasks: freshness, failure, per-item resume, panics, force, cycles,
//! the workspace lock and staged writes. Nothing here knows about FlowCam.

use flowcam_pipeline::engine::atomic::{is_temp_name, temp_path};
use flowcam_pipeline::engine::stamp::{item_marker_dir, stamp_path};
use flowcam_pipeline::engine::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const V1: &str = "1.0.0-test";
const V2: &str = "2.0.0-test";

fn runner() -> Runner {
    Runner::new(V1, 4)
}

fn count(counter: &Arc<AtomicUsize>) -> usize {
    counter.load(SeqCst)
}

/// Every `.NAME.partial` temporary left anywhere under `dir`.
fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if is_temp_name(&entry.file_name().to_string_lossy()) {
                found.push(path);
            }
        }
    }
    found
}

fn state_of(report: &RunReport, name: &str) -> TaskState {
    report
        .task(name)
        .unwrap_or_else(|| panic!("no task {name} in report"))
        .state
}

fn reason_of(report: &RunReport, name: &str) -> String {
    report
        .task(name)
        .and_then(|t| t.reason.clone())
        .unwrap_or_default()
}

fn freshness_of(states: &[(TaskRef, Freshness)], id: &str) -> Freshness {
    states
        .iter()
        .find(|(t, _)| t.id() == id)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| panic!("no task {id} in status"))
}

/// Rewrites a file with different content and a different size, so the change is visible
/// whatever the timestamp resolution of the filesystem.
fn rewrite(path: &Path, text: &str) {
    let old = fs::read_to_string(path).unwrap();
    assert_ne!(old.len(), text.len(), "test must change the size");
    fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------------------------------
// A chain: Transform (A) copies an input with a parameter-dependent transform, Summary (B)
// requires A and reads its output.

struct Transform {
    input: PathBuf,
    output: PathBuf,
    state: PathBuf,
    mode: String,
    runs: Arc<AtomicUsize>,
}

impl Task for Transform {
    fn name(&self) -> &'static str {
        "Transform"
    }
    fn parameters(&self) -> Parameters {
        Parameters::from([("mode".to_string(), self.mode.clone())])
    }
    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(vec![self.input.clone()])
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }
    fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }
    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(TransformPlan(self)))
    }
}

struct TransformPlan<'a>(&'a Transform);

impl Plan for TransformPlan<'_> {
    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        let task = self.0;
        task.runs.fetch_add(1, SeqCst);
        let text = fs::read_to_string(&task.input)?;
        let text = match task.mode.as_str() {
            "upper" => text.to_uppercase(),
            "lower" => text.to_lowercase(),
            other => anyhow::bail!("unknown mode {other}"),
        };
        out.write(&task.output, text.as_bytes())?;
        Ok(())
    }
}

struct Summary {
    requirement: TaskRef,
    input: PathBuf,
    output: PathBuf,
    state: PathBuf,
    runs: Arc<AtomicUsize>,
}

impl Task for Summary {
    fn name(&self) -> &'static str {
        "Summary"
    }
    fn requires(&self) -> Vec<TaskRef> {
        vec![self.requirement.clone()]
    }
    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(vec![self.input.clone()])
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }
    fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }
    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(SummaryPlan(self)))
    }
}

struct SummaryPlan<'a>(&'a Summary);

impl Plan for SummaryPlan<'_> {
    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        let task = self.0;
        task.runs.fetch_add(1, SeqCst);
        let text = fs::read_to_string(&task.input)?;
        out.write(&task.output, summary_text(&text).as_bytes())?;
        Ok(())
    }
}

fn summary_text(text: &str) -> String {
    format!("{} bytes: {}", text.len(), text.trim())
}

/// The files and counters of one A -> B chain under a folder.
struct Chain {
    root: PathBuf,
    a_runs: Arc<AtomicUsize>,
    b_runs: Arc<AtomicUsize>,
}

impl Chain {
    fn new(root: &Path) -> Chain {
        let chain = Chain {
            root: root.to_path_buf(),
            a_runs: Arc::default(),
            b_runs: Arc::default(),
        };
        fs::create_dir_all(chain.input().parent().unwrap()).unwrap();
        fs::write(chain.input(), "Hello World\n").unwrap();
        chain
    }
    fn input(&self) -> PathBuf {
        self.root.join("in/source.txt")
    }
    fn out_a(&self) -> PathBuf {
        self.root.join("out/a.txt")
    }
    fn out_b(&self) -> PathBuf {
        self.root.join("out/b.txt")
    }
    fn state(&self) -> PathBuf {
        self.root.join(".state")
    }
    fn a(&self, mode: &str) -> TaskRef {
        Arc::new(Transform {
            input: self.input(),
            output: self.out_a(),
            state: self.state(),
            mode: mode.to_string(),
            runs: self.a_runs.clone(),
        })
    }
    /// B, requiring A, as the root of the graph.
    fn graph(&self, mode: &str) -> TaskRef {
        Arc::new(Summary {
            requirement: self.a(mode),
            input: self.out_a(),
            output: self.out_b(),
            state: self.state(),
            runs: self.b_runs.clone(),
        })
    }
}

#[test]
fn chain_runs_once_then_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    let root = chain.graph("upper");
    let runner = runner();

    let first = runner.run(&root).unwrap();
    assert!(first.succeeded(), "{}", first.summary());
    let ids: Vec<&str> = first.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["Transform", "Summary"], "requirements run first");
    assert_eq!(state_of(&first, "Transform"), TaskState::Ran);
    assert_eq!(state_of(&first, "Summary"), TaskState::Ran);
    assert_eq!(reason_of(&first, "Transform"), "it has not run before");
    assert_eq!(fs::read_to_string(chain.out_a()).unwrap(), "HELLO WORLD\n");
    assert_eq!(
        fs::read_to_string(chain.out_b()).unwrap(),
        summary_text("HELLO WORLD\n")
    );
    assert!(stamp_path(chain.a("upper").as_ref()).is_file());
    assert!(stamp_path(root.as_ref()).is_file());
    assert_eq!((count(&chain.a_runs), count(&chain.b_runs)), (1, 1));
    assert!(partials(tmp.path()).is_empty());

    let status = runner.status(&root).unwrap();
    assert_eq!(freshness_of(&status, "Transform"), Freshness::Complete);
    assert_eq!(freshness_of(&status, "Summary"), Freshness::Complete);

    // A fresh runner and freshly built tasks: completeness lives on disk only.
    let second = Runner::new(V1, 1).run(&chain.graph("upper")).unwrap();
    assert!(second.succeeded());
    assert!(!second.did_work(), "{}", second.summary());
    assert_eq!(state_of(&second, "Transform"), TaskState::AlreadyComplete);
    assert_eq!(state_of(&second, "Summary"), TaskState::AlreadyComplete);
    assert_eq!((count(&chain.a_runs), count(&chain.b_runs)), (1, 1));
}

#[test]
fn changed_input_makes_the_chain_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    let runner = runner();
    assert!(runner.run(&chain.graph("upper")).unwrap().succeeded());

    rewrite(&chain.input(), "Goodbye, cruel World\n");
    let root = chain.graph("upper");

    let status = runner.status(&root).unwrap();
    match freshness_of(&status, "Transform") {
        Freshness::Stale(why) => {
            assert!(why.contains(&*chain.input().to_string_lossy()), "{why}");
            assert!(why.contains("changed"), "{why}");
        }
        other => panic!("Transform should be stale, is {other:?}"),
    }
    match freshness_of(&status, "Summary") {
        Freshness::Stale(why) => {
            assert!(why.contains("requirement Transform"), "{why}");
            assert!(why.contains("not complete"), "{why}");
        }
        other => panic!("Summary should be stale, is {other:?}"),
    }

    let report = runner.run(&root).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(state_of(&report, "Transform"), TaskState::Ran);
    assert_eq!(state_of(&report, "Summary"), TaskState::Ran);
    let why_a = reason_of(&report, "Transform");
    assert!(why_a.contains("source.txt"), "{why_a}");
    // B sees its own input (A's output) changed.
    let why_b = reason_of(&report, "Summary");
    assert!(why_b.contains("a.txt"), "{why_b}");
    assert_eq!((count(&chain.a_runs), count(&chain.b_runs)), (2, 2));
    assert_eq!(
        fs::read_to_string(chain.out_a()).unwrap(),
        "GOODBYE, CRUEL WORLD\n"
    );
    assert_eq!(
        fs::read_to_string(chain.out_b()).unwrap(),
        summary_text("GOODBYE, CRUEL WORLD\n")
    );

    let again = runner.run(&root).unwrap();
    assert!(!again.did_work(), "{}", again.summary());
}

#[test]
fn changed_parameter_makes_the_chain_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    let runner = runner();
    assert!(runner.run(&chain.graph("upper")).unwrap().succeeded());

    let root = chain.graph("lower");
    let status = runner.status(&root).unwrap();
    assert!(
        matches!(freshness_of(&status, "Transform"), Freshness::Stale(ref w) if w.contains("mode")),
        "{:?}",
        freshness_of(&status, "Transform")
    );
    assert!(matches!(
        freshness_of(&status, "Summary"),
        Freshness::Stale(_)
    ));

    let report = runner.run(&root).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(state_of(&report, "Transform"), TaskState::Ran);
    assert_eq!(state_of(&report, "Summary"), TaskState::Ran);
    let why = reason_of(&report, "Transform");
    assert!(why.contains("parameter mode changed"), "{why}");
    assert!(
        why.contains("\"upper\"") && why.contains("\"lower\""),
        "{why}"
    );
    assert_eq!((count(&chain.a_runs), count(&chain.b_runs)), (2, 2));
    assert_eq!(fs::read_to_string(chain.out_a()).unwrap(), "hello world\n");
    assert_eq!(
        fs::read_to_string(chain.out_b()).unwrap(),
        summary_text("hello world\n")
    );

    // Going back is a change too.
    let back = runner.run(&chain.graph("upper")).unwrap();
    assert_eq!(state_of(&back, "Transform"), TaskState::Ran);
    assert_eq!(state_of(&back, "Summary"), TaskState::Ran);
    assert_eq!(fs::read_to_string(chain.out_a()).unwrap(), "HELLO WORLD\n");
}

#[test]
fn changed_tool_version_makes_tasks_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    assert!(runner().run(&chain.graph("upper")).unwrap().succeeded());

    let newer = Runner::new(V2, 2);
    let root = chain.graph("upper");
    for (task, freshness) in newer.status(&root).unwrap() {
        match freshness {
            Freshness::Stale(why) => assert!(why.contains("tool version changed"), "{why}"),
            other => panic!("{} should be stale, is {other:?}", task.id()),
        }
    }
    let report = newer.run(&root).unwrap();
    assert!(report.succeeded());
    assert_eq!(report.tool_version, V2);
    for name in ["Transform", "Summary"] {
        assert_eq!(state_of(&report, name), TaskState::Ran);
        let why = reason_of(&report, name);
        assert!(why.contains(&format!("({V1} -> {V2})")), "{why}");
    }
    assert_eq!((count(&chain.a_runs), count(&chain.b_runs)), (2, 2));
    assert!(!newer.run(&root).unwrap().did_work());
    // The old version now sees the new stamps as stale.
    assert_eq!(
        state_of(&runner().run(&root).unwrap(), "Transform"),
        TaskState::Ran
    );
}

// ---------------------------------------------------------------------------------------
// Failure isolation: Node tasks write out/NAME.txt and can fail in finish.

struct Node {
    name: &'static str,
    root: PathBuf,
    requires: Vec<TaskRef>,
    fail: bool,
    runs: Arc<AtomicUsize>,
}

impl Node {
    fn output(&self) -> PathBuf {
        self.root.join(format!("out/{}.txt", self.name))
    }
}

impl Task for Node {
    fn name(&self) -> &'static str {
        self.name
    }
    fn requires(&self) -> Vec<TaskRef> {
        self.requires.clone()
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output()]
    }
    fn state_dir(&self) -> PathBuf {
        self.root.join(".state")
    }
    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        Ok(Box::new(NodePlan(self)))
    }
}

struct NodePlan<'a>(&'a Node);

impl Plan for NodePlan<'_> {
    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        let node = self.0;
        node.runs.fetch_add(1, SeqCst);
        // Stage the output first, so a failure has a temporary to clean up.
        out.write(node.output(), node.name.as_bytes())?;
        if node.fail {
            anyhow::bail!("disk quota exceeded while finishing {}", node.name);
        }
        Ok(())
    }
}

/// A task with no targets: complete when its requirements are.
struct Wrapper {
    root: PathBuf,
    requires: Vec<TaskRef>,
}

impl Task for Wrapper {
    fn name(&self) -> &'static str {
        "All"
    }
    fn requires(&self) -> Vec<TaskRef> {
        self.requires.clone()
    }
    fn outputs(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn state_dir(&self) -> PathBuf {
        self.root.join(".state")
    }
}

#[test]
fn a_failed_task_blocks_its_dependants_but_not_an_independent_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let root_dir = tmp.path().to_path_buf();
    let bad_runs = Arc::new(AtomicUsize::new(0));
    let dep_runs = Arc::new(AtomicUsize::new(0));
    let good_runs = Arc::new(AtomicUsize::new(0));
    let graph = |fail: bool| -> (TaskRef, TaskRef) {
        let bad: TaskRef = Arc::new(Node {
            name: "Bad",
            root: root_dir.clone(),
            requires: vec![],
            fail,
            runs: bad_runs.clone(),
        });
        let dep: TaskRef = Arc::new(Node {
            name: "Dependant",
            root: root_dir.clone(),
            requires: vec![bad.clone()],
            fail: false,
            runs: dep_runs.clone(),
        });
        let good: TaskRef = Arc::new(Node {
            name: "Good",
            root: root_dir.clone(),
            requires: vec![],
            fail: false,
            runs: good_runs.clone(),
        });
        let all: TaskRef = Arc::new(Wrapper {
            root: root_dir.clone(),
            requires: vec![dep, good],
        });
        (all, bad)
    };
    let runner = runner();

    let (root, bad) = graph(true);
    let report = runner.run(&root).unwrap();
    assert!(!report.succeeded(), "{}", report.summary());
    assert!(report.did_work());

    let failed = report.task("Bad").unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.errors.len(), 1, "{:?}", failed.errors);
    assert!(
        failed.errors[0].contains("disk quota exceeded while finishing Bad"),
        "{:?}",
        failed.errors
    );
    assert!(
        !stamp_path(bad.as_ref()).exists(),
        "a failed task has no stamp"
    );
    assert!(!root_dir.join("out/Bad.txt").exists());
    assert!(partials(&root_dir).is_empty(), "{:?}", partials(&root_dir));

    assert_eq!(state_of(&report, "Dependant"), TaskState::Blocked);
    assert!(reason_of(&report, "Dependant").contains("Bad"));
    assert_eq!(count(&dep_runs), 0, "a blocked task is not attempted");
    assert_eq!(state_of(&report, "All"), TaskState::Blocked);

    assert_eq!(state_of(&report, "Good"), TaskState::Ran);
    assert_eq!(
        fs::read_to_string(root_dir.join("out/Good.txt")).unwrap(),
        "Good"
    );
    assert_eq!(count(&good_runs), 1);

    let summary = report.summary();
    assert!(summary.contains("disk quota exceeded"), "{summary}");
    assert!(summary.contains("were failed tasks"), "{summary}");

    // Fixed: the failed branch runs, the good one is left alone.
    let (root, bad) = graph(false);
    let report = runner.run(&root).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(state_of(&report, "Bad"), TaskState::Ran);
    assert_eq!(state_of(&report, "Dependant"), TaskState::Ran);
    assert_eq!(state_of(&report, "Good"), TaskState::AlreadyComplete);
    assert!(stamp_path(bad.as_ref()).is_file());
    assert_eq!(
        (count(&bad_runs), count(&dep_runs), count(&good_runs)),
        (2, 1, 1)
    );
}

#[test]
fn a_missing_input_fails_the_task_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    fs::remove_file(chain.input()).unwrap();
    let report = runner().run(&chain.graph("upper")).unwrap();
    assert_eq!(state_of(&report, "Transform"), TaskState::Failed);
    let errors = &report.task("Transform").unwrap().errors;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("source.txt") && e.contains("missing")),
        "{errors:?}"
    );
    assert_eq!(state_of(&report, "Summary"), TaskState::Blocked);
    assert_eq!(count(&chain.a_runs), 0);
}

// ---------------------------------------------------------------------------------------
// Per-item work: Batch reads in/list.txt (lines "KEY VALUE"); each item reads in/KEY.txt and
// writes out/KEY.txt = "VALUE:CONTENT" through Staging; finish writes out/manifest.txt.

const KEYS: [&str; 6] = ["item-1", "item-2", "item-3", "item-4", "item-5", "item-6"];

struct Batch {
    root: PathBuf,
    /// Items whose run_item stages its output and then returns an error.
    fail: Option<&'static str>,
    /// Items whose run_item stages its output and then panics.
    panic: Option<&'static str>,
    calls: Arc<Mutex<Vec<String>>>,
    /// Set by the first item that runs: a signal arriving mid-run.
    stop: Option<Arc<AtomicBool>>,
}

impl Batch {
    fn list(&self) -> PathBuf {
        self.root.join("in/list.txt")
    }
    fn item_input(&self, key: &str) -> PathBuf {
        self.root.join(format!("in/{key}.txt"))
    }
    fn item_output(&self, key: &str) -> PathBuf {
        self.root.join(format!("out/{key}.txt"))
    }
    fn manifest(&self) -> PathBuf {
        self.root.join("out/manifest.txt")
    }
}

impl Task for Batch {
    fn name(&self) -> &'static str {
        "Batch"
    }
    fn parameters(&self) -> Parameters {
        Parameters::from([("format".to_string(), "v1".to_string())])
    }
    fn inputs(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(vec![self.list()])
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.manifest()]
    }
    fn state_dir(&self) -> PathBuf {
        self.root.join(".state")
    }
    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        let entries = fs::read_to_string(self.list())?
            .lines()
            .map(|line| {
                let (key, value) = line.split_once(' ').expect("KEY VALUE");
                (key.to_string(), value.to_string())
            })
            .collect();
        Ok(Box::new(BatchPlan {
            task: self,
            entries,
        }))
    }
}

struct BatchPlan<'a> {
    task: &'a Batch,
    entries: Vec<(String, String)>,
}

impl Plan for BatchPlan<'_> {
    fn items(&self) -> Vec<Item> {
        self.entries
            .iter()
            .map(|(key, value)| Item {
                key: key.clone(),
                inputs: vec![self.task.item_input(key)],
                fingerprint: value.clone(),
            })
            .collect()
    }

    fn run_item(&self, index: usize, out: &mut Staging) -> anyhow::Result<()> {
        let task = self.task;
        let (key, value) = &self.entries[index];
        task.calls.lock().unwrap().push(key.clone());
        let content = fs::read_to_string(task.item_input(key))?;
        out.write(
            task.item_output(key),
            format!("{value}:{content}").as_bytes(),
        )?;
        if task.fail == Some(key.as_str()) {
            anyhow::bail!("corrupt page");
        }
        if task.panic == Some(key.as_str()) {
            panic!("simulated crash in {key}");
        }
        if let Some(stop) = &task.stop {
            stop.store(true, SeqCst);
        }
        Ok(())
    }

    fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
        let keys: Vec<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        out.write(self.task.manifest(), keys.join("\n").as_bytes())?;
        Ok(())
    }
}

/// The input files of a six-item batch and a log of run_item calls.
struct BatchFixture {
    root: PathBuf,
    calls: Arc<Mutex<Vec<String>>>,
}

impl BatchFixture {
    fn new(root: &Path) -> BatchFixture {
        let fixture = BatchFixture {
            root: root.to_path_buf(),
            calls: Arc::default(),
        };
        let probe = fixture.task(None, None);
        fs::create_dir_all(root.join("in")).unwrap();
        let list: Vec<String> = KEYS
            .iter()
            .enumerate()
            .map(|(i, key)| format!("{key} value{i}"))
            .collect();
        fs::write(probe.list(), list.join("\n")).unwrap();
        for key in KEYS {
            fs::write(probe.item_input(key), format!("content of {key}")).unwrap();
        }
        fixture
    }

    fn task(&self, fail: Option<&'static str>, panic: Option<&'static str>) -> Batch {
        Batch {
            root: self.root.clone(),
            fail,
            panic,
            calls: self.calls.clone(),
            stop: None,
        }
    }

    fn graph(&self) -> TaskRef {
        Arc::new(self.task(None, None))
    }

    /// The keys run_item was called for since the last call, sorted.
    fn take_calls(&self) -> Vec<String> {
        let mut calls = std::mem::take(&mut *self.calls.lock().unwrap());
        calls.sort();
        calls
    }

    fn markers(&self) -> usize {
        fs::read_dir(item_marker_dir(&self.task(None, None)))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

#[test]
fn a_failed_item_is_the_only_one_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = BatchFixture::new(tmp.path());
    let runner = runner();

    let failing: TaskRef = Arc::new(batch.task(Some("item-3"), None));
    let report = runner.run(&failing).unwrap();
    assert!(!report.succeeded());
    let task = report.task("Batch").unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.errors.len(), 1, "{:?}", task.errors);
    assert!(task.errors[0].starts_with("item-3: "), "{:?}", task.errors);
    assert!(task.errors[0].contains("corrupt page"), "{:?}", task.errors);
    assert_eq!(
        (
            task.items.total,
            task.items.ran,
            task.items.failed,
            task.items.skipped
        ),
        (6, 5, 1, 0)
    );
    assert_eq!(batch.take_calls(), KEYS);

    let probe = batch.task(None, None);
    for (i, key) in KEYS.iter().enumerate() {
        let out = probe.item_output(key);
        if *key == "item-3" {
            assert!(!out.exists(), "failed item's output exists");
            assert!(!temp_path(&out).exists());
        } else {
            assert_eq!(
                fs::read_to_string(&out).unwrap(),
                format!("value{i}:content of {key}")
            );
        }
    }
    assert!(
        partials(tmp.path()).is_empty(),
        "{:?}",
        partials(tmp.path())
    );
    assert!(!probe.manifest().exists(), "finish must not run");
    assert!(!stamp_path(&probe).exists());
    assert_eq!(batch.markers(), 5, "good items keep their markers");

    // Cause fixed: only item-3 runs.
    let report = runner.run(&batch.graph()).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    let task = report.task("Batch").unwrap();
    assert_eq!(task.state, TaskState::Ran);
    assert_eq!(
        (
            task.items.total,
            task.items.ran,
            task.items.failed,
            task.items.skipped
        ),
        (6, 1, 0, 5)
    );
    assert_eq!(batch.take_calls(), ["item-3"]);
    assert_eq!(
        fs::read_to_string(probe.item_output("item-3")).unwrap(),
        "value2:content of item-3"
    );
    assert_eq!(
        fs::read_to_string(probe.manifest()).unwrap(),
        KEYS.join("\n")
    );
    assert!(stamp_path(&probe).is_file());
    assert_eq!(batch.markers(), 6);

    let report = runner.run(&batch.graph()).unwrap();
    assert_eq!(state_of(&report, "Batch"), TaskState::AlreadyComplete);
    assert!(batch.take_calls().is_empty());
}

#[test]
fn a_changed_item_fingerprint_or_input_reruns_only_that_item() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = BatchFixture::new(tmp.path());
    let probe = batch.task(None, None);
    let runner = runner();
    assert!(runner.run(&batch.graph()).unwrap().succeeded());
    assert_eq!(batch.take_calls().len(), 6);

    // The fingerprint of item-2 comes from the list: change just its line.
    let list = fs::read_to_string(probe.list()).unwrap();
    rewrite(&probe.list(), &list.replace("value1", "value1-revised"));
    let report = runner.run(&batch.graph()).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    let task = report.task("Batch").unwrap();
    assert_eq!(task.state, TaskState::Ran);
    assert!(
        task.reason.as_deref().unwrap().contains("list.txt"),
        "{task:?}"
    );
    assert_eq!((task.items.ran, task.items.skipped), (1, 5));
    assert_eq!(batch.take_calls(), ["item-2"]);
    assert_eq!(
        fs::read_to_string(probe.item_output("item-2")).unwrap(),
        "value1-revised:content of item-2"
    );

    // An item's own input file.
    rewrite(&probe.item_input("item-5"), "new content of item-5");
    let report = runner.run(&batch.graph()).unwrap();
    let task = report.task("Batch").unwrap();
    assert_eq!(task.state, TaskState::Ran);
    assert!(
        task.reason.as_deref().unwrap().contains("item-5.txt"),
        "{task:?}"
    );
    assert_eq!((task.items.ran, task.items.skipped), (1, 5));
    assert_eq!(batch.take_calls(), ["item-5"]);
    assert_eq!(
        fs::read_to_string(probe.item_output("item-5")).unwrap(),
        "value4:new content of item-5"
    );

    // An item's output deleted behind the engine's back: its marker no longer vouches.
    fs::remove_file(probe.item_output("item-6")).unwrap();
    rewrite(&probe.item_input("item-1"), "changed item-1");
    let report = runner.run(&batch.graph()).unwrap();
    let task = report.task("Batch").unwrap();
    assert_eq!((task.items.ran, task.items.skipped), (2, 4));
    assert_eq!(batch.take_calls(), ["item-1", "item-6"]);
    assert!(probe.item_output("item-6").is_file());

    assert!(!runner.run(&batch.graph()).unwrap().did_work());
}

#[test]
fn force_reruns_every_task_and_item() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(&tmp.path().join("chain"));
    let batch = BatchFixture::new(&tmp.path().join("batch"));
    let graph = || -> TaskRef {
        Arc::new(Wrapper {
            root: tmp.path().to_path_buf(),
            requires: vec![chain.graph("upper"), batch.graph()],
        })
    };
    assert!(runner().run(&graph()).unwrap().succeeded());
    batch.take_calls();
    assert!(!runner().run(&graph()).unwrap().did_work());

    let report = runner().force(true).run(&graph()).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    for name in ["Transform", "Summary", "Batch", "All"] {
        assert_eq!(state_of(&report, name), TaskState::Ran, "{name}");
    }
    for name in ["Transform", "Summary", "Batch"] {
        assert_eq!(reason_of(&report, name), "--force", "{name}");
    }
    let items = &report.task("Batch").unwrap().items;
    assert_eq!((items.total, items.ran, items.skipped), (6, 6, 0));
    assert_eq!(batch.take_calls(), KEYS);
    assert_eq!((count(&chain.a_runs), count(&chain.b_runs)), (2, 2));

    // Forcing does not leave anything stale behind.
    assert!(!runner().run(&graph()).unwrap().did_work());
}

// ---------------------------------------------------------------------------------------
// Cycles.

struct Cyclic {
    name: &'static str,
    root: PathBuf,
    prepared: Arc<AtomicUsize>,
}

impl Task for Cyclic {
    fn name(&self) -> &'static str {
        self.name
    }
    fn requires(&self) -> Vec<TaskRef> {
        // P -> Q -> R -> Q, built lazily as a real task would.
        let next = match self.name {
            "P" => "Q",
            "Q" => "R",
            _ => "Q",
        };
        vec![Arc::new(Cyclic {
            name: next,
            root: self.root.clone(),
            prepared: self.prepared.clone(),
        })]
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.root.join(self.name)]
    }
    fn state_dir(&self) -> PathBuf {
        self.root.join(".state")
    }
    fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
        self.prepared.fetch_add(1, SeqCst);
        Ok(Box::new(NoWork))
    }
}

#[test]
fn a_cycle_is_reported_with_its_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let prepared = Arc::new(AtomicUsize::new(0));
    let root: TaskRef = Arc::new(Cyclic {
        name: "P",
        root: tmp.path().to_path_buf(),
        prepared: prepared.clone(),
    });
    match runner().run(&root) {
        Err(GraphError::Cycle(ids)) => {
            assert_eq!(ids, ["Q", "R", "Q"]);
            let message = GraphError::Cycle(ids).to_string();
            assert_eq!(message, "dependency cycle: Q -> R -> Q");
        }
        Ok(report) => panic!("expected a cycle, ran:\n{}", report.summary()),
        Err(other) => panic!("expected a cycle, got {other}"),
    }
    assert!(matches!(runner().status(&root), Err(GraphError::Cycle(_))));
    assert_eq!(count(&prepared), 0, "nothing runs when the graph is cyclic");
}

#[test]
fn a_task_requiring_itself_is_a_cycle() {
    struct Selfish(PathBuf);
    impl Task for Selfish {
        fn name(&self) -> &'static str {
            "Selfish"
        }
        fn requires(&self) -> Vec<TaskRef> {
            vec![Arc::new(Selfish(self.0.clone()))]
        }
        fn outputs(&self) -> Vec<PathBuf> {
            vec![self.0.join("x")]
        }
        fn state_dir(&self) -> PathBuf {
            self.0.clone()
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let root: TaskRef = Arc::new(Selfish(tmp.path().to_path_buf()));
    match Runner::graph(&root) {
        Err(GraphError::Cycle(ids)) => assert_eq!(ids, ["Selfish", "Selfish"]),
        Ok(_) => panic!("expected a cycle"),
        Err(other) => panic!("expected a cycle, got {other}"),
    }
}

#[test]
fn a_diamond_runs_its_shared_requirement_once() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let node = |name: &'static str, requires: Vec<TaskRef>| -> TaskRef {
        Arc::new(Node {
            name,
            root: tmp.path().to_path_buf(),
            requires,
            fail: false,
            runs: runs.clone(),
        })
    };
    // Two distinct Arcs with the same id are the same task.
    let left = node("Left", vec![node("Base", vec![])]);
    let right = node("Right", vec![node("Base", vec![])]);
    let top = node("Top", vec![left, right]);
    let report = runner().run(&top).unwrap();
    let ids: Vec<&str> = report.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["Base", "Left", "Right", "Top"]);
    assert_eq!(count(&runs), 4);
}

// ---------------------------------------------------------------------------------------
// Crashes and missing stamps.

#[test]
fn a_panicking_item_fails_the_task_and_resume_runs_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = BatchFixture::new(tmp.path());
    let probe = batch.task(None, None);
    let runner = runner();

    let crashing: TaskRef = Arc::new(batch.task(None, Some("item-4")));
    let report = runner.run(&crashing).unwrap();
    assert!(!report.succeeded());
    let task = report.task("Batch").unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.errors.len(), 1, "{:?}", task.errors);
    let error = &task.errors[0];
    assert!(error.starts_with("item-4: "), "{error}");
    assert!(error.contains("panic"), "{error}");
    assert!(error.contains("simulated crash in item-4"), "{error}");
    assert_eq!((task.items.ran, task.items.failed), (5, 1));
    assert!(!stamp_path(&probe).exists(), "a crashed task has no stamp");
    assert!(!probe.item_output("item-4").exists());
    assert!(
        partials(tmp.path()).is_empty(),
        "{:?}",
        partials(tmp.path())
    );
    assert!(matches!(
        runner.status(&batch.graph()).unwrap()[0].1,
        Freshness::Missing
    ));
    batch.take_calls();

    let report = runner.run(&batch.graph()).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    let task = report.task("Batch").unwrap();
    assert_eq!((task.items.ran, task.items.skipped), (1, 5));
    assert_eq!(batch.take_calls(), ["item-4"]);
    assert!(stamp_path(&probe).is_file());
}

#[test]
fn a_panic_in_prepare_or_finish_fails_only_that_task() {
    struct Crashy {
        name: &'static str,
        root: PathBuf,
        in_prepare: bool,
    }
    struct CrashyPlan<'a>(&'a Crashy);
    impl Task for Crashy {
        fn name(&self) -> &'static str {
            self.name
        }
        fn outputs(&self) -> Vec<PathBuf> {
            vec![self.root.join(format!("out/{}.txt", self.name))]
        }
        fn state_dir(&self) -> PathBuf {
            self.root.join(".state")
        }
        fn prepare(&self) -> anyhow::Result<Box<dyn Plan + '_>> {
            if self.in_prepare {
                panic!("simulated crash planning {}", self.name);
            }
            Ok(Box::new(CrashyPlan(self)))
        }
    }
    impl Plan for CrashyPlan<'_> {
        fn finish(&self, out: &mut Staging) -> anyhow::Result<()> {
            out.write(self.0.outputs()[0].clone(), b"half")?;
            panic!("simulated crash finishing {}", self.0.name);
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let good_runs = Arc::new(AtomicUsize::new(0));
    let crash_finish: TaskRef = Arc::new(Crashy {
        name: "CrashFinish",
        root: tmp.path().to_path_buf(),
        in_prepare: false,
    });
    let crash_prepare: TaskRef = Arc::new(Crashy {
        name: "CrashPrepare",
        root: tmp.path().to_path_buf(),
        in_prepare: true,
    });
    let good: TaskRef = Arc::new(Node {
        name: "Good",
        root: tmp.path().to_path_buf(),
        requires: vec![],
        fail: false,
        runs: good_runs.clone(),
    });
    let root: TaskRef = Arc::new(Wrapper {
        root: tmp.path().to_path_buf(),
        requires: vec![crash_finish.clone(), crash_prepare.clone(), good],
    });

    let report = runner()
        .run(&root)
        .expect("a panicking task must not abort the run");
    assert!(!report.succeeded());
    for (name, when) in [("CrashFinish", "finishing"), ("CrashPrepare", "planning")] {
        let task = report.task(name).unwrap();
        assert_eq!(task.state, TaskState::Failed, "{name}");
        assert!(
            task.errors
                .iter()
                .any(|e| e.contains("panic")
                    && e.contains(&format!("simulated crash {when} {name}"))),
            "{:?}",
            task.errors
        );
    }
    assert!(!stamp_path(crash_finish.as_ref()).exists());
    assert!(!stamp_path(crash_prepare.as_ref()).exists());
    assert!(!crash_finish.outputs()[0].exists());
    assert!(
        partials(tmp.path()).is_empty(),
        "{:?}",
        partials(tmp.path())
    );
    assert_eq!(state_of(&report, "Good"), TaskState::Ran);
    assert_eq!(count(&good_runs), 1);
    assert_eq!(state_of(&report, "All"), TaskState::Blocked);
}

#[test]
fn outputs_without_a_stamp_are_not_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    let runner = runner();
    assert!(runner.run(&chain.graph("upper")).unwrap().succeeded());

    // As if killed after writing A's output but before its stamp.
    let a = chain.a("upper");
    fs::remove_file(stamp_path(a.as_ref())).unwrap();
    assert!(chain.out_a().exists());
    let status = runner.status(&chain.graph("upper")).unwrap();
    assert_eq!(freshness_of(&status, "Transform"), Freshness::Missing);
    assert!(matches!(
        freshness_of(&status, "Summary"),
        Freshness::Stale(_)
    ));

    let report = runner.run(&chain.graph("upper")).unwrap();
    assert_eq!(state_of(&report, "Transform"), TaskState::Ran);
    assert_eq!(state_of(&report, "Summary"), TaskState::Ran);
    assert_eq!((count(&chain.a_runs), count(&chain.b_runs)), (2, 2));
}

#[test]
fn a_corrupt_stamp_is_stale_not_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    let runner = runner();
    assert!(runner.run(&chain.graph("upper")).unwrap().succeeded());
    let a = chain.a("upper");
    fs::write(stamp_path(a.as_ref()), b"{\"tool_version\": \"1.0").unwrap();
    let status = runner.status(&chain.graph("upper")).unwrap();
    assert!(
        matches!(freshness_of(&status, "Transform"), Freshness::Stale(ref w) if w.contains("unreadable")),
        "{status:?}",
        status = freshness_of(&status, "Transform")
    );
    let report = runner.run(&chain.graph("upper")).unwrap();
    assert_eq!(state_of(&report, "Transform"), TaskState::Ran);
}

#[test]
fn a_deleted_output_makes_its_task_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    let runner = runner();
    assert!(runner.run(&chain.graph("upper")).unwrap().succeeded());
    fs::remove_file(chain.out_b()).unwrap();
    let report = runner.run(&chain.graph("upper")).unwrap();
    assert_eq!(state_of(&report, "Transform"), TaskState::AlreadyComplete);
    assert_eq!(state_of(&report, "Summary"), TaskState::Ran);
    assert!(reason_of(&report, "Summary").contains("b.txt"));
    assert!(chain.out_b().is_file());
}

#[test]
fn a_failed_rerun_withdraws_the_old_stamp() {
    let tmp = tempfile::tempdir().unwrap();
    let root_dir = tmp.path().to_path_buf();
    let runs = Arc::new(AtomicUsize::new(0));
    let node = |fail: bool| -> TaskRef {
        Arc::new(Node {
            name: "Flaky",
            root: root_dir.clone(),
            requires: vec![],
            fail,
            runs: runs.clone(),
        })
    };
    assert!(runner().run(&node(false)).unwrap().succeeded());
    assert!(stamp_path(node(false).as_ref()).is_file());

    // A forced rerun fails halfway: the old stamp must not keep vouching for the outputs.
    let report = runner().force(true).run(&node(true)).unwrap();
    assert_eq!(state_of(&report, "Flaky"), TaskState::Failed);
    assert!(!stamp_path(node(false).as_ref()).exists());
    let status = runner().status(&node(false)).unwrap();
    assert_eq!(status[0].1, Freshness::Missing);
    let report = runner().run(&node(false)).unwrap();
    assert_eq!(state_of(&report, "Flaky"), TaskState::Ran);
    assert_eq!(count(&runs), 3);
}

// ---------------------------------------------------------------------------------------
// The workspace lock.

#[test]
fn the_workspace_lock_is_exclusive_and_names_its_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("session-out");
    let first = WorkspaceLock::acquire(&dir).unwrap();
    assert_eq!(first.path(), dir.join(WorkspaceLock::FILE_NAME));
    match WorkspaceLock::acquire(&dir) {
        Err(LockError::Held { holder, path }) => {
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
            assert_eq!(path, dir.join(".lock"));
        }
        other => panic!("expected Held, got {other:?}"),
    }
    drop(first);
    let again = WorkspaceLock::acquire(&dir).expect("free after release");
    drop(again);
    assert!(dir.join(".lock").exists(), "the lock file is never deleted");
}

const LOCK_CHILD_ENV: &str = "ENGINE_TEST_LOCK_CHILD_DIR";

/// Not a test: the child process of `a_killed_holder_does_not_leave_a_stale_lock`.
#[test]
#[ignore = "helper process, run by a_killed_holder_does_not_leave_a_stale_lock"]
fn lock_holder_child() {
    let Some(dir) = std::env::var_os(LOCK_CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _lock = WorkspaceLock::acquire(&dir).unwrap();
    fs::write(dir.join("ready"), std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_holder_does_not_leave_a_stale_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "lock_holder_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOCK_CHILD_ENV, &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("ready").exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("lock holder child did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = WorkspaceLock::acquire(&dir);
    let child_pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    match held {
        Err(LockError::Held { holder, .. }) => {
            assert!(holder.contains(&format!("pid {child_pid}")), "{holder}")
        }
        other => panic!("expected Held by the child, got {other:?}"),
    }
    WorkspaceLock::acquire(&dir).expect("a killed holder's lock is released");
}

// ---------------------------------------------------------------------------------------
// Staging.

#[test]
fn a_large_staging_batch_commits_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let n = FSYNC_EACH_LIMIT_PLUS;
    let targets: Vec<PathBuf> = (0..n)
        .map(|i| tmp.path().join(format!("d{}/f{i}.bin", i % 3)))
        .collect();
    // One target exists already and must be replaced.
    fs::create_dir_all(tmp.path().join("d0")).unwrap();
    fs::write(&targets[0], b"old").unwrap();

    let mut staging = Staging::new();
    for (i, target) in targets.iter().enumerate() {
        staging.write(target, &vec![i as u8; i + 1]).unwrap();
    }
    assert_eq!(staging.targets().count(), n);
    assert_eq!(
        fs::read(&targets[0]).unwrap(),
        b"old",
        "invisible before commit"
    );
    assert!(targets[1..].iter().all(|t| !t.exists()));
    assert_eq!(partials(tmp.path()).len(), n);

    let committed = staging.commit().unwrap();
    assert_eq!(committed, targets);
    for (i, target) in targets.iter().enumerate() {
        assert_eq!(fs::read(target).unwrap(), vec![i as u8; i + 1]);
    }
    assert!(
        partials(tmp.path()).is_empty(),
        "{:?}",
        partials(tmp.path())
    );
}

const FSYNC_EACH_LIMIT_PLUS: usize = flowcam_pipeline::engine::atomic::FSYNC_EACH_LIMIT + 5;

#[test]
fn dropping_an_uncommitted_staging_removes_its_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let existing = tmp.path().join("keep.txt");
    fs::write(&existing, b"original").unwrap();
    {
        let mut staging = Staging::new();
        staging.write(&existing, b"replacement").unwrap();
        for i in 0..FSYNC_EACH_LIMIT_PLUS {
            staging
                .write(tmp.path().join(format!("sub/{i}.txt")), b"x")
                .unwrap();
        }
        assert!(!staging.is_empty());
        assert_eq!(partials(tmp.path()).len(), FSYNC_EACH_LIMIT_PLUS + 1);
    }
    assert!(
        partials(tmp.path()).is_empty(),
        "{:?}",
        partials(tmp.path())
    );
    assert_eq!(fs::read(&existing).unwrap(), b"original");
    assert_eq!(fs::read_dir(tmp.path().join("sub")).unwrap().count(), 0);

    write_file(&existing, b"written").unwrap();
    assert_eq!(fs::read(&existing).unwrap(), b"written");
    assert!(partials(tmp.path()).is_empty());
}

#[test]
fn an_item_dropped_from_the_plan_takes_its_outputs_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = BatchFixture::new(tmp.path());
    let probe = batch.task(None, None);
    let runner = runner();
    assert!(runner.run(&batch.graph()).unwrap().succeeded());
    assert!(probe.item_output("item-4").exists());

    let list = fs::read_to_string(probe.list()).unwrap();
    let without: Vec<&str> = list.lines().filter(|l| !l.starts_with("item-4 ")).collect();
    rewrite(&probe.list(), &(without.join("\n") + "\n"));
    let report = runner.run(&batch.graph()).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(report.task("Batch").unwrap().items.total, 5);
    assert!(
        !probe.item_output("item-4").exists(),
        "orphan output removed"
    );
    assert!(probe.item_output("item-3").exists(), "others kept");
    assert_eq!(batch.take_calls().len(), 6, "nothing reran for the removal");
}

#[test]
fn staging_the_same_target_twice_commits_the_last_content_once() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("twice.txt");
    let mut staging = Staging::new();
    staging.write(&target, b"first").unwrap();
    staging.write(&target, b"second").unwrap();
    assert_eq!(staging.commit().unwrap(), vec![target.clone()]);
    assert_eq!(fs::read_to_string(&target).unwrap(), "second");
    assert!(partials(tmp.path()).is_empty());
}

#[test]
fn a_deleted_or_changed_item_output_makes_the_task_stale_and_reruns_only_its_item() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = BatchFixture::new(tmp.path());
    let probe = batch.task(None, None);
    let runner = runner();
    assert!(runner.run(&batch.graph()).unwrap().succeeded());
    batch.take_calls();

    fs::remove_file(probe.item_output("item-2")).unwrap();
    let states = runner.status(&batch.graph()).unwrap();
    match freshness_of(&states, "Batch") {
        Freshness::Stale(why) => {
            assert!(why.contains("1 of 6 produced files"), "{why}");
            assert!(why.contains("item-2.txt is missing"), "{why}");
        }
        other => panic!("expected stale, got {other:?}"),
    }
    let check = Runner::outputs(&probe);
    assert_eq!((check.files, check.intact()), (6, 5));
    let report = runner.run(&batch.graph()).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(batch.take_calls(), ["item-2"]);

    // Same size, other bytes and time: still noticed.
    let out = probe.item_output("item-5");
    let old = fs::read_to_string(&out).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    fs::write(&out, old.replace('v', "V")).unwrap();
    assert!(matches!(
        freshness_of(&runner.status(&batch.graph()).unwrap(), "Batch"),
        Freshness::Stale(_)
    ));
    assert!(runner.run(&batch.graph()).unwrap().succeeded());
    assert_eq!(batch.take_calls(), ["item-5"]);
    assert_eq!(fs::read_to_string(&out).unwrap(), old);
    assert_eq!(
        freshness_of(&runner.status(&batch.graph()).unwrap(), "Batch"),
        Freshness::Complete
    );
}

#[test]
fn a_leftover_temporary_makes_the_task_stale_and_the_next_run_sweeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = BatchFixture::new(tmp.path());
    let probe = batch.task(None, None);
    let runner = runner();
    assert!(runner.run(&batch.graph()).unwrap().succeeded());
    batch.take_calls();
    let leftover = temp_path(&probe.item_output("item-9"));
    fs::write(&leftover, "half").unwrap();
    match freshness_of(&runner.status(&batch.graph()).unwrap(), "Batch") {
        Freshness::Stale(why) => assert!(why.contains("temporary files"), "{why}"),
        other => panic!("expected stale, got {other:?}"),
    }
    let report = runner.run(&batch.graph()).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    assert!(batch.take_calls().is_empty(), "no item had to run");
    assert!(!leftover.exists());
    assert!(partials(tmp.path()).is_empty());
}

#[test]
fn the_stop_flag_ends_the_run_interrupted_and_a_rerun_resumes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = BatchFixture::new(tmp.path());
    let flag = Arc::new(AtomicBool::new(false));
    let mut stopping = batch.task(None, None);
    stopping.stop = Some(flag.clone());
    let runner = Runner::new(V1, 1).stop_flag(flag.clone());
    let report = runner.run(&(Arc::new(stopping) as TaskRef)).unwrap();
    assert!(report.interrupted);
    assert!(!report.succeeded());
    let task = report.task("Batch").unwrap();
    assert_eq!(task.state, TaskState::Interrupted);
    assert_eq!((task.items.ran, task.items.not_attempted), (1, 5));
    assert!(
        report.summary().contains("were interrupted"),
        "{}",
        report.summary()
    );
    let probe = batch.task(None, None);
    assert!(!probe.manifest().exists(), "finish does not run");
    assert!(!stamp_path(&probe).exists());
    assert_eq!(batch.markers(), 1);
    assert_eq!(batch.take_calls(), ["item-1"]);

    flag.store(false, SeqCst);
    let report = runner.run(&batch.graph()).unwrap();
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(
        batch.take_calls(),
        ["item-2", "item-3", "item-4", "item-5", "item-6"]
    );
}

/// A share runs only its items and leaves the task unfinished (no manifest, no stamp);
/// shares together cover the items, and the run over the whole task then runs none of
/// them again and finishes it.
#[test]
fn shares_run_only_their_items_and_a_whole_run_finishes_the_task() {
    let tmp = tempfile::tempdir().unwrap();
    let batch = BatchFixture::new(tmp.path());
    let runner = runner();
    let task: TaskRef = Arc::new(batch.task(None, None));
    let probe = batch.task(None, None);
    for (items, keys) in [(0..2, &KEYS[..2]), (2..usize::MAX, &KEYS[2..])] {
        let share = Share {
            task: task.id(),
            items,
        };
        let report = runner.run_share(&task, &share).unwrap();
        let counts = &report.task("Batch").unwrap().items;
        assert_eq!((counts.total, counts.ran), (keys.len(), keys.len()));
        assert_eq!(batch.take_calls(), keys);
        assert!(
            !probe.manifest().exists(),
            "a share does not finish the task"
        );
        assert!(
            !stamp_path(&probe).exists(),
            "a share does not stamp the task"
        );
    }
    assert_eq!(batch.markers(), KEYS.len());
    let report = runner.run(&task).unwrap();
    let counts = &report.task("Batch").unwrap().items;
    assert_eq!((counts.ran, counts.skipped), (0, KEYS.len()));
    assert!(batch.take_calls().is_empty());
    assert!(probe.manifest().exists());
    assert!(stamp_path(&probe).exists());
}

/// A share never runs another task beside the other shares: what its task needs must be
/// complete, else the share fails naming it, and nothing runs; complete, it is left alone.
#[test]
fn a_share_fails_instead_of_running_what_its_task_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = Chain::new(tmp.path());
    let root = chain.graph("upper");
    let share = Share {
        task: root.id(),
        items: 0..1,
    };
    let report = runner().run_share(&root, &share).unwrap();
    assert!(!report.succeeded());
    let a = report.tasks.iter().find(|t| t.id != root.id()).unwrap();
    assert_eq!(a.state, TaskState::Failed);
    assert!(a.errors[0].contains("is not complete"), "{:?}", a.errors);
    assert_eq!((count(&chain.a_runs), count(&chain.b_runs)), (0, 0));

    runner().run(&chain.a("upper")).unwrap();
    let report = runner().run_share(&root, &share).unwrap();
    let a = report.tasks.iter().find(|t| t.id != root.id()).unwrap();
    assert_eq!(a.state, TaskState::AlreadyComplete);
    assert_eq!(count(&chain.a_runs), 1);
    // An unknown task to share out is an error, not a whole run.
    let unknown = Share {
        task: "Nobody".into(),
        items: 0..1,
    };
    assert!(matches!(
        runner().run_share(&root, &unknown),
        Err(GraphError::NoSuchTask(_))
    ));
}

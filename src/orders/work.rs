//! Running orders: worker threads take them from the store one at a time and run them
//! through the same engine and session locks as a cron pass (a session an order works on
//! is `busy` to every other run, and an order finds a session busy the same way: it waits
//! in the queue and is tried again). A thread of its own delivers callbacks.

use super::store::{OrderRecord, Store};
use super::{OrderState, PIPELINE, Root, Work, file_under, page_of};
use crate::TOOL_VERSION;
use crate::engine::{LockError, RunReport, Runner, WorkspaceLock};
use crate::flowcam::region;
use crate::history;
use crate::ingest::Lookup;
use crate::operation::{self, Request};
use crate::pass::{self, Outcome, PassOptions};
use crate::tasks::registry;
use crate::tasks::{BlankPolicy, Session};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long an order waits before a busy session is tried again.
pub const BUSY_RETRY: Duration = Duration::from_secs(2);
/// Callback attempts, and the waits between them.
pub const CALLBACK_DELAYS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];
/// One callback request's time limit.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The files a result lists by name (a session has thousands of vignettes: counted).
const MAX_LISTED: usize = 20;

/// What the workers need of the service.
pub struct Env {
    pub root: Arc<dyn Root + Send + Sync>,
    /// Where sessions' outputs go (absolute); order results go in its `.orders` folder.
    pub output_root: PathBuf,
    /// The service's own options, which a pipeline order's parameters override.
    pub pass: PassOptions,
    /// The service's destination as task parameters (`s3-bucket`, `s3-endpoint`...): what
    /// a task order that uploads is given; empty when the service has none.
    pub destination: Map<String, Value>,
    /// Engine workers per order (0: one per core).
    pub engine_workers: usize,
    /// Set by SIGTERM/SIGINT: running orders finish their items in flight and go back to
    /// the queue; nothing new is taken.
    pub stop: Arc<AtomicBool>,
}

impl Env {
    /// The folder of an order's result files.
    pub fn result_dir(&self, id: u64) -> PathBuf {
        self.output_root.join(".orders").join(id.to_string())
    }

    /// A message without the server's own folders in it.
    fn redact(&self, message: &str) -> String {
        let mut message = message.to_string();
        for (folder, shown) in [
            (&self.output_root, "<output>"),
            (&self.root.folder().to_path_buf(), "<root>"),
        ] {
            let text = folder.display().to_string();
            if !text.is_empty() {
                message = message.replace(&text, shown);
            }
        }
        message
    }
}

/// How one run of an order ended.
enum Ending {
    Succeeded(Value),
    Failed(Vec<String>, Option<Value>),
    /// Not now: back to the queue, to be tried after the delay.
    Later(String, Duration),
}

/// The workers and the callback thread; [`Workers::join`] waits for them after a stop.
pub struct Workers {
    wake: Arc<(Mutex<u64>, Condvar)>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    pub fn start(store: Arc<Store>, env: Arc<Env>, count: usize) -> Workers {
        let wake: Arc<(Mutex<u64>, Condvar)> = Arc::default();
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut threads = Vec::new();
        for n in 0..count.max(1) {
            let (store, env, wake, busy) = (store.clone(), env.clone(), wake.clone(), busy.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("order-{n}"))
                    .spawn(move || work(&store, &env, &wake, &busy))
                    .expect("a thread for an order worker"),
            );
        }
        let (callbacks, stop, signal) = (store.clone(), env.stop.clone(), wake.clone());
        threads.push(
            std::thread::Builder::new()
                .name("callbacks".into())
                .spawn(move || deliver(&callbacks, &stop, &signal))
                .expect("a thread for callbacks"),
        );
        Workers { wake, threads }
    }

    /// What tells the workers an order arrived.
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let signal = self.wake.clone();
        move || wake(&signal)
    }

    /// Waits until every thread has stopped (after the stop flag was set).
    pub fn join(self) {
        wake(&self.wake);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn wake(wake: &(Mutex<u64>, Condvar)) {
    *wake.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    wake.1.notify_all();
}

/// Sleeps until woken or `timeout`.
fn doze(wake: &(Mutex<u64>, Condvar), timeout: Duration) {
    let guard = wake.0.lock().unwrap_or_else(|e| e.into_inner());
    let seen = *guard;
    let _ = wake
        .1
        .wait_timeout_while(guard, timeout, |n| *n == seen)
        .unwrap_or_else(|e| e.into_inner());
}

fn work(store: &Store, env: &Env, signal: &(Mutex<u64>, Condvar), busy: &Mutex<HashSet<String>>) {
    while !env.stop.load(Ordering::SeqCst) {
        // Claimed and marked busy in one step: another worker never takes an order on a
        // session this one is about to run.
        let claimed = {
            let mut taken = busy.lock().unwrap_or_else(|e| e.into_inner());
            let claimed = store.claim(&|session| taken.contains(session));
            if let Ok(Some(record)) = &claimed {
                taken.insert(record.order.session().to_string());
            }
            claimed
        };
        let record = match claimed {
            Ok(Some(record)) => record,
            Ok(None) => {
                doze(signal, Duration::from_millis(500));
                continue;
            }
            Err(e) => {
                tracing::error!("orders: {e}");
                doze(signal, Duration::from_secs(1));
                continue;
            }
        };
        let session = record.order.session().to_string();
        tracing::info!(order = record.id, session, "order started");
        let ending = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&record, env)))
            .unwrap_or_else(|panic| {
                Ending::Failed(
                    vec![format!(
                        "internal error (panic): {}",
                        crate::engine::runner::panic_message(panic.as_ref())
                    )],
                    None,
                )
            });
        busy.lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
        let saved = match ending {
            Ending::Succeeded(result) => {
                tracing::info!(order = record.id, "order succeeded");
                store.finish(record.id, OrderState::Succeeded, Vec::new(), Some(result))
            }
            Ending::Failed(errors, result) => {
                let errors: Vec<String> = errors.iter().map(|e| env.redact(e)).collect();
                tracing::warn!(
                    order = record.id,
                    error = errors.first().map(String::as_str).unwrap_or(""),
                    "order failed"
                );
                store.finish(record.id, OrderState::Failed, errors, result)
            }
            Ending::Later(note, delay) => {
                tracing::info!(order = record.id, "order back in the queue: {note}");
                store.requeue(record.id, env.redact(&note), delay)
            }
        };
        if let Err(e) = saved {
            tracing::error!(order = record.id, "orders: {e}");
        }
        wake(signal);
    }
}

/// One run of an order.
fn run(record: &OrderRecord, env: &Env) -> Ending {
    match &record.order.work {
        Work::Task {
            task,
            session,
            parameters,
        } => {
            let folder = match env.root.session(session) {
                Ok(Lookup::One(folder)) => folder,
                Ok(_) => {
                    return Ending::Failed(
                        vec![format!("no session {session} under the root")],
                        None,
                    );
                }
                Err(e) => {
                    return Ending::Failed(vec![format!("the root cannot be read: {e}")], None);
                }
            };
            if task == PIPELINE {
                pipeline(&folder, parameters, env)
            } else {
                one_task(task, &folder, parameters, env)
            }
        }
        Work::Roi { roi } => {
            let cut = || -> anyhow::Result<Value> {
                let folder =
                    env.root.session(&roi.session)?.one().ok_or_else(|| {
                        anyhow::anyhow!("no session {} under the root", roi.session)
                    })?;
                let session = Session::new(&folder, &env.output_root, None)?;
                let page = page_of(&folder, &roi.collage).map_err(anyhow::Error::msg)?;
                let bytes = region::cut(&session, &page, roi.region)?;
                let stem = roi
                    .collage
                    .rsplit_once('.')
                    .map_or(&*roi.collage, |(s, _)| s);
                let r = roi.region;
                let name = format!("{stem}_x{}_y{}_{}x{}.tif", r.x, r.y, r.width, r.height);
                let dir = env.result_dir(record.id);
                std::fs::create_dir_all(&dir)?;
                crate::engine::atomic::write_file(&dir.join(&name), &bytes)?;
                Ok(json!({
                    "files": [{
                        "name": name,
                        "bytes": bytes.len(),
                        "url": format!("/api/orders/{}/files/{name}", record.id),
                    }]
                }))
            };
            match cut() {
                Ok(result) => Ending::Succeeded(result),
                Err(e) => Ending::Failed(vec![format!("{e:#}")], None),
            }
        }
    }
}

/// The whole pipeline on one session: the cron pass's own `run_session`, with the
/// service's options and the order's parameters over them.
fn pipeline(folder: &Path, parameters: &Map<String, Value>, env: &Env) -> Ending {
    let mut options = env.pass.clone();
    options.experiment_name = None;
    options.settle = Duration::ZERO;
    options.wait_for_collages = false;
    options.skip_complete = false;
    options.force = false;
    for (name, value) in parameters {
        match (name.as_str(), value) {
            ("embed-measurements", Value::Bool(b)) => {
                options.pipeline.decollage.embed_measurements = *b
            }
            ("depth-from-name", Value::Bool(b)) => options.pipeline.extract.depth_from_name = *b,
            ("grey-vignettes", Value::Bool(b)) => options.pipeline.decollage.grey = *b,
            ("blanks", Value::String(s)) => match s.parse::<BlankPolicy>() {
                Ok(policy) => options.pipeline.decollage.blanks = policy,
                Err(e) => return Ending::Failed(vec![format!("parameter `blanks`: {e}")], None),
            },
            ("sample-sheet", Value::String(sheet)) => match file_under(env.root.folder(), sheet) {
                Ok(path) => options.pipeline.extract.sample_sheet = Some(path),
                Err(e) => {
                    return Ending::Failed(vec![format!("parameter `sample-sheet`: {e}")], None);
                }
            },
            _ => {
                return Ending::Failed(
                    vec![format!(
                        "parameter `{name}` = {value} is not one a pipeline order takes"
                    )],
                    None,
                );
            }
        }
    }
    let runner = Runner::new(TOOL_VERSION, env.engine_workers).stop_flag(env.stop.clone());
    let done = pass::run_session(folder, &options, &runner);
    let output = done.experiment.as_ref().map(|e| env.output_root.join(e));
    let result = |outcome: &str| {
        json!({
            "outcome": outcome,
            "session": done.experiment,
            "tables": output.as_deref().map(|o| session_files(o, env)).unwrap_or_default(),
            "report": done.report.as_ref().map(summary),
        })
    };
    match &done.outcome {
        Outcome::Complete => Ending::Succeeded(result("complete")),
        Outcome::Ran => Ending::Succeeded(result("ran")),
        Outcome::Failed { errors } => Ending::Failed(errors.clone(), Some(result("failed"))),
        Outcome::Busy { holder } => Ending::Later(
            format!("waiting: the session is being processed by another run ({holder})"),
            BUSY_RETRY,
        ),
        Outcome::Waiting { reason } => Ending::Later(format!("waiting: {reason}"), BUSY_RETRY),
        Outcome::Interrupted => interrupted(),
    }
}

fn interrupted() -> Ending {
    Ending::Later(
        "interrupted by a signal: resumed when the service starts again".into(),
        Duration::ZERO,
    )
}

/// One task alone on one session, through the operation bridge: the request is what the
/// session's outputs hold, validated exactly as `operation` validates it.
fn one_task(task: &str, folder: &Path, parameters: &Map<String, Value>, env: &Env) -> Ending {
    let Some(entry) = registry::find(task) else {
        return Ending::Failed(vec![format!("unknown task {task}")], None);
    };
    let session = match Session::new(folder, &env.output_root, None) {
        Ok(session) => session,
        Err(e) => return Ending::Failed(vec![e.to_string()], None),
    };
    let declaration = entry.declaration();
    let mut parameters = parameters.clone();
    for name in super::DESTINATION {
        if declaration.parameter(name).is_none() {
            continue;
        }
        match env.destination.get(*name) {
            Some(value) => {
                parameters.insert((*name).to_string(), value.clone());
            }
            None if declaration.parameter(name).is_some_and(|p| p.required) => {
                return Ending::Failed(
                    vec![format!(
                        "{task} needs a destination, and the service has none: start serve \
                         with --s3-bucket (and --s3-endpoint or --api-url)"
                    )],
                    None,
                );
            }
            None => {}
        }
    }
    if let Some(Value::String(sheet)) = parameters.get("sample-sheet") {
        match file_under(env.root.folder(), sheet) {
            Ok(path) => {
                parameters.insert(
                    "sample-sheet".into(),
                    Value::String(path.display().to_string()),
                );
            }
            Err(e) => return Ending::Failed(vec![format!("parameter `sample-sheet`: {e}")], None),
        }
    }
    let _lock = match WorkspaceLock::acquire(&session.output) {
        Ok(lock) => lock,
        Err(LockError::Held { holder, .. }) => {
            return Ending::Later(
                format!("waiting: the session is being processed by another run ({holder})"),
                BUSY_RETRY,
            );
        }
        Err(e) => return Ending::Failed(vec![e.to_string()], None),
    };
    let mut inputs = Map::new();
    for port in &declaration.inputs {
        let files = matching(&session.output, &port.pattern);
        let files = if files.is_empty() {
            matching(&session.input, &port.pattern)
        } else {
            files
        };
        if !files.is_empty() {
            inputs.insert(
                port.name.clone(),
                Value::Array(
                    files
                        .into_iter()
                        .map(|f| Value::String(f.display().to_string()))
                        .collect(),
                ),
            );
        }
    }
    let request = Request {
        context: Map::from_iter([
            (
                "session_dir".to_string(),
                Value::String(folder.display().to_string()),
            ),
            (
                "experiment".to_string(),
                Value::String(session.experiment.clone()),
            ),
        ]),
        parameters,
        inputs,
        outputs: session.output.clone(),
    };
    match operation::run_until(task, &request, env.stop.clone()) {
        Err(problems) => Ending::Failed(problems, None),
        Ok(done) => {
            if let Err(e) = history::record(&session.output, &done.report) {
                tracing::warn!("cannot keep the run report of {}: {e}", session.experiment);
            }
            let outputs: Map<String, Value> = done
                .outputs
                .iter()
                .map(|(name, files)| (name.clone(), listed(files, env)))
                .collect();
            let result = json!({
                "outcome": done.status,
                "session": session.experiment,
                "outputs": outputs,
                "report": summary(&done.report),
            });
            match done.status {
                "complete" => Ending::Succeeded(result),
                "interrupted" => interrupted(),
                _ => Ending::Failed(done.errors, Some(result)),
            }
        }
    }
}

/// The files of `folder` (not below it) that `pattern` matches; none for a pattern of a
/// subfolder.
fn matching(folder: &Path, pattern: &str) -> Vec<PathBuf> {
    if pattern.contains('/') {
        return Vec::new();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    crate::declare::matches(pattern, &name)
                        && !crate::engine::atomic::is_temp_name(&name)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Files as paths under the output folder: the first [`MAX_LISTED`] and their count.
fn listed(files: &[PathBuf], env: &Env) -> Value {
    let names: Vec<String> = files
        .iter()
        .take(MAX_LISTED)
        .map(|f| {
            f.strip_prefix(&env.output_root)
                .unwrap_or(f)
                .display()
                .to_string()
        })
        .collect();
    json!({"count": files.len(), "files": names})
}

/// The tables a session's output holds, as paths under the output folder.
fn session_files(output: &Path, env: &Env) -> Value {
    let files: Vec<PathBuf> = [
        "metadata.csv",
        "metadata.schema.json",
        "session.json",
        "manifest.csv",
    ]
    .iter()
    .map(|name| output.join(name))
    .chain(matching(output, "ecotaxa_*.zip"))
    .filter(|f| f.is_file())
    .collect();
    listed(&files, env)
}

/// A run report in a few words: each task that did something, and how it ended.
fn summary(report: &RunReport) -> Value {
    json!({
        "started_at": report.started_at,
        "duration_ms": report.duration_ms,
        "interrupted": report.interrupted,
        "tasks": report.tasks.iter().map(|t| json!({
            "task": t.name,
            "state": format!("{:?}", t.state).to_lowercase(),
            "items": t.items,
            "notes": t.notes,
        })).collect::<Vec<_>>(),
    })
}

/// Callbacks delivered at once, at most.
const CALLBACKS_AT_ONCE: usize = 16;

/// Delivers the callbacks of finished orders, side by side (one slow receiver holds up no
/// other), each retried on its own schedule; a stop abandons those in flight, and they and
/// the ones still due are delivered after the service starts again.
fn deliver(store: &Arc<Store>, stop: &Arc<AtomicBool>, signal: &(Mutex<u64>, Condvar)) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("callbacks cannot start: {e}");
            return;
        }
    };
    // The client's timers belong to the runtime.
    let _entered = runtime.enter();
    let client = match reqwest::Client::builder()
        .timeout(CALLBACK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("callbacks cannot start: {e}");
            return;
        }
    };
    let in_flight: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(CALLBACKS_AT_ONCE));
    let mut sending = tokio::task::JoinSet::new();
    while !stop.load(Ordering::SeqCst) {
        let due = store.due_callbacks().unwrap_or_else(|e| {
            tracing::error!("orders: {e}");
            Vec::new()
        });
        for record in due {
            if !in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(record.id)
            {
                continue;
            }
            let (client, store, in_flight, slots) = (
                client.clone(),
                store.clone(),
                in_flight.clone(),
                slots.clone(),
            );
            sending.spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                send_callback(&client, &store, &record).await;
                in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&record.id);
            });
        }
        // Let the requests run for a while (the runtime works only inside block_on).
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(250), async {
                while sending.join_next().await.is_some() {}
                std::future::pending::<()>().await
            })
            .await;
        });
        if sending.is_empty() {
            doze(signal, Duration::from_millis(250));
        }
    }
    // Abandoned, not lost: their attempts were not recorded, so they are due again.
    sending.abort_all();
}

/// One attempt at one order's callback, recorded.
async fn send_callback(client: &reqwest::Client, store: &Store, record: &OrderRecord) {
    let Some(url) = record.order.callback.clone() else {
        return;
    };
    let attempt = record.callback.as_ref().map_or(0, |c| c.attempts) as usize;
    // The order as `GET /api/orders/ID` gives it, less the delivery's own state, so that
    // every attempt sends the same body.
    let mut body = serde_json::to_value(record).unwrap_or_default();
    if let Some(fields) = body.as_object_mut() {
        fields.remove("callback");
    }
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let sent = client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-flowcam-order", record.id.to_string())
        .body(body)
        .send()
        .await;
    let error = match sent {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(format!("the callback answered {}", response.status())),
        // Without the URL: it may carry a client's secret.
        Err(e) => Some(format!(
            "the callback could not be reached ({})",
            if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            }
        )),
    };
    match &error {
        None => tracing::info!(order = record.id, "callback delivered"),
        Some(e) => tracing::warn!(order = record.id, attempt = attempt + 1, "{e}"),
    }
    let retry = CALLBACK_DELAYS.get(attempt).copied();
    if let Err(e) = store.callback_attempt(record.id, error, retry) {
        tracing::error!(order = record.id, "orders: {e}");
    }
}

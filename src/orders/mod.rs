//! Orders: work a workflow system sends to a running `serve` instead of shelling out (the
//! way caMicroscope's DynamicServices takes JSON orders), kept in an embedded store so that
//! none is lost or run twice.
//!
//! ```json
//! {"task": "DecollageImages", "session": "NAME", "parameters": {"blanks": "skip"}}
//! {"task": "FlowCamPipeline", "session": "NAME", "parameters": {...}}
//! {"roi": {"session": "NAME", "collage": "NAME_000001.tif", "x": 0, "y": 0, "width": 64, "height": 64}}
//! ```
//! Each may carry `"callback": "http://..."`, which receives the finished order's JSON.
//!
//! An order's life ([`OrderState`]):
//!
//! ```text
//!   POST ──> queued ──claim──> running ──> succeeded | failed
//!              ^                  │
//!              └──────────────────┘  the session is busy (another run holds its lock),
//!                                    a signal stopped the service, or the service died
//!                                    and started again: the engine resumes what is left
//! ```
//!
//! - [`validate`] checks an order against the root: names are looked up among what is
//!   there, never joined onto paths; parameters are checked by the tasks' declarations.
//! - [`store`] keeps orders, their idempotency keys and pending callbacks (redb).
//! - [`work`] runs orders on worker threads through the same engine and session locks as a
//!   cron pass, and delivers callbacks.

pub mod store;
pub mod work;

use crate::flowcam::region::{self, Region};
use crate::ingest::Lookup;
use crate::tasks::registry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Component, Path, PathBuf};

/// The name of the order for the whole pipeline.
pub const PIPELINE: &str = "FlowCamPipeline";
/// The tasks whose parameters a pipeline order takes; the destination is the service's.
pub const PIPELINE_TASKS: &[&str] = &["ExtractMetadata", "DecollageImages"];
/// The parameters that choose where a session goes: the service's own, never an order's.
pub const DESTINATION: &[&str] = &[
    "s3-bucket",
    "s3-endpoint",
    "s3-prefix",
    "api-url",
    "create-bucket",
];
/// The longest callback URL taken.
pub const MAX_CALLBACK: usize = 2048;
/// The longest name (session, collage) taken.
pub const MAX_NAME: usize = 255;

/// A validated order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    #[serde(flatten)]
    pub work: Work,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// What an order asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Work {
    /// One task (or, as [`PIPELINE`], the whole pipeline) on one session.
    Task {
        task: String,
        session: String,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        parameters: Map<String, Value>,
    },
    /// A region of a collage page, as a TIFF with the session's EXIF.
    Roi { roi: RegionOrder },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionOrder {
    pub session: String,
    pub collage: String,
    #[serde(flatten)]
    pub region: Region,
}

impl Order {
    /// The session the order works on.
    pub fn session(&self) -> &str {
        match &self.work {
            Work::Task { session, .. } => session,
            Work::Roi { roi } => &roi.session,
        }
    }
}

/// Where an order is in its life (see the module's drawing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl OrderState {
    pub fn finished(self) -> bool {
        matches!(self, OrderState::Succeeded | OrderState::Failed)
    }
}

/// What the service knows of the root, for checking orders against it.
pub trait Root {
    /// The session folder called `name` (canonical), if the root has one, and only one.
    fn session(&self, name: &str) -> std::io::Result<Lookup>;
    /// The root folder itself (canonical): files an order names lie under it.
    fn folder(&self) -> &Path;
}

/// Reads and checks an order, naming every problem at once.
pub fn validate(text: &[u8], root: &dyn Root) -> Result<Order, Vec<String>> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| vec![format!("the order is not valid JSON: {e}")])?;
    // serde_json keeps the last of two equal keys; an order that says two things is
    // refused rather than read one way.
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    if let Err(e) = serde::de::Deserializer::deserialize_any(&mut deserializer, UniqueKeys) {
        return Err(vec![format!("the order is not valid JSON: {e}")]);
    }
    let Value::Object(mut object) = value else {
        return Err(vec![
            "an order is a JSON object: {\"task\", \"session\", \"parameters\"} or {\"roi\": {...}}"
                .to_string(),
        ]);
    };
    let mut problems = Vec::new();
    for key in object.keys() {
        if !["task", "session", "parameters", "roi", "callback"].contains(&key.as_str()) {
            problems.push(format!(
                "unknown key `{key}` (known: task, session, parameters, roi, callback)"
            ));
        }
    }
    let callback = match object.remove("callback") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => {
            problems.extend(check_callback(&url));
            Some(url)
        }
        Some(other) => {
            problems.push(format!("`callback` must be a URL (a string), got {other}"));
            None
        }
    };
    let work = match (object.remove("task"), object.remove("roi")) {
        (Some(_), Some(_)) => {
            problems.push("an order has either `task` or `roi`, not both".into());
            None
        }
        (None, None) => {
            problems.push("an order needs `task` (with `session`) or `roi`".into());
            None
        }
        (Some(task), None) => task_order(task, &mut object, root, &mut problems),
        (None, Some(roi)) => {
            for key in ["session", "parameters"] {
                if object.contains_key(key) {
                    problems.push(format!("`{key}` goes inside `roi` for a region order"));
                }
            }
            region_order(roi, root, &mut problems)
        }
    };
    match work {
        Some(work) if problems.is_empty() => Ok(Order { work, callback }),
        _ => Err(problems),
    }
}

fn task_order(
    task: Value,
    object: &mut Map<String, Value>,
    root: &dyn Root,
    problems: &mut Vec<String>,
) -> Option<Work> {
    let task = match task {
        Value::String(task) if task == PIPELINE || registry::find(&task).is_some() => Some(task),
        other => {
            problems.push(format!(
                "`task` must be one of {PIPELINE}, {}; got {other}",
                registry::names().join(", ")
            ));
            None
        }
    };
    let session = session_field(object.remove("session"), "session", root, problems);
    let parameters = match object.remove("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            problems.push(format!("`parameters` must be a JSON object, got {other}"));
            Map::new()
        }
    };
    let task = task?;
    problems.extend(check_parameters(&task, &parameters, root));
    Some(Work::Task {
        task,
        session: session?,
        parameters,
    })
}

/// The parameters' problems, as the operation bridge finds them (the declarations'
/// rules); for a pipeline order, each parameter by the task that declares it. A path
/// (`sample-sheet`) must name a file under the root.
fn check_parameters(task: &str, parameters: &Map<String, Value>, root: &dyn Root) -> Vec<String> {
    let mut problems = Vec::new();
    if task == PIPELINE {
        let declarations: Vec<_> = PIPELINE_TASKS
            .iter()
            .filter_map(|t| registry::find(t))
            .map(|e| e.declaration())
            .collect();
        for (name, value) in parameters {
            match declarations.iter().find(|d| d.parameter(name).is_some()) {
                Some(declaration) => {
                    let one = Map::from_iter([(name.clone(), value.clone())]);
                    problems.extend(declaration.validate_parameters(&one));
                }
                None => problems.push(format!(
                    "parameter `{name}` is not declared for {PIPELINE} (declared: {})",
                    declarations
                        .iter()
                        .flat_map(|d| d.parameters.iter().map(|p| p.name.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    } else if let Some(entry) = registry::find(task) {
        // The destination is the service's: an order may not send the session (and the
        // service's keys) elsewhere.
        let mut rest = parameters.clone();
        for name in DESTINATION {
            if rest.remove(*name).is_some() {
                problems.push(format!(
                    "parameter `{name}`: an order cannot choose the destination; it is the \
                     service's (serve's --s3-bucket, --s3-endpoint, --s3-prefix, --api-url)"
                ));
            }
        }
        // The service fills in the destination: its being required is no problem here.
        problems.extend(
            entry
                .declaration()
                .validate_parameters(&rest)
                .into_iter()
                .filter(|p| {
                    !DESTINATION
                        .iter()
                        .any(|d| p.starts_with(&format!("parameter `{d}` is required")))
                }),
        );
    }
    if let Some(Value::String(sheet)) = parameters.get("sample-sheet")
        && let Err(e) = file_under(root.folder(), sheet)
    {
        problems.push(format!("parameter `sample-sheet`: {e}"));
    }
    problems
}

fn region_order(roi: Value, root: &dyn Root, problems: &mut Vec<String>) -> Option<Work> {
    let Value::Object(mut roi) = roi else {
        problems.push(format!(
            "`roi` must be an object with session, collage, x, y, width and height, got {roi}"
        ));
        return None;
    };
    for key in roi.keys() {
        if !["session", "collage", "x", "y", "width", "height"].contains(&key.as_str()) {
            problems.push(format!(
                "unknown key `roi.{key}` (known: session, collage, x, y, width, height)"
            ));
        }
    }
    let session = session_field(roi.remove("session"), "roi.session", root, problems);
    let mut number = |key: &str| match roi.remove(key) {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
            n.as_u64().map(|n| n as u32)
        }
        Some(other) => {
            problems.push(format!(
                "`roi.{key}` must be a whole number of pixels from 0, got {other}"
            ));
            None
        }
        None => {
            problems.push(format!("`roi.{key}` is missing"));
            None
        }
    };
    let (x, y, width, height) = (number("x"), number("y"), number("width"), number("height"));
    let empty = width == Some(0) || height == Some(0);
    if empty {
        problems.push("`roi`: `width` and `height` must be at least 1".into());
    }
    let collage = match roi.remove("collage") {
        Some(Value::String(name)) => Some(name),
        Some(other) => {
            problems.push(format!(
                "`roi.collage` must be a page's file name, got {other}"
            ));
            None
        }
        None => {
            problems.push("`roi.collage` is missing".into());
            None
        }
    };
    let folder = match &session {
        Some(name) => root.session(name).ok().and_then(Lookup::one),
        None => None,
    };
    let page = match (&collage, &folder) {
        (Some(name), Some(folder)) => match page_of(folder, name) {
            Ok(page) => Some(page),
            Err(e) => {
                problems.push(format!("`roi.collage`: {e}"));
                None
            }
        },
        _ => None,
    };
    let region = Region {
        x: x?,
        y: y?,
        width: width?,
        height: height?,
    };
    if let (Some(page), Some(folder), false) = (&page, &folder, empty) {
        match region::page_size(page, folder) {
            Ok((w, h)) => problems.extend(region.problems(w, h).into_iter().map(|p| {
                format!(
                    "`roi`: {p} (page {})",
                    collage.as_deref().unwrap_or_default()
                )
            })),
            Err(e) => problems.push(format!("`roi.collage`: {e}")),
        }
    }
    Some(Work::Roi {
        roi: RegionOrder {
            session: session?,
            collage: collage?,
            region,
        },
    })
}

/// A session name given in an order, checked and looked up under the root.
fn session_field(
    value: Option<Value>,
    key: &str,
    root: &dyn Root,
    problems: &mut Vec<String>,
) -> Option<String> {
    let name = match value {
        Some(Value::String(name)) => name,
        Some(other) => {
            problems.push(format!("`{key}` must be a session's name, got {other}"));
            return None;
        }
        None => {
            problems.push(format!("`{key}` is missing: name a session under the root"));
            return None;
        }
    };
    if let Err(e) = plain_name(&name) {
        problems.push(format!("`{key}`: {e}"));
        return None;
    }
    match root.session(&name) {
        Ok(Lookup::One(_)) => Some(name),
        Ok(Lookup::Missing) => {
            problems.push(format!("`{key}`: no session {name} under the root"));
            None
        }
        Ok(Lookup::Several(folders)) => {
            let at: Vec<String> = folders
                .iter()
                .map(|f| {
                    f.strip_prefix(root.folder())
                        .unwrap_or(f)
                        .display()
                        .to_string()
                })
                .collect();
            problems.push(format!(
                "`{key}`: {} sessions under the root are named {name} ({}); they would share \
                 one output folder: rename one",
                at.len(),
                at.join(", ")
            ));
            None
        }
        Err(e) => {
            tracing::error!("orders: listing the root: {e}");
            problems.push(format!("`{key}`: the root could not be read"));
            None
        }
    }
}

/// A name that can only be looked up, never walk the file system: one component, no
/// separators, not `.` or `..`, printable.
pub fn plain_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name of 1 to {MAX_NAME} bytes is needed"));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "{name:?} is not a plain name (no paths, no `..`, no control characters)"
        ));
    }
    Ok(())
}

/// The page called `name` in the session folder `folder`: a regular file (not a link)
/// found by listing the folder.
pub fn page_of(folder: &Path, name: &str) -> Result<PathBuf, String> {
    plain_name(name)?;
    let lower = name.to_ascii_lowercase();
    if !(lower.ends_with(".tif") || lower.ends_with(".tiff")) {
        return Err(format!("{name} is not a collage page (a .tif file)"));
    }
    let entries =
        std::fs::read_dir(folder).map_err(|_| "the session cannot be read".to_string())?;
    for entry in entries.flatten() {
        if entry.file_name().to_str() == Some(name) {
            return match entry.file_type() {
                Ok(kind) if kind.is_file() => Ok(entry.path()),
                _ => Err(format!("{name} is not a regular file")),
            };
        }
    }
    Err(format!("no page {name} in the session"))
}

/// `relative` under `root` (canonical): a relative path of plain components naming a
/// regular file whose real path lies under the root.
pub fn file_under(root: &Path, relative: &str) -> Result<PathBuf, String> {
    let path = Path::new(relative);
    if relative.is_empty()
        || relative.len() > 4096
        || !path.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "{relative:?} must be a path relative to the root, without `..`"
        ));
    }
    let real = root
        .join(path)
        .canonicalize()
        .map_err(|_| format!("no file {relative} under the root"))?;
    if !real.starts_with(root) {
        return Err(format!("{relative} leads out of the root: refused"));
    }
    if !real.is_file() {
        return Err(format!("{relative} is not a regular file"));
    }
    Ok(real)
}

fn check_callback(url: &str) -> Vec<String> {
    if url.len() > MAX_CALLBACK {
        return vec![format!("`callback` is longer than {MAX_CALLBACK} bytes")];
    }
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Vec::new(),
        Ok(_) => vec![format!(
            "`callback` must be an http or https URL, got {url:?}"
        )],
        Err(e) => vec![format!("`callback` is not a URL ({e}): {url:?}")],
    }
}

/// Walks a JSON document and fails on an object with a key twice.
struct UniqueKeys;

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{key}` appears twice"
                )));
            }
            map.next_value::<UniqueKeysValue>()?;
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<UniqueKeysValue>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A value inside a document [`UniqueKeys`] walks.
struct UniqueKeysValue;

impl<'de> serde::Deserialize<'de> for UniqueKeysValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys).map(|()| UniqueKeysValue)
    }
}

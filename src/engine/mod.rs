//! A small make-like task engine, modelled on Luigi but stricter about what "complete" means.
//!
//! It knows nothing of FlowCam. A [`Task`] declares its parameters, the tasks it requires,
//! the files it reads and the targets it writes; the [`Runner`] builds the dependency graph
//! from a root task, skips every task whose targets exist and whose provenance [`stamp`]
//! still matches, and runs the rest in dependency order.
//!
//! Task lifecycle, as the runner drives it:
//!
//! ```text
//!   requirements failed? ──yes──> Blocked
//!          │ no
//!   stamp matches && targets exist && !force ──yes──> AlreadyComplete
//!          │ no
//!   delete stamp ─> prepare (serial, plans items)
//!          ─> run_item for each item whose marker is stale (parallel, per-item resume)
//!          ─> any item failed? ──yes──> Failed (good items keep their outputs and markers)
//!          ─> finish (serial) ─> commit ─> write stamp (last) ─> Ran
//! ```
//!
//! Every byte a task writes goes through [`Staging`]: temporary files beside their targets,
//! synced, then renamed, so a crash never leaves a half-written file under a final name, and
//! a stamp or item marker is only written once what it vouches for is on disk.

pub mod atomic;
pub mod fingerprint;
pub mod lock;
pub mod report;
pub mod runner;
pub mod stamp;
pub mod task;

pub use atomic::{Staging, write_file};
pub use fingerprint::{Digest, FileFingerprint};
pub use lock::{LockError, WorkspaceLock};
pub use report::{ItemCounts, RunReport, TaskReport, TaskState};
pub use runner::{GraphError, Runner};
pub use stamp::Freshness;
pub use task::{Item, NoWork, Parameters, Plan, StopTask, Task, TaskRef};

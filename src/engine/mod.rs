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
//!   requirements failed? ──yes──> Blocked      (interrupted? ──> Interrupted)
//!          │ no
//!   stamp matches && targets exist && every item's files are on disk as recorded
//!     && no temporaries left && !force ──yes──> AlreadyComplete
//!          │ no
//!   stop flag set? ──yes──> Interrupted
//!          │ no
//!   delete stamp ─> prepare (serial, plans items)
//!          ─> run_item for each item whose marker is stale, whose files are missing or
//!             changed, or that the plan says must run (parallel, per-item resume; no new
//!             item once the stop flag is set)
//!          ─> remove orphans: files no item of this plan produces (after all commits)
//!          ─> any item failed? ──yes──> Failed (good items keep their outputs and markers)
//!          ─> stopped? ──yes──> Interrupted (done items keep theirs)
//!          ─> every item's files still as recorded? ──no──> redo those items once
//!          ─> finish (serial) ─> commit ─> sweep temporaries ─> write stamp (last) ─> Ran
//! ```
//!
//! A [`Share`] run of a task does only its range of items, up to the redo of broken ones,
//! and stops there (Ran, with a note): no orphan removal, finish, sweep or stamp, since
//! other shares are writing beside it. A run over the whole task, after every share, skips
//! their items by their markers and does the rest.
//!
//! Every byte a task writes goes through [`Staging`]: temporary files (an item's in a
//! staging folder of its own, a task's beside their targets), synced, then renamed, so a
//! crash never leaves a half-written file under a final name, and a stamp or item marker
//! is only written once what it vouches for is on disk. An item that fills a folder of its
//! own ([`Plan::owned_folder`]) writes it whole instead: its files under their own names
//! in a hidden sibling folder, synced, which then takes the folder's place in one rename.

pub mod atomic;
pub mod fingerprint;
pub mod lock;
pub mod report;
pub mod runner;
pub mod stamp;
pub mod task;
pub mod workers;

pub use atomic::{Staging, write_file};
pub use fingerprint::{Digest, FileFingerprint};
pub use lock::{LockError, LockMode, WorkspaceLock};
pub use report::{ItemCounts, RunReport, TaskReport, TaskState};
pub use runner::{GraphError, Runner, Share};
pub use stamp::{Freshness, OutputCheck, OutputProblem};
pub use task::{Item, NoWork, Parameters, Plan, StopTask, Task, TaskRef};

//! `flowcam-pipeline`: FlowCam sessions in, EXIF-tagged particle vignettes out.
//!
//! - [`engine`]: a make-like task engine that knows nothing of FlowCam.
//! - [`flowcam`]: the instrument's formats (`.lst` particle lists, collage pages, session
//!   folder names) and the vignettes made from them.
//! - [`tasks`]: the pipeline's tasks, written against the engine.
//! - [`upload`]: destinations (S3, the upload API) and the upload ledger, free of FlowCam.

pub mod batch;
pub mod budget;
pub mod clean;
pub mod cli;
pub mod config;
pub mod declare;
pub mod engine;
pub mod flowcam;
pub mod history;
pub mod ingest;
pub mod interrupt;
pub mod operation;
pub mod orders;
pub mod pass;
pub mod progress;
pub mod serve;
pub mod status;
pub mod synthetic;
pub mod tasks;
pub mod upload;

/// The version recorded in every stamp: a new release reruns what an older one made.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

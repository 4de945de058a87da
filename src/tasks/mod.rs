//! The pipeline's tasks, each written against [`crate::engine`] and holding only FlowCam
//! logic: ReadMetadata -> DecollageImages, wrapped by FlowCamPipeline.

mod decollage;
mod read_metadata;
mod session;

pub use decollage::{DecollageImages, DecollageOptions, MANIFEST_HEADER};
pub use read_metadata::ReadMetadata;
pub use session::{Session, SessionError};

use crate::engine::{Task, TaskRef};
use std::path::PathBuf;
use std::sync::Arc;

/// The root task for one session: complete when everything it requires is.
pub struct FlowCamPipeline {
    session: Arc<Session>,
    decollage: TaskRef,
}

impl FlowCamPipeline {
    pub fn new(session: Arc<Session>, options: DecollageOptions) -> FlowCamPipeline {
        let metadata: TaskRef = Arc::new(ReadMetadata::new(session.clone()));
        let decollage = Arc::new(DecollageImages::new(session.clone(), metadata, options));
        FlowCamPipeline { session, decollage }
    }
}

impl Task for FlowCamPipeline {
    fn name(&self) -> &'static str {
        "FlowCamPipeline"
    }

    fn id(&self) -> String {
        format!("FlowCamPipeline({})", self.session.experiment)
    }

    fn requires(&self) -> Vec<TaskRef> {
        vec![self.decollage.clone()]
    }

    fn outputs(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }
}

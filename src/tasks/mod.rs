//! The pipeline's tasks, each written against [`crate::engine`] and holding only FlowCam
//! logic: ReadMetadata -> DecollageImages -> UploadToS3, wrapped by FlowCamPipeline.

mod decollage;
pub mod ecotaxa;
mod read_metadata;
mod session;
mod upload;

pub use decollage::{DecollageImages, DecollageOptions, MANIFEST_HEADER};
pub use read_metadata::ReadMetadata;
pub use session::{Session, SessionError};
pub use upload::{UploadOptions, UploadToS3};

use crate::engine::{Task, TaskRef};
use crate::upload::DestinationConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the pipeline delivers a session, when it does.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub destination: DestinationConfig,
    pub options: UploadOptions,
}

/// The root task for one session: complete when everything it requires is. It requires
/// the upload when there is a destination, else the vignettes.
pub struct FlowCamPipeline {
    session: Arc<Session>,
    last: TaskRef,
}

impl FlowCamPipeline {
    pub fn new(
        session: Arc<Session>,
        options: DecollageOptions,
        delivery: Option<Delivery>,
    ) -> FlowCamPipeline {
        let metadata: TaskRef = Arc::new(ReadMetadata::new(session.clone()));
        let decollage: TaskRef = Arc::new(DecollageImages::new(session.clone(), metadata, options));
        let last = match delivery {
            Some(delivery) => Arc::new(UploadToS3::new(
                session.clone(),
                decollage,
                delivery.destination,
                delivery.options,
            )),
            None => decollage,
        };
        FlowCamPipeline { session, last }
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
        vec![self.last.clone()]
    }

    fn outputs(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }
}

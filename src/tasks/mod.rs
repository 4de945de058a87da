//! The pipeline's tasks, each written against [`crate::engine`] and holding only FlowCam
//! logic: ReadMetadata -> DecollageImages -> UploadToS3, wrapped by FlowCamPipeline.

mod decollage;
pub mod ecotaxa;
pub mod extract_metadata;
pub mod manifest;
mod page_rows;
mod read_metadata;
pub mod registry;
mod session;
mod upload;

pub use decollage::{BlankPolicy, Cutter, DecollageImages, DecollageOptions, Direct};
pub use ecotaxa::ExportEcoTaxa;
pub use extract_metadata::{ExtractMetadata, ExtractOptions};
pub use manifest::{MANIFEST_HEADER, Manifest, ManifestRow};
pub use read_metadata::ReadMetadata;
pub use session::{Session, SessionError, absolute};
pub use upload::{Place, UploadOptions, UploadToS3};

use crate::engine::{Task, TaskRef};
use crate::upload::DestinationConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the pipeline delivers a session, when it does.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub destination: DestinationConfig,
    pub options: UploadOptions,
    /// Upload the EcoTaxa zip too (implies making it).
    pub upload_ecotaxa: bool,
}

/// What the pipeline makes besides the vignettes.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    pub decollage: DecollageOptions,
    pub extract: ExtractOptions,
    /// Export for EcoTaxa (PNG vignettes, TSV, zip).
    pub ecotaxa: bool,
}

impl From<DecollageOptions> for PipelineOptions {
    fn from(decollage: DecollageOptions) -> PipelineOptions {
        PipelineOptions {
            decollage,
            extract: ExtractOptions::default(),
            ecotaxa: false,
        }
    }
}

/// The root task for one session: complete when everything it requires is. It requires
/// the upload when there is a destination, else the vignettes, and the EcoTaxa export
/// when asked for.
pub struct FlowCamPipeline {
    session: Arc<Session>,
    last: Vec<TaskRef>,
}

impl FlowCamPipeline {
    pub fn new(
        session: Arc<Session>,
        options: impl Into<PipelineOptions>,
        delivery: Option<Delivery>,
    ) -> FlowCamPipeline {
        let options = options.into();
        let metadata: TaskRef = Arc::new(ReadMetadata::new(session.clone()));
        let extract: TaskRef = Arc::new(
            ExtractMetadata::new(session.clone(), metadata.clone(), options.extract)
                .hand_over_pages(),
        );
        let mut decollage = DecollageImages::new(session.clone(), metadata, options.decollage)
            .with_record(extract.clone());
        if let Some(delivery) = delivery.as_ref().filter(|d| d.options.direct) {
            decollage = decollage.deliver_to(Direct {
                place: Place::new(
                    &session,
                    delivery.destination.clone(),
                    delivery.options.prefix.as_deref(),
                ),
                verify_remote: delivery.options.verify_remote,
            });
        }
        let decollage = Arc::new(decollage);
        let upload_ecotaxa = delivery.as_ref().is_some_and(|d| d.upload_ecotaxa);
        let export = (options.ecotaxa || upload_ecotaxa).then(|| {
            let export = ExportEcoTaxa::new(session.clone(), decollage.clone());
            Arc::new(match decollage.is_direct() {
                true => export.cut_from(decollage.clone()),
                false => export,
            })
        });
        let decollage: TaskRef = decollage;
        let mut last: Vec<TaskRef> = Vec::new();
        match delivery {
            Some(mut delivery) => {
                let zip = export.as_ref().filter(|_| delivery.upload_ecotaxa);
                delivery.options.extra = zip.map(|e| e.zip());
                let mut upload = UploadToS3::new(
                    session.clone(),
                    decollage.clone(),
                    delivery.destination,
                    delivery.options,
                );
                if let Some(export) = zip {
                    upload = upload.with_extra(export.clone());
                }
                last.push(Arc::new(upload));
            }
            None => last.push(decollage),
        }
        if let Some(export) = export {
            last.push(export);
        }
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
        self.last.clone()
    }

    fn outputs(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn state_dir(&self) -> PathBuf {
        self.session.state_dir()
    }
}

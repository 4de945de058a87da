//! Delivering files to an object store or an upload API, knowing nothing of FlowCam or of
//! the engine: one [`Destination`] trait, its S3 and upload-API implementations, and the
//! [`Ledger`] that remembers what each destination confirmed.

pub mod api;
mod destination;
pub mod ledger;
pub mod s3;

pub use api::{ApiDestination, ApiSettings};
pub use destination::{
    Destination, Outgoing, RemoteObject, UploadError, excerpt, redact, root_cause,
};
pub use ledger::{Ledger, LedgerEntry};
pub use s3::{S3Destination, S3Settings};

/// Which destination to use, before connecting to it.
#[derive(Debug, Clone)]
pub enum DestinationConfig {
    S3(S3Settings),
    Api(ApiSettings),
}

impl DestinationConfig {
    /// Names the destination in messages, stamps and the ledger; never holds a secret.
    pub fn describe(&self) -> String {
        match self {
            DestinationConfig::S3(s) => s.describe(),
            DestinationConfig::Api(a) => a.describe(),
        }
    }

    pub fn connect(&self) -> Result<Box<dyn Destination>, UploadError> {
        Ok(match self {
            DestinationConfig::S3(s) => Box::new(S3Destination::connect(s.clone())?),
            DestinationConfig::Api(a) => Box::new(ApiDestination::connect(a.clone())?),
        })
    }
}

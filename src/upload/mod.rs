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

/// What selects and tunes a destination, as the command line, the configuration file and
/// the operation bridge give it.
#[derive(Debug, Clone)]
pub struct DestinationOptions {
    pub bucket: String,
    /// The upload API; `None` means S3 directly.
    pub api_url: Option<String>,
    /// The S3 endpoint, already resolved (command line, environment, file).
    pub endpoint: Option<String>,
    pub api_batch_size: usize,
    pub concurrency: usize,
    pub create_bucket: bool,
}

impl DestinationConfig {
    /// The upload API when a URL is given, else S3.
    pub fn new(options: DestinationOptions) -> DestinationConfig {
        match options.api_url {
            Some(url) => DestinationConfig::Api(ApiSettings {
                url,
                bucket: options.bucket,
                batch_size: options.api_batch_size,
                concurrency: options.concurrency,
            }),
            None => {
                let mut s3 = S3Settings::new(options.bucket);
                s3.endpoint = options.endpoint;
                s3.concurrency = options.concurrency;
                s3.create_bucket = options.create_bucket;
                DestinationConfig::S3(s3)
            }
        }
    }

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

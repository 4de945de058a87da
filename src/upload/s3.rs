//! The S3 destination: AWS S3, the JASMIN object store, Garage, MinIO, Ceph.
//!
//! Configuration in one place ([`S3Settings`]): credentials through the standard AWS chain
//! (environment, which a `.env` file feeds, then profile, then instance roles); a custom
//! endpoint means path-style addressing; a default region when none is set; request
//! checksums only where the operation requires them, since several S3-compatible stores
//! reject the SDK's default CRC headers. Integrity comes from Content-MD5 instead, which
//! every S3 implementation verifies. Retries with exponential backoff (throttling, 5xx,
//! dropped connections) are the SDK's standard retry strategy, configured here.

use crate::upload::destination::{Destination, Outgoing, RemoteObject, UploadError};
use crate::upload::destination::{redact, root_cause};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ProvideCredentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use base64::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The region used when neither the environment nor a profile sets one. S3-compatible
/// stores mostly ignore it, but request signing needs one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where and how to reach the bucket. Holds no secrets: those stay in the credential chain.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// A custom endpoint (JASMIN, Garage, MinIO); `None` means AWS itself.
    pub endpoint: Option<String>,
    /// `None`: from `AWS_REGION` or the profile, else [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// Requests in flight.
    pub concurrency: usize,
    /// Create the bucket when it does not exist.
    pub create_bucket: bool,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
}

impl S3Settings {
    pub fn new(bucket: impl Into<String>) -> S3Settings {
        S3Settings {
            bucket: bucket.into(),
            endpoint: None,
            region: None,
            concurrency: 32,
            create_bucket: false,
            max_attempts: 4,
        }
    }

    /// The endpoint: the command line's, else `AWS_ENDPOINT_URL`, else `AWS_URL_ENDPOINT`
    /// (the name the Python pipeline used).
    pub fn endpoint_from(cli: Option<&str>) -> Option<String> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        cli.map(str::to_string)
            .or_else(|| from_env("AWS_ENDPOINT_URL"))
            .or_else(|| from_env("AWS_URL_ENDPOINT"))
    }

    /// `s3://bucket at http://host:port` (or `at AWS`): names the destination in messages,
    /// stamps and the ledger.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("s3://{} at {endpoint}", self.bucket),
            None => format!("s3://{} at AWS", self.bucket),
        }
    }
}

pub struct S3Destination {
    settings: S3Settings,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    /// The access key id and secret, kept only to scrub them from any message.
    secrets: Vec<String>,
}

impl S3Destination {
    /// Loads `.env`-fed credentials and configuration and builds the client. Fails (with
    /// what to do) when no credentials can be found; whether the server accepts them is
    /// [`Destination::check`]'s job.
    pub fn connect(settings: S3Settings) -> Result<S3Destination, UploadError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()
            .map_err(|e| UploadError::Destination(format!("cannot start the S3 client: {e}")))?;
        let (client, secrets) = runtime.block_on(async {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(region) = &settings.region {
                loader = loader.region(Region::new(region.clone()));
            }
            let shared = loader.load().await;
            // The chain's last error is about instance metadata (IMDS), which confuses more
            // than it helps on a lab PC: say where credentials are looked for instead.
            let no_credentials = || {
                UploadError::Destination(
                    "no S3 credentials found (looked in the environment, .env, the AWS profile \
                     and instance metadata): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in \
                     a .env file in the working folder or in the environment, or name a profile \
                     with AWS_PROFILE"
                        .to_string(),
                )
            };
            let provider = shared.credentials_provider().ok_or_else(no_credentials)?;
            let credentials = provider.provide_credentials().await.map_err(|e| {
                tracing::debug!("credential chain: {}", root_cause(&e));
                no_credentials()
            })?;
            let secrets = vec![
                credentials.access_key_id().to_string(),
                credentials.secret_access_key().to_string(),
            ];
            let region = shared
                .region()
                .cloned()
                .unwrap_or_else(|| Region::new(DEFAULT_REGION));
            let mut config = aws_sdk_s3::config::Builder::from(&shared)
                .region(region)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(settings.max_attempts.max(1))
                        .with_initial_backoff(Duration::from_millis(200))
                        .with_max_backoff(Duration::from_secs(10)),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(10))
                        .operation_attempt_timeout(Duration::from_secs(120))
                        .build(),
                );
            if let Some(endpoint) = &settings.endpoint {
                config = config.endpoint_url(endpoint).force_path_style(true);
            }
            Ok::<_, UploadError>((aws_sdk_s3::Client::from_conf(config.build()), secrets))
        })?;
        Ok(S3Destination {
            settings,
            runtime,
            client,
            secrets,
        })
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    fn scrub(&self, message: String) -> String {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        redact(&message, &secrets)
    }

    /// Turns an SDK error into a one-line cause and what to do.
    fn classify<E>(&self, error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> UploadError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let place = self.settings.describe();
        let endpoint = self
            .settings
            .endpoint
            .clone()
            .unwrap_or_else(|| "AWS S3".to_string());
        let attempts = self.settings.max_attempts;
        let error = match &error {
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                let code = context.err().code().unwrap_or("").to_string();
                let message = context.err().message().unwrap_or("").to_string();
                let detail = match (code.is_empty(), message.is_empty()) {
                    (false, false) => format!("{code}: {message}"),
                    (false, true) => code.clone(),
                    (true, _) => format!("HTTP {status}"),
                };
                match (code.as_str(), status) {
                    ("NoSuchBucket", _) => UploadError::Destination(format!(
                        "bucket {} does not exist at {endpoint}: create it, or rerun with \
                         --create-bucket",
                        self.settings.bucket
                    )),
                    (
                        "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "InvalidToken"
                        | "ExpiredToken"
                        | "InvalidClientTokenId",
                        _,
                    )
                    | (_, 401) => UploadError::Destination(format!(
                        "{place} refused the credentials ({detail}): check \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in .env or the environment"
                    )),
                    ("AccessDenied" | "AllAccessDisabled", _) | (_, 403) => {
                        UploadError::Destination(format!(
                            "{place} denied access ({detail}): check AWS_ACCESS_KEY_ID and \
                             AWS_SECRET_ACCESS_KEY in .env or the environment, and that this \
                             key may read and write the bucket"
                        ))
                    }
                    ("BadDigest" | "InvalidDigest", _) => UploadError::Object(format!(
                        "the server rejected the body ({detail}): it did not match \
                         its MD5, so it was damaged on the way; the next run sends it again"
                    )),
                    (_, 500..) => UploadError::Destination(format!(
                        "{place} kept failing (HTTP {status}, {detail}) after {attempts} \
                         attempts; rerun later to resume"
                    )),
                    _ => UploadError::Object(format!("{place} answered HTTP {status} ({detail})")),
                }
            }
            SdkError::DispatchFailure(failure) if failure.is_timeout() => {
                UploadError::Destination(format!(
                    "{endpoint} did not answer in time after {attempts} attempts: check \
                     --s3-endpoint (or AWS_ENDPOINT_URL) and the network; rerun to resume"
                ))
            }
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                UploadError::Destination(format!(
                    "cannot reach {endpoint} ({}) after {attempts} attempts: check \
                     --s3-endpoint (or AWS_ENDPOINT_URL) and the network; rerun to resume",
                    root_cause(&error)
                ))
            }
            SdkError::TimeoutError(_) => UploadError::Destination(format!(
                "{endpoint} did not answer in time after {attempts} attempts: check \
                 --s3-endpoint (or AWS_ENDPOINT_URL) and the network; rerun to resume"
            )),
            _ => UploadError::Destination(format!(
                "S3 request to {place} failed: {}",
                root_cause(&error)
            )),
        };
        match error {
            UploadError::Destination(m) => UploadError::Destination(self.scrub(m)),
            UploadError::Object(m) => UploadError::Object(self.scrub(m)),
        }
    }

    /// The PutObject request for `object`, ready to send.
    fn put(
        &self,
        object: &Outgoing,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let md5 = base64::engine::general_purpose::STANDARD.encode(object.md5);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(&object.key)
            .content_type(object.content_type)
            .content_md5(md5)
            .content_length(object.body.len() as i64)
            .body(ByteStream::from(object.body.clone()));
        for (name, value) in &object.metadata {
            request = request.metadata(name, value);
        }
        request
    }

    /// Lists at most one key: proves the endpoint answers, the credentials are accepted and
    /// the bucket exists (a GET, unlike HeadBucket, carries the error code in its body).
    async fn probe(&self, may_create: bool) -> Result<(), UploadError> {
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .max_keys(1)
            .send()
            .await;
        match listed {
            Ok(_) => Ok(()),
            Err(e) if may_create && e.code() == Some("NoSuchBucket") => {
                self.create_bucket().await?;
                Box::pin(self.probe(false)).await
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn create_bucket(&self) -> Result<(), UploadError> {
        let region = self
            .client
            .config()
            .region()
            .map(|r| r.as_ref().to_string())
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let mut request = self.client.create_bucket().bucket(&self.settings.bucket);
        // AWS wants the region named everywhere but in us-east-1.
        if region != DEFAULT_REGION {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        request.send().await.map_err(|e| self.classify(e))?;
        tracing::info!(bucket = %self.settings.bucket, "created the bucket");
        Ok(())
    }
}

impl Destination for S3Destination {
    fn batch_size(&self) -> usize {
        1
    }

    fn concurrency(&self) -> usize {
        self.settings.concurrency.max(1)
    }

    fn check(&self) -> Result<(), UploadError> {
        self.runtime
            .block_on(self.probe(self.settings.create_bucket))
    }

    /// Every object of the batch at once, `concurrency` in flight; the first failure that
    /// dooms the rest wins over one that concerns a single object.
    fn send(&self, batch: &[Outgoing]) -> Result<(), UploadError> {
        self.runtime.block_on(async {
            let permits = Arc::new(Semaphore::new(self.concurrency()));
            let mut tasks = tokio::task::JoinSet::new();
            for (index, object) in batch.iter().enumerate() {
                let request = self.put(object);
                let permits = permits.clone();
                tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    (index, request.send().await)
                });
            }
            let mut failure: Option<UploadError> = None;
            while let Some(joined) = tasks.join_next().await {
                let error = match joined {
                    Ok((_, Ok(_))) => continue,
                    Ok((index, Err(e))) => match self.classify(e) {
                        // One object's batch is named by its caller already.
                        UploadError::Object(m) if batch.len() > 1 => {
                            UploadError::Object(format!("{}: {m}", batch[index].key))
                        }
                        other => other,
                    },
                    Err(e) => UploadError::Destination(format!(
                        "a PutObject to {} failed: {e}",
                        self.settings.describe()
                    )),
                };
                if !matches!(failure, Some(UploadError::Destination(_))) {
                    failure = Some(error);
                }
            }
            failure.map_or(Ok(()), Err)
        })
    }

    fn list(&self, prefix: &str) -> Result<Option<Vec<RemoteObject>>, UploadError> {
        self.runtime.block_on(async {
            let mut found = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.classify(e))?;
                for object in page.contents() {
                    let (Some(key), Some(size)) = (object.key(), object.size()) else {
                        continue;
                    };
                    found.push(RemoteObject {
                        key: key.to_string(),
                        size: size.max(0) as u64,
                        etag: object.e_tag().unwrap_or("").trim_matches('"').to_string(),
                    });
                }
            }
            Ok(Some(found))
        })
    }

    /// HeadObject for each key, `concurrency` in flight. Listing is the better check for
    /// this destination (`--verify-remote` lists); this answers for single keys.
    fn exists(&self, keys: &[String]) -> Result<Vec<bool>, UploadError> {
        self.runtime.block_on(async {
            let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for (index, key) in keys.iter().enumerate() {
                let head = self
                    .client
                    .head_object()
                    .bucket(&self.settings.bucket)
                    .key(key);
                let permits = permits.clone();
                tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    (index, head.send().await)
                });
            }
            let mut found = vec![false; keys.len()];
            while let Some(joined) = tasks.join_next().await {
                let (index, answer) = joined.map_err(|e| {
                    UploadError::Destination(format!(
                        "a HeadObject at {} failed: {e}",
                        self.settings.describe()
                    ))
                })?;
                found[index] = match answer {
                    Ok(_) => true,
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => false,
                    Err(e) => {
                        return Err(match self.classify(e) {
                            UploadError::Object(m) => {
                                UploadError::Object(format!("{}: {m}", keys[index]))
                            }
                            destination => destination,
                        });
                    }
                };
            }
            Ok(found)
        })
    }
}

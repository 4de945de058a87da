//! The upload API destination: the lab's FastAPI service, `POST /upload/` with a multipart
//! form of a `bucket_name` field and one `files` part per file, at most 999 files a request.
//!
//! Each part's file name is our object key (`[<prefix>/]<experiment>/<file>`); the service
//! stores the file under `/` followed by that name, so the bucket holds the layout of a
//! direct S3 upload with a leading slash (stores that drop leading slashes, as Garage does,
//! hold exactly that layout). Look-ups use the service's key, so they agree with it either
//! way.
//!
//! A 2xx answer is not a confirmation: the service answers 200 even when its writes to the
//! store failed (it swallows each file's error). So after a 2xx every file of the batch is
//! looked up with `POST /check-file-exist/` (form fields `bucket_name` and `filename`, the
//! service's own key `/<key>`; answer `{"exists": true|false}`), at most
//! [`ApiSettings::concurrency`] look-ups in flight for the whole destination, and the batch
//! counts as delivered only when every file is there. A batch with a file missing fails
//! (naming the missing files) and is sent again on the next run; a service without the
//! look-up endpoint cannot confirm anything and stops the upload. Any other non-2xx answer
//! fails that batch (its status and the start of the body in the message).
//!
//! The look-up only says whether a key exists, not its size or checksum: that is all
//! `--verify-remote` can check through this destination (see [`Destination::exists`]).

use crate::upload::destination::{Destination, Outgoing, RemoteObject, UploadError};
use crate::upload::destination::{excerpt, root_cause};
use reqwest::multipart::{Form, Part};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The service's limit on files per request.
pub const MAX_BATCH: usize = 999;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The service's base URL (`http://host:8000`) or its upload URL (`.../upload/`).
    pub url: String,
    pub bucket: String,
    pub batch_size: usize,
    /// Requests in flight.
    pub concurrency: usize,
}

impl ApiSettings {
    /// The URL the batches are posted to: `<base>/upload/` unless the URL already names it.
    pub fn upload_url(&self) -> Result<reqwest::Url, String> {
        self.endpoint_url("upload")
    }

    /// The URL that says whether a key exists: `<base>/check-file-exist/`, where the base
    /// is found as for [`ApiSettings::upload_url`] (the URL given, less a final `/upload/`).
    pub fn check_url(&self) -> Result<reqwest::Url, String> {
        self.endpoint_url("check-file-exist")
    }

    fn endpoint_url(&self, endpoint: &str) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("--api-url {}: {e}", public_url(&self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "--api-url {}: only http and https URLs are supported",
                public_url(&self.url)
            ));
        }
        let path = url.path().trim_end_matches('/');
        let base = path.strip_suffix("/upload").unwrap_or(path).to_string();
        url.set_path(&format!("{base}/{endpoint}/"));
        Ok(url)
    }

    /// `api:<url> bucket <bucket>`, without any user name, password or query in the URL.
    pub fn describe(&self) -> String {
        format!(
            "upload API {} (bucket {})",
            public_url(&self.url),
            self.bucket
        )
    }
}

/// A URL with user information and query removed, fit to print.
fn public_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_string(),
    }
}

pub struct ApiDestination {
    settings: ApiSettings,
    url: reqwest::Url,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    checker: Arc<Checker>,
}

/// What a look-up task needs, shared by every task (they run on the runtime, so they own
/// it rather than borrow the destination).
struct Checker {
    client: reqwest::Client,
    url: reqwest::Url,
    bucket: String,
    place: String,
    /// One permit per look-up in flight: the bound holds for the whole destination, not
    /// per batch, since several batches are confirmed at once.
    permits: Semaphore,
}

/// The key the service stores a file under: `/` and the part's file name (our key).
pub fn service_key(key: &str) -> String {
    format!("/{key}")
}

/// "batch of 7 files (a .. b)" or "file a", for messages.
fn describe_batch(batch: &[Outgoing]) -> String {
    match (batch.first(), batch.last()) {
        (Some(first), Some(last)) if batch.len() > 1 => {
            format!(
                "batch of {} files ({} .. {})",
                batch.len(),
                first.key,
                last.key
            )
        }
        (Some(first), _) => format!("file {}", first.key),
        _ => "empty batch".to_string(),
    }
}

/// At most this many keys are named in a message; the rest are counted.
const NAMED_KEYS: usize = 10;

fn name_keys(keys: &[&str]) -> String {
    let mut text = keys
        .iter()
        .take(NAMED_KEYS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > NAMED_KEYS {
        text.push_str(&format!(" and {} more", keys.len() - NAMED_KEYS));
    }
    text
}

impl ApiDestination {
    pub fn connect(settings: ApiSettings) -> Result<ApiDestination, UploadError> {
        let url = settings.upload_url().map_err(UploadError::Destination)?;
        let check_url = settings.check_url().map_err(UploadError::Destination)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("api-io")
            .enable_all()
            .build()
            .map_err(|e| UploadError::Destination(format!("cannot start the HTTP client: {e}")))?;
        // A redirect would turn the POST into a GET (dropping the files) whose 2xx answer
        // would look like a confirmation: never follow one.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| UploadError::Destination(format!("cannot build the HTTP client: {e}")))?;
        let checker = Arc::new(Checker {
            client: client.clone(),
            url: check_url,
            bucket: settings.bucket.clone(),
            place: settings.describe(),
            permits: Semaphore::new(settings.concurrency.max(1)),
        });
        Ok(ApiDestination {
            settings,
            url,
            runtime,
            client,
            checker,
        })
    }

    /// Posts the batch; `Ok` only for a 2xx answer, which does not yet mean it was stored.
    async fn post(&self, batch: &[Outgoing]) -> Result<u16, UploadError> {
        let place = self.settings.describe();
        let mut form = Form::new().text("bucket_name", self.settings.bucket.clone());
        for object in batch {
            let part = Part::bytes(object.body.clone())
                .file_name(object.key.clone())
                .mime_str(object.content_type)
                .map_err(|e| UploadError::Object(format!("{}: {e}", object.key)))?;
            form = form.part("files", part);
        }
        let what = describe_batch(batch);
        let response = self
            .client
            .post(self.url.clone())
            .multipart(form)
            .send()
            .await
            .map_err(|e| unreachable(&place, &self.url, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        if status.is_redirection() {
            return Err(UploadError::Destination(format!(
                "{place} answered HTTP {} (a redirect to {}) for the {what}: nothing was \
                 stored; give the final URL with --api-url",
                status.as_u16(),
                redirect_target(&response)
            )));
        }
        let body = response.text().await.unwrap_or_default();
        let message = format!(
            "{place} answered HTTP {} for the {what}: {}",
            status.as_u16(),
            excerpt(&body, 200)
        );
        match status.as_u16() {
            // Wrong URL or refused access: every batch would get the same answer.
            401 | 403 | 404 | 405 => Err(UploadError::Destination(format!(
                "{message}; check --api-url and the service's access rules"
            ))),
            _ => Err(UploadError::Object(format!(
                "{message}; the batch is sent again on the next run"
            ))),
        }
    }

    /// Whether each key exists, in order, at most `concurrency` look-ups in flight in all.
    /// The first failed look-up ends the others and is the answer.
    async fn look_up(&self, keys: &[String]) -> Result<Vec<bool>, UploadError> {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, key) in keys.iter().enumerate() {
            let checker = self.checker.clone();
            let key = key.clone();
            tasks.spawn(async move { (index, checker.exists(&key).await) });
        }
        let mut found = vec![false; keys.len()];
        while let Some(joined) = tasks.join_next().await {
            let (index, exists) = joined.map_err(|e| {
                UploadError::Destination(format!(
                    "a look-up at the {} failed: {e}",
                    self.checker.place
                ))
            })?;
            found[index] = exists?;
        }
        Ok(found)
    }

    /// Posts the batch and, after a 2xx, confirms that every file of it is stored.
    async fn deliver(&self, batch: &[Outgoing]) -> Result<(), UploadError> {
        let status = self.post(batch).await?;
        let keys: Vec<String> = batch.iter().map(|o| o.key.clone()).collect();
        let place = self.settings.describe();
        let what = describe_batch(batch);
        let found = self.look_up(&keys).await.map_err(|e| match e {
            UploadError::Object(m) => UploadError::Object(format!(
                "{place} answered HTTP {status} for the {what} but it could not be confirmed \
                 ({m}); the batch is sent again on the next run"
            )),
            destination => destination,
        })?;
        let missing: Vec<&str> = keys
            .iter()
            .zip(&found)
            .filter(|(_, there)| !**there)
            .map(|(key, _)| key.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let how_many = if batch.len() == 1 {
            "it".to_string()
        } else {
            format!("{} of them", missing.len())
        };
        Err(UploadError::Object(format!(
            "{place} answered HTTP {status} for the {what} but did not store {how_many}: {}; \
             the batch is sent again on the next run",
            name_keys(&missing)
        )))
    }
}

impl Checker {
    /// `POST /check-file-exist/` for one of our keys.
    async fn exists(&self, key: &str) -> Result<bool, UploadError> {
        let _permit = self.permits.acquire().await.map_err(|e| {
            UploadError::Destination(format!("look-ups at the {} stopped: {e}", self.place))
        })?;
        let place = &self.place;
        let filename = service_key(key);
        let form = Form::new()
            .text("bucket_name", self.bucket.clone())
            .text("filename", filename.clone());
        let response = self
            .client
            .post(self.url.clone())
            .multipart(form)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| unreachable(place, &self.url, &e))?;
        let status = response.status();
        let endpoint = public_url(self.url.as_str());
        if status.is_redirection() {
            return Err(UploadError::Destination(format!(
                "{place} answered HTTP {} (a redirect to {}) when asked whether {filename} \
                 exists at {endpoint}: give the final URL with --api-url",
                status.as_u16(),
                redirect_target(&response)
            )));
        }
        let body = response.text().await.unwrap_or_default();
        match status.as_u16() {
            200 => {}
            404 | 405 => {
                return Err(UploadError::Destination(format!(
                    "{place} has no check-file-exist endpoint (HTTP {} from {endpoint}), so it \
                     cannot confirm deliveries and nothing is recorded as delivered: give \
                     --api-url a service that offers POST /check-file-exist/",
                    status.as_u16()
                )));
            }
            401 | 403 => {
                return Err(UploadError::Destination(format!(
                    "{place} refused to say whether {filename} exists (HTTP {}: {}): check \
                     the service's access rules",
                    status.as_u16(),
                    excerpt(&body, 200)
                )));
            }
            code => {
                return Err(UploadError::Object(format!(
                    "asked whether {filename} exists, it answered HTTP {code}: {}",
                    excerpt(&body, 200)
                )));
            }
        }
        let answer: Option<bool> = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("exists").and_then(serde_json::Value::as_bool));
        answer.ok_or_else(|| {
            UploadError::Destination(format!(
                "{place} answered whether {filename} exists ({endpoint}) with {:?}, not \
                 {{\"exists\": true|false}}: check --api-url",
                excerpt(&body, 100)
            ))
        })
    }
}

/// The message for a request that got no answer, without the URL's secrets.
fn unreachable(place: &str, url: &reqwest::Url, error: &reqwest::Error) -> UploadError {
    let cause = root_cause(error).replace(url.as_str(), &public_url(url.as_str()));
    UploadError::Destination(format!(
        "cannot reach the {place} ({cause}): check --api-url and the network; rerun to resume"
    ))
}

/// Where a redirect points, fit to print.
fn redirect_target(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(public_url)
        .unwrap_or_else(|| "nowhere".to_string())
}

impl Destination for ApiDestination {
    fn batch_size(&self) -> usize {
        self.settings.batch_size.clamp(1, MAX_BATCH)
    }

    fn concurrency(&self) -> usize {
        self.settings.concurrency.max(1)
    }

    fn check(&self) -> Result<(), UploadError> {
        // The contract has no harmless request to probe with; the first batch tells.
        Ok(())
    }

    fn send(&self, batch: &[Outgoing]) -> Result<(), UploadError> {
        self.runtime.block_on(self.deliver(batch))
    }

    fn list(&self, _prefix: &str) -> Result<Option<Vec<RemoteObject>>, UploadError> {
        Ok(None)
    }

    fn exists(&self, keys: &[String]) -> Result<Vec<bool>, UploadError> {
        self.runtime.block_on(self.look_up(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> ApiSettings {
        ApiSettings {
            url: url.to_string(),
            bucket: "b".to_string(),
            batch_size: 999,
            concurrency: 4,
        }
    }

    #[test]
    fn upload_url_is_derived_from_the_base() {
        for (given, expected) in [
            ("http://h:8000", "http://h:8000/upload/"),
            ("http://h:8000/", "http://h:8000/upload/"),
            ("http://h:8000/upload", "http://h:8000/upload/"),
            ("http://h:8000/upload/", "http://h:8000/upload/"),
            ("https://h/api", "https://h/api/upload/"),
        ] {
            assert_eq!(settings(given).upload_url().unwrap().as_str(), expected);
        }
        assert!(settings("ftp://h/").upload_url().is_err());
        assert!(settings("ftp://h/").check_url().is_err());
        assert!(settings("not a url").upload_url().is_err());
    }

    #[test]
    fn check_url_is_derived_like_the_upload_url() {
        for (given, expected) in [
            ("http://h:8000", "http://h:8000/check-file-exist/"),
            ("http://h:8000/", "http://h:8000/check-file-exist/"),
            ("http://h:8000/upload", "http://h:8000/check-file-exist/"),
            ("http://h:8000/upload/", "http://h:8000/check-file-exist/"),
            ("https://h/api/upload/", "https://h/api/check-file-exist/"),
            ("https://h/api", "https://h/api/check-file-exist/"),
        ] {
            assert_eq!(settings(given).check_url().unwrap().as_str(), expected);
        }
    }

    #[test]
    fn the_service_key_has_a_leading_slash() {
        assert_eq!(service_key("p/exp/a.tif"), "/p/exp/a.tif");
    }

    #[test]
    fn long_key_lists_are_cut() {
        let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let text = name_keys(&refs);
        assert!(text.starts_with("k0, k1, "), "{text}");
        assert!(text.ends_with("k9 and 2 more"), "{text}");
        assert_eq!(name_keys(&refs[..2]), "k0, k1");
    }

    #[test]
    fn descriptions_hide_user_information_and_queries() {
        let text = settings("https://user:pa55word@h/api?token=t0ken").describe();
        assert!(
            !text.contains("pa55word") && !text.contains("t0ken"),
            "{text}"
        );
        assert!(text.contains("https://h/api"), "{text}");
    }
}

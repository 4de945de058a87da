//! The upload API destination: the lab's FastAPI service, `POST /upload/` with a multipart
//! form of a `bucket_name` field and one `files` part per file, at most 999 files a request.
//!
//! Each part's file name is the object key (`[<prefix>/]<experiment>/<file>`), so the
//! service can store the same layout as a direct S3 upload. A batch is confirmed only by a
//! 2xx answer; anything else fails that batch (its status and the start of the body in
//! the message) and the next run sends it again.

use crate::upload::destination::{Destination, Outgoing, RemoteObject, UploadError};
use crate::upload::destination::{excerpt, root_cause};
use reqwest::multipart::{Form, Part};
use std::time::Duration;

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
        let mut url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("--api-url {}: {e}", public_url(&self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "--api-url {}: only http and https URLs are supported",
                public_url(&self.url)
            ));
        }
        let path = url.path().trim_end_matches('/').to_string();
        if !path.ends_with("/upload") {
            url.set_path(&format!("{path}/upload/"));
        } else {
            url.set_path(&format!("{path}/"));
        }
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
}

impl ApiDestination {
    pub fn connect(settings: ApiSettings) -> Result<ApiDestination, UploadError> {
        let url = settings.upload_url().map_err(UploadError::Destination)?;
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
        Ok(ApiDestination {
            settings,
            url,
            runtime,
            client,
        })
    }

    async fn post(&self, batch: &[Outgoing]) -> Result<(), UploadError> {
        let place = self.settings.describe();
        let mut form = Form::new().text("bucket_name", self.settings.bucket.clone());
        for object in batch {
            let part = Part::bytes(object.body.clone())
                .file_name(object.key.clone())
                .mime_str(object.content_type)
                .map_err(|e| UploadError::Object(format!("{}: {e}", object.key)))?;
            form = form.part("files", part);
        }
        let what = match (batch.first(), batch.last()) {
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
        };
        let response = self
            .client
            .post(self.url.clone())
            .multipart(form)
            .send()
            .await
            .map_err(|e| {
                let cause =
                    root_cause(&e).replace(self.url.as_str(), &public_url(self.url.as_str()));
                UploadError::Destination(format!(
                    "cannot reach the {place} ({cause}): check --api-url and the network; \
                     rerun to resume"
                ))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(public_url)
                .unwrap_or_else(|| "nowhere".to_string());
            return Err(UploadError::Destination(format!(
                "{place} answered HTTP {} (a redirect to {location}) for the {what}: nothing \
                 was stored; give the final URL with --api-url",
                status.as_u16()
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
        self.runtime.block_on(self.post(batch))
    }

    fn list(&self, _prefix: &str) -> Result<Option<Vec<RemoteObject>>, UploadError> {
        Ok(None)
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
        assert!(settings("not a url").upload_url().is_err());
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

//! A small real implementation of the lab's upload API for the tests, laid out as the real
//! one (NERC-CEH object_store_api) is:
//!
//! - `POST /upload/`, a multipart form with a `bucket_name` field and one `files` part per
//!   file, at most 999 files. It writes each file into the Garage bucket under `/` and the
//!   part's file name (the real service's key has that leading slash), and remembers how
//!   many files each request carried. It can be told to fail one request with HTTP 500,
//!   or, as the real service does when its writes fail, to answer 200 and store nothing or
//!   not some files.
//! - `POST /check-file-exist/`, form fields `bucket_name` and `filename` (the service's
//!   key, slash included): 200 `{"exists": true}` or `{"exists": false}` from a HeadObject.
//!   It can be switched off (404, as for any unknown path).
//!
//! Garage drops leading slashes from keys (its router trims them), so `/a/b` and `a/b` are
//! one object here and the tests find the files under the part's file name. A store that
//! keeps keys verbatim (AWS S3) has only `/a/b`: to behave like the service in front of
//! one, `/check-file-exist/` says a `filename` without the leading slash does not exist.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::routing::post;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Shared {
    /// Files per request, in arrival order (failed requests included).
    requests: Vec<usize>,
    /// Answer the request with this 1-based number with HTTP 500.
    fail_request: Option<usize>,
    storing: Storing,
    /// `/check-file-exist/` answers 404, as a service without it would.
    no_check: bool,
    /// Look-ups so far.
    checks: usize,
}

/// What `/upload/` writes before answering 200.
#[derive(Clone, Default)]
pub enum Storing {
    #[default]
    All,
    Nothing,
    /// Every file but those whose name ends with this.
    AllBut(String),
}

pub struct UploadApi {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct App {
    shared: Arc<Mutex<Shared>>,
    s3: aws_sdk_s3::Client,
}

impl UploadApi {
    pub fn start(s3: aws_sdk_s3::Client) -> UploadApi {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = App {
            shared: shared.clone(),
            s3,
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new()
            .route("/upload/", post(upload))
            .route("/check-file-exist/", post(check_file_exist))
            // A proxy that moved the service: it reads the request, then redirects to a page
            // that answers 200. (Reading first, as proxies do; answering before the body is
            // in would make the client see a broken pipe instead.)
            .route(
                "/moved/upload/",
                post(|_body: axum::body::Bytes| async { axum::response::Redirect::to("/landing") }),
            )
            .route("/landing", axum::routing::get(|| async { "welcome" }))
            .layer(DefaultBodyLimit::disable())
            .with_state(app);
        runtime.spawn(async move { axum::serve(listener, router).await.unwrap() });
        UploadApi {
            url,
            shared,
            _runtime: runtime,
        }
    }

    pub fn fail_request(&self, number: Option<usize>) {
        self.shared.lock().unwrap().fail_request = number;
    }

    pub fn storing(&self, storing: Storing) {
        self.shared.lock().unwrap().storing = storing;
    }

    /// Without `/check-file-exist/` (it answers 404) or with it.
    pub fn check_endpoint(&self, on: bool) {
        self.shared.lock().unwrap().no_check = !on;
    }

    /// Look-ups so far, and forget them.
    pub fn take_checks(&self) -> usize {
        std::mem::take(&mut self.shared.lock().unwrap().checks)
    }

    /// Files per request so far, and forget them.
    pub fn take_requests(&self) -> Vec<usize> {
        std::mem::take(&mut self.shared.lock().unwrap().requests)
    }
}

async fn upload(State(app): State<App>, mut form: Multipart) -> (StatusCode, String) {
    let mut bucket = None;
    let mut files = Vec::new();
    while let Some(field) = form.next_field().await.unwrap() {
        match field.name() {
            Some("bucket_name") => bucket = Some(field.text().await.unwrap()),
            Some("files") => {
                let name = field.file_name().unwrap().to_string();
                let content_type = field.content_type().unwrap_or("").to_string();
                files.push((name, content_type, field.bytes().await.unwrap()));
            }
            other => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown field {other:?}"),
                );
            }
        }
    }
    let (number, storing) = {
        let mut shared = app.shared.lock().unwrap();
        shared.requests.push(files.len());
        let number = shared.requests.len();
        if shared.fail_request == Some(number) {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "{\"detail\": \"simulated storage failure\"}".to_string(),
            );
        }
        (number, shared.storing.clone())
    };
    let Some(bucket) = bucket else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "no bucket_name".to_string(),
        );
    };
    if files.is_empty() || files.len() > 999 {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{} files", files.len()),
        );
    }
    for (name, content_type, bytes) in files {
        let stored = match &storing {
            Storing::All => true,
            Storing::Nothing => false,
            Storing::AllBut(suffix) => !name.ends_with(suffix.as_str()),
        };
        if !stored {
            // The real service logs the failed write and carries on.
            continue;
        }
        app.s3
            .put_object()
            .bucket(&bucket)
            .key(format!("/{name}"))
            .content_type(content_type)
            .body(bytes.to_vec().into())
            .send()
            .await
            .unwrap();
    }
    (StatusCode::OK, format!("{{\"request\": {number}}}"))
}

async fn check_file_exist(State(app): State<App>, mut form: Multipart) -> (StatusCode, String) {
    {
        let mut shared = app.shared.lock().unwrap();
        if shared.no_check {
            return (
                StatusCode::NOT_FOUND,
                "{\"detail\": \"Not Found\"}".to_string(),
            );
        }
        shared.checks += 1;
    }
    let mut bucket = None;
    let mut filename = None;
    while let Some(field) = form.next_field().await.unwrap() {
        match field.name() {
            Some("bucket_name") => bucket = Some(field.text().await.unwrap()),
            Some("filename") => filename = Some(field.text().await.unwrap()),
            other => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("unknown field {other:?}"),
                );
            }
        }
    }
    let (Some(bucket), Some(filename)) = (bucket, filename) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "bucket_name and filename are required".to_string(),
        );
    };
    if !filename.starts_with('/') {
        // Not a key this service writes (see the module's note on leading slashes).
        return (StatusCode::OK, "{\"exists\": false}".to_string());
    }
    let head = app
        .s3
        .head_object()
        .bucket(&bucket)
        .key(&filename)
        .send()
        .await;
    match head {
        Ok(_) => (StatusCode::OK, "{\"exists\": true}".to_string()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => {
            (StatusCode::OK, "{\"exists\": false}".to_string())
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")),
    }
}

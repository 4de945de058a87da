//! A small real implementation of the lab's upload API for the tests: `POST /upload/`, a
//! multipart form with a `bucket_name` field and one `files` part per file, at most 999
//! files. It writes every file into the Garage bucket under the part's file name, and
//! remembers how many files each request carried. It can be told to fail one request.

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
    let number = {
        let mut shared = app.shared.lock().unwrap();
        shared.requests.push(files.len());
        let number = shared.requests.len();
        if shared.fail_request == Some(number) {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "{\"detail\": \"simulated storage failure\"}".to_string(),
            );
        }
        number
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
        app.s3
            .put_object()
            .bucket(&bucket)
            .key(&name)
            .content_type(content_type)
            .body(bytes.to_vec().into())
            .send()
            .await
            .unwrap();
    }
    (StatusCode::OK, format!("{{\"request\": {number}}}"))
}

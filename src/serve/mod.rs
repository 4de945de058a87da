//! `serve`: a web dashboard of the sessions under a root, and its JSON API.
//!
//! One process, nothing to install: the pages are rendered on the server from the same
//! files `status` reads ([`catalog`]), the plots are SVG ([`plots`]), and every read is
//! done off the async threads. Reads are open to whoever can reach the address, which is
//! 127.0.0.1 unless told otherwise; nothing here writes to the root or the outputs.
//!
//! | path | answer |
//! |---|---|
//! | `/` | the sessions, with state and counts; `?state=failed` filters |
//! | `/sessions/NAME` | one session: tasks, plots, `session.json`, runs, log |
//! | `/api/sessions` | the sessions as `status --json` gives them (`?state=` filters) |
//! | `/api/sessions/NAME` | `{"status", "record", "runs"}` |

pub mod catalog;
pub mod pages;
pub mod plots;

use crate::status::SessionState;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use catalog::Catalog;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The longest request target (path and query) answered; longer ones get 414.
pub const MAX_URI: usize = 4096;
/// The largest request body read.
pub const MAX_BODY: usize = 64 * 1024;
/// How long one request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The address `serve` listens on unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The dashboard's routes over `catalog`.
pub fn router(catalog: Catalog) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/sessions/{name}", get(session_page))
        .route("/api/sessions", get(api_sessions))
        .route("/api/sessions/{name}", get(api_session))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(limits))
        .with_state(Arc::new(catalog))
}

/// Serves `catalog` on `listen` until the process is stopped; `ready` is told the bound
/// address (port 0 picks a free one).
pub fn run(
    catalog: Catalog,
    listen: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        ready(listener.local_addr()?);
        axum::serve(listener, router(catalog)).await?;
        Ok(())
    })
}

/// Bounds every request: its target's length and its time.
async fn limits(request: Request, next: Next) -> Response {
    if request.uri().to_string().len() > MAX_URI {
        return (StatusCode::URI_TOO_LONG, "request target too long\n").into_response();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took too long\n",
        )
            .into_response(),
    }
}

type Shared = State<Arc<Catalog>>;

/// Why a request gets no page: each becomes its status code and an error page.
#[derive(Debug)]
enum Failure {
    BadRequest(String),
    NotFound(String),
    /// Logged, never shown: it may name paths of the server.
    Internal(String),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Failure::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Failure::Internal(m) => {
                tracing::error!("serve: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the root could not be read".to_string(),
                )
            }
        };
        (status, Html(pages::error(status.as_u16(), &message))).into_response()
    }
}

type Answer = Result<Response, Failure>;

#[derive(serde::Deserialize)]
struct Filter {
    state: Option<String>,
}

impl Filter {
    fn state(&self) -> Result<Option<SessionState>, Failure> {
        match self.state.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => serde_json::from_value(serde_json::Value::String(s.to_string()))
                .map(Some)
                .map_err(|_| Failure::BadRequest(format!("`{s}` is not a session state"))),
        }
    }
}

/// Runs blocking file reads off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::Internal(e.to_string())),
        Err(e) => Err(Failure::Internal(e.to_string())),
    }
}

fn no_session(name: &str) -> Failure {
    Failure::NotFound(format!("no session {name} under the root"))
}

async fn dashboard(State(catalog): Shared, Query(filter): Query<Filter>) -> Answer {
    let state = filter.state()?;
    let sessions = blocking(move || catalog.sessions(state)).await?;
    Ok(no_store(Html(pages::dashboard(&sessions, state))))
}

async fn session_page(State(catalog): Shared, Path(name): Path<String>) -> Answer {
    let shown = name.clone();
    let found = blocking(move || {
        Ok(catalog.detail(&name)?.map(|detail| {
            let particles = catalog.particles(&detail.status);
            (detail, particles)
        }))
    })
    .await?;
    let (detail, particles) = found.ok_or_else(|| no_session(&shown))?;
    Ok(no_store(Html(pages::session(&shown, &detail, &particles))))
}

async fn api_sessions(State(catalog): Shared, Query(filter): Query<Filter>) -> Answer {
    let state = filter.state()?;
    let sessions = blocking(move || catalog.sessions(state)).await?;
    Ok(no_store(Json(sessions)))
}

async fn api_session(State(catalog): Shared, Path(name): Path<String>) -> Answer {
    let shown = name.clone();
    let detail = blocking(move || catalog.detail(&name)).await?;
    Ok(no_store(Json(detail.ok_or_else(|| no_session(&shown))?)))
}

async fn not_found() -> Failure {
    Failure::NotFound("no such page".to_string())
}

/// Status changes from one moment to the next: never cached.
fn no_store(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

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
//! | `/sessions/NAME/gallery` | the particles as thumbnails, paged, sorted and filtered |
//! | `/sessions/NAME/particles/ID` | one particle: full size, scale bar, measurements, tags |
//! | `/sessions/NAME/thumbnails/FILE`, `/images/FILE` | a vignette as PNG (cached, ETag) |
//! | `/api/sessions/NAME/particles` | the gallery's page as JSON |
//! | `/api/watch` | with `--watch`: the last pass and when the next starts |
//! | `POST /api/orders` | an order (token needed): see [`crate::orders`] |
//! | `/api/orders`, `/api/orders/ID`, `/api/orders/ID/files/NAME` | orders, their state and result files (token needed) |

pub mod catalog;
pub mod orders;
pub mod pages;
pub mod plots;
pub mod source;
pub mod thumbnail;
pub mod watch;

use crate::status::SessionState;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
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

/// The `Host` values a server bound to `address` answers: on loopback only its own names
/// (so that a web page whose name was rebound to 127.0.0.1 cannot read it), anywhere
/// else (the user chose to share it) any.
pub fn allowed_hosts(address: SocketAddr) -> Option<Vec<String>> {
    if !address.ip().is_loopback() {
        return None;
    }
    let port = address.port();
    Some(vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        address.to_string(),
    ])
}

/// The dashboard's routes over `catalog` (and the watcher's state, when it runs one),
/// answering only requests for `hosts` (see [`allowed_hosts`]).
pub fn router(
    catalog: Catalog,
    watch: Option<watch::Watch>,
    desk: Option<orders::Desk>,
    hosts: Option<Vec<String>>,
) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/sessions/{name}", get(session_page))
        .route("/api/sessions", get(api_sessions))
        .route("/api/sessions/{name}", get(api_session))
        .route("/sessions/{name}/gallery", get(gallery_page))
        .route("/sessions/{name}/particles/{id}", get(particle_page))
        .route("/sessions/{name}/thumbnails/{file}", get(thumbnail))
        .route("/sessions/{name}/images/{file}", get(full_image))
        .route("/api/sessions/{name}/particles", get(api_particles))
        .route("/api/watch", get(api_watch))
        .route("/api/orders", post(post_order).get(list_orders))
        .route("/api/orders/{id}", get(show_order))
        .route("/api/orders/{id}/files/{name}", get(order_file))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            limits,
        ))
        .with_state(Arc::new(Service {
            catalog,
            pictures: thumbnail::Cache::default(),
            cuts: source::Cuts::default(),
            watch,
            desk,
        }))
}

/// Serves `catalog` on `listen` until the process is stopped; `ready` is told the bound
/// address (port 0 picks a free one).
/// Serves until `stop` is set (SIGTERM, SIGINT); then lets a pass of the watcher that is
/// running finish its items in flight (the runner starts no new ones) before returning.
pub fn run(
    catalog: Catalog,
    watch: Option<watch::Watch>,
    desk: Option<orders::Desk>,
    listen: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
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
        let address = listener.local_addr()?;
        ready(address);
        let app = router(catalog, watch.clone(), desk, allowed_hosts(address));
        let stopped = stop.clone();
        accept(listener, app, async move {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if let Some(watch) = watch {
            while watch.lock().unwrap_or_else(|e| e.into_inner()).running {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    })
}

/// The most connections served at once; more wait in the kernel's queue.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send a request's headers (a client that trickles them
/// byte by byte, or opens a connection and says nothing, is cut off).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, after a stop, connections still in use may take to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` over HTTP/1.1 until `stop`, then lets the requests in flight
/// finish (for [`DRAIN`] at most). axum's own `serve` sets no timer, so a slow client could
/// hold a connection for ever: here its headers must arrive within [`HEADER_TIMEOUT`], and
/// at most [`MAX_CONNECTIONS`] are served at once.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("serve: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Bounds every request: its host, its target's length and its time.
async fn limits(
    State(hosts): State<Arc<Option<Vec<String>>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(hosts) = hosts.as_ref() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !hosts.contains(&host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this dashboard answers only for its loopback address\n",
            )
                .into_response();
        }
    }
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

/// What the handlers share.
struct Service {
    catalog: Catalog,
    pictures: thumbnail::Cache,
    /// Pages cut lately, for sessions without local vignettes.
    cuts: source::Cuts,
    watch: Option<watch::Watch>,
    desk: Option<orders::Desk>,
}

impl Service {
    /// The bytes of a vignette's TIFF, read or cut from its page.
    fn read_tiff(&self, tiff: &source::Tiff) -> anyhow::Result<Vec<u8>> {
        self.cuts.read(
            tiff,
            &self.catalog.output_root,
            &self.catalog.options.decollage,
        )
    }

    /// A copy of the watcher's state, if it runs one.
    fn watching(&self) -> Option<serde_json::Value> {
        let watch = self.watch.as_ref()?;
        let state = watch.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_value(&*state).ok()
    }
}

impl std::ops::Deref for Service {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        &self.catalog
    }
}

type Shared = State<Arc<Service>>;

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
        (
            status,
            [(header::CACHE_CONTROL, "no-store")],
            Html(pages::error(status.as_u16(), &message)),
        )
            .into_response()
    }
}

type Answer = Result<Response, Failure>;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
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

async fn dashboard(State(service): Shared, Query(filter): Query<Filter>) -> Answer {
    let state = filter.state()?;
    let watching = service.watching();
    // Rendered off the async threads too: a page of hundreds of sessions is work.
    let page = blocking(move || {
        let sessions = service.sessions(state)?;
        Ok(pages::dashboard(&sessions, state, watching.as_ref()))
    })
    .await?;
    Ok(no_store(Html(page)))
}

async fn session_page(State(service): Shared, Path(name): Path<String>) -> Answer {
    let shown = name.clone();
    let found = blocking(move || {
        Ok(service.detail(&name)?.map(|detail| {
            let particles = service.particles(&detail.status);
            pages::session(&name, &detail, &particles)
        }))
    })
    .await?;
    Ok(no_store(Html(found.ok_or_else(|| no_session(&shown))?)))
}

async fn api_sessions(State(service): Shared, Query(filter): Query<Filter>) -> Answer {
    let state = filter.state()?;
    let body = blocking(move || {
        serde_json::to_vec(&service.sessions(state)?).map_err(std::io::Error::other)
    })
    .await?;
    Ok(no_store(json_body(body)))
}

async fn api_session(State(service): Shared, Path(name): Path<String>) -> Answer {
    let shown = name.clone();
    let detail = blocking(move || service.detail(&name)).await?;
    Ok(no_store(Json(detail.ok_or_else(|| no_session(&shown))?)))
}

async fn api_watch(State(service): Shared) -> Answer {
    let watching = service
        .watching()
        .ok_or_else(|| Failure::NotFound("not watching: start serve with --watch".into()))?;
    Ok(no_store(Json(watching)))
}

async fn post_order(
    State(service): Shared,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The token first: a caller without it learns nothing, not even about its key.
    let key = orders::idempotency_key(&headers);
    // Validation reads the root, and the store writes to disk: off the async threads.
    with_desk(service, &headers, move |desk| match key {
        Ok(key) => orders::submit(desk, &body, key),
        Err(refused) => refused.into_response(),
    })
    .await
}

/// Runs `answer` with the desk, after the token is checked, off the async threads.
async fn with_desk(
    service: Arc<Service>,
    headers: &axum::http::HeaderMap,
    answer: impl FnOnce(&orders::Desk) -> Response + Send + 'static,
) -> Response {
    if let Err(refused) = orders::admit(service.desk.as_ref(), headers) {
        return refused.into_response();
    }
    tokio::task::spawn_blocking(move || match service.desk.as_ref() {
        Some(desk) => answer(desk),
        None => orders::problems(StatusCode::FORBIDDEN, vec!["orders are off".into()]),
    })
    .await
    .unwrap_or_else(|e| Failure::Internal(e.to_string()).into_response())
}

async fn list_orders(State(service): Shared, headers: axum::http::HeaderMap) -> Response {
    with_desk(service, &headers, orders::list).await
}

async fn show_order(
    State(service): Shared,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    with_desk(service, &headers, move |desk| orders::show(desk, &id)).await
}

async fn order_file(
    State(service): Shared,
    Path((id, name)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    with_desk(service, &headers, move |desk| {
        orders::file(desk, &id, &name)
    })
    .await
}

async fn not_found() -> Failure {
    Failure::NotFound("no such page".to_string())
}

async fn gallery_page(
    State(service): Shared,
    Path(name): Path<String>,
    Query(query): Query<catalog::ParticleQuery>,
) -> Answer {
    let shown = name.clone();
    let found = blocking(move || {
        let Some(out) = service.output(&name)? else {
            return Ok(None);
        };
        let all = service.particle_list(&out);
        let mut classes: Vec<String> = all.iter().map(|p| p.row.class.clone()).collect();
        classes.sort();
        classes.dedup();
        let page = query.select(all);
        Ok(Some(pages::gallery(&name, &page, &query, &classes)))
    })
    .await?;
    Ok(no_store(Html(found.ok_or_else(|| no_session(&shown))?)))
}

async fn api_particles(
    State(service): Shared,
    Path(name): Path<String>,
    Query(query): Query<catalog::ParticleQuery>,
) -> Answer {
    let shown = name.clone();
    let found = blocking(move || {
        Ok(service
            .output(&name)?
            .map(|out| query.select(service.particle_list(&out))))
    })
    .await?;
    Ok(no_store(Json(found.ok_or_else(|| no_session(&shown))?)))
}

async fn particle_page(State(service): Shared, Path((name, id)): Path<(String, String)>) -> Answer {
    let found = blocking(move || {
        let Some(out) = service.output(&name)? else {
            return Ok(Err(no_session(&name)));
        };
        let Some(particle) = service
            .particle_list(&out)
            .into_iter()
            .find(|p| p.row.particle_id == id)
        else {
            return Ok(Err(Failure::NotFound(format!(
                "no particle {id} in {name}"
            ))));
        };
        let measurements = service.measurements(&out, &id);
        let tiff = particle
            .row
            .has_vignette()
            .then(|| service.vignette(&name, &out, &particle.row.file))
            .flatten();
        let (tags, um_per_pixel) = match tiff.map(|t| service.read_tiff(&t)) {
            Some(Ok(bytes)) => tiff_tags(&bytes),
            _ => (Vec::new(), None),
        };
        Ok(Ok(pages::particle(
            &name,
            &particle,
            &measurements,
            &tags,
            um_per_pixel,
        )))
    })
    .await?;
    Ok(no_store(Html(found?)))
}

/// The vignette's own tags, as the particle page lists them, and its pixel size.
fn tiff_tags(bytes: &[u8]) -> (Vec<(String, String)>, Option<f64>) {
    use crate::flowcam::vignette;
    use tiff::tags::Tag;
    let Ok(mut decoder) = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)) else {
        return (Vec::new(), None);
    };
    let mut tags = Vec::new();
    for (name, tag) in [
        ("Make", Tag::Make),
        ("Model", Tag::Model),
        ("Software", Tag::Software),
        ("DateTime", Tag::DateTime),
        ("ImageDescription", Tag::ImageDescription),
    ] {
        if let Ok(Some(value)) = decoder.find_tag(tag)
            && let Ok(text) = value.into_string()
        {
            tags.push((name.to_string(), text));
        }
    }
    let resolution = vignette::read_resolution(&mut decoder).ok().flatten();
    let mut um_per_pixel = None;
    if let Some(per_cm) = vignette::pixels_per_centimetre_of(resolution) {
        tags.push(("XResolution".to_string(), format!("{per_cm:.2} pixels/cm")));
        um_per_pixel = Some(10_000.0 / per_cm);
        tags.push((
            "pixel size".to_string(),
            format!("{:.4} µm", 10_000.0 / per_cm),
        ));
    }
    (tags, um_per_pixel)
}

async fn thumbnail(
    State(service): Shared,
    Path((name, file)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Answer {
    picture(service, name, file, thumbnail::THUMBNAIL, headers).await
}

async fn full_image(
    State(service): Shared,
    Path((name, file)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Answer {
    picture(service, name, file, 0, headers).await
}

/// A vignette of the manifest as PNG, 304 when the browser's copy is current.
async fn picture(
    service: Arc<Service>,
    name: String,
    file: String,
    side: u32,
    headers: axum::http::HeaderMap,
) -> Answer {
    let known: Vec<String> = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").to_string())
        .collect();
    let found = blocking(move || {
        let Some(out) = service.output(&name)? else {
            return Ok(Err(no_session(&name)));
        };
        let Some(tiff) = service.vignette(&name, &out, &file) else {
            return Ok(Err(Failure::NotFound(format!(
                "no vignette {file} in {name}"
            ))));
        };
        let unreadable = |e: anyhow::Error| {
            tracing::warn!("serve: vignette {}: {e:#}", tiff.key().display());
            Failure::NotFound(format!("vignette {file} cannot be read"))
        };
        // The browser's copy is current: answered before anything is decoded.
        let etag = match tiff.etag(side) {
            Ok(etag) => etag,
            Err(e) => return Ok(Err(unreadable(e))),
        };
        if known.iter().any(|t| *t == etag || t == "*") {
            return Ok(Ok((etag, None)));
        }
        let read = || service.read_tiff(&tiff);
        Ok(Ok(match service.pictures.get(&tiff, side, read) {
            Ok(picture) => (picture.etag, Some(picture.png)),
            Err(e) => return Ok(Err(unreadable(e))),
        }))
    })
    .await?;
    let (etag, png) = found?;
    // A rerun may cut new vignettes under the same names: the browser asks again each
    // time, and is answered 304 while its copy is current.
    let cache = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    Ok(match png {
        None => (StatusCode::NOT_MODIFIED, cache).into_response(),
        Some(png) => (
            cache,
            [(header::CONTENT_TYPE, "image/png".to_string())],
            png,
        )
            .into_response(),
    })
}

/// JSON already serialized (off the async threads).
fn json_body(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Status changes from one moment to the next: never cached.
fn no_store(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

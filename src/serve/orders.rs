//! The orders API over HTTP: `POST /api/orders`, `GET /api/orders[/ID[/files/NAME]]`.
//!
//! Orders change things, so unlike the pages they need `Authorization: Bearer <token>`,
//! the token being `FLOWCAM_SERVE_TOKEN`; without one set, orders are off and say so. The
//! token is kept only as its BLAKE3 hash and compared in constant time (BLAKE3's `Hash`
//! equality is). Answers are JSON: an order's record, or `{"errors": [...]}`.

use super::catalog::Catalog;
use crate::ingest::Lookup;
use crate::orders::store::{StoreError, Submitted};
use crate::orders::work::Env;
use crate::orders::{self, Root, store::Store};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::path::Path;
use std::sync::Arc;

/// The environment variable (or `.env` entry) holding the orders' token.
pub const TOKEN_VARIABLE: &str = "FLOWCAM_SERVE_TOKEN";
/// The shortest token taken: a guessable token would open the service to anyone.
pub const MIN_TOKEN: usize = 16;
/// The longest idempotency key taken.
pub const MAX_KEY: usize = 255;

/// The orders' secret, as its hash: never printed, never logged.
pub struct Token(blake3::Hash);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(redacted)")
    }
}

impl Token {
    pub fn new(secret: &str) -> Result<Token, String> {
        let secret = secret.trim();
        if secret.len() < MIN_TOKEN {
            return Err(format!(
                "{TOKEN_VARIABLE} must be at least {MIN_TOKEN} characters (it is the only lock on orders)"
            ));
        }
        Ok(Token(blake3::hash(secret.as_bytes())))
    }

    /// Whether the request's `Authorization` header carries the token.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme's name is case-insensitive (RFC 7235).
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .unwrap_or_default()
            .trim();
        // Hashing first makes the comparison independent of the lengths, and `Hash`'s
        // equality is constant-time.
        blake3::hash(presented.as_bytes()) == self.0
    }
}

/// The orders side of the service.
pub struct Desk {
    pub token: Token,
    pub store: Arc<Store>,
    pub env: Arc<Env>,
    /// Tells the workers an order arrived.
    pub wake: Box<dyn Fn() + Send + Sync>,
}

/// The catalog as the orders see the root: sessions by name, and only those whose real
/// folder lies under the root (no symlinks out).
pub struct CatalogRoot(pub Catalog);

impl Root for CatalogRoot {
    fn session(&self, name: &str) -> std::io::Result<Lookup> {
        let found = match self.0.lookup(name)? {
            // The catalog's list may be a second old: a session that just arrived is
            // looked for again.
            Lookup::Missing => Lookup::among(&self.0.folders()?, name),
            found => found,
        };
        Ok(match found {
            Lookup::One(folder) => match folder.canonicalize() {
                Ok(real) if real.starts_with(&self.0.root) => Lookup::One(real),
                _ => Lookup::Missing,
            },
            other => other,
        })
    }

    fn folder(&self) -> &Path {
        &self.0.root
    }
}

/// `{"errors": [...]}` with `status`.
pub fn problems(status: StatusCode, errors: Vec<String>) -> Response {
    Refused { status, errors }.into_response()
}

/// A request the orders API turns away, and why.
#[derive(Debug)]
pub struct Refused {
    status: StatusCode,
    errors: Vec<String>,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut answer = (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({ "errors": self.errors })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            answer.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"flowcam-pipeline orders\""),
            );
        }
        answer
    }
}

/// The desk, if orders are on and the request carries the token.
pub fn admit<'a>(desk: Option<&'a Desk>, headers: &HeaderMap) -> Result<&'a Desk, Refused> {
    let Some(desk) = desk else {
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            errors: vec![format!(
                "orders are off: start serve with {TOKEN_VARIABLE} set (environment or .env)"
            )],
        });
    };
    if !desk.token.admits(headers) {
        return Err(Refused {
            status: StatusCode::UNAUTHORIZED,
            errors: vec![
                "orders need `Authorization: Bearer <token>` with the service's token".into(),
            ],
        });
    }
    Ok(desk)
}

/// The request's idempotency key, if it has one.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refused> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= MAX_KEY
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_string()))
        }
        _ => Err(Refused {
            status: StatusCode::BAD_REQUEST,
            errors: vec![format!(
                "Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"
            )],
        }),
    }
}

/// Validates and queues an order (run off the async threads: it reads the root).
pub fn submit(desk: &Desk, body: &[u8], key: Option<String>) -> Response {
    let order = match orders::validate(body, desk.env.root.as_ref()) {
        Ok(order) => order,
        Err(errors) => return problems(StatusCode::UNPROCESSABLE_ENTITY, errors),
    };
    // Of the order as read, not of its bytes: a retry that spaces or orders its JSON
    // differently is the same order.
    let canonical = serde_json::to_vec(&order).unwrap_or_default();
    let digest = blake3::hash(&canonical).to_hex().to_string();
    match desk
        .store
        .submit(order, key.as_deref().map(|k| (k, digest.as_str())))
    {
        Ok(Submitted::New(record)) => {
            (desk.wake)();
            tracing::info!(
                order = record.id,
                session = record.order.session(),
                "order queued"
            );
            (
                StatusCode::ACCEPTED,
                [
                    (header::LOCATION, format!("/api/orders/{}", record.id)),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
                axum::Json(record),
            )
                .into_response()
        }
        Ok(Submitted::Replayed(record)) => (
            StatusCode::OK,
            [
                (header::LOCATION, format!("/api/orders/{}", record.id)),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            [("idempotent-replayed", "true")],
            axum::Json(record),
        )
            .into_response(),
        Err(e @ StoreError::KeyReused(_)) => {
            problems(StatusCode::UNPROCESSABLE_ENTITY, vec![e.to_string()])
        }
        Err(e @ StoreError::Full) => problems(StatusCode::SERVICE_UNAVAILABLE, vec![e.to_string()]),
        Err(e) => {
            tracing::error!("orders: {e}");
            problems(
                StatusCode::INTERNAL_SERVER_ERROR,
                vec!["the order could not be stored".into()],
            )
        }
    }
}

fn stored_failure(e: StoreError) -> Response {
    tracing::error!("orders: {e}");
    problems(
        StatusCode::INTERNAL_SERVER_ERROR,
        vec!["the order store could not be read".into()],
    )
}

fn no_order(id: &str) -> Response {
    problems(StatusCode::NOT_FOUND, vec![format!("no order {id}")])
}

/// `GET /api/orders/ID`.
pub fn show(desk: &Desk, id: &str) -> Response {
    let Ok(number) = id.parse::<u64>() else {
        return no_order(id);
    };
    match desk.store.get(number) {
        Ok(Some(record)) => super::no_store(axum::Json(record)),
        Ok(None) => no_order(id),
        Err(e) => stored_failure(e),
    }
}

/// `GET /api/orders`: the latest orders, newest first.
pub fn list(desk: &Desk) -> Response {
    match desk.store.latest(100) {
        Ok(records) => super::no_store(axum::Json(records)),
        Err(e) => stored_failure(e),
    }
}

/// `GET /api/orders/ID/files/NAME`: a file the order's result lists, nothing else.
pub fn file(desk: &Desk, id: &str, name: &str) -> Response {
    let Ok(number) = id.parse::<u64>() else {
        return no_order(id);
    };
    let record = match desk.store.get(number) {
        Ok(Some(record)) => record,
        Ok(None) => return no_order(id),
        Err(e) => return stored_failure(e),
    };
    let listed = record
        .result
        .as_ref()
        .and_then(|r| r.get("files"))
        .and_then(|f| f.as_array())
        .is_some_and(|files| files.iter().any(|f| f["name"].as_str() == Some(name)));
    if !listed {
        return problems(
            StatusCode::NOT_FOUND,
            vec![format!("order {id} has no file {name}")],
        );
    }
    match std::fs::read(desk.env.result_dir(number).join(name)) {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "image/tiff".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(order = number, "result file {name}: {e}");
            problems(
                StatusCode::NOT_FOUND,
                vec![format!("the file {name} of order {id} is gone")],
            )
        }
    }
}

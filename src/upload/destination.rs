//! The one storage trait every destination implements, and what crosses it.

/// One object to deliver, read into memory (vignettes are a few kilobytes).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The full object key: `[<prefix>/]<experiment>/<file>`.
    pub key: String,
    pub body: Vec<u8>,
    /// MD5 of `body`; sent so that the server rejects a body corrupted on the way.
    pub md5: [u8; 16],
    pub content_type: &'static str,
    /// Object metadata (S3 `x-amz-meta-*`), ASCII names and values.
    pub metadata: Vec<(String, String)>,
}

/// An object as the destination lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    pub key: String,
    pub size: u64,
    /// Without quotes; the MD5 in hex for a single-part upload.
    pub etag: String,
}

/// Why a delivery failed, already phrased for the person reading the log: a one-line cause
/// and what to do about it. Messages never carry secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    /// Every further object would fail the same way (no or wrong credentials, no bucket,
    /// server unreachable): stop the upload.
    #[error("{0}")]
    Destination(String),
    /// Only this object or batch failed; the next run sends it again.
    #[error("{0}")]
    Object(String),
}

/// A place vignettes are delivered to: an S3 bucket or an upload API.
///
/// Calls block; implementations own whatever async runtime they need, so that the engine's
/// worker threads can call them directly.
pub trait Destination: Send + Sync {
    /// How many objects one request carries (1 for S3, a batch for the upload API).
    fn batch_size(&self) -> usize;

    /// How many requests to keep in flight.
    fn concurrency(&self) -> usize;

    /// Checks, before anything is sent, that the destination answers and accepts our
    /// credentials, creating the bucket when asked to.
    fn check(&self) -> Result<(), UploadError>;

    /// Delivers every object of `batch`. `Ok` means the destination confirmed all of them.
    fn send(&self, batch: &[Outgoing]) -> Result<(), UploadError>;

    /// The objects whose keys start with `prefix`, or `None` when this destination cannot
    /// list (the upload API).
    fn list(&self, prefix: &str) -> Result<Option<Vec<RemoteObject>>, UploadError>;

    /// Whether each of `keys` (our keys, as in [`Outgoing::key`]) is at the destination,
    /// in the same order.
    ///
    /// Why besides [`Destination::list`]: the upload API cannot list, but it can answer
    /// for one key, and that is what lets `--verify-remote` check a ledger through it. It
    /// says nothing of size or content: a destination that can list should be verified by
    /// its listing, which gives both.
    fn exists(&self, keys: &[String]) -> Result<Vec<bool>, UploadError>;
}

/// Removes every occurrence of the given secrets from a message, for text that comes back
/// from a server or a library and might echo them.
pub fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[redacted]");
    }
    out
}

/// The innermost cause of an error chain, which is the part that tells a person what went
/// wrong ("Connection refused (os error 111)") without the layers of wrapping.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The first `limit` characters of a response body on one line, for error messages.
pub fn excerpt(body: &str, limit: usize) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.split_whitespace().collect::<Vec<_>>().join(" ");
    if trimmed.chars().count() > limit {
        let cut: String = trimmed.chars().take(limit).collect();
        format!("{cut}...")
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_every_copy() {
        let text = "key GKabc123 refused; secret s3cr3t-value s3cr3t-value";
        let out = redact(text, &["GKabc123", "s3cr3t-value", ""]);
        assert_eq!(out, "key [redacted] refused; secret [redacted] [redacted]");
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt("a\n  b\tc", 100), "a b c");
        assert_eq!(excerpt("abcdef", 3), "abc...");
    }
}

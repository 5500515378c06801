//! The one error type every Strata library returns.
//!
//! An [`Error`] has a [`ErrorKind`] (what went wrong, for callers that branch), a [`Retry`] advice
//! (what the runner does with it), key/value context that names the thing at fault (file and
//! line, URL and page, column and value), and the original source error, kept as a source and
//! never flattened into the message.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is. Callers branch on this, never on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid: a key, a value, a combination.
    Config,
    /// Credentials are missing, wrong or expired.
    Auth,
    /// A file, bucket, table, URL or collection does not exist.
    NotFound,
    /// Data does not fit the declared or inferred schema.
    Schema,
    /// A record is malformed (bad JSON, bad CSV, a value out of range).
    Data,
    /// The remote side asked us to slow down.
    RateLimited,
    /// The remote side is down or unreachable for now.
    Unavailable,
    /// An operation took longer than allowed.
    Timeout,
    /// A concurrent writer or a stale checkpoint: the state moved under us.
    Conflict,
    /// The work was cancelled.
    Cancelled,
    /// The operation is not supported by this component.
    Unsupported,
    /// A bug or an invariant violation inside Strata.
    Internal,
}

impl ErrorKind {
    /// The default retry advice for this kind.
    pub fn default_retry(self) -> Retry {
        match self {
            ErrorKind::RateLimited | ErrorKind::Unavailable | ErrorKind::Timeout => {
                Retry::Transient
            }
            _ => Retry::Permanent,
        }
    }

    /// A short lowercase name, as used in metrics labels and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Auth => "auth",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Schema => "schema",
            ErrorKind::Data => "data",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether retrying the failed operation can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// Retrying will fail the same way.
    Permanent,
    /// Retrying with backoff may succeed.
    Transient,
    /// Retry, but not before this delay (e.g. a `Retry-After` header).
    After(Duration),
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The Strata error: kind, retry advice, message, context and source.
pub struct Error {
    kind: ErrorKind,
    retry: Retry,
    message: Cow<'static, str>,
    context: Vec<(&'static str, String)>,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind` with a message saying what failed and, where it helps, what to do.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            retry: kind.default_retry(),
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Shorthand for [`ErrorKind::Data`].
    pub fn data(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Data, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Shorthand for [`ErrorKind::Cancelled`].
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "the pipeline was cancelled")
    }

    /// Attach a key/value that names the thing at fault (`file`, `line`, `column`, `value`, ...).
    #[must_use]
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Attach the underlying error as the source (never flattened into the message).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Override the retry advice.
    #[must_use]
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Say where this error happened: a new error of the same kind and retry advice whose
    /// message is `place` and whose source is this error, so [`Error::report`] reads
    /// `place: message (context): source`. For naming the file, step or node a library error
    /// surfaced in (`pipeline.yaml: transforms[2].mask`) without flattening it to text.
    #[must_use]
    pub fn wrap(self, place: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind: self.kind,
            retry: self.retry,
            message: place.into(),
            context: Vec::new(),
            source: Some(Box::new(self)),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The retry advice.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// True when retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self.retry, Retry::Permanent)
    }

    /// The message, without context or source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The context key/values, in the order they were attached.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// The value of the first context entry named `key`, here or in the error this one wraps
    /// (see [`Error::wrap`]).
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .or_else(|| {
                self.source
                    .as_deref()
                    .and_then(|s| s.downcast_ref::<Error>())
                    .and_then(|inner| inner.context_value(key))
            })
    }

    /// The message, context and the whole source chain on one line, for logs and CLI output.
    pub fn report(&self) -> String {
        use std::error::Error as _;
        let mut out = self.to_string();
        let mut next = self.source();
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        crate::secrets::redact(&out).into_owned()
    }
}

/// [`Error::wrap`] on a `Result` whose error converts into an [`Error`].
pub trait ResultExt<T> {
    /// Wrap the error with `place` (see [`Error::wrap`]).
    ///
    /// # Errors
    /// The converted error, wrapped.
    fn wrap_err(self, place: impl Into<Cow<'static, str>>) -> Result<T>;

    /// Wrap the error with the place `f` returns, computed only on error.
    ///
    /// # Errors
    /// The converted error, wrapped.
    fn wrap_err_with<P: Into<Cow<'static, str>>>(self, f: impl FnOnce() -> P) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn wrap_err(self, place: impl Into<Cow<'static, str>>) -> Result<T> {
        self.map_err(|e| e.into().wrap(place))
    }

    fn wrap_err_with<P: Into<Cow<'static, str>>>(self, f: impl FnOnce() -> P) -> Result<T> {
        self.map_err(|e| e.into().wrap(f()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        let mut s = String::with_capacity(self.message.len() + 64);
        s.push_str(&self.message);
        if !self.context.is_empty() {
            s.push_str(" (");
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{k}: {v}");
            }
            s.push(')');
        }
        // Secrets never leave through an error (crate::secrets).
        f.write_str(&crate::secrets::redact(&s))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: String| crate::secrets::redact(&s).into_owned();
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("retry", &self.retry)
            .field("message", &redacted(self.message.to_string()))
            .field("context", &redacted(format!("{:?}", self.context)))
            .field("source", &redacted(format!("{:?}", self.source)))
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        use arrow_schema::ArrowError as A;
        let kind = match &e {
            A::SchemaError(_) | A::CastError(_) => ErrorKind::Schema,
            A::ParseError(_) | A::JsonError(_) | A::CsvError(_) | A::InvalidArgumentError(_) => {
                ErrorKind::Data
            }
            A::IoError(..) => ErrorKind::Unavailable,
            A::NotYetImplemented(_) => ErrorKind::Unsupported,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, "arrow failed").with_source(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::PermissionDenied => ErrorKind::Auth,
            K::TimedOut => ErrorKind::Timeout,
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::Interrupted => ErrorKind::Unavailable,
            K::InvalidData | K::UnexpectedEof => ErrorKind::Data,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, "I/O failed").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_context_and_report_walks_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad byte");
        let e = Error::data("malformed record")
            .with_context("file", "orders.ndjson")
            .with_context("line", 17)
            .with_source(io);
        assert_eq!(
            e.to_string(),
            "malformed record (file: orders.ndjson, line: 17)"
        );
        assert_eq!(
            e.report(),
            "malformed record (file: orders.ndjson, line: 17): bad byte"
        );
        assert_eq!(e.context_value("line"), Some("17"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn wrap_names_the_place_and_keeps_kind_retry_and_context() {
        let inner = Error::new(ErrorKind::Unavailable, "bucket unreachable")
            .with_context("bucket", "lake")
            .with_source(std::io::Error::other("connection refused"));
        let e: Result<()> = Err::<(), _>(inner).wrap_err("pipeline.yaml: `sink`");
        let e = e.unwrap_err().wrap("node bronze.orders");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert_eq!(e.context_value("bucket"), Some("lake"));
        assert_eq!(
            e.report(),
            "node bronze.orders: pipeline.yaml: `sink`: bucket unreachable (bucket: lake): connection refused"
        );
        let io: Result<()> =
            Err(std::io::Error::from(std::io::ErrorKind::NotFound)).wrap_err_with(|| "m.sql");
        assert_eq!(io.unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn retry_advice_follows_kind() {
        assert!(Error::new(ErrorKind::Unavailable, "down").is_retryable());
        assert!(Error::new(ErrorKind::RateLimited, "slow").is_retryable());
        assert!(!Error::new(ErrorKind::Auth, "no").is_retryable());
        let e = Error::new(ErrorKind::Auth, "no").with_retry(Retry::After(Duration::from_secs(1)));
        assert!(e.is_retryable());
    }
}

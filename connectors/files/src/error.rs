//! The errors of stratalake-files and their classification into [`stratalake_core::Error`].

use stratalake_core::{Error, ErrorKind};

/// What can go wrong reading or writing files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// The object store failed.
    #[error("object store operation `{op}` failed on `{path}`")]
    Store {
        /// The operation (list, get, put, rename, ...).
        op: &'static str,
        /// The object path.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Reading bytes of a file failed (I/O, decompression).
    #[error("reading `{path}` failed")]
    Read {
        /// The file.
        path: String,
        /// The I/O or decompression error.
        #[source]
        source: std::io::Error,
    },
    /// Parquet could not read or write a file.
    #[error("parquet failed on `{path}`")]
    Parquet {
        /// The file.
        path: String,
        /// Parquet's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A record is bigger than `max_record_bytes`.
    #[error("a record in `{path}` at line {line} is longer than max_record_bytes ({limit} bytes)")]
    RecordTooLarge {
        /// The file.
        path: String,
        /// The line the record starts on.
        line: u64,
        /// The limit.
        limit: usize,
    },
    /// A file decompressed to more than `max_decompressed_bytes`.
    #[error("`{path}` decompresses to more than max_decompressed_bytes ({limit} bytes)")]
    DecompressedTooLarge {
        /// The file.
        path: String,
        /// The limit.
        limit: u64,
    },
}

impl From<FilesError> for Error {
    fn from(e: FilesError) -> Self {
        let (kind, path) = match &e {
            FilesError::Store { source, path, .. } => (store_kind(source), path.clone()),
            FilesError::Read { source, path } => (
                Error::from(std::io::Error::new(source.kind(), "")).kind(),
                path.clone(),
            ),
            FilesError::Parquet { path, .. } => (ErrorKind::Data, path.clone()),
            FilesError::RecordTooLarge { path, .. }
            | FilesError::DecompressedTooLarge { path, .. } => (ErrorKind::Data, path.clone()),
        };
        let message = e.to_string();
        Error::new(kind, message)
            .with_context("file", path)
            .with_source(e)
    }
}

/// How an object_store error is classified.
pub fn store_kind(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            ErrorKind::Conflict
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::Auth,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => ErrorKind::Config,
        E::Generic { source, .. } => chain_kind(source.as_ref()),
        _ => ErrorKind::Unavailable,
    }
}

/// Classify an error object_store did not map (a failed listing, a multipart call) by the
/// HTTP status its chain reports. object_store keeps its request error type private, so the
/// status is read from the text it is documented to print (`status code: 404 Not Found`).
fn chain_kind(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some(code) = status_in(&text) {
            return match code {
                401 | 403 => ErrorKind::Auth,
                404 => ErrorKind::NotFound,
                409 | 412 => ErrorKind::Conflict,
                429 | 503 => ErrorKind::RateLimited,
                400..=499 => ErrorKind::Config,
                _ => ErrorKind::Unavailable,
            };
        }
        if text.contains("timed out") || text.contains("Timeout") {
            return ErrorKind::Timeout;
        }
        cur = err.source();
    }
    ErrorKind::Unavailable
}

fn status_in(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

/// Wrap an object store error with the operation and path.
pub(crate) fn store_err(
    op: &'static str,
    path: impl std::fmt::Display,
    source: object_store::Error,
) -> Error {
    FilesError::Store {
        op,
        path: path.to_string(),
        source,
    }
    .into()
}

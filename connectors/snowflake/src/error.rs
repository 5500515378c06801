//! Snowflake's error codes mapped to the core error kinds.

use stratalake_core::{Error, ErrorKind, Retry};

/// Session expired: renew with the master token.
pub(crate) const SESSION_EXPIRED: &str = "390112";
/// Master token expired, or the session is gone: log in again.
pub(crate) const LOGIN_AGAIN: &[&str] = &["390114", "390104", "390111", "390103"];
/// A query still running; its result is fetched from `getResultUrl`.
pub(crate) const IN_PROGRESS: &[&str] = &["333333", "333334"];

/// The core kind of a Snowflake error code.
///
/// | codes | kind |
/// |---|---|
/// | 3901xx (wrong password, invalid JWT, locked or disabled user), 390189, 390201 | Auth |
/// | 002003, 002043, 002140 (object does not exist or not authorized) | NotFound |
/// | 000904 (invalid identifier) | Schema |
/// | 001003 (syntax), 000606 (no warehouse), other compilation errors 00xxxx | Config |
/// | 002002 (already exists), 000625 (lock wait / deadlock, retryable) | Conflict |
/// | 000630 (statement timeout) | Timeout |
/// | 000604 (cancelled) | Cancelled |
/// | 100xxx (conversion: numeric, date, JSON) | Data |
/// | 390114, 390112 (session tokens) | handled by the client: renew or log in |
pub fn kind_of(code: &str) -> ErrorKind {
    match code {
        "002003" | "002043" | "002140" => ErrorKind::NotFound,
        "000904" => ErrorKind::Schema,
        "002002" | "000625" => ErrorKind::Conflict,
        "000630" => ErrorKind::Timeout,
        "000604" => ErrorKind::Cancelled,
        c if c.starts_with("3901") || c == "390189" || c.starts_with("3902") => ErrorKind::Auth,
        c if c.starts_with("100") => ErrorKind::Data,
        c if c.starts_with("00") => ErrorKind::Config,
        c if c.starts_with("39") => ErrorKind::Auth,
        _ => ErrorKind::Internal,
    }
}

/// The error for a `success: false` answer: Snowflake's message and code, the query id and
/// the statement (shortened) as context.
pub(crate) fn sql_error(
    code: &str,
    message: &str,
    query_id: Option<&str>,
    sql: Option<&str>,
) -> Error {
    let kind = kind_of(code);
    let hint = match kind {
        ErrorKind::Auth => "; check the user, the credentials and the account",
        ErrorKind::NotFound => "; check the name and the role's grants",
        ErrorKind::Config => "; check the SQL",
        _ => "",
    };
    let mut e = Error::new(kind, format!("snowflake: {message} (code {code}){hint}"))
        .with_context("code", code);
    if kind == ErrorKind::Conflict && code == "000625" {
        // A lock held by another transaction: often one a killed process left open.
        e = Error::new(
            kind,
            format!(
                "snowflake: {message} (code {code}); another transaction holds the lock: if a \
                 killed load left it open, SHOW TRANSACTIONS lists it and \
                 SELECT SYSTEM$ABORT_TRANSACTION(<id>) ends it (or its session expires)"
            ),
        )
        .with_context("code", code)
        .with_retry(Retry::Transient);
    }
    if let Some(q) = query_id {
        e = e.with_context("query_id", q);
    }
    if let Some(sql) = sql {
        let short: String = sql.chars().take(240).collect();
        e = e.with_context("sql", short);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(kind_of("390100"), ErrorKind::Auth);
        assert_eq!(kind_of("390144"), ErrorKind::Auth);
        assert_eq!(kind_of("002003"), ErrorKind::NotFound);
        assert_eq!(kind_of("001003"), ErrorKind::Config);
        assert_eq!(kind_of("000606"), ErrorKind::Config);
        assert_eq!(kind_of("100038"), ErrorKind::Data);
        assert_eq!(kind_of("000630"), ErrorKind::Timeout);
        let e = sql_error("000625", "deadlock", Some("q1"), Some("MERGE INTO T"));
        assert!(e.is_retryable());
        assert!(e.to_string().contains("SYSTEM$ABORT_TRANSACTION"), "{e}");
        assert_eq!(e.context_value("query_id"), Some("q1"));
        assert!(!sql_error("001003", "syntax", None, None).is_retryable());
    }
}

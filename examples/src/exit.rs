//! How the process ends: exit statuses by error kind, errors printed through the redaction
//! layer, a closed stdout that is not a crash, and SIGINT/SIGTERM as cancellation.

use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use stratalake_core::{CancellationToken, ErrorKind};

/// The exit statuses, documented in the README ("Exit status").
pub mod status {
    /// The command did what it was asked.
    pub const OK: u8 = 0;
    /// A failure with no more specific status.
    pub const FAILURE: u8 = 1;
    /// The data is bad: a record, a value or a schema (EX_DATAERR).
    pub const DATA: u8 = 65;
    /// A file, table, bucket, URL or collection does not exist (EX_NOINPUT).
    pub const NOT_FOUND: u8 = 66;
    /// A bug in Strata: an invariant or a panic in a component (EX_SOFTWARE).
    pub const INTERNAL: u8 = 70;
    /// The state moved: another run, or a checkpoint that disagrees with the destination.
    pub const CONFLICT: u8 = 73;
    /// Temporary: a retry may succeed (EX_TEMPFAIL). The only status schedulers should retry.
    pub const TEMPORARY: u8 = 75;
    /// Credentials are missing, wrong or expired (EX_NOPERM).
    pub const AUTH: u8 = 77;
    /// The configuration or the command line is invalid (EX_CONFIG).
    pub const CONFIG: u8 = 78;
    /// Cancelled by SIGINT (Ctrl-C) or SIGTERM: nothing partial became visible.
    pub const CANCELLED: u8 = 130;
}

/// The exit status for an error, by the kind of the first Strata error in its chain.
pub fn status_of(e: &anyhow::Error) -> u8 {
    if let Some(se) = e
        .chain()
        .find_map(|c| c.downcast_ref::<stratalake_core::Error>())
    {
        return match se.kind() {
            ErrorKind::Cancelled => status::CANCELLED,
            _ if se.is_retryable() => status::TEMPORARY,
            ErrorKind::Config | ErrorKind::Unsupported => status::CONFIG,
            ErrorKind::Auth => status::AUTH,
            ErrorKind::NotFound => status::NOT_FOUND,
            ErrorKind::Schema | ErrorKind::Data => status::DATA,
            ErrorKind::Conflict => status::CONFLICT,
            ErrorKind::RateLimited | ErrorKind::Unavailable | ErrorKind::Timeout => {
                status::TEMPORARY
            }
            _ => status::INTERNAL,
        };
    }
    match e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()) {
        Some(io) if io.kind() == std::io::ErrorKind::NotFound => status::NOT_FOUND,
        Some(io) if io.kind() == std::io::ErrorKind::PermissionDenied => status::AUTH,
        _ => status::FAILURE,
    }
}

/// True when the error is stdout closed under us (`strata ... | head`): not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The error and its whole chain on one line, redacted.
pub fn render(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        // anyhow repeats nothing, but a context may already hold its cause's text.
        if !parts.last().is_some_and(|p| p.ends_with(&s)) {
            parts.push(s);
        }
    }
    stratalake_core::secrets::redact(&parts.join(": ")).into_owned()
}

/// End the process for `result`.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(status::OK),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(status::OK),
        Err(e) => {
            let code = status_of(&e);
            eprintln!("error: {}", render(&e));
            ExitCode::from(code)
        }
    }
}

/// Standard error through the redaction layer: every log line is scrubbed of registered
/// secrets, URL passwords and secret query values, whatever library logged it (reqwest, hyper
/// and the drivers log URLs at debug and trace).
#[derive(Debug, Clone, Copy)]
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(stratalake_core::secrets::redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

static SHUTDOWN: OnceLock<CancellationToken> = OnceLock::new();
static AWARE: AtomicBool = AtomicBool::new(false);

/// The process's shutdown token, cancelled by SIGINT or SIGTERM. A command that reads it
/// stops cleanly by itself; any other command is dropped at its next await (its commits are
/// atomic, so that is a clean stop too).
pub fn shutdown() -> CancellationToken {
    AWARE.store(true, Ordering::SeqCst);
    SHUTDOWN.get_or_init(CancellationToken::new).clone()
}

/// Run `work` until it ends or a signal stops it.
pub async fn with_signals(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = SHUTDOWN.get_or_init(CancellationToken::new).clone();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return work.await;
    };
    tokio::pin!(work);
    loop {
        let name = tokio::select! {
            r = &mut work => return r,
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if token.is_cancelled() || !AWARE.load(Ordering::SeqCst) {
            // A second signal, or a command that does not watch the token: stop now.
            eprintln!("strata: {name}: stopped");
            return Err(stratalake_core::Error::cancelled().into());
        }
        eprintln!("strata: {name}: stopping (nothing partial becomes visible)");
        token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_error_kind() {
        let s = |k: ErrorKind| {
            status_of(&anyhow::Error::new(stratalake_core::Error::new(k, "x")).context("ctx"))
        };
        assert_eq!(s(ErrorKind::Config), status::CONFIG);
        assert_eq!(s(ErrorKind::Auth), status::AUTH);
        assert_eq!(s(ErrorKind::NotFound), status::NOT_FOUND);
        assert_eq!(s(ErrorKind::Data), status::DATA);
        assert_eq!(s(ErrorKind::Schema), status::DATA);
        assert_eq!(s(ErrorKind::Conflict), status::CONFLICT);
        assert_eq!(s(ErrorKind::Unavailable), status::TEMPORARY);
        assert_eq!(s(ErrorKind::RateLimited), status::TEMPORARY);
        assert_eq!(s(ErrorKind::Timeout), status::TEMPORARY);
        assert_eq!(s(ErrorKind::Cancelled), status::CANCELLED);
        assert_eq!(s(ErrorKind::Internal), status::INTERNAL);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&pipe));
        assert_eq!(status_of(&anyhow::anyhow!("plain")), status::FAILURE);
    }
}

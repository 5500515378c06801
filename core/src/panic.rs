//! Panics as errors: every component the runner calls is guarded, so a panic in a source, a
//! decoder, a transform or a sink fails the epoch with an [`ErrorKind::Internal`] error naming
//! the component instead of unwinding through the runtime or ending a stream early.
//!
//! A panic is never a silent end of input: a split that panicked is not "empty". The helpers
//! here turn a panic payload into an error and wrap futures, streams and blocking closures.

use crate::stream::{BatchStreamAdapter, SendableBatchStream};
use crate::{Error, ErrorKind, Result};
use futures::{FutureExt, StreamExt};
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// The message a panic carried (`panic!("...")` payloads are `&str` or `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// The error for a panic inside `component` (`source orders`, `transform conform`, `sink
/// delta.prepare`, ...): [`ErrorKind::Internal`], permanent, naming the component and the panic.
pub fn panic_error(component: &str, payload: &(dyn Any + Send)) -> Error {
    Error::new(
        ErrorKind::Internal,
        "a component panicked; nothing of this epoch was committed",
    )
    .with_context("component", component)
    .with_context("panic", crate::secrets::redact(&panic_message(payload)))
    .with_context(
        "hint",
        "this is a bug in that component: report it with this message",
    )
}

/// Await `fut`, turning a panic inside it into [`panic_error`] for `component`.
///
/// # Errors
/// The future's own error, or the panic as an error.
pub async fn guard<T>(component: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(payload) => Err(panic_error(component, payload.as_ref())),
    }
}

/// Run `f`, turning a panic into [`panic_error`] for `component` (for blocking closures).
///
/// # Errors
/// The closure's own error, or the panic as an error.
/// The component is only formatted when there was a panic (this runs once per batch).
pub fn guard_sync<T>(
    component: impl std::fmt::Display,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(panic_error(&component.to_string(), payload.as_ref())),
    }
}

/// `stream` with a panic while polling it turned into one last error item naming `component`.
pub fn guard_stream(
    component: impl Into<String>,
    stream: SendableBatchStream,
) -> SendableBatchStream {
    let schema = stream.schema();
    let component = component.into();
    let guarded = AssertUnwindSafe(stream)
        .catch_unwind()
        .map(move |item| match item {
            Ok(r) => r,
            Err(payload) => Err(panic_error(&component, payload.as_ref())),
        });
    BatchStreamAdapter::boxed(schema, Box::pin(guarded))
}

/// Await a blocking task's handle: its result, or its panic as [`panic_error`] for
/// `component` (a dropped handle would lose the panic; a cancelled task is
/// [`ErrorKind::Cancelled`]).
///
/// # Errors
/// The task's own error, its panic, or its cancellation.
pub async fn join_blocking<T>(
    component: &str,
    handle: tokio::task::JoinHandle<Result<T>>,
) -> Result<T> {
    match handle.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(panic_error(component, e.into_panic().as_ref())),
        Err(e) => Err(Error::cancelled().with_source(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_errors_naming_the_component() {
        let e = guard::<()>("sink files.commit", async { panic!("boom at commit") })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.context_value("component"), Some("sink files.commit"));
        assert_eq!(e.context_value("panic"), Some("boom at commit"));
        let e =
            guard_sync::<()>("transform t", || panic!("{}", String::from("owned"))).unwrap_err();
        assert_eq!(e.context_value("panic"), Some("owned"));
        let h = tokio::task::spawn_blocking(|| -> Result<()> { panic!("in a thread") });
        let e = join_blocking("source s", h).await.unwrap_err();
        assert_eq!(e.context_value("panic"), Some("in a thread"));
    }
}

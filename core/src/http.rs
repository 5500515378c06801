//! [`HttpSettings`]: timeouts, retries and limits of an HTTP client, one vocabulary for every
//! connector that talks HTTP (REST APIs, S3, Azure Blob). Each connector applies the keys its
//! client can honour and refuses, naming the key, a non-default value of one it cannot (a rate
//! limit on an object store), so no setting is silently ignored.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Timeouts, retries and limits of an HTTP client (the `http:` block of a connector).
///
/// Built from YAML, or in code from [`HttpSettings::default`] and the `with_*` setters:
///
/// ```
/// use stratalake_core::HttpSettings;
/// let http = HttpSettings::default().with_max_retries(8).with_request_timeout_secs(10);
/// assert_eq!(http.max_retries, 8);
/// http.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HttpSettings {
    /// One request (headers and body) may take this long. Range: 1..=86_400.
    #[serde(deserialize_with = "crate::bounds::u64_in::<_, 1, 86_400>")]
    pub request_timeout_secs: u64,
    /// Connecting may take this long. Range: 1..=3600.
    #[serde(deserialize_with = "crate::bounds::u64_in::<_, 1, 3600>")]
    pub connect_timeout_secs: u64,
    /// Retries of a request after a transient failure (429, 5xx, a timeout, a reset).
    /// Range: 0..=100.
    #[serde(deserialize_with = "crate::bounds::u32_in::<_, 0, 100>")]
    pub max_retries: u32,
    /// The first backoff; doubled per retry, with jitter. Range: 1..=3_600_000.
    #[serde(deserialize_with = "crate::bounds::u64_in::<_, 1, 3_600_000>")]
    pub initial_backoff_millis: u64,
    /// The longest backoff, and the longest `Retry-After` honoured. Range: 1..=86_400.
    #[serde(deserialize_with = "crate::bounds::u64_in::<_, 1, 86_400>")]
    pub max_backoff_secs: u64,
    /// No retry starts once a request has been failing this long (0: no limit).
    /// Range: 0..=604_800.
    #[serde(deserialize_with = "crate::bounds::u64_in::<_, 0, 604_800>")]
    pub retry_timeout_secs: u64,
    /// The whole read of one split (every page of an endpoint) may take this long (0: no
    /// limit). REST only. Range: 0..=604_800.
    #[serde(deserialize_with = "crate::bounds::u64_in::<_, 0, 604_800>")]
    pub total_timeout_secs: u64,
    /// Requests per second to the host at most (0: no limit). REST only.
    /// Range: 0..=1_000_000.
    #[serde(deserialize_with = "crate::bounds::f64_in::<_, 0, 1_000_000>")]
    pub requests_per_second: f64,
    /// Requests in flight at most (concurrent pages, child endpoints). REST only.
    /// Range: 1..=1024.
    #[serde(deserialize_with = "crate::bounds::usize_in::<_, 1, 1024>")]
    pub max_in_flight: usize,
    /// The largest response body accepted (after decompression). REST only.
    /// Range: 1..=17_179_869_184.
    #[serde(deserialize_with = "crate::bounds::u64_in::<_, 1, 17_179_869_184>")]
    pub max_body_bytes: u64,
    /// Extra headers sent with every request (a header named like a secret is redacted
    /// wherever Strata reports it). REST only.
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout_secs: 60,
            connect_timeout_secs: 10,
            max_retries: 5,
            initial_backoff_millis: 200,
            max_backoff_secs: 60,
            retry_timeout_secs: 300,
            total_timeout_secs: 0,
            requests_per_second: 0.0,
            max_in_flight: 4,
            max_body_bytes: 64 << 20,
            headers: BTreeMap::new(),
        }
    }
}

impl HttpSettings {
    /// With this per-request timeout.
    #[must_use]
    pub fn with_request_timeout_secs(mut self, secs: u64) -> Self {
        self.request_timeout_secs = secs;
        self
    }

    /// With this connect timeout.
    #[must_use]
    pub fn with_connect_timeout_secs(mut self, secs: u64) -> Self {
        self.connect_timeout_secs = secs;
        self
    }

    /// With at most `n` retries of a request.
    #[must_use]
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// With this backoff: the first delay and the longest.
    #[must_use]
    pub fn with_backoff(mut self, initial_millis: u64, max_secs: u64) -> Self {
        self.initial_backoff_millis = initial_millis;
        self.max_backoff_secs = max_secs;
        self
    }

    /// With no retry starting after a request has been failing `secs` (0: no limit).
    #[must_use]
    pub fn with_retry_timeout_secs(mut self, secs: u64) -> Self {
        self.retry_timeout_secs = secs;
        self
    }

    /// With the read of one split limited to `secs` (0: no limit).
    #[must_use]
    pub fn with_total_timeout_secs(mut self, secs: u64) -> Self {
        self.total_timeout_secs = secs;
        self
    }

    /// With at most `n` requests per second (0: no limit).
    #[must_use]
    pub fn with_requests_per_second(mut self, n: f64) -> Self {
        self.requests_per_second = n;
        self
    }

    /// With at most `n` requests in flight.
    #[must_use]
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// With response bodies capped at `bytes`.
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: u64) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// With `name: value` sent on every request.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// The first backoff.
    pub fn initial_backoff(&self) -> Duration {
        Duration::from_millis(self.initial_backoff_millis)
    }

    /// The longest backoff.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs(self.max_backoff_secs)
    }

    /// How long a request may keep failing before no retry starts (`None`: no limit).
    pub fn retry_timeout(&self) -> Option<Duration> {
        (self.retry_timeout_secs > 0).then(|| Duration::from_secs(self.retry_timeout_secs))
    }

    /// Check the settings without I/O (the ranges serde enforces, for settings built in code).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("request_timeout_secs", self.request_timeout_secs),
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("initial_backoff_millis", self.initial_backoff_millis),
            ("max_backoff_secs", self.max_backoff_secs),
            ("max_in_flight", self.max_in_flight as u64),
            ("max_body_bytes", self.max_body_bytes),
        ] {
            if v == 0 {
                return Err(
                    Error::config("must be at least 1").with_context("key", format!("http.{key}"))
                );
            }
        }
        if self.max_retries > 100 {
            return Err(Error::config("`http.max_retries` must be at most 100")
                .with_context("max_retries", self.max_retries));
        }
        if !(self.requests_per_second >= 0.0 && self.requests_per_second.is_finite()) {
            return Err(
                Error::config("`http.requests_per_second` must be 0 or more")
                    .with_context("requests_per_second", self.requests_per_second),
            );
        }
        Ok(())
    }

    /// Refuse a REST-only key (`total_timeout_secs`, `requests_per_second`, `max_in_flight`,
    /// `max_body_bytes`, `headers`) set to anything but its default, which the `client` (such
    /// as "an S3 connection") cannot honour.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Unsupported`] naming the first such key.
    pub fn refuse_rest_only(&self, client: &str) -> Result<()> {
        let d = Self::default();
        let set = [
            (
                "total_timeout_secs",
                self.total_timeout_secs != d.total_timeout_secs,
            ),
            (
                "requests_per_second",
                self.requests_per_second != d.requests_per_second,
            ),
            ("max_in_flight", self.max_in_flight != d.max_in_flight),
            ("max_body_bytes", self.max_body_bytes != d.max_body_bytes),
            ("headers", !self.headers.is_empty()),
        ];
        match set.into_iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!("`http.{key}` is not supported by {client}"),
            )
            .with_context("key", format!("http.{key}"))
            .with_context("hint", "remove the key; it applies to REST sources only")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_block_keeps_the_defaults_and_unknown_keys_are_refused() {
        let h: HttpSettings = serde_json::from_str(r#"{"max_retries": 2}"#).expect("parse");
        assert_eq!(h, HttpSettings::default().with_max_retries(2));
        let e =
            serde_json::from_str::<HttpSettings>(r#"{"timeout_secs": 2}"#).expect_err("unknown");
        assert!(e.to_string().contains("timeout_secs"), "{e}");
    }

    #[test]
    fn validate_and_refuse_name_the_key() {
        let e = HttpSettings::default()
            .with_max_in_flight(0)
            .validate()
            .expect_err("zero");
        assert!(e.to_string().contains("http.max_in_flight"), "{e}");
        let h = HttpSettings::default().with_requests_per_second(5.0);
        let e = h
            .refuse_rest_only("an S3 connection")
            .expect_err("rest only");
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
        assert!(e.to_string().contains("http.requests_per_second"), "{e}");
        assert!(
            HttpSettings::default()
                .refuse_rest_only("an S3 connection")
                .is_ok()
        );
    }
}

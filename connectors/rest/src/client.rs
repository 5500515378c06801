//! The HTTP side: one `reqwest` client (keep-alive, HTTP/2 where the server offers it, gzip,
//! brotli and zstd bodies), authentication (API key, bearer, basic, OAuth2 client credentials
//! with one shared token), retries with exponential backoff and jitter (backon) on 429, 5xx,
//! timeouts, resets and truncated bodies, honouring `Retry-After`, a per-host rate limit
//! (governor), and a cap on body size.

use crate::config::{Auth, HttpSettings, KeyLocation};
use backon::BackoffBuilder;
use bytes::{Bytes, BytesMut};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};
use stratalake_core::{Error, ErrorKind, Result, Retry};
use tokio::sync::Mutex;

/// A fetched page.
#[derive(Debug)]
pub(crate) struct Response {
    pub headers: HeaderMap,
    pub body: Bytes,
}

struct Token {
    value: SecretString,
    refresh_at: Instant,
}

pub(crate) struct Client {
    http: reqwest::Client,
    auth: Auth,
    token: Mutex<Option<Token>>,
    settings: HttpSettings,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("auth", &self.auth).finish()
    }
}

/// How long to wait, from a `Retry-After` header: seconds, or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

impl Client {
    pub(crate) fn new(auth: &Auth, settings: &HttpSettings) -> Result<Self> {
        let mut headers = HeaderMap::new();
        for (k, v) in &settings.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                Error::config("invalid header name")
                    .with_context("header", k)
                    .with_source(e)
            })?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|e| {
                Error::config("invalid header value")
                    .with_context("header", k)
                    .with_source(e)
            })?;
            headers.insert(name, value);
        }
        // Every secret this client sends is known to the redaction layer, whatever echoes it
        // (a server repeating the URL, a driver's message).
        match auth {
            Auth::None => {}
            Auth::ApiKey { value, .. } => stratalake_core::secrets::register(value.expose_secret()),
            Auth::Bearer { token } => stratalake_core::secrets::register(token.expose_secret()),
            Auth::Basic { username, password } => {
                stratalake_core::secrets::register_basic(username, password.expose_secret());
            }
            Auth::Oauth2ClientCredentials { client_secret, .. } => {
                stratalake_core::secrets::register(client_secret.expose_secret());
            }
        }
        for (k, v) in &settings.headers {
            if stratalake_core::secrets::is_secret_name(k) {
                stratalake_core::secrets::register(v);
            }
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // Credentials never follow a redirect to another origin (reqwest strips only its own
            // auth headers; an API key header or query parameter would travel): such a redirect
            // stops and is reported.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let first = attempt.previous().first().map(Url::origin);
                if attempt.previous().len() > 10 {
                    attempt.error("more than 10 redirects")
                } else if first.is_some_and(|o| o == attempt.url().origin()) {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .timeout(settings.request_timeout())
            .connect_timeout(settings.connect_timeout())
            .pool_max_idle_per_host(settings.max_in_flight.max(1) * 2)
            .tcp_nodelay(true)
            .user_agent(concat!("stratalake-rest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config("cannot build the HTTP client").with_source(e))?;
        let limiter = if settings.requests_per_second > 0.0 {
            let per = Duration::from_secs_f64(1.0 / settings.requests_per_second);
            let quota = Quota::with_period(per)
                .ok_or_else(|| Error::config("`requests_per_second` is too high"))?
                .allow_burst(NonZeroU32::MIN);
            Some(RateLimiter::direct(quota))
        } else {
            None
        };
        Ok(Self {
            http,
            auth: auth.clone(),
            token: Mutex::new(None),
            settings: settings.clone(),
            limiter,
        })
    }

    /// The URL as Strata reports it: an API key sent as a query parameter, a password in the
    /// user info and secret-named parameters are redacted.
    pub(crate) fn redact(&self, url: &Url) -> String {
        if url.password().is_some() {
            stratalake_core::secrets::register_url_password(url.as_str());
        }
        let Auth::ApiKey {
            name,
            location: KeyLocation::Query,
            ..
        } = &self.auth
        else {
            return stratalake_core::secrets::redact(url.as_str()).into_owned();
        };
        let mut u = url.clone();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == name.as_str() {
                    "REDACTED".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        stratalake_core::secrets::redact(u.as_str()).into_owned()
    }

    async fn bearer(&self, force_refresh: bool) -> Result<Option<SecretString>> {
        let Auth::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
        } = &self.auth
        else {
            return Ok(None);
        };
        // One token for every request: whoever holds the lock refreshes it.
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && !force_refresh
            && Instant::now() < t.refresh_at
        {
            return Ok(Some(t.value.clone()));
        }
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id.clone()),
            ("client_secret", client_secret.expose_secret().to_string()),
        ];
        if let Some(s) = scope {
            form.push(("scope", s.clone()));
        }
        let resp = self
            .http
            .post(token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    "cannot reach the OAuth2 token endpoint",
                )
                .with_context("url", stratalake_core::secrets::redact(token_url))
                .with_source(e.without_url())
            })?;
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let kind = if status.is_server_error() {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Auth
            };
            return Err(Error::new(
                kind,
                "the OAuth2 token endpoint refused the client credentials",
            )
            .with_context("url", token_url)
            .with_context("status", status.as_u16()));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let a: Answer = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorKind::Auth,
                "the OAuth2 token answer has no access_token",
            )
            .with_context("url", token_url)
            .with_source(e)
        })?;
        let lifetime = Duration::from_secs(a.expires_in.unwrap_or(3600));
        // Refresh a little before it expires (a tenth of its life, at most a minute).
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        stratalake_core::secrets::register(&a.access_token);
        let value = SecretString::from(a.access_token);
        *slot = Some(Token {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        tracing::debug!(url = %token_url, expires_in = lifetime.as_secs(), "fetched an OAuth2 token");
        Ok(Some(value))
    }

    fn request(&self, url: &Url, token: Option<&SecretString>) -> reqwest::RequestBuilder {
        let mut req = self.http.get(url.clone());
        match &self.auth {
            Auth::None | Auth::Oauth2ClientCredentials { .. } => {}
            Auth::ApiKey {
                name,
                value,
                location,
            } => match location {
                KeyLocation::Header => req = req.header(name.as_str(), value.expose_secret()),
                KeyLocation::Query => req = req.query(&[(name.as_str(), value.expose_secret())]),
            },
            Auth::Bearer { token } => req = req.bearer_auth(token.expose_secret()),
            Auth::Basic { username, password } => {
                req = req.basic_auth(username, Some(password.expose_secret()));
            }
        }
        if let Some(t) = token {
            req = req.bearer_auth(t.expose_secret());
        }
        req
    }

    /// GET `url`, retrying transient failures; the body is read whole, up to the cap.
    pub(crate) async fn get(&self, url: &Url) -> Result<Response> {
        let s = &self.settings;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(s.initial_backoff())
            .with_max_delay(s.max_backoff())
            .with_max_times(s.max_retries as usize)
            .with_jitter()
            .build();
        let shown = self.redact(url);
        let mut refreshed = false;
        let mut attempt = 0u32;
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            attempt += 1;
            if let Some(l) = &self.limiter {
                l.until_ready().await;
            }
            let token = self.bearer(false).await?;
            let failure: Error = match self.request(url, token.as_ref()).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    if status.is_success() {
                        match self.read_body(resp, &shown).await {
                            Ok(body) => return Ok(Response { headers, body }),
                            Err(e) if e.is_retryable() => e,
                            Err(e) => return Err(e),
                        }
                    } else if status == StatusCode::UNAUTHORIZED && token.is_some() && !refreshed {
                        // The token may have been revoked early: fetch a new one, once.
                        refreshed = true;
                        self.bearer(true).await?;
                        attempt -= 1;
                        continue;
                    } else {
                        let body = resp.bytes().await.unwrap_or_default();
                        let e = status_error(status, &headers, &body, &shown);
                        if !e.is_retryable() {
                            return Err(e.with_context("attempts", attempt));
                        }
                        e
                    }
                }
                Err(e) => {
                    let what = if e.is_timeout() {
                        "the request timed out"
                    } else if e.is_connect() {
                        "cannot connect"
                    } else {
                        "the request failed"
                    };
                    let kind = if e.is_timeout() {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Unavailable
                    };
                    Error::new(kind, what)
                        .with_retry(Retry::Transient)
                        .with_context("url", &shown)
                        .with_source(e.without_url())
                }
            };
            let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
            let out_of_time = s.retry_timeout().is_some_and(|t| since.elapsed() >= t);
            let Some(backoff) = delays.next().filter(|_| !out_of_time) else {
                let hint = if out_of_time {
                    "raise `http.retry_timeout_secs` or check the API's health"
                } else {
                    "raise `http.max_retries` or check the API's health"
                };
                return Err(failure
                    .with_context("attempts", attempt)
                    .with_context("hint", hint));
            };
            let delay = match failure.retry() {
                Retry::After(d) => d.min(s.max_backoff()),
                _ => backoff,
            };
            tracing::warn!(url = %shown, attempt, delay_ms = delay.as_millis() as u64, error = %failure, "request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn read_body(&self, mut resp: reqwest::Response, shown: &str) -> Result<Bytes> {
        let cap = self.settings.max_body_bytes;
        let too_big = || {
            Error::new(
                ErrorKind::Data,
                "the response body is larger than `http.max_body_bytes`",
            )
            .with_context("url", shown)
            .with_context("max_body_bytes", cap)
        };
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(too_big());
        }
        let mut buf = BytesMut::with_capacity(
            usize::try_from(resp.content_length().unwrap_or(64 << 10).min(cap)).unwrap_or(0),
        );
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if (buf.len() + c.len()) as u64 > cap {
                        return Err(too_big());
                    }
                    buf.extend_from_slice(&c);
                }
                Ok(None) => return Ok(buf.freeze()),
                Err(e) => {
                    // A connection cut mid-body (a truncated page) or a bad compressed stream:
                    // ask again.
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "the response body was cut short",
                    )
                    .with_retry(Retry::Transient)
                    .with_context("url", shown)
                    .with_source(e.without_url()));
                }
            }
        }
    }
}

fn status_error(status: StatusCode, headers: &HeaderMap, body: &[u8], url: &str) -> Error {
    let snippet: String = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let (kind, retry, what) = match status.as_u16() {
        401 => (
            ErrorKind::Auth,
            Retry::Permanent,
            "the API rejected the credentials (401)",
        ),
        403 => (
            ErrorKind::Auth,
            Retry::Permanent,
            "the API refused access (403)",
        ),
        404 => (
            ErrorKind::NotFound,
            Retry::Permanent,
            "no such endpoint (404)",
        ),
        408 => (
            ErrorKind::Timeout,
            Retry::Transient,
            "the API timed out the request (408)",
        ),
        429 => (
            ErrorKind::RateLimited,
            retry_after(headers).map_or(Retry::Transient, Retry::After),
            "the API is rate limiting (429)",
        ),
        300..=399 => (
            ErrorKind::Config,
            Retry::Permanent,
            "the API redirected to another origin; credentials are never sent across origins: point `base_url` at the final host",
        ),
        500..=599 => (
            ErrorKind::Unavailable,
            retry_after(headers).map_or(Retry::Transient, Retry::After),
            "the API failed (5xx)",
        ),
        _ => (
            ErrorKind::Config,
            Retry::Permanent,
            "the API refused the request",
        ),
    };
    let mut e = Error::new(kind, what)
        .with_retry(retry)
        .with_context("url", url)
        .with_context("status", status.as_u16());
    if status.is_redirection()
        && let Some(to) = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
    {
        e = e.with_context("location", stratalake_core::secrets::redact(to));
    }
    // The redaction layer scrubs known secrets from the snippet when it is shown.
    e.with_context("body", snippet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(5);
        h.insert(
            "retry-after",
            later
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string()
                .parse()
                .unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d <= Duration::from_secs(5) && d >= Duration::from_secs(3),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
    }

    #[test]
    fn api_keys_in_queries_are_redacted_and_secrets_hidden() {
        let auth = Auth::ApiKey {
            name: "api_key".into(),
            value: SecretString::from("k3y-value".to_string()),
            location: KeyLocation::Query,
        };
        let c = Client::new(&auth, &HttpSettings::default()).unwrap();
        let u = Url::parse("https://x.test/orders?api_key=k3y-value&page=2").unwrap();
        let shown = c.redact(&u);
        assert!(
            !shown.contains("k3y-value") && shown.contains("page=2"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("k3y-value"));
    }
}

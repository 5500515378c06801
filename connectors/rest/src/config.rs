//! [`RestSourceConfig`]: the endpoint, pagination, stop rules, auth, HTTP behaviour, schema and
//! incremental loading of a REST source. YAML-ready; `validate()` does no I/O.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
pub use stratalake_core::HttpSettings;
use stratalake_core::{Error, Result};
use stratalake_records::{SchemaSource, TypeDriftPolicy, UnknownFieldPolicy};

use crate::selector::Selector;

/// How to get from one page to the next.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Paginator {
    /// One request, no pages.
    Single,
    /// `?offset=N&limit=L`. With a total (`total_path`), pages are fetched concurrently.
    Offset {
        /// Records per page.
        limit: u64,
        /// The offset parameter.
        #[serde(default = "p_offset")]
        offset_param: String,
        /// The limit parameter.
        #[serde(default = "p_limit")]
        limit_param: String,
        /// The first offset.
        #[serde(default)]
        start: u64,
    },
    /// `?page=N` (and optionally `&size=S`). With a total, pages are fetched concurrently.
    PageNumber {
        /// The page parameter.
        #[serde(default = "p_page")]
        page_param: String,
        /// The first page number (1 for most APIs).
        #[serde(default = "one")]
        start: u64,
        /// The page size parameter and value, when the API takes one.
        #[serde(default)]
        size_param: Option<String>,
        /// The page size to ask for (and to count total pages from a record total).
        #[serde(default)]
        size: Option<u64>,
        /// A JSON path to the number of pages, when the API gives it.
        #[serde(default)]
        total_pages_path: Option<String>,
    },
    /// A cursor in the body (`$.next_cursor`), sent back as a parameter.
    Cursor {
        /// Where the next cursor is in the body.
        cursor_path: String,
        /// The parameter it is sent as.
        #[serde(default = "p_cursor")]
        cursor_param: String,
    },
    /// A cursor in a response header, sent back as a parameter.
    HeaderCursor {
        /// The header holding the next cursor.
        header: String,
        /// The parameter it is sent as.
        #[serde(default = "p_cursor")]
        cursor_param: String,
    },
    /// RFC 8288 `Link: <...>; rel="next"`.
    LinkHeader,
    /// The next page's URL in the body (`$.links.next`), absolute or relative.
    NextUrl {
        /// Where the URL is.
        next_url_path: String,
    },
}

fn p_offset() -> String {
    "offset".into()
}
fn p_limit() -> String {
    "limit".into()
}
fn p_page() -> String {
    "page".into()
}
fn p_cursor() -> String {
    "cursor".into()
}
fn one() -> u64 {
    1
}

/// When pagination ends, besides a page without a next link or cursor. Rules combine: the
/// first that applies stops. An empty page always stops.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StopRules {
    /// A JSON path to the total number of records; it may appear on the first page only.
    #[serde(default)]
    pub total_path: Option<String>,
    /// A JSON path to a boolean that is false on the last page.
    #[serde(default)]
    pub has_more_path: Option<String>,
    /// Pages fetched at most (0: no limit).
    #[serde(default)]
    pub max_pages: u64,
    /// Records read at most (0: no limit); the page that reaches it is the last.
    #[serde(default)]
    pub max_records: u64,
}

/// How requests are authenticated. Secrets never appear in logs, errors or `Debug` output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// An API key in a header or a query parameter.
    ApiKey {
        /// The header (`X-API-Key`) or parameter name.
        name: String,
        /// The key.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        value: SecretString,
        /// `header` (default) or `query`.
        #[serde(default)]
        location: KeyLocation,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        token: SecretString,
    },
    /// `Authorization: Basic ...`.
    Basic {
        /// The user.
        username: String,
        /// The password.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        password: SecretString,
    },
    /// OAuth2 client credentials: one token shared by every request, refreshed before it
    /// expires and when the API answers 401.
    Oauth2ClientCredentials {
        /// The token endpoint.
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        client_secret: SecretString,
        /// Scopes, space-separated.
        #[serde(default)]
        scope: Option<String>,
    },
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyLocation {
    /// A request header.
    #[default]
    Header,
    /// A query parameter (redacted from every URL Strata reports).
    Query,
}

/// What to do with a page whose body is not JSON or lacks the records (after retries).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvalidPagePolicy {
    /// Stop the run with an error naming the URL and page.
    #[default]
    Fail,
    /// Quarantine the body with the URL, page and reason, and go on with the next page (only
    /// where the next page does not depend on this one: offset and page-number pagination;
    /// otherwise the run fails).
    Quarantine,
}

/// Incremental loading by a field that grows (`updated_at`, an id).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Incremental {
    /// The record field holding the value (a top-level field).
    pub cursor_field: String,
    /// The query parameter the last value is sent as (`updated_since`).
    pub param: String,
    /// The value to start from on the first run.
    pub initial_value: String,
    /// Ask again for this many seconds before the last value (late writes); records seen
    /// before are dropped (deduplicated at the boundary). Timestamps only. Range: 0..=315_360_000.
    #[serde(
        default,
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 0, 315_360_000>"
    )]
    pub lookback_secs: u64,
}

impl Incremental {
    /// Load by `cursor_field`, sent back as `param`, starting at `initial_value`.
    pub fn new(
        cursor_field: impl Into<String>,
        param: impl Into<String>,
        initial_value: impl Into<String>,
    ) -> Self {
        Self {
            cursor_field: cursor_field.into(),
            param: param.into(),
            initial_value: initial_value.into(),
            lookback_secs: 0,
        }
    }

    /// Ask again for `secs` before the last value.
    #[must_use]
    pub fn with_lookback_secs(mut self, secs: u64) -> Self {
        self.lookback_secs = secs;
        self
    }
}

/// A parent endpoint whose records name the child resources (`/partners` -> `/partners/{id}/orders`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Parent {
    /// The parent path (`/partners`).
    pub path: String,
    /// Where the parent records are (`$.data`).
    #[serde(default = "root_path")]
    pub records: String,
    /// The parent's pagination.
    #[serde(default = "single")]
    pub paginator: Paginator,
    /// The parent field whose value fills `{field}` in the child path.
    pub field: String,
    /// Query parameters of the parent requests.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl Parent {
    /// Parents at `path` (records at `$`, one page) whose `field` fills the child path.
    pub fn new(path: impl Into<String>, field: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            records: root_path(),
            paginator: Paginator::Single,
            field: field.into(),
            params: BTreeMap::new(),
        }
    }

    /// Where the parent records are.
    #[must_use]
    pub fn with_records(mut self, records: impl Into<String>) -> Self {
        self.records = records.into();
        self
    }

    /// The parents' pagination.
    #[must_use]
    pub fn with_paginator(mut self, paginator: Paginator) -> Self {
        self.paginator = paginator;
        self
    }
}

fn root_path() -> String {
    "$".into()
}
fn single() -> Paginator {
    Paginator::Single
}

/// Configuration of a REST source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RestSourceConfig {
    /// The API's base URL (`https://api.example.com/v1`).
    pub base_url: String,
    /// The endpoint path (`/orders`); with a parent, it holds `{field}` (`/partners/{id}/orders`).
    pub path: String,
    /// Query parameters sent with every request.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Where the records are in a response (`$.data`, `$` for a bare array); a JSONPath of
    /// fields and indexes.
    #[serde(default = "root_path")]
    pub records: String,
    /// Pagination.
    #[serde(default = "single")]
    pub paginator: Paginator,
    /// When to stop.
    #[serde(default)]
    pub stop: StopRules,
    /// Authentication.
    #[serde(default)]
    pub auth: Auth,
    /// Timeouts, retries, limits, headers.
    #[serde(default)]
    pub http: HttpSettings,
    /// The schema: explicit, or inferred from the first page.
    #[serde(default)]
    pub schema: SchemaSource,
    /// A value of the wrong type.
    #[serde(default)]
    pub type_drift: TypeDriftPolicy,
    /// Fields not in the schema.
    #[serde(default)]
    pub unknown_fields: UnknownFieldPolicy,
    /// A page that is not JSON.
    #[serde(default)]
    pub on_invalid_page: InvalidPagePolicy,
    /// Incremental loading.
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// A parent endpoint.
    #[serde(default)]
    pub parent: Option<Parent>,
}

impl RestSourceConfig {
    /// A source for `base_url` + `path` with every other setting at its default.
    pub fn new(base_url: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            path: path.into(),
            params: BTreeMap::new(),
            records: root_path(),
            paginator: Paginator::Single,
            stop: StopRules::default(),
            auth: Auth::None,
            http: HttpSettings::default(),
            schema: SchemaSource::default(),
            type_drift: TypeDriftPolicy::default(),
            unknown_fields: UnknownFieldPolicy::default(),
            on_invalid_page: InvalidPagePolicy::default(),
            incremental: None,
            parent: None,
        }
    }

    /// Find the records at `path` (`$.data`).
    #[must_use]
    pub fn with_records(mut self, path: impl Into<String>) -> Self {
        self.records = path.into();
        self
    }

    /// Paginate with `paginator`.
    #[must_use]
    pub fn with_paginator(mut self, paginator: Paginator) -> Self {
        self.paginator = paginator;
        self
    }

    /// Send `key=value` with every request.
    #[must_use]
    pub fn with_param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(key.into(), value.into());
        self
    }

    /// Authenticate with `auth`.
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Use `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: SchemaSource) -> Self {
        self.schema = schema;
        self
    }

    /// Load incrementally.
    #[must_use]
    pub fn with_incremental(mut self, incremental: Incremental) -> Self {
        self.incremental = Some(incremental);
        self
    }

    /// Check the config without I/O.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key and value at fault.
    pub fn validate(&self) -> Result<()> {
        let url = url::Url::parse(&self.base_url).map_err(|e| {
            Error::config("`base_url` is not a URL")
                .with_context("base_url", &self.base_url)
                .with_source(e)
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::config("`base_url` must be http(s)")
                .with_context("base_url", &self.base_url));
        }
        Selector::parse(&self.records)?;
        for p in [&self.stop.total_path, &self.stop.has_more_path]
            .into_iter()
            .flatten()
        {
            Selector::parse(p)?;
        }
        match &self.paginator {
            Paginator::Offset { limit: 0, .. } | Paginator::PageNumber { size: Some(0), .. } => {
                return Err(Error::config("the page size must be at least 1"));
            }
            Paginator::Cursor { cursor_path: p, .. } | Paginator::NextUrl { next_url_path: p } => {
                Selector::parse(p)?;
            }
            Paginator::PageNumber {
                total_pages_path: Some(p),
                ..
            } => {
                Selector::parse(p)?;
            }
            _ => {}
        }
        match (&self.parent, self.path.contains('{')) {
            (Some(parent), true) => {
                if !self.path.contains(&format!("{{{}}}", parent.field)) {
                    return Err(Error::config(
                        "with a `parent`, `path` must hold `{<parent.field>}`",
                    )
                    .with_context("path", &self.path)
                    .with_context("field", &parent.field));
                }
                Selector::parse(&parent.records)?;
            }
            (Some(_), false) => {
                return Err(
                    Error::config("with a `parent`, `path` must hold `{<parent.field>}`")
                        .with_context("path", &self.path),
                );
            }
            (None, true) => {
                return Err(
                    Error::config("`path` holds a `{...}` but there is no `parent`")
                        .with_context("path", &self.path),
                );
            }
            (None, false) => {}
        }
        match &self.auth {
            Auth::ApiKey { name, value, .. }
                if name.is_empty() || value.expose_secret().is_empty() =>
            {
                return Err(Error::config("`api_key` auth needs `name` and `value`"));
            }
            Auth::Oauth2ClientCredentials { token_url, .. } => {
                url::Url::parse(token_url).map_err(|e| {
                    Error::config("`token_url` is not a URL")
                        .with_context("token_url", token_url)
                        .with_source(e)
                })?;
            }
            _ => {}
        }
        self.http.validate()?;
        if let Some(inc) = &self.incremental
            && (inc.cursor_field.is_empty() || inc.param.is_empty())
        {
            return Err(Error::config(
                "`incremental` needs `cursor_field` and `param`",
            ));
        }
        Ok(())
    }
}

//! The Snowflake client: login (password or key-pair JWT), session renewal, queries with
//! positional and array bindings, results as Arrow (chunks included), asynchronous queries,
//! retries with backoff.
//!
//! It speaks the HTTP protocol Snowflake's own drivers use (`/session/v1/login-request`,
//! `/queries/v1/query-request`, `/session/token-request`, result chunks from the URLs in the
//! answer). One client is one session: statements run in order on it, so a `BEGIN` ... `COMMIT`
//! on one client is one transaction. Clone it to share the session; connect again for another.

use crate::config::{SnowflakeAuth, SnowflakeConfig};
use crate::decode::{ColumnMeta, decode_ipc, decode_json_rowset, result_schema};
use crate::error::{IN_PROGRESS, LOGIN_AGAIN, SESSION_EXPIRED, sql_error};
use crate::jwt::KeyPair;
use crate::stage::StageUpload;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use backon::BackoffBuilder;
use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stratalake_core::stream::{BatchStreamAdapter, SendableBatchStream};
use stratalake_core::{Error, ErrorKind, Result, Retry};
use tokio::sync::Mutex;

/// A bound value: the type Snowflake is told, and the value as text.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// NULL.
    Null,
    /// BOOLEAN.
    Bool(bool),
    /// An integer (FIXED).
    Int(i64),
    /// A float (REAL).
    Float(f64),
    /// An exact decimal, as text (`"12.34"`).
    Decimal(String),
    /// Text.
    Text(String),
    /// Bytes (sent as hex).
    Binary(Vec<u8>),
    /// A date: days since 1970-01-01.
    Date(i32),
    /// A time of day: nanoseconds since midnight.
    Time(i64),
    /// A timestamp without time zone: nanoseconds since the epoch.
    TimestampNtz(i64),
    /// An instant: nanoseconds since the epoch, UTC.
    TimestampTz(i64),
}

impl Value {
    fn binding_type(&self) -> &'static str {
        match self {
            // Decimals travel as text: Snowflake converts it exactly (FIXED bindings of
            // fractions are not accepted everywhere).
            Value::Null | Value::Text(_) | Value::Decimal(_) => "TEXT",
            Value::Bool(_) => "BOOLEAN",
            Value::Int(_) => "FIXED",
            Value::Float(_) => "REAL",
            Value::Binary(_) => "BINARY",
            Value::Date(_) => "DATE",
            Value::Time(_) => "TIME",
            Value::TimestampNtz(_) => "TIMESTAMP_NTZ",
            Value::TimestampTz(_) => "TIMESTAMP_TZ",
        }
    }

    /// The text the protocol carries (dates in epoch milliseconds, times and timestamps in
    /// nanoseconds, TIMESTAMP_TZ with its offset in minutes + 1440).
    pub fn binding_text(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Decimal(d) | Value::Text(d) => d.clone(),
            Value::Binary(b) => b.iter().map(|x| format!("{x:02X}")).collect(),
            Value::Date(d) => (i64::from(*d) * 86_400_000).to_string(),
            Value::Time(ns) | Value::TimestampNtz(ns) => ns.to_string(),
            Value::TimestampTz(ns) => format!("{ns} 1440"),
        })
    }
}

/// Bindings for the `?` placeholders of a statement.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub enum Bindings {
    /// No placeholders.
    #[default]
    None,
    /// One value per placeholder.
    Positional(Vec<Value>),
    /// Array binding: per placeholder, its type and one value per row; the statement runs
    /// once per row, as one request (an `INSERT ... VALUES (?, ?)` of many rows).
    Array(Vec<(&'static str, Vec<Option<String>>)>),
}

impl Bindings {
    fn to_json(&self) -> Option<serde_json::Value> {
        let mut m = serde_json::Map::new();
        match self {
            Bindings::None => return None,
            Bindings::Positional(vs) => {
                for (i, v) in vs.iter().enumerate() {
                    m.insert(
                        (i + 1).to_string(),
                        serde_json::json!({"type": v.binding_type(), "value": v.binding_text()}),
                    );
                }
            }
            Bindings::Array(cols) => {
                for (i, (ty, vs)) in cols.iter().enumerate() {
                    m.insert(
                        (i + 1).to_string(),
                        serde_json::json!({"type": ty, "value": vs}),
                    );
                }
            }
        }
        Some(serde_json::Value::Object(m))
    }
}

/// A finished query: its id, schema and rows (chunks downloaded), or what a DML changed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueryResult {
    /// Snowflake's query id.
    pub query_id: String,
    /// The columns as Snowflake described them.
    pub rowtype: Vec<ColumnMeta>,
    /// The Arrow schema of `batches`.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// For DML: the counts Snowflake reports (inserted, updated, deleted, ... per column).
    pub dml_counts: Option<Vec<u64>>,
}

impl QueryResult {
    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The rows a DML statement changed (the sum of its counts).
    pub fn rows_affected(&self) -> u64 {
        self.dml_counts.as_ref().map_or(0, |c| c.iter().sum())
    }
}

/// A query submitted with [`SnowflakeClient::submit`]; [`SnowflakeClient::wait`] polls it.
#[derive(Debug)]
pub struct AsyncQuery {
    /// Snowflake's query id.
    pub query_id: String,
    state: AsyncState,
}

#[derive(Debug)]
enum AsyncState {
    Done(Box<QueryData>),
    Running(String),
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryData {
    #[serde(default)]
    pub rowtype: Vec<ColumnMeta>,
    #[serde(default)]
    pub rowset_base64: Option<String>,
    #[serde(default)]
    pub rowset: Option<Vec<Vec<Option<serde_json::Value>>>>,
    #[serde(default)]
    pub query_id: Option<String>,
    #[serde(default)]
    pub query_result_format: Option<String>,
    #[serde(default)]
    pub statement_type_id: Option<i64>,
    #[serde(default)]
    pub chunks: Vec<ChunkRef>,
    #[serde(default)]
    pub chunk_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub qrmk: Option<String>,
    #[serde(default)]
    pub get_result_url: Option<String>,
    #[serde(default)]
    pub stage_info: Option<serde_json::Value>,
    #[serde(default)]
    pub encryption_material: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChunkRef {
    url: String,
    #[serde(default)]
    row_count: u64,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    success: bool,
}

struct Session {
    token: SecretString,
    master: Option<SecretString>,
    generation: u64,
}

struct Inner {
    cfg: SnowflakeConfig,
    base: String,
    http: reqwest::Client,
    key: Option<KeyPair>,
    session: Mutex<Option<Session>>,
    generation: AtomicU64,
    sequence: AtomicU64,
    /// A `BEGIN` ran and no `COMMIT`/`ROLLBACK` since: DDL is refused (see [`statement_kind`]).
    in_transaction: std::sync::atomic::AtomicBool,
}

/// What a statement does to the session's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatementKind {
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `ROLLBACK`.
    End,
    /// DDL (`CREATE`, `ALTER`, `DROP`, `UNDROP`, `GRANT`, `REVOKE`, `COMMENT`): on Snowflake it
    /// commits the open transaction before it runs.
    Ddl,
    /// Anything else (queries, DML, `PUT`, `COPY`, `SHOW`, ...).
    Other,
}

/// The kind of `sql` by its first keyword (after comments and whitespace).
pub(crate) fn statement_kind(sql: &str) -> StatementKind {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase();
    match word.as_str() {
        "BEGIN" | "START" => StatementKind::Begin,
        "COMMIT" | "ROLLBACK" => StatementKind::End,
        "CREATE" | "ALTER" | "DROP" | "UNDROP" | "GRANT" | "REVOKE" | "COMMENT" => {
            StatementKind::Ddl
        }
        _ => StatementKind::Other,
    }
}

/// A Snowflake session. See the module docs.
#[derive(Clone)]
pub struct SnowflakeClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for SnowflakeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeClient")
            .field("url", &self.inner.base)
            .field("account", &self.inner.cfg.account)
            .field("user", &self.inner.cfg.user)
            .finish_non_exhaustive()
    }
}

fn request_id() -> String {
    let a: u128 = rand::random();
    let s = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn http_error(e: reqwest::Error, what: &str, url: &str) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    Error::new(kind, format!("snowflake: {what} failed"))
        .with_retry(Retry::Transient)
        .with_context("url", url)
        .with_source(e)
}

impl SnowflakeClient {
    /// Validate the configuration, load the key, and log in.
    ///
    /// # Errors
    /// Config (settings, key), Auth (rejected credentials, with Snowflake's code), Unavailable
    /// (no answer after the retries).
    pub async fn connect(cfg: SnowflakeConfig) -> Result<Self> {
        cfg.validate()?;
        let key = match &cfg.auth {
            SnowflakeAuth::KeyPair {
                private_key,
                private_key_path,
                passphrase,
            } => {
                let pem: SecretString = match (private_key, private_key_path) {
                    (Some(k), _) => k.clone(),
                    (None, Some(p)) => tokio::fs::read_to_string(p)
                        .await
                        .map_err(|e| {
                            Error::config(format!(
                                "snowflake: cannot read the private key file {}",
                                p.display()
                            ))
                            .with_source(e)
                        })?
                        .into(),
                    (None, None) => unreachable!("validated"),
                };
                Some(KeyPair::from_pem(&pem, passphrase.as_ref())?)
            }
            SnowflakeAuth::Password { .. } => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.request_timeout_secs))
            .user_agent(concat!("stratalake-snowflake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config("snowflake: cannot build the HTTP client").with_source(e))?;
        let client = Self {
            inner: Arc::new(Inner {
                base: cfg.url(),
                cfg,
                http,
                key,
                session: Mutex::new(None),
                generation: AtomicU64::new(0),
                sequence: AtomicU64::new(0),
                in_transaction: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        client.token(None).await?;
        Ok(client)
    }

    /// The configuration this client connected with.
    pub fn config(&self) -> &SnowflakeConfig {
        &self.inner.cfg
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(20))
            .with_max_times(self.inner.cfg.max_retries)
            .with_jitter()
            .build()
    }

    /// The current session token; logs in when there is none or `stale` is the generation
    /// that failed (renewing with the master token first when `renew`).
    async fn token(&self, stale: Option<(u64, bool)>) -> Result<(SecretString, u64)> {
        let mut slot = self.inner.session.lock().await;
        if let Some(s) = slot.as_ref() {
            match stale {
                Some((g, _)) if g == s.generation => {}
                _ => return Ok((s.token.clone(), s.generation)),
            }
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        if let (Some((_, true)), Some(old)) = (stale, slot.as_ref())
            && let Some(master) = old.master.clone()
        {
            match self.renew(&old.token, &master).await {
                Ok((token, master)) => {
                    *slot = Some(Session {
                        token: token.clone(),
                        master: Some(master),
                        generation,
                    });
                    return Ok((token, generation));
                }
                Err(e) => {
                    tracing::info!(error = %e.report(), "snowflake: session renewal failed; logging in again")
                }
            }
        }
        let (token, master) = self.login().await?;
        *slot = Some(Session {
            token: token.clone(),
            master,
            generation,
        });
        Ok((token, generation))
    }

    async fn login(&self) -> Result<(SecretString, Option<SecretString>)> {
        let cfg = &self.inner.cfg;
        let mut data = serde_json::json!({
            "CLIENT_APP_ID": "strata",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "ACCOUNT_NAME": cfg.account_name(),
            "LOGIN_NAME": cfg.user,
            "CLIENT_ENVIRONMENT": {"APPLICATION": "strata", "OS": std::env::consts::OS},
            "SESSION_PARAMETERS": cfg.session_parameters,
        });
        match (&cfg.auth, &self.inner.key) {
            (SnowflakeAuth::Password { password }, _) => {
                data["PASSWORD"] = password.expose_secret().into();
            }
            (_, Some(key)) => {
                data["AUTHENTICATOR"] = "SNOWFLAKE_JWT".into();
                data["TOKEN"] = key
                    .jwt(&cfg.account_name(), &cfg.user, now_secs(), 60)?
                    .into();
            }
            (SnowflakeAuth::KeyPair { .. }, None) => {
                return Err(Error::internal(
                    "snowflake: key pair auth without a loaded key",
                ));
            }
        }
        let body = serde_json::json!({ "data": data });
        let mut url = url::Url::parse(&format!("{}/session/v1/login-request", self.inner.base))
            .map_err(|e| Error::config("snowflake: bad base_url").with_source(e))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("databaseName", &cfg.database);
            q.append_pair("schemaName", &cfg.schema);
            if let Some(w) = &cfg.warehouse {
                q.append_pair("warehouse", w);
            }
            if let Some(r) = &cfg.role {
                q.append_pair("roleName", r);
            }
            q.append_pair("request_id", &request_id());
        }
        let answer = self
            .post_json(url.as_str(), None, &body, "login")
            .await
            .map_err(|e| {
                e.with_context("account", &cfg.account)
                    .with_context("user", &cfg.user)
            })?;
        if !answer.success {
            let code = answer.code.unwrap_or_default();
            let msg = answer.message.unwrap_or_default();
            let mut e = sql_error(&code, &msg, None, None);
            if e.kind() != ErrorKind::Auth {
                e = Error::new(
                    ErrorKind::Auth,
                    format!("snowflake: login failed: {msg} (code {code})"),
                )
                .with_context("code", code);
            }
            return Err(e
                .with_context("account", &cfg.account)
                .with_context("user", &cfg.user));
        }
        let data = answer.data.unwrap_or_default();
        let token = data["token"].as_str().ok_or_else(|| {
            Error::new(
                ErrorKind::Auth,
                "snowflake: the login answer has no session token",
            )
        })?;
        tracing::debug!(account = %cfg.account, user = %cfg.user, "snowflake: logged in");
        Ok((
            token.to_string().into(),
            data["masterToken"].as_str().map(|m| m.to_string().into()),
        ))
    }

    async fn renew(
        &self,
        old: &SecretString,
        master: &SecretString,
    ) -> Result<(SecretString, SecretString)> {
        let url = format!(
            "{}/session/token-request?requestId={}",
            self.inner.base,
            request_id()
        );
        let body =
            serde_json::json!({"oldSessionToken": old.expose_secret(), "requestType": "RENEW"});
        let answer = self
            .post_json(&url, Some(master), &body, "session renewal")
            .await?;
        if !answer.success {
            return Err(sql_error(
                &answer.code.unwrap_or_default(),
                &answer.message.unwrap_or_default(),
                None,
                None,
            ));
        }
        let data = answer.data.unwrap_or_default();
        match (data["sessionToken"].as_str(), data["masterToken"].as_str()) {
            (Some(t), Some(m)) => Ok((t.to_string().into(), m.to_string().into())),
            _ => Err(Error::new(
                ErrorKind::Auth,
                "snowflake: the renewal answer has no tokens",
            )),
        }
    }

    /// POST a JSON body, retrying transport failures, 429, 5xx.
    async fn post_json(
        &self,
        url: &str,
        token: Option<&SecretString>,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<Answer> {
        self.send_with_retries(url, what, || {
            let mut req = self
                .inner
                .http
                .post(url)
                .header("Accept", "application/snowflake")
                .json(body);
            if let Some(t) = token {
                req = req.header(
                    "Authorization",
                    format!("Snowflake Token=\"{}\"", t.expose_secret()),
                );
            }
            req
        })
        .await
    }

    async fn send_with_retries(
        &self,
        url: &str,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer> {
        let shown = url.split('?').next().unwrap_or(url).to_string();
        let mut delays = self.backoff();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match build().send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let bytes = resp.bytes().await;
                    match bytes {
                        Ok(bytes)
                            if status.is_success()
                                || status == StatusCode::UNAUTHORIZED
                                || status == StatusCode::FORBIDDEN =>
                        {
                            match serde_json::from_slice::<Answer>(&bytes) {
                                Ok(a) => return Ok(a),
                                Err(e) if status.is_success() => {
                                    return Err(Error::new(
                                        ErrorKind::Internal,
                                        format!(
                                            "snowflake: the {what} answer is not Snowflake's JSON"
                                        ),
                                    )
                                    .with_context("url", &shown)
                                    .with_source(e));
                                }
                                Err(_) => {
                                    return Err(Error::new(
                                        ErrorKind::Auth,
                                        format!("snowflake: {what} refused with HTTP {status}"),
                                    )
                                    .with_context("url", &shown));
                                }
                            }
                        }
                        Ok(bytes) => {
                            let transient = status.is_server_error()
                                || status == StatusCode::TOO_MANY_REQUESTS
                                || status == StatusCode::REQUEST_TIMEOUT;
                            let text: String =
                                String::from_utf8_lossy(&bytes).chars().take(300).collect();
                            let kind = match status {
                                StatusCode::TOO_MANY_REQUESTS => ErrorKind::RateLimited,
                                StatusCode::NOT_FOUND => ErrorKind::NotFound,
                                s if s.is_server_error() => ErrorKind::Unavailable,
                                _ => ErrorKind::Config,
                            };
                            let e = Error::new(
                                kind,
                                format!("snowflake: {what} answered HTTP {status}: {text}"),
                            )
                            .with_context("url", &shown);
                            if !transient {
                                return Err(e.with_retry(Retry::Permanent));
                            }
                            e.with_retry(Retry::Transient)
                        }
                        Err(e) => http_error(e, what, &shown),
                    }
                }
                Err(e) => http_error(e, what, &shown),
            };
            let Some(delay) = delays.next() else {
                return Err(failure.with_context("attempts", attempt));
            };
            tracing::debug!(error = %failure.report(), ?delay, "snowflake: retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Run a statement and collect its whole result.
    ///
    /// # Errors
    /// Snowflake's error mapped by [`crate::error::kind_of`], with the code, query id and
    /// statement as context; transport failures after the retries.
    pub async fn query(&self, sql: &str) -> Result<QueryResult> {
        self.query_with(sql, &Bindings::None).await
    }

    /// Run a statement with bindings and collect its whole result.
    ///
    /// # Errors
    /// As [`SnowflakeClient::query`].
    pub async fn query_with(&self, sql: &str, bindings: &Bindings) -> Result<QueryResult> {
        let data = self.run(sql, bindings, false).await?;
        self.finish(data, sql).await
    }

    /// The tables of the connection's schema with their columns in order, names lower case
    /// (`INFORMATION_SCHEMA.COLUMNS`): what governance DDL is planned over.
    ///
    /// # Errors
    /// As [`SnowflakeClient::query`]; Internal when the answer's columns are not text.
    pub async fn table_columns(&self) -> Result<Vec<(String, Vec<String>)>> {
        use arrow_array::cast::AsArray as _;
        let cfg = &self.inner.cfg;
        let r = self
            .query_with(
                &format!(
                    "SELECT TABLE_NAME, COLUMN_NAME FROM {}.INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
                    crate::types::ident(&cfg.database)
                ),
                &Bindings::Positional(vec![Value::Text(crate::types::stored_name(&cfg.schema))]),
            )
            .await?;
        let mut tables: Vec<(String, Vec<String>)> = Vec::new();
        for b in &r.batches {
            let text = |i: usize| {
                arrow_cast::cast(b.column(i), &arrow_schema::DataType::Utf8).map_err(|e| {
                    Error::internal("INFORMATION_SCHEMA.COLUMNS answered a non-text name")
                        .with_source(e)
                })
            };
            let (t, c) = (text(0)?, text(1)?);
            for (t, c) in t.as_string::<i32>().iter().zip(c.as_string::<i32>().iter()) {
                let (t, c) = (
                    t.unwrap_or_default().to_lowercase(),
                    c.unwrap_or_default().to_lowercase(),
                );
                match tables.last_mut() {
                    Some((name, cols)) if *name == t => cols.push(c),
                    _ => tables.push((t, vec![c])),
                }
            }
        }
        Ok(tables)
    }

    /// Run a statement; the rows arrive as a stream, result chunks downloaded as it is polled
    /// (two ahead).
    ///
    /// # Errors
    /// As [`SnowflakeClient::query`]; chunk failures come through the stream.
    pub async fn query_stream(
        &self,
        sql: &str,
        bindings: &Bindings,
        lower_case: bool,
    ) -> Result<SendableBatchStream> {
        let data = self.run(sql, bindings, false).await?;
        self.stream_of(data, lower_case)
    }

    /// Submit a statement without waiting for it (`asyncExec`).
    ///
    /// # Errors
    /// As [`SnowflakeClient::query`], for the submission.
    pub async fn submit(&self, sql: &str, bindings: &Bindings) -> Result<AsyncQuery> {
        let answer = self.request_query(sql, bindings, true).await?;
        match answer {
            Polled::Done(data) => Ok(AsyncQuery {
                query_id: data.query_id.clone().unwrap_or_default(),
                state: AsyncState::Done(data),
            }),
            Polled::Running { query_id, url } => Ok(AsyncQuery {
                query_id,
                state: AsyncState::Running(url),
            }),
        }
    }

    /// Wait for a submitted statement, polling its result until it finishes.
    ///
    /// # Errors
    /// The statement's error; Timeout after `query_timeout_secs`.
    pub async fn wait(&self, q: AsyncQuery) -> Result<QueryResult> {
        let data = match q.state {
            AsyncState::Done(d) => *d,
            AsyncState::Running(url) => self.poll(&q.query_id, &url, "").await?,
        };
        self.finish(data, "").await
    }

    async fn run(&self, sql: &str, bindings: &Bindings, async_exec: bool) -> Result<QueryData> {
        match self.request_query(sql, bindings, async_exec).await? {
            Polled::Done(d) => Ok(*d),
            Polled::Running { query_id, url } => self.poll(&query_id, &url, sql).await,
        }
    }

    async fn request_query(
        &self,
        sql: &str,
        bindings: &Bindings,
        async_exec: bool,
    ) -> Result<Polled> {
        // Snowflake commits the open transaction before any DDL: a DDL statement inside a
        // commit transaction would make half of it durable. Refuse it here, so every test on a
        // stand-in (which runs DDL inside transactions) guards the real semantics.
        let kind = statement_kind(sql);
        let open = &self.inner.in_transaction;
        if kind == StatementKind::Ddl && open.load(Ordering::SeqCst) {
            return Err(Error::internal(
                "snowflake: a DDL statement inside an open transaction (Snowflake would commit the transaction before running it): run DDL before BEGIN or after COMMIT",
            )
            .with_context("sql", sql.chars().take(240).collect::<String>()));
        }
        let answer = self
            .request_query_unguarded(sql, bindings, async_exec)
            .await;
        match kind {
            StatementKind::Begin if answer.is_ok() => open.store(true, Ordering::SeqCst),
            StatementKind::End => open.store(false, Ordering::SeqCst),
            _ => {}
        }
        answer
    }

    async fn request_query_unguarded(
        &self,
        sql: &str,
        bindings: &Bindings,
        async_exec: bool,
    ) -> Result<Polled> {
        let rid = request_id();
        let mut body = serde_json::json!({
            "sqlText": sql,
            "asyncExec": async_exec,
            "sequenceId": self.inner.sequence.fetch_add(1, Ordering::SeqCst) + 1,
            "querySubmissionTime": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        });
        if let Some(b) = bindings.to_json() {
            body["bindings"] = b;
        }
        let mut stale = None;
        for _ in 0..3 {
            let (token, generation) = self.token(stale).await?;
            // The same requestId on retries lets Snowflake recognise a resent statement.
            let url = format!(
                "{}/queries/v1/query-request?requestId={rid}",
                self.inner.base
            );
            let answer = self.post_json(&url, Some(&token), &body, "query").await?;
            let code = answer.code.clone().unwrap_or_default();
            if !answer.success && code == SESSION_EXPIRED {
                stale = Some((generation, true));
                continue;
            }
            if !answer.success && LOGIN_AGAIN.contains(&code.as_str()) {
                stale = Some((generation, false));
                continue;
            }
            return self.interpret(answer, sql);
        }
        Err(Error::new(
            ErrorKind::Auth,
            "snowflake: the session kept expiring; log in again",
        ))
    }

    fn interpret(&self, answer: Answer, sql: &str) -> Result<Polled> {
        let code = answer.code.clone().unwrap_or_default();
        let data: QueryData = match answer.data.clone() {
            Some(d) if !d.is_null() => serde_json::from_value(d).map_err(|e| {
                Error::internal("snowflake: the query answer is not Snowflake's JSON")
                    .with_source(e)
            })?,
            _ => QueryData::default(),
        };
        if IN_PROGRESS.contains(&code.as_str()) {
            let query_id = data.query_id.clone().unwrap_or_default();
            let url = data
                .get_result_url
                .clone()
                .unwrap_or_else(|| format!("/queries/{query_id}/result"));
            return Ok(Polled::Running { query_id, url });
        }
        if !answer.success {
            return Err(sql_error(
                &code,
                answer.message.as_deref().unwrap_or("the statement failed"),
                data.query_id.as_deref(),
                Some(sql),
            ));
        }
        Ok(Polled::Done(Box::new(data)))
    }

    async fn poll(&self, query_id: &str, result_url: &str, sql: &str) -> Result<QueryData> {
        let deadline = Instant::now() + Duration::from_secs(self.inner.cfg.query_timeout_secs);
        let mut wait = Duration::from_millis(50);
        let url = if result_url.starts_with("http") {
            result_url.to_string()
        } else {
            format!("{}{result_url}", self.inner.base)
        };
        let mut stale = None;
        loop {
            let (token, generation) = self.token(stale).await?;
            let answer = self
                .send_with_retries(&url, "query result", || {
                    self.inner
                        .http
                        .get(&url)
                        .header("Accept", "application/snowflake")
                        .header(
                            "Authorization",
                            format!("Snowflake Token=\"{}\"", token.expose_secret()),
                        )
                })
                .await?;
            let code = answer.code.clone().unwrap_or_default();
            if !answer.success && code == SESSION_EXPIRED {
                stale = Some((generation, true));
                continue;
            }
            match self.interpret(answer, sql)? {
                Polled::Done(d) => return Ok(*d),
                Polled::Running { .. } => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "snowflake: query {query_id} still runs after {} s; raise query_timeout_secs or cancel it",
                        self.inner.cfg.query_timeout_secs
                    ),
                )
                .with_context("query_id", query_id));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    async fn finish(&self, data: QueryData, _sql: &str) -> Result<QueryResult> {
        let dml_counts = dml_counts(&data);
        let query_id = data.query_id.clone().unwrap_or_default();
        let rowtype = data.rowtype.clone();
        let schema = result_schema(&rowtype, false);
        let batches: Vec<RecordBatch> = self.stream_of(data, false)?.try_collect().await?;
        Ok(QueryResult {
            query_id,
            rowtype,
            schema,
            batches,
            dml_counts,
        })
    }

    fn stream_of(&self, data: QueryData, lower_case: bool) -> Result<SendableBatchStream> {
        let schema = result_schema(&data.rowtype, lower_case);
        let mut first = Vec::new();
        if data.query_result_format.as_deref() == Some("json") || data.rowset_base64.is_none() {
            if let Some(rows) = &data.rowset
                && !data.rowtype.is_empty()
                && !rows.is_empty()
            {
                first.push(decode_json_rowset(&texts(rows), &data.rowtype, &schema)?);
            }
        } else if let Some(b64) = data.rowset_base64.as_deref().filter(|s| !s.is_empty()) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| Error::data("snowflake: rowsetBase64 is not base64").with_source(e))?;
            first = decode_ipc(&bytes, &data.rowtype, &schema)?;
        }
        let mut headers: Vec<(String, String)> = data.chunk_headers.clone().into_iter().collect();
        if headers.is_empty()
            && let Some(qrmk) = &data.qrmk
        {
            headers.push((
                "x-amz-server-side-encryption-customer-algorithm".into(),
                "AES256".into(),
            ));
            headers.push((
                "x-amz-server-side-encryption-customer-key".into(),
                qrmk.clone(),
            ));
        }
        let headers = Arc::new(headers);
        let rowtype = Arc::new(data.rowtype.clone());
        let client = self.clone();
        let chunk_schema = schema.clone();
        let json = data.query_result_format.as_deref() == Some("json");
        let chunks = futures::stream::iter(data.chunks.clone())
            .map(move |c| {
                let client = client.clone();
                let headers = headers.clone();
                let rowtype = rowtype.clone();
                let schema = chunk_schema.clone();
                async move { client.chunk(&c, &headers, &rowtype, &schema, json).await }
            })
            .buffered(2)
            .map_ok(|bs| futures::stream::iter(bs.into_iter().map(Ok)))
            .try_flatten();
        let stream = futures::stream::iter(first.into_iter().map(Ok)).chain(chunks);
        Ok(Box::pin(BatchStreamAdapter::new(schema, stream)))
    }

    async fn chunk(
        &self,
        c: &ChunkRef,
        headers: &[(String, String)],
        rowtype: &[ColumnMeta],
        schema: &SchemaRef,
        json: bool,
    ) -> Result<Vec<RecordBatch>> {
        let shown = c.url.split('?').next().unwrap_or(&c.url).to_string();
        let mut delays = self.backoff();
        let bytes = loop {
            let mut req = self.inner.http.get(&c.url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let failure = match req.send().await {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => break b,
                    Err(e) => http_error(e, "result chunk download", &shown),
                },
                Ok(r) => {
                    let status = r.status();
                    let e = Error::new(
                        ErrorKind::Unavailable,
                        format!("snowflake: result chunk download answered HTTP {status}"),
                    )
                    .with_context("url", &shown);
                    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                        return Err(e);
                    }
                    e.with_retry(Retry::Transient)
                }
                Err(e) => http_error(e, "result chunk download", &shown),
            };
            match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(failure),
            }
        };
        let bytes = maybe_gunzip(&bytes)?;
        let batches = if json {
            // JSON chunks are rows without the enclosing brackets: `[..],[..]`.
            let text = format!("[{}]", String::from_utf8_lossy(&bytes));
            let rows: Vec<Vec<Option<serde_json::Value>>> =
                serde_json::from_str(&text).map_err(|e| {
                    Error::data("snowflake: a JSON result chunk is malformed").with_source(e)
                })?;
            vec![decode_json_rowset(&texts(&rows), rowtype, schema)?]
        } else {
            decode_ipc(&bytes, rowtype, schema)?
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if c.row_count > 0 && rows as u64 != c.row_count {
            return Err(Error::data(format!(
                "snowflake: a result chunk holds {rows} rows, the answer announced {}",
                c.row_count
            ))
            .with_context("url", shown));
        }
        Ok(batches)
    }

    /// Upload `bytes` as `file_name` into an internal stage location (`@STAGE/path`), as the
    /// `PUT` command does: Snowflake answers where to (its cloud storage, with temporary
    /// credentials and client-side encryption, or a presigned URL) and the bytes go there.
    ///
    /// # Errors
    /// The PUT's Snowflake error, or the storage's HTTP error naming the location.
    pub async fn put(
        &self,
        stage_location: &str,
        file_name: &str,
        bytes: bytes::Bytes,
    ) -> Result<()> {
        let sql = format!(
            "PUT 'file:///strata/{file_name}' {stage_location} AUTO_COMPRESS=FALSE SOURCE_COMPRESSION=NONE OVERWRITE=TRUE"
        );
        let data = self.run(&sql, &Bindings::None, false).await?;
        let upload = StageUpload::from_answer(&data, file_name)
            .map_err(|e| e.with_context("stage", stage_location))?;
        upload
            .send(&self.inner.http, bytes, &mut self.backoff())
            .await
    }

    /// End the session.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn close(&self) -> Result<()> {
        let slot = self.inner.session.lock().await.take();
        if let Some(s) = slot {
            let url = format!("{}/session?delete=true", self.inner.base);
            self.post_json(&url, Some(&s.token), &serde_json::json!({}), "logout")
                .await?;
        }
        Ok(())
    }
}

enum Polled {
    Done(Box<QueryData>),
    Running { query_id: String, url: String },
}

/// A JSON rowset as the text values `decode_json_rowset` reads.
fn texts(rows: &[Vec<Option<serde_json::Value>>]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.as_ref().and_then(json_text)).collect())
        .collect()
}

fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn dml_counts(data: &QueryData) -> Option<Vec<u64>> {
    // Insert (1), update (2), delete (3), merge (4), multi-table insert (5): 0x3000 + n.
    let t = data.statement_type_id?;
    if !(0x3000..0x4000).contains(&t) {
        return None;
    }
    let mut counts = Vec::new();
    if let Some(rows) = &data.rowset {
        if let Some(first) = rows.first() {
            for v in first {
                counts.push(
                    v.as_ref()
                        .and_then(json_text)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                );
            }
        }
    } else if let Some(b64) = data.rowset_base64.as_deref().filter(|s| !s.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let schema = result_schema(&data.rowtype, false);
        for b in decode_ipc(&bytes, &data.rowtype, &schema).ok()? {
            if b.num_rows() > 0 {
                for c in b.columns() {
                    let c = arrow_cast::cast(c, &arrow_schema::DataType::UInt64).ok()?;
                    use arrow_array::cast::AsArray;
                    counts.push(c.as_primitive::<arrow_array::types::UInt64Type>().value(0));
                }
            }
        }
    }
    Some(counts)
}

fn maybe_gunzip(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| Error::data("snowflake: a gzip result chunk is corrupt").with_source(e))?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn statements_are_classified_by_their_first_keyword() {
        use super::{StatementKind as K, statement_kind};
        assert_eq!(statement_kind("  begin"), K::Begin);
        assert_eq!(statement_kind("START TRANSACTION"), K::Begin);
        assert_eq!(statement_kind("commit"), K::End);
        assert_eq!(
            statement_kind("-- note\n/* x */ CREATE TABLE IF NOT EXISTS q (a INT)"),
            K::Ddl
        );
        assert_eq!(statement_kind("drop table t"), K::Ddl);
        assert_eq!(statement_kind("INSERT INTO t SELECT 1"), K::Other);
        assert_eq!(statement_kind("DELETE FROM t"), K::Other);
    }
}

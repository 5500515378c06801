//! [`RestSource`]: pages fetched (sequentially with the next request overlapping the current
//! page's decoding, or concurrently when the total is known), records found by the selector
//! without building a DOM, decoded into Arrow with the NDJSON decoder's policies.

use crate::client::{Client, Response};
use crate::config::{InvalidPagePolicy, Paginator, RestSourceConfig};
use crate::selector::{Document, Selector, scalar_text};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratalake_core::metrics::{RECEIVED_BYTES_TOTAL, RECEIVED_ROWS_TOTAL};
use stratalake_core::{
    BatchStreamAdapter, Context, Cursor, Error, ErrorKind, QuarantineRecord, ReadPlan, ReadRequest,
    Result, SendableBatchStream, Source, Split,
};
use stratalake_records::{JsonRecordDecoder, SchemaSource};

const CURSOR_PREFIX: &str = "rest/v1:";

/// Reads a paginated JSON API into Arrow batches. See the crate docs.
#[derive(Clone)]
pub struct RestSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestSource")
            .field("base_url", &self.inner.cfg.base_url)
            .field("path", &self.inner.cfg.path)
            .finish()
    }
}

struct Inner {
    cfg: RestSourceConfig,
    client: Client,
    base: Url,
    records: Selector,
    total: Option<Selector>,
    has_more: Option<Selector>,
    schema: SchemaRef,
    /// Per plan: where it started and the high-water mark its splits saw.
    plans: Mutex<HashMap<String, PlanState>>,
    decoders: Mutex<Vec<JsonRecordDecoder>>,
}

/// The committed position of an incremental source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct RestCursor {
    /// The largest cursor-field value read.
    #[serde(default)]
    last: Option<String>,
    /// Hashes of the records at (or within the lookback of) `last`: dropped when seen again.
    #[serde(default)]
    seen: BTreeSet<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SplitSpec {
    token: String,
    path: String,
    since: Option<String>,
}

/// One fetched page.
#[derive(Debug, Clone)]
struct Page {
    number: u64,
    url: String,
    body: Bytes,
    /// Byte ranges of the records in `body`.
    records: Vec<Range<usize>>,
    /// The values the walk reads from the body, found in the same parse as the records.
    values: PageValues,
    /// Why the page could not be read, when it could not.
    invalid: Option<String>,
}

/// What a page's body tells the walk (each `None` when missing, null, or the body is not
/// JSON).
#[derive(Debug, Clone, Default)]
struct PageValues {
    /// `stop.total_path`.
    total: Option<String>,
    /// `stop.has_more_path`.
    has_more: Option<String>,
    /// The page-number paginator's `total_pages_path`.
    total_pages: Option<String>,
    /// The cursor paginator's `cursor_path`, or the next-URL paginator's `next_url_path`.
    next: Option<String>,
}

/// What one plan's splits share.
#[derive(Debug, Default)]
struct PlanState {
    from: RestCursor,
    mark: Watermark,
}

/// A high-water mark being built from the records of one plan.
#[derive(Debug, Default, Clone)]
struct Watermark {
    max: Option<String>,
    /// (value, hash) of the records within the lookback of `max`.
    near: Vec<(String, u64)>,
}

/// Compare cursor values: as instants when both are RFC 3339, as numbers when both are, else
/// as text.
fn cmp_values(a: &str, b: &str) -> std::cmp::Ordering {
    if let (Ok(x), Ok(y)) = (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
    }
    a.cmp(b)
}

/// `v - lookback` for RFC 3339 values; other values unchanged.
fn minus_lookback(v: &str, secs: u64) -> String {
    match chrono::DateTime::parse_from_rfc3339(v) {
        Ok(t) if secs > 0 => (t - chrono::Duration::seconds(i64::try_from(secs).unwrap_or(0)))
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        _ => v.to_string(),
    }
}

impl Watermark {
    fn offer(&mut self, value: String, hash: u64, lookback: u64) {
        let raise = self
            .max
            .as_deref()
            .is_none_or(|m| cmp_values(&value, m).is_gt());
        if raise {
            self.max = Some(value.clone());
        }
        let floor = minus_lookback(self.max.as_deref().unwrap_or(&value), lookback);
        if cmp_values(&value, &floor).is_ge() {
            self.near.push((value, hash));
        }
        if raise {
            self.near.retain(|(v, _)| cmp_values(v, &floor).is_ge());
        }
    }

    fn merge(&mut self, other: Watermark, lookback: u64) {
        for (v, h) in other.near {
            self.offer(v, h, lookback);
        }
        if let Some(m) = other.max {
            let raise = self
                .max
                .as_deref()
                .is_none_or(|x| cmp_values(&m, x).is_gt());
            if raise {
                self.max = Some(m);
            }
        }
    }
}

fn hash_of(bytes: &[u8]) -> u64 {
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(bytes)
}

fn parse_cursor(c: &Cursor) -> Result<RestCursor> {
    c.decode(CURSOR_PREFIX, "a REST source")
}

fn encode_cursor(c: &RestCursor) -> Result<Cursor> {
    Cursor::encode(CURSOR_PREFIX, c)
}

/// Byte ranges of the records the selector finds in `body`, and the values the walk needs
/// from it: one parse of the body serves both (every object on a path is parsed once).
fn read_body(
    body: &Bytes,
    sel: &Selector,
    lookups: &Lookups<'_>,
) -> (std::result::Result<Vec<Range<usize>>, String>, PageValues) {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            return (
                Err(format!("the body is not UTF-8: {e}")),
                PageValues::default(),
            );
        }
    };
    let root: &RawValue = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            return (
                Err(format!("the body is not JSON: {e}")),
                PageValues::default(),
            );
        }
    };
    let doc = Document::new(root);
    let base = text.as_ptr() as usize;
    let records = sel.records_in(&doc).map(|rs| {
        rs.into_iter()
            .map(|r| {
                let start = r.get().as_ptr() as usize - base;
                start..start + r.get().len()
            })
            .collect()
    });
    let value = |s: Option<&Selector>| s.and_then(|s| s.text_in(&doc));
    let values = PageValues {
        total: value(lookups.total),
        has_more: value(lookups.has_more),
        total_pages: value(lookups.total_pages.as_ref()),
        next: value(lookups.next.as_ref()),
    };
    (records, values)
}

/// The selectors whose values a page's walk reads.
struct Lookups<'a> {
    total: Option<&'a Selector>,
    has_more: Option<&'a Selector>,
    total_pages: Option<Selector>,
    next: Option<Selector>,
}

/// `url` with the query parameter `name` set to `value` (replacing any earlier one).
fn with_query_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut u = url.clone();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(name, value);
    u
}

/// The `rel="next"` target of an RFC 8288 `Link` header.
fn link_next(headers: &reqwest::header::HeaderMap) -> Option<String> {
    for v in headers.get_all(reqwest::header::LINK) {
        let v = v.to_str().ok()?;
        for part in v.split(',') {
            let mut it = part.split(';');
            let target = it.next()?.trim();
            let is_next = it.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                return Some(
                    target
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string(),
                );
            }
        }
    }
    None
}

impl RestSource {
    /// Build the source; with an inferred schema, the first page is fetched to infer it.
    ///
    /// # Errors
    /// Config errors naming the key; HTTP errors naming the URL.
    pub async fn try_new(cfg: RestSourceConfig) -> Result<Self> {
        cfg.validate()?;
        let mut base = Url::parse(&cfg.base_url).map_err(|e| {
            Error::config("`base_url` is not a URL")
                .with_context("base_url", &cfg.base_url)
                .with_source(e)
        })?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let client = Client::new(&cfg.auth, &cfg.http)?;
        let mut inner = Inner {
            records: Selector::parse(&cfg.records)?,
            total: cfg
                .stop
                .total_path
                .as_deref()
                .map(Selector::parse)
                .transpose()?,
            has_more: cfg
                .stop
                .has_more_path
                .as_deref()
                .map(Selector::parse)
                .transpose()?,
            schema: Arc::new(arrow_schema::Schema::empty()),
            client,
            base,
            cfg,
            plans: Mutex::new(HashMap::new()),
            decoders: Mutex::new(Vec::new()),
        };
        inner.schema = match &inner.cfg.schema {
            SchemaSource::Explicit(cols) => stratalake_records::schema::explicit_schema(cols)?,
            SchemaSource::Infer { sample_records, .. } => inner.infer(*sample_records).await?,
            _ => return Err(Error::config("unsupported schema source")),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}

impl Inner {
    fn url(&self, path: &str, params: &[(String, String)]) -> Result<Url> {
        let mut u = self.base.join(path.trim_start_matches('/')).map_err(|e| {
            Error::config("cannot join the path to `base_url`")
                .with_context("path", path)
                .with_source(e)
        })?;
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in self
                .cfg
                .params
                .iter()
                .chain(params.iter().map(|(k, v)| (k, v)))
            {
                q.append_pair(k, v);
            }
        }
        if u.query() == Some("") {
            u.set_query(None);
        }
        Ok(u)
    }

    async fn fetch(
        &self,
        url: &Url,
        number: u64,
        sel: &Selector,
        paginator: &Paginator,
    ) -> Result<(Page, Response)> {
        let shown = self.client.redact(url);
        // The paths were checked when the configuration was validated.
        let path = |p: Option<&str>| p.and_then(|p| Selector::parse(p).ok());
        let lookups = Lookups {
            total: self.total.as_ref(),
            has_more: self.has_more.as_ref(),
            total_pages: match paginator {
                Paginator::PageNumber {
                    total_pages_path, ..
                } => path(total_pages_path.as_deref()),
                _ => None,
            },
            next: match paginator {
                Paginator::Cursor { cursor_path, .. } => path(Some(cursor_path)),
                Paginator::NextUrl { next_url_path } => path(Some(next_url_path)),
                _ => None,
            },
        };
        let mut tries = 0;
        loop {
            let resp = self
                .client
                .get(url)
                .await
                .map_err(|e| e.with_context("page", number))?;
            let (records, values) = read_body(&resp.body, sel, &lookups);
            match records {
                Ok(records) => {
                    let page = Page {
                        number,
                        url: shown,
                        body: resp.body.clone(),
                        records,
                        values,
                        invalid: None,
                    };
                    return Ok((page, resp));
                }
                // A garbled page may be a glitch: ask twice more before judging it.
                Err(_) if tries < 2 => tries += 1,
                Err(reason) => {
                    let page = Page {
                        number,
                        url: shown,
                        body: resp.body.clone(),
                        records: Vec::new(),
                        values,
                        invalid: Some(reason),
                    };
                    return Ok((page, resp));
                }
            }
        }
    }

    async fn infer(&self, max_records: usize) -> Result<SchemaRef> {
        let path = self
            .cfg
            .parent
            .as_ref()
            .map_or(self.cfg.path.clone(), |_| String::new());
        if self.cfg.parent.is_some() {
            return Err(Error::config(
                "a child endpoint needs an explicit `schema` (it cannot be inferred before the parents are read)",
            ));
        }
        let url = self.url(&path, &self.first_params(None))?;
        let (page, _) = self
            .fetch(&url, 1, &self.records, &self.cfg.paginator)
            .await?;
        if let Some(reason) = page.invalid {
            return Err(Error::new(
                ErrorKind::Data,
                "cannot infer a schema: the first page is not JSON records",
            )
            .with_context("url", page.url)
            .with_context("reason", reason));
        }
        let mut sample = Vec::new();
        for r in page.records.iter().take(max_records) {
            sample.extend(
                page.body[r.clone()]
                    .iter()
                    .map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b }),
            );
            sample.push(b'\n');
        }
        if sample.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                "cannot infer a schema: the first page has no records; declare the schema",
            )
            .with_context("url", page.url));
        }
        let s = stratalake_records::infer::infer_ndjson(&sample, max_records, &page.url)?;
        Ok(Arc::new(s))
    }

    /// The query parameters of a first request.
    fn first_params(&self, since: Option<&str>) -> Vec<(String, String)> {
        let mut p = Vec::new();
        match &self.cfg.paginator {
            Paginator::Offset {
                limit,
                offset_param,
                limit_param,
                start,
            } => {
                p.push((offset_param.clone(), start.to_string()));
                p.push((limit_param.clone(), limit.to_string()));
            }
            Paginator::PageNumber {
                page_param,
                start,
                size_param,
                size,
                ..
            } => {
                p.push((page_param.clone(), start.to_string()));
                if let (Some(sp), Some(sz)) = (size_param, size) {
                    p.push((sp.clone(), sz.to_string()));
                }
            }
            _ => {}
        }
        if let (Some(inc), Some(s)) = (&self.cfg.incremental, since) {
            p.push((inc.param.clone(), s.to_string()));
        }
        p
    }

    /// Pages of one endpoint, as a stream. Offset and page-number pagination with a known
    /// total fetch the remaining pages concurrently (ordered, at most `max_in_flight`).
    fn pages(
        self: &Arc<Self>,
        path: String,
        paginator: Paginator,
        sel: Selector,
        extra: Vec<(String, String)>,
        first: Option<Page>,
    ) -> BoxStream<'static, Result<Page>> {
        let this = self.clone();
        let state = WalkState {
            next: None,
            number: 1,
            records: 0,
            total: None,
            seen: HashSet::new(),
            done: false,
            started: false,
            first,
        };
        stream::try_unfold(state, move |mut st| {
            let this = this.clone();
            let (path, paginator, sel, extra) =
                (path.clone(), paginator.clone(), sel.clone(), extra.clone());
            async move {
                if st.done {
                    return Ok(None);
                }
                let url = match st.next.take() {
                    Some(u) => u,
                    None if !st.started => this.url(&path, &extra)?,
                    None => return Ok(None),
                };
                let (page, resp) = match st.first.take() {
                    Some(p) if !st.started => (p, None),
                    _ => {
                        let (p, r) = this.fetch(&url, st.number, &sel, &paginator).await?;
                        (p, Some(r))
                    }
                };
                st.started = true;
                let headers = resp.map(|r| r.headers).unwrap_or_default();
                this.advance(&mut st, &paginator, &url, &page, &headers)?;
                Ok(Some((page, st)))
            }
        })
        .boxed()
    }

    /// Decide the next request after `page` (or that there is none).
    fn advance(
        &self,
        st: &mut WalkState,
        paginator: &Paginator,
        url: &Url,
        page: &Page,
        headers: &reqwest::header::HeaderMap,
    ) -> Result<()> {
        let stop = &self.cfg.stop;
        let values = &page.values;
        let n = page.records.len() as u64;
        st.records += n;
        if st.total.is_none() {
            st.total = values.total.as_deref().and_then(|v| v.parse::<u64>().ok());
        }
        let valid = page.invalid.is_none();
        if valid && n == 0 {
            st.done = true;
        }
        if let (Some(total), true) = (st.total, valid)
            && st.records >= total
        {
            st.done = true;
        }
        if values.has_more.as_deref() == Some("false") {
            st.done = true;
        }
        if stop.max_pages > 0 && st.number >= stop.max_pages {
            st.done = true;
        }
        if stop.max_records > 0 && st.records >= stop.max_records {
            st.done = true;
        }
        if st.done {
            return Ok(());
        }
        let with_param = |name: &str, value: &str| with_query_param(url, name, value);
        let next = match paginator {
            Paginator::Single => None,
            Paginator::Offset {
                limit,
                offset_param,
                start,
                ..
            } => Some(with_param(
                offset_param,
                &(start + st.number * limit).to_string(),
            )),
            Paginator::PageNumber {
                page_param, start, ..
            } => {
                let pages = values
                    .total_pages
                    .as_deref()
                    .and_then(|v| v.parse::<u64>().ok());
                if pages.is_some_and(|p| st.number >= p) {
                    None
                } else {
                    Some(with_param(page_param, &(start + st.number).to_string()))
                }
            }
            Paginator::Cursor { cursor_param, .. } => {
                if !valid {
                    return Err(invalid_page_error(page, "the next cursor is in the page"));
                }
                match values.next.clone().filter(|c| !c.is_empty()) {
                    Some(c) => Some(self.guard(st, with_param(cursor_param, &c), page)?),
                    None => None,
                }
            }
            Paginator::HeaderCursor {
                header,
                cursor_param,
            } => match headers.get(header.as_str()).and_then(|v| v.to_str().ok()) {
                Some(c) if !c.is_empty() => {
                    Some(self.guard(st, with_param(cursor_param, c), page)?)
                }
                _ => None,
            },
            Paginator::LinkHeader => match link_next(headers) {
                Some(t) => Some(self.guard(st, self.resolve(url, &t)?, page)?),
                None => None,
            },
            Paginator::NextUrl { .. } => {
                if !valid {
                    return Err(invalid_page_error(page, "the next URL is in the page"));
                }
                match values.next.clone().filter(|c| !c.is_empty()) {
                    Some(t) => Some(self.guard(st, self.resolve(url, &t)?, page)?),
                    None => None,
                }
            }
        };
        st.number += 1;
        st.next = next;
        if st.next.is_none() {
            st.done = true;
        }
        Ok(())
    }

    fn resolve(&self, url: &Url, target: &str) -> Result<Url> {
        url.join(target).map_err(|e| {
            Error::new(
                ErrorKind::Data,
                "the API gave a next-page link that is not a URL",
            )
            .with_context("url", self.client.redact(url))
            .with_context("link", target)
            .with_source(e)
        })
    }

    /// Refuse a next page that was already fetched: an API repeating a cursor would loop.
    fn guard(&self, st: &mut WalkState, next: Url, page: &Page) -> Result<Url> {
        if !st.seen.insert(next.to_string()) {
            return Err(Error::new(
                ErrorKind::Data,
                "the API returned a next page that was already read: stopping instead of looping",
            )
            .with_context("url", &page.url)
            .with_context("page", page.number)
            .with_context("next", self.client.redact(&next)));
        }
        Ok(next)
    }

    /// The concurrent page numbers, once the first page told the total.
    fn known_pages(&self, first: &Page) -> Option<u64> {
        let stop = &self.cfg.stop;
        let total = first
            .values
            .total
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok());
        let mut pages = match &self.cfg.paginator {
            Paginator::Offset { limit, .. } => total.map(|t| t.div_ceil(*limit)),
            Paginator::PageNumber { size, .. } => first
                .values
                .total_pages
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .or_else(|| total.zip(*size).map(|(t, s)| t.div_ceil(s))),
            _ => None,
        }?;
        if stop.max_pages > 0 {
            pages = pages.min(stop.max_pages);
        }
        if stop.max_records > 0 {
            let per = first.records.len().max(1) as u64;
            pages = pages.min(stop.max_records.div_ceil(per));
        }
        Some(pages)
    }

    /// The URL of page `k` (1-based) for offset and page-number pagination.
    fn page_url(&self, first_url: &Url, k: u64) -> Url {
        let (name, value) = match &self.cfg.paginator {
            Paginator::Offset {
                limit,
                offset_param,
                start,
                ..
            } => (offset_param.as_str(), start + (k - 1) * limit),
            Paginator::PageNumber {
                page_param, start, ..
            } => (page_param.as_str(), start + k - 1),
            _ => unreachable!("only for offset and page numbers"),
        };
        with_query_param(first_url, name, &value.to_string())
    }

    /// Every page of the split: sequentially, or after the first page concurrently.
    fn split_pages(self: &Arc<Self>, spec: SplitSpec) -> BoxStream<'static, Result<Page>> {
        let this = self.clone();
        let extra = self.first_params(spec.since.as_deref());
        let concurrent = matches!(
            self.cfg.paginator,
            Paginator::Offset { .. } | Paginator::PageNumber { .. }
        );
        if !concurrent {
            return self.pages(
                spec.path,
                self.cfg.paginator.clone(),
                self.records.clone(),
                extra,
                None,
            );
        }
        stream::once(async move {
            let url = this.url(&spec.path, &extra)?;
            let first = this
                .fetch(&url, 1, &this.records, &this.cfg.paginator)
                .await?
                .0;
            let rest: BoxStream<'static, Result<Page>> = match this.known_pages(&first) {
                Some(pages) if first.invalid.is_none() && !first.records.is_empty() => {
                    let t = this.clone();
                    let in_flight = t.cfg.http.max_in_flight;
                    stream::iter(2..=pages)
                        .map(move |k| {
                            let t = t.clone();
                            let u = t.page_url(&url, k);
                            async move {
                                t.fetch(&u, k, &t.records, &t.cfg.paginator)
                                    .await
                                    .map(|(p, _)| p)
                            }
                        })
                        .buffered(in_flight)
                        .boxed()
                }
                // No total: walk on from the first page.
                _ => this
                    .pages(
                        spec.path.clone(),
                        this.cfg.paginator.clone(),
                        this.records.clone(),
                        extra,
                        Some(first.clone()),
                    )
                    .skip(1)
                    .boxed(),
            };
            Ok::<_, Error>(stream::once(async move { Ok(first) }).chain(rest))
        })
        .try_flatten()
        .boxed()
    }

    /// Decode one page on a blocking thread: records to batches, bad records and invalid
    /// pages to quarantine, the incremental filter and watermark.
    fn decode_page(
        &self,
        page: &Page,
        ctx: &Context,
        from: &RestCursor,
        mark: &mut Watermark,
    ) -> Result<(Vec<RecordBatch>, Vec<QuarantineRecord>)> {
        let location = format!("GET {} (page {})", page.url, page.number);
        if let Some(reason) = &page.invalid {
            if self.cfg.on_invalid_page == InvalidPagePolicy::Fail
                || !matches!(
                    self.cfg.paginator,
                    Paginator::Offset { .. } | Paginator::PageNumber { .. } | Paginator::Single
                )
            {
                return Err(invalid_page_error(page, "`on_invalid_page: fail`"));
            }
            let raw =
                String::from_utf8_lossy(&page.body[..page.body.len().min(1 << 20)]).into_owned();
            return Ok((
                Vec::new(),
                vec![QuarantineRecord {
                    component: "source".into(),
                    location,
                    position: Some(page.number),
                    raw,
                    reason: format!("the page is not readable: {reason}"),
                    column: None,
                }],
            ));
        }
        let inc = self.cfg.incremental.as_ref();
        let mut lines = Vec::with_capacity(page.body.len() + page.records.len());
        let mut index = Vec::with_capacity(page.records.len());
        for (i, r) in page.records.iter().enumerate() {
            let raw = &page.body[r.clone()];
            if let Some(inc) = inc {
                let text = std::str::from_utf8(raw).unwrap_or_default();
                let fields: HashMap<Cow<str>, &RawValue> =
                    serde_json::from_str(text).unwrap_or_default();
                if let Some(v) = fields
                    .get(inc.cursor_field.as_str())
                    .and_then(|v| scalar_text(v))
                {
                    let h = hash_of(raw);
                    let old = from
                        .last
                        .as_deref()
                        .is_some_and(|l| cmp_values(&v, l).is_le());
                    if old && from.seen.contains(&h) {
                        continue; // read before: deduplicated at the boundary
                    }
                    mark.offer(v, h, inc.lookback_secs);
                }
            }
            // A record may be pretty-printed over several lines: its line breaks (only ever
            // whitespace between tokens, JSON strings cannot hold them raw) become spaces.
            let at = lines.len();
            lines.extend_from_slice(raw);
            if memchr::memchr2(b'\n', b'\r', raw).is_some() {
                for b in &mut lines[at..] {
                    if *b == b'\n' || *b == b'\r' {
                        *b = b' ';
                    }
                }
            }
            lines.push(b'\n');
            index.push(i as u64);
        }
        let mut dec = self
            .decoders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| {
                JsonRecordDecoder::new(
                    self.schema.clone(),
                    ctx.batch_size(),
                    self.cfg.type_drift,
                    self.cfg.unknown_fields,
                )
            });
        let out = dec.decode(&lines);
        self.decoders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dec);
        let out = out.map_err(|e| {
            let rec = e
                .context_value("record")
                .and_then(|r| r.parse::<usize>().ok())
                .unwrap_or(0);
            let pos = index.get(rec).copied().unwrap_or(0) + 1;
            e.with_context("url", &page.url)
                .with_context("page", page.number)
                .with_context("record_in_page", pos)
        })?;
        let rejected = out
            .rejected
            .into_iter()
            .map(|r| QuarantineRecord {
                component: "source".into(),
                location: location.clone(),
                position: Some(index.get(r.index as usize).copied().unwrap_or(0) + 1),
                raw: r.raw,
                reason: r.reason,
                column: r.column,
            })
            .collect();
        Ok((out.batches, rejected))
    }

    async fn parent_values(self: &Arc<Self>) -> Result<Vec<String>> {
        let Some(parent) = &self.cfg.parent else {
            return Ok(Vec::new());
        };
        let sel = Selector::parse(&parent.records)?;
        let params: Vec<(String, String)> = parent
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut pages = self.pages(
            parent.path.clone(),
            parent.paginator.clone(),
            sel,
            params,
            None,
        );
        let mut out = Vec::new();
        while let Some(page) = pages.try_next().await? {
            if page.invalid.is_some() {
                return Err(invalid_page_error(&page, "parent pages must be readable"));
            }
            for r in &page.records {
                let text = std::str::from_utf8(&page.body[r.clone()]).unwrap_or_default();
                let fields: HashMap<Cow<str>, &RawValue> =
                    serde_json::from_str(text).unwrap_or_default();
                match fields
                    .get(parent.field.as_str())
                    .and_then(|v| scalar_text(v))
                {
                    Some(v) => out.push(v),
                    None => {
                        return Err(Error::new(
                            ErrorKind::Data,
                            "a parent record lacks the field that names its children",
                        )
                        .with_context("url", &page.url)
                        .with_context("page", page.number)
                        .with_context("field", &parent.field)
                        .with_context("record", stratalake_records::decode::truncate(text, 200)));
                    }
                }
            }
        }
        Ok(out)
    }
}

struct WalkState {
    next: Option<Url>,
    number: u64,
    records: u64,
    total: Option<u64>,
    seen: HashSet<String>,
    done: bool,
    started: bool,
    first: Option<Page>,
}

/// End `pages` with a Timeout error once `limit` has passed since the first poll.
fn with_deadline(
    pages: BoxStream<'static, Result<Page>>,
    limit: Duration,
) -> BoxStream<'static, Result<Page>> {
    let state = (Some(pages), None::<tokio::time::Instant>);
    stream::unfold(state, move |(pages, deadline)| async move {
        let mut pages = pages?;
        let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + limit);
        match tokio::time::timeout_at(deadline, pages.next()).await {
            Ok(Some(item)) => Some((item, (Some(pages), Some(deadline)))),
            Ok(None) => None,
            Err(_) => Some((
                Err(Error::new(
                    ErrorKind::Timeout,
                    "reading the endpoint took longer than `http.total_timeout_secs`",
                )
                .with_context("total_timeout_secs", limit.as_secs())),
                (None, Some(deadline)),
            )),
        }
    })
    .boxed()
}

fn invalid_page_error(page: &Page, why: &str) -> Error {
    Error::new(ErrorKind::Data, "a page is not readable JSON records")
        .with_context("url", &page.url)
        .with_context("page", page.number)
        .with_context("reason", page.invalid.as_deref().unwrap_or("-"))
        .with_context("policy", why)
}

#[async_trait]
impl Source for RestSource {
    fn name(&self) -> &str {
        "rest"
    }

    fn schema(&self) -> SchemaRef {
        self.inner.schema.clone()
    }

    async fn plan(&self, req: &ReadRequest, _ctx: &Context) -> Result<ReadPlan> {
        let inner = &self.inner;
        let from = req
            .from
            .as_ref()
            .map(parse_cursor)
            .transpose()?
            .unwrap_or_default();
        let token = format!("{:016x}", rand_token());
        let since = inner.cfg.incremental.as_ref().map(|inc| {
            let last = from
                .last
                .clone()
                .unwrap_or_else(|| inc.initial_value.clone());
            minus_lookback(&last, inc.lookback_secs)
        });
        let paths: Vec<String> = match &inner.cfg.parent {
            None => vec![inner.cfg.path.clone()],
            Some(p) => {
                let holder = format!("{{{}}}", p.field);
                inner
                    .parent_values()
                    .await?
                    .into_iter()
                    .map(|v| {
                        let enc: String =
                            url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
                        inner.cfg.path.replace(&holder, &enc)
                    })
                    .collect()
            }
        };
        let mut splits = Vec::new();
        for path in paths {
            let spec = SplitSpec {
                token: token.clone(),
                path: path.clone(),
                since: since.clone(),
            };
            if inner.cfg.incremental.is_some() && inner.cfg.parent.is_none() {
                // Probe: is there anything new since the committed position? (The read asks
                // again: the probe only decides whether there is an epoch.)
                let url = inner.url(&path, &inner.first_params(since.as_deref()))?;
                let (page, _) = inner
                    .fetch(&url, 1, &inner.records, &inner.cfg.paginator)
                    .await?;
                let fresh = page.invalid.is_some()
                    || page
                        .records
                        .iter()
                        .any(|r| !from.seen.contains(&hash_of(&page.body[r.clone()])));
                if !fresh {
                    continue;
                }
            }
            splits.push(Split::encode(path.clone(), &spec, None)?);
        }
        // The end is named by `end_cursor` from what the splits read; pin the start as the
        // fallback (nothing read: the position does not move).
        let end = encode_cursor(&RestCursor {
            last: from.last.clone(),
            seen: from.seen.clone(),
        })?;
        inner
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                token.clone(),
                PlanState {
                    from: from.clone(),
                    mark: Watermark::default(),
                },
            );
        let mut plan = ReadPlan::new(splits, Some(end));
        // The plan's token travels in its splits; `end_cursor` finds the state by it.
        if plan.splits.is_empty() {
            plan.end = req.from.clone().or(plan.end);
        }
        Ok(plan)
    }

    fn read(&self, split: &Split, ctx: &Context) -> Result<SendableBatchStream> {
        let spec: SplitSpec = split.decode("a REST source")?;
        let inner = self.inner.clone();
        let ctx = ctx.clone();
        let schema = inner.schema.clone();
        // Nothing happens until the first poll; dropping the stream drops every request.
        let stream = stream::once(async move {
            let from = inner
                .plans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&spec.token)
                .map(|s| s.from.clone())
                .unwrap_or_default();
            let from = Arc::new(from);
            let token = spec.token.clone();
            let metrics = ctx.metrics().component("source");
            let decode = {
                let inner = inner.clone();
                move |page: Result<Page>| {
                    let (inner, ctx, from, metrics, token) = (
                        inner.clone(),
                        ctx.clone(),
                        from.clone(),
                        metrics.clone(),
                        token.clone(),
                    );
                    async move {
                        let page = page?;
                        metrics.add(RECEIVED_BYTES_TOTAL, page.body.len() as u64);
                        let this = inner.clone();
                        let c = ctx.clone();
                        let (batches, rejected, mark) = tokio::task::spawn_blocking(move || {
                            let mut mark = Watermark::default();
                            this.decode_page(&page, &c, &from, &mut mark)
                                .map(|(b, r)| (b, r, mark))
                        })
                        .await
                        .map_err(|e| Error::internal("page decoding panicked").with_source(e))??;
                        if !rejected.is_empty() {
                            ctx.quarantine("source", rejected).await?;
                        }
                        let lookback = inner
                            .cfg
                            .incremental
                            .as_ref()
                            .map_or(0, |i| i.lookback_secs);
                        if let Some(state) = inner
                            .plans
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_mut(&token)
                        {
                            state.mark.merge(mark, lookback);
                        }
                        for b in &batches {
                            metrics.add(RECEIVED_ROWS_TOTAL, b.num_rows() as u64);
                        }
                        Ok::<_, Error>(stream::iter(batches.into_iter().map(Ok)))
                    }
                }
            };
            let total = inner.cfg.http.total_timeout_secs;
            let pages = inner.split_pages(spec);
            let pages = if total == 0 {
                pages
            } else {
                with_deadline(pages, Duration::from_secs(total))
            };
            // Two pages in hand: the next page downloads while this one decodes.
            Ok::<_, Error>(pages.map(decode).buffered(2).try_flatten())
        })
        .try_flatten();
        Ok(BatchStreamAdapter::boxed(schema, Box::pin(stream)))
    }

    async fn end_cursor(&self, plan: &ReadPlan, _ctx: &Context) -> Result<Option<Cursor>> {
        let Some(inc) = &self.inner.cfg.incremental else {
            return Ok(plan.end.clone());
        };
        let token = plan
            .splits
            .first()
            .and_then(|s| serde_json::from_str::<SplitSpec>(&s.spec).ok())
            .map(|s| s.token);
        let Some(token) = token else {
            return Ok(plan.end.clone());
        };
        let PlanState { from, mark } = self
            .inner
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token)
            .unwrap_or_default();
        let Some(max) = mark.max.clone() else {
            return Ok(plan.end.clone());
        };
        // Records seen before at the old boundary stay deduplicated when the mark did not move.
        let mut seen: BTreeSet<u64> = mark.near.iter().map(|(_, h)| *h).collect();
        if from
            .last
            .as_deref()
            .is_some_and(|l| cmp_values(l, &max).is_eq())
        {
            seen.extend(from.seen.iter().copied());
        }
        let floor = minus_lookback(&max, inc.lookback_secs);
        if let Some(l) = &from.last
            && cmp_values(l, &floor).is_ge()
            && cmp_values(l, &max).is_lt()
        {
            seen.extend(from.seen.iter().copied());
        }
        Ok(Some(encode_cursor(&RestCursor {
            last: Some(max),
            seen,
        })?))
    }
}

fn rand_token() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ N
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .rotate_left(32)
}

//! stratalake-rest against in-process HTTP servers (axum): every paginator and stop rule, every
//! auth, 429 with Retry-After, 500s, slow and truncated responses, invalid pages, incremental
//! loading with dedup at the boundary, parent/child endpoints, and the conformance suite.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use stratalake_core::{ErrorKind, InMemoryCheckpointStore, PipelineBuilder, RunOutcome, Source};
use stratalake_records::SchemaSource;
use stratalake_rest::{
    Auth, Incremental, InvalidPagePolicy, KeyLocation, Paginator, Parent, RestSource,
    RestSourceConfig,
};
use stratalake_testkit::{MemorySink, SourceFixture, check_source};

const N: usize = 95;

#[derive(Default)]
struct Srv {
    hits: HashMap<&'static str, AtomicUsize>,
    tokens: AtomicUsize,
    /// Records served by /changes: (id, updated_at).
    changes: std::sync::Mutex<Vec<(usize, String)>>,
    /// /changes answers 500 when set.
    broken: std::sync::atomic::AtomicBool,
}

impl Srv {
    fn hit(&self, k: &'static str) -> usize {
        self.hits
            .get(k)
            .map_or(0, |c| c.fetch_add(1, Ordering::SeqCst))
    }
}

fn rec(i: usize) -> String {
    format!(
        "{{\"id\":{i},\"name\":\"customer {i}\",\"amount\":{}.5}}",
        i % 13
    )
}

fn recs(from: usize, to: usize) -> String {
    (from..to.min(N)).map(rec).collect::<Vec<_>>().join(",")
}

type Q = Query<HashMap<String, String>>;

fn num(q: &HashMap<String, String>, k: &str, d: usize) -> usize {
    q.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn json(body: String) -> Response {
    ([("content-type", "application/json")], body).into_response()
}

async fn offset(State(s): State<Arc<Srv>>, Query(q): Q) -> Response {
    s.hit("offset");
    let (o, l) = (num(&q, "offset", 0), num(&q, "limit", 10));
    // The total appears on the first page only.
    let total = if o == 0 {
        format!(",\"total\":{N}")
    } else {
        String::new()
    };
    json(format!("{{\"data\":[{}]{total}}}", recs(o, o + l)))
}

async fn pages(Query(q): Q) -> Response {
    let (p, size) = (num(&q, "page", 1), num(&q, "size", 10));
    let start = (p - 1) * size;
    json(format!(
        "{{\"items\":[{}],\"total_pages\":{}}}",
        recs(start, start + size),
        N.div_ceil(size)
    ))
}

async fn cursor(Query(q): Q) -> Response {
    let at = q
        .get("cursor")
        .map_or(0, |c| c.trim_start_matches('c').parse().unwrap_or(0));
    let next = if at + 10 < N {
        format!("\"c{}\"", at + 10)
    } else {
        "null".into()
    };
    json(format!(
        "{{\"data\":[{}],\"next\":{next}}}",
        recs(at, at + 10)
    ))
}

async fn header_cursor(Query(q): Q) -> Response {
    let at = num(&q, "after", 0);
    let mut r = json(format!("[{}]", recs(at, at + 10)));
    if at + 10 < N {
        r.headers_mut()
            .insert("x-next", (at + 10).to_string().parse().unwrap());
    }
    r
}

async fn link(Query(q): Q) -> Response {
    let p = num(&q, "p", 0);
    let mut r = json(format!("[{}]", recs(p * 10, p * 10 + 10)));
    let mut l = "</link?p=0>; rel=\"first\"".to_string();
    if (p + 1) * 10 < N {
        l.push_str(&format!(", </link?p={}>; rel=\"next\"", p + 1));
    }
    r.headers_mut().insert("link", l.parse().unwrap());
    r
}

async fn next_url(Query(q): Q) -> Response {
    let p = num(&q, "p", 0);
    let next = if (p + 1) * 10 < N {
        format!("\"next_url?p={}\"", p + 1)
    } else {
        "null".into()
    };
    json(format!(
        "{{\"results\":[{}],\"links\":{{\"next\":{next}}}}}",
        recs(p * 10, p * 10 + 10)
    ))
}

async fn has_more(Query(q): Q) -> Response {
    // Says has_more=false on page 3 although there is more: the stop rule must win.
    let p = num(&q, "page", 1);
    json(format!(
        "{{\"data\":[{}],\"has_more\":{}}}",
        recs((p - 1) * 10, p * 10),
        p < 3
    ))
}

async fn looping() -> Response {
    json("{\"data\":[{\"id\":1}],\"next\":\"same\"}".into())
}

async fn key_header(h: HeaderMap) -> Response {
    if h.get("x-api-key").and_then(|v| v.to_str().ok()) != Some("k-123") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    json(format!("[{}]", recs(0, 5)))
}

async fn key_query(Query(q): Q) -> Response {
    if q.get("api_key").map(String::as_str) != Some("k-123") {
        return StatusCode::FORBIDDEN.into_response();
    }
    json(format!("[{}]", recs(0, 5)))
}

async fn bearer(h: HeaderMap) -> Response {
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer t-1") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    json(format!("[{}]", recs(0, 5)))
}

async fn basic(h: HeaderMap) -> Response {
    // "ann:pw" in base64.
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Basic YW5uOnB3") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    json(format!("[{}]", recs(0, 5)))
}

async fn token(State(s): State<Arc<Srv>>, body: String) -> Response {
    if !body.contains("client_secret=s3cret") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let n = s.tokens.fetch_add(1, Ordering::SeqCst) + 1;
    json(format!(
        "{{\"access_token\":\"tok-{n}\",\"expires_in\":3600}}"
    ))
}

async fn oauth(State(s): State<Arc<Srv>>, h: HeaderMap, Query(q): Q) -> Response {
    // Only the newest token is valid (the first one is "revoked" after page 2).
    let newest = format!("Bearer tok-{}", s.tokens.load(Ordering::SeqCst));
    let p = num(&q, "page", 1);
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(newest.as_str())
        || (p == 3 && s.tokens.load(Ordering::SeqCst) == 1)
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    json(format!(
        "{{\"items\":[{}],\"total_pages\":5}}",
        recs((p - 1) * 10, p * 10)
    ))
}

async fn flaky(State(s): State<Arc<Srv>>) -> Response {
    match s.hit("flaky") {
        0 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        1 => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        2 => {
            let at = chrono::Utc::now() + chrono::Duration::seconds(1);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", date)],
                "maintenance",
            )
                .into_response()
        }
        _ => json(format!("[{}]", recs(0, 5))),
    }
}

async fn slow(State(s): State<Arc<Srv>>) -> Response {
    if s.hit("slow") == 0 {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    json(format!("[{}]", recs(0, 5)))
}

async fn truncated(State(s): State<Arc<Srv>>) -> Response {
    let body = format!("[{}]", recs(0, 5));
    if s.hit("truncated") == 0 {
        // Announce more bytes than are sent: the client sees the body cut short.
        let cut = body[..body.len() / 2].to_string();
        return Response::builder()
            .header("content-type", "application/json")
            .header("content-length", body.len().to_string())
            .body(axum::body::Body::from(cut))
            .unwrap();
    }
    json(body)
}

async fn gzipped() -> Response {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(format!("[{}]", recs(0, N)).as_bytes()).unwrap();
    let body = e.finish().unwrap();
    (
        [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        body,
    )
        .into_response()
}

async fn endless(Query(q): Q) -> Response {
    // A slow API with endless pages: only the total timeout ends it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = num(&q, "page", 1);
    json(format!("{{\"data\":[{}]}}", rec(p)))
}

async fn down() -> Response {
    (StatusCode::BAD_GATEWAY, "upstream down").into_response()
}

async fn invalid(Query(q): Q) -> Response {
    let p = num(&q, "page", 1);
    if p == 2 {
        return json("{\"items\":[{\"id\":10,".into());
    }
    json(format!(
        "{{\"items\":[{}],\"total_pages\":4}}",
        recs((p - 1) * 10, p * 10)
    ))
}

async fn dirty() -> Response {
    json("[{\"id\":1,\"name\":\"a\",\"amount\":1.5},{\"id\":\"two\",\"name\":\"b\",\"amount\":2},{\"id\":3,\"name\":\"c\",\"amount\":3}]".into())
}

async fn changes(State(s): State<Arc<Srv>>, Query(q): Q) -> Response {
    if s.broken.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "broken").into_response();
    }
    let since = q.get("since").cloned().unwrap_or_default();
    let all = s.changes.lock().unwrap().clone();
    let body = all
        .iter()
        .filter(|(_, t)| t.as_str() >= since.as_str())
        .map(|(i, t)| format!("{{\"id\":{i},\"updated_at\":\"{t}\"}}"))
        .collect::<Vec<_>>()
        .join(",");
    json(format!("[{body}]"))
}

async fn partners() -> Response {
    json("{\"data\":[{\"id\":\"p-1\"},{\"id\":\"p/2\"},{\"id\":\"p-3\"}]}".into())
}

async fn partner_orders(Path(id): Path<String>) -> Response {
    let k = match id.as_str() {
        "p-1" => 0,
        "p/2" => 1,
        _ => 2,
    };
    json(format!("[{}]", recs(k * 10, k * 10 + 3)))
}

async fn serve() -> (String, Arc<Srv>) {
    let mut srv = Srv::default();
    for k in ["offset", "flaky", "slow", "truncated"] {
        srv.hits.insert(k, AtomicUsize::new(0));
    }
    let srv = Arc::new(srv);
    let app = Router::new()
        .route("/offset", get(offset))
        .route("/pages", get(pages))
        .route("/cursor", get(cursor))
        .route("/header", get(header_cursor))
        .route("/link", get(link))
        .route("/next_url", get(next_url))
        .route("/has_more", get(has_more))
        .route("/loop", get(looping))
        .route("/key", get(key_header))
        .route("/key_query", get(key_query))
        .route("/bearer", get(bearer))
        .route("/basic", get(basic))
        .route("/token", post(token))
        .route("/oauth", get(oauth))
        .route("/flaky", get(flaky))
        .route("/slow", get(slow))
        .route("/truncated", get(truncated))
        .route("/down", get(down))
        .route("/gzipped", get(gzipped))
        .route("/endless", get(endless))
        .route("/invalid", get(invalid))
        .route("/dirty", get(dirty))
        .route("/changes", get(changes))
        .route("/partners", get(partners))
        .route("/partners/{id}/orders", get(partner_orders))
        .with_state(srv.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/"), srv)
}

fn schema() -> SchemaSource {
    SchemaSource::explicit([
        ("id", "int64 not null"),
        ("name", "utf8"),
        ("amount", "float64"),
    ])
}

fn cfg(base: &str, path: &str, records: &str, paginator: Paginator) -> RestSourceConfig {
    let mut c = RestSourceConfig::new(base, path);
    c.records = records.into();
    c.paginator = paginator;
    c.schema = schema();
    c.http.initial_backoff_millis = 10;
    c
}

/// Run one epoch into a memory sink: (rows, sorted ids, quarantined).
async fn run(c: RestSourceConfig) -> stratalake_core::Result<(u64, Vec<i64>, MemorySink)> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let source = RestSource::try_new(c).await?;
    let sink = MemorySink::new();
    let p = PipelineBuilder::new(
        "rest",
        Arc::new(source),
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .with_options(stratalake_core::RunOptions::default().with_retry(
        stratalake_core::RetryPolicy::new(1, Duration::from_millis(1), Duration::from_millis(1)),
    ))
    .build()?;
    let r = p.run().await?;
    let mut ids: Vec<i64> = sink
        .visible()
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ids.sort_unstable();
    Ok((r.rows_written, ids, sink))
}

fn all_ids() -> Vec<i64> {
    (0..N as i64).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_paginator_reads_every_record_once() {
    let (base, srv) = serve().await;
    let cases = vec![
        (
            "offset",
            "$.data",
            Paginator::Offset {
                limit: 10,
                offset_param: "offset".into(),
                limit_param: "limit".into(),
                start: 0,
            },
        ),
        (
            "pages",
            "$.items",
            Paginator::PageNumber {
                page_param: "page".into(),
                start: 1,
                size_param: Some("size".into()),
                size: Some(10),
                total_pages_path: Some("$.total_pages".into()),
            },
        ),
        (
            "cursor",
            "$.data",
            Paginator::Cursor {
                cursor_path: "$.next".into(),
                cursor_param: "cursor".into(),
            },
        ),
        (
            "header",
            "$",
            Paginator::HeaderCursor {
                header: "x-next".into(),
                cursor_param: "after".into(),
            },
        ),
        ("link", "$", Paginator::LinkHeader),
        (
            "next_url",
            "$.results",
            Paginator::NextUrl {
                next_url_path: "$.links.next".into(),
            },
        ),
    ];
    for (path, records, paginator) in cases {
        let mut c = cfg(&base, path, records, paginator);
        if path == "offset" {
            c.stop.total_path = Some("$.total".into());
        }
        let (rows, ids, _) = run(c).await.unwrap();
        assert_eq!(rows, N as u64, "{path}");
        assert_eq!(ids, all_ids(), "{path}: every record once");
    }
    // Offset with the total on page 1 only: 10 pages, concurrently, none twice.
    assert_eq!(srv.hits["offset"].load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_rules_combine_and_a_repeated_cursor_is_an_error() {
    let (base, _) = serve().await;
    let page = || Paginator::PageNumber {
        page_param: "page".into(),
        start: 1,
        size_param: None,
        size: None,
        total_pages_path: None,
    };
    let mut c = cfg(&base, "has_more", "$.data", page());
    c.stop.has_more_path = Some("$.has_more".into());
    assert_eq!(
        run(c).await.unwrap().0,
        30,
        "has_more=false on page 3 stops"
    );
    let mut c = cfg(&base, "has_more", "$.data", page());
    c.stop.max_pages = 2;
    assert_eq!(run(c).await.unwrap().0, 20, "max_pages");
    let mut c = cfg(&base, "has_more", "$.data", page());
    c.stop.max_records = 25;
    assert_eq!(
        run(c).await.unwrap().0,
        30,
        "max_records: the page reaching it is the last"
    );
    let c = cfg(&base, "has_more", "$.data", page());
    assert_eq!(run(c).await.unwrap().0, N as u64, "an empty page stops");
    let c = cfg(
        &base,
        "loop",
        "$.data",
        Paginator::Cursor {
            cursor_path: "$.next".into(),
            cursor_param: "cursor".into(),
        },
    );
    let e = run(c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Data, "{e}");
    assert!(e.to_string().contains("already read"), "{e}");
    assert_eq!(e.context_value("page"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_works_and_secrets_never_show() {
    let (base, srv) = serve().await;
    let mut c = cfg(&base, "key", "$", Paginator::Single);
    c.auth = Auth::ApiKey {
        name: "X-API-Key".into(),
        value: "k-123".to_string().into(),
        location: KeyLocation::Header,
    };
    assert_eq!(run(c).await.unwrap().0, 5);
    let mut c = cfg(&base, "key_query", "$", Paginator::Single);
    c.auth = Auth::ApiKey {
        name: "api_key".into(),
        value: "k-123".to_string().into(),
        location: KeyLocation::Query,
    };
    assert_eq!(run(c.clone()).await.unwrap().0, 5);
    c.auth = Auth::ApiKey {
        name: "api_key".into(),
        value: "wrong-k3y".to_string().into(),
        location: KeyLocation::Query,
    };
    let e = run(c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.report().contains("wrong-k3y"), "{}", e.report());
    let mut c = cfg(&base, "bearer", "$", Paginator::Single);
    c.auth = Auth::Bearer {
        token: "t-1".to_string().into(),
    };
    assert_eq!(run(c).await.unwrap().0, 5);
    let mut c = cfg(&base, "basic", "$", Paginator::Single);
    c.auth = Auth::Basic {
        username: "ann".into(),
        password: "pw".to_string().into(),
    };
    assert_eq!(run(c.clone()).await.unwrap().0, 5);
    assert!(!format!("{c:?}").contains("\"pw\""));
    // OAuth2: one token for every page; a 401 mid-way (revoked) refreshes it once.
    let mut c = cfg(
        &base,
        "oauth",
        "$.items",
        Paginator::PageNumber {
            page_param: "page".into(),
            start: 1,
            size_param: None,
            size: None,
            total_pages_path: Some("$.total_pages".into()),
        },
    );
    c.http.max_in_flight = 1;
    c.auth = Auth::Oauth2ClientCredentials {
        token_url: format!("{base}token"),
        client_id: "strata".into(),
        client_secret: "s3cret".to_string().into(),
        scope: None,
    };
    assert_eq!(run(c.clone()).await.unwrap().0, 50);
    assert_eq!(
        srv.tokens.load(Ordering::SeqCst),
        2,
        "one token, refreshed once on the 401"
    );
    assert!(!format!("{c:?}").contains("s3cret"));
    c.auth = Auth::Oauth2ClientCredentials {
        token_url: format!("{base}token"),
        client_id: "strata".into(),
        client_secret: "bad".to_string().into(),
        scope: None,
    };
    let e = run(c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_lasting_ones_named() {
    let (base, srv) = serve().await;
    // 429 (Retry-After: 1 s), 500, 503 (Retry-After: a date), then the page.
    let started = std::time::Instant::now();
    assert_eq!(
        run(cfg(&base, "flaky", "$", Paginator::Single))
            .await
            .unwrap()
            .0,
        5
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After was honoured"
    );
    assert_eq!(srv.hits["flaky"].load(Ordering::SeqCst), 4);
    // A response slower than the timeout, and a body cut short: asked again.
    let mut c = cfg(&base, "slow", "$", Paginator::Single);
    c.http.request_timeout_secs = 1;
    assert_eq!(run(c).await.unwrap().0, 5);
    assert_eq!(
        run(cfg(&base, "truncated", "$", Paginator::Single))
            .await
            .unwrap()
            .0,
        5
    );
    assert_eq!(srv.hits["truncated"].load(Ordering::SeqCst), 2);
    // Always 502: an error after the configured retries, naming the URL and status.
    let mut c = cfg(&base, "down", "$", Paginator::Single);
    c.http.max_retries = 2;
    let e = run(c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(e.context_value("status"), Some("502"));
    assert_eq!(e.context_value("attempts"), Some("3"));
    assert!(e.context_value("url").unwrap().ends_with("/down"));
    // A body over the cap is refused, not retried.
    let mut c = cfg(&base, "pages", "$.items", Paginator::Single);
    c.http.max_body_bytes = 100;
    let e = run(c).await.unwrap_err();
    assert!(e.to_string().contains("max_body_bytes"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_rate_limits_and_total_timeouts() {
    let (base, _) = serve().await;
    // A gzip body is decompressed on the way in.
    let (rows, ids, _) = run(cfg(&base, "gzipped", "$", Paginator::Single))
        .await
        .unwrap();
    assert_eq!((rows, ids), (N as u64, all_ids()));
    // 10 pages at 20 requests per second take at least 9 intervals of 50 ms.
    let mut c = cfg(
        &base,
        "pages",
        "$.items",
        Paginator::PageNumber {
            page_param: "page".into(),
            start: 1,
            size_param: Some("size".into()),
            size: Some(10),
            total_pages_path: Some("$.total_pages".into()),
        },
    );
    c.http.requests_per_second = 20.0;
    let started = std::time::Instant::now();
    assert_eq!(run(c).await.unwrap().0, N as u64);
    assert!(
        started.elapsed() >= Duration::from_millis(440),
        "{:?}",
        started.elapsed()
    );
    // Endless slow pages: the total timeout ends the read with a Timeout error.
    let mut c = cfg(
        &base,
        "endless",
        "$.data",
        Paginator::PageNumber {
            page_param: "page".into(),
            start: 1,
            size_param: None,
            size: None,
            total_pages_path: None,
        },
    );
    c.http.total_timeout_secs = 1;
    let e = run(c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pages_and_bad_records_are_quarantined_or_fail() {
    use arrow_array::cast::AsArray;
    let (base, _) = serve().await;
    let pager = || Paginator::PageNumber {
        page_param: "page".into(),
        start: 1,
        size_param: None,
        size: None,
        total_pages_path: Some("$.total_pages".into()),
    };
    let mut c = cfg(&base, "invalid", "$.items", pager());
    c.on_invalid_page = InvalidPagePolicy::Quarantine;
    let (rows, _, sink) = run(c.clone()).await.unwrap();
    assert_eq!(rows, 30, "pages 1, 3 and 4");
    let q = sink.visible_quarantine();
    let loc = q[0]
        .column_by_name("location")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert!(
        loc.contains("/invalid?page=2") && loc.contains("(page 2)"),
        "{loc}"
    );
    let raw = q[0]
        .column_by_name("raw")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert_eq!(raw, "{\"items\":[{\"id\":10,");
    c.on_invalid_page = InvalidPagePolicy::Fail;
    let e = run(c).await.unwrap_err();
    assert_eq!(e.context_value("page"), Some("2"), "{e}");
    // A record of the wrong type goes to quarantine with the URL, page and record number.
    let (rows, _, sink) = run(cfg(&base, "dirty", "$", Paginator::Single))
        .await
        .unwrap();
    assert_eq!(rows, 2);
    let q = sink.visible_quarantine();
    let reason = q[0]
        .column_by_name("reason")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert!(reason.contains("id"), "{reason}");
    let pos = q[0]
        .column_by_name("position")
        .unwrap()
        .as_primitive::<arrow_array::types::UInt64Type>()
        .value(0);
    assert_eq!(pos, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_read_only_new_records_once() {
    let (base, srv) = serve().await;
    *srv.changes.lock().unwrap() = (0..5)
        .map(|i| (i, format!("2024-01-01T00:00:0{i}Z")))
        .collect();
    let mut c = RestSourceConfig::new(&base, "changes");
    c.schema = SchemaSource::explicit([("id", "int64 not null"), ("updated_at", "timestamp")]);
    c.incremental = Some(Incremental::new(
        "updated_at",
        "since",
        "2024-01-01T00:00:00Z",
    ));
    let source = RestSource::try_new(c).await.unwrap();
    let sink = MemorySink::new();
    let p = PipelineBuilder::new(
        "inc",
        Arc::new(source),
        Arc::new(sink.clone()),
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .build()
    .unwrap();
    assert_eq!(p.run().await.unwrap().rows_written, 5);
    // The API returns records >= since: the last one comes back, and is dropped.
    assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
    // Two new records, one with the same timestamp as the last: both read, nothing twice.
    srv.changes
        .lock()
        .unwrap()
        .push((5, "2024-01-01T00:00:04Z".into()));
    srv.changes
        .lock()
        .unwrap()
        .push((6, "2024-01-01T00:00:09Z".into()));
    assert_eq!(p.run().await.unwrap().rows_written, 2);
    assert_eq!(p.run().await.unwrap().outcome, RunOutcome::NothingNew);
    assert_eq!(sink.visible_rows(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_endpoints_are_read_per_parent_record() {
    let (base, _) = serve().await;
    let mut c = cfg(&base, "partners/{id}/orders", "$", Paginator::Single);
    c.parent = Some(Parent::new("partners", "id").with_records("$.data"));
    let (rows, ids, _) = run(c).await.unwrap();
    assert_eq!(rows, 9);
    assert_eq!(
        ids,
        vec![0, 1, 2, 10, 11, 12, 20, 21, 22],
        "p/2 was URL-encoded"
    );
}

struct Fixture {
    base: String,
    expected: Vec<arrow_array::RecordBatch>,
    srv: Arc<Srv>,
}

#[async_trait::async_trait]
impl SourceFixture for Fixture {
    async fn source(&self) -> Arc<dyn Source> {
        let mut c = RestSourceConfig::new(&self.base, "changes");
        c.schema = SchemaSource::explicit([("id", "int64 not null"), ("updated_at", "timestamp")]);
        c.http.max_retries = 0;
        c.incremental = Some(
            Incremental::new("updated_at", "since", "2000-01-01T00:00:00Z").with_lookback_secs(60),
        );
        Arc::new(RestSource::try_new(c).await.unwrap())
    }
    async fn expected(&self) -> Vec<arrow_array::RecordBatch> {
        self.expected.clone()
    }
    async fn break_input(&self) {
        self.srv.broken.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_source_passes_the_conformance_suite() {
    let (base, srv) = serve().await;
    *srv.changes.lock().unwrap() = (0..2000)
        .map(|i| {
            (
                i,
                format!("2024-03-01T{:02}:{:02}:00Z", i / 60 % 24, i % 60),
            )
        })
        .collect();
    // The records served, as Arrow, never rows read back through the source under test.
    let served = srv.changes.lock().unwrap().clone();
    let expected = vec![
        arrow_array::RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(arrow_array::Int64Array::from_iter_values(
                    served.iter().map(|(i, _)| *i as i64),
                )) as arrow_array::ArrayRef,
            ),
            (
                "updated_at",
                Arc::new(
                    arrow_array::TimestampMicrosecondArray::from_iter_values(served.iter().map(
                        |(_, at)| {
                            chrono::DateTime::parse_from_rfc3339(at)
                                .unwrap()
                                .timestamp_micros()
                        },
                    ))
                    .with_timezone("+00:00"),
                ),
            ),
        ])
        .unwrap(),
    ];
    assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 2000);
    check_source(&Fixture {
        base,
        expected,
        srv,
    })
    .await;
}

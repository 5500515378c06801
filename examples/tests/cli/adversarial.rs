//! Hostile input, one reproduction per test: each failed on the main branch before the
//! "nothing lost, nothing leaked" work and passes now. Every test runs the `strata` binary the
//! way a user would and checks what it committed, what it quarantined, what it printed and
//! how it exited.

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Exit statuses, as the README documents them.
const EXIT_DATA: i32 = 65;
const EXIT_INTERNAL: i32 = 70;
const EXIT_CONFIG: i32 = 78;
const EXIT_CANCELLED: i32 = 130;

struct Case {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Case {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        Self { _tmp: tmp, dir }
    }

    fn data(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.join("data").join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A pipeline from `data/` to `out/` (Parquet), with `source_extra` lines under `files:`
    /// and `options` lines under `options:`.
    fn pipeline(
        &self,
        format: &str,
        columns: &[(&str, &str)],
        source_extra: &str,
        options: &str,
    ) -> PathBuf {
        let mut y = format!(
            "pipeline: hostile\nsource:\n  files:\n    root: '{}'\n    format: {format}\n    schema:\n      explicit:\n",
            self.dir.join("data").display()
        );
        for (c, t) in columns {
            y.push_str(&format!("        - {{ name: {c}, type: \"{t}\" }}\n"));
        }
        for l in source_extra.lines() {
            y.push_str(&format!("    {l}\n"));
        }
        y.push_str(&format!(
            "sink:\n  parquet:\n    root: '{}'\ncheckpoint:\n  local:\n    dir: '{}'\n",
            self.dir.join("out").display(),
            self.dir.join("checkpoints").display()
        ));
        if !options.is_empty() {
            y.push_str("options:\n");
            for l in options.lines() {
                y.push_str(&format!("  {l}\n"));
            }
        }
        let p = self.dir.join("pipeline.yaml");
        std::fs::write(&p, y).unwrap();
        p
    }

    fn rows(&self) -> Vec<RecordBatch> {
        let out = self.dir.join("out");
        if !out.exists() {
            return Vec::new();
        }
        stratalake_files::read_parquet_dir(&out).unwrap()
    }

    /// Quarantine rows as (position, reason, raw).
    fn quarantine(&self) -> Vec<(u64, String, String)> {
        let q = self.dir.join("out/_quarantine");
        if !q.exists() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for b in stratalake_files::read_parquet_dir(&q).unwrap() {
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (pos, reason, raw) = (col("position"), col("reason"), col("raw"));
            for i in 0..b.num_rows() {
                out.push((
                    pos.as_primitive::<arrow_array::types::UInt64Type>()
                        .value(i),
                    reason.as_string::<i32>().value(i).to_string(),
                    raw.as_string::<i32>().value(i).to_string(),
                ));
            }
        }
        out.sort();
        out
    }
}

fn run(p: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["run", "--json"]).arg(p);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "strata run failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn total(b: &[RecordBatch]) -> usize {
    b.iter().map(RecordBatch::num_rows).sum()
}

fn ids(b: &[RecordBatch]) -> Vec<i64> {
    let mut v: Vec<i64> = b
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<arrow_array::types::Int64Type>()
                .iter()
                .map(Option::unwrap)
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort_unstable();
    v
}

fn numbered(n: i64) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":{i},\"qty\":{}}}\n", i % 7))
        .collect()
}

const ID_QTY: &[(&str, &str)] = &[("id", "int64 not null"), ("qty", "int64")];

// 1. A panic commits nothing and fails the run; the rerun loads every row once.

#[test]
fn a_panic_in_the_decoder_or_the_sink_fails_the_run_and_commits_nothing() {
    for point in [
        "files.decoder",
        "files.sink.write",
        "files.sink.commit",
        "files.sink.after_manifest",
    ] {
        let case = Case::new();
        case.data("orders.ndjson", numbered(1000).as_bytes());
        let p = case.pipeline("ndjson", ID_QTY, "", "");
        let out = run(&p, &[("STRATA_PANIC_AT", point)]);
        assert_eq!(
            out.status.code(),
            Some(EXIT_INTERNAL),
            "{point}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("panicked") && stderr(&out).contains("component"),
            "{point}: {}",
            stderr(&out)
        );
        if point != "files.sink.after_manifest" {
            assert_eq!(total(&case.rows()), 0, "{point}: nothing committed");
        }
        let r = ok(&run(&p, &[]));
        assert!(
            r["outcome"] == "Committed" || point == "files.sink.after_manifest",
            "{point}: {r}"
        );
        assert_eq!(
            ids(&case.rows()),
            (0..1000).collect::<Vec<_>>(),
            "{point}: every row once"
        );
        assert_eq!(ok(&run(&p, &[]))["outcome"], "NothingNew", "{point}");
    }
}

#[test]
fn a_batch_size_that_overflows_is_refused_naming_the_key_and_line() {
    let case = Case::new();
    case.data("orders.ndjson", numbered(1000).as_bytes());
    let p = case.pipeline("ndjson", ID_QTY, "", "batch_size: 18446744073709551615");
    let out = run(&p, &[]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("batch_size") && e.contains("pipeline.yaml:") && e.contains("1..=1048576"),
        "{e}"
    );
    assert_eq!(total(&case.rows()), 0);
}

// 2. Poison records are quarantined; the run goes on.

#[test]
fn a_record_nested_30000_deep_is_quarantined_and_the_run_goes_on() {
    let case = Case::new();
    let deep = format!(
        "{{\"id\":5,\"qty\":{}1{}}}\n",
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let mut data = numbered(5);
    data.push_str(&deep);
    data.push_str("{\"id\":6,\"qty\":1}\n");
    case.data("orders.ndjson", data.as_bytes());
    let p = case.pipeline("ndjson", ID_QTY, "", "");
    let r = ok(&run(&p, &[]));
    assert_eq!(
        (r["rows_written"].as_u64(), r["rows_quarantined"].as_u64()),
        (Some(6), Some(1))
    );
    let q = case.quarantine();
    assert_eq!(q[0].0, 6, "line 6");
    assert!(q[0].1.contains("nested 30001 levels deep"), "{q:?}");
    assert_eq!(ok(&run(&p, &[]))["outcome"], "NothingNew");
}

#[test]
fn a_200_mb_line_is_quarantined_with_its_place_and_a_bounded_prefix() {
    let case = Case::new();
    let mut data = numbered(3).into_bytes();
    data.extend_from_slice(b"{\"id\":3,\"qty\":\"");
    data.resize(data.len() + 200 * 1024 * 1024, b'x');
    data.extend_from_slice(b"\"}\n{\"id\":4,\"qty\":1}\n");
    let offset = numbered(3).len();
    case.data("orders.ndjson", &data);
    let p = case.pipeline("ndjson", ID_QTY, "on_corrupt_file: quarantine", "");
    let r = ok(&run(&p, &[]));
    assert_eq!(
        (r["rows_written"].as_u64(), r["rows_quarantined"].as_u64()),
        (Some(4), Some(1))
    );
    let q = case.quarantine();
    assert_eq!(q[0].0, 4, "line 4, not line 0");
    assert!(
        q[0].1.contains(&format!("byte offset {offset}")) && q[0].1.contains("max_record_bytes"),
        "{}",
        q[0].1
    );
    assert!(
        q[0].2.starts_with("{\"id\":3,\"qty\":\"xxx") && q[0].2.len() < 2048,
        "a bounded prefix"
    );
}

#[test]
fn huge_and_deep_configuration_is_refused_quickly() {
    let case = Case::new();
    let started = Instant::now();
    // A 50 MB pipeline file.
    let big = case.dir.join("big.yaml");
    std::fs::write(&big, format!("pipeline: x\n# {}\n", "y".repeat(50 << 20))).unwrap();
    let out = run(&big, &[]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("over the 1048576 bytes"),
        "{}",
        stderr(&out)
    );
    // YAML nested 100k deep.
    let deep = case.dir.join("deep.yaml");
    std::fs::write(
        &deep,
        format!("pipeline: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    let out = run(&deep, &[]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nests 100000 levels deep"),
        "{}",
        stderr(&out)
    );
    // A declared type nested 5,000 deep.
    let ty = format!("{}int64{}", "list<".repeat(5000), ">".repeat(5000));
    let p = case.pipeline("ndjson", &[("id", "int64"), ("deep", &ty)], "", "");
    let out = run(&p, &[]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nested deeper than 64 levels"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).len() < 4096,
        "the error does not print the whole type"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused quickly: {:?}",
        started.elapsed()
    );
}

// 3. No silent lossy coercion.

#[test]
fn fractions_into_integers_two_objects_on_a_line_and_invalid_utf8_are_quarantined_exactly() {
    let case = Case::new();
    let mut data = b"\xEF\xBB\xBF{\"id\":1,\"qty\":2}\n{\"id\":2,\"qty\":1.5}\n{\"id\":3,\"qty\":-2.7}\n{\"id\":7.9}\n{\"id\":4}{\"id\":5}\n".to_vec();
    data.extend_from_slice(b"{\"id\":6,\"qty\":\"\xff\"}\n{\"id\":8,\"qty\":3.0}\n");
    case.data("orders.ndjson", &data);
    let p = case.pipeline("ndjson", ID_QTY, "", "");
    let r = ok(&run(&p, &[]));
    assert_eq!(
        ids(&case.rows()),
        [1, 8],
        "the BOM line and the exact 3.0 are rows: {r}"
    );
    let q = case.quarantine();
    let lines: Vec<u64> = q.iter().map(|r| r.0).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6]);
    assert!(q[0].1.contains("qty") && q[2].1.contains("id"), "{q:?}");
    assert!(q[3].1.contains("more than one JSON value"), "{q:?}");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(
            q[4].2
                .strip_prefix("base64:")
                .expect("invalid UTF-8 kept as base64"),
        )
        .unwrap();
    assert_eq!(raw, b"{\"id\":6,\"qty\":\"\xff\"}", "the raw bytes exactly");
    // `type_drift: null`, unquoted as the README writes it, parses and nulls the fractions.
    let case = Case::new();
    case.data("orders.ndjson", b"{\"id\":1,\"qty\":1.5}\n");
    let p = case.pipeline("ndjson", ID_QTY, "type_drift: null", "");
    let r = ok(&run(&p, &[]));
    assert_eq!(r["rows_written"], 1);
    let b = case.rows();
    assert!(b[0].column(1).is_null(0), "1.5 nulled, never 1");
}

#[test]
fn a_csv_file_with_a_byte_order_mark_reads_its_header() {
    let case = Case::new();
    case.data("orders.csv", b"\xEF\xBB\xBFid,qty\n1,2\n2,3\n");
    let p = case.pipeline(
        "{ csv: { delimiter: \",\", header: true } }",
        ID_QTY,
        "",
        "",
    );
    let r = ok(&run(&p, &[]));
    assert_eq!(
        (r["rows_written"].as_u64(), r["rows_quarantined"].as_u64()),
        (Some(2), Some(0))
    );
}

// 6. Numbers in configuration are range-checked.

#[test]
fn a_split_size_that_would_wrap_is_refused_naming_the_key_and_line() {
    let case = Case::new();
    case.data("orders.ndjson", numbered(10).as_bytes());
    let p = case.pipeline("ndjson", ID_QTY, "split_size_megabytes: 17592186044416", "");
    let started = Instant::now();
    let out = run(&p, &[]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("split_size_megabytes")
            && e.contains("pipeline.yaml:10:")
            && e.contains("out of range"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

// 7. Interpolation.

#[test]
fn variables_in_comments_are_not_expanded_and_values_with_hashes_are_kept_whole() {
    let case = Case::new();
    case.data("orders.ndjson", numbered(3).as_bytes());
    let p = case.pipeline("ndjson", ID_QTY, "", "");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "pipeline: hostile\n",
        "# the token is ${STRATA_TEST_SURELY_UNSET}\npipeline: ${STRATA_TEST_PIPELINE_ID}   # ${ALSO_UNSET}\n",
    );
    std::fs::write(&p, text).unwrap();
    let out = run(&p, &[("STRATA_TEST_PIPELINE_ID", "hostile")]);
    assert_eq!(ok(&out)["pipeline_id"], "hostile");
    // A value holding ` #` is not cut into a comment: here it is an invalid pipeline id, and
    // the error shows all of it.
    let out = run(&p, &[("STRATA_TEST_PIPELINE_ID", "a #b")]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", stderr(&out));
}

// 9. The process.

#[test]
fn sigterm_and_sigint_cancel_cleanly_and_the_rerun_commits_everything_once() {
    for (signal, name) in [("-TERM", "SIGTERM"), ("-INT", "SIGINT")] {
        let case = Case::new();
        case.data("orders.ndjson", numbered(500).as_bytes());
        let p = case.pipeline("ndjson", ID_QTY, "", "");
        let mut child = Command::new(BIN)
            .args(["run", "--json"])
            .arg(&p)
            .env("STRATA_PAUSE_AT", "runner.before_prepare")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains("paused at runner.before_prepare") {
                    let _ = tx.send(None);
                }
                all.push_str(&line);
                all.push('\n');
            }
            let _ = tx.send(Some(all));
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(120)).unwrap(),
            None,
            "paused before prepare"
        );
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = child.wait().unwrap();
        let err = rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!(status.code(), Some(EXIT_CANCELLED), "{name}: {err}");
        assert!(
            err.contains(name) && err.contains("cancelled") && !err.contains("panicked"),
            "{err}"
        );
        assert_eq!(
            total(&case.rows()),
            0,
            "{name}: a cancelled epoch is invisible"
        );
        assert_eq!(ok(&run(&p, &[]))["rows_written"], 500);
        assert_eq!(ids(&case.rows()), (0..500).collect::<Vec<_>>());
    }
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let case = Case::new();
    case.data("orders.ndjson", numbered(50).as_bytes());
    let p = case.pipeline("ndjson", ID_QTY, "", "");
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(&p)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head` that has already exited
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(total(&case.rows()), 50, "the run itself committed");
}

#[test]
fn exit_statuses_follow_the_error_kind() {
    let case = Case::new();
    case.data("orders.ndjson", b"{\"id\":1}\n{\"id\":\"x\"}\n");
    let p = case.pipeline("ndjson", ID_QTY, "type_drift: fail", "");
    let out = run(&p, &[]);
    assert_eq!(out.status.code(), Some(EXIT_DATA), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line: 2") && stderr(&out).contains("column: id"),
        "{}",
        stderr(&out)
    );
    let out = run(&case.dir.join("no-such.yaml"), &[]);
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    let out = Command::new(BIN).args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage");
}

// 8. Secrets: every auth kind x every failure path x log level; nothing shows the secret.

const SECRET: &str = "S3cr3t-Value-31337";
const MINTED: &str = "Minted-Access-Token-4242";

/// Two local origins: A serves the API (echoing every request's URL and headers back in its
/// error bodies, redirecting to B, answering slowly, minting OAuth2 tokens); B records what it
/// receives, to show no credential crossed origins.
struct Servers {
    a: String,
    b: String,
    closed: String,
    stolen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

fn servers() -> Servers {
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stolen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (a, b, closed) = rt.block_on(async {
        let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let b = format!("http://{}", lb.local_addr().unwrap());
        let echo = |status: StatusCode| {
            move |uri: Uri, headers: HeaderMap| async move {
                let mut body = format!("you asked for {uri}");
                for (k, v) in &headers {
                    body.push_str(&format!(" {k}={}", v.to_str().unwrap_or("?")));
                }
                (status, body)
            }
        };
        let to_b = b.clone();
        let app_a = axum::Router::new()
            .route(
                "/echo400",
                axum::routing::get(echo(StatusCode::BAD_REQUEST)),
            )
            .route(
                "/echo503",
                axum::routing::get(echo(StatusCode::SERVICE_UNAVAILABLE)),
            )
            .route(
                "/redirect",
                axum::routing::get(move || {
                    let to = format!("{to_b}/steal");
                    async move { (StatusCode::FOUND, [("location", to)]).into_response() }
                }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "[]"
                }),
            )
            .route(
                "/token",
                axum::routing::post(|| async {
                    (
                        [("content-type", "application/json")],
                        serde_json::json!({"access_token": MINTED, "expires_in": 3600}).to_string(),
                    )
                }),
            );
        let s = stolen.clone();
        let app_b = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let s = s.clone();
            async move {
                let mut seen = uri.to_string();
                for (k, v) in &headers {
                    seen.push_str(&format!(" {k}={}", v.to_str().unwrap_or("?")));
                }
                s.lock().unwrap().push(seen);
                "[]"
            }
        });
        let a = format!("http://{}", la.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(la, app_a).await.unwrap() });
        tokio::spawn(async move { axum::serve(lb, app_b).await.unwrap() });
        (a, b, format!("http://{closed}"))
    });
    Servers {
        a,
        b,
        closed,
        stolen,
        _rt: rt,
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn no_secret_reaches_output_logs_files_or_another_origin() {
    let s = servers();
    let auths = [
        (
            "api_key_query",
            "auth: { type: api_key, name: api_key, value: \"${STRATA_TEST_SECRET}\", location: query }",
        ),
        (
            "api_key_header",
            "auth: { type: api_key, name: X-Api-Key, value: \"${STRATA_TEST_SECRET}\", location: header }",
        ),
        (
            "bearer",
            "auth: { type: bearer, token: \"${STRATA_TEST_SECRET}\" }",
        ),
        (
            "basic",
            "auth: { type: basic, username: strata, password: \"${STRATA_TEST_SECRET}\" }",
        ),
        (
            "oauth2",
            "auth: { type: oauth2_client_credentials, token_url: \"{A}/token\", client_id: strata, client_secret: \"${STRATA_TEST_SECRET}\" }",
        ),
        ("url_password", ""),
    ];
    let paths = [
        ("refused", "/x"),
        ("echo400", "/echo400"),
        ("echo503", "/echo503"),
        ("redirect", "/redirect"),
        ("timeout", "/slow"),
    ];
    std::thread::scope(|scope| {
        for (kind, auth) in auths {
            let s = &s;
            scope.spawn(move || {
                for (what, path) in paths {
                    for level in ["info", "debug", "trace"] {
                        let case = Case::new();
                        let host = if what == "refused" { &s.closed } else { &s.a };
                        let base = if kind == "url_password" {
                            host.replace("http://", "http://admin:${STRATA_TEST_SECRET}@")
                        } else {
                            host.clone()
                        };
                        let y = format!(
                            "pipeline: secrets\nsource:\n  rest:\n    base_url: \"{base}\"\n    path: {path}\n    params: {{ page: \"1\" }}\n    {}\n    http: {{ request_timeout_secs: 1, max_retries: 1, initial_backoff_millis: 1, max_backoff_secs: 1 }}\n    schema:\n      explicit:\n        - {{ name: id, type: int64 }}\nsink:\n  parquet:\n    root: '{}'\ncheckpoint:\n  local:\n    dir: '{}'\n",
                            auth.replace("{A}", &s.a),
                            case.dir.join("out").display(),
                            case.dir.join("checkpoints").display()
                        );
                        let p = case.dir.join("pipeline.yaml");
                        std::fs::write(&p, y).unwrap();
                        let out = Command::new(BIN)
                            .args(["run", "--log", level])
                            .arg(&p)
                            .env("STRATA_TEST_SECRET", SECRET)
                            .env_remove("RUST_LOG")
                            .output()
                            .unwrap();
                        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
                        let at = format!("{kind} x {what} x {level}");
                        assert!(!out.status.success(), "{at}: the run fails: {all}");
                        assert!(all.contains("error:"), "{at}: {all}");
                        // It fails at the server, not on its configuration file: the request
                        // is made (a configuration error names the file and line).
                        assert!(!all.contains("pipeline.yaml:"), "{at}: the pipeline is valid: {all}");
                        // Also as the Basic authorization header a server may echo back.
                        let basic = |user: &str| {
                            use base64::Engine as _;
                            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{SECRET}"))
                        };
                        for secret in [
                            SECRET,
                            MINTED,
                            "S3cr3t-Value-31337".replace('-', "%2D").as_str(),
                            &basic("strata"),
                            &basic("admin"),
                        ] {
                            assert!(!all.contains(secret), "{at}: the output shows a secret: {all}");
                        }
                        let mut files = Vec::new();
                        files_under(&case.dir, &mut files);
                        for f in files.iter().filter(|f| !f.ends_with("pipeline.yaml")) {
                            let bytes = std::fs::read(f).unwrap();
                            assert!(
                                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                                "{at}: {} holds the secret",
                                f.display()
                            );
                        }
                    }
                }
            });
        }
    });
    let stolen = s.stolen.lock().unwrap();
    assert!(
        stolen
            .iter()
            .all(|r| !r.contains(SECRET) && !r.contains(MINTED)),
        "a credential crossed origins to {}: {stolen:?}",
        s.b
    );
}

#[test]
fn a_numeric_secret_is_read_as_text_and_never_echoed() {
    let case = Case::new();
    let y = "pipeline: num\nsource:\n  rest:\n    base_url: \"http://127.0.0.1:9\"\n    path: /x\n    auth: { type: bearer, token: ${STRATA_TEST_TOKEN} }\n    colour: ${STRATA_TEST_TOKEN}\nsink:\n  parquet:\n    root: /tmp/x\ncheckpoint: memory\n";
    let p = case.dir.join("p.yaml");
    std::fs::write(&p, y).unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg(&p)
        .env("STRATA_TEST_TOKEN", "31337424242")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("colour") && !e.contains("31337424242"), "{e}");
}

// 7. Paths.

#[test]
fn a_symlink_out_of_the_root_is_not_followed_and_overlapping_roots_are_refused() {
    let case = Case::new();
    case.data("orders.ndjson", numbered(3).as_bytes());
    let outside = case.dir.join("outside.ndjson");
    std::fs::write(
        &outside,
        "{\"id\":99,\"qty\":1}\nroot:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, case.dir.join("data/leak.ndjson")).unwrap();
    std::os::unix::fs::symlink(
        case.dir.join("data/orders.ndjson"),
        case.dir.join("data/inside.ndjson"),
    )
    .unwrap();
    let p = case.pipeline("ndjson", ID_QTY, "", "");
    let out = run(&p, &[]);
    let r = ok(&out);
    assert_eq!(
        r["rows_written"], 6,
        "the file and the link inside the root, not the one out of it"
    );
    assert!(
        case.quarantine().iter().all(|q| !q.2.contains("root:x")),
        "nothing of the outside file"
    );
    assert!(
        stderr(&out).contains("leads out of the source root"),
        "{}",
        stderr(&out)
    );
    // A sink inside the source root.
    let text = std::fs::read_to_string(&p).unwrap().replace(
        &format!("root: '{}'\ncheckpoint", case.dir.join("out").display()),
        &format!(
            "root: '{}'\ncheckpoint",
            case.dir.join("data/out").display()
        ),
    );
    std::fs::write(&p, text).unwrap();
    let out = run(&p, &[]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("overlaps the source root"),
        "{}",
        stderr(&out)
    );
}

// 4. A file that grew is read from where its commit ended; a rewritten one follows a policy.

#[test]
fn appending_to_a_file_reads_only_the_new_lines_and_a_rewrite_follows_on_changed_file() {
    let case = Case::new();
    let f = case.data("orders.ndjson", numbered(3).as_bytes());
    let p = case.pipeline("ndjson", ID_QTY, "", "");
    assert_eq!(ok(&run(&p, &[]))["rows_written"], 3);
    let mut more = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    std::io::Write::write_all(&mut more, b"{\"id\":3,\"qty\":1}\n{\"id\":\"bad\"}\n").unwrap();
    drop(more);
    let r = ok(&run(&p, &[]));
    assert_eq!(
        (r["rows_written"].as_u64(), r["rows_quarantined"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(
        ids(&case.rows()),
        [0, 1, 2, 3],
        "3 rows + 1 appended line give 4 rows, not 7"
    );
    assert_eq!(
        case.quarantine()[0].0,
        5,
        "the appended bad line is line 5 of the file"
    );
    assert_eq!(ok(&run(&p, &[]))["outcome"], "NothingNew");
    // A rewrite (same size, other bytes) fails by default, naming the file.
    std::fs::write(&f, numbered(5).replace("\"qty\":1", "\"qty\":9")).unwrap();
    let out = run(&p, &[]);
    assert_eq!(out.status.code(), Some(73), "conflict: {}", stderr(&out));
    assert!(
        stderr(&out).contains("orders.ndjson") && stderr(&out).contains("on_changed_file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ids(&case.rows()), [0, 1, 2, 3], "nothing read twice");
    // `skip` leaves it; `reread` reads it again with its version in `_source_version`.
    let skip = case.pipeline("ndjson", ID_QTY, "on_changed_file: skip", "");
    let out = run(&skip, &[]);
    assert_eq!(ok(&out)["outcome"], "NothingNew");
    assert!(
        stderr(&out).contains("skipped (on_changed_file: skip)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(total(&case.rows()), 4);
    std::fs::write(&f, numbered(2)).unwrap();
    let reread = case.pipeline("ndjson", ID_QTY, "on_changed_file: reread", "");
    std::fs::remove_dir_all(case.dir.join("out")).unwrap();
    std::fs::remove_dir_all(case.dir.join("checkpoints")).unwrap();
    assert_eq!(ok(&run(&reread, &[]))["rows_written"], 2);
    std::fs::write(&f, numbered(3).replace("\"qty\":1", "\"qty\":8")).unwrap();
    assert_eq!(ok(&run(&reread, &[]))["rows_written"], 3);
    let b = case.rows();
    let versions: std::collections::BTreeSet<String> = b
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("_source_version").unwrap();
            c.as_string::<i32>()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        (total(&b), versions.len()),
        (5, 2),
        "two versions of the file, told apart"
    );
}

// 5. Inference on real data.

#[test]
fn inference_survives_the_generators_own_drifting_orders_and_strata_infer_prints_a_declaration() {
    let case = Case::new();
    let cfg = stratalake_datagen::GeneratorConfig::at_scale(0.005).with_dirt_rate(0.03);
    let m = stratalake_datagen::generate(&cfg, &case.dir.join("data"), &|_| {}).unwrap();
    // A second file of orders, so inference samples across files.
    let text = std::fs::read_to_string(case.dir.join("data/orders.ndjson")).unwrap();
    let extra: String = text.lines().take(50).map(|l| format!("{l}\n")).collect();
    std::fs::write(case.dir.join("data/orders_b.ndjson"), extra).unwrap();
    let mut y = format!(
        "pipeline: inferred\nsource:\n  files:\n    root: '{}'\n    include: [\"orders*.ndjson\"]\n    format: ndjson\n    type_drift: quarantine\n",
        case.dir.join("data").display()
    );
    y.push_str(&format!(
        "sink:\n  parquet:\n    root: '{}'\ncheckpoint:\n  local:\n    dir: '{}'\n",
        case.dir.join("out").display(),
        case.dir.join("checkpoints").display()
    ));
    let p = case.dir.join("inferred.yaml");
    std::fs::write(&p, &y).unwrap();
    let out = Command::new(BIN).arg("infer").arg(&p).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let decl = String::from_utf8(out.stdout).unwrap();
    assert!(
        decl.contains("schema:\n  explicit:\n") && decl.contains("name: \"order_id\""),
        "{decl}"
    );
    let r = ok(&run(&p, &[]));
    let written = r["rows_written"].as_u64().unwrap();
    let quarantined = r["rows_quarantined"].as_u64().unwrap();
    assert_eq!(
        written + quarantined,
        m.order_file_lines + 50,
        "every line a row or quarantined: {r}"
    );
    assert!(quarantined >= m.dirt.malformed_json_lines, "{r}");
    // The printed declaration pastes into the pipeline and reads the same rows.
    let indented: String = decl.lines().skip(1).map(|l| format!("    {l}\n")).collect();
    let declared = y
        .replace(
            "    type_drift: quarantine\n",
            &format!("    type_drift: quarantine\n{indented}"),
        )
        .replace("pipeline: inferred", "pipeline: declared");
    let p2 = case.dir.join("declared.yaml");
    std::fs::write(
        &p2,
        declared.replace(
            &case.dir.join("out").display().to_string(),
            &case.dir.join("out2").display().to_string(),
        ),
    )
    .unwrap();
    let r2 = ok(&run(&p2, &[]));
    assert_eq!(r2["rows_written"], r["rows_written"], "{r2}");
    // classify samples past malformed lines.
    let out = Command::new(BIN)
        .args(["classify"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("malformed records skipped"));
}

//! What fakesnow cannot show, against an in-process server speaking Snowflake's protocol with
//! constructed messages: rejected passwords, key-pair JWT logins checked with the public key,
//! session renewal, asynchronous queries, chunked results with their headers, transient
//! failures, and stage uploads to S3 (moto), Azure and GCS with client-side encryption.

use aes::cipher::{BlockDecrypt, BlockDecryptMut, KeyInit, KeyIvInit, generic_array::GenericArray};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use stratalake_core::ErrorKind;
use stratalake_snowflake::client::SnowflakeClient;
use stratalake_snowflake::config::{SnowflakeAuth, SnowflakeConfig};
use stratalake_testkit::assert::table_lines;

/// A request: its path, headers and body.
type Seen = (String, Vec<(String, String)>, Bytes);

#[derive(Default)]
struct Server {
    /// Requests seen: (path, headers, body).
    seen: Vec<Seen>,
    base_url: String,
    stage_answer: Value,
    /// How many times each query was asked for.
    query_calls: usize,
    result_polls: usize,
    failures_left: usize,
}

type S = Arc<Mutex<Server>>;

fn j(v: Value) -> Response {
    ([("content-type", "application/json")], v.to_string()).into_response()
}

fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect()
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

fn rows(lo: i64, hi: i64) -> RecordBatch {
    RecordBatch::try_from_iter(vec![
        (
            "ID",
            Arc::new(Int64Array::from_iter_values(lo..hi)) as ArrayRef,
        ),
        (
            "NAME",
            Arc::new(StringArray::from_iter_values(
                (lo..hi).map(|i| format!("n{i}")),
            )),
        ),
    ])
    .unwrap()
}

fn rowtype() -> Value {
    json!([
        {"name": "ID", "type": "fixed", "scale": 0, "precision": 38, "nullable": true},
        {"name": "NAME", "type": "text", "nullable": true},
    ])
}

fn token_of(h: &HeaderMap) -> String {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_start_matches("Snowflake Token=\"")
        .trim_end_matches('"')
        .to_string()
}

fn public_key() -> Vec<u8> {
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/keys/rsa_key.pub"
    ))
    .unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = STANDARD.decode(b64).unwrap();
    // The RSAPublicKey is the BIT STRING payload at the end of the SubjectPublicKeyInfo:
    // 24 bytes of header for a 2048-bit key.
    spki[24..].to_vec()
}

async fn login(State(s): State<S>, headers: HeaderMap, body: Bytes) -> Response {
    s.lock()
        .unwrap()
        .seen
        .push(("login".into(), pairs(&headers), body.clone()));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let d = &v["data"];
    if let Some(jwt) = d["TOKEN"].as_str() {
        // Verify as Snowflake does: the signature with the registered public key, the claims.
        let parts: Vec<&str> = jwt.split('.').collect();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let ok = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            public_key(),
        )
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .is_ok();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let fp = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/keys/fingerprint.txt"
        ))
        .unwrap();
        let good = ok
            && d["AUTHENTICATOR"] == "SNOWFLAKE_JWT"
            && claims["sub"] == "XY12345.LOADER"
            && claims["iss"] == format!("XY12345.LOADER.SHA256:{}", fp.trim())
            && claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 3600;
        if !good {
            return j(json!({"success": false, "code": "390144", "message": "JWT token is invalid.", "data": null})).into_response();
        }
    } else if d["PASSWORD"] != "right" {
        return j(json!({"success": false, "code": "390100", "message": "Incorrect username or password was specified.", "data": null}))
            .into_response();
    }
    j(json!({"success": true, "data": {"token": "session-1", "masterToken": "master-1"}}))
        .into_response()
}

async fn renew(State(s): State<S>, headers: HeaderMap, body: Bytes) -> Response {
    s.lock()
        .unwrap()
        .seen
        .push(("renew".into(), pairs(&headers), body.clone()));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        token_of(&headers),
        "master-1",
        "renewal authenticates with the master token"
    );
    assert_eq!(v["oldSessionToken"], "session-1");
    assert_eq!(v["requestType"], "RENEW");
    j(json!({"success": true, "data": {"sessionToken": "session-2", "masterToken": "master-2"}}))
        .into_response()
}

fn answer_rows(batch: &RecordBatch, chunks: Value, extra: Value) -> Value {
    let mut data = json!({
        "rowtype": rowtype(),
        "rowsetBase64": STANDARD.encode(ipc(batch)),
        "queryResultFormat": "arrow",
        "queryId": "01b2-query",
        "statementTypeId": 4096,
        "chunks": chunks,
    });
    for (k, v) in extra.as_object().unwrap() {
        data[k] = v.clone();
    }
    json!({"success": true, "data": data})
}

async fn query(State(s): State<S>, headers: HeaderMap, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let sql = v["sqlText"].as_str().unwrap().to_string();
    let token = token_of(&headers);
    let mut st = s.lock().unwrap();
    st.seen
        .push(("query".into(), pairs(&headers), body.clone()));
    st.query_calls += 1;
    match sql.as_str() {
        "EXPIRES" if token == "session-1" => {
            j(json!({"success": false, "code": "390112", "message": "Your session has expired. Please login again.", "data": null})).into_response()
        }
        "EXPIRES" => j(answer_rows(&rows(0, 1), json!([]), json!({}))).into_response(),
        "FLAKY" if st.failures_left > 0 => {
            st.failures_left -= 1;
            (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
        }
        "FLAKY" => j(answer_rows(&rows(0, 2), json!([]), json!({}))).into_response(),
        "SLOW" => {
            assert_eq!(v["asyncExec"], true);
            j(json!({"success": true, "code": "333334", "message": "Asynchronous execution in progress.",
                "data": {"queryId": "01b2-slow", "getResultUrl": "/queries/01b2-slow/result"}}))
            .into_response()
        }
        "BIG" => j(answer_rows(
            &rows(0, 3),
            json!([
                {"url": format!("{}/CHUNK/1?X-Amz-Signature=x", st.base_url), "rowCount": 4, "uncompressedSize": 100, "compressedSize": 80},
                {"url": format!("{}/CHUNK/2?X-Amz-Signature=x", st.base_url), "rowCount": 5, "uncompressedSize": 100, "compressedSize": 80},
            ]),
            json!({"qrmk": "query-result-master-key"}),
        ))
        .into_response(),
        "BAD" => j(json!({"success": false, "code": "001003", "message": "SQL compilation error:\nsyntax error line 1 at position 0 unexpected 'BAD'.",
            "data": {"queryId": "01b2-bad", "sqlState": "42000"}}))
        .into_response(),
        s if s.starts_with("PUT ") => {
            j(json!({"success": true, "data": st.stage_answer.clone()})).into_response()
        }
        other => panic!("unexpected statement {other}"),
    }
}

async fn result(State(s): State<S>, Path(id): Path<String>) -> Response {
    let mut st = s.lock().unwrap();
    st.result_polls += 1;
    assert_eq!(id, "01b2-slow");
    if st.result_polls < 3 {
        return j(
            json!({"success": true, "code": "333333", "message": "Query execution in progress.",
            "data": {"queryId": "01b2-slow", "getResultUrl": "/queries/01b2-slow/result"}}),
        )
        .into_response();
    }
    j(answer_rows(&rows(7, 9), json!([]), json!({}))).into_response()
}

async fn chunk(Path(n): Path<u32>, headers: HeaderMap) -> Response {
    assert_eq!(
        headers
            .get("x-amz-server-side-encryption-customer-key")
            .unwrap(),
        "query-result-master-key",
        "chunks are fetched with the result master key"
    );
    assert_eq!(
        headers
            .get("x-amz-server-side-encryption-customer-algorithm")
            .unwrap(),
        "AES256"
    );
    let bytes = if n == 1 {
        ipc(&rows(3, 7))
    } else {
        ipc(&rows(7, 12))
    };
    if n == 2 {
        // Served gzipped without a Content-Encoding header, as some stores do.
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        return gz.finish().unwrap().into_response();
    }
    bytes.into_response()
}

async fn blob(
    State(s): State<S>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.lock()
        .unwrap()
        .seen
        .push((format!("blob:{path}"), pairs(&headers), body));
    StatusCode::CREATED.into_response()
}

async fn server() -> (String, S) {
    let state: S = Arc::new(Mutex::new(Server::default()));
    let app = Router::new()
        .route("/session/v1/login-request", post(login))
        .route("/session/token-request", post(renew))
        .route("/queries/v1/query-request", post(query))
        .route("/queries/{id}/result", get(result))
        .route("/CHUNK/{n}", get(chunk))
        .route("/blob/{*path}", put(blob))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    state.lock().unwrap().base_url = url.clone();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, state)
}

fn cfg(url: &str, password: &str) -> SnowflakeConfig {
    SnowflakeConfig::new(
        "xy12345.eu-central-1",
        "loader",
        SnowflakeAuth::Password {
            password: password.to_string().into(),
        },
        "RETAIL",
        "GOLD",
    )
    .with_base_url(url)
    .with_max_retries(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_auth_without_the_password() {
    let (url, _) = server().await;
    let e = SnowflakeClient::connect(cfg(&url, "wrong-secret-123"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
    let report = e.report();
    assert!(
        report.contains("Incorrect username or password") && report.contains("390100"),
        "{report}"
    );
    assert!(
        report.contains("loader") && report.contains("xy12345"),
        "names user and account: {report}"
    );
    assert!(!report.contains("wrong-secret-123"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pair_login_sends_a_jwt_the_public_key_verifies() {
    let (url, state) = server().await;
    let mut c = cfg(&url, "");
    c.auth = SnowflakeAuth::KeyPair {
        private_key: None,
        private_key_path: Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/keys/rsa_key_encrypted.p8"
            )
            .into(),
        ),
        passphrase: Some("test-passphrase".to_string().into()),
    };
    let client = SnowflakeClient::connect(c).await.unwrap();
    let st = state.lock().unwrap();
    let (_, _, body) = st.seen.iter().find(|s| s.0 == "login").unwrap();
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["data"]["ACCOUNT_NAME"], "XY12345");
    assert!(v["data"].get("PASSWORD").is_none());
    assert!(!format!("{client:?}").contains("PRIVATE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_renewed_with_the_master_token() {
    let (url, state) = server().await;
    let c = SnowflakeClient::connect(cfg(&url, "right")).await.unwrap();
    let r = c.query("EXPIRES").await.unwrap();
    assert_eq!(r.num_rows(), 1);
    let st = state.lock().unwrap();
    assert_eq!(st.seen.iter().filter(|s| s.0 == "renew").count(), 1);
    assert_eq!(
        st.seen.iter().filter(|s| s.0 == "login").count(),
        1,
        "renewed, not logged in again"
    );
    let last = &st.seen.last().unwrap().1;
    assert_eq!(
        header(last, "authorization"),
        Some("Snowflake Token=\"session-2\""),
        "the retried query uses the new token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_queries_are_polled_to_completion() {
    let (url, state) = server().await;
    let c = SnowflakeClient::connect(cfg(&url, "right")).await.unwrap();
    let q = c.submit("SLOW", &Default::default()).await.unwrap();
    assert_eq!(q.query_id, "01b2-slow");
    let r = c.wait(q).await.unwrap();
    assert_eq!(
        table_lines(&r.batches),
        vec![
            "+----+------+",
            "| ID | NAME |",
            "+----+------+",
            "| 7  | n7   |",
            "| 8  | n8   |",
            "+----+------+"
        ]
    );
    assert_eq!(state.lock().unwrap().result_polls, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_results_are_downloaded_in_order_with_their_headers() {
    let (url, _) = server().await;
    let c = SnowflakeClient::connect(cfg(&url, "right")).await.unwrap();
    let r = c.query("BIG").await.unwrap();
    let ids: Vec<String> = table_lines(&r.batches)[3..15]
        .iter()
        .map(|l| l[2..4].trim().to_string())
        .collect();
    assert_eq!(ids, (0..12).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(r.num_rows(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_sql_errors_are_not() {
    let (url, state) = server().await;
    state.lock().unwrap().failures_left = 2;
    let c = SnowflakeClient::connect(cfg(&url, "right")).await.unwrap();
    assert_eq!(c.query("FLAKY").await.unwrap().num_rows(), 2);
    let before = state.lock().unwrap().query_calls;
    let e = c.query("BAD").await.unwrap_err();
    assert_eq!(state.lock().unwrap().query_calls, before + 1, "not retried");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(e.context_value("query_id"), Some("01b2-bad"));
    assert!(e.report().contains("syntax error"), "{}", e.report());
}

fn unwrap_and_decrypt(master: &[u8], wrapped_b64: &str, iv_b64: &str, body: &[u8]) -> Vec<u8> {
    let mut wrapped = STANDARD.decode(wrapped_b64).unwrap();
    let aes = aes::Aes128::new_from_slice(master).unwrap();
    for block in wrapped.chunks_mut(16) {
        aes.decrypt_block(GenericArray::from_mut_slice(block));
    }
    let iv = STANDARD.decode(iv_b64).unwrap();
    cbc::Decryptor::<aes::Aes128>::new_from_slices(&wrapped[..16], &iv)
        .unwrap()
        .decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_uploads_reach_s3_azure_and_gcs_encrypted() {
    let (url, state) = server().await;
    let c = SnowflakeClient::connect(cfg(&url, "right")).await.unwrap();
    let master = [9u8; 16];
    let material = json!({"queryStageMasterKey": STANDARD.encode(master), "queryId": "01b2-put", "smkId": 4242});
    let payload = bytes::Bytes::from_static(b"PAR1 parquet bytes of an epoch PAR1");

    // S3, on moto (scripts/services.sh), path-style through an endPoint with a scheme.
    let http = reqwest::Client::new();
    let bucket = format!("sfc-stage-{}", std::process::id());
    http.put(format!("http://127.0.0.1:5000/{bucket}"))
        .send()
        .await
        .expect("moto on 127.0.0.1:5000 (scripts/services.sh start)");
    state.lock().unwrap().stage_answer = json!({"command": "UPLOAD", "stageInfo": {"locationType": "S3", "location": format!("{bucket}/stages/abc/"),
            "region": "us-east-1", "endPoint": "http://127.0.0.1:5000",
            "creds": {"AWS_KEY_ID": "AKIDTEST", "AWS_SECRET_KEY": "secret", "AWS_TOKEN": "tok"}},
            "encryptionMaterial": material});
    c.put("@~/x", "part-00000.parquet", payload.clone())
        .await
        .unwrap();
    let got = http
        .get(format!("http://127.0.0.1:5000/{bucket}/stages/abc/part-00000.parquet"))
        // moto on 5000 checks no signatures but takes the caller (the object's owner) from
        // the credential.
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/20261127/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
        )
        .send()
        .await
        .unwrap();
    assert!(got.status().is_success(), "{:?}", got.status());
    let h = got.headers().clone();
    let body = got.bytes().await.unwrap();
    assert_ne!(&body[..], &payload[..], "stored encrypted");
    let meta = |k: &str| {
        h.get(k)
            .unwrap_or_else(|| panic!("{k} in {h:?}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let matdesc: Value = serde_json::from_str(&meta("x-amz-meta-x-amz-matdesc")).unwrap();
    assert_eq!(
        matdesc,
        json!({"queryId": "01b2-put", "smkId": "4242", "keySize": "128"})
    );
    let plain = unwrap_and_decrypt(
        &master,
        &meta("x-amz-meta-x-amz-key"),
        &meta("x-amz-meta-x-amz-iv"),
        &body,
    );
    assert_eq!(plain, &payload[..]);
    assert_eq!(
        meta("x-amz-meta-sfc-digest"),
        STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, &payload))
    );

    // Azure: the SAS token as the query, the encryption data as blob metadata.
    state.lock().unwrap().stage_answer = json!({"command": "UPLOAD", "stageInfo": {"locationType": "AZURE", "location": "stagecontainer/stages/abc/",
            "storageAccount": "blob", "endPoint": url,
            "creds": {"AZURE_SAS_TOKEN": "?sv=2020&sig=SIGNATURE"}},
            "encryptionMaterial": material});
    c.put("@~/x", "part-00001.parquet", payload.clone())
        .await
        .unwrap();
    // GCS: a presigned URL.
    state.lock().unwrap().stage_answer = json!({"command": "UPLOAD", "stageInfo": {"locationType": "GCS", "location": "b/stages/abc/",
            "presignedUrl": format!("{url}/blob/gcs/part-00002.parquet?X-Goog-Signature=abc"), "creds": {}},
            "encryptionMaterial": material});
    c.put("@~/x", "part-00002.parquet", payload.clone())
        .await
        .unwrap();
    let st = state.lock().unwrap();
    let uploads: Vec<_> = st
        .seen
        .iter()
        .filter(|s| s.0.starts_with("blob:"))
        .collect();
    assert_eq!(uploads.len(), 2);
    for (path, headers, body) in uploads {
        let prefix = if path.contains("gcs") {
            "x-goog-meta-"
        } else {
            "x-ms-meta-"
        };
        let matdesc: Value =
            serde_json::from_str(header(headers, &format!("{prefix}matdesc")).unwrap()).unwrap();
        assert_eq!(matdesc["smkId"], "4242");
        let data: Value =
            serde_json::from_str(header(headers, &format!("{prefix}encryptiondata")).unwrap())
                .unwrap();
        let plain = unwrap_and_decrypt(
            &master,
            data["WrappedContentKey"]["EncryptedKey"].as_str().unwrap(),
            data["ContentEncryptionIV"].as_str().unwrap(),
            body,
        );
        assert_eq!(plain, &payload[..], "{path}");
        if path.contains("stages/abc") {
            assert_eq!(path, "blob:stagecontainer/stages/abc/part-00001.parquet");
            assert_eq!(header(headers, "x-ms-blob-type"), Some("BlockBlob"));
        }
    }
}

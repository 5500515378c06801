//! Stage uploads: where a `PUT` answer says the bytes go, and how they get there.
//!
//! Snowflake answers a `PUT` with `stageInfo` (the cloud location and temporary credentials)
//! and, for internal stages, `encryptionMaterial` (a query stage master key). The client
//! encrypts the file itself, as Snowflake's drivers do: a random file key and IV, the content
//! AES-CBC with PKCS#7 padding, the file key wrapped by the master key with AES-ECB, and the
//! wrapped key, IV and material descriptor written as object metadata. Then:
//!
//! - `S3`: a PUT to `https://<bucket>.s3.<region>.amazonaws.com/<path><file>` signed with AWS
//!   Signature V4 (temporary key, secret and session token); an `endPoint` with a scheme is
//!   used path-style instead (S3-compatible endpoints);
//! - `AZURE`: a block-blob PUT to `https://<storageAccount>.<endPoint>/<container>/<path><file>`
//!   with the SAS token;
//! - `GCS`: a PUT to the `presignedUrl` (fakesnow answers this way too, unencrypted), or to the
//!   bucket with the access token.

use crate::client::QueryData;
use aes::cipher::{BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit, generic_array::GenericArray};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use reqwest::StatusCode;
use ring::hmac;
use std::time::Duration;
use stratalake_core::{Error, ErrorKind, Result, Retry};

/// What a PUT answer asks the client to do with one file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageUpload {
    target: Target,
    file_name: String,
    material: Option<Material>,
}

#[derive(Clone, PartialEq)]
enum Target {
    S3 {
        url: String,
        host: String,
        path: String,
        region: String,
        key_id: String,
        secret: String,
        token: Option<String>,
    },
    Azure {
        url: String,
        sas: String,
    },
    Gcs {
        url: String,
        bearer: Option<String>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials stay out of Debug.
        let (kind, url) = match self {
            Target::S3 { url, .. } => ("S3", url),
            Target::Azure { url, .. } => ("AZURE", url),
            Target::Gcs { url, .. } => ("GCS", url),
        };
        write!(f, "{kind} {}", url.split('?').next().unwrap_or(url))
    }
}

/// The query stage master key material of an internal stage.
#[derive(Clone, PartialEq)]
pub struct Material {
    master_key: Vec<u8>,
    query_id: String,
    smk_id: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("query_id", &self.query_id)
            .field("smk_id", &self.smk_id)
            .finish_non_exhaustive()
    }
}

fn stage_err(msg: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("snowflake stage: {}", msg.into()),
    )
}

/// Percent-encode a key as S3 canonical URIs do: unreserved characters and `/` stay.
fn uri_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl StageUpload {
    pub(crate) fn from_answer(data: &QueryData, file_name: &str) -> Result<Self> {
        let info = data
            .stage_info
            .as_ref()
            .ok_or_else(|| Error::internal("snowflake: the PUT answer has no stageInfo"))?;
        let s = |k: &str| info[k].as_str().unwrap_or_default().to_string();
        let creds = &info["creds"];
        let cred = |k: &str| creds[k].as_str().map(str::to_string);
        let location = s("location");
        let (bucket, prefix) = location.split_once('/').unwrap_or((&location, ""));
        let key = format!("{prefix}{file_name}");
        let target = match s("locationType").as_str() {
            "S3" => {
                let region = s("region");
                let endpoint = s("endPoint");
                let (url, host, path) = if endpoint.starts_with("http") {
                    let base = endpoint.trim_end_matches('/');
                    let host = base.split("://").nth(1).unwrap_or(base).to_string();
                    let path = format!("/{bucket}/{}", uri_encode(&key));
                    (format!("{base}{path}"), host, path)
                } else {
                    let host = if endpoint.is_empty() {
                        format!("{bucket}.s3.{region}.amazonaws.com")
                    } else {
                        format!("{bucket}.{endpoint}")
                    };
                    let path = format!("/{}", uri_encode(&key));
                    (format!("https://{host}{path}"), host, path)
                };
                Target::S3 {
                    url,
                    host,
                    path,
                    region,
                    key_id: cred("AWS_KEY_ID").unwrap_or_default(),
                    secret: cred("AWS_SECRET_KEY").unwrap_or_default(),
                    token: cred("AWS_TOKEN").filter(|t| !t.is_empty()),
                }
            }
            "AZURE" => {
                let endpoint = match s("endPoint") {
                    e if e.is_empty() => "blob.core.windows.net".to_string(),
                    e => e,
                };
                let base = if endpoint.starts_with("http") {
                    format!("{}/{}", endpoint.trim_end_matches('/'), s("storageAccount"))
                } else {
                    format!("https://{}.{endpoint}", s("storageAccount"))
                };
                let sas = cred("AZURE_SAS_TOKEN").unwrap_or_default();
                Target::Azure {
                    url: format!("{base}/{bucket}/{}", uri_encode(&key)),
                    sas: sas.trim_start_matches('?').to_string(),
                }
            }
            "GCS" => match info["presignedUrl"].as_str().filter(|u| !u.is_empty()) {
                Some(u) => Target::Gcs {
                    url: u.to_string(),
                    bearer: None,
                },
                None => Target::Gcs {
                    url: format!(
                        "https://storage.googleapis.com/{bucket}/{}",
                        uri_encode(&key)
                    ),
                    bearer: cred("GCS_ACCESS_TOKEN"),
                },
            },
            other => {
                return Err(stage_err(format!(
                    "a stage on {other:?} storage cannot be uploaded to from here (S3, AZURE and GCS can)"
                )));
            }
        };
        let material = match &data.encryption_material {
            Some(m) if m.is_object() => Some(Material {
                master_key: STANDARD
                    .decode(m["queryStageMasterKey"].as_str().unwrap_or_default())
                    .map_err(|e| {
                        Error::internal("snowflake: the stage master key is not base64")
                            .with_source(e)
                    })?,
                query_id: m["queryId"].as_str().unwrap_or_default().to_string(),
                smk_id: match &m["smkId"] {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                },
            }),
            _ => None,
        };
        if let Some(m) = &material
            && !matches!(m.master_key.len(), 16 | 24 | 32)
        {
            return Err(Error::internal(format!(
                "snowflake: a stage master key of {} bytes is not an AES key",
                m.master_key.len()
            )));
        }
        Ok(Self {
            target,
            file_name: file_name.to_string(),
            material,
        })
    }

    pub(crate) async fn send(
        &self,
        http: &reqwest::Client,
        bytes: Bytes,
        backoff: &mut impl Iterator<Item = Duration>,
    ) -> Result<()> {
        let digest = STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        let (body, meta) = match &self.material {
            Some(m) => {
                let (enc, meta) = encrypt(m, &bytes)?;
                (Bytes::from(enc), Some(meta))
            }
            None => (bytes, None),
        };
        loop {
            let req = self.request(http, &body, meta.as_ref(), &digest, chrono::Utc::now());
            let failure = match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    let text: String = r
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    let kind = match status {
                        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ErrorKind::Auth,
                        StatusCode::NOT_FOUND => ErrorKind::NotFound,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                            ErrorKind::RateLimited
                        }
                        s if s.is_server_error() => ErrorKind::Unavailable,
                        _ => ErrorKind::Internal,
                    };
                    let e = Error::new(
                        kind,
                        format!(
                            "snowflake stage: uploading {} answered HTTP {status}: {text}",
                            self.file_name
                        ),
                    )
                    .with_context("target", format!("{:?}", self.target));
                    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                        return Err(e);
                    }
                    e.with_retry(Retry::Transient)
                }
                Err(e) => Error::new(
                    ErrorKind::Unavailable,
                    format!("snowflake stage: uploading {} failed", self.file_name),
                )
                .with_retry(Retry::Transient)
                .with_context("target", format!("{:?}", self.target))
                .with_source(e),
            };
            match backoff.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(failure),
            }
        }
    }

    fn request(
        &self,
        http: &reqwest::Client,
        body: &Bytes,
        meta: Option<&Encrypted>,
        digest: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> reqwest::RequestBuilder {
        match &self.target {
            Target::S3 {
                url,
                host,
                path,
                region,
                key_id,
                secret,
                token,
            } => {
                let mut headers: Vec<(String, String)> =
                    vec![("x-amz-meta-sfc-digest".into(), digest.into())];
                if let Some(m) = meta {
                    headers.push(("x-amz-meta-x-amz-key".into(), m.wrapped_key.clone()));
                    headers.push(("x-amz-meta-x-amz-iv".into(), m.iv.clone()));
                    headers.push(("x-amz-meta-x-amz-matdesc".into(), m.matdesc.clone()));
                }
                let signed = sigv4_put(
                    host,
                    path,
                    region,
                    key_id,
                    secret,
                    token.as_deref(),
                    &headers,
                    body,
                    now,
                );
                let mut req = http.put(url).body(body.clone());
                for (k, v) in headers.into_iter().chain(signed) {
                    if k != "host" {
                        req = req.header(k, v);
                    }
                }
                req
            }
            Target::Azure { url, sas } => {
                let mut req = http
                    .put(format!("{url}?{sas}"))
                    .header("x-ms-blob-type", "BlockBlob")
                    .header("x-ms-meta-sfcdigest", digest)
                    .body(body.clone());
                if let Some(m) = meta {
                    req = req
                        .header("x-ms-meta-encryptiondata", m.encryption_data())
                        .header("x-ms-meta-matdesc", &m.matdesc);
                }
                req
            }
            Target::Gcs { url, bearer } => {
                let mut req = http
                    .put(url)
                    .header("x-goog-meta-sfc-digest", digest)
                    .body(body.clone());
                if let Some(b) = bearer {
                    req = req.bearer_auth(b);
                }
                if let Some(m) = meta {
                    req = req
                        .header("x-goog-meta-encryptiondata", m.encryption_data())
                        .header("x-goog-meta-matdesc", &m.matdesc);
                }
                req
            }
        }
    }
}

/// The metadata of a client-side encrypted file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Encrypted {
    wrapped_key: String,
    iv: String,
    matdesc: String,
    key_bits: usize,
}

impl Encrypted {
    fn encryption_data(&self) -> String {
        serde_json::json!({
            "EncryptionMode": "FullBlob",
            "WrappedContentKey": {"KeyId": "symmKey1", "EncryptedKey": self.wrapped_key, "Algorithm": "AES_CBC_256"},
            "EncryptionAgent": {"Protocol": "1.0", "EncryptionAlgorithm": "AES_CBC_256"},
            "ContentEncryptionIV": self.iv,
            "KeyWrappingMetadata": {"EncryptionLibrary": "Java 5.3.0"},
        })
        .to_string()
    }
}

fn wrap_blocks<C: BlockEncrypt>(cipher: &C, data: &mut [u8]) {
    for block in data.chunks_mut(16) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
}

fn pkcs7(data: &[u8]) -> Vec<u8> {
    let pad = 16 - data.len() % 16;
    let mut v = data.to_vec();
    v.extend(std::iter::repeat_n(pad as u8, pad));
    v
}

/// Encrypt `plain` as Snowflake's drivers do (module docs).
pub(crate) fn encrypt(m: &Material, plain: &[u8]) -> Result<(Vec<u8>, Encrypted)> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut file_key = vec![0u8; m.master_key.len()];
    let mut iv = [0u8; 16];
    rng.fill(&mut file_key)
        .and_then(|()| rng.fill(&mut iv))
        .map_err(|_| Error::internal("snowflake stage: no system randomness for the file key"))?;
    let bad = |_| Error::internal("snowflake stage: AES key setup failed");
    let content = match file_key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(&file_key, &iv)
            .map_err(bad)?
            .encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(plain),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(&file_key, &iv)
            .map_err(bad)?
            .encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(plain),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&file_key, &iv)
            .map_err(bad)?
            .encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(plain),
    };
    let mut wrapped = pkcs7(&file_key);
    match m.master_key.len() {
        16 => wrap_blocks(
            &aes::Aes128::new_from_slice(&m.master_key).map_err(bad)?,
            &mut wrapped,
        ),
        24 => wrap_blocks(
            &aes::Aes192::new_from_slice(&m.master_key).map_err(bad)?,
            &mut wrapped,
        ),
        _ => wrap_blocks(
            &aes::Aes256::new_from_slice(&m.master_key).map_err(bad)?,
            &mut wrapped,
        ),
    }
    let key_bits = m.master_key.len() * 8;
    let matdesc = serde_json::json!({"queryId": m.query_id, "smkId": m.smk_id, "keySize": key_bits.to_string()}).to_string();
    Ok((
        content,
        Encrypted {
            wrapped_key: STANDARD.encode(&wrapped),
            iv: STANDARD.encode(iv),
            matdesc,
            key_bits,
        },
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// AWS Signature V4 for a PUT with an unsigned-trailer-free payload: the headers to add
/// (`x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token`, `authorization`).
#[expect(clippy::too_many_arguments, reason = "the inputs of one signature")]
pub(crate) fn sigv4_put(
    host: &str,
    path: &str,
    region: &str,
    key_id: &str,
    secret: &str,
    token: Option<&str>,
    extra: &[(String, String)],
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let payload_hash = hex(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.into()),
        ("x-amz-content-sha256".into(), payload_hash.clone()),
        ("x-amz-date".into(), amz_date.clone()),
    ];
    if let Some(t) = token {
        headers.push(("x-amz-security-token".into(), t.into()));
    }
    let mut all: Vec<(String, String)> = headers
        .iter()
        .cloned()
        .chain(
            extra
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())),
        )
        .collect();
    all.sort();
    let canonical_headers: String = all.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!("PUT\n{path}\n\n{canonical_headers}\n{signed}\n{payload_hash}");
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mac = |key: &[u8], msg: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg.as_bytes())
            .as_ref()
            .to_vec()
    };
    let k = mac(format!("AWS4{secret}").as_bytes(), date);
    let k = mac(&k, region);
    let k = mac(&k, "s3");
    let k = mac(&k, "aws4_request");
    let signature = hex(&mac(&k, &to_sign));
    headers.push((
        "authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, Signature={signature}"),
    ));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::BlockDecryptMut;

    fn answer(stage_info: serde_json::Value, material: Option<serde_json::Value>) -> QueryData {
        serde_json::from_value(serde_json::json!({
            "stageInfo": stage_info,
            "encryptionMaterial": material,
            "command": "UPLOAD",
        }))
        .unwrap()
    }

    #[test]
    fn sigv4_matches_botocore() {
        // Recorded from botocore's S3SigV4Auth over the same request (see the commit).
        let headers = sigv4_put(
            "sfc-bucket.s3.us-west-2.amazonaws.com",
            "/stages/abc/part%200.parquet",
            "us-west-2",
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("SESSIONTOKEN"),
            &[("x-amz-meta-x-amz-iv".into(), "aXY=".into())],
            b"hello stage",
            chrono::DateTime::parse_from_rfc3339("2026-11-27T00:03:22Z")
                .unwrap()
                .into(),
        );
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-west-2/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-x-amz-iv;x-amz-security-token, \
             Signature=6228c2bc1d8ad7a14082aea10dd627021e7460760c13d5951cbd6e666ce491a7"
        );
    }

    #[test]
    fn s3_stage_info_from_a_put_answer_and_no_secrets_in_debug() {
        let data = answer(
            serde_json::json!({
                "locationType": "S3", "location": "sfc-bucket/stages/abc/", "region": "us-west-2",
                "endPoint": null,
                "creds": {"AWS_KEY_ID": "AKID", "AWS_SECRET_KEY": "very-secret", "AWS_TOKEN": "tok"},
            }),
            Some(
                serde_json::json!({"queryStageMasterKey": STANDARD.encode([7u8; 16]), "queryId": "q-1", "smkId": 42}),
            ),
        );
        let u = StageUpload::from_answer(&data, "part 0.parquet").unwrap();
        match &u.target {
            Target::S3 { url, path, .. } => {
                assert_eq!(
                    url,
                    "https://sfc-bucket.s3.us-west-2.amazonaws.com/stages/abc/part%200.parquet"
                );
                assert_eq!(path, "/stages/abc/part%200.parquet");
            }
            other => panic!("{other:?}"),
        }
        let debug = format!("{u:?}");
        assert!(
            !debug.contains("very-secret") && !debug.contains("tok\"") && !debug.contains("BwcH"),
            "{debug}"
        );
        assert_eq!(u.material.as_ref().unwrap().smk_id, "42");
    }

    #[test]
    fn encryption_round_trips_with_the_master_key() {
        for size in [16usize, 32] {
            let m = Material {
                master_key: (0..size as u8).collect(),
                query_id: "q".into(),
                smk_id: "1".into(),
            };
            let plain = b"PAR1 some parquet bytes, not a multiple of sixteen";
            let (enc, meta) = encrypt(&m, plain).unwrap();
            assert_ne!(&enc[..plain.len().min(enc.len())], &plain[..]);
            // Unwrap the file key with the master key (AES-ECB), then decrypt (AES-CBC).
            let mut wrapped = STANDARD.decode(&meta.wrapped_key).unwrap();
            assert_eq!(wrapped.len(), size + 16);
            for block in wrapped.chunks_mut(16) {
                use aes::cipher::BlockDecrypt;
                let b = GenericArray::from_mut_slice(block);
                if size == 16 {
                    aes::Aes128::new_from_slice(&m.master_key)
                        .unwrap()
                        .decrypt_block(b);
                } else {
                    aes::Aes256::new_from_slice(&m.master_key)
                        .unwrap()
                        .decrypt_block(b);
                }
            }
            let file_key = &wrapped[..size];
            assert!(
                wrapped[size..].iter().all(|b| *b == 16),
                "PKCS#7 padding of the key"
            );
            let iv = STANDARD.decode(&meta.iv).unwrap();
            let out = if size == 16 {
                cbc::Decryptor::<aes::Aes128>::new_from_slices(file_key, &iv)
                    .unwrap()
                    .decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(&enc)
                    .unwrap()
            } else {
                cbc::Decryptor::<aes::Aes256>::new_from_slices(file_key, &iv)
                    .unwrap()
                    .decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(&enc)
                    .unwrap()
            };
            assert_eq!(out, plain);
            assert_eq!(meta.key_bits, size * 8);
            assert_eq!(
                meta.matdesc,
                format!(
                    "{{\"keySize\":\"{}\",\"queryId\":\"q\",\"smkId\":\"1\"}}",
                    size * 8
                )
            );
        }
    }
}

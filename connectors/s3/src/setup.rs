//! Creating buckets (for tests and `strata setup`): object_store has no call for it, so this is
//! one signed `PUT /<bucket>` through object_store's own HTTP client and SigV4 signer.

use crate::S3Config;
use object_store::aws::AwsAuthorizer;
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
use stratalake_core::{Error, ErrorKind, Result};
use stratalake_files::cloud::ObjectStoreHttp as _;

/// What [`create_bucket`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// The bucket was created.
    Created,
    /// It already existed and is ours.
    AlreadyExisted,
}

/// Create the bucket of `cfg` (in its region) if it does not exist.
///
/// # Errors
/// [`ErrorKind::Auth`] for rejected credentials, [`ErrorKind::Conflict`] when another account
/// owns the name, [`ErrorKind::Unavailable`] when the endpoint cannot be reached; each names
/// the bucket and carries S3's error code.
pub async fn create_bucket(cfg: &S3Config) -> Result<Created> {
    // us-east-1 answers 200 to creating a bucket we already own: look first.
    match cfg.location()?.check().await {
        Ok(()) => return Ok(Created::AlreadyExisted),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let store = cfg.build_store()?;
    let cred = store.credentials().get_credential().await.map_err(|e| {
        Error::new(ErrorKind::Auth, "cannot get S3 credentials")
            .with_context("bucket", &cfg.bucket)
            .with_source(e)
    })?;
    let url = bucket_url(cfg);
    let body = if cfg.region == "us-east-1" {
        Vec::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            cfg.region
        )
        .into_bytes()
    };
    let mut req = http::Request::builder()
        .method(http::Method::PUT)
        .uri(&url)
        .body(HttpRequestBody::from(body))
        .map_err(|e| {
            Error::config("invalid bucket URL")
                .with_context("url", &url)
                .with_source(e)
        })?;
    AwsAuthorizer::new(&cred, "s3", &cfg.region).authorize(&mut req, None);
    let client = ReqwestConnector::default()
        .connect(&cfg.http.client_options(cfg.allow_http))
        .map_err(|e| Error::config("cannot build the HTTP client").with_source(e))?;
    let resp = client.execute(req).await.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            "cannot reach S3 to create the bucket",
        )
        .with_context("bucket", &cfg.bucket)
        .with_context("url", &url)
        .with_source(e)
    })?;
    let status = resp.status();
    let text =
        String::from_utf8_lossy(&resp.into_body().bytes().await.unwrap_or_default()).into_owned();
    let code = xml_field(&text, "Code").unwrap_or_default();
    if status.is_success() {
        tracing::info!(bucket = %cfg.bucket, "created bucket");
        return Ok(Created::Created);
    }
    if code == "BucketAlreadyOwnedByYou" {
        return Ok(Created::AlreadyExisted);
    }
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::Auth,
        409 => ErrorKind::Conflict,
        400 => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    };
    Err(Error::new(kind, "S3 refused to create the bucket")
        .with_context("bucket", &cfg.bucket)
        .with_context("status", status.as_u16())
        .with_context("code", code)
        .with_context("message", xml_field(&text, "Message").unwrap_or_default()))
}

fn bucket_url(cfg: &S3Config) -> String {
    match &cfg.endpoint {
        Some(e) if cfg.path_style => format!("{}/{}", e.trim_end_matches('/'), cfg.bucket),
        Some(e) => match e.split_once("://") {
            Some((scheme, host)) => {
                format!("{scheme}://{}.{}", cfg.bucket, host.trim_end_matches('/'))
            }
            None => format!("{e}/{}", cfg.bucket),
        },
        None => format!("https://s3.{}.amazonaws.com/{}", cfg.region, cfg.bucket),
    }
}

/// The text of the first `<tag>...</tag>` in an S3 XML error body.
fn xml_field(body: &str, tag: &str) -> Option<String> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_string())
}

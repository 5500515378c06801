//! Creating containers (for tests and `strata setup`): object_store has no call for it, so this
//! is one authorized `PUT /<container>?restype=container` through object_store's own HTTP
//! client and Azure authorizer.

use crate::AzureBlobConfig;
use object_store::azure::AzureAuthorizer;
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
use stratalake_core::{Error, ErrorKind, Result};
use stratalake_files::cloud::ObjectStoreHttp as _;

/// What [`create_container`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// The container was created.
    Created,
    /// It already existed.
    AlreadyExisted,
}

/// Create the container of `cfg` if it does not exist.
///
/// # Errors
/// [`ErrorKind::Auth`] for rejected credentials, [`ErrorKind::Unavailable`] when the endpoint
/// cannot be reached; each names the container and carries Azure's error code.
pub async fn create_container(cfg: &AzureBlobConfig) -> Result<Created> {
    let store = cfg.build_store()?;
    let cred = store.credentials().get_credential().await.map_err(|e| {
        Error::new(ErrorKind::Auth, "cannot get Azure credentials")
            .with_context("container", &cfg.container)
            .with_source(e)
    })?;
    let mut url = format!("{}/{}?restype=container", cfg.service_url(), cfg.container);
    if let object_store::azure::AzureCredential::SASToken(pairs) = cred.as_ref() {
        for (k, v) in pairs {
            url.push_str(&format!("&{k}={v}"));
        }
    }
    let mut req = http::Request::builder()
        .method(http::Method::PUT)
        .uri(&url)
        .header("x-ms-version", "2023-11-03")
        .header("x-ms-date", httpdate_now())
        .header("content-length", "0")
        .body(HttpRequestBody::empty())
        .map_err(|e| Error::config("invalid container URL").with_source(e))?;
    AzureAuthorizer::new(&cred, cfg.account_name()).authorize(&mut req);
    let client = ReqwestConnector::default()
        .connect(&cfg.http.client_options(true))
        .map_err(|e| Error::config("cannot build the HTTP client").with_source(e))?;
    let resp = client.execute(req).await.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            "cannot reach Azure Blob Storage to create the container",
        )
        .with_context("container", &cfg.container)
        .with_context("url", cfg.service_url())
        .with_source(e)
    })?;
    let status = resp.status();
    let code = resp
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if status.is_success() {
        tracing::info!(container = %cfg.container, "created container");
        return Ok(Created::Created);
    }
    if code == "ContainerAlreadyExists" {
        return Ok(Created::AlreadyExisted);
    }
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        400 => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    };
    Err(Error::new(kind, "Azure refused to create the container")
        .with_context("container", &cfg.container)
        .with_context("status", status.as_u16())
        .with_context("code", code))
}

/// The current time as an RFC 1123 HTTP date, as the `x-ms-date` header wants.
fn httpdate_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

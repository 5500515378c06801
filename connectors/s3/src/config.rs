//! [`S3Config`]: where the bucket is and how to sign requests.

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use stratalake_core::{Error, Result};
use stratalake_files::cloud::{HttpSettings, ObjectStoreHttp};
use stratalake_files::{StoreLocation, cloud_url};

/// How requests are signed.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum S3Credentials {
    /// The standard AWS chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`,
    /// then web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`), then the ECS/EKS
    /// container endpoints, then EC2 instance metadata.
    #[default]
    Environment,
    /// Static keys (use `${VAR}` in YAML so they stay out of the file).
    Static {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        secret_access_key: SecretString,
        /// A session token for temporary credentials.
        #[serde(
            default,
            deserialize_with = "stratalake_core::secrets::deserialize_opt"
        )]
        session_token: Option<SecretString>,
    },
    /// AssumeRoleWithWebIdentity (EKS IRSA, GitHub OIDC).
    WebIdentity {
        /// The role to assume.
        role_arn: String,
        /// The file holding the identity token.
        token_file: String,
        /// The session name (default `strata`).
        #[serde(default)]
        session_name: Option<String>,
        /// The STS endpoint (default `https://sts.<region>.amazonaws.com`).
        #[serde(default)]
        sts_endpoint: Option<String>,
    },
    /// EC2 instance metadata (IMDSv2).
    InstanceMetadata {
        /// The metadata endpoint (default `http://169.254.169.254`).
        #[serde(default)]
        endpoint: Option<String>,
        /// Fall back to IMDSv1 when v2 is unavailable.
        #[serde(default)]
        imdsv1_fallback: bool,
    },
}

/// A bucket and prefix on S3 or an S3-compatible server (MinIO, moto, Ceph).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct S3Config {
    /// The bucket (required; in a Delta lake connection the table URL names it and this may
    /// be left out).
    #[serde(default)]
    pub bucket: String,
    /// The key prefix everything is read from or written under (no leading `/`).
    #[serde(default)]
    pub prefix: String,
    /// The region (default `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// A custom endpoint (`http://127.0.0.1:9000` for a local server); AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How requests are signed.
    #[serde(default)]
    pub credentials: S3Credentials,
    /// Path-style requests (`endpoint/bucket/key`), which most local servers need; AWS uses
    /// virtual-hosted style (`bucket.endpoint/key`).
    #[serde(default)]
    pub path_style: bool,
    /// Allow plain `http://` endpoints (local servers only).
    #[serde(default)]
    pub allow_http: bool,
    /// Timeouts and retries.
    #[serde(default)]
    pub http: HttpSettings,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

impl S3Config {
    /// A bucket on AWS with the default credential chain.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: String::new(),
            region: default_region(),
            endpoint: None,
            credentials: S3Credentials::Environment,
            path_style: false,
            allow_http: false,
            http: HttpSettings::default(),
        }
    }

    /// A bucket on a local S3-compatible server at `endpoint` (`http://127.0.0.1:5000`):
    /// path-style, plain HTTP allowed, static test keys.
    pub fn local_server(bucket: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self::new(bucket)
            .with_endpoint(endpoint)
            .with_path_style(true)
            .with_allow_http(true)
            .with_static_credentials("strata-test", "strata-test-secret")
    }

    /// Read and write under `prefix`.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Use `region`.
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Send requests to `endpoint`.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Path-style (true) or virtual-hosted-style (false) requests.
    #[must_use]
    pub fn with_path_style(mut self, yes: bool) -> Self {
        self.path_style = yes;
        self
    }

    /// Allow plain HTTP.
    #[must_use]
    pub fn with_allow_http(mut self, yes: bool) -> Self {
        self.allow_http = yes;
        self
    }

    /// Sign with static keys.
    #[must_use]
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = S3Credentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: SecretString::from(secret_access_key.into()),
            session_token: None,
        };
        self
    }

    /// Sign with `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: S3Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Use these timeouts and retries.
    #[must_use]
    pub fn with_http(mut self, http: HttpSettings) -> Self {
        self.http = http;
        self
    }

    /// Check the config without I/O.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key and value at fault.
    pub fn validate(&self) -> Result<()> {
        validate_bucket(&self.bucket)?;
        if self.prefix.starts_with('/') || self.prefix.contains("//") {
            return Err(Error::config(
                "`prefix` must not start with `/` or contain an empty segment",
            )
            .with_context("prefix", &self.prefix));
        }
        if self.region.trim().is_empty() {
            return Err(Error::config("`region` must not be empty"));
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(
                    Error::config("`endpoint` must be an http(s) URL").with_context("endpoint", e)
                );
            }
            if e.starts_with("http://") && !self.allow_http {
                return Err(Error::config(
                    "`endpoint` is plain http: set `allow_http: true` (local servers only)",
                )
                .with_context("endpoint", e));
            }
        }
        match &self.credentials {
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                ..
            } if access_key_id.trim().is_empty()
                || secret_access_key.expose_secret().is_empty() =>
            {
                return Err(Error::config(
                    "static credentials need `access_key_id` and `secret_access_key`",
                ));
            }
            S3Credentials::WebIdentity {
                role_arn,
                token_file,
                ..
            } if role_arn.is_empty() || token_file.is_empty() => {
                return Err(Error::config(
                    "web identity credentials need `role_arn` and `token_file`",
                ));
            }
            _ => {}
        }
        self.http.validate_for("an S3 connection")
    }

    /// The bucket as object_store's S3 client (no I/O until used).
    ///
    /// # Errors
    /// Config errors.
    pub fn build_store(&self) -> Result<AmazonS3> {
        self.validate()?;
        let mut b = match self.credentials {
            S3Credentials::Environment => AmazonS3Builder::from_env(),
            _ => AmazonS3Builder::new(),
        };
        b = b
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(!self.path_style)
            .with_client_options(self.http.client_options(self.allow_http))
            .with_retry(self.http.retry_config());
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        match &self.credentials {
            S3Credentials::Environment => {}
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                b = b
                    .with_access_key_id(access_key_id)
                    .with_secret_access_key(secret_access_key.expose_secret());
                if let Some(t) = session_token {
                    b = b.with_token(t.expose_secret());
                }
            }
            S3Credentials::WebIdentity {
                role_arn,
                token_file,
                session_name,
                sts_endpoint,
            } => {
                b = b
                    .with_config(AmazonS3ConfigKey::RoleArn, role_arn)
                    .with_config(AmazonS3ConfigKey::WebIdentityTokenFile, token_file)
                    .with_config(
                        AmazonS3ConfigKey::RoleSessionName,
                        session_name.as_deref().unwrap_or("strata"),
                    );
                if let Some(sts) = sts_endpoint {
                    b = b.with_config(AmazonS3ConfigKey::StsEndpoint, sts);
                }
            }
            S3Credentials::InstanceMetadata {
                endpoint,
                imdsv1_fallback,
            } => {
                if let Some(e) = endpoint {
                    b = b.with_metadata_endpoint(e);
                }
                if *imdsv1_fallback {
                    b = b.with_imdsv1_fallback();
                }
            }
        }
        b.build().map_err(|e| {
            Error::config("invalid S3 configuration")
                .with_context("bucket", &self.bucket)
                .with_source(e)
        })
    }

    /// The bucket and prefix as a location stratalake-files reads and writes, with multipart
    /// uploads journaled (so abandoned ones are aborted).
    ///
    /// # Errors
    /// Config errors.
    pub fn location(&self) -> Result<StoreLocation> {
        Ok(StoreLocation::cloud(
            self.build_store()?,
            &format!("s3://{}", self.bucket),
            &self.prefix,
        ))
    }

    /// `s3://bucket/prefix`: how errors and reports name the location.
    pub fn url(&self) -> String {
        cloud_url(&format!("s3://{}", self.bucket), &self.prefix)
    }
}

/// S3's bucket naming rules: 3-63 characters of lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit.
fn validate_bucket(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "invalid bucket name: 3-63 lowercase letters, digits, `.` or `-`, starting and ending with a letter or digit",
        )
        .with_context("bucket", bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key_and_value() {
        let e = S3Config::new("Bad_Bucket").validate().unwrap_err();
        assert_eq!(e.context_value("bucket"), Some("Bad_Bucket"));
        let e = S3Config::new("raw")
            .with_endpoint("http://127.0.0.1:5000")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("allow_http"), "{e}");
        let e = S3Config::new("raw")
            .with_prefix("/x")
            .validate()
            .unwrap_err();
        assert_eq!(e.context_value("prefix"), Some("/x"));
        S3Config::local_server("raw", "http://127.0.0.1:5000")
            .validate()
            .unwrap();
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let yaml = "bucket: raw\ncredentials:\n  type: static\n  access_key_id: AKIDEXAMPLE\n  secret_access_key: s3cr3t-value\n  session_token: t0ken-value\n";
        let cfg: S3Config = serde_yaml_ng::from_str(yaml).unwrap();
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("s3cr3t-value") && !dbg.contains("t0ken-value"),
            "{dbg}"
        );
        assert!(dbg.contains("AKIDEXAMPLE"));
        let e = serde_yaml_ng::from_str::<S3Config>("bucket: raw\nregoin: x\n").unwrap_err();
        assert!(e.to_string().contains("regoin"), "{e}");
    }
}

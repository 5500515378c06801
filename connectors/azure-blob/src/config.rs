//! [`AzureBlobConfig`]: where the container is and how to authorize requests.

use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use stratalake_core::{Error, Result};
use stratalake_files::cloud::{HttpSettings, ObjectStoreHttp};
use stratalake_files::{StoreLocation, cloud_url};

/// Azurite's well-known development account.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Where Azurite listens by default.
pub const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000";

/// How requests are authorized.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum AzureCredentials {
    /// From the environment: `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`,
    /// `AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/`AZURE_TENANT_ID`, workload identity
    /// (`AZURE_FEDERATED_TOKEN_FILE`), else the managed identity.
    #[default]
    Environment,
    /// The storage account key (use `${VAR}` in YAML).
    AccountKey {
        /// The base64 account key.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        key: SecretString,
    },
    /// A shared access signature (the query string, with or without the leading `?`).
    Sas {
        /// The SAS token.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        token: SecretString,
    },
    /// A service principal's client secret (Microsoft Entra ID).
    ClientSecret {
        /// The tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        client_secret: SecretString,
    },
    /// The managed identity of the VM, container or function.
    ManagedIdentity {
        /// A user-assigned identity's client id (the system identity when absent).
        #[serde(default)]
        client_id: Option<String>,
        /// A custom identity endpoint.
        #[serde(default)]
        msi_endpoint: Option<String>,
    },
    /// Azurite's well-known development account and key (`account` defaults to
    /// `devstoreaccount1`, `endpoint` to `http://127.0.0.1:10000`).
    Emulator,
}

/// A container and prefix in an Azure storage account (or Azurite).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AzureBlobConfig {
    /// The storage account (default `devstoreaccount1` with emulator credentials).
    #[serde(default)]
    pub account: String,
    /// The container (required; in a Delta lake connection the table URL names it and this may
    /// be left out).
    #[serde(default)]
    pub container: String,
    /// The blob prefix everything is read from or written under (no leading `/`).
    #[serde(default)]
    pub prefix: String,
    /// A custom service endpoint (`http://127.0.0.1:10000` for Azurite); the public cloud's
    /// `https://<account>.blob.core.windows.net` when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How requests are authorized.
    #[serde(default)]
    pub credentials: AzureCredentials,
    /// Allow plain `http://` endpoints (local servers only; implied by emulator credentials).
    #[serde(default)]
    pub allow_http: bool,
    /// Timeouts and retries.
    #[serde(default)]
    pub http: HttpSettings,
}

impl AzureBlobConfig {
    /// A container of `account` with credentials from the environment.
    pub fn new(account: impl Into<String>, container: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            container: container.into(),
            prefix: String::new(),
            endpoint: None,
            credentials: AzureCredentials::Environment,
            allow_http: false,
            http: HttpSettings::default(),
        }
    }

    /// A container on Azurite at `endpoint` (`http://127.0.0.1:10000`) with the development
    /// account.
    pub fn emulator(container: impl Into<String>, endpoint: impl Into<String>) -> Self {
        let mut c = Self::new(EMULATOR_ACCOUNT, container);
        c.endpoint = Some(endpoint.into());
        c.credentials = AzureCredentials::Emulator;
        c.allow_http = true;
        c
    }

    /// Read and write under `prefix`.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Authorize with `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: AzureCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Use these timeouts and retries.
    #[must_use]
    pub fn with_http(mut self, http: HttpSettings) -> Self {
        self.http = http;
        self
    }

    /// The account name in effect.
    pub fn account_name(&self) -> &str {
        if self.account.is_empty() && matches!(self.credentials, AzureCredentials::Emulator) {
            EMULATOR_ACCOUNT
        } else {
            &self.account
        }
    }

    /// The service URL: `<endpoint>/<account>` for a custom endpoint (path-style, as Azurite
    /// serves), else `https://<account>.blob.core.windows.net`.
    pub fn service_url(&self) -> String {
        let endpoint = self.endpoint.clone().or_else(|| {
            matches!(self.credentials, AzureCredentials::Emulator)
                .then(|| EMULATOR_ENDPOINT.to_string())
        });
        match endpoint {
            Some(e) => format!("{}/{}", e.trim_end_matches('/'), self.account_name()),
            None => format!("https://{}.blob.core.windows.net", self.account_name()),
        }
    }

    fn http_allowed(&self) -> bool {
        self.allow_http || matches!(self.credentials, AzureCredentials::Emulator)
    }

    /// Check the config without I/O.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key and value at fault.
    pub fn validate(&self) -> Result<()> {
        let account = self.account_name();
        if !(3..=24).contains(&account.len())
            || !account
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(Error::config(
                "invalid storage account: 3-24 lowercase letters and digits",
            )
            .with_context("account", account));
        }
        let c = &self.container;
        let ok = (3..=63).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
            && !c.contains("--");
        if !ok {
            return Err(Error::config(
                "invalid container name: 3-63 lowercase letters, digits or single `-`, starting and ending with a letter or digit",
            )
            .with_context("container", c));
        }
        if self.prefix.starts_with('/') || self.prefix.contains("//") {
            return Err(Error::config(
                "`prefix` must not start with `/` or contain an empty segment",
            )
            .with_context("prefix", &self.prefix));
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(
                    Error::config("`endpoint` must be an http(s) URL").with_context("endpoint", e)
                );
            }
            if e.starts_with("http://") && !self.http_allowed() {
                return Err(Error::config(
                    "`endpoint` is plain http: set `allow_http: true` (local servers only)",
                )
                .with_context("endpoint", e));
            }
        }
        match &self.credentials {
            AzureCredentials::AccountKey { key } if key.expose_secret().is_empty() => {
                return Err(Error::config("account key credentials need `key`"));
            }
            AzureCredentials::Sas { token } if token.expose_secret().is_empty() => {
                return Err(Error::config("SAS credentials need `token`"));
            }
            AzureCredentials::ClientSecret {
                tenant_id,
                client_id,
                ..
            } if tenant_id.is_empty() || client_id.is_empty() => {
                return Err(Error::config(
                    "client secret credentials need `tenant_id` and `client_id`",
                ));
            }
            _ => {}
        }
        self.http.validate_for("an Azure Blob connection")
    }

    /// Emulator credentials at the Azurite URL object_store's emulator mode uses.
    fn azurite_default(&self) -> bool {
        let url = std::env::var("AZURITE_BLOB_STORAGE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:10000".to_string());
        matches!(self.credentials, AzureCredentials::Emulator)
            && self.account_name() == EMULATOR_ACCOUNT
            && self.endpoint.as_deref().map(|e| e.trim_end_matches('/'))
                == Some(url.trim_end_matches('/'))
    }

    /// The container as object_store's Azure client (no I/O until used).
    ///
    /// # Errors
    /// Config errors.
    pub fn build_store(&self) -> Result<MicrosoftAzure> {
        self.validate()?;
        let mut b = match self.credentials {
            AzureCredentials::Environment => MicrosoftAzureBuilder::from_env(),
            _ => MicrosoftAzureBuilder::new(),
        };
        b = b
            .with_account(self.account_name())
            .with_container_name(&self.container)
            .with_client_options(self.http.client_options(self.http_allowed()))
            .with_retry(self.http.retry_config());
        if self.azurite_default() {
            // object_store's emulator mode knows Azurite's quirks (it ignores `startFrom`, so
            // listings from an offset are filtered client-side; Delta logs rely on them). It
            // takes the URL from AZURITE_BLOB_STORAGE_URL, so it is used when that is the
            // endpoint configured.
            b = b.with_use_emulator(true);
        } else if self.endpoint.is_some() || matches!(self.credentials, AzureCredentials::Emulator)
        {
            b = b.with_endpoint(self.service_url());
        }
        match &self.credentials {
            AzureCredentials::Environment => {}
            AzureCredentials::AccountKey { key } => b = b.with_access_key(key.expose_secret()),
            AzureCredentials::Emulator => b = b.with_access_key(EMULATOR_KEY),
            AzureCredentials::Sas { token } => {
                b = b.with_config(
                    AzureConfigKey::SasKey,
                    token.expose_secret().trim_start_matches('?'),
                );
            }
            AzureCredentials::ClientSecret {
                tenant_id,
                client_id,
                client_secret,
            } => {
                b = b
                    .with_tenant_id(tenant_id)
                    .with_client_id(client_id)
                    .with_client_secret(client_secret.expose_secret());
            }
            AzureCredentials::ManagedIdentity {
                client_id,
                msi_endpoint,
            } => {
                if let Some(id) = client_id {
                    b = b.with_client_id(id);
                }
                if let Some(e) = msi_endpoint {
                    b = b.with_msi_endpoint(e);
                }
            }
        }
        b.build().map_err(|e| {
            Error::config("invalid Azure Blob configuration")
                .with_context("container", &self.container)
                .with_source(e)
        })
    }

    /// The container and prefix as a location stratalake-files reads and writes.
    ///
    /// # Errors
    /// Config errors.
    pub fn location(&self) -> Result<StoreLocation> {
        Ok(StoreLocation::cloud(
            self.build_store()?,
            &format!("az://{}/{}", self.account_name(), self.container),
            &self.prefix,
        ))
    }

    /// `az://account/container/prefix`: how errors and reports name the location.
    pub fn url(&self) -> String {
        cloud_url(
            &format!("az://{}/{}", self.account_name(), self.container),
            &self.prefix,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key_and_value() {
        let e = AzureBlobConfig::emulator("Lake", EMULATOR_ENDPOINT)
            .validate()
            .unwrap_err();
        assert_eq!(e.context_value("container"), Some("Lake"));
        let e = AzureBlobConfig::new("Bad-Account", "lake")
            .validate()
            .unwrap_err();
        assert_eq!(e.context_value("account"), Some("Bad-Account"));
        let mut c = AzureBlobConfig::new("acct", "lake");
        c.endpoint = Some("http://127.0.0.1:10000".into());
        assert!(c.validate().unwrap_err().to_string().contains("allow_http"));
        AzureBlobConfig::emulator("lake", EMULATOR_ENDPOINT)
            .validate()
            .unwrap();
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let yaml = "account: acct\ncontainer: lake\ncredentials:\n  type: client_secret\n  tenant_id: t\n  client_id: c\n  client_secret: sup3r-secret\n";
        let cfg: AzureBlobConfig = serde_yaml_ng::from_str(yaml).unwrap();
        assert!(!format!("{cfg:?}").contains("sup3r-secret"));
        let yaml = "account: acct\ncontainer: lake\ncredentials:\n  type: sas\n  token: sv=2024&sig=s1gnature\n";
        let cfg: AzureBlobConfig = serde_yaml_ng::from_str(yaml).unwrap();
        assert!(!format!("{cfg:?}").contains("s1gnature"));
    }
}

//! Connection settings: account, user, credentials, context, timeouts.

use secrecy::SecretString;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use stratalake_core::{Error, Result};

/// How to connect to Snowflake.
///
/// ```yaml
/// account: xy12345.eu-central-1       # the account identifier
/// user: STRATA_LOADER
/// auth: { type: key_pair, private_key_path: /secrets/rsa_key.p8, passphrase: "${KEY_PASS}" }
/// role: LOADER
/// warehouse: LOAD_WH
/// database: RETAIL
/// schema: GOLD
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SnowflakeConfig {
    /// The account identifier (`orgname-account`, or the legacy `locator.region`).
    pub account: String,
    /// Where the account answers. Default `https://<account>.snowflakecomputing.com`; a local
    /// server such as fakesnow in tests (`http://127.0.0.1:8085`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The login name.
    pub user: String,
    /// The credentials.
    pub auth: SnowflakeAuth,
    /// The role the session uses (the user's default when absent).
    #[serde(default)]
    pub role: Option<String>,
    /// The warehouse queries run on (the user's default when absent).
    #[serde(default)]
    pub warehouse: Option<String>,
    /// The database of the session (created by the sink when missing).
    pub database: String,
    /// The schema of the session (created by the sink when missing).
    pub schema: String,
    /// Time allowed for one HTTP request, seconds (default 60). Range: 1..=86_400.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 86_400>"
    )]
    pub request_timeout_secs: u64,
    /// Time allowed for a query to finish, polling included, seconds (default 3600). Range: 1..=604_800.
    #[serde(
        default = "default_query_timeout",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 604_800>"
    )]
    pub query_timeout_secs: u64,
    /// Retries of a request that failed transiently (HTTP 429/5xx, resets, timeouts), with
    /// jittered exponential backoff (default 5). Range: 0..=100.
    #[serde(
        default = "default_retries",
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 0, 100>"
    )]
    pub max_retries: usize,
    /// Extra session parameters sent at login (`TIMEZONE`, `QUERY_TAG`, ...).
    #[serde(default)]
    pub session_parameters: BTreeMap<String, serde_json::Value>,
}

fn default_request_timeout() -> u64 {
    60
}
fn default_query_timeout() -> u64 {
    3600
}
fn default_retries() -> usize {
    5
}

/// The credentials of a Snowflake user. Secrets are never printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SnowflakeAuth {
    /// User name and password.
    Password {
        /// The password.
        #[serde(deserialize_with = "stratalake_core::secrets::deserialize")]
        password: SecretString,
    },
    /// Key-pair authentication: a JWT signed with the user's RSA private key (PKCS#8 PEM,
    /// optionally encrypted, or PKCS#1 `RSA PRIVATE KEY`). Give the key or a path to it.
    KeyPair {
        /// The PEM text of the private key.
        #[serde(
            default,
            deserialize_with = "stratalake_core::secrets::deserialize_opt"
        )]
        private_key: Option<SecretString>,
        /// A file holding the PEM private key.
        #[serde(default)]
        private_key_path: Option<PathBuf>,
        /// The passphrase of an encrypted key.
        #[serde(
            default,
            deserialize_with = "stratalake_core::secrets::deserialize_opt"
        )]
        passphrase: Option<SecretString>,
    },
}

impl SnowflakeConfig {
    /// A configuration with password authentication and default timeouts.
    pub fn new(
        account: impl Into<String>,
        user: impl Into<String>,
        auth: SnowflakeAuth,
        database: impl Into<String>,
        schema: impl Into<String>,
    ) -> Self {
        Self {
            account: account.into(),
            base_url: None,
            user: user.into(),
            auth,
            role: None,
            warehouse: None,
            database: database.into(),
            schema: schema.into(),
            request_timeout_secs: default_request_timeout(),
            query_timeout_secs: default_query_timeout(),
            max_retries: default_retries(),
            session_parameters: BTreeMap::new(),
        }
    }

    /// Talk to this URL instead of `https://<account>.snowflakecomputing.com`.
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Use this role.
    #[must_use]
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Use this warehouse.
    #[must_use]
    pub fn with_warehouse(mut self, warehouse: impl Into<String>) -> Self {
        self.warehouse = Some(warehouse.into());
        self
    }

    /// Retry transient failures this many times.
    #[must_use]
    pub fn with_max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// The URL requests go to.
    pub fn url(&self) -> String {
        match &self.base_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{}.snowflakecomputing.com", self.account),
        }
    }

    /// The account name as JWT claims spell it: the part before the first `.`, upper case.
    pub fn account_name(&self) -> String {
        self.account
            .split('.')
            .next()
            .unwrap_or_default()
            .to_uppercase()
    }

    /// Check the settings without any I/O.
    ///
    /// # Errors
    /// Config, naming the setting at fault.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("account", &self.account),
            ("user", &self.user),
            ("database", &self.database),
            ("schema", &self.schema),
        ] {
            if v.trim().is_empty() {
                return Err(Error::config(format!("snowflake: `{key}` is empty")));
            }
        }
        let url = url::Url::parse(&self.url()).map_err(|e| {
            Error::config(format!("snowflake: base_url {:?} is not a URL", self.url()))
                .with_source(e)
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::config(format!(
                "snowflake: base_url {url} must be http(s)"
            )));
        }
        if let SnowflakeAuth::KeyPair {
            private_key,
            private_key_path,
            ..
        } = &self.auth
            && private_key.is_some() == private_key_path.is_some()
        {
            return Err(Error::config(
                "snowflake: key_pair auth needs exactly one of `private_key` and `private_key_path`",
            ));
        }
        if self.request_timeout_secs == 0 || self.query_timeout_secs == 0 {
            return Err(Error::config("snowflake: timeouts must be above zero"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_with_key_pair_and_secrets_hidden() {
        let cfg: SnowflakeConfig = serde_yaml_ng::from_str(
            "account: xy12345.eu-central-1\nuser: loader\nauth: { type: key_pair, private_key: \"-----BEGIN PRIVATE KEY-----\", passphrase: hunter2 }\ndatabase: RETAIL\nschema: GOLD\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.account_name(), "XY12345");
        assert_eq!(
            cfg.url(),
            "https://xy12345.eu-central-1.snowflakecomputing.com"
        );
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("BEGIN PRIVATE"), "{debug}");
    }

    #[test]
    fn validation_names_the_setting() {
        let cfg = SnowflakeConfig::new(
            "a",
            "u",
            SnowflakeAuth::KeyPair {
                private_key: None,
                private_key_path: None,
                passphrase: None,
            },
            "D",
            "S",
        );
        assert!(
            cfg.validate()
                .unwrap_err()
                .message()
                .contains("exactly one")
        );
        let cfg = SnowflakeConfig::new(
            "a",
            "u",
            SnowflakeAuth::Password {
                password: "p".into(),
            },
            "",
            "S",
        );
        assert!(cfg.validate().unwrap_err().message().contains("`database`"));
        let err: std::result::Result<SnowflakeConfig, _> = serde_yaml_ng::from_str(
            "account: a\nuser: u\nauth: { type: password, password: p }\ndatabase: D\nschema: S\nwarehose: W\n",
        );
        assert!(err.unwrap_err().to_string().contains("warehose"));
    }
}

//! Shared fixtures: a fakesnow session per test, in its own database.

#![allow(dead_code)]

use stratalake_snowflake::client::SnowflakeClient;
use stratalake_snowflake::config::{SnowflakeAuth, SnowflakeConfig};

/// fakesnow's URL (scripts/services.sh starts it on port 8085).
pub fn url() -> String {
    std::env::var("STRATA_SNOWFLAKE_URL").unwrap_or_else(|_| "http://127.0.0.1:8085".into())
}

/// A database name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{}_{}", prefix.to_uppercase(), rand_suffix())
}

fn rand_suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}", n % 0xffff_ffff)
}

/// Settings for fakesnow with a password, in `database`.`PUBLIC`.
pub fn config(database: &str) -> SnowflakeConfig {
    SnowflakeConfig::new(
        "fakesnow",
        "strata",
        SnowflakeAuth::Password {
            password: "not-checked-by-fakesnow".to_string().into(),
        },
        database,
        "PUBLIC",
    )
    .with_base_url(url())
    .with_max_retries(2)
}

/// A session with its database and schema created; fails loudly when fakesnow is down.
pub async fn session(database: &str) -> SnowflakeClient {
    let c = SnowflakeClient::connect(config(database))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "fakesnow at {} (scripts/services.sh start): {}",
                url(),
                e.report()
            )
        });
    c.query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
        .await
        .unwrap();
    c.query(&format!("CREATE SCHEMA IF NOT EXISTS {database}.PUBLIC"))
        .await
        .unwrap();
    c.query(&format!("USE SCHEMA {database}.PUBLIC"))
        .await
        .unwrap();
    c
}

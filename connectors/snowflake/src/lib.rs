#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod client;
pub mod config;
mod decode;
mod error;
mod jwt;
pub mod sink;
pub mod source;
mod stage;
mod types;

pub use client::SnowflakeClient;
pub use config::SnowflakeConfig;
/// A loaded key pair: its [`KeyPair::fingerprint`] is what `DESC USER` shows as
/// `RSA_PUBLIC_KEY_FP`, to check a key before the first login.
pub use jwt::KeyPair;
pub use sink::{SnowflakeSink, SnowflakeSinkConfig};
pub use source::{SnowflakeSource, SnowflakeSourceConfig};
/// Snowflake SQL quoting (`ident` double-quotes an identifier, `literal` single-quotes a
/// text) and the type an Arrow field loads as (`snowflake_type`).
pub use types::{ident, literal, snowflake_type};

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
pub use sink::{SnowflakeSink, SnowflakeSinkConfig};
pub use source::{SnowflakeSource, SnowflakeSourceConfig};
/// Snowflake SQL quoting: `ident` double-quotes an identifier, `literal` single-quotes a text.
pub use types::{ident, literal};

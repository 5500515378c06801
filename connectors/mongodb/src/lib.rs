#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod convert;
mod source;

pub use config::{MixedTypes, MongoIncremental, MongoSourceConfig, Query, ReadPreference};
pub use source::MongoSource;

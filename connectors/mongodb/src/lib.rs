#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod arrow_bson;
pub mod changes;
pub mod config;
pub mod convert;
mod sink;
mod source;

pub use config::{
    ChangeStreamConfig, FullDocument, HistoryLostPolicy, InitialPosition, MixedTypes,
    MongoIncremental, MongoSourceConfig, Query, ReadPreference,
};
pub use sink::{DeleteWhen, MongoSink, MongoSinkConfig, WriteMode};
pub use source::MongoSource;

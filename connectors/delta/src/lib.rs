#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod maintenance;
mod sink;
pub mod source;
mod table;

pub use config::{DeleteWhen, DeltaSinkConfig, SchemaEvolution, WriteMode};
/// The deltalake crate, for callers that build on its tables (gold's SQL).
pub use deltalake;
pub use sink::{DeltaSink, parquet_properties};
pub use source::DeltaSource;
pub use table::{TableLocation, delta_err};

#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod maintenance;
mod sink;
pub mod source;
mod table;

pub use config::{DeleteWhen, DeltaSinkConfig, DeltaWriteMode, SchemaEvolution};
pub use sink::DeltaSink;
pub use source::DeltaSource;
pub use table::TableLocation;

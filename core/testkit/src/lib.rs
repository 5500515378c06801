#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod assert;
pub mod conformance;
pub mod memory;
pub mod panics;
pub mod snowflake_sql;

pub use conformance::{SinkFixture, SourceFixture, check_sink, check_source};
pub use memory::{MemorySink, MemorySource, SinkFault};
pub use panics::{PanicAt, PanickingSink, PanickingSource, PanickingTransform, Trigger};

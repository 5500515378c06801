#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod conform;
pub mod explode;
pub mod retail;

pub use conform::{Check, Conform, ConformSpec, Rule};
pub use explode::Explode;

use strata_core::Result;
use strata_delta::{DeltaSink, DeltaSinkConfig, SchemaEvolution, TableLocation};

/// A silver sink: MERGE by `key`, the highest `version_column` winning (within an epoch and
/// across epochs), columns frozen to the declared schema.
///
/// # Errors
/// Config for invalid names.
pub fn silver_sink(
    table: TableLocation,
    key: &[&str],
    version_column: Option<&str>,
) -> Result<DeltaSink> {
    DeltaSink::try_new(
        table,
        DeltaSinkConfig::default()
            .with_merge(key, version_column)
            .with_schema_evolution(SchemaEvolution::Freeze),
    )
}

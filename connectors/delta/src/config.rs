//! Sink options.

use serde::Deserialize;
pub use stratalake_core::{DeleteWhen, SchemaEvolution};
use stratalake_core::{Error, Result};

pub use stratalake_core::WriteMode;

/// Options of a Delta sink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeltaSinkConfig {
    /// Partition columns of a table the sink creates.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// New columns.
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
    /// Data files are rolled at about this size. Range: 1..=16_384.
    #[serde(
        default = "default_file_size",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 16_384>"
    )]
    pub target_file_size_megabytes: u64,
    /// Append or MERGE.
    #[serde(default)]
    pub write: WriteMode,
    /// The memory a MERGE's deduplication sort and join may hold before they spill to the
    /// local temporary directory (an epoch of any size is staged as Parquet files in the
    /// table's store first, so this bounds memory, not the epoch). Range: 64..=1_048_576.
    #[serde(
        default = "default_merge_memory",
        alias = "merge_buffer_megabytes",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 64, 1_048_576>"
    )]
    pub merge_memory_megabytes: u64,
}

fn default_merge_memory() -> u64 {
    512
}

fn default_file_size() -> u64 {
    128
}

impl Default for DeltaSinkConfig {
    fn default() -> Self {
        Self {
            partition_by: Vec::new(),
            schema_evolution: SchemaEvolution::default(),
            target_file_size_megabytes: default_file_size(),
            write: WriteMode::Append,
            merge_memory_megabytes: default_merge_memory(),
        }
    }
}

impl DeltaSinkConfig {
    /// With partition columns.
    #[must_use]
    pub fn with_partition_by(mut self, cols: &[&str]) -> Self {
        self.partition_by = cols.iter().map(|c| (*c).to_string()).collect();
        self
    }

    /// With a schema evolution policy.
    #[must_use]
    pub fn with_schema_evolution(mut self, p: SchemaEvolution) -> Self {
        self.schema_evolution = p;
        self
    }

    /// MERGE by `key`, the highest `version_column` winning.
    #[must_use]
    pub fn with_merge(mut self, key: &[&str], version_column: Option<&str>) -> Self {
        self.write = WriteMode::Merge {
            key: key.iter().map(|k| (*k).to_string()).collect(),
            version_column: version_column.map(str::to_string),
            delete_when: None,
        };
        self
    }

    /// With the memory a MERGE may hold before spilling.
    #[must_use]
    pub fn with_merge_memory_megabytes(mut self, mb: u64) -> Self {
        self.merge_memory_megabytes = mb;
        self
    }

    /// With the target file size.
    #[must_use]
    pub fn with_target_file_size_megabytes(mut self, mb: u64) -> Self {
        self.target_file_size_megabytes = mb;
        self
    }

    /// Check without I/O.
    ///
    /// # Errors
    /// Config naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.target_file_size_megabytes == 0 {
            return Err(Error::config(
                "`target_file_size_megabytes` must be at least 1",
            ));
        }
        if let WriteMode::Merge {
            key,
            version_column,
            delete_when,
        } = &self.write
        {
            let names = key
                .iter()
                .chain(version_column.as_ref())
                .chain(delete_when.as_ref().map(|d| &d.column));
            if key.is_empty() {
                return Err(Error::config("`write.key` needs at least one column"));
            }
            for n in names {
                if !is_plain_identifier(n) {
                    return Err(Error::config(
                        "MERGE columns must be names of letters, digits and underscores",
                    )
                    .with_context("column", n));
                }
            }
        }
        Ok(())
    }
}

/// A column name usable unquoted in MERGE predicates.
pub(crate) fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

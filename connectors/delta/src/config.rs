//! Sink options.

use serde::Deserialize;
use strata_core::{Error, Result};

/// What happens to columns the table does not have yet.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SchemaEvolution {
    /// Add them to the table (nullable) in a metadata commit before the data.
    #[default]
    AddColumns,
    /// Refuse the epoch with a Schema error naming them.
    Freeze,
    /// Drop them from the rows written.
    Discard,
}

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
    /// Data files are rolled at about this size.
    #[serde(default = "default_file_size")]
    pub target_file_size_megabytes: u64,
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
        Ok(())
    }
}

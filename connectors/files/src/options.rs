//! Configuration of file sources and the Parquet sink: serde structs (YAML-ready, unknown keys
//! rejected) whose doc comments are the user documentation.

use serde::{Deserialize, Serialize};
use stratalake_core::{Error, Result};
pub use stratalake_records::schema::{
    ColumnSpec, SchemaSource, TypeDriftPolicy, UnknownFieldPolicy, data_type_name, explicit_schema,
    parse_data_type,
};

/// The format of input files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Format {
    /// Newline-delimited JSON: one object per line.
    Ndjson,
    /// Comma-separated values with a header line. Values must not contain newlines (so files
    /// can be split at line boundaries).
    Csv(CsvOptions),
    /// Apache Parquet.
    Parquet,
}

/// CSV dialect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// The field delimiter (one ASCII character).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Whether the first line of each file is a header.
    #[serde(default = "yes")]
    pub header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: ',',
            header: true,
        }
    }
}

fn default_delimiter() -> char {
    ','
}
fn yes() -> bool {
    true
}

/// Compression of input files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Compression {
    /// From the file name: `.gz` is gzip, `.zst`/`.zstd` is zstd, anything else is plain.
    #[default]
    Auto,
    /// Plain bytes.
    None,
    /// gzip (multi-member files too).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The compression of `path` under this setting.
    pub fn resolve(self, path: &str) -> Compression {
        match self {
            Compression::Auto if path.ends_with(".gz") || path.ends_with(".gzip") => {
                Compression::Gzip
            }
            Compression::Auto if path.ends_with(".zst") || path.ends_with(".zstd") => {
                Compression::Zstd
            }
            Compression::Auto => Compression::None,
            other => other,
        }
    }
}

/// How the directory layout under the root maps to columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Partitioning {
    /// Directories are only paths.
    #[default]
    None,
    /// Hive style: each `key=value/` directory becomes a column `key` (percent-decoded;
    /// `__HIVE_DEFAULT_PARTITION__` is null). Its type is the schema's column of that name when
    /// the schema is explicit, else text. Every file must have the same keys in the same order.
    Hive,
}

/// How incremental runs find new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ListingMode {
    /// List everything under the root each run; read files that are new or whose version
    /// (ETag, or size and modification time) changed. The cursor holds every file's version.
    #[default]
    Full,
    /// For layouts where new files always sort after old ones (`dt=2024-01-02/...`,
    /// timestamped names): list only keys after the last one read (S3 `start-after`, Azure
    /// marker). Files changed or added below that key are not seen. The cursor holds one key.
    StartAfter,
}

/// What to do with a file that cannot be read at all (a corrupt Parquet footer, a truncated
/// gzip stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CorruptFilePolicy {
    /// Stop the run with an error naming the file.
    #[default]
    Fail,
    /// Record the file in quarantine (its key, the line where reading broke, the reason) and go
    /// on; the records before the break are kept.
    Quarantine,
}

/// What to do, in `full` listing, with a file that changed since its last commit other than by
/// growing (a rewrite, a truncation, a new Parquet file under an old name).
///
/// A plain NDJSON or CSV file that only grew (its committed bytes unchanged, checked by size
/// and a checksum of the committed bytes' first and last 64 KiB, and the committed part ending
/// at a newline) is never "changed": only the appended lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangedFilePolicy {
    /// Stop the run with an error naming the file: nothing is read twice behind your back.
    #[default]
    Fail,
    /// Leave the file alone (its new content is not read) and say so in the log.
    Skip,
    /// Read the whole file again; every row carries the file's version in a
    /// `_source_version` column, so a downstream merge can keep the newest version of a row.
    Reread,
}

/// The column a `reread` file source adds: the version (ETag, or size and modification time)
/// of the file each row was read from.
pub const SOURCE_VERSION_COLUMN: &str = "_source_version";

/// Configuration of a file source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The root directory (`./data`, `/abs/path`, `file:///abs/path`). Left empty when a
    /// connector (S3, Azure) gives the location.
    #[serde(default)]
    pub root: String,
    /// Glob patterns, relative to the root, of the files to read (default: every file).
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Glob patterns of files to skip (files and directories starting with `_` or `.` are
    /// always skipped).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The file format.
    pub format: Format,
    /// Input compression.
    #[serde(default)]
    pub compression: Compression,
    /// The schema: inferred (default) or explicit.
    #[serde(default)]
    pub schema: SchemaSource,
    /// What to do with a value of the wrong type.
    #[serde(default)]
    pub type_drift: TypeDriftPolicy,
    /// What to do with fields not in the schema (NDJSON).
    #[serde(default)]
    pub unknown_fields: UnknownFieldPolicy,
    /// Plain NDJSON and CSV files bigger than this are read as several byte ranges in parallel. Range: 1..=1_048_576.
    #[serde(
        default = "default_split_megabytes",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 1_048_576>"
    )]
    pub split_size_megabytes: u64,
    /// The longest record (line) accepted, in bytes (1..=1 GiB, default 16 MiB, as DuckDB's
    /// `maximum_object_size`). A longer line is quarantined with its file, line, byte offset,
    /// size and the first KiB of its text, and reading goes on. Range: 1..=1_073_741_824.
    #[serde(
        default = "default_max_record_bytes",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 1_073_741_824>"
    )]
    pub max_record_bytes: u64,
    /// The deepest nesting of objects and arrays accepted in an NDJSON record (1..=1024,
    /// default 64). A deeper record is quarantined before any decoder sees it. Range: 1..=1024.
    #[serde(
        default = "default_max_nesting_depth",
        deserialize_with = "stratalake_core::bounds::u32_in::<_, 1, 1024>"
    )]
    pub max_nesting_depth: u32,
    /// The most bytes one compressed file may expand to. Range: 1..=1_125_899_906_842_624.
    #[serde(
        default = "default_max_decompressed_bytes",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 1_125_899_906_842_624>"
    )]
    pub max_decompressed_bytes: u64,
    /// Directory partitions as columns.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// How incremental runs find new files.
    #[serde(default)]
    pub listing: ListingMode,
    /// What to do with a file that cannot be read.
    #[serde(default)]
    pub on_corrupt_file: CorruptFilePolicy,
    /// Read files behind symbolic links that lead outside the root (local roots; links inside
    /// the root are always read). Off by default: a link out of the root is skipped with a
    /// warning.
    #[serde(default)]
    pub follow_symlinks: bool,
    /// A file changed other than by growing (see [`ChangedFilePolicy`]).
    #[serde(default)]
    pub on_changed_file: ChangedFilePolicy,
}

fn default_include() -> Vec<String> {
    vec!["**".to_string()]
}
fn default_split_megabytes() -> u64 {
    32
}
fn default_max_record_bytes() -> u64 {
    16 << 20
}
fn default_max_nesting_depth() -> u32 {
    stratalake_records::decode::DEFAULT_NESTING_DEPTH
}
fn default_max_decompressed_bytes() -> u64 {
    64 << 30
}

impl FileSourceConfig {
    /// A config for `root` in `format` with every other setting at its default.
    pub fn new(root: impl Into<String>, format: Format) -> Self {
        Self {
            root: root.into(),
            include: default_include(),
            exclude: Vec::new(),
            format,
            compression: Compression::default(),
            schema: SchemaSource::default(),
            type_drift: TypeDriftPolicy::default(),
            unknown_fields: UnknownFieldPolicy::default(),
            split_size_megabytes: default_split_megabytes(),
            max_record_bytes: default_max_record_bytes(),
            max_nesting_depth: default_max_nesting_depth(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
            partitioning: Partitioning::default(),
            listing: ListingMode::default(),
            on_corrupt_file: CorruptFilePolicy::default(),
            follow_symlinks: false,
            on_changed_file: ChangedFilePolicy::default(),
        }
    }

    /// Check the config without I/O (the root is checked by whoever resolves it).
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key and value at fault.
    pub fn validate(&self) -> Result<()> {
        for g in self.include.iter().chain(&self.exclude) {
            globset::Glob::new(g).map_err(|e| {
                Error::config("invalid glob")
                    .with_context("glob", g)
                    .with_source(e)
            })?;
        }
        if self.split_size_megabytes == 0 {
            return Err(Error::config("`split_size_megabytes` must be at least 1"));
        }
        if let Format::Csv(c) = &self.format
            && !c.delimiter.is_ascii()
        {
            return Err(
                Error::config("the CSV `delimiter` must be one ASCII character")
                    .with_context("delimiter", c.delimiter),
            );
        }
        if let SchemaSource::Explicit(cols) = &self.schema {
            explicit_schema(cols)?;
        }
        Ok(())
    }
}

/// Configuration of the Parquet sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// The root directory the table is written under. Left empty when a connector (S3, Azure)
    /// gives the location.
    #[serde(default)]
    pub root: String,
    /// Columns whose values lay the table out in Hive directories
    /// (`country=DE/dt=2024-01-01/part-....parquet`). The columns are taken out of the files
    /// (readers get them back from the path); values are percent-encoded, nulls are
    /// `__HIVE_DEFAULT_PARTITION__`.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Files are closed once they reach about this size. Range: 1..=16_384.
    #[serde(
        default = "default_target_file_megabytes",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 16_384>"
    )]
    pub target_file_size_megabytes: u64,
    /// Rows per Parquet row group at most. Range: 1..=16_777_216.
    #[serde(
        default = "default_row_group_rows",
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 1, 16_777_216>"
    )]
    pub row_group_rows: usize,
    /// The zstd level (1-22).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Files written in parallel (0: one per core). Range: 0..=1024.
    #[serde(
        default,
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 0, 1024>"
    )]
    pub write_concurrency: usize,
    /// Files bigger than this are uploaded in parts of this size (at least 5, S3's minimum). Range: 5..=5120.
    #[serde(
        default = "default_part_megabytes",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 5, 5120>"
    )]
    pub upload_part_size_megabytes: u64,
    /// Parts of one file uploaded at once. Upload memory is at most part size times
    /// (this + 1) per open file. Range: 1..=256.
    #[serde(
        default = "default_upload_concurrency",
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 1, 256>"
    )]
    pub upload_concurrency: usize,
    /// Files open at once per writer lane when writing partitions; the biggest is closed to
    /// open another. Range: 1..=65_536.
    #[serde(
        default = "default_max_open_files",
        deserialize_with = "stratalake_core::bounds::usize_in::<_, 1, 65_536>"
    )]
    pub max_open_files: usize,
    /// Staging files and multipart uploads of attempts idle this long are deleted or aborted
    /// by the next run. Must be longer than the longest epoch (a live concurrent run keeps its
    /// files). Range: 0..=31_536_000.
    #[serde(
        default = "default_abandoned_after_secs",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 0, 31_536_000>"
    )]
    pub abandoned_after_secs: u64,
}

fn default_part_megabytes() -> u64 {
    8
}
fn default_upload_concurrency() -> usize {
    4
}
fn default_max_open_files() -> usize {
    16
}
fn default_abandoned_after_secs() -> u64 {
    3600
}

fn default_target_file_megabytes() -> u64 {
    128
}
fn default_row_group_rows() -> usize {
    122_880
}
fn default_zstd_level() -> i32 {
    1
}

impl ParquetSinkConfig {
    /// A config writing under `root` with the defaults.
    pub fn new(root: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            target_file_size_megabytes: default_target_file_megabytes(),
            row_group_rows: default_row_group_rows(),
            zstd_level: default_zstd_level(),
            write_concurrency: 0,
            partition_by: Vec::new(),
            upload_part_size_megabytes: default_part_megabytes(),
            upload_concurrency: default_upload_concurrency(),
            max_open_files: default_max_open_files(),
            abandoned_after_secs: default_abandoned_after_secs(),
        }
    }

    /// Check the config without I/O.
    ///
    /// # Errors
    /// [`stratalake_core::ErrorKind::Config`] naming the key.
    pub fn validate(&self) -> Result<()> {
        if !(1..=22).contains(&self.zstd_level) {
            return Err(Error::config("`zstd_level` must be 1..=22")
                .with_context("zstd_level", self.zstd_level));
        }
        if self.target_file_size_megabytes == 0 || self.row_group_rows == 0 {
            return Err(Error::config(
                "`target_file_size_megabytes` and `row_group_rows` must be at least 1",
            ));
        }
        if !(5..=5 * 1024).contains(&self.upload_part_size_megabytes) {
            return Err(
                Error::config("`upload_part_size_megabytes` must be 5..=5120").with_context(
                    "upload_part_size_megabytes",
                    self.upload_part_size_megabytes,
                ),
            );
        }
        if self.upload_concurrency == 0 || self.max_open_files == 0 {
            return Err(Error::config(
                "`upload_concurrency` and `max_open_files` must be at least 1",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.partition_by {
            if c.is_empty() || c.contains(['/', '=']) || !seen.insert(c) {
                return Err(Error::config(
                    "`partition_by` names each column once, without `/` or `=`",
                )
                .with_context("column", c));
            }
        }
        Ok(())
    }
}

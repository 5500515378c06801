//! Configuration of file sources and the Parquet sink: serde structs (YAML-ready, unknown keys
//! rejected) whose doc comments are the user documentation.

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use strata_core::{Error, Result};

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

/// What to do with a value whose type does not match its column (a number column that
/// sometimes holds a string).
///
/// In YAML, `type_drift: null` (unquoted, which YAML reads as a null value rather than the
/// word) means [`TypeDriftPolicy::Null`], as it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TypeDriftPolicy {
    /// Send the whole record to quarantine, with the column and value in the reason.
    #[default]
    Quarantine,
    /// Keep the record with that value set to null (counted as coerced).
    Null,
    /// Stop the run with an error naming the file, line, column and value.
    Fail,
}

impl<'de> Deserialize<'de> for TypeDriftPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("null") => Ok(Self::Null),
            Some("quarantine") => Ok(Self::Quarantine),
            Some("fail") => Ok(Self::Fail),
            Some(other) => Err(serde::de::Error::unknown_variant(
                other,
                &["quarantine", "null", "fail"],
            )),
        }
    }
}

/// What to do with fields that are not in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnknownFieldPolicy {
    /// Drop them from the record (counted as coerced, reported once per field).
    #[default]
    Ignore,
    /// Send the record to quarantine.
    Quarantine,
    /// Stop the run with an error naming the file, line and field.
    Fail,
}

/// Where the schema comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SchemaSource {
    /// Inferred from the first records of the first files (bounded).
    Infer {
        /// Records sampled at most.
        #[serde(default = "default_sample_records")]
        sample_records: usize,
        /// Bytes sampled at most.
        #[serde(default = "default_sample_bytes")]
        sample_bytes: u64,
    },
    /// Declared: `name: type` per column, types as in [`parse_data_type`]; every column is
    /// nullable unless its type ends with `not null`.
    Explicit(Vec<ColumnSpec>),
}

impl SchemaSource {
    /// An explicit schema from `(name, type)` pairs, e.g. `strata_datagen::orders_schema()`.
    pub fn explicit<'a>(columns: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        SchemaSource::Explicit(
            columns
                .into_iter()
                .map(|(n, t)| ColumnSpec {
                    name: n.to_string(),
                    data_type: t.to_string(),
                })
                .collect(),
        )
    }
}

impl Default for SchemaSource {
    fn default() -> Self {
        SchemaSource::Infer {
            sample_records: default_sample_records(),
            sample_bytes: default_sample_bytes(),
        }
    }
}

fn default_sample_records() -> usize {
    10_000
}
fn default_sample_bytes() -> u64 {
    8 << 20
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The column name.
    pub name: String,
    /// Its type, e.g. `int64`, `utf8`, `timestamp`, `decimal(18,2)`, `list<struct<sku: utf8>>`,
    /// optionally followed by `not null`.
    #[serde(rename = "type")]
    pub data_type: String,
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
        deserialize_with = "strata_core::bounds::u64_in::<_, 1, 1_048_576>"
    )]
    pub split_size_megabytes: u64,
    /// The longest record (line) accepted, in bytes (1..=1 GiB, default 16 MiB, as DuckDB's
    /// `maximum_object_size`). A longer line is quarantined with its file, line, byte offset,
    /// size and the first KiB of its text, and reading goes on. Range: 1..=1_073_741_824.
    #[serde(
        default = "default_max_record_bytes",
        deserialize_with = "strata_core::bounds::u64_in::<_, 1, 1_073_741_824>"
    )]
    pub max_record_bytes: u64,
    /// The deepest nesting of objects and arrays accepted in an NDJSON record (1..=1024,
    /// default 64). A deeper record is quarantined before any decoder sees it. Range: 1..=1024.
    #[serde(
        default = "default_max_nesting_depth",
        deserialize_with = "strata_core::bounds::u32_in::<_, 1, 1024>"
    )]
    pub max_nesting_depth: u32,
    /// The most bytes one compressed file may expand to. Range: 1..=1_125_899_906_842_624.
    #[serde(
        default = "default_max_decompressed_bytes",
        deserialize_with = "strata_core::bounds::u64_in::<_, 1, 1_125_899_906_842_624>"
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
    crate::decode::DEFAULT_NESTING_DEPTH
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
    /// [`strata_core::ErrorKind::Config`] naming the key and value at fault.
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

/// Build an Arrow schema from declared columns.
///
/// # Errors
/// [`strata_core::ErrorKind::Config`] naming the column and type at fault.
pub fn explicit_schema(cols: &[ColumnSpec]) -> Result<SchemaRef> {
    if cols.is_empty() {
        return Err(Error::config(
            "an explicit schema needs at least one column",
        ));
    }
    let fields = cols
        .iter()
        .map(|c| {
            let (ty, nullable) = match c.data_type.trim().strip_suffix("not null") {
                Some(t) => (t.trim(), false),
                None => (c.data_type.trim(), true),
            };
            let dt = parse_data_type(ty).map_err(|e| e.with_context("column", &c.name))?;
            Ok(Field::new(&c.name, dt, nullable))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Parse a type name: `bool`, `int8`..`int64`, `uint8`..`uint64`, `float32`, `float64`,
/// `utf8` (or `string`), `large_utf8`, `binary`, `date` (date32), `timestamp` (microseconds,
/// UTC), `timestamp_ms`, `timestamp_ntz` (no zone), `decimal(p,s)`, `list<T>`,
/// `struct<name: T, ...>`.
///
/// # Errors
/// [`strata_core::ErrorKind::Config`] naming the type.
pub fn parse_data_type(s: &str) -> Result<DataType> {
    let mut p = TypeParser {
        s: s.as_bytes(),
        i: 0,
        src: s,
        depth: 0,
    };
    let t = p.parse()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the type"));
    }
    Ok(t)
}

/// The type name [`parse_data_type`] reads back as `dt` (`int64`, `list<struct<sku: utf8>>`,
/// `timestamp`), for printing an inferred schema as a declaration; `None` for a type the
/// declaration syntax cannot name.
pub fn data_type_name(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Boolean => "bool".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Utf8 => "utf8".into(),
        DataType::LargeUtf8 => "large_utf8".into(),
        DataType::Binary => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "+00:00" => {
            "timestamp".into()
        }
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "+00:00" => {
            "timestamp_ms".into()
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::List(f) => format!("list<{}>", data_type_name(f.data_type())?),
        DataType::Struct(fields) => {
            let parts = fields
                .iter()
                .map(|f| {
                    let ok = !f.name().is_empty()
                        && f.name()
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    ok.then(|| data_type_name(f.data_type()).map(|t| format!("{}: {t}", f.name())))
                        .flatten()
                })
                .collect::<Option<Vec<_>>>()?;
            format!("struct<{}>", parts.join(", "))
        }
        _ => return None,
    })
}

struct TypeParser<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
    depth: u32,
}

/// The deepest `list<...>`/`struct<...>` nesting a declared type may have.
pub const MAX_TYPE_DEPTH: u32 = 64;

impl TypeParser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::config(format!("invalid type: {what}"))
            .with_context("type", crate::decode::truncate(self.src, 120))
            .with_context("at", self.i)
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn ident(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        self.src[start..self.i].to_ascii_lowercase()
    }
    fn expect(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", c as char)))
        }
    }
    fn number(&mut self) -> Result<i64> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'-') {
            self.i += 1;
        }
        self.src[start..self.i]
            .parse()
            .map_err(|_| self.err("expected a number"))
    }
    fn parse(&mut self) -> Result<DataType> {
        self.depth += 1;
        if self.depth > MAX_TYPE_DEPTH {
            return Err(self.err(&format!("nested deeper than {MAX_TYPE_DEPTH} levels")));
        }
        let t = self.parse_inner();
        self.depth -= 1;
        t
    }
    fn parse_inner(&mut self) -> Result<DataType> {
        let name = self.ident();
        Ok(match name.as_str() {
            "bool" | "boolean" => DataType::Boolean,
            "int8" => DataType::Int8,
            "int16" => DataType::Int16,
            "int32" | "int" => DataType::Int32,
            "int64" | "bigint" | "long" => DataType::Int64,
            "uint8" => DataType::UInt8,
            "uint16" => DataType::UInt16,
            "uint32" => DataType::UInt32,
            "uint64" => DataType::UInt64,
            "float32" | "float" => DataType::Float32,
            "float64" | "double" => DataType::Float64,
            "utf8" | "string" | "text" => DataType::Utf8,
            "large_utf8" => DataType::LargeUtf8,
            "binary" => DataType::Binary,
            "date" | "date32" => DataType::Date32,
            "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            "timestamp_ms" => DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "decimal" | "decimal128" => {
                self.expect(b'(')?;
                let p = self.number()?;
                self.expect(b',')?;
                let s = self.number()?;
                self.expect(b')')?;
                let p = u8::try_from(p)
                    .ok()
                    .filter(|p| (1..=38).contains(p))
                    .ok_or_else(|| self.err("precision must be 1..=38"))?;
                let s = i8::try_from(s).map_err(|_| self.err("scale out of range"))?;
                DataType::Decimal128(p, s)
            }
            "list" => {
                self.expect(b'<')?;
                let inner = self.parse()?;
                self.expect(b'>')?;
                DataType::List(Arc::new(Field::new("item", inner, true)))
            }
            "struct" => {
                self.expect(b'<')?;
                let mut fields = Vec::new();
                loop {
                    let fname = {
                        self.ws();
                        let start = self.i;
                        while self.i < self.s.len() && !matches!(self.s[self.i], b':' | b' ') {
                            self.i += 1;
                        }
                        self.src[start..self.i].to_string()
                    };
                    if fname.is_empty() {
                        return Err(self.err("expected a field name"));
                    }
                    self.expect(b':')?;
                    let t = self.parse()?;
                    fields.push(Field::new(fname, t, true));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'>') => {
                            self.i += 1;
                            break;
                        }
                        _ => return Err(self.err("expected `,` or `>`")),
                    }
                }
                DataType::Struct(Fields::from(fields))
            }
            "" => return Err(self.err("expected a type name")),
            other => return Err(self.err(&format!("unknown type `{other}`"))),
        })
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
        deserialize_with = "strata_core::bounds::u64_in::<_, 1, 16_384>"
    )]
    pub target_file_size_megabytes: u64,
    /// Rows per Parquet row group at most. Range: 1..=16_777_216.
    #[serde(
        default = "default_row_group_rows",
        deserialize_with = "strata_core::bounds::usize_in::<_, 1, 16_777_216>"
    )]
    pub row_group_rows: usize,
    /// The zstd level (1-22).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Files written in parallel (0: one per core). Range: 0..=1024.
    #[serde(
        default,
        deserialize_with = "strata_core::bounds::usize_in::<_, 0, 1024>"
    )]
    pub write_concurrency: usize,
    /// Files bigger than this are uploaded in parts of this size (at least 5, S3's minimum). Range: 5..=5120.
    #[serde(
        default = "default_part_megabytes",
        deserialize_with = "strata_core::bounds::u64_in::<_, 5, 5120>"
    )]
    pub upload_part_size_megabytes: u64,
    /// Parts of one file uploaded at once. Upload memory is at most part size times
    /// (this + 1) per open file. Range: 1..=256.
    #[serde(
        default = "default_upload_concurrency",
        deserialize_with = "strata_core::bounds::usize_in::<_, 1, 256>"
    )]
    pub upload_concurrency: usize,
    /// Files open at once per writer lane when writing partitions; the biggest is closed to
    /// open another. Range: 1..=65_536.
    #[serde(
        default = "default_max_open_files",
        deserialize_with = "strata_core::bounds::usize_in::<_, 1, 65_536>"
    )]
    pub max_open_files: usize,
    /// Staging files and multipart uploads of attempts idle this long are deleted or aborted
    /// by the next run. Must be longer than the longest epoch (a live concurrent run keeps its
    /// files). Range: 0..=31_536_000.
    #[serde(
        default = "default_abandoned_after_secs",
        deserialize_with = "strata_core::bounds::u64_in::<_, 0, 31_536_000>"
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
    /// [`strata_core::ErrorKind::Config`] naming the key.
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

#[cfg(test)]
mod tests {
    #[test]
    fn type_names_read_back_as_the_same_type() {
        for t in [
            "bool",
            "int64",
            "float64",
            "utf8",
            "date",
            "timestamp",
            "timestamp_ntz",
            "decimal(12,2)",
            "list<struct<sku: utf8, qty: int32>>",
        ] {
            let dt = super::parse_data_type(t).unwrap();
            assert_eq!(super::data_type_name(&dt).as_deref(), Some(t));
        }
    }

    use super::*;

    #[test]
    fn parses_nested_types() {
        let t =
            parse_data_type("list<struct<sku: utf8, qty: int64, price: decimal(12,2)>>").unwrap();
        let DataType::List(f) = t else { panic!("list") };
        let DataType::Struct(fields) = f.data_type() else {
            panic!("struct")
        };
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[2].data_type(), &DataType::Decimal128(12, 2));
        assert_eq!(
            parse_data_type("timestamp").unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
    }

    #[test]
    fn bad_types_name_the_column() {
        let e = explicit_schema(&[ColumnSpec {
            name: "qty".into(),
            data_type: "int65".into(),
        }])
        .unwrap_err();
        assert_eq!(e.context_value("column"), Some("qty"));
        assert!(e.to_string().contains("unknown type `int65`"), "{e}");
        let s = explicit_schema(&[ColumnSpec {
            name: "id".into(),
            data_type: "int64 not null".into(),
        }])
        .unwrap();
        assert!(!s.field(0).is_nullable());
    }
}

//! Line-oriented decoders (NDJSON and CSV) that isolate bad records.
//!
//! The fast path decodes a whole chunk of lines with arrow-json or arrow-csv. When that fails,
//! the chunk is searched 16 ways at a time: parts that decode are kept, failing parts are split
//! again, and a single line that fails alone is diagnosed and handled by the declared policy
//! (quarantine, null, fail). A clean chunk costs one decode; a chunk with bad lines about 2.5
//! (a 16-way search re-decodes far less than bisection when bad lines are dense). After a dirty
//! chunk the reader skips the doomed whole-chunk attempt for the next one.

use crate::schema::{TypeDriftPolicy, UnknownFieldPolicy};
use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Field, SchemaRef};
use serde_json::Value;
use stratalake_core::{Error, ErrorKind};

/// What to do with one line that fails to decode alone.
#[derive(Debug)]
pub enum Verdict {
    /// Reject it with this reason (and the column at fault, if any).
    Reject {
        /// Why.
        reason: String,
        /// The column at fault.
        column: Option<String>,
    },
    /// Decode these bytes instead (a value set to null by policy); `coerced` values changed.
    Replace {
        /// The line to decode instead.
        bytes: Vec<u8>,
        /// Values changed.
        coerced: u64,
    },
    /// Stop the run.
    Fail(Error),
    /// Nothing is wrong with it: decode it as it is.
    Accept,
}

/// Why the screen set a line aside before any decoding (see [`screen_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// Nested deeper than the limit (the depth reached).
    TooDeep(u32),
    /// A second value after the record on the same line.
    Trailing,
    /// The record does not end on its line (an open string, object or array).
    Unterminated,
    /// Not valid UTF-8 (the byte offset of the first bad byte within the line).
    InvalidUtf8(usize),
    /// Holds a number with a fraction or an exponent: checked against integer columns.
    Fraction,
}

/// A record format whose records are lines.
pub trait LineFormat: Send {
    /// Decode whole lines into batches; fails on the first bad record.
    fn decode(&mut self, bytes: &[u8], lenient: bool) -> Result<Vec<RecordBatch>, ArrowError>;
    /// Why one line fails.
    fn diagnose(&self, line: &[u8], err: &ArrowError) -> Verdict;
    /// The unknown field named by an error, when unknown fields are ignored by policy and the
    /// fast path may retry leniently.
    fn ignorable_unknown_field(&self, err: &ArrowError) -> Option<String>;
    /// Lines to set aside before decoding (sorted by line), with why.
    fn screen(&self, _chunk: &[u8]) -> Vec<(usize, Flag)> {
        Vec::new()
    }
    /// What to do with a line the screen set aside.
    fn judge(&self, line: &[u8], flag: Flag) -> Verdict {
        flag_verdict(line, flag)
    }
}

/// The verdict for a flag that is never a valid record.
fn flag_verdict(line: &[u8], flag: Flag) -> Verdict {
    let reason = match flag {
        Flag::TooDeep(d) => format!(
            "the record is nested {d} levels deep, over `max_nesting_depth` (which may be raised up to {MAX_NESTING_DEPTH})"
        ),
        Flag::Trailing => {
            "more than one JSON value on the line (NDJSON holds one record per line)".into()
        }
        Flag::Unterminated => {
            "malformed CSV record: a quoted value does not end on its line".into()
        }
        Flag::InvalidUtf8(at) => format!(
            "invalid UTF-8 at byte {at} of the line (the raw bytes are kept base64-encoded)"
        ),
        Flag::Fraction => return Verdict::Accept,
    };
    let _ = line;
    Verdict::Reject {
        reason,
        column: None,
    }
}

/// The deepest nesting `max_nesting_depth` may allow: deeper values would risk the decoders'
/// stacks.
pub const MAX_NESTING_DEPTH: u32 = 1024;
/// The default `max_nesting_depth`.
pub const DEFAULT_NESTING_DEPTH: u32 = 64;

/// Screen a chunk of NDJSON lines in one pass, before arrow-json sees them: lines nested
/// deeper than `max_depth`, lines holding a second value or a record that does not end on the
/// line, invalid UTF-8, and lines where a number with a fraction or an exponent follows a key
/// named in `integer_keys` (the names of the schema's integer fields, at any depth). arrow-json
/// would otherwise overflow the stack, read two rows from one line, join two lines into one row,
/// or truncate `1.5` into an integer column.
///
/// Strings are skipped with `memchr`, so the cost is mostly the structural bytes.
pub fn screen_json(chunk: &[u8], max_depth: u32, integer_keys: &[Vec<u8>]) -> Vec<(usize, Flag)> {
    let mut flags = Vec::new();
    let utf8_ok = std::str::from_utf8(chunk).is_ok();
    let n = chunk.len();
    let (mut line, mut line_start) = (0usize, 0usize);
    let (mut depth, mut deepest) = (0u32, 0u32);
    let (mut in_str, mut closed, mut trailing, mut fraction) = (false, false, false, false);
    // The last string's bytes, and the key a value belongs to (the string before a `:`).
    let (mut str_start, mut str_end, mut key) = (0usize, 0usize, (0usize, 0usize));
    let mut end_line =
        |line: usize, bytes: &[u8], open: bool, deepest: u32, trailing: bool, fraction: bool| {
            let flag = if deepest > max_depth {
                Some(Flag::TooDeep(deepest))
            } else if !utf8_ok && let Err(e) = std::str::from_utf8(bytes) {
                Some(Flag::InvalidUtf8(e.valid_up_to()))
            } else if open {
                Some(Flag::Unterminated)
            } else if trailing {
                Some(Flag::Trailing)
            } else if fraction {
                Some(Flag::Fraction)
            } else {
                None
            };
            if let Some(f) = flag {
                flags.push((line, f));
            }
        };
    let mut i = 0;
    while i < n {
        if in_str {
            // Jump to the next quote, backslash or newline.
            let Some(k) = memchr::memchr3(b'"', b'\\', b'\n', &chunk[i..]) else {
                break;
            };
            i += k;
            match chunk[i] {
                b'\\' => {
                    // An escape takes the next byte, unless that byte ends the line.
                    i += if chunk.get(i + 1).is_some_and(|b| *b != b'\n') {
                        2
                    } else {
                        1
                    };
                }
                b'"' => {
                    in_str = false;
                    str_end = i;
                    if depth == 0 {
                        closed = true;
                    }
                    i += 1;
                }
                _ => {
                    // A newline ends the line even inside a string.
                    end_line(
                        line,
                        &chunk[line_start..i],
                        true,
                        deepest,
                        trailing,
                        fraction,
                    );
                    (line, line_start) = (line + 1, i + 1);
                    (depth, deepest, in_str, closed, trailing, fraction) =
                        (0, 0, false, false, false, false);
                    i += 1;
                }
            }
            continue;
        }
        let b = chunk[i];
        match b {
            b'\n' => {
                end_line(
                    line,
                    &chunk[line_start..i],
                    depth > 0,
                    deepest,
                    trailing,
                    fraction,
                );
                (line, line_start) = (line + 1, i + 1);
                (depth, deepest, closed, trailing, fraction) = (0, 0, false, false, false);
            }
            b' ' | b'\t' | b'\r' => {}
            _ if closed && depth == 0 => trailing = true,
            b'"' => {
                in_str = true;
                str_start = i + 1;
            }
            b':' => key = (str_start, str_end),
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    closed = true;
                }
            }
            b'.' | b'e' | b'E'
                if !fraction
                    && !integer_keys.is_empty()
                    && i > 0
                    && chunk[i - 1].is_ascii_digit()
                    && key.1 >= key.0
                    && integer_keys
                        .iter()
                        .any(|k| k.as_slice() == &chunk[key.0..key.1]) =>
            {
                fraction = true;
            }
            _ => {}
        }
        i += 1;
    }
    if line_start < n {
        end_line(
            line,
            &chunk[line_start..],
            in_str || depth > 0,
            deepest,
            trailing,
            fraction,
        );
    }
    flags
}

/// The names of the integer fields of `fields`, at any depth (list items and struct fields).
pub fn integer_keys(fields: &arrow_schema::Fields) -> Vec<Vec<u8>> {
    fn walk(name: &str, dt: &DataType, out: &mut Vec<Vec<u8>>) {
        match dt {
            d if d.is_integer() && !out.iter().any(|k| k == name.as_bytes()) => {
                out.push(name.as_bytes().to_vec());
            }
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                // A list's numbers follow the list's own key.
                walk(name, f.data_type(), out);
            }
            DataType::Struct(fs) => {
                for f in fs {
                    walk(f.name(), f.data_type(), out);
                }
            }
            DataType::Map(f, _) => walk(name, f.data_type(), out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for f in fields {
        walk(f.name(), f.data_type(), &mut out);
    }
    out
}

/// A rejected line, relative to its chunk.
#[derive(Debug)]
pub struct Rejected {
    /// The line within the chunk (0-based).
    pub line_in_chunk: u64,
    /// The line as it was (base64 with a `base64:` prefix when not UTF-8).
    pub raw: String,
    /// Why.
    pub reason: String,
    /// The column at fault.
    pub column: Option<String>,
}

/// The result of decoding one chunk.
#[derive(Debug, Default)]
pub struct ChunkOutput {
    /// The rows decoded, in line order.
    pub batches: Vec<RecordBatch>,
    /// The lines rejected.
    pub rejected: Vec<Rejected>,
    /// Values changed by policy (set to null, unknown fields dropped).
    pub coerced: u64,
    /// Unknown fields dropped by policy.
    pub unknown_fields: Vec<String>,
}

/// Decode a chunk of whole lines. `Err` carries the line (within the chunk) of a fatal record.
///
/// # Errors
/// A record the policy says stops the run, with its line within the chunk.
pub fn decode_chunk(
    fmt: &mut dyn LineFormat,
    chunk: &[u8],
    expect_dirty: bool,
) -> Result<ChunkOutput, (u64, Error)> {
    let mut out = ChunkOutput::default();
    let flags = fmt.screen(chunk);
    match if expect_dirty || !flags.is_empty() {
        Err(ArrowError::JsonError(String::new()))
    } else {
        fmt.decode(chunk, false)
            .and_then(|b| one_row_per_line(chunk, b))
    } {
        Ok(batches) => {
            out.batches = batches;
            return Ok(out);
        }
        Err(e) => {
            if !expect_dirty
                && flags.is_empty()
                && let Some(field) = fmt.ignorable_unknown_field(&e)
                && let Ok(batches) = fmt
                    .decode(chunk, true)
                    .and_then(|b| one_row_per_line(chunk, b))
            {
                out.batches = batches;
                out.coerced += 1;
                out.unknown_fields.push(field);
                return Ok(out);
            }
        }
    }
    // Slow path: search over lines.
    let mut starts = Vec::with_capacity(1024);
    starts.push(0usize);
    starts.extend(memchr::memchr_iter(b'\n', chunk).map(|i| i + 1));
    if *starts.last().unwrap_or(&0) != chunk.len() {
        starts.push(chunk.len());
    }
    split_search(fmt, chunk, &starts, &flags, 0, starts.len() - 1, &mut out)?;
    Ok(out)
}

/// `batches` when they hold one row per non-blank line of `bytes`; otherwise an error, so the
/// lines are searched one by one: a decoder that joined two lines into one record, read two
/// records from one line or skipped a line must never make a row appear or vanish.
fn one_row_per_line(
    bytes: &[u8],
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut lines = memchr::memchr_iter(b'\n', bytes).count();
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        lines += 1;
    }
    if rows == lines {
        return Ok(batches);
    }
    let non_blank = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    if rows == non_blank {
        Ok(batches)
    } else {
        Err(ArrowError::ParseError(format!(
            "the decoder read {rows} records from {non_blank} lines"
        )))
    }
}

const FANOUT: usize = 16;

/// Decode lines `lo..hi` of a range known to fail, in up to 16 parts.
/// Lines set aside by the screen are never decoded with others: a range holding one is split
/// until the line stands alone, then judged.
fn split_search(
    fmt: &mut dyn LineFormat,
    chunk: &[u8],
    starts: &[usize],
    flags: &[(usize, Flag)],
    lo: usize,
    hi: usize,
    out: &mut ChunkOutput,
) -> Result<(), (u64, Error)> {
    let n = hi - lo;
    let step = n.div_ceil(FANOUT).max(1);
    let mut a = lo;
    while a < hi {
        let b = (a + step).min(hi);
        let first_flag = flags.partition_point(|(l, _)| *l < a);
        let flagged = flags.get(first_flag).filter(|(l, _)| *l < b);
        let bytes = &chunk[starts[a]..starts[b]];
        match flagged {
            Some((_, flag)) if b - a == 1 => match fmt.judge(trim_line(bytes), *flag) {
                Verdict::Accept => match fmt
                    .decode(bytes, true)
                    .and_then(|b| one_row_per_line(bytes, b))
                {
                    Ok(batches) => out.batches.extend(batches),
                    Err(e) => handle_line(fmt, bytes, a, &e, out)?,
                },
                v => apply_verdict(fmt, bytes, a, v, out)?,
            },
            Some(_) => split_search(fmt, chunk, starts, flags, a, b, out)?,
            None => match fmt
                .decode(bytes, true)
                .and_then(|b| one_row_per_line(bytes, b))
            {
                Ok(batches) => out.batches.extend(batches),
                Err(e) if b - a == 1 => handle_line(fmt, bytes, a, &e, out)?,
                Err(_) => split_search(fmt, chunk, starts, flags, a, b, out)?,
            },
        }
        a = b;
    }
    Ok(())
}

fn handle_line(
    fmt: &mut dyn LineFormat,
    bytes: &[u8],
    lo: usize,
    err: &ArrowError,
    out: &mut ChunkOutput,
) -> Result<(), (u64, Error)> {
    let line = trim_line(bytes);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let verdict = match std::str::from_utf8(line) {
        Err(e) => flag_verdict(line, Flag::InvalidUtf8(e.valid_up_to())),
        Ok(_) => fmt.diagnose(line, err),
    };
    apply_verdict(fmt, bytes, lo, verdict, out)
}

fn apply_verdict(
    fmt: &mut dyn LineFormat,
    bytes: &[u8],
    lo: usize,
    verdict: Verdict,
    out: &mut ChunkOutput,
) -> Result<(), (u64, Error)> {
    let line = trim_line(bytes);
    match verdict {
        Verdict::Accept => out.rejected.push(Rejected {
            line_in_chunk: lo as u64,
            raw: stratalake_core::quarantine::raw_text(line),
            reason: "rejected by the decoder".into(),
            column: None,
        }),
        Verdict::Reject { reason, column } => {
            out.rejected.push(Rejected {
                line_in_chunk: lo as u64,
                raw: stratalake_core::quarantine::raw_text(line),
                reason,
                column,
            });
        }
        Verdict::Replace {
            bytes: fixed,
            coerced,
        } => match fmt.decode(&fixed, true).and_then(|b| {
            // The nulled record must still be exactly one row.
            if b.iter().map(RecordBatch::num_rows).sum::<usize>() == 1 {
                Ok(b)
            } else {
                Err(ArrowError::ParseError(
                    "the nulled record is not one row".into(),
                ))
            }
        }) {
            Ok(b) => {
                out.batches.extend(b);
                out.coerced += coerced;
            }
            Err(e) => out.rejected.push(Rejected {
                line_in_chunk: lo as u64,
                raw: stratalake_core::quarantine::raw_text(line),
                reason: format!("still invalid after nulling the drifting values: {e}"),
                column: None,
            }),
        },
        Verdict::Fail(e) => {
            return Err((
                lo as u64,
                e.with_context("raw", truncate(&String::from_utf8_lossy(line), 200)),
            ));
        }
    }
    Ok(())
}

fn trim_line(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// `s` cut to at most `max` bytes (at a character boundary), with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        format!("{}…", &s[..s.floor_char_boundary(max)])
    }
}

/// NDJSON through arrow-json.
pub struct JsonFormat {
    /// The schema rows are decoded to.
    pub schema: SchemaRef,
    /// Rows per batch.
    pub batch_size: usize,
    /// A value of another type.
    pub drift: TypeDriftPolicy,
    /// A field the schema does not have.
    pub unknown: UnknownFieldPolicy,
    /// Lines nested deeper are quarantined before decoding.
    pub max_depth: u32,
    /// The names of the schema's integer fields: a fraction after one of these keys is checked.
    pub integers: Vec<Vec<u8>>,
    /// Decoders kept between chunks (strict, lenient): their buffers are reused, which saves
    /// the regrowth of the tape on every chunk. A decoder that failed is dropped.
    pub cached: [Option<arrow_json::reader::Decoder>; 2],
}

impl std::fmt::Debug for JsonFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonFormat")
            .field("schema", &self.schema)
            .field("batch_size", &self.batch_size)
            .field("drift", &self.drift)
            .field("unknown", &self.unknown)
            .field("max_depth", &self.max_depth)
            .finish_non_exhaustive()
    }
}

impl JsonFormat {
    /// NDJSON to `schema` in batches of `batch_size` rows, with these policies.
    pub fn new(
        schema: SchemaRef,
        batch_size: usize,
        drift: TypeDriftPolicy,
        unknown: UnknownFieldPolicy,
    ) -> Self {
        let integers = integer_keys(schema.fields());
        Self {
            schema,
            batch_size,
            drift,
            unknown,
            max_depth: DEFAULT_NESTING_DEPTH,
            integers,
            cached: [None, None],
        }
    }
}

impl JsonFormat {
    /// Quarantine records nested deeper than `depth` (at most [`MAX_NESTING_DEPTH`]).
    #[must_use]
    pub fn with_max_depth(mut self, depth: u32) -> Self {
        self.max_depth = depth.clamp(1, MAX_NESTING_DEPTH);
        self
    }
}

impl LineFormat for JsonFormat {
    fn decode(&mut self, bytes: &[u8], lenient: bool) -> Result<Vec<RecordBatch>, ArrowError> {
        let strict = !(lenient && self.unknown == UnknownFieldPolicy::Ignore);
        let slot = usize::from(!strict);
        let mut dec = match self.cached[slot].take() {
            Some(d) => d,
            None => arrow_json::ReaderBuilder::new(self.schema.clone())
                .with_batch_size(self.batch_size)
                .with_coerce_primitive(true)
                .with_strict_mode(strict)
                .build_decoder()?,
        };
        let out = Self::run(&mut dec, bytes)?;
        self.cached[slot] = Some(dec);
        Ok(out)
    }

    fn ignorable_unknown_field(&self, err: &ArrowError) -> Option<String> {
        self.unknown_field(err)
    }

    fn diagnose(&self, line: &[u8], err: &ArrowError) -> Verdict {
        self.diagnose_line(line, Some(err))
    }

    fn screen(&self, chunk: &[u8]) -> Vec<(usize, Flag)> {
        screen_json(chunk, self.max_depth, &self.integers)
    }

    fn judge(&self, line: &[u8], flag: Flag) -> Verdict {
        match flag {
            // Decodable as it is unless a fraction meets an integer column (type drift).
            Flag::Fraction => self.diagnose_line(line, None),
            Flag::Unterminated => Verdict::Reject {
                reason: "malformed JSON: the record does not end on its line (an unterminated string, object or array)".into(),
                column: None,
            },
            f => flag_verdict(line, f),
        }
    }
}

impl JsonFormat {
    fn run(
        dec: &mut arrow_json::reader::Decoder,
        bytes: &[u8],
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < bytes.len() {
            let n = dec.decode(&bytes[off..])?;
            off += n;
            if off < bytes.len() {
                match dec.flush()? {
                    Some(b) => out.push(b),
                    None if n == 0 => {
                        return Err(ArrowError::JsonError("the decoder made no progress".into()));
                    }
                    None => {}
                }
            }
        }
        if dec.has_partial_record() {
            return Err(ArrowError::JsonError("the last record is truncated".into()));
        }
        if let Some(b) = dec.flush()? {
            out.push(b);
        }
        Ok(out)
    }

    fn unknown_field(&self, err: &ArrowError) -> Option<String> {
        if self.unknown != UnknownFieldPolicy::Ignore {
            return None;
        }
        let msg = err.to_string();
        let start = msg.find("column '")? + "column '".len();
        let rest = &msg[start..];
        rest.find("' missing from schema")
            .map(|end| rest[..end].to_string())
    }

    /// Why `line` fails (`err` from the decoder), or, without `err`, whether it has values
    /// that do not fit ([`Verdict::Accept`] when none).
    fn diagnose_line(&self, line: &[u8], err: Option<&ArrowError>) -> Verdict {
        let mut value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                return Verdict::Reject {
                    reason: format!("malformed JSON: {e}"),
                    column: None,
                };
            }
        };
        let Value::Object(map) = &value else {
            return Verdict::Reject {
                reason: "not a JSON object".into(),
                column: None,
            };
        };
        if self.unknown != UnknownFieldPolicy::Ignore
            && let Some(k) = map.keys().find(|k| self.schema.field_with_name(k).is_err())
        {
            let reason = format!("unknown field `{k}` (not in the schema)");
            return match self.unknown {
                UnknownFieldPolicy::Fail => Verdict::Fail(
                    Error::new(ErrorKind::Schema, reason)
                        .with_context("column", k)
                        .with_context("hint", "add it to the schema or set unknown_fields: ignore"),
                ),
                _ => Verdict::Reject {
                    reason,
                    column: Some(k.clone()),
                },
            };
        }
        let mut problems = Vec::new();
        for f in self.schema.fields() {
            check(
                f,
                map.get(f.name()).unwrap_or(&Value::Null),
                &mut vec![PathSeg::Key(f.name().clone())],
                &mut problems,
            );
        }
        let Some(first) = problems.first() else {
            return match err {
                Some(err) => Verdict::Reject {
                    reason: format!("rejected by the decoder: {err}"),
                    column: None,
                },
                None => Verdict::Accept,
            };
        };
        let column = first.path_string();
        let reason = format!("column `{column}`: {}", first.what);
        match self.drift {
            TypeDriftPolicy::Quarantine => Verdict::Reject {
                reason,
                column: Some(column),
            },
            TypeDriftPolicy::Fail => Verdict::Fail(
                Error::new(ErrorKind::Schema, reason)
                    .with_context("column", &column)
                    .with_context("value", &first.value),
            ),
            TypeDriftPolicy::Null => {
                if problems.iter().any(|p| p.required) {
                    return Verdict::Reject {
                        reason,
                        column: Some(column),
                    };
                }
                for p in &problems {
                    set_null(&mut value, &p.path);
                }
                Verdict::Replace {
                    bytes: serde_json::to_vec(&value).unwrap_or_default(),
                    coerced: problems.len() as u64,
                }
            }
        }
    }
}

#[derive(Clone)]
enum PathSeg {
    Key(String),
    Index(usize),
}

struct Problem {
    path: Vec<PathSeg>,
    what: String,
    value: String,
    required: bool,
}

impl Problem {
    fn path_string(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            match seg {
                PathSeg::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                PathSeg::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

fn show(v: &Value) -> String {
    truncate(&v.to_string(), 80)
}

/// Find values that do not fit the field's type (what arrow-json would reject).
fn check(field: &Field, v: &Value, path: &mut Vec<PathSeg>, out: &mut Vec<Problem>) {
    let mut bad = |what: String, required: bool| {
        out.push(Problem {
            path: path.clone(),
            what,
            value: show(v),
            required,
        })
    };
    if v.is_null() {
        if !field.is_nullable() {
            bad("required value is null or missing".into(), true);
        }
        return;
    }
    let dt = field.data_type();
    let ok = match dt {
        DataType::Boolean => v.is_boolean(),
        // A fraction is lossy: `1.5` is type drift, never 1. An integral float (`2.0`,
        // `1e3`) is exact below 2^53.
        d if d.is_integer() => {
            v.is_i64()
                || v.is_u64()
                || v.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15)
                || v.as_str().is_some_and(|s| s.trim().parse::<i128>().is_ok())
        }
        d if d.is_floating()
            || matches!(d, DataType::Decimal128(..) | DataType::Decimal256(..)) =>
        {
            v.is_number() || v.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok())
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            !v.is_object() && !v.is_array()
        }
        DataType::Timestamp(..) => {
            v.is_i64()
                || v.as_str()
                    .is_some_and(|s| arrow_cast::parse::string_to_datetime(&chrono::Utc, s).is_ok())
        }
        DataType::Date32 | DataType::Date64 => {
            v.is_i64()
                || v.as_str()
                    .is_some_and(|s| s.parse::<chrono::NaiveDate>().is_ok())
        }
        DataType::List(inner) | DataType::LargeList(inner) => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(PathSeg::Index(i));
                    check(inner, item, path, out);
                    path.pop();
                }
                true
            }
            None => false,
        },
        DataType::Struct(fields) => match v.as_object() {
            Some(obj) => {
                for f in fields {
                    path.push(PathSeg::Key(f.name().clone()));
                    check(f, obj.get(f.name()).unwrap_or(&Value::Null), path, out);
                    path.pop();
                }
                true
            }
            None => false,
        },
        _ => true,
    };
    if !ok {
        out.push(Problem {
            path: path.clone(),
            what: format!("expected {dt}, found {}", show(v)),
            value: show(v),
            required: false,
        });
    }
}

fn set_null(v: &mut Value, path: &[PathSeg]) {
    let Some((first, rest)) = path.split_first() else {
        *v = Value::Null;
        return;
    };
    let child = match (first, v) {
        (PathSeg::Key(k), Value::Object(m)) => m.get_mut(k),
        (PathSeg::Index(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    };
    if let Some(c) = child {
        set_null(c, rest);
    }
}

/// CSV through arrow-csv. Values must not contain newlines.
#[derive(Debug)]
pub struct CsvFormat {
    /// The schema rows are decoded to.
    pub schema: SchemaRef,
    /// Rows per batch.
    pub batch_size: usize,
    /// The field delimiter.
    pub delimiter: u8,
    /// A value of another type.
    pub drift: TypeDriftPolicy,
}

/// Screen a chunk of CSV lines: a line with an odd number of quotes opens a quoted value it
/// does not close (arrow-csv would join it with the next line into one record), and invalid
/// UTF-8 is kept exactly.
pub fn screen_csv(chunk: &[u8]) -> Vec<(usize, Flag)> {
    let utf8_ok = std::str::from_utf8(chunk).is_ok();
    if utf8_ok && memchr::memchr(b'"', chunk).is_none() {
        return Vec::new();
    }
    let mut flags = Vec::new();
    for (i, line) in chunk.split(|b| *b == b'\n').enumerate() {
        if !utf8_ok && let Err(e) = std::str::from_utf8(line) {
            flags.push((i, Flag::InvalidUtf8(e.valid_up_to())));
        } else if memchr::memchr_iter(b'"', line).count() % 2 == 1 {
            flags.push((i, Flag::Unterminated));
        }
    }
    flags
}

impl LineFormat for CsvFormat {
    fn screen(&self, chunk: &[u8]) -> Vec<(usize, Flag)> {
        screen_csv(chunk)
    }

    fn decode(&mut self, bytes: &[u8], _lenient: bool) -> Result<Vec<RecordBatch>, ArrowError> {
        let mut dec = arrow_csv::ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_batch_size(self.batch_size)
            .build_decoder();
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            let n = dec.decode(&bytes[off..])?;
            off += n;
            if n == 0 || off >= bytes.len() {
                if let Some(b) = dec.flush()? {
                    out.push(b);
                }
                if off >= bytes.len() {
                    // Signal end of input, then flush what that completed.
                    dec.decode(&[])?;
                    if let Some(b) = dec.flush()? {
                        out.push(b);
                    }
                    break;
                }
            }
        }
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    fn ignorable_unknown_field(&self, _err: &ArrowError) -> Option<String> {
        None
    }

    fn diagnose(&self, _line: &[u8], err: &ArrowError) -> Verdict {
        let msg = err.to_string();
        // arrow-csv names the column by index: "... for column 2 at line 0 ..."
        let column = msg
            .split("for column ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| self.schema.fields().get(i).map(|f| f.name().clone()));
        let reason = match &column {
            Some(c) => format!(
                "column `{c}`: {}",
                msg.split(". Row data").next().unwrap_or(&msg)
            ),
            None => format!("malformed CSV record: {msg}"),
        };
        match self.drift {
            TypeDriftPolicy::Fail => {
                let mut e = Error::new(ErrorKind::Schema, reason);
                if let Some(c) = column {
                    e = e.with_context("column", c);
                }
                Verdict::Fail(e)
            }
            _ => Verdict::Reject { reason, column },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Schema;
    use std::sync::Arc;

    fn json(drift: TypeDriftPolicy) -> JsonFormat {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("qty", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        JsonFormat::new(schema, 2, drift, UnknownFieldPolicy::Ignore)
    }

    #[test]
    fn bad_lines_are_isolated_with_reasons() {
        let data = b"{\"id\":1,\"qty\":2}\n{\"id\":2,\"qty\":\"lots\"}\n{\"id\":3\n{\"id\":4,\"name\":5,\"extra\":true}\n{\"qty\":1}\n";
        let out = decode_chunk(&mut json(TypeDriftPolicy::Quarantine), data, false)
            .map_err(|(_, e)| e)
            .unwrap();
        let rows: usize = out.batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(
            rows, 2,
            "lines 0 and 3 are good (a number into a text column is coerced, an unknown field ignored)"
        );
        let lines: Vec<u64> = out.rejected.iter().map(|r| r.line_in_chunk).collect();
        assert_eq!(lines, vec![1, 2, 4]);
        assert_eq!(out.rejected[0].column.as_deref(), Some("qty"));
        assert!(
            out.rejected[0]
                .reason
                .contains("expected Int64, found \"lots\""),
            "{}",
            out.rejected[0].reason
        );
        assert!(
            out.rejected[1].reason.starts_with("malformed JSON"),
            "{}",
            out.rejected[1].reason
        );
        assert_eq!(out.rejected[1].raw, "{\"id\":3");
        assert!(
            out.rejected[2].reason.contains("required value is null"),
            "{}",
            out.rejected[2].reason
        );
    }

    #[test]
    fn null_policy_keeps_the_record() {
        let out = decode_chunk(
            &mut json(TypeDriftPolicy::Null),
            b"{\"id\":2,\"qty\":\"lots\"}\n",
            true,
        )
        .map_err(|(_, e)| e)
        .unwrap();
        assert_eq!(
            out.batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            1
        );
        assert_eq!(out.coerced, 1);
        assert!(out.batches[0].column(1).is_null(0));
    }

    fn rows(out: &ChunkOutput) -> usize {
        out.batches.iter().map(RecordBatch::num_rows).sum()
    }

    #[test]
    fn poison_lines_are_screened_before_decoding() {
        let deep = format!(
            "{{\"id\":1,\"name\":{}1{}}}",
            "[".repeat(30_000),
            "]".repeat(30_000)
        );
        let data = format!(
            "{{\"id\":1}}\n{deep}\n{{\"id\":2}}{{\"id\":3}}\n{{\"id\":4,\"name\":\"a\n{{\"id\":5}}\n"
        );
        let mut bytes = data.into_bytes();
        bytes.extend_from_slice(b"{\"id\":6,\"name\":\"\xff\xfe\"}\n{\"id\":7}\n");
        let out = decode_chunk(&mut json(TypeDriftPolicy::Quarantine), &bytes, false)
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(rows(&out), 3, "ids 1, 5 and 7");
        let why: Vec<(u64, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.line_in_chunk, r.reason.as_str()))
            .collect();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(
            why[0].1.contains("nested 30001 levels") && why[0].0 == 1,
            "{why:?}"
        );
        assert!(
            why[1].1.contains("more than one JSON value") && why[1].0 == 2,
            "{why:?}"
        );
        assert!(
            why[2].1.contains("does not end on its line") && why[2].0 == 3,
            "{why:?}"
        );
        assert!(
            why[3].1.contains("invalid UTF-8") && why[3].0 == 5,
            "{why:?}"
        );
        let raw = &out.rejected[3].raw;
        use base64::Engine as _;
        let back = base64::engine::general_purpose::STANDARD
            .decode(raw.strip_prefix("base64:").unwrap())
            .unwrap();
        assert_eq!(
            back, b"{\"id\":6,\"name\":\"\xff\xfe\"}",
            "raw bytes kept exactly"
        );
    }

    #[test]
    fn fractions_into_integer_columns_are_type_drift_not_truncation() {
        let data = b"{\"id\":1,\"qty\":1.5}\n{\"id\":2,\"qty\":-2.7}\n{\"id\":7.9}\n{\"id\":3,\"qty\":2.0}\n{\"id\":4,\"qty\":1e2}\n";
        let out = decode_chunk(&mut json(TypeDriftPolicy::Quarantine), data, false)
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(rows(&out), 2, "2.0 and 1e2 are exact");
        let cols: Vec<_> = out
            .rejected
            .iter()
            .map(|r| r.column.clone().unwrap())
            .collect();
        assert_eq!(cols, ["qty", "qty", "id"]);
        let out = decode_chunk(&mut json(TypeDriftPolicy::Null), data, false)
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(
            rows(&out),
            4,
            "qty nulled twice; a fractional id is required: rejected"
        );
        assert_eq!(out.coerced, 2);
        let qty: Vec<Option<i64>> = out
            .batches
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .unwrap()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(qty, [None, None, Some(2), Some(100)]);
        assert!(decode_chunk(&mut json(TypeDriftPolicy::Fail), data, false).is_err());
    }

    #[test]
    fn a_csv_line_that_is_only_a_byte_order_mark_is_rejected_not_lost() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Utf8, true),
        ]));
        let mut f = CsvFormat {
            schema,
            batch_size: 4,
            delimiter: b',',
            drift: TypeDriftPolicy::Quarantine,
        };
        let out = decode_chunk(&mut f, b"\n\xEF\xBB\xBF", false)
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!((rows(&out), out.rejected.len()), (0, 1));
    }

    #[test]
    fn fail_policy_names_column_and_value() {
        let Err((line, e)) = decode_chunk(
            &mut json(TypeDriftPolicy::Fail),
            b"{\"id\":1}\n{\"id\":2,\"qty\":\"lots\"}\n",
            false,
        ) else {
            panic!("must fail")
        };
        assert_eq!(line, 1);
        assert_eq!(e.context_value("column"), Some("qty"));
        assert_eq!(e.context_value("value"), Some("\"lots\""));
    }
}

/// A record rejected by [`JsonRecordDecoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// The record's index in the decoded input (0-based).
    pub index: u64,
    /// Its raw text.
    pub raw: String,
    /// Why, naming the column and value.
    pub reason: String,
    /// The column at fault, if one is.
    pub column: Option<String>,
}

/// What [`JsonRecordDecoder::decode`] made of some records.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct DecodedRecords {
    /// The good records, in batches of at most the batch size.
    pub batches: Vec<RecordBatch>,
    /// The bad ones, with reasons.
    pub rejected: Vec<RejectedRecord>,
    /// Values nulled or fields dropped by policy.
    pub coerced: u64,
    /// Fields not in the schema that were ignored.
    pub unknown_fields: Vec<String>,
}

/// JSON records (one per line) to Arrow with the NDJSON source's policies and bad-record
/// isolation: for connectors whose records are JSON but not files (REST pages, documents).
pub struct JsonRecordDecoder {
    format: JsonFormat,
    dirty: bool,
}

impl std::fmt::Debug for JsonRecordDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonRecordDecoder")
            .field("schema", &self.format.schema)
            .finish()
    }
}

impl JsonRecordDecoder {
    /// A decoder into `schema`.
    pub fn new(
        schema: SchemaRef,
        batch_size: usize,
        drift: TypeDriftPolicy,
        unknown: UnknownFieldPolicy,
    ) -> Self {
        Self {
            format: JsonFormat::new(schema, batch_size, drift, unknown),
            dirty: false,
        }
    }

    /// Decode records, one JSON object per line (no line may contain a raw newline).
    ///
    /// # Errors
    /// A record that fails under the `fail` policy: the error carries its index as
    /// `record` context.
    pub fn decode(&mut self, lines: &[u8]) -> stratalake_core::Result<DecodedRecords> {
        let out = decode_chunk(&mut self.format, lines, self.dirty)
            .map_err(|(i, e)| e.with_context("record", i))?;
        self.dirty = !out.rejected.is_empty();
        Ok(DecodedRecords {
            batches: out.batches,
            rejected: out
                .rejected
                .into_iter()
                .map(|r| RejectedRecord {
                    index: r.line_in_chunk,
                    raw: r.raw,
                    reason: r.reason,
                    column: r.column,
                })
                .collect(),
            coerced: out.coerced,
            unknown_fields: out.unknown_fields,
        })
    }
}

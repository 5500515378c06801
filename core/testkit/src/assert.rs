//! Batch assertions: compare batches as pretty-printed tables, in order or as sorted rows.

use arrow_array::RecordBatch;
use arrow_cast::pretty::pretty_format_batches;

/// The batches as a pretty-printed table, one line per string.
///
/// # Panics
/// If the batches cannot be formatted.
pub fn table_lines(batches: &[RecordBatch]) -> Vec<String> {
    pretty_format_batches(batches)
        .expect("batches format")
        .to_string()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The rows of the table, formatted and sorted, without the header and borders: an
/// order-insensitive fingerprint of the contents.
///
/// # Panics
/// If the batches cannot be formatted.
pub fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Vec::new();
    }
    let lines = table_lines(batches);
    // +---+ header +---+ rows... +---+
    let mut rows: Vec<String> = lines
        .into_iter()
        .skip(3)
        .filter(|l| !l.starts_with('+'))
        .collect();
    rows.sort();
    rows
}

/// Assert that `batches` pretty-print exactly as `expected` (lines of an arrow table).
#[macro_export]
macro_rules! assert_batches_eq {
    ($expected:expr, $batches:expr) => {{
        let expected: Vec<String> = $expected.iter().map(|s: &&str| s.to_string()).collect();
        let actual = $crate::assert::table_lines($batches);
        assert_eq!(
            expected,
            actual,
            "\n\nexpected:\n{}\n\nactual:\n{}\n",
            expected.join("\n"),
            actual.join("\n")
        );
    }};
}

/// Assert that two sets of batches hold the same rows, in any order.
#[macro_export]
macro_rules! assert_same_rows {
    ($left:expr, $right:expr) => {{
        let l = $crate::assert::sorted_rows($left);
        let r = $crate::assert::sorted_rows($right);
        assert_eq!(l.len(), r.len(), "row counts differ");
        assert_eq!(l, r);
    }};
}

//! k-anonymity over declared quasi-identifiers: every combination of their values must be
//! shared by at least `k` rows.

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use std::collections::HashMap;
use stratalake_core::{Error, Result};

/// The outcome of a k-anonymity check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KReport {
    /// The smallest group size found (0 for no rows).
    pub min_group: usize,
    /// Groups smaller than k.
    pub violating_groups: usize,
    /// Rows in those groups.
    pub violating_rows: usize,
    /// Groups in all.
    pub groups: usize,
}

impl KReport {
    /// Whether every group has at least `k` rows.
    pub fn holds(&self, k: usize) -> bool {
        self.violating_groups == 0 && (self.groups == 0 || self.min_group >= k)
    }
}

/// Count the groups of `quasi_identifiers` in `batches`.
///
/// # Errors
/// Schema when a column is missing, naming it.
pub fn k_anonymity(
    batches: &[RecordBatch],
    quasi_identifiers: &[String],
    k: usize,
) -> Result<KReport> {
    let mut groups: HashMap<String, usize> = HashMap::new();
    let opts = FormatOptions::default().with_null("\u{0}NULL");
    for b in batches {
        let cols = quasi_identifiers
            .iter()
            .map(|q| {
                let c = b.column_by_name(q).ok_or_else(|| {
                    Error::new(
                        stratalake_core::ErrorKind::Schema,
                        format!("k-anonymity: no column {q}"),
                    )
                })?;
                ArrayFormatter::try_new(c.as_ref(), &opts)
                    .map_err(|e| Error::internal("k-anonymity").with_source(e))
            })
            .collect::<Result<Vec<_>>>()?;
        for i in 0..b.num_rows() {
            let key = cols
                .iter()
                .map(|f| f.value(i).to_string())
                .collect::<Vec<_>>()
                .join("\u{1}");
            *groups.entry(key).or_default() += 1;
        }
    }
    let small: Vec<usize> = groups.values().copied().filter(|n| *n < k).collect();
    Ok(KReport {
        min_group: groups.values().copied().min().unwrap_or(0),
        violating_groups: small.len(),
        violating_rows: small.iter().sum(),
        groups: groups.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, StringArray};
    use std::sync::Arc;

    #[test]
    fn small_groups_are_counted() {
        let b = RecordBatch::try_from_iter(vec![
            (
                "city",
                Arc::new(StringArray::from(vec![
                    "Berlin", "Berlin", "Berlin", "Oslo",
                ])) as ArrayRef,
            ),
            (
                "country",
                Arc::new(StringArray::from(vec!["DE", "DE", "DE", "NO"])),
            ),
        ])
        .unwrap();
        let q = vec!["city".to_string(), "country".to_string()];
        let r = k_anonymity(std::slice::from_ref(&b), &q, 2).unwrap();
        assert_eq!(
            (r.min_group, r.violating_groups, r.violating_rows, r.groups),
            (1, 1, 1, 2)
        );
        assert!(!r.holds(2));
        assert!(k_anonymity(&[b], &q[..1], 1).unwrap().holds(1));
    }
}

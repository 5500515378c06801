//! Expectations: what good data is for a table, and what happens when a row or the table is
//! not. The vocabulary the planner (stratalake-project compiles a model's declared expectations to
//! SQL), the engine (stratalake-gold evaluates them) and the reports share.
//!
//! A **row rule** is a SQL predicate over one row; a row fails when it is `false` (a `NULL`
//! result passes, as in dbt: `not_null` is the rule for missing values). A **table check** is
//! a SQL query over the table as the build would leave it, returning the failing rows, or a
//! row-count change against the previous build.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError};

/// What a failing rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Keep the row (or the table), count the failure.
    #[default]
    Warn,
    /// Send the row to the table's quarantine with the rule, the column and the value.
    Quarantine,
    /// Fail the build of the table: nothing of it is committed, nothing downstream is built.
    Fail,
}

impl Action {
    /// The word in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Quarantine => "quarantine",
            Self::Fail => "fail",
        }
    }
}

/// How much a failure matters to whoever reads the results (the action decides what
/// happens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth looking at.
    Warn,
    /// Wrong data.
    Error,
}

impl Severity {
    /// The word in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// What is said about a rule, whatever its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleInfo {
    /// The rule's name (unique within its table).
    pub name: String,
    /// Its kind as declared (`not_null`, `unique`, ...).
    pub kind: String,
    /// The column it is about, when one.
    pub column: Option<String>,
    /// What a failure does.
    pub action: Action,
    /// How much a failure matters.
    pub severity: Severity,
}

impl RuleInfo {
    /// Rule `name` of `kind`.
    pub fn new(
        name: &str,
        kind: &str,
        column: Option<&str>,
        action: Action,
        severity: Severity,
    ) -> Self {
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            column: column.map(str::to_string),
            action,
            severity,
        }
    }
}

/// A rule each row must pass: `passes` is a SQL (DataFusion) boolean expression over the
/// row's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RowRule {
    /// The rule.
    pub info: RuleInfo,
    /// The predicate a passing row satisfies (`"status" IN ('paid', 'shipped')`).
    pub passes: String,
}

impl RowRule {
    /// Rule `info` with predicate `passes`.
    pub fn new(info: RuleInfo, passes: impl Into<String>) -> Self {
        Self {
            info,
            passes: passes.into(),
        }
    }
}

/// How a table check finds what fails.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TableTest {
    /// A query over the table (by its own name, `silver.orders`) and any other table it
    /// names, returning the failing rows: none is a pass.
    FailingRows {
        /// The query.
        sql: String,
    },
    /// The row count against the previous build's: fails when it fell or grew by more than
    /// these percentages.
    RowCountChange {
        /// The largest fall allowed, in percent of the previous count.
        max_decrease_percent: Option<f64>,
        /// The largest growth allowed, in percent of the previous count.
        max_increase_percent: Option<f64>,
    },
}

/// A check on the whole table as the build leaves it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TableCheck {
    /// The rule.
    pub info: RuleInfo,
    /// What it runs.
    pub test: TableTest,
    /// The other tables it reads (`silver.customers` for a relationship), which the graph
    /// builds first.
    pub reads: Vec<String>,
}

impl TableCheck {
    /// Check `info` running `test`, reading `reads` besides its own table.
    pub fn new(info: RuleInfo, test: TableTest, reads: Vec<String>) -> Self {
        Self { info, test, reads }
    }
}

/// The expectations of one table.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Expectations {
    /// The rules every row is checked against.
    pub rows: Vec<RowRule>,
    /// The checks on the whole table.
    pub tables: Vec<TableCheck>,
}

impl Expectations {
    /// Row rules `rows` and table checks `tables`.
    pub fn new(rows: Vec<RowRule>, tables: Vec<TableCheck>) -> Self {
        Self { rows, tables }
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.tables.is_empty()
    }
}

/// How a rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Nothing failed.
    Pass,
    /// Something failed and was kept (action `warn`).
    Warn,
    /// Failing rows went to quarantine.
    Quarantined,
    /// The build failed on it.
    Fail,
}

impl Outcome {
    /// The word in the results.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Quarantined => "quarantined",
            Self::Fail => "fail",
        }
    }
}

/// The most failing keys a result keeps.
pub const SAMPLE_LIMIT: usize = 10;

/// One rule's result in one build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuleResult {
    /// The rule's name.
    pub rule: String,
    /// Its kind.
    pub kind: String,
    /// Its column, when one.
    pub column: Option<String>,
    /// Its action.
    pub action: Action,
    /// Its severity.
    pub severity: Severity,
    /// Rows it looked at.
    pub rows_checked: u64,
    /// Rows (or groups, for `unique`) that failed.
    pub rows_failed: u64,
    /// Up to [`SAMPLE_LIMIT`] failing rows by their key (`order_id=o-7`) or values.
    pub sample: Vec<String>,
    /// How it came out.
    pub outcome: Outcome,
}

impl RuleResult {
    /// The result of `info` over `checked` rows of which `failed` failed.
    pub fn new(info: &RuleInfo, checked: u64, failed: u64, sample: Vec<String>) -> Self {
        let outcome = match (failed, info.action) {
            (0, _) => Outcome::Pass,
            (_, Action::Warn) => Outcome::Warn,
            (_, Action::Quarantine) => Outcome::Quarantined,
            (_, Action::Fail) => Outcome::Fail,
        };
        Self {
            rule: info.name.clone(),
            kind: info.kind.clone(),
            column: info.column.clone(),
            action: info.action,
            severity: info.severity,
            rows_checked: checked,
            rows_failed: failed,
            sample,
            outcome,
        }
    }
}

/// Where the engine leaves a build's results, for the caller to read afterwards (also when
/// the build failed): a cloneable handle on one list.
#[derive(Debug, Clone, Default)]
pub struct ResultLog(Arc<Mutex<Vec<RuleResult>>>);

impl ResultLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace what the log holds (a retried attempt starts over).
    pub fn set(&self, results: Vec<RuleResult>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = results;
    }

    /// Add results.
    pub fn extend(&self, results: impl IntoIterator<Item = RuleResult>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(results);
    }

    /// What it holds.
    pub fn results(&self) -> Vec<RuleResult> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_follows_the_action_only_when_something_failed() {
        let info = |a| RuleInfo::new("r", "not_null", Some("c"), a, Severity::Error);
        assert_eq!(
            RuleResult::new(&info(Action::Fail), 10, 0, vec![]).outcome,
            Outcome::Pass
        );
        assert_eq!(
            RuleResult::new(&info(Action::Fail), 10, 1, vec![]).outcome,
            Outcome::Fail
        );
        assert_eq!(
            RuleResult::new(&info(Action::Warn), 10, 3, vec![]).outcome,
            Outcome::Warn
        );
        assert_eq!(
            RuleResult::new(&info(Action::Quarantine), 10, 3, vec![]).outcome,
            Outcome::Quarantined
        );
    }

    #[test]
    fn a_log_handle_sees_what_another_wrote() {
        let log = ResultLog::new();
        let other = log.clone();
        let info = RuleInfo::new("r", "unique", None, Action::Warn, Severity::Warn);
        other.extend([RuleResult::new(&info, 5, 1, vec!["k=1".into()])]);
        assert_eq!(log.results().len(), 1);
        log.set(Vec::new());
        assert!(other.results().is_empty());
    }
}

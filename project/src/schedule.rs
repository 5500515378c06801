//! `schedule:` in `strata.yaml`: when a scheduler (Airflow, through `strata airflow dag`)
//! runs the project, and how it treats a failing node.

use serde::Deserialize;
use stratalake_core::{Error, Result};

/// The presets Airflow knows besides cron expressions.
pub const PRESETS: [&str; 7] = [
    "@once",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
];

/// When and how the project runs on a schedule.
///
/// ```yaml
/// schedule:
///   cron: "0 2 * * *"          # five cron fields (UTC) or @hourly, @daily, ...
///   start_date: 2024-01-01     # the first logical date
///   catchup: false             # run the missed dates since start_date when first enabled
///   retries: 3                 # attempts after the first, for temporary failures only
///   retry_delay_seconds: 300
///   task_timeout_minutes: 60   # a node still running then is cancelled (SIGTERM)
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Schedule {
    /// Five cron fields (minute hour day month weekday, UTC) or a preset (`@daily`).
    pub cron: String,
    /// The first logical date (`YYYY-MM-DD`).
    pub start_date: String,
    /// Whether the scheduler runs the dates missed since `start_date`.
    #[serde(default)]
    pub catchup: bool,
    /// Retries of a node after a temporary failure (exit status 75); other failures are not
    /// retried. Range: 0..=20.
    #[serde(
        default = "default_retries",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 0, 20>"
    )]
    pub retries: u64,
    /// Seconds between retries. Range: 1..=86400.
    #[serde(
        default = "default_retry_delay",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 86400>"
    )]
    pub retry_delay_seconds: u64,
    /// Minutes a node may run before it is cancelled. Range: 1..=10080.
    #[serde(
        default = "default_timeout",
        deserialize_with = "stratalake_core::bounds::u64_in::<_, 1, 10080>"
    )]
    pub task_timeout_minutes: u64,
}

fn default_retries() -> u64 {
    3
}
fn default_retry_delay() -> u64 {
    300
}
fn default_timeout() -> u64 {
    60
}

impl Schedule {
    /// Check the cron expression and the start date.
    ///
    /// # Errors
    /// Config, saying which and why.
    pub fn validate(&self) -> Result<()> {
        let c = self.cron.trim();
        if c.starts_with('@') {
            if !PRESETS.contains(&c) {
                return Err(Error::config(format!(
                    "schedule.cron: unknown preset `{c}`; known: {}",
                    PRESETS.join(", ")
                )));
            }
        } else {
            if c.split_whitespace().count() != 5 {
                return Err(Error::config(format!(
                    "schedule.cron: `{c}` needs five fields (minute hour day month weekday) or a preset such as @daily"
                )));
            }
            // The cron crate reads seconds first: check the expression with a zero-second field.
            <cron::Schedule as std::str::FromStr>::from_str(&format!("0 {c}")).map_err(|e| {
                Error::config(format!("schedule.cron: `{c}` is not a cron expression"))
                    .with_source(e)
            })?;
        }
        let d = self.start_date.as_bytes();
        let digits = |r: std::ops::Range<usize>| d[r].iter().all(u8::is_ascii_digit);
        let month = self.start_date.get(5..7).and_then(|m| m.parse::<u8>().ok());
        let day = self
            .start_date
            .get(8..10)
            .and_then(|m| m.parse::<u8>().ok());
        if d.len() != 10
            || !digits(0..4)
            || d[4] != b'-'
            || d[7] != b'-'
            || !month.is_some_and(|m| (1..=12).contains(&m))
            || !day.is_some_and(|x| (1..=31).contains(&x))
        {
            return Err(Error::config(format!(
                "schedule.start_date: `{}` is not a date (YYYY-MM-DD)",
                self.start_date
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, start: &str) -> Schedule {
        Schedule {
            cron: cron.into(),
            start_date: start.into(),
            catchup: false,
            retries: 3,
            retry_delay_seconds: 300,
            task_timeout_minutes: 60,
        }
    }

    #[test]
    fn cron_expressions_presets_and_dates_are_checked() {
        assert!(schedule("0 2 * * *", "2024-01-01").validate().is_ok());
        assert!(schedule("@daily", "2024-12-31").validate().is_ok());
        let e = schedule("@fortnightly", "2024-01-01")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("unknown preset"), "{e}");
        let e = schedule("0 2 * *", "2024-01-01").validate().unwrap_err();
        assert!(e.to_string().contains("five fields"), "{e}");
        let e = schedule("0 25 * * *", "2024-01-01").validate().unwrap_err();
        assert!(e.to_string().contains("not a cron expression"), "{e}");
        let e = schedule("@daily", "2024-13-01").validate().unwrap_err();
        assert!(e.to_string().contains("not a date"), "{e}");
    }
}

//! Logical dates (`--logical-date`, Airflow's `{{ ds }}`): the day a run is about, given to
//! sources as placeholders in pipeline files.
//!
//! A pipeline file may write `{{ ds }}` (`2024-01-31`), `{{ ds_nodash }}` (`20240131`),
//! `{{ data_interval_start }}` and `{{ data_interval_end }}` (the day's bounds as RFC 3339
//! timestamps, UTC) anywhere outside comments: in a file `include` pattern, a REST query
//! parameter, a MongoDB filter. A file that does is *partitioned by logical date*: its
//! checkpoint and its commits are kept per date (pipeline id `<pipeline>.<ds>`), so each day
//! loads once however often it is rerun, and days may be loaded in any order (a backfill).

use chrono::{Duration, NaiveDate};
use std::sync::OnceLock;

/// The placeholders a pipeline file may use.
pub const NAMES: [&str; 4] = [
    "ds",
    "ds_nodash",
    "data_interval_start",
    "data_interval_end",
];

/// How this process fills placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A command that runs (`run`, `build`) with `--logical-date`.
    Date(NaiveDate),
    /// A command that runs, without `--logical-date`: a placeholder is an error.
    Missing,
    /// A command that only reads the files (`ls`, `dag`, `airflow dag`): placeholders stay
    /// as written.
    Planning,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Set the process's mode (once, from the command line; later calls are ignored).
pub fn set(mode: Mode) {
    let _ = MODE.set(mode);
}

/// The process's mode (planning when nothing set it).
pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Planning)
}

/// Parse `--logical-date`: a date (`2024-01-31`) or an RFC 3339 timestamp (its UTC date).
///
/// # Errors
/// When it is neither.
pub fn parse(text: &str) -> Result<NaiveDate, String> {
    let t = text.trim();
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d);
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|ts| ts.with_timezone(&chrono::Utc).date_naive())
        .map_err(|_| format!("`{text}` is not a date (2024-01-31) or an RFC 3339 timestamp"))
}

/// The value of placeholder `name` on `date`, or `None` for an unknown name.
pub fn value(name: &str, date: NaiveDate) -> Option<String> {
    let day = |d: NaiveDate| format!("{}T00:00:00Z", d.format("%Y-%m-%d"));
    Some(match name {
        "ds" => date.format("%Y-%m-%d").to_string(),
        "ds_nodash" => date.format("%Y%m%d").to_string(),
        "data_interval_start" => day(date),
        "data_interval_end" => day(date + Duration::days(1)),
        _ => return None,
    })
}

/// `date` as days since 1970-01-01 (Arrow's Date32).
pub fn days_since_epoch(date: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((date - epoch).num_days()).unwrap_or(i32::MAX)
}

/// The pipeline id of a file partitioned by logical date, for `date`.
pub fn partition_id(pipeline: &str, date: NaiveDate) -> String {
    format!("{pipeline}.{}", date.format("%Y-%m-%d"))
}

/// Replace the placeholders on one line (its part before any comment) by the mode. Returns
/// the line and whether it held a placeholder; an error says what is wrong (the caller adds
/// the file and line).
///
/// # Errors
/// An unknown placeholder, an unterminated `{{`, or a placeholder when the run has no
/// logical date.
pub fn render_line(line: &str, mode: Mode) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    let mut used = false;
    while let Some(i) = rest.find("{{") {
        let end = rest[i..]
            .find("}}")
            .ok_or_else(|| "unterminated `{{` (a placeholder is `{{ ds }}`)".to_string())?;
        let name = rest[i + 2..i + end].trim();
        if !NAMES.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{{ {name} }}}}`; known: {}",
                NAMES.map(|n| format!("{{{{ {n} }}}}")).join(", ")
            ));
        }
        used = true;
        out.push_str(&rest[..i]);
        match mode {
            Mode::Date(d) => out.push_str(&value(name, d).unwrap_or_default()),
            Mode::Planning => out.push_str(&rest[i..i + end + 2]),
            Mode::Missing => {
                return Err(format!(
                    "`{{{{ {name} }}}}` needs a logical date: pass --logical-date YYYY-MM-DD (Airflow passes `{{{{ ds }}}}`)"
                ));
            }
        }
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    Ok((out, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse(s).unwrap()
    }

    #[test]
    fn placeholders_take_the_days_values() {
        let (line, used) = render_line(
            "include: \"orders/dt={{ ds }}/*.ndjson\" # {{ds_nodash}}",
            Mode::Date(d("2024-02-29")),
        )
        .unwrap();
        assert!(used);
        assert_eq!(
            line,
            "include: \"orders/dt=2024-02-29/*.ndjson\" # 20240229"
        );
        let (line, _) = render_line(
            "{ from: '{{data_interval_start}}', to: '{{ data_interval_end }}' }",
            Mode::Date(d("2024-12-31")),
        )
        .unwrap();
        assert_eq!(
            line,
            "{ from: '2024-12-31T00:00:00Z', to: '2025-01-01T00:00:00Z' }"
        );
        assert_eq!(
            render_line("plain: 1", Mode::Missing).unwrap(),
            ("plain: 1".into(), false)
        );
    }

    #[test]
    fn a_timestamp_gives_its_utc_day() {
        assert_eq!(d("2024-01-31T23:30:00-02:00"), d("2024-02-01"));
        assert!(parse("yesterday").is_err());
    }

    #[test]
    fn wrong_placeholders_and_missing_dates_are_errors() {
        let e = render_line("x: {{ tomorrow }}", Mode::Date(d("2024-01-01"))).unwrap_err();
        assert!(e.contains("unknown placeholder `{{ tomorrow }}`"), "{e}");
        let e = render_line("x: {{ ds", Mode::Date(d("2024-01-01"))).unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
        let e = render_line("x: {{ ds }}", Mode::Missing).unwrap_err();
        assert!(e.contains("--logical-date"), "{e}");
        assert_eq!(
            render_line("x: {{ ds }}", Mode::Planning).unwrap(),
            ("x: {{ ds }}".into(), true)
        );
        assert_eq!(partition_id("orders", d("2024-01-05")), "orders.2024-01-05");
    }
}

//! `strata status PROJECT`: per node, its last run (from the lake's `_runs`), how old its data
//! is (since its last build that wrote something), and whether an input was built since it
//! last ran well: what an on-call engineer looks at first.

use crate::project::{Loaded, runs_table};
use arrow_array::cast::AsArray as _;
use arrow_array::types::Int64Type;
use arrow_schema::DataType;
use std::collections::BTreeMap;
use stratalake_core::Result;

/// One node's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// The node.
    pub node: String,
    /// `pipeline`, `table`, `incremental`, `merge`, `append`.
    pub kind: String,
    /// Its last run's status (`built`, `up_to_date`, `skipped`, `failed`), if it ran.
    pub last_status: Option<String>,
    /// Its last run's id.
    pub last_run_id: Option<String>,
    /// When its last run started (microseconds since the epoch, UTC).
    pub last_started_micros: Option<i64>,
    /// When it last wrote something (`built`).
    pub last_built_micros: Option<i64>,
    /// The inputs built after its last good run (`built` or `up_to_date`).
    pub stale_because: Vec<String>,
}

struct Seen {
    status: String,
    run_id: String,
    started: i64,
    built: Option<i64>,
    ok: Option<i64>,
}

/// The status of every node of the project, in dependency order.
///
/// # Errors
/// When `_runs` exists but cannot be read.
pub async fn status(l: &Loaded) -> Result<Vec<NodeStatus>> {
    let loc = runs_table(&l.lake)?;
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    if loc.location().load().await?.is_some() {
        let tables = BTreeMap::from([("_runs".to_string(), loc.location().clone())]);
        let sql = "SELECT node, \
             last_value(status ORDER BY started_at) AS status, \
             last_value(run_id ORDER BY started_at) AS run_id, \
             CAST(max(started_at) AS BIGINT) AS started, \
             CAST(max(CASE WHEN status = 'built' THEN ended_at END) AS BIGINT) AS built, \
             CAST(max(CASE WHEN status IN ('built', 'up_to_date') THEN ended_at END) AS BIGINT) AS ok \
             FROM _runs GROUP BY node";
        for b in stratalake_gold::model::query(&tables, sql).await? {
            let text = |i: usize| -> Result<arrow_array::StringArray> {
                Ok(arrow_cast::cast(b.column(i), &DataType::Utf8)?
                    .as_string::<i32>()
                    .clone())
            };
            let int = |i: usize| -> Result<arrow_array::Int64Array> {
                Ok(arrow_cast::cast(b.column(i), &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone())
            };
            let (node, st, id) = (text(0)?, text(1)?, text(2)?);
            let (started, built, ok) = (int(3)?, int(4)?, int(5)?);
            for r in 0..b.num_rows() {
                let opt = |a: &arrow_array::Int64Array| (!a.is_null(r)).then(|| a.value(r));
                seen.insert(
                    node.value(r).to_string(),
                    Seen {
                        status: st.value(r).to_string(),
                        run_id: id.value(r).to_string(),
                        started: started.value(r),
                        built: opt(&built),
                        ok: opt(&ok),
                    },
                );
            }
        }
    }
    use arrow_array::Array as _;
    Ok(l.graph
        .nodes()
        .iter()
        .map(|n| {
            let s = seen.get(&n.name);
            let ok = s.and_then(|s| s.ok);
            let stale_because = n
                .inputs
                .iter()
                .filter(|i| {
                    let input_built = seen.get(i.as_str()).and_then(|s| s.built);
                    match (input_built, ok) {
                        (Some(b), Some(o)) => b > o,
                        (Some(_), None) => true,
                        _ => false,
                    }
                })
                .cloned()
                .collect();
            NodeStatus {
                node: n.name.clone(),
                kind: crate::project::kind_name(n).to_string(),
                last_status: s.map(|s| s.status.clone()),
                last_run_id: s.map(|s| s.run_id.clone()),
                last_started_micros: s.map(|s| s.started),
                last_built_micros: s.and_then(|s| s.built),
                stale_because,
            }
        })
        .collect())
}

/// `3 s`, `4 min`, `2 h`, `5 d`.
fn age(micros: i64, now: i64) -> String {
    let s = (now - micros).max(0) / 1_000_000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// The status as lines of a table.
pub fn lines(all: &[NodeStatus]) -> Vec<String> {
    let now = chrono::Utc::now().timestamp_micros();
    let mut out = vec![format!(
        "{:<28} {:<11} {:<11} {:<17} {:<9} {}",
        "node", "kind", "last run", "started", "data age", "upstream"
    )];
    for s in all {
        let started = s.last_started_micros.map_or_else(
            || "-".to_string(),
            |m| {
                chrono::DateTime::from_timestamp_micros(m)
                    .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M").to_string())
            },
        );
        let upstream = if s.stale_because.is_empty() {
            "up to date".to_string()
        } else {
            format!("changed: {} built since", s.stale_because.join(", "))
        };
        out.push(format!(
            "{:<28} {:<11} {:<11} {:<17} {:<9} {}",
            s.node,
            s.kind,
            s.last_status.as_deref().unwrap_or("never run"),
            started,
            s.last_built_micros
                .map_or_else(|| "-".into(), |m| age(m, now)),
            upstream
        ));
    }
    out
}

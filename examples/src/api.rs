//! A small HTTP API over a generated NDJSON file, for `strata demo`, `strata serve-api` and the
//! REST benchmark: `GET /<name>?cursor=<n>&limit=<k>` answers
//! `{"data": [...], "next_cursor": "<n+k>" | null, "total": <count>}`. Only lines that are
//! valid JSON are served (an API's database holds no malformed records; records with a
//! drifting type are served as they are). With `updated_since=<RFC 3339>`, only records whose
//! `updated_at` is at or after it are served (the cursor then counts within those).

use anyhow::{Context as _, Result};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

struct Records {
    lines: Vec<Box<str>>,
    /// Each line's `updated_at`, when it has one.
    updated: Vec<Option<chrono::DateTime<chrono::FixedOffset>>>,
}

/// Load the valid JSON lines of `file`.
pub fn load(file: &Path) -> Result<Vec<Box<str>>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(text
        .lines()
        .filter(|l| serde_json::from_str::<serde::de::IgnoredAny>(l).is_ok())
        .map(Box::from)
        .collect())
}

async fn page(State(r): State<Arc<Records>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let at: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 10_000);
    let since = q
        .get("updated_since")
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    // Without a filter the page is a slice of the records; with one, the matching records
    // are collected (fine for tests; benchmarks use no filter).
    let filtered: Vec<&str> = match since {
        Some(t) => r
            .lines
            .iter()
            .zip(&r.updated)
            .filter(|(_, u)| u.is_some_and(|u| u >= t))
            .map(|(l, _)| &**l)
            .collect(),
        None => Vec::new(),
    };
    let len = if since.is_some() {
        filtered.len()
    } else {
        r.lines.len()
    };
    let end = (at + limit).min(len);
    let slice: Vec<&str> = match since {
        Some(_) => filtered.get(at..end).unwrap_or_default().to_vec(),
        None => r
            .lines
            .get(at..end)
            .unwrap_or_default()
            .iter()
            .map(|l| &**l)
            .collect(),
    };
    let mut body = String::with_capacity(slice.iter().map(|l| l.len() + 1).sum::<usize>() + 64);
    body.push_str("{\"data\":[");
    for (i, l) in slice.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(l);
    }
    body.push_str("],\"next_cursor\":");
    if end < len {
        body.push_str(&format!("\"{end}\""));
    } else {
        body.push_str("null");
    }
    body.push_str(&format!(",\"total\":{len}}}"));
    ([("content-type", "application/json")], body).into_response()
}

/// Serve `lines` at `/<name>` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: &str,
    lines: Vec<Box<str>>,
) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Updated {
        #[serde(default)]
        updated_at: Option<String>,
    }
    let updated = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Updated>(l)
                .ok()
                .and_then(|u| u.updated_at)
                .and_then(|u| chrono::DateTime::parse_from_rfc3339(&u).ok())
        })
        .collect();
    let app = axum::Router::new()
        .route(&format!("/{name}"), axum::routing::get(page))
        .with_state(Arc::new(Records { lines, updated }));
    axum::serve(listener, app).await?;
    Ok(())
}

//! A project's report node (`strata build`) and `strata report`: each section's query run by
//! DataFusion over the lake (stratalake-gold's `query`), the page drawn by stratalake-report, written
//! whole to a temporary file and renamed into place.

use crate::project::Loaded;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use stratalake_core::{Result, ResultExt as _};
use stratalake_project::report::{META_TABLES, Report};

/// What drawing a report did.
#[derive(Debug)]
pub enum Drawn {
    /// Written, with the sections' count.
    Written(PathBuf, usize),
    /// Its input tables are at the versions the page on disk was drawn from.
    UpToDate(PathBuf),
}

/// The tables a report reads, with the lake's meta tables, as locations.
fn tables(l: &Loaded, r: &Report) -> Result<BTreeMap<String, stratalake_delta::TableLocation>> {
    let mut t = BTreeMap::new();
    for x in &r.references {
        let (layer, name) = x.name.split_once('.').unwrap_or(("", &x.name));
        t.insert(x.name.clone(), l.lake.table(layer, name)?);
    }
    for m in META_TABLES {
        t.insert(m.to_string(), l.lake.meta_table(m)?);
    }
    Ok(t)
}

/// Draw `r` into `out` (default: its `out` in the project); with `force` false, leave a page
/// drawn from the same input versions alone.
///
/// # Errors
/// When a query fails, a section names a column its query lacks, or the file cannot be written.
pub async fn draw(l: &Loaded, r: &Report, out: Option<&Path>, force: bool) -> Result<Drawn> {
    let path = out.map_or_else(|| l.project.path(&r.out), Path::to_path_buf);
    let tables = tables(l, r)?;
    let mut versions = BTreeMap::new();
    for x in &r.references {
        if let Some(v) = tables[&x.name].load().await?.and_then(|t| t.version()) {
            versions.insert(x.name.clone(), i64::try_from(v).unwrap_or(i64::MAX));
        }
    }
    if !force
        && let Ok(old) = std::fs::read_to_string(&path)
        && stratalake_report::inputs_of(&old) == Some(stratalake_report::inputs_text(&versions))
    {
        return Ok(Drawn::UpToDate(path));
    }
    // The meta tables may not exist yet (a first build): their sections show no rows.
    let mut present = BTreeMap::new();
    for (name, loc) in &tables {
        if loc.load().await?.is_some() {
            present.insert(name.clone(), loc.clone());
        }
    }
    let mut data = Vec::with_capacity(r.sections.len());
    for s in &r.sections {
        let reads_missing = META_TABLES
            .iter()
            .any(|m| !present.contains_key(*m) && s.sql.contains(m));
        if reads_missing {
            data.push(Vec::new());
            continue;
        }
        let batches = stratalake_gold::model::query(&present, &s.sql)
            .await
            .wrap_err_with(|| format!("{}: section `{}`", r.file.display(), s.title))?;
        data.push(batches);
    }
    let info = stratalake_report::PageInfo::new(
        &l.project.config().name,
        &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        versions,
    );
    let page = stratalake_report::render(r, &data, &info)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .wrap_err_with(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("html.tmp.{}", std::process::id()));
    std::fs::write(&tmp, page).wrap_err_with(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).wrap_err_with(|| format!("cannot write {}", path.display()))?;
    Ok(Drawn::Written(path, r.sections.len()))
}
